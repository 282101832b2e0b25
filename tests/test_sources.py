"""Fetching published weights: every source layout, against a local stand-in for the hosts.

Each layout test fabricates a checkpoint the way its authors published it, from one ResNet-50
state_dict, serves it from the fake host, runs ``fetch_model`` and requires the canonical
checkpoint to hold exactly the original tensors; the same file with a spec lacking the needed
conversion must fail with the offending keys listed. The download tests use a tiny ResNet.
"""

from __future__ import annotations

import argparse
import fractions
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
import yaml
from safetensors.torch import save as safetensors_bytes

from layercrit.weights.conversion import KEY_MAPPINGS, CheckpointReadError, ConversionError
from layercrit.downloads import ChecksumError, DownloadError, DownloadSettings, SourceError
from layercrit.weights.sources import check_source, fetch_model, fetch_source_file
from layercrit.study import load_schema
from layercrit.study import Architecture
from layercrit.testing.fake_hosts import FakeHosts, route_drive_hosts
from layercrit.models.zoo import build_architecture, load_checkpoint

RESNET50 = Architecture("resnet50", "resnet50", {}, ())
TINY = Architecture("tiny", "resnet50", {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "num_classes": 10}, ())
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
URL_HOSTS = ("dl.fbaipublicfiles.com", "download.pytorch.org", "bitbucket.org", "zenodo.org", "example.org")


def random_state_dict(arch: Architecture) -> dict[str, torch.Tensor]:
    """A seeded state_dict of ``arch`` in which every tensor is distinct.

    A fresh initialization has identical BatchNorm tensors everywhere (ones, zeros), which
    would hide a key mapping that swaps two BatchNorms; random values expose it.
    """
    model_sd = build_architecture(arch, seed=0).state_dict()
    generator = torch.Generator().manual_seed(1)
    return {
        k: (
            torch.randn(v.shape, generator=generator)
            if v.is_floating_point()
            else torch.randint(0, 10**6, v.shape, generator=generator)
        )
        for k, v in model_sd.items()
    }


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(hosts: FakeHosts, url: str, data: bytes) -> None:
    """Serve ``data`` where the settings' mirror sends ``url`` (``/<host>/<path>``)."""
    parts = urlsplit(url)
    hosts.serve(f"/{parts.hostname}{parts.path}", data)


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("LAYERCRIT_URL_REWRITE", "LAYERCRIT_DOWNLOAD_RETRIES", "LAYERCRIT_DOWNLOAD_BACKOFF", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hosts(monkeypatch):
    server = FakeHosts()
    route_drive_hosts(monkeypatch, server)
    yield server
    server.close()


@pytest.fixture
def settings(hosts) -> DownloadSettings:
    mirrors = {f"https://{h}/": f"{hosts.base}/{h}/" for h in URL_HOSTS}
    return DownloadSettings(mirrors=mirrors, hf_endpoint=hosts.base, retries=3, backoff=0.001, max_backoff=0.005, timeout=10)


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    return random_state_dict(RESNET50)


@pytest.fixture(scope="module")
def tiny() -> dict[str, torch.Tensor]:
    return random_state_dict(TINY)


def assert_same_tensors(path: Path, expected: dict[str, torch.Tensor]) -> None:
    state = load_checkpoint(path).state_dict
    assert set(state) == set(expected)
    unequal = [k for k in expected if not torch.equal(state[k], expected[k])]
    assert not unequal, f"tensors differ: {unequal[:10]}"


# ----------------------------------------------------------------------------------------------
# Published layouts


def without(sd: dict, prefix: str) -> dict:
    return {k: v for k, v in sd.items() if not k.startswith(prefix)}


def prefixed(prefix: str, sd: dict) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def madry_checkpoint(sd: dict) -> bytes:
    attacker = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}  # must not be picked up
    model = {
        **prefixed("module.model.", sd),
        **prefixed("module.attacker.model.", attacker),
        "module.normalizer.new_mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1),
        "module.normalizer.new_std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1),
        "module.attacker.normalize.new_mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1),
        "module.attacker.normalize.new_std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1),
    }
    return pickled(
        {
            "model": model,
            "optimizer": {"state": {}, "param_groups": []},
            "schedule": None,
            "epoch": 1,
            "args": argparse.Namespace(arch="resnet50", eps=0.01, constraint="2"),
        }
    )


def linear_head(sd: dict) -> bytes:
    # DINO's and SwAV's linear probes: a DistributedDataParallel-wrapped nn.Linear named "linear".
    return pickled(
        {
            "epoch": 100,
            "state_dict": {"module.linear.weight": sd["fc.weight"], "module.linear.bias": sd["fc.bias"]},
            "best_acc": 75.3,
        }
    )


def swav_backbone(sd: dict) -> bytes:
    extras = {"module.projection_head.0.weight": torch.randn(8, 2048), "module.prototypes.weight": torch.randn(30, 8)}
    return pickled({**prefixed("module.", without(sd, "fc.")), **extras})


SIMCLR_BLOCK = {
    "conv1.": "net.0.",
    "bn1.": "net.1.0.",
    "conv2.": "net.2.",
    "bn2.": "net.3.0.",
    "conv3.": "net.4.",
    "bn3.": "net.5.0.",
    "downsample.0.": "projection.shortcut.",
    "downsample.1.": "projection.bn.0.",
}


def simclr_name(key: str) -> str:
    """timm name -> the TF-converted SimCLRv2 name (the inverse of PAPER.md's mapping rule)."""
    if key.startswith("conv1."):
        return "net.0.0." + key[len("conv1.") :]
    if key.startswith("bn1."):
        return "net.0.1.0." + key[len("bn1.") :]
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if match:
        stage, block, rest = match.groups()
        old = next(p for p in SIMCLR_BLOCK if rest.startswith(p))
        return f"net.{stage}.blocks.{block}.{SIMCLR_BLOCK[old]}{rest[len(old):]}"
    return key  # fc.*


def moco_checkpoint(sd: dict) -> bytes:
    optimizer = {"state": {}, "param_groups": []}
    return pickled(
        {
            "epoch": 90,
            "arch": "resnet50",
            "state_dict": prefixed("module.", sd),
            "best_acc1": torch.tensor(68.9),
            "optimizer": optimizer,
        }
    )


def simclr_checkpoint(sd: dict) -> bytes:
    return pickled({"resnet": {simclr_name(k): v for k, v in sd.items()}, "head": {"layers.0.weight": torch.randn(4, 4)}})


def tsbias_checkpoint(sd: dict) -> bytes:
    aux = {}
    for k, v in sd.items():
        match = re.fullmatch(r"(.*bn\d|.*downsample\.1)\.(weight|bias|running_mean|running_var|num_batches_tracked)", k)
        if match:
            aux[f"module.{match.group(1)}.aux_bn.{match.group(2)}"] = v.clone() + 3
    return pickled({"epoch": 100, "arch": "resnet50", "state_dict": {**prefixed("module.", sd), **aux}})


@dataclass
class Layout:
    id: str
    source: dict
    wrong: dict  # the same file(s) without a conversion the layout needs
    mentions: tuple[str, ...]  # keys the wrong spec's error must list
    publish: Callable[[FakeHosts, dict], None]
    normalization: dict | None = field(default_factory=lambda: dict(IMAGENET))


MADRY_FILE = "resnet50_l2_eps0.01.ckpt"
MADRY = {"kind": "huggingface", "repo": "madrylab/robust-imagenet-models", "file": MADRY_FILE}
DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"
DINO_HEAD_URL = "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_linearweights.pth"
SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"
SWAV_HEAD_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_eval_linear.pth.tar"
MOCO_URL = "https://dl.fbaipublicfiles.com/moco-v3/r-50-100ep/linear-100ep.pth.tar"
SIMCLR_ID = "1fDaMhujPnxo4SYOe4asPqCKQ3XB_sZvj"
TSBIAS_ID = "1tFy2Q28rAqqreaS-27jifpyPzlohKDPH"
DIFFUSION = {
    "kind": "huggingface",
    "repo": "paulgavrikov/resnet50.in1k_diffusionnoise_90ep",
    "file": "resnet50_diffusionnoise_nonorm_last.pth",
}
HEAD_RENAME = {"key": "state_dict", "rename": [["module.linear.", "fc."]]}
BAD_RENAME = {"rename": [["fc.", "head."]]}

LAYOUTS = [
    Layout(
        "robust_resnet50_l2_eps0.01",
        {
            **MADRY,
            "key": "model",
            "keep_prefix": "module.model.",
            "strip_prefix": ["module.model."],
            "allowed_globals": ["argparse.Namespace"],
        },
        {**MADRY, "key": "model", "allowed_globals": ["argparse.Namespace"]},
        ("conv1.weight", "model.conv1.weight", "attacker.model."),
        lambda h, sd: h.add_hf_file(MADRY["repo"], MADRY_FILE, madry_checkpoint(sd)),
    ),
    Layout(
        "resnet50_dino",
        {
            "kind": "pair",
            "backbone": {"kind": "url", "url": DINO_URL},
            "head": {"kind": "url", "url": DINO_HEAD_URL, **HEAD_RENAME},
        },
        {"kind": "pair", "backbone": {"kind": "url", "url": DINO_URL}, "head": {"kind": "url", "url": DINO_HEAD_URL}},
        ("fc.weight", "fc.bias", "linear.weight", "linear.bias"),
        lambda h, sd: (publish(h, DINO_URL, pickled(without(sd, "fc."))), publish(h, DINO_HEAD_URL, linear_head(sd))),
    ),
    Layout(
        "resnet50_swav",
        {
            "kind": "pair",
            "backbone": {"kind": "url", "url": SWAV_URL, "strict": False},
            "head": {"kind": "url", "url": SWAV_HEAD_URL, **HEAD_RENAME},
        },
        {
            "kind": "pair",
            "backbone": {"kind": "url", "url": SWAV_URL},
            "head": {"kind": "url", "url": SWAV_HEAD_URL, **HEAD_RENAME},
        },
        ("projection_head.0.weight", "prototypes.weight"),
        lambda h, sd: (publish(h, SWAV_URL, swav_backbone(sd)), publish(h, SWAV_HEAD_URL, linear_head(sd))),
    ),
    Layout(
        "resnet50_moco_v3_100ep",
        {"kind": "url", "url": MOCO_URL, "key": "state_dict", "strip_prefix": ["module."]},
        {"kind": "url", "url": MOCO_URL, "key": "state_dict", "strip_prefix": []},
        ("conv1.weight", "module.conv1.weight"),
        lambda h, sd: publish(h, MOCO_URL, moco_checkpoint(sd)),
    ),
    Layout(
        "resnet50_simclrv2",
        {"kind": "gdrive", "id": SIMCLR_ID, "key": "resnet", "mapping": "simclrv2"},
        {"kind": "gdrive", "id": SIMCLR_ID, "key": "resnet"},
        ("conv1.weight", "net.0.0.weight", "net.1.blocks.0.projection.shortcut.weight"),
        lambda h, sd: h.add_drive_file(SIMCLR_ID, simclr_checkpoint(sd), name="r50_1x_sk0.pth", large=True),
        normalization=None,
    ),
    Layout(
        "resnet50_tsbias_debiased",
        {"kind": "gdrive", "id": TSBIAS_ID, "key": "state_dict", "strip_prefix": ["module."], "drop_containing": ["aux_bn"]},
        {"kind": "gdrive", "id": TSBIAS_ID, "key": "state_dict", "strip_prefix": ["module."]},
        ("layer1.0.bn1.aux_bn.weight", "bn1.aux_bn.running_var"),
        lambda h, sd: h.add_drive_file(TSBIAS_ID, tsbias_checkpoint(sd), name="res50-debiased.pth.tar"),
    ),
    Layout(
        "resnet50_diffusionnoise_fixed_nonoise",
        {**DIFFUSION, "key": "model", "keep_prefix": "module.", "strip_prefix": ["module."]},
        {**DIFFUSION, "key": "model", "strip_prefix": []},
        ("conv1.weight", "module.conv1.weight"),
        lambda h, sd: h.add_hf_file(
            DIFFUSION["repo"], DIFFUSION["file"], pickled({"model": prefixed("module.", sd), "epoch": 89})
        ),
        normalization=None,
    ),
    Layout(
        "tv2_resnet50",
        {"kind": "torchvision", "weights": "ResNet50_Weights.IMAGENET1K_V2"},  # sha256 added by the test
        {"kind": "torchvision", "weights": "ResNet50_Weights.IMAGENET1K_V2", **BAD_RENAME},
        ("fc.weight", "head.weight"),
        lambda h, sd: publish(h, "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", pickled(sd)),
    ),
    Layout(
        "resnet50.a1_in1k",
        {"kind": "timm", "tag": "resnet50.a1_in1k"},
        {"kind": "timm", "tag": "resnet50.a1_in1k", **BAD_RENAME},
        ("fc.weight", "head.bias"),
        lambda h, sd: h.add_hf_file("timm/resnet50.a1_in1k", "model.safetensors", safetensors_bytes(sd)),
    ),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.id)
def test_published_layout_converts_to_the_exact_weights(layout, hosts, settings, original, tmp_path):
    layout.publish(hosts, original)
    source, wrong = layout.source, layout.wrong
    if source["kind"] == "torchvision":
        # Fabricated bytes cannot match the hash prefix in torchvision's file name; an explicit
        # sha256 replaces it (the prefix check itself is tested below).
        data = hosts.routes["/download.pytorch.org/models/resnet50-11ad3fa6.pth"].data
        source = {**source, "sha256": sha256(data)}
        wrong = {**wrong, "sha256": sha256(data)}
    normalization = layout.normalization
    cache = tmp_path / "downloads"

    with pytest.raises(ConversionError) as failure:
        fetch_model(
            {"id": layout.id, "source": wrong},
            RESNET50,
            cache_dir=cache,
            out=tmp_path / "wrong.safetensors",
            progress=False,
            settings=settings,
        )
    message = str(failure.value)
    assert layout.id in message
    for key in layout.mentions:
        assert key in message, f"{key!r} not listed in: {message[:2000]}"
    assert not (tmp_path / "wrong.safetensors").exists()

    requests_before = len(hosts.log)
    out = tmp_path / f"{layout.id}.safetensors"
    meta = fetch_model(
        {"id": layout.id, "source": source, "normalization": normalization},
        RESNET50,
        cache_dir=cache,
        out=out,
        progress=False,
        settings=settings,
    )
    assert len(hosts.log) == requests_before, "the second fetch must come from the cache"
    assert_same_tensors(out, original)
    stored = load_checkpoint(out)
    assert stored.normalization == normalization
    assert stored.metadata["model"] == layout.id
    assert all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) and f["cache_hit"] for f in meta["files"])
    assert stored.metadata["files"] == json.loads(json.dumps(meta["files"]))
    if layout.id == "resnet50_swav":
        assert sorted(meta["dropped_unexpected_keys"]) == ["projection_head.0.weight", "prototypes.weight"]
    if source["kind"] == "huggingface":
        assert meta["files"][0]["hf_commit"]


def test_pickled_classes_other_than_argparse_namespace_need_allowed_globals(hosts, settings, tiny, tmp_path):
    """argparse.Namespace (Madry's and timm's training arguments) loads as it is (issue 31 item 1);
    any other class saved beside the weights must be allowed by name."""
    hosts.add_hf_file(MADRY["repo"], MADRY_FILE, madry_checkpoint(tiny))
    source = {**MADRY, "key": "model", "keep_prefix": "module.model.", "strip_prefix": ["module.model."]}
    fetch_model({"id": "madry", "source": source}, TINY, cache_dir=tmp_path, out=tmp_path / "m.safetensors", progress=False, settings=settings)
    assert_same_tensors(tmp_path / "m.safetensors", tiny)

    hosts.serve(TINY_PATH, pickled({"state_dict": tiny, "lr": fractions.Fraction(1, 10)}))
    with pytest.raises(CheckpointReadError) as failure:
        fetch_tiny(settings, tmp_path / "a")
    message = str(failure.value)
    assert "tiny_model" in message and "class(es) ['fractions.Fraction']" in message and "allowed_globals" in message
    fetch_tiny(settings, tmp_path / "b", {"kind": "url", "url": TINY_URL, "allowed_globals": ["fractions.Fraction"]})


def test_torchvision_file_name_hash_prefix_is_verified(hosts, settings, original, tmp_path):
    publish(hosts, "https://download.pytorch.org/models/resnet50-0676ba61.pth", pickled(original))
    with pytest.raises(ChecksumError) as failure:
        fetch_model(
            {"id": "tv_resnet50", "source": {"kind": "torchvision", "weights": "ResNet50_Weights.IMAGENET1K_V1"}},
            RESNET50,
            cache_dir=tmp_path,
            out=tmp_path / "tv.safetensors",
            progress=False,
            settings=settings,
        )
    assert "0676ba61" in str(failure.value) and "torchvision" in str(failure.value)


def test_a_torchvision_architecture_loads_its_own_state_dict(hosts, settings, tmp_path):
    """An architecture built by torchvision (not timm) takes a torchvision-layout checkpoint as is."""
    from layercrit.models.zoo import load_model

    arch = Architecture("tv_mobilenet", "mobilenet_v3_small", {"num_classes": 10}, (), library="torchvision")
    weights = random_state_dict(arch)
    assert "features.0.0.weight" in weights and "classifier.3.weight" in weights  # torchvision's names
    publish(hosts, "https://example.org/weights/tv_vit.pth", pickled(weights))
    out = tmp_path / "tv_vit.safetensors"
    fetch_model(
        {"id": "tv_vit", "source": {"kind": "url", "url": "https://example.org/weights/tv_vit.pth"}, "normalization": IMAGENET},
        arch, cache_dir=tmp_path / "cache", out=out, progress=False, settings=settings,
    )  # fmt: skip
    assert_same_tensors(out, weights)
    model = load_model(arch, load_checkpoint(out))
    assert torch.equal(model.state_dict()["classifier.3.weight"], weights["classifier.3.weight"])


# ----------------------------------------------------------------------------------------------
# Downloads: retries, truncation, checksums, cache


TINY_URL = "https://example.org/weights/tiny.pth"
TINY_PATH = "/example.org/weights/tiny.pth"


def fetch_tiny(settings, tmp_path, source=None, model_id="tiny_model", **kwargs):
    source = source or {"kind": "url", "url": TINY_URL}
    return fetch_model(
        {"id": model_id, "source": source, **kwargs},
        TINY,
        cache_dir=tmp_path / "cache",
        out=tmp_path / "tiny.safetensors",
        progress=False,
        settings=settings,
    )


def test_server_errors_are_retried_with_backoff(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled(tiny))
    hosts.fail(TINY_PATH, 503, times=2)
    fetch_tiny(settings, tmp_path)
    assert hosts.count(TINY_PATH) == 3
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)


def test_missing_file_fails_at_once(hosts, settings, tmp_path):
    with pytest.raises(DownloadError) as failure:
        fetch_tiny(settings, tmp_path)
    message = str(failure.value)
    assert "tiny_model" in message and "404" in message and TINY_PATH in message and "not retried" in message
    assert hosts.count(TINY_PATH) == 1


def test_truncated_download_is_retried(hosts, settings, tiny, tmp_path):
    data = pickled(tiny)
    hosts.serve(TINY_PATH, data)
    hosts.truncate(TINY_PATH, times=1)
    meta = fetch_tiny(settings, tmp_path)
    assert hosts.count(TINY_PATH) == 2
    assert meta["files"][0]["sha256"] == sha256(data)
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)


def test_truncated_download_is_never_taken_as_complete(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled(tiny))
    hosts.truncate(TINY_PATH, times=100)
    with pytest.raises(DownloadError) as failure:
        fetch_tiny(settings, tmp_path)
    assert f"after {settings.retries + 1} attempts" in str(failure.value)
    assert hosts.count(TINY_PATH) == settings.retries + 1
    folder = tmp_path / "cache" / "example.org" / "weights"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []
    assert not (tmp_path / "tiny.safetensors").exists()


def test_checksum_mismatch_moves_the_file_aside(hosts, settings, tiny, tmp_path):
    data = pickled(tiny)
    hosts.serve(TINY_PATH, data)
    wrong = "ab" * 32
    with pytest.raises(ChecksumError) as failure:
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": TINY_URL, "sha256": wrong})
    message = str(failure.value)
    assert "tiny_model" in message and TINY_PATH in message and wrong in message and sha256(data) in message
    folder = tmp_path / "cache" / "example.org" / "weights"
    assert (folder / f"tiny.pth.bad-{sha256(data)[:8]}").read_bytes() == data
    assert not (folder / "tiny.pth").exists()


def test_cache_hit_makes_no_request_and_records_the_hash(hosts, settings, tiny, tmp_path):
    data = pickled(tiny)
    hosts.serve(TINY_PATH, data)
    first = fetch_tiny(settings, tmp_path, {"kind": "url", "url": TINY_URL, "sha256": sha256(data)})
    sidecar = json.loads((tmp_path / "cache/example.org/weights/tiny.pth.fetch.json").read_text())
    assert sidecar["sha256"] == sha256(data) and sidecar["url"] == TINY_URL and sidecar["size"] == len(data)
    assert first["files"][0]["cache_hit"] is False
    second = fetch_tiny(settings, tmp_path, {"kind": "url", "url": TINY_URL, "sha256": sha256(data)})
    assert hosts.count() == 1
    assert second["files"][0]["cache_hit"] is True
    assert second["files"][0]["url"] == TINY_URL and second["files"][0]["fetched_from"] == hosts.url(TINY_PATH)


def test_corrupted_cache_is_detected_and_downloaded_again(hosts, settings, tiny, tmp_path):
    data = pickled(tiny)
    hosts.serve(TINY_PATH, data)
    fetch_tiny(settings, tmp_path)
    cached = tmp_path / "cache/example.org/weights/tiny.pth"
    corrupted = data[:-10] + b"0123456789"
    cached.write_bytes(corrupted)

    fetch_tiny(settings, tmp_path)
    assert hosts.count(TINY_PATH) == 2
    assert cached.read_bytes() == data
    assert (cached.parent / f"tiny.pth.bad-{sha256(corrupted)[:8]}").exists()

    # The recorded hash pins the file: a different file from the server is refused.
    cached.write_bytes(corrupted)
    changed = pickled({k: v + 1 if v.is_floating_point() else v for k, v in tiny.items()})
    hosts.serve(TINY_PATH, changed)
    with pytest.raises(ChecksumError) as failure:
        fetch_tiny(settings, tmp_path)
    assert sha256(data) in str(failure.value) and sha256(changed) in str(failure.value) and "recorded" in str(failure.value)


def test_leftovers_of_a_killed_download_are_restarted_cleanly(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled(tiny))
    folder = tmp_path / "cache/example.org/weights"
    folder.mkdir(parents=True)
    (folder / ".tiny.pth.part").write_bytes(b"\x80\x02half of an old download")
    fetch_tiny(settings, tmp_path)
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)
    assert not (folder / ".tiny.pth.part").exists()


def test_file_put_in_the_cache_by_hand_is_adopted_and_verified(hosts, settings, tiny, tmp_path):
    data = pickled(tiny)
    folder = tmp_path / "cache/example.org/weights"
    folder.mkdir(parents=True)
    (folder / "tiny.pth").write_bytes(data)
    meta = fetch_tiny(settings, tmp_path, {"kind": "url", "url": TINY_URL, "sha256": sha256(data)[:12]})
    assert hosts.count() == 0 and meta["files"][0]["adopted"] is True


def test_html_page_instead_of_a_checkpoint_is_an_error(hosts, settings, tmp_path):
    hosts.serve(TINY_PATH, b"<!DOCTYPE html><html><body>Quota exceeded</body></html>", content_type="text/html")
    with pytest.raises(DownloadError, match="HTML page"):
        fetch_tiny(settings, tmp_path)


def test_unreadable_file_names_the_file(hosts, settings, tmp_path):
    hosts.serve(TINY_PATH, b"\x80\x02 this is not a checkpoint" * 10)
    with pytest.raises(CheckpointReadError) as failure:
        fetch_tiny(settings, tmp_path)
    assert "tiny.pth" in str(failure.value) and "tiny_model" in str(failure.value)


def test_hub_errors_retried_and_missing_files_reported(hosts, settings, tiny, tmp_path):
    commit = hosts.add_hf_file("owner/tiny", "tiny.pth", pickled(tiny))
    hosts.fail("/owner/tiny/resolve/main/tiny.pth", 503, times=2)
    meta = fetch_tiny(settings, tmp_path, {"kind": "huggingface", "repo": "owner/tiny", "file": "tiny.pth"})
    assert meta["files"][0]["hf_commit"] == commit
    requests = hosts.count()
    fetch_tiny(settings, tmp_path, {"kind": "huggingface", "repo": "owner/tiny", "file": "tiny.pth"})
    assert hosts.count() == requests

    with pytest.raises(DownloadError) as failure:
        fetch_tiny(settings, tmp_path, {"kind": "huggingface", "repo": "owner/tiny", "file": "absent.pth"})
    assert "absent.pth" in str(failure.value) and "tiny_model" in str(failure.value)
    assert hosts.count("/owner/tiny/resolve/main/absent.pth") == 1


def test_hub_lfs_sha256_is_verified(hosts, settings, tiny, tmp_path):
    data = pickled(tiny)
    hosts.add_hf_file("owner/tiny", "tiny.pth", data, etag="cd" * 32)
    with pytest.raises(ChecksumError) as failure:
        fetch_tiny(settings, tmp_path, {"kind": "huggingface", "repo": "owner/tiny", "file": "tiny.pth"})
    assert "cd" * 32 in str(failure.value) and sha256(data) in str(failure.value) and "LFS" in str(failure.value)
    assert (tmp_path / f"cache/huggingface.co/owner/tiny/main/tiny.pth.bad-{sha256(data)[:8]}").exists()


def test_timm_falls_back_to_the_pickle_when_there_is_no_safetensors(hosts, settings, tmp_path):
    hosts.add_hf_file("timm/resnet50.a1_in1k", "pytorch_model.bin", b"\x80\x02weights")
    path, record = fetch_source_file(
        {"kind": "timm", "tag": "resnet50.a1_in1k"}, model_id="m", cache_dir=tmp_path, settings=settings, progress=False
    )
    assert path.name == "pytorch_model.bin" and record["url"].endswith("/timm/resnet50.a1_in1k/resolve/main/pytorch_model.bin")
    requests = hosts.count()
    fetch_source_file({"kind": "timm", "tag": "resnet50.a1_in1k"}, model_id="m", cache_dir=tmp_path, settings=settings, progress=False)
    assert hosts.count() == requests


def test_drive_small_file_and_mirror(hosts, settings, tiny, tmp_path):
    data = pickled({"state_dict": prefixed("module.", tiny)})
    hosts.add_drive_file("FILEID123", data)
    fetch_tiny(settings, tmp_path, {"kind": "gdrive", "id": "FILEID123"})
    assert hosts.count("/drive.google.com/uc") == 1 and hosts.count("/drive.usercontent.google.com/download") == 1
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)
    fetch_tiny(settings, tmp_path, {"kind": "gdrive", "id": "FILEID123"})
    assert hosts.count() == 2

    # A mirror of Drive files serves them plainly; the rewrite sends gdown there instead.
    hosts.serve("/drive-mirror/OTHERID", data)
    mirrored = dataclasses.replace(settings, mirrors={"https://drive.google.com/uc?id=": hosts.url("/drive-mirror/")})
    meta = fetch_tiny(mirrored, tmp_path, {"kind": "gdrive", "id": "OTHERID"})
    assert meta["files"][0]["url"] == "https://drive.google.com/uc?id=OTHERID"
    assert meta["files"][0]["fetched_from"] == hosts.url("/drive-mirror/OTHERID")


def test_drive_large_file_passes_the_virus_scan_page(hosts, settings, tiny, tmp_path):
    hosts.add_drive_file("BIGFILE", pickled(tiny), large=True)
    fetch_tiny(settings, tmp_path, {"kind": "gdrive", "id": "BIGFILE"})
    downloads = [p for m, p in hosts.log if p.startswith("/drive.usercontent.google.com/download")]
    assert len(downloads) == 2 and "confirm=t" not in downloads[0] and "confirm=t" in downloads[1]
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)


def test_drive_truncated_download_is_retried(hosts, settings, tiny, tmp_path):
    hosts.add_drive_file("FILEID123", pickled(tiny))
    hosts.truncate("/drive.usercontent.google.com/download", times=1)
    fetch_tiny(settings, tmp_path, {"kind": "gdrive", "id": "FILEID123"})
    assert hosts.count("/drive.usercontent.google.com/download") == 2
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)


# ----------------------------------------------------------------------------------------------
# Conversion rules


def test_missing_num_batches_tracked_is_filled(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled({k: v for k, v in tiny.items() if not k.endswith("num_batches_tracked")}))
    meta = fetch_tiny(settings, tmp_path)
    state = load_checkpoint(tmp_path / "tiny.safetensors").state_dict
    assert meta["filled_num_batches_tracked"] and all(state[k].item() == 0 for k in meta["filled_num_batches_tracked"])
    assert all(torch.equal(state[k], v) for k, v in tiny.items() if not k.endswith("num_batches_tracked"))


def test_strict_false_drops_extra_keys_but_never_missing_or_misshapen_ones(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled({**tiny, "extra.weight": torch.ones(2)}))
    with pytest.raises(ConversionError, match="extra.weight"):
        fetch_tiny(settings, tmp_path)
    meta = fetch_tiny(settings, tmp_path, {"kind": "url", "url": TINY_URL, "strict": False})
    assert meta["dropped_unexpected_keys"] == ["extra.weight"]

    hosts.serve("/example.org/weights/short.pth", pickled({k: v for k, v in tiny.items() if k != "fc.bias"}))
    with pytest.raises(ConversionError, match=r"missing key\(s\): fc\.bias"):
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": "https://example.org/weights/short.pth", "strict": False})

    hosts.serve("/example.org/weights/shape.pth", pickled({**tiny, "fc.bias": torch.zeros(11)}))
    with pytest.raises(ConversionError, match=r"fc\.bias: checkpoint \(11,\) vs architecture \(10,\)"):
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": "https://example.org/weights/shape.pth", "strict": False})


def test_pair_must_not_provide_a_key_twice(hosts, settings, tiny, tmp_path):
    hosts.serve("/example.org/a.pth", pickled(tiny))
    hosts.serve("/example.org/b.pth", pickled({"fc.weight": tiny["fc.weight"], "fc.bias": tiny["fc.bias"]}))
    source = {
        "kind": "pair",
        "backbone": {"kind": "url", "url": "https://example.org/a.pth"},
        "head": {"kind": "url", "url": "https://example.org/b.pth"},
    }
    with pytest.raises(ConversionError, match=r"both provide key\(s\) fc\.bias, fc\.weight"):
        fetch_tiny(settings, tmp_path, source)


@pytest.mark.parametrize(
    "source, complaint",
    [
        (
            {"kind": "url", "url": TINY_URL, "strip_prefixes": ["module."]},
            r"key 'source': unknown key\(s\) \['strip_prefixes'\]; allowed: \[.*'strip_prefix', 'trust_pickle', 'url'\]",
        ),
        ({"kind": "ftp", "url": TINY_URL}, r"key 'source.kind': 'ftp' is not allowed; allowed: \['timm', .*'pair'\]"),
        ({"kind": "train", "recipe": {}}, r"key 'source.kind': 'train' is not allowed"),  # trained here, not fetched
        ({"kind": "url", "url": TINY_URL, "mapping": "nope"}, r"key 'source.mapping': 'nope' is not allowed; allowed: \['simclrv2'\]"),
        ({"kind": "url", "url": TINY_URL, "sha256": "xyz"}, r"key 'source.sha256': 'xyz' does not match .*hex digits"),
        ({"kind": "pair", "backbone": {"kind": "url", "url": TINY_URL}}, r"key 'source': 'head' is a required property"),
        (
            {"kind": "pair", "backbone": {"kind": "pair"}, "head": {"kind": "url", "url": TINY_URL}},
            r"key 'source.backbone.kind': 'pair' is not allowed; allowed: \['timm', .*'gdrive'\]",
        ),
        ({"kind": "huggingface", "repo": "owner/tiny"}, r"key 'source': 'file' is a required property"),
        ({"kind": "url", "url": TINY_URL, "keep_prefix": ["module.", 3]}, r"key 'source.keep_prefix.1': 3 is not of type 'string'"),
        ({"kind": "url", "url": TINY_URL, "allowed_globals": ["no_such_module.Thing"]}, "allowed_globals: cannot import"),
    ],
)
def test_invalid_specs_are_rejected_with_the_allowed_values(hosts, settings, tiny, tmp_path, source, complaint):
    hosts.serve(TINY_PATH, pickled(tiny))
    with pytest.raises(SourceError, match=complaint) as failure:
        fetch_tiny(settings, tmp_path, source)
    assert "model 'tiny_model'" in str(failure.value)
    if "allowed_globals" not in source:  # the schema refuses a spec before anything is downloaded
        assert hosts.count() == 0


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "timm", "tag": "resnet50.a1_in1k", "file": "pytorch_model.bin", "revision": "main", "sha256": "abcdef12"},
        {"kind": "timm", "tag": "resnet50.a1_in1k", "rename": [["fc.", "head."]], "strict": False},
        {"kind": "torchvision", "weights": "ResNet50_Weights.IMAGENET1K_V2", "sha256": "abcdef12", "strip_prefix": "module."},
        {"kind": "url", "url": TINY_URL, "keep_prefix": ["module.model.", "module.head."], "drop_containing": "aux_bn"},
        {"kind": "gdrive", "id": "FILEID", "allowed_globals": "argparse.Namespace", "mapping": "simclrv2"},
        {"kind": "pair", "backbone": {"kind": "timm", "tag": "resnet50.a1_in1k"}, "head": {"kind": "url", "url": TINY_URL}},
    ],
)
def test_every_field_the_fetching_code_supports_is_accepted(source):
    check_source(source, "m")


def test_the_zoo_schema_lists_the_key_mappings_there_are():
    fields = load_schema("zoo")["$defs"]["file_fields"]["properties"]
    assert sorted(fields["mapping"]["enum"]) == sorted(KEY_MAPPINGS)


def test_every_downloaded_source_of_the_paper_zoo_is_one_fetch_model_accepts():
    zoo = yaml.safe_load((Path(__file__).parents[1] / "config/zoo/paper.yaml").read_text())
    downloaded = [m for m in zoo["models"] if m["source"]["kind"] != "train"]
    assert len(downloaded) > 40
    for model in downloaded:
        check_source(model["source"], model["id"])


def test_settings_from_environment(monkeypatch, hosts, tiny, tmp_path):
    rewrite = {"https://example.org/": hosts.url("/example.org/"), "https://example.org/weights/": hosts.url("/elsewhere/")}
    monkeypatch.setenv("LAYERCRIT_URL_REWRITE", json.dumps(rewrite))
    monkeypatch.setenv("LAYERCRIT_DOWNLOAD_RETRIES", "1")
    monkeypatch.setenv("LAYERCRIT_DOWNLOAD_BACKOFF", "0.001")
    settings = DownloadSettings.from_env()
    assert settings.retries == 1 and settings.rewrite(TINY_URL) == hosts.url("/elsewhere/tiny.pth")  # longest prefix wins
    hosts.serve("/elsewhere/tiny.pth", pickled(tiny))
    hosts.fail("/elsewhere/tiny.pth", 503, times=1)
    fetch_model(
        {"id": "env", "source": {"kind": "url", "url": TINY_URL}},
        TINY,
        cache_dir=tmp_path,
        out=tmp_path / "e.safetensors",
        progress=False,
    )
    assert hosts.count("/elsewhere/tiny.pth") == 2

    monkeypatch.setenv("LAYERCRIT_URL_REWRITE", "{not json")
    with pytest.raises(SourceError, match="LAYERCRIT_URL_REWRITE"):
        DownloadSettings.from_env()


# ----------------------------------------------------------------------------------------------
# Local files (clusters without internet keep checkpoints on a shared file system)


@pytest.mark.parametrize("form", ["file_url", "absolute_path", "relative_path"])
def test_local_files_are_copied_into_the_cache_and_verified_like_downloads(settings, tiny, tmp_path, monkeypatch, form):
    data = pickled(tiny)
    shared = tmp_path / "shared fs" / "tiny.pth"
    shared.parent.mkdir()
    shared.write_bytes(data)
    monkeypatch.chdir(tmp_path)
    url = {"file_url": shared.as_uri(), "absolute_path": str(shared), "relative_path": "shared fs/tiny.pth"}[form]
    meta = fetch_tiny(settings, tmp_path, {"kind": "url", "url": url, "sha256": sha256(data)})
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)
    record = meta["files"][0]
    assert record["sha256"] == sha256(data) and record["url"] == url and record["cache_hit"] is False
    cached = tmp_path / "cache" / record["cache_path"]
    assert cached.read_bytes() == data and record["cache_path"].startswith("local/")
    assert fetch_tiny(settings, tmp_path, {"kind": "url", "url": url})["files"][0]["cache_hit"] is True

    # a wrong file on the shared file system is refused like a wrong download
    cached.unlink()
    shared.write_bytes(pickled({k: v + 1 if v.is_floating_point() else v for k, v in tiny.items()}))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": url, "sha256": sha256(data)})


def test_a_missing_local_file_is_named(settings, tmp_path):
    with pytest.raises(DownloadError, match=r"tiny_model.*nowhere/tiny.pth.*no such file"):
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": str(tmp_path / "nowhere/tiny.pth")})


def test_a_mirror_on_a_shared_file_system(tiny, tmp_path):
    mirror = tmp_path / "mirror" / "weights"
    mirror.mkdir(parents=True)
    (mirror / "tiny.pth").write_bytes(pickled(tiny))
    settings = DownloadSettings(mirrors={"https://example.org/": (tmp_path / "mirror").as_uri() + "/"}, retries=0)
    meta = fetch_tiny(settings, tmp_path)
    assert meta["files"][0]["url"] == TINY_URL and meta["files"][0]["fetched_from"] == (mirror / "tiny.pth").as_uri()
    assert_same_tensors(tmp_path / "tiny.safetensors", tiny)


def test_a_model_trained_once_is_fetched_from_its_recorded_checkpoint_with_the_record_of_its_training(settings, tiny, tmp_path):
    """A `train` source that records its checkpoint (the demo's shipped zoo) is fetched like a
    local file: verified by sha256, cast to the architecture's dtype, and the training the file's
    header records is kept in the model's provenance."""
    from layercrit.models.training import TrainingRecipe
    from layercrit.models.zoo import save_checkpoint

    shipped = tmp_path / "zoo" / "m.safetensors"
    shipped.parent.mkdir()
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny.items()}
    recipe = TrainingRecipe.from_config({"epochs": 40, "adversarial_norm": "linf", "adversarial_epsilon": 2}).to_dict()
    training = {"model": "m", "seed": 1000, "recipe": recipe, "trained_sha256": "ab" * 32}
    save_checkpoint(shipped, half, IMAGENET, training)
    checkpoint = {"url": str(shipped), "sha256": sha256(shipped.read_bytes())}
    source = {"kind": "train", "seed": 1000, "recipe": {"epochs": 40}, "checkpoint": checkpoint}
    adversarial = {"norm": "linf", "epsilon": 2}
    meta = fetch_tiny(settings, tmp_path, source, normalization=IMAGENET, adversarial=adversarial)
    assert_same_tensors(tmp_path / "tiny.safetensors", {k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    assert meta["source"] == source and meta["files"][0]["recorded"] == training
    assert meta["cast"] and set(meta["cast"].values()) == {"float16 -> float32"}

    # a recipe, seed or budget edited after the training was recorded: not this file's model
    edits = [{**source, "recipe": {"epochs": 10}}, {**source, "seed": 1}]
    for edited, budget in [(edits[0], adversarial), (edits[1], adversarial), (source, {"norm": "linf", "epsilon": 4})]:
        with pytest.raises(SourceError, match=r"recorded checkpoint .* was trained from .* but the zoo now trains it from .*training.retrain: true"):
            fetch_tiny(settings, tmp_path, edited, adversarial=budget)

    shipped.write_bytes(shipped.read_bytes()[:-4] + b"\0\0\0\0")  # the file changed since it was recorded
    (tmp_path / "cache").rename(tmp_path / "old cache")
    with pytest.raises(ChecksumError, match=r"sha256 mismatch.*no longer the one recorded: restore it.*training.retrain: true"):
        fetch_tiny(settings, tmp_path, source)


def test_a_model_to_be_trained_without_a_recorded_checkpoint_is_not_fetched(settings, tmp_path):
    with pytest.raises(SourceError, match="'train' is not allowed"):
        fetch_tiny(settings, tmp_path, {"kind": "train", "recipe": {"epochs": 1}})


class _RunsACommand:
    """Pickles as a call of os.system: what a malicious checkpoint does (never loaded here)."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_pickle_that_calls_functions_is_refused_without_suggesting_to_allow_them(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled({"state_dict": tiny, "args": argparse.Namespace(lr=0.1), "hook": _RunsACommand()}))
    with pytest.raises(CheckpointReadError) as failure:
        fetch_tiny(settings, tmp_path)
    message = str(failure.value)
    assert "function(s) ['posix.system']" in message and "weights never need" in message and "Do not allow them" in message
    assert "add them to the source's allowed_globals" not in message

    hosts.serve(TINY_PATH, pickled({"state_dict": tiny, "lr": fractions.Fraction(1, 10)}))
    (tmp_path / "cache").rename(tmp_path / "old cache")
    with pytest.raises(CheckpointReadError) as failure:
        fetch_tiny(settings, tmp_path)
    message = str(failure.value)
    assert "class(es) ['fractions.Fraction']" in message and "add them to the source's allowed_globals" in message


def test_functions_cannot_be_allowed(hosts, settings, tiny, tmp_path):
    hosts.serve(TINY_PATH, pickled(tiny))
    with pytest.raises(SourceError, match=r"'posix.system' is a builtin_function_or_method, not a class"):
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": TINY_URL, "allowed_globals": ["posix.system"]})


def test_checkpoints_needing_allowed_globals_load_in_parallel_threads(tmp_path):
    """Download jobs run as threads of one process; torch's allowlist of pickled globals is
    process-wide, so two loads at once must not take each other's allowed globals away."""
    from concurrent.futures import ThreadPoolExecutor

    from layercrit.weights.conversion import read_checkpoint

    path = tmp_path / "madry.ckpt"
    path.write_bytes(pickled({"model": {"w": torch.zeros(64, 64)}, "args": argparse.Namespace(eps=0.5)}))

    def load(_):
        return read_checkpoint(path, ["argparse.Namespace"], model_id="madry")["args"].eps

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(load, range(200))) == [0.5] * 200


def test_a_local_file_saved_over_is_copied_again_and_the_log_says_why(settings, tiny, tmp_path, caplog):  # issue 22
    own = tmp_path / "ckpt" / "mine.pth"
    own.parent.mkdir()
    own.write_bytes(pickled(tiny))
    first = fetch_tiny(settings, tmp_path, {"kind": "url", "url": str(own)})["files"][0]
    retrained = {k: v + 1 if v.is_floating_point() else v for k, v in tiny.items()}
    own.write_bytes(pickled(retrained))  # the user retrains and saves over the file
    with caplog.at_level("WARNING", logger="layercrit.downloads"):
        second = fetch_tiny(settings, tmp_path, {"kind": "url", "url": str(own)})["files"][0]
    assert second["cache_hit"] is False and second["sha256"] == sha256(pickled(retrained)) != first["sha256"]
    assert_same_tensors(tmp_path / "tiny.safetensors", retrained)
    assert f"{own} has changed since it was cached (sha256 {first['sha256']} then" in caplog.text
    assert fetch_tiny(settings, tmp_path, {"kind": "url", "url": str(own)})["files"][0]["cache_hit"] is True
    # the cache deleted: the file is copied again, no recorded hash stands in its way
    shutil.rmtree(tmp_path / "cache")
    assert fetch_tiny(settings, tmp_path, {"kind": "url", "url": str(own)})["files"][0]["sha256"] == second["sha256"]
    # a sha256 the zoo pins is enforced, and the message names the fix
    with pytest.raises(ChecksumError, match=rf"sha256 mismatch for {own}: .*update the zoo's sha256 to {second['sha256']}"):
        fetch_tiny(settings, tmp_path, {"kind": "url", "url": str(own), "sha256": first["sha256"]})


# ----------------------------------------------------------------------------------------------
# Checkpoints as researchers save them (issue 31 item 1), each as a local file of its own


def own_checkpoint(tmp_path, name: str, obj, model_id: str = "mine", **spec):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return fetch_model({"id": model_id, "source": {"kind": "url", "url": str(path), **spec}}, TINY,
                       cache_dir=tmp_path / "cache", out=tmp_path / f"{model_id}.safetensors", progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "wrap", "key"),
    [
        ("bare.pth", lambda sd: sd, None),
        ("timm_train.pth.tar", lambda sd: {"epoch": 3, "arch": "resnet50", "state_dict": sd, "state_dict_ema": {k: v + 1 for k, v in sd.items()},
                                           "args": argparse.Namespace(lr=0.1, model="resnet50"), "version": 2}, "state_dict"),  # fmt: skip
        ("lightning.ckpt", lambda sd: {"epoch": 9, "global_step": 90, "pytorch-lightning_version": "2.4.0",
                                       "state_dict": {f"model.{k}": v for k, v in sd.items()}, "hyper_parameters": {"lr": 0.1}}, "state_dict"),  # fmt: skip
        ("ema_only.pth", lambda sd: {"model_ema": sd}, "model_ema"),
        ("weights.safetensors", lambda sd: sd, None),
    ],
)
def test_checkpoints_as_researchers_save_them_load(tmp_path, tiny, name, wrap, key):
    from layercrit.models.zoo import load_checkpoint

    meta = own_checkpoint(tmp_path, name, wrap(tiny))
    assert meta["conversion"][0]["key"] == key
    loaded = load_checkpoint(tmp_path / "mine.safetensors").state_dict
    assert all(torch.equal(loaded[k], tiny[k].to(loaded[k].dtype)) for k in tiny)  # the trained weights, not the EMA


def test_a_whole_pickled_model_is_refused_with_the_line_that_saves_its_weights_unless_trusted(tmp_path, tiny):
    from layercrit.weights.conversion import CheckpointReadError
    from layercrit.models.zoo import build_architecture, load_checkpoint

    model = build_architecture(TINY, seed=0)
    model.load_state_dict(tiny)
    with pytest.raises(CheckpointReadError, match=r"is a whole pickled model \(torch.save\(model, path\).*torch\.save\(model\.state_dict\(\), path\).*trust_pickle: true"):
        own_checkpoint(tmp_path, "whole.pt", model)
    own_checkpoint(tmp_path, "whole.pt", model, trust_pickle=True)
    loaded = load_checkpoint(tmp_path / "mine.safetensors")
    assert all(torch.equal(loaded.state_dict[k], tiny[k]) for k in tiny)
    assert loaded.metadata["conversion"][0]["trust_pickle"] is True

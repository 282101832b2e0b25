"""Issue 30 M2, L4: a model's local source file (a path or file://, no sha256 in the zoo) is the
user's own and changes. Its content digest is a param of its download job, so saving another
model over it re-makes the checkpoint also with an older modification time; `~` in its path is
the home directory, as in data.root, and a missing file stops the plan naming its zoo key."""

import os
import shutil

import pytest
import yaml

from conftest import REPO, run_snakemake, tiny_study
from support.config_cases import assert_config_fails, break_config
from test_workflow import planned_jobs

CHECKPOINT = "results/tiny/models/demo_baseline.safetensors"


def plan(workdir, path, *targets):
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--logger-layercrit-jobs", *targets)
    return proc.stdout + proc.stderr


def own_model_study(workdir, url):
    """The demo zoo with demo_baseline's weights as an own checkpoint at ``url`` (the demo's
    recorded file, copied to workdir/own/baseline.safetensors); one model, one layer, one seed."""
    from layercrit.study import relocatable_zoo

    own = workdir / "own"
    own.mkdir(exist_ok=True)
    for model in ("demo_baseline", "demo_cutout"):
        shutil.copy(REPO / f"resources/demo_zoo/{model}.safetensors", own / f"{model.removeprefix('demo_')}.safetensors")
    zoo = relocatable_zoo(REPO / "config/zoo/demo.yaml")
    entry = next(m for m in zoo["models"] if m["id"] == "demo_baseline")
    entry["source"] = {"kind": "url", "url": url}
    path = tiny_study(workdir)
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))  # the demo's recipes, not tiny_study's
    break_config(path, lambda c: (c.update(models=["demo_baseline"], training={**c["training"], "retrain": False}),
                                  c["reset"].update(seeds=[0], layers={"include": ["fc"]})))  # fmt: skip
    return path


def test_a_local_checkpoint_saved_over_with_an_older_mtime_is_fetched_again(workdir):
    own = workdir / "own/baseline.safetensors"
    path = own_model_study(workdir, str(own))
    run_snakemake(workdir, "--configfile", str(path), "--cores", "1", CHECKPOINT)
    assert "Nothing to be done" in plan(workdir, path, CHECKPOINT)
    # another model's weights, with an older modification time than the checkpoint (cp -p, rsync -a)
    shutil.copy2(workdir / "own/cutout.safetensors", own)
    stamp = (workdir / CHECKPOINT).stat().st_mtime_ns - 10**11
    os.utime(own, ns=(stamp, stamp))
    jobs = planned_jobs(workdir, path)
    assert jobs["download_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 1, jobs


def test_a_local_checkpoint_touched_or_copied_back_unchanged_is_not_fetched_again(workdir):
    own = workdir / "own/baseline.safetensors"
    path = own_model_study(workdir, f"file://{own}")
    run_snakemake(workdir, "--configfile", str(path), "--cores", "1", CHECKPOINT)
    content = own.read_bytes()
    own.unlink()
    own.write_bytes(content)  # another inode and ctime, the same bytes: hashed, and found the same
    stamp = (workdir / CHECKPOINT).stat().st_mtime_ns - 10**11
    os.utime(own, ns=(stamp, stamp))
    assert "Nothing to be done" in plan(workdir, path, CHECKPOINT)


def write_checkpoint(path, files):
    """A canonical checkpoint whose provenance records ``files`` (what download_model writes)."""
    import torch

    from layercrit.models.zoo import save_checkpoint

    save_checkpoint(path, {"w": torch.ones(1)}, None, {"model": "m", "files": files})


def test_the_digest_is_taken_from_the_checkpoints_record_while_the_file_is_the_one_fetched(tmp_path, monkeypatch):
    """Cheap at parse time: a file whose identity (inode, size, mtime, ctime) the checkpoint
    recorded is not hashed again; one saved over is."""
    from layercrit.weights import specs as source_specs
    from layercrit.io import file_identity, file_sha256

    own = tmp_path / "own.pth"
    own.write_bytes(b"weights")
    source = {"kind": "url", "url": str(own)}
    checkpoint = tmp_path / "m.safetensors"
    assert source_specs.local_source_param(source, checkpoint) == {"local_sha256": {str(own): file_sha256(own)}}
    record = {"url": str(own), "sha256": "a" * 64, "source_identity": list(file_identity(own))}
    write_checkpoint(checkpoint, [record])
    monkeypatch.setattr(source_specs, "file_sha256", lambda path: pytest.fail(f"{path} hashed"))
    assert source_specs.local_source_param(source, checkpoint) == {"local_sha256": {str(own): "a" * 64}}
    monkeypatch.undo()
    own.write_bytes(b"other weights")
    assert source_specs.local_source_param(source, checkpoint) == {"local_sha256": {str(own): file_sha256(own)}}
    assert source_specs.local_source_param({**source, "sha256": "b" * 64}, checkpoint) == {}  # pinned by the zoo


def test_a_checkpoint_fetched_before_digests_were_recorded_keeps_its_params_while_its_file_is_unchanged(tmp_path):
    """Its job's recorded params have no digest: adding one would fetch it again, and re-run every
    result of the model, for nothing."""
    from layercrit.weights import specs as source_specs
    from layercrit.io import file_sha256

    own = tmp_path / "own.pth"
    own.write_bytes(b"weights")
    source = {"kind": "url", "url": str(own)}
    checkpoint = tmp_path / "m.safetensors"
    write_checkpoint(checkpoint, [{"url": str(own), "sha256": file_sha256(own)}])
    assert source_specs.local_source_param(source, checkpoint) == {}
    own.write_bytes(b"weights")  # rewritten, the same bytes
    assert source_specs.local_source_param(source, checkpoint) == {}
    own.write_bytes(b"retrained")
    assert source_specs.local_source_param(source, checkpoint) == {"local_sha256": {str(own): file_sha256(own)}}


def test_a_tilde_in_a_local_url_is_the_home_directory_as_in_data_root(workdir):
    path = own_model_study(workdir, "~/own/baseline.safetensors")
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--logger-layercrit-jobs", CHECKPOINT, env={"HOME": str(workdir)})
    assert f"input: {workdir}/own/baseline.safetensors" in proc.stdout


@pytest.mark.parametrize("url", ["~/own/gone.safetensors", "own/gone.safetensors", "file:///nowhere/gone.safetensors"])
def test_a_missing_local_source_file_stops_the_plan_naming_its_zoo_key(workdir, url):
    path = own_model_study(workdir, url)
    assert_config_fails(workdir, path, ["zoo.models.demo_baseline.source.url:", f"{url!r} names the local file", "does not exist"])

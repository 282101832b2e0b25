"""Outputs: written atomically with the same permissions, leftovers of killed writes removed,
damaged files named with the command that makes them again."""

import json
import os
import stat

import pytest
import torch

from layercrit.io import DamagedFileError, atomic_path, read_json, read_safetensors, write_json


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_every_kind_of_output_gets_the_permissions_of_a_plain_open(tmp_path):
    from layercrit.data import ImageSet, save_image_set
    from layercrit.models.zoo import save_checkpoint

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, None)
        save_image_set(ImageSet(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, dtype=torch.long)), tmp_path / "d.safetensors")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    expected = mode_of(tmp_path / "plain.txt")
    assert expected == 0o644
    for name in ("r.json", "m.safetensors", "d.safetensors"):
        assert mode_of(tmp_path / name) == expected, name


def test_a_write_removes_what_a_killed_write_of_the_same_output_left(tmp_path):
    leftover = tmp_path / ".fig.png.ab12cd34.tmp"
    leftover.write_bytes(b"half a PNG")
    other = tmp_path / ".fig.png.x.ab12cd34.tmp"  # another output's temporary file: kept
    other.write_bytes(b"busy")
    with atomic_path(tmp_path / "fig.png") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "fig.png"]


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "r.json") as tmp:
            with open(tmp, "w") as f:
                f.write("{")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_json_names_the_file_and_the_command_that_remakes_it(tmp_path):
    path = tmp_path / "seed0.json"
    write_json(path, {"criticality": 1.0, "model": "m" * 300})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DamagedFileError) as error:
        read_json(path)
    assert str(path) in str(error.value) and f"snakemake --forcerun {path}" in str(error.value)


def test_a_truncated_safetensors_file_names_the_file_and_the_command_that_remakes_it(tmp_path):
    from layercrit.data import load_image_set
    from layercrit.models.zoo import load_checkpoint, save_checkpoint

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": torch.zeros(1000)}, None)
    path.write_bytes(path.read_bytes()[:50])
    for read in (load_checkpoint, load_image_set, read_safetensors):
        with pytest.raises(DamagedFileError, match=rf"{path} is damaged or incomplete .*snakemake --forcerun {path}"):
            read(path)


def test_evaluation_data_without_its_tensors_is_named(tmp_path):
    from safetensors.torch import save_file

    from layercrit.data import load_image_set

    save_file({"pictures": torch.zeros(1)}, str(tmp_path / "eval.safetensors"))
    with pytest.raises(DamagedFileError, match=r"lacks the tensor\(s\) \['images', 'labels'\]"):
        load_image_set(tmp_path / "eval.safetensors")


def test_the_same_checkpoint_written_twice_is_the_same_file(tmp_path):
    # A deterministic training must give a byte-identical checkpoint: baselines record its sha256.
    # (safetensors writes header entries in hash-map order, which changes from write to write.)
    from layercrit.models.zoo import load_checkpoint, save_checkpoint

    state = {"w": torch.arange(4.0), "n": torch.tensor(3)}
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}
    meta = {"model": "m", "seed": 7, "weights": "trained"}
    files = []
    for i in range(16):
        save_checkpoint(tmp_path / f"{i}.safetensors", state, norm, meta)
        files.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(set(files)) == 1
    loaded = load_checkpoint(tmp_path / "0.safetensors")
    assert loaded.normalization == norm and loaded.metadata == meta


def test_a_checkpoint_in_the_earlier_header_layout_still_loads(tmp_path):
    from safetensors.torch import save_file

    from layercrit.models.zoo import load_checkpoint

    header = {"normalization": json.dumps({"mean": [0.1] * 3, "std": [0.3] * 3}), "metadata": json.dumps({"seed": 1})}
    save_file({"w": torch.ones(2)}, tmp_path / "old.safetensors", header)
    loaded = load_checkpoint(tmp_path / "old.safetensors")
    assert loaded.normalization == {"mean": [0.1] * 3, "std": [0.3] * 3} and loaded.metadata == {"seed": 1}
    assert torch.equal(loaded.state_dict["w"], torch.ones(2))


def test_a_checkpoint_re_saved_without_its_header_is_refused_not_evaluated_unnormalized(tmp_path):  # issue 21 D6
    from safetensors.torch import load_file, save_file

    from layercrit.models.zoo import load_checkpoint, save_checkpoint

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": torch.zeros(3)}, {"mean": [0.5] * 3, "std": [0.2] * 3})
    assert load_checkpoint(path).normalization == {"mean": [0.5] * 3, "std": [0.2] * 3}
    save_file(load_file(path), path)  # what a user's re-save does
    with pytest.raises(DamagedFileError, match=rf"{path} is damaged .*lacks the 'layercrit' entry .*normalization.*--forcerun {path}"):
        load_checkpoint(path)


def test_a_checkpoint_header_that_is_not_json_is_named(tmp_path):  # issue 21 D12
    from safetensors.torch import save_file

    from layercrit.models.zoo import load_checkpoint

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(3)}, path, {"layercrit": "{normalization: oops"})
    with pytest.raises(DamagedFileError, match=rf"{path} is damaged .*'layercrit' header entry is not valid JSON"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_architecture_names_the_file_and_the_shapes(tmp_path, demo_arch):  # issue 21 D11
    import dataclasses

    from layercrit.models.zoo import build_architecture, load_checkpoint, load_model, save_checkpoint

    other = dataclasses.replace(demo_arch, kwargs={**demo_arch.kwargs, "num_classes": 3})
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_architecture(other, seed=0).state_dict(), None)
    with pytest.raises(ValueError, match=rf"checkpoint {path} does not fit architecture 'demo_resnet' .*2 tensors of other shapes: .*'fc.weight: \(3, \d+\) in the file, \(10, \d+\) in the model'.*--forcerun {path}"):
        load_model(demo_arch, load_checkpoint(path))
    save_checkpoint(path, build_architecture(demo_arch, seed=0).state_dict(), None)
    assert load_model(demo_arch, load_checkpoint(path)) is not None

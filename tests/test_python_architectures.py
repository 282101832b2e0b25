"""Issue 33: a zoo architecture from the user's own Python code (``python: package.module:build``,
``path``, ``kwargs``). The code is the example package the README names
(examples/own_architecture/tinynets), copied where each test may edit it."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch
import yaml

from conftest import REPO

EXAMPLE = REPO / "examples/own_architecture"
SPEC = {"python": "tinynets.resnet:build", "path": "code", "kwargs": {"num_classes": 10, "width": 8}, "layers": "tinynet.tsv"}


@pytest.fixture
def own_code(tmp_path):
    """A copy of the tinynets package under ``tmp_path/code``; afterwards this process forgets it
    (Python imports a module once per process, and each test has its own copy)."""
    shutil.copytree(EXAMPLE / "tinynets", tmp_path / "code/tinynets", ignore=shutil.ignore_patterns("__pycache__"))
    path = list(sys.path)
    yield tmp_path
    for name in [m for m in sys.modules if m == "tinynets" or m.startswith("tinynets.")]:
        del sys.modules[name]
    sys.path[:] = path


def arch_of(zoo_dir, spec=SPEC, arch_id="tinynet"):
    from layercrit.study import architecture_from_spec

    return architecture_from_spec(arch_id, spec, (), zoo_dir=zoo_dir)


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_digest_follows_every_py_file_of_the_package_and_nothing_else(own_code):
    package = own_code / "code/tinynets"
    digest = arch_of(own_code).extra["code_sha256"]
    assert arch_of(own_code).extra["path"] == str((own_code / "code").resolve())
    os.utime(package / "resnet.py", (1, 1))  # touched: the same code
    (package / "__pycache__").mkdir()
    (package / "__pycache__/resnet.cpython-311.pyc").write_bytes(b"compiled")
    (package / "NOTES.txt").write_text("not code")
    (own_code / "code/other.py").write_text("x = 1\n")  # beside the package, not in it
    assert arch_of(own_code).extra["code_sha256"] == digest
    shutil.copytree(package, own_code / "elsewhere/tinynets")  # the same code in another place
    moved = arch_of(own_code, {**SPEC, "path": "elsewhere"})
    assert moved.extra["code_sha256"] == digest and moved.extra["path"] != arch_of(own_code).extra["path"]

    edit(package / "blocks.py", "padding=1, bias=False)\n        self.bn1", "padding=1, bias=False)  # edited\n        self.bn1")
    edited = arch_of(own_code).extra["code_sha256"]  # a module the factory's module imports
    assert edited != digest
    (package / "extra.py").write_text("")  # a file added
    assert arch_of(own_code).extra["code_sha256"] not in (digest, edited)


def test_the_layer_list_header_records_the_digest_but_not_where_the_code_lies(own_code):
    from layercrit.study import architecture_identity

    identity = architecture_identity(arch_of(own_code))
    assert identity == {
        "library": "python", "name": "tinynets.resnet:build", "kwargs": {"num_classes": 10, "width": 8},
        "extra": {"code_sha256": arch_of(own_code).extra["code_sha256"]},
    }  # fmt: skip
    params = arch_of(own_code).job_params()  # a job imports the code from the path: it has it
    assert params["library"] == "python" and params["extra"]["path"] == str((own_code / "code").resolve())


def test_randomize_draws_the_layer_from_the_factory_built_after_manual_seed(own_code):
    from layercrit.evaluation.reset import reset_layer
    from layercrit.models.seed_schemes import fresh_model
    from layercrit.models.zoo import build_architecture

    arch = arch_of(own_code)
    trained = build_architecture(arch, seed=123)
    sys.path.insert(0, str(own_code / "code"))
    from tinynets.resnet import build

    for seed in (0, 5):
        torch.manual_seed(seed)
        by_hand = build(num_classes=10, width=8).state_dict()
        with reset_layer(trained, "stages.1.0.conv1", "randomize", fresh_model(arch, seed).state_dict()) as model:
            assert torch.equal(model.stages[1][0].conv1.weight, by_hand["stages.1.0.conv1.weight"])
            assert torch.equal(model.fc.weight, trained.fc.weight)  # every other layer as trained
    # the authors' scheme: trial t is the (t + 2)-th construction after manual_seed(0)
    torch.manual_seed(0)
    constructions = [build(num_classes=10, width=8).state_dict() for _ in range(3)]
    authors = fresh_model(arch, 1, "authors").state_dict()
    assert all(torch.equal(authors[k], constructions[2][k]) for k in authors)


def test_a_factory_name_without_colon_or_a_missing_package_stops_at_parse_time(own_code):
    from layercrit.study import ConfigError

    with pytest.raises(ConfigError, match=r"architectures\.tinynet\.python: 'tinynets\.resnet\.build' is not a factory name; write it as package\.module:callable"):
        arch_of(own_code, {**SPEC, "python": "tinynets.resnet.build"})
    (own_code / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no package or module 'tinynets' .* on path '.*empty', then sys\.path.*set the architecture's path"):
        arch_of(own_code, {**SPEC, "path": "empty"})
    with pytest.raises(ConfigError, match=r"has no module 'tinynets\.resnt' \(tinynets/resnt\.py\); its modules: \['tinynets', 'tinynets\.blocks', 'tinynets\.resnet'\]"):
        arch_of(own_code, {**SPEC, "python": "tinynets.resnt:build"})


def test_the_zoo_schema_takes_python_and_path_only_together(own_code):
    from layercrit.study import load_schema, schema_problems

    def problems(spec):
        zoo = {"architectures": {"a": spec}, "categories": [{"id": "c", "label": "C"}],
               "models": [{"id": "m", "category": "c", "architecture": "a", "source": {"kind": "url", "url": "m.pth"}}]}  # fmt: skip
        return schema_problems(zoo, load_schema("zoo"), "zoo")

    assert problems(SPEC) == [] and problems({**SPEC, "path": None}) != []
    [malformed] = problems({**SPEC, "python": "tinynets.resnet"})
    assert "zoo key 'architectures.a.python': 'tinynets.resnet' does not match" in malformed and "package.module:callable" in malformed
    [path_alone] = problems({"timm": "resnet18", "path": "code", "layers": "r.tsv"})
    assert "'python' is a dependency of 'path'" in path_alone, path_alone


def test_what_the_factory_cannot_do_is_said_when_its_layer_list_is_written(own_code):
    from layercrit.models.builders import unknown_architecture_message
    from layercrit.models.own_code import FactoryError
    from layercrit.models.zoo import build_architecture

    module = own_code / "code/tinynets/resnet.py"
    module.write_text(module.read_text() + "\nWIDTH = 8\n\ndef no_model(**kwargs):\n    return dict(kwargs)\n")
    assert unknown_architecture_message(arch_of(own_code)) is None
    message = unknown_architecture_message(arch_of(own_code, {**SPEC, "python": "tinynets.resnet:buld"}))
    assert "module 'tinynets.resnet'" in message and "has no 'buld'; close names: ['build']" in message
    assert "is a int, not a function or class" in unknown_architecture_message(arch_of(own_code, {**SPEC, "python": "tinynets.resnet:WIDTH"}))
    with pytest.raises(FactoryError, match=r"tinynets\.resnet:no_model\(\*\*\{.*\}\) returned a dict, not a torch\.nn\.Module"):
        build_architecture(arch_of(own_code, {**SPEC, "python": "tinynets.resnet:no_model"}))
    with pytest.raises(FactoryError, match=r"tinynets\.resnet:build does not take kwargs \{'depth': 3\}"):
        build_architecture(arch_of(own_code, {**SPEC, "kwargs": {"depth": 3}}))


def test_code_edited_after_the_plan_or_imported_from_elsewhere_builds_nothing(own_code):
    from layercrit.models.own_code import FactoryError
    from layercrit.models.zoo import build_architecture

    planned = arch_of(own_code)
    edit(own_code / "code/tinynets/resnet.py", "std=0.01", "std=0.02")
    with pytest.raises(FactoryError, match=r"the code of tinynets\.resnet:build \(tinynets/__init__\.py, tinynets/blocks\.py, tinynets/resnet\.py in .*\) is not the code the workflow was planned with"):
        build_architecture(planned)
    build_architecture(arch_of(own_code))  # imported now, edited code
    edit(own_code / "code/tinynets/resnet.py", "std=0.02", "std=0.03")
    with pytest.raises(FactoryError, match="this process imported 'tinynets' before its code .* changed"):
        build_architecture(arch_of(own_code))
    shutil.copytree(own_code / "code/tinynets", own_code / "copy/tinynets")
    with pytest.raises(FactoryError, match=r"module 'tinynets' is imported from .*code/tinynets/__init__\.py, not from .*copy where the workflow found"):
        build_architecture(arch_of(own_code, {**SPEC, "path": "copy"}))


def test_changed_code_stops_the_plan_until_the_layer_list_is_written_again(own_code):
    from layercrit.models.zoo import write_layers
    from layercrit.study import ConfigError
    from layercrit.study.architectures import _layer_list

    zoo = {"architectures": {"tinynet": SPEC}, "models": [{"id": "mine", "architecture": "tinynet"}]}
    (own_code / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    write_layers(own_code / "zoo.yaml", "tinynet")
    assert len(_layer_list(own_code, "tinynet", SPEC, zoo).layers) == 19
    edit(own_code / "code/tinynets/blocks.py", "nn.ReLU(inplace=True)", "nn.ReLU()")
    with pytest.raises(ConfigError) as stop:
        _layer_list(own_code, "tinynet", SPEC, zoo)
    assert str(stop.value) == (
        f"architectures.tinynet: the code of tinynets.resnet:build (tinynets/__init__.py, tinynets/blocks.py, "
        f"tinynets/resnet.py in {(own_code / 'code').resolve()}) changed since its layer list "
        f"'{own_code / 'tinynet.tsv'}' was written: its layers may differ. Write it again with: python -m "
        f"layercrit.zoo layers {own_code / '<zoo>.yaml'} tinynet; Snakemake then re-makes the results of models "
        "['mine'] (their checkpoints, baselines and resets), as those of another model"
    )


def test_the_example_layer_list_is_what_the_command_writes(own_code):
    """The README's example ships its layer list: it is the one its zoo entry writes."""
    from layercrit.models.zoo import write_layers

    shutil.copy(EXAMPLE / "zoo.yaml", own_code / "zoo.yaml")
    edit(own_code / "zoo.yaml", "path: .  ", "path: code")
    out, n = write_layers(own_code / "zoo.yaml", "tinynet")
    assert n == 19 and out.read_text() == (EXAMPLE / "tinynet.tsv").read_text()


def test_own_code_gives_no_input_facts_so_its_models_say_their_normalization(own_code):
    from layercrit.study import ConfigError, check_class_count, model_normalization

    arch = arch_of(own_code)
    assert model_normalization({"id": "m", "normalization": None}, arch) is None
    with pytest.raises(ConfigError, match=r"zoo\.models\.m\.normalization: not given, and architecture 'tinynet' \(python tinynets\.resnet:build\) has no pretrained config that says; set it"):
        model_normalization({"id": "m"}, arch)
    synthetic = {"data": {"kind": "synthetic", "n_classes": 10}}
    check_class_count(synthetic, {"tinynet": arch})
    check_class_count(synthetic, {"tinynet": arch_of(own_code, {**SPEC, "kwargs": {"width": 8}})})  # its own default: unknown here
    with pytest.raises(ConfigError, match=r"architectures\.tinynet: 7 outputs \(kwargs\.num_classes\), but the data has 10 classes"):
        check_class_count(synthetic, {"tinynet": arch_of(own_code, {**SPEC, "kwargs": {"num_classes": 7, "width": 8}})})


def test_code_that_draws_on_import_does_not_shift_the_seeded_draws(own_code):
    from layercrit.models.seed_schemes import fresh_model

    edit(own_code / "code/tinynets/resnet.py", "from torch import Tensor, nn\n", "import torch\nfrom torch import Tensor, nn\n\nNOISE = torch.rand(3)  # drawn on import\n")
    fresh = fresh_model(arch_of(own_code), 4).state_dict()  # the first build: imports the package
    from tinynets.resnet import build

    torch.manual_seed(4)
    by_hand = build(num_classes=10, width=8).state_dict()
    assert all(torch.equal(fresh[k], by_hand[k]) for k in by_hand)

"""An invalid config stops `snakemake` before any job, with a message naming the key and what is allowed.

The messages are checked against the run's own check (layercrit.study.load_workflow_study) in
this process; a few smoke tests run `snakemake -n` to show that they reach the user.
"""

import pytest
import yaml

from conftest import REPO, run_snakemake, tiny_study, write_layer_list
from support.config_cases import assert_config_fails, assert_plan_fails, break_config, break_zoo, plan_error


CONFIG_CASES = {
    "unknown key": (lambda c: c.update(seedz=[0]), ["'(top level)'", "unknown key(s) ['seedz']", "allowed:", "'reset'"]),
    "unknown nested key": (lambda c: c["reset"].update(mdoe="zero"), ["'reset'", "['mdoe']", "'mode'"]),
    "wrong type": (lambda c: c.update(batch_size="big"), ["'batch_size'", "'big' is not of type 'integer'"]),
    "missing field": (lambda c: c.pop("reset"), ["'reset' is a required property"]),
    "unknown mode": (lambda c: c["reset"].update(mode="shuffle"), ["'reset.mode'", "'shuffle'", "['randomize', 'zero', 'reinit', 'remove']"]),
    "unknown precision": (lambda c: c.update(precision="fp8"), ["'precision'", "'fp8'", "['fp32', 'torch_default', 'tf32', 'bf16']"]),
    "unknown model": (lambda c: c.update(models=["demo_baseline", "nope"]), ["models: unknown model id(s) ['nope']", "allowed: ['demo_baseline'"]),
    "layer pattern matching nothing": (lambda c: c["reset"].update(layers={"include": ["layer9.*"]}), ["reset.layers", "'layer9.*'", "matches no layer"]),
    "layer type of no architecture": (
        lambda c: c["reset"].update(layers={"types": ["Conv2d", "LayerNorm2d"]}),
        ["reset.layers.types: ['LayerNorm2d'] is no module class of the architectures it applies to", "demo_resnet: ['BatchNorm2d', 'Conv2d', 'Linear']", "demo_vit: ['Conv2d', 'LayerNorm', 'Linear']"],
    ),
    "layer type that is no class name": (lambda c: c["reset"].update(layers={"types": ["nn.Conv2d"]}), ["'reset.layers.types.0'", "'nn.Conv2d' does not match"]),
    "images of another size than a ViT takes": (
        lambda c: c["data"].update(image_size=48),
        ["architectures.demo_vit (models ['demo_vit'])", "takes only 32x32 input", "images are 48x48 (data.image_size)", "kwargs img_size: 48"],
    ),
    "missing zoo": (lambda c: c.update(zoo="nowhere.yaml"), ["'nowhere.yaml' does not exist"]),
    "study outside results/": (lambda c: c.update(study=".."), ["'study'", "'..' does not match", "one directory name"]),
    "study is the working directory": (lambda c: c.update(study="."), ["'study'", "'.' does not match"]),
    "exclude pattern matching nothing": (lambda c: c["reset"].update(layers={"exclude": ["layer9.*"]}), ["reset.layers.exclude", "'layer9.*'", "matches no layer"]),
    "missing published zoo": (lambda c: c.update(published={"zoo": "gone.yaml"}), ["published.zoo: file 'gone.yaml' does not exist"]),
    # issue 21 D7: JSON Schema counts 500.0 as an integer; torch and file names do not
    "integer written as a float": (lambda c: c.update(batch_size=500.0), ["'batch_size'", "500.0 is not of type 'integer'"]),
    "seeds written as floats": (lambda c: c["reset"].update(seeds=[0.0, 1.0]), ["'reset.seeds.0'", "0.0 is not of type 'integer'"]),
    "outputs and classes differ": (lambda c: c["data"].update(n_classes=8), ["architectures.demo_resnet: 10 outputs (kwargs.num_classes)", "8 classes (data.n_classes)", "num_classes to 8"]),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_config_errors(workdir, case):
    mutate, expected = CONFIG_CASES[case]
    path = tiny_study(workdir)
    break_config(path, mutate)
    assert_config_fails(workdir, path, expected)


@pytest.mark.parametrize("case", ["unknown key", "unknown model"], ids=["schema", "build_study"])
def test_a_config_error_reaches_the_user_of_snakemake(workdir, case):
    """Smoke: common.smk raises the check's message as a WorkflowError, before any job (a schema
    problem, and one of the study's cross-references)."""
    mutate, expected = CONFIG_CASES[case]
    path = tiny_study(workdir)
    break_config(path, mutate)
    assert_plan_fails(workdir, path, expected)
    assert not (workdir / "results").exists()


ZOO_CASES = {
    "unknown model key": (lambda z: z["models"][0].update(acuracy=1), ["'models.0'", "['acuracy']", "'reported_top1'"]),
    "unknown category": (lambda z: z["models"][0].update(category="magic"), ["unknown category 'magic'", "allowed: ['baseline'"]),
    "unknown architecture": (lambda z: z["models"][0].update(architecture="vit"), ["unknown architecture 'vit'", "['demo_resnet', 'demo_resnet_plain_init', 'demo_vit']"]),
    "layer list of another architecture": (
        lambda z: z["architectures"]["demo_resnet"]["kwargs"].update(channels=[16, 32, 64, 256]),
        ["architectures.demo_resnet (models ['demo_baseline'", "demo_resnet.tsv' was written for", "'channels': [16, 32, 64, 128]", "but the zoo builds", "[16, 32, 64, 256]", "python -m layercrit.zoo layers"],
    ),
    "architecture of a library the schema does not know": (lambda z: z["architectures"]["demo_vit"].update(keras="vit"), ["'architectures.demo_vit'", "['keras']"]),
    "unknown source kind": (lambda z: z["models"][0]["source"].update(kind="ftp"), ["'models.0.source.kind'", "'ftp'"]),
    "unknown norm": (lambda z: z["models"][0].update(adversarial={"norm": "l3", "epsilon": 1}), ["'models.0.adversarial.norm'", "['linf', 'l2']"]),
    "duplicate id": (lambda z: z["models"].append(dict(z["models"][0])), ["'demo_baseline' appears twice"]),
    "missing layer list": (lambda z: z["architectures"]["demo_resnet"].update(layers="missing.tsv"), ["missing.tsv", "does not exist", "python -m layercrit.zoo layers"]),
    "model id outside its mode's folder": (lambda z: z["models"][0].update(id=".."), ["'models.0.id'", "'..' does not match", "one directory name"]),
    "batch of one": (lambda z: z["models"][0]["source"]["recipe"].update(batch_size=1), ["'models.0.source.recipe.batch_size'", "1 is less than the minimum of 2", "BatchNorm"]),
}


@pytest.mark.parametrize("case", ZOO_CASES, ids=list(ZOO_CASES))
def test_zoo_errors(workdir, case):
    mutate, expected = ZOO_CASES[case]
    path = tiny_study(workdir)
    break_zoo(workdir, mutate)
    assert_config_fails(workdir, path, expected)


def test_replication_target_says_why_there_is_nothing_to_compare(workdir):
    path = tiny_study(workdir)
    break_config(path, lambda c: c["reset"].update(mode="zero"))
    assert_plan_fails(workdir, path, ["Nothing to compare with the published results", "reset.mode is 'zero'",
                                      "no model id of zoo", "is in the published zoo"], "replication")  # fmt: skip


def test_reinit_needs_models_with_initial_weights(demo_arch):
    from layercrit.study import ConfigError, build_study

    zoo = yaml.safe_load((REPO / "config/zoo/demo.yaml").read_text())
    zoo["models"][0]["source"] = {"kind": "url", "url": "https://example.org/m.pth"}
    config = {"study": "x", "reset": {"mode": "reinit", "seeds": [0]}, "training": {"retrain": True}}
    with pytest.raises(ConfigError, match=r"'reinit' needs .* \['demo_baseline'\]\. Use mode") as error:
        build_study(config, zoo, REPO / "config" / "zoo")
    assert "training.retrain" not in str(error.value)  # retraining would not give a downloaded model its start


def test_reinit_on_the_recorded_demo_zoo_names_retraining(demo_arch):
    """The demo fetches checkpoints trained elsewhere, which come without their initial weights;
    retraining them here gives those."""
    from layercrit.study import ConfigError, build_study

    zoo = yaml.safe_load((REPO / "config/zoo/demo.yaml").read_text())
    config = {"study": "x", "reset": {"mode": "reinit", "seeds": [0]}}
    with pytest.raises(ConfigError, match=r"'reinit' needs .*set training.retrain: true .*config/demo_training.yaml"):
        build_study(config, zoo, REPO / "config" / "zoo")
    study = build_study({**config, "training": {"retrain": True}}, zoo, REPO / "config" / "zoo")
    assert study.trained_models == tuple(m["id"] for m in zoo["models"])


def test_an_empty_zoo_file_is_named(workdir):
    path = tiny_study(workdir)
    (workdir / "zoo.yaml").write_text("# nothing yet\n")
    assert_config_fails(workdir, path, ["zoo: 'zoo.yaml' holds nothing, not a zoo", "architectures, categories and models"])


def test_a_layer_list_with_a_name_that_is_no_module_name_is_refused(workdir):
    path = tiny_study(workdir)
    layers = workdir / "layers.tsv"
    layers.write_text((REPO / "config/architectures/demo_resnet.tsv").read_text() + "..\tLinear\t10x128\n")
    break_zoo(workdir, lambda z: z["architectures"]["demo_resnet"].update(layers=str(layers)))
    assert_config_fails(workdir, path, ["layers.tsv", "['..'] are not module names"])


def test_a_local_run_on_a_gpu_this_machine_lacks_stops_before_any_job(workdir):
    path = tiny_study(workdir)
    break_config(path, lambda c: c.update(device="cuda"))
    run_snakemake(workdir, "--configfile", str(path), "-n")  # planning (e.g. for a cluster) is fine
    proc = run_snakemake(workdir, "--configfile", str(path), "--cores", "1", check=False, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "device: 'cuda' needs GPU 0, but this machine has 0 GPU(s) visible" in output and "device: auto" in output
    assert not (workdir / "results").exists()


def test_a_value_out_of_range_names_the_bound_not_the_description(workdir):
    path = tiny_study(workdir)
    break_config(path, lambda c: c.update(activation_cache_mb=-1))
    line = next(l for l in plan_error(workdir, path).splitlines() if "'activation_cache_mb'" in l)
    assert "-1 is less than the minimum of 0" in line
    assert "expected minimum: memory" not in line  # the description once stood where the bound belongs


def test_timms_default_class_count_is_named(workdir):
    """Without kwargs.num_classes timm builds 1,000 outputs (the layer list written for that
    architecture says so too); a 10-class study stops, naming the key to set."""
    path = tiny_study(workdir)
    spec = {"timm": "resnet50", "kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}, "layers": str(workdir / "default.tsv")}
    write_layer_list(workdir, "demo_resnet", spec)
    break_zoo(workdir, lambda z: z["architectures"].update(demo_resnet=spec))
    assert_config_fails(workdir, path, ["1000 outputs (timm's default", "10 classes (data.n_classes)"])


def test_a_layer_list_without_a_header_is_refused(workdir):
    path = tiny_study(workdir)
    layers = workdir / "handmade.tsv"
    rows = [l for l in (REPO / "config/architectures/demo_resnet.tsv").read_text().splitlines() if not l.startswith("#")]
    layers.write_text("\n".join(rows) + "\n")
    break_zoo(workdir, lambda z: z["architectures"]["demo_resnet"].update(layers=str(layers)))
    assert_config_fails(workdir, path, ["handmade.tsv' has no header saying which architecture it lists", "python -m layercrit.zoo layers"])


def test_the_layers_command_names_an_architecture_timm_does_not_know(workdir):
    import subprocess
    import sys

    zoo = {"architectures": {"mine": {"timm": "vit_smal_patch16_224", "layers": "mine.tsv"}}}
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    proc = subprocess.run(
        [sys.executable, "-m", "layercrit.zoo", "layers", str(workdir / "zoo.yaml"), "mine"], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "architectures.mine: timm has no architecture 'vit_smal_patch16_224'" in proc.stderr
    assert "vit_small_patch16_224" in proc.stderr  # what it may have meant
    assert not (workdir / "mine.tsv").exists()


def test_a_model_of_an_architecture_without_pretrained_config_must_give_its_normalization(workdir):
    """A torchvision architecture has no timm pretrained config to take the normalization from."""
    path = tiny_study(workdir)
    spec = {"torchvision": "resnet18", "kwargs": {"num_classes": 10}, "layers": str(workdir / "tv_resnet18.tsv")}
    write_layer_list(workdir, "tv_resnet18", spec)
    model = {"id": "tv", "category": "baseline", "architecture": "tv_resnet18", "source": {"kind": "train", "recipe": {"epochs": 1}}}
    break_zoo(workdir, lambda z: z["architectures"].update(tv_resnet18=spec) or z["models"].append(model))
    assert_config_fails(workdir, path, ["zoo.models.tv.normalization: not given", "torchvision resnet18", "or null for a model that takes raw"])


def test_an_integer_given_as_a_float_on_the_command_line_is_refused(workdir):  # issue 21 D7
    path = tiny_study(workdir)
    assert "'batch_size': 1000.0 is not of type 'integer'" in plan_error(workdir, path, "batch_size=1e3")


def test_a_key_given_twice_in_the_config_or_the_zoo_is_refused(workdir):  # issue 21 D10
    path = tiny_study(workdir)
    path.write_text(path.read_text() + "batch_size: 7\n" + "batch_size: 9\n")
    assert_config_fails(workdir, path, [f"{path}, line", "key 'batch_size' is given a second time", "remove one of them"])
    path = tiny_study(workdir)
    zoo = (workdir / "zoo.yaml").read_text()
    (workdir / "zoo.yaml").write_text(zoo + "baseline: demo_control\n")
    assert_config_fails(workdir, path, ["zoo.yaml, line", "key 'baseline' is given a second time"])


def edit_layer_list(workdir, edit):
    """A copy of the demo's layer list, its rows edited by ``edit`` (list of row strings → list)."""
    layers = workdir / "edited.tsv"
    lines = (REPO / "config/architectures/demo_resnet.tsv").read_text().splitlines()
    header = [l for l in lines[:3]]
    layers.write_text("\n".join(header + edit(lines[3:])) + "\n")
    break_zoo(workdir, lambda z: z["architectures"]["demo_resnet"].update(layers=str(layers)))


@pytest.mark.parametrize(
    "edit",
    [
        lambda rows: [r for r in rows if not r.startswith("layer1.0.conv2\t")],  # D8: a row removed
        lambda rows: [r.replace("\tConv2d\t", "\tLinear\t") if r.startswith("layer1.0.conv2\t") else r for r in rows],  # D8
        lambda rows: [r.replace("layer1.0.conv2", "layer1.0.conv_two") for r in rows],  # D9: a row renamed
    ],
    ids=["row removed", "type edited", "row renamed"],
)
def test_a_hand_edited_layer_list_stops_at_parse_time(workdir, edit):  # issue 21 D8, D9
    path = tiny_study(workdir)
    edit_layer_list(workdir, edit)
    assert_config_fails(workdir, path, ["edited.tsv' was edited after it was written", "reset.layers", "python -m layercrit.zoo layers"])


def test_a_torchvision_architectures_default_class_count_is_named_as_torchvisions():  # issue 31 item 8
    from layercrit.study import Architecture, ConfigError, check_class_count

    arch = Architecture("tv", "resnet18", {}, (), library="torchvision")
    with pytest.raises(ConfigError, match=r"1000 outputs \(torchvision's default, no kwargs.num_classes\)"):
        check_class_count({"data": {"kind": "synthetic", "n_classes": 10}}, {"tv": arch})


def test_values_inside_a_nested_command_line_config_arrive_as_strings_and_the_message_says_so(workdir):  # issue 31 item 8
    path = tiny_study(workdir)
    output = plan_error(workdir, path, "reset={seeds: [0, 1, 2]}")
    assert "config key 'reset.seeds.0': '0' is not of type 'integer'" in output
    assert "Snakemake passes the values inside a nested --config entry" in output and "--configfile" in output


def test_a_study_name_alone_on_the_command_line_runs_the_default_study_under_that_name(workdir):  # issue 31 item 8
    proc = run_snakemake(workdir, "--config", "study=mine", "-n", "--logger-layercrit-jobs")
    assert "results/mine/resets/randomize/demo_vit/head/seed2.json" in proc.stdout + proc.stderr


def test_layer_patterns_may_differ_per_architecture_and_one_for_an_architecture_outside_the_subset_is_fine(workdir):  # issue 31 item 7
    from layercrit.study import ConfigError, load_study, validated

    config = validated(yaml.safe_load((REPO / "config/demo.yaml").read_text()), "config", "config")
    config["zoo"] = str(REPO / config["zoo"])
    # a study-wide pattern meant for the ViT, in a study of ResNets only: not an error
    config["models"] = ["demo_baseline"]
    config["reset"]["layers"] = {"include": ["conv1", "blocks.0.*"]}
    assert [l.name for l in load_study(config).layers_of("demo_baseline")] == ["conv1"]
    # each architecture its own selection
    config["models"] = ["demo_baseline", "demo_vit"]
    config["reset"]["layers"] = {"include": ["conv1", "fc"], "architectures": {"demo_vit": {"types": ["LayerNorm"], "include": ["blocks.3.*"]}}}
    study = load_study(config)
    assert [l.name for l in study.layers_of("demo_baseline")] == ["conv1", "fc"]
    assert [l.name for l in study.layers_of("demo_vit")] == ["blocks.3.norm1", "blocks.3.norm2"]
    # a pattern that fits no layer of any architecture it applies to is still a typo
    config["reset"]["layers"] = {"include": ["conv1"], "architectures": {"demo_vit": {"include": ["block.3.*"]}}}
    with pytest.raises(ConfigError, match=r"reset.layers.architectures.demo_vit.include: pattern 'block.3.\*' matches no layer of \['demo_vit'\]"):
        load_study(config)
    config["reset"]["layers"] = {"include": ["conv9"]}
    with pytest.raises(ConfigError, match=r"reset.layers.include: pattern 'conv9' matches no layer of"):
        load_study(config)
    config["reset"]["layers"] = {"architectures": {"vit_huge": {"include": ["*"]}}}
    with pytest.raises(ConfigError, match=r"reset.layers.architectures: \['vit_huge'\] are not architectures of the zoo"):
        load_study(config)

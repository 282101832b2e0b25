"""Issue 33 end to end: a study whose architecture comes from the user's own Python code, and an
edit of that code (the README's "From your own code")."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, run_snakemake, snakemake_env
from test_python_architectures import EXAMPLE, SPEC, edit, own_code  # noqa: F401 (own_code: the fixture)
from test_workflow import planned_jobs

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()
LAYERS = ["stem.conv", "stages.1.0.shortcut.conv", "fc"]


def write_layer_list(workdir, zoo, arch_id):
    """The user's command, in a process of its own as the user runs it."""
    cmd = [sys.executable, "-m", "layercrit.zoo", "layers", str(zoo), arch_id]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=snakemake_env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_an_own_architecture_runs_the_whole_study_and_an_edit_of_its_code_re_makes_its_results(own_code):
    """A local checkpoint (torch.save of a state dict) of the own TinyResNet beside a demo model:
    download, baseline, resets, tables and figures. Then the factory's code is edited: the plan
    stops, naming the code and the command; once the layer list is written again, the own
    model's download, baseline and resets are planned again, the demo model's are not."""
    from layercrit.models.zoo import build_architecture
    from layercrit.study import architecture_from_spec, relocatable_zoo

    workdir = own_code
    demo = relocatable_zoo(REPO / "config/zoo/demo.yaml")
    [demo_model] = [m for m in demo["models"] if m["id"] == "demo_baseline"]
    model = build_architecture(architecture_from_spec("tinynet", SPEC, (), zoo_dir=workdir), seed=7)
    with torch.no_grad():  # a classifier far from its small initial one: outputs far from uniform
        model.fc.weight.mul_(300)
    torch.save(model.state_dict(), workdir / "mine.pth")  # what the user's training script saved
    zoo = {
        "architectures": {"tinynet": SPEC, "demo_resnet": demo["architectures"]["demo_resnet"]},
        "categories": [{"id": "baseline", "label": "Baseline"}, {"id": "own", "label": "Own code"}],
        "models": [
            {**demo_model, "in_figures": True},
            {"id": "mine", "name": "TinyResNet (own)", "category": "own", "architecture": "tinynet",
             "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
             "source": {"kind": "url", "url": str(workdir / "mine.pth")}},
        ],
    }  # fmt: skip
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    assert "wrote 19 layers of tinynet" in write_layer_list(workdir, "zoo.yaml", "tinynet")
    config = {
        "study": "own_code", "zoo": "zoo.yaml", "device": "cpu",
        "data": {"kind": "synthetic", "n_classes": 10, "image_size": 32, "eval_images": 64},
        "reset": {"seeds": [0, 1], "layers": {"include": [*LAYERS, "conv1"]}},
    }  # fmt: skip
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--cores", "2")

    results = workdir / "results/own_code"
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    mine = resets[resets["model"] == "mine"]
    assert list(mine["layer"].drop_duplicates()) == LAYERS and len(mine) == 6 and (mine["n_images"] == 64).all()
    assert mine["criticality"].between(0, 100).all() and (mine.groupby("layer")["criticality"].mean() > 1).all()
    baseline = json.loads((results / "baselines/mine.json").read_text())
    assert baseline["n_images"] == 64 and not baseline["suspect_loading"]
    figures = json.loads((results / "figures/randomize/index.json").read_text())
    assert "criticality_heatmap" in figures["figures"], figures
    assert (results / "figures/randomize/criticality_heatmap.png").stat().st_size > 10_000

    edit(workdir / "code/tinynets/resnet.py", "std=0.01", "std=0.02")  # another initializer
    stop = run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "-n", check=False)
    assert stop.returncode != 0
    assert re.search(
        r"architectures\.tinynet: the code of tinynets\.resnet:build \(tinynets/__init__\.py, tinynets/blocks\.py, "
        r"tinynets/resnet\.py in \S+/code\) changed since its layer list '\S*tinynet\.tsv' was written: its layers may "
        r"differ\. Write it again with: python -m layercrit\.zoo layers \S+ tinynet; Snakemake then re-makes the "
        r"results of models \['mine'\]",
        " ".join((stop.stdout + stop.stderr).split()),
    ), stop.stderr[-3000:]
    write_layer_list(workdir, "zoo.yaml", "tinynet")
    jobs = planned_jobs(workdir, workdir / "config.yaml")
    assert jobs["download_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 6, jobs  # mine's alone


def readme_part() -> str:
    """The README's "From your own code" part (up to the next heading or bullet list)."""
    return re.search(r"\n#### From your own code\n(.*?)(?=\n#|\n- \*\*)", README, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path):
    """The README's zoo snippet is the example's zoo, and its commands, run as written in a
    checkout (its files linked, the example copied), write the layer list the example ships and
    make the study's tables and figures."""
    part = readme_part()
    [snippet] = re.findall(r"```yaml\n(.*?)\n```", part, re.S)
    example_zoo = yaml.safe_load((EXAMPLE / "zoo.yaml").read_text())
    assert yaml.safe_load(snippet)["architectures"] == example_zoo["architectures"]
    [block] = re.findall(r"```bash\n(.*?)\n```", part, re.S)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[0] for c in commands] == ["python", "snakemake"], commands

    clone = tmp_path / "layercrit"
    clone.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("results", ".snakemake", ".git", "examples"):
            (clone / entry.name).symlink_to(entry)
    (clone / "examples").mkdir()
    import shutil

    shutil.copytree(EXAMPLE, clone / "examples/own_architecture", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "examples/own_architecture/tinynet.tsv").unlink()  # the first command writes it
    env = snakemake_env()
    env["PATH"] = f"{sys.executable.rsplit('/', 1)[0]}:{env['PATH']}"  # the environment, activated
    for command in commands:
        proc = subprocess.run(shlex.split(command), cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (clone / "examples/own_architecture/tinynet.tsv").read_text() == (EXAMPLE / "tinynet.tsv").read_text()
    results = clone / "results/own_code_example"
    summary = pd.read_csv(results / "tables/randomize/summary.csv")
    assert len(summary) == 10 and (summary["n_seeds"] == 2).all()  # its 9 Conv2d and 1 Linear, 2 seeds
    assert (results / "figures/randomize/criticality_heatmap.png").is_file()

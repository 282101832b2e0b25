"""The workflow used as a Snakemake module from another project, the way snakedeploy deploys it:
a Snakefile with `module ... snakefile: <path>` + `use rule * from ...`, the copied config/ and
profiles/, and the user's own edits, run from the deploying project's directory."""

import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, snakemake_env

pytestmark = pytest.mark.slow

# What snakedeploy writes (workflow/Snakefile of the deploying project), with a local checkout.
MODULE_SNAKEFILE = """\
configfile: "config/config.yaml"


module layercrit:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from layercrit
"""


def deploy(dest, *, shipped_zoos: bool):
    """The deploying project: its Snakefile, config/ (without the shipped zoos and layer lists
    unless ``shipped_zoos``) and profiles/, as snakedeploy copies them."""
    (dest / "workflow").mkdir(parents=True)
    (dest / "workflow/Snakefile").write_text(MODULE_SNAKEFILE.format(snakefile=REPO / "Snakefile"))
    ignore = None if shipped_zoos else shutil.ignore_patterns("zoo", "architectures")
    shutil.copytree(REPO / "config", dest / "config", ignore=ignore)
    shutil.copytree(REPO / "profiles", dest / "profiles")


def user_config(dest, **changes):
    """config/config.yaml as a user edits it: the demo's settings, small, with their changes."""
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config.update(device="cpu", **changes)
    config["data"].update(train_images=256, eval_images=64)
    config["reset"].update(seeds=[0], layers={"include": ["conv1", "fc"]})
    (dest / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run(dest, *args):
    cmd = [SNAKEMAKE, "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=900, env=snakemake_env())
    assert proc.returncode == 0, f"{' '.join(cmd)} in {dest} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_a_deployed_study_with_its_own_name_models_and_zoo_runs_end_to_end(tmp_path):
    dest = tmp_path / "my-project"
    deploy(dest, shipped_zoos=True)
    # The user's own zoo: the shipped demo zoo, copied, with shorter training, trained here.
    zoo = yaml.safe_load((dest / "config/zoo/demo.yaml").read_text())
    for model in zoo["models"]:
        model["source"]["recipe"].update(epochs=1, warmup_epochs=0)
    (dest / "config/zoo/mine.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    user_config(
        dest, study="my_study", zoo="config/zoo/mine.yaml", models=["demo_baseline", "demo_control"], training={"retrain": True}
    )

    proc = run(dest)
    assert "Using workflow specific profile profiles/default" in proc.stderr  # the copied profile applies
    results = dest / "results/my_study"
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert set(resets["model"]) == {"demo_baseline", "demo_control"} and len(resets) == 2 * 2
    assert set(resets["layer"]) == {"conv1", "fc"} and resets["criticality"].between(0, 100).all()
    assert (results / "figures/randomize/criticality_heatmap.png").stat().st_size > 10_000
    history = json.loads((results / "models/demo_control.training.json").read_text())
    assert history["epoch"] == [1]  # trained with the user's zoo, not the shipped one
    assert not (REPO / "results/my_study").exists()  # everything in the deploying project


def test_a_deployed_study_finds_the_shipped_zoo_and_layer_lists_in_the_workflow(tmp_path):
    dest = tmp_path / "my-project"
    deploy(dest, shipped_zoos=False)
    # The shipped demo zoo by its path in the workflow, its recorded checkpoint shipped there too.
    user_config(dest, study="shipped", zoo="config/zoo/demo.yaml", models=["demo_control"])
    assert not (dest / "config/zoo").exists() and not (dest / "config/architectures").exists()
    assert not (dest / "resources").exists()

    dry = run(dest, "-n", "--quiet", "rules")
    assert "download_model" in dry.stdout and "train_model" not in dry.stdout and "reset" in dry.stdout
    run(dest, "aggregate")
    resets = pd.read_csv(dest / "results/shipped/tables/randomize/resets.csv")
    assert set(resets["model"]) == {"demo_control"} and set(resets["layer"]) == {"conv1", "fc"}
    from layercrit.models.zoo import load_checkpoint

    record = load_checkpoint(dest / "results/shipped/models/demo_control.safetensors").metadata
    assert record["files"][0]["url"] == str(REPO / "resources/demo_zoo/demo_control.safetensors")
    assert record["files"][0]["recorded"]["model"] == "demo_control"  # the record of its training travels with it


def test_the_catalog_file_claims_only_what_runs():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    # run: evaluation jobs use Snakemake's own environment: no conda or container deployment alone works
    assert not any(catalog["software-stack-deployment"].values())
    assert catalog["report"] is True  # snakemake --report: tests/test_workflow.py builds one
    assert "--configfile config/config.yaml" in catalog["mandatory-flags"]["flags"]


def readme_block(after: str, language: str) -> str:
    """The first fenced block of ``language`` in the README after the line containing ``after``."""
    text = (REPO / "README.md").read_text()
    rest = text[text.index(after):]
    start = rest.index(f"```{language}\n") + len(language) + 4
    return rest[start : rest.index("\n```", start)]


def test_the_readmes_deploy_commands_work_as_written(tmp_path):  # issue 22 item 6
    """The README's deploy block, run by bash with HOME where the clone is (its first line, the
    clone and install, is this checkout), then its example config: a project that plans."""
    import os
    import re
    import time

    home = tmp_path / "home"
    (home / "workflows").mkdir(parents=True)
    (home / "workflows/layercrit").symlink_to(REPO)
    block = readme_block("Deploying is three commands", "bash").splitlines()
    assert block[0].startswith("git clone <this repository> ~/workflows/layercrit && make -C ~/workflows/layercrit install")
    heredoc = "\n".join(block[block.index("cat > my-study/workflow/Snakefile <<EOF") + 1 : block.index("EOF")]) + "\n"
    assert heredoc == MODULE_SNAKEFILE.format(snakefile="$HOME/workflows/layercrit/Snakefile")  # what the tests above run
    started = time.monotonic()
    subprocess.run(["bash", "-euc", "\n".join(block[1:])], cwd=tmp_path, env={**os.environ, "HOME": str(home)}, check=True)
    assert time.monotonic() - started < 60  # seconds, not minutes: nothing but config/ and profiles/ is copied
    project = tmp_path / "my-study"
    assert (project / "workflow/Snakefile").read_text().count(f'"{home}/workflows/layercrit/Snakefile"') == 1
    assert not (project / ".venv").exists() and (project / "profiles/default/config.yaml").exists()
    (project / "config/config.yaml").write_text(readme_block("Then edit `my-study/config/config.yaml`", "yaml"))
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", run(project, "-n", "--quiet", "rules").stdout, flags=re.M))
    assert jobs["reset"] == "4" and jobs["download_model"] == "2"  # 2 models x conv1, fc x seed 0; the shipped checkpoints
    assert "train_model" not in jobs


def test_a_deployed_study_asking_for_a_gpu_this_machine_lacks_stops_before_its_first_job(tmp_path):
    """Issue 30 N1: the check before the first job (the workflow's onstart, which Snakemake does
    not carry through `module`/`use rule *`) runs in a deployed project as in a clone."""
    dest = tmp_path / "my-project"
    deploy(dest, shipped_zoos=False)
    user_config(dest, study="on_gpu", zoo="config/zoo/demo.yaml", models=["demo_control"])
    config = yaml.safe_load((dest / "config/config.yaml").read_text())
    (dest / "config/config.yaml").write_text(yaml.safe_dump({**config, "device": "cuda"}, sort_keys=False))
    cmd = [SNAKEMAKE, "--cores", "2"]
    env = snakemake_env(CUDA_VISIBLE_DEVICES="")  # no GPU, also on a machine that has one
    proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "Invalid configuration: device: 'cuda' needs GPU 0, but this machine has 0 GPU(s) visible" in proc.stderr
    assert not (dest / "results/on_gpu").exists()  # not even the data jobs ran

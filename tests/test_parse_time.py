"""Planning the paper-sized study is fast and never imports torch."""

import re
import time

import yaml

from conftest import REPO, run_snakemake


def test_dry_run_of_51_models_54_layers_3_seeds_lists_every_job_without_torch(workdir):
    zoo = {
        # the 54 layers of ResNet-50, with as many outputs as the demo data has classes
        "architectures": {
            "resnet50": {"timm": "resnet50", "kwargs": {"num_classes": 10}, "layers": str(REPO / "config/architectures/resnet50.tsv")}
        },
        "categories": [{"id": "baseline", "label": "Baseline"}, {"id": "adversarial", "label": "Adversarial"}],
        "baseline": "m00",
        "models": [
            {
                "id": f"m{i:02d}",
                "category": "adversarial" if i % 3 else "baseline",
                "architecture": "resnet50",
                **({"adversarial": {"norm": "l2", "epsilon": i / 10}} if i % 3 else {}),
                "source": {"kind": "train", "recipe": {"epochs": 1}},
            }
            for i in range(51)
        ],
    }
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config.update(study="big", zoo="zoo.yaml")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # A `torch` that cannot be imported: parsing the workflow must not need it.
    poison = workdir / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch imported at parse time')\n")

    started = time.monotonic()
    proc = run_snakemake(
        workdir, "--configfile", str(workdir / "config.yaml"), "-n", "--quiet", "rules", env={"PYTHONPATH": str(workdir / "poison")}
    )
    elapsed = time.monotonic() - started
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert int(counts["reset"]) == 51 * 54 * 3
    assert int(counts["baseline"]) == 51
    assert int(counts["train_model"]) == 51
    assert int(counts["aggregate_tables"]) == 1
    assert elapsed < 120, f"dry run took {elapsed:.0f} s"  # generous for slow CI; typically ~15 s

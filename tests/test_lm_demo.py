"""The offline language-model demo (README, "The offline language-model demo"): its shipped zoo
is what its zoo records, the README's block is what docs/lm_demo/ says, and a fresh run gives the
committed jobs' numbers on this CPU (seed 0 of the three: every model and layer, a third of the
jobs, so that `make test` stays short; `python -m tools.lm_demo run` makes all three)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_snakemake
from tools import demo_docs, lm_demo


def test_the_shipped_lm_demo_zoo_is_what_its_zoo_records_and_was_trained_from_its_recipes():
    assert lm_demo.shipped_zoo().check() == []


def test_the_readme_lm_demo_block_is_what_docs_lm_demo_says():
    assert demo_docs.current_block(demo_docs.README.read_text(), lm_demo.BLOCK, lm_demo.TOOL) == lm_demo.readme_block()


def test_a_fresh_run_that_differs_from_the_committed_one_is_found():
    committed = pd.read_csv(lm_demo.DOCS / "resets.csv")
    fresh = committed[committed["seed"] == 0].copy()
    assert lm_demo.reset_differences(fresh, committed) == []
    fresh.loc[fresh.index[5], "criticality"] += 0.5
    fresh.loc[fresh.index[7], "clean_perplexity"] *= 1.01
    problems = lm_demo.reset_differences(fresh, committed)
    assert len(problems) == 2 and "criticality" in problems[0] and "clean_perplexity" in problems[1], problems


@pytest.mark.slow
def test_a_fresh_lm_demo_run_of_seed_0_gives_the_committed_numbers(tmp_path):
    config = yaml.safe_load(lm_demo.CONFIG.read_text())
    config["study"] = "lm_demo_check"
    config["zoo"] = str(lm_demo.ZOO)
    config["reset"]["seeds"] = [0]
    (tmp_path / "lm_demo_check.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "lm_demo_check.yaml"))

    tables = tmp_path / "results/lm_demo_check/tables/randomize"
    fresh = pd.read_csv(tables / "resets.csv")
    committed = pd.read_csv(lm_demo.DOCS / "resets.csv")
    assert len(fresh) == len(committed) // 3 == 4 * 39  # every model and layer, seed 0
    problems = lm_demo.reset_differences(fresh, committed)
    assert not problems, "the LM demo's reset jobs differ from docs/lm_demo/resets.csv:\n  " + "\n  ".join(problems[:20])
    for figure in lm_demo.FIGURES:  # the four language-model figures are drawn
        assert (tmp_path / f"results/lm_demo_check/figures/randomize/{figure}.png").stat().st_size > 10_000
    # the shipped checkpoints were fetched and verified, not trained
    assert not list((tmp_path / "results/lm_demo_check/models").glob("*.init.safetensors"))
    assert REPO.joinpath("resources/lm_demo_zoo/manifest.json").is_file()

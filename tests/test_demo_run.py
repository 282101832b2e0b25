"""The demo, run afresh, gives the committed tables (docs/demo/) that the README's numbers come from.

Minutes: it trains and evaluates the whole demo zoo. It runs in `make test` (so in CI) beside
the other test files, one worker per core. Alone: `make demo-check`.
"""

from __future__ import annotations

import pytest

from conftest import snakemake_env
from tools import demo_docs


@pytest.mark.slow
def test_the_demo_run_afresh_gives_the_committed_tables(tmp_path):
    problems = demo_docs.check_run(tmp_path, env=snakemake_env())
    assert not problems, "the demo's tables differ from docs/demo/:\n  " + "\n  ".join(problems)

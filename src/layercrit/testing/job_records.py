"""What Snakemake would compare for every job of a study, to see that a change of code leaves
finished studies finished.

Snakemake re-runs a finished job when its params, its input files, or the code of its rule
(the text of a ``run:`` block, or a ``script:`` file newer than the outputs) changed since it
ran. This module builds a study's whole DAG (``--forceall``, nothing runs) and records, per job,
exactly what Snakemake's persistence records: its params, its inputs, the code of its rule; for
script rules the sha256 of the script file instead of its modification time. Two records equal
means a study made with the one tree plans nothing with the other.

    python -m layercrit.testing.job_records --configfile config/demo.yaml --workdir /tmp/w > demo.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def job_records(configfiles: list[str], workdir: Path, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One record per job of the study's DAG: rule, outputs, inputs, params and code as
    Snakemake's persistence serializes them, the workdir written as ``<workdir>``."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    workdir = Path(workdir).resolve()
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(c).resolve() for c in configfiles], config=config or {}),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )
        dag_api = workflow_api.dag(DAGSettings(forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        persistence = workflow.persistence
        records = []
        for job in workflow.dag.jobs:
            rule = job.rule
            code = persistence._code(rule)
            script = Path(rule.basedir.get_path_or_uri(secret_free=True), rule.script) if rule.script else None
            record = {
                "rule": rule.name,
                "output": sorted(map(str, job.output)),
                "input": persistence._input(job),
                "params": persistence._params(job),
                "code_sha256": _sha256(code) if code is not None else None,
                "script": str(script.relative_to(REPO)) if script else None,
                "script_sha256": _sha256(script.read_bytes()) if script else None,
            }
            records.append(json.loads(json.dumps(record).replace(str(workdir), "<workdir>").replace(str(REPO), "<repo>")))
    return sorted(records, key=lambda r: (r["rule"], r["output"]))


def _shortened(record: dict[str, Any], keep: int = 5) -> dict[str, Any]:
    """``record`` with a long input list (the tables take every reset result) as its first
    ``keep`` paths, its length and its digest."""
    inputs = record["input"]
    if len(inputs) <= keep:
        return record
    return record | {"input": {"first": inputs[:keep], "n": len(inputs), "sha256": _sha256(json.dumps(inputs))}}


def summary(records: list[dict[str, Any]], samples: int = 2) -> dict[str, Any]:
    """Per rule: the number of jobs, one digest over all their records, and the first
    ``samples`` records in full (what a golden file keeps: small, and still readable on a diff)."""
    rules: dict[str, Any] = {}
    for record in records:
        entry = rules.setdefault(record["rule"], {"jobs": 0, "digest": hashlib.sha256(), "samples": []})
        entry["jobs"] += 1
        entry["digest"].update(json.dumps(record, sort_keys=True).encode())
        if len(entry["samples"]) < samples:
            entry["samples"].append(_shortened(record))
    return {name: {**entry, "digest": entry["digest"].hexdigest()} for name, entry in sorted(rules.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", action="append", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--config", type=json.loads, default={}, help="config entries as one JSON object")
    parser.add_argument("--full", action="store_true", help="every job's record, not the per-rule summary")
    args = parser.parse_args(argv)
    records = job_records(args.configfile, args.workdir, args.config)
    json.dump(records if args.full else summary(records), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

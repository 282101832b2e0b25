"""Per-job overhead of a finished reset sweep, from the results' own timestamps.

    python -m benchmarks.job_overhead results/demo/tables/randomize/resets.csv

Every reset result records when it was written (``created``, ms), its wall time inside the
evaluation function (``wall_s``) and its forward passes (``forward_s``). When evaluations run one
after another on one device (the CPU, or one GPU), the time from one result to the next is that
job's wall time as Snakemake sees it; minus its forward passes it is the job's overhead:
scheduling, DAG bookkeeping, output checks, log files, loading from the cache, metrics. Gaps of
more than 5 s are left out and counted: there the device was busy with something else (a
baseline, a training) or no job was ready.
"""

from __future__ import annotations

import argparse

import pandas as pd

from benchmarks import harness


def job_overheads(resets: pd.DataFrame, device: str | None = None, max_gap_s: float = 5.0) -> dict:
    df = resets if device is None else resets[resets["device"] == device]
    df = df.assign(t=pd.to_datetime(df["created"])).sort_values("t")
    job_wall = df["t"].diff().dt.total_seconds()
    overhead = (job_wall - df["forward_s"])[job_wall <= max_gap_s]
    inside = df["wall_s"] - df["forward_s"]
    return {
        "jobs": len(df),
        "forward_s_total": round(float(df["forward_s"].sum()), 2),
        "forward_s_median": round(float(df["forward_s"].median()), 4),
        "per_job_overhead_s_median": round(float(overhead.median()), 4),
        "per_job_overhead_s_mean": round(float(overhead.mean()), 4),
        "per_job_overhead_s_p90": round(float(overhead.quantile(0.9)), 4),
        "of_which_inside_evaluation_s_median": round(float(inside.median()), 4),
        "jobs_measured": int(len(overhead)),
        "gaps_left_out": int(job_wall.notna().sum() - len(overhead)),
        "forward_from": df["forward_from"].value_counts().to_dict() if "forward_from" in df else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("resets", help="tables/<mode>/resets.csv of a finished study")
    parser.add_argument("--device", help="only results of this device (as in the 'device' column)")
    args, record = harness.start(parser, "job_overhead", out="optional")
    record.update(job_overheads(pd.read_csv(args.resets), args.device))
    harness.finish(args, record)


if __name__ == "__main__":
    main()

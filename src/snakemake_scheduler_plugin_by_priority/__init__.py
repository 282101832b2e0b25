"""A Snakemake scheduler plugin: ready jobs in order of priority, first that fit.

``--scheduler by-priority`` (the default profile sets it). Snakemake's own schedulers solve a
knapsack over every ready job in every round (``ilp``: a MILP in a subprocess; ``greedy``: an
iterative heuristic that also weighs each job's input sizes), so a round costs time in
proportion to the ready jobs: with the paper's 8,262 reset jobs ready, 0.11-0.23 s (greedy) to
~0.6 s (ilp) per job finished, against 0.03-0.07 s with this one (docs/benchmarks.md, "Paper
scale"). Here a round sorts the ready jobs by priority once and takes them in that order while
the free resources allow; jobs that do not fit are skipped, so a small job may still fill what a
large one leaves. Same priority: the order Snakemake lists them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

from snakemake_interface_common.io import AnnotatedStringInterface
from snakemake_interface_scheduler_plugins.base import SchedulerBase
from snakemake_interface_scheduler_plugins.interfaces.jobs import JobSchedulerInterface


class Scheduler(SchedulerBase):
    def select_jobs(
        self,
        selectable_jobs: Sequence[JobSchedulerInterface],
        remaining_jobs: Sequence[JobSchedulerInterface],
        available_resources: Mapping[str, Union[int, str]],
        input_sizes: dict[AnnotatedStringInterface, int],
    ) -> Sequence[JobSchedulerInterface]:
        free = {name: value for name, value in available_resources.items() if isinstance(value, int)}
        selected = []
        for job in sorted(selectable_jobs, key=_priority, reverse=True):
            needs = job.scheduler_resources
            if all(needs.get(name, 0) <= value for name, value in free.items()):
                selected.append(job)
                for name in free:
                    free[name] -= needs.get(name, 0)
                if free.get("_cores", 1) <= 0 or free.get("_job_count", 1) <= 0:
                    break  # every job takes a core and counts as a job: nothing more fits
        return selected


def _priority(job: JobSchedulerInterface) -> float:
    return job.priority

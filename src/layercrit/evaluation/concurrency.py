"""What evaluation jobs side by side in one process share, and the locks that keep them apart.

Evaluation and download jobs run as threads of one Snakemake process (workflow/rules/evaluation.smk),
one per device. Two things of torch's are process-wide, not per thread, and would let a job's
numbers depend on what runs beside it:

- **The global random generator.** timm's and torchvision's initializers draw from it; there is
  no way to hand them a generator of their own. ``fork_rng`` saves and restores its state, but
  gives no thread a stream of its own: two threads seeding and drawing at once draw from one
  stream, interleaved. So every construction of a model holds ``global_rng`` (re-entrant: the
  authors' seed scheme draws several models in a row on one stream, under one hold) and the
  initializations are exactly those of a serial run, the authors' trials included.
- **torch.fx's tracing.** While it traces, torch.fx replaces ``nn.Module.__call__`` and
  ``__getattr__`` for the whole process: a forward pass on another thread then fails (or, with
  two traces overlapping, the patch can stay). ``module_calls`` and ``tracing`` are a
  readers-writer lock: any number of threads may run modules at once, a trace runs alone, and a
  trace waiting to start holds back new forward passes so that it does not wait forever.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_GLOBAL_RNG = threading.RLock()


@contextlib.contextmanager
def global_rng(seed: int | None = None) -> Iterator[None]:
    """Hold torch's global CPU generator for this thread's draws; with ``seed`` on a forked
    stream seeded with it (the caller's state is restored afterwards)."""
    import torch

    with _GLOBAL_RNG:
        if seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield


class _CallsAndTraces:
    """A readers-writer lock: module calls share it, a trace holds it alone. Re-entrant for
    calls (a construction inside a forward region), refusing a trace inside a call of the same
    thread (it would wait for itself)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls: dict[int, int] = {}  # thread -> depth of its module-call regions
        self._tracing = False
        self._traces_waiting = 0

    @contextlib.contextmanager
    def calls(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if me not in self._calls:
                self._cond.wait_for(lambda: not self._tracing and not self._traces_waiting)
            self._calls[me] = self._calls.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._calls[me] -= 1
                if not self._calls[me]:
                    del self._calls[me]
                    self._cond.notify_all()

    @contextlib.contextmanager
    def trace(self) -> Iterator[None]:
        with self._cond:
            if threading.get_ident() in self._calls:
                raise RuntimeError("a torch.fx trace inside a forward region of the same thread would wait for itself")
            self._traces_waiting += 1
            try:
                self._cond.wait_for(lambda: not self._tracing and not self._calls)
            finally:
                self._traces_waiting -= 1
            self._tracing = True
        try:
            yield
        finally:
            with self._cond:
                self._tracing = False
                self._cond.notify_all()


_CALLS_AND_TRACES = _CallsAndTraces()


def module_calls() -> contextlib.AbstractContextManager[None]:
    """A region that calls modules (forward passes, constructions that run one): it never
    overlaps a torch.fx trace in this process."""
    return _CALLS_AND_TRACES.calls()


def tracing() -> contextlib.AbstractContextManager[None]:
    """A torch.fx trace: it runs while no other thread of this process calls a module."""
    return _CALLS_AND_TRACES.trace()

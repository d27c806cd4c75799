"""One thread cap for torch work, used by zoo recipes, probes, tests and benchmarks.

Small models run fastest on one thread, and a probe that fits scikit-learn models beside torch
oversubscribes two cores when both pools spin up; the cap is restored on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def available_threads() -> int:
    """This process's thread budget: the cores, or fewer when ``OMP_NUM_THREADS`` says so (a
    sweep or ``workbench demo`` sets it for each run, so parallel runs share the cores)."""
    cores = os.cpu_count() or 1
    try:
        return max(1, min(cores, int(os.environ.get("OMP_NUM_THREADS") or cores)))
    except ValueError:
        return cores


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with at most ``n`` threads (small models train fastest on one), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, available_threads())))
    try:
        yield
    finally:
        torch.set_num_threads(old)


LARGE_MODEL_PARAMETERS = 20_000_000
"""From this many parameters on, a model's matrix products are big enough to use every core."""


def threads_for(model: Any, requested: int = 0) -> int:
    """``requested`` threads, or for 0 every core for large models and one for small ones.

    A machine whose load average already fills every core gets one thread: threads that wait
    for each other at every matrix product run several times slower than one thread alone.
    """
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    parameters = sum(p.numel() for p in model.model.parameters())
    if parameters < LARGE_MODEL_PARAMETERS or os.getloadavg()[0] >= cores:
        return 1
    return cores

"""One thread cap for torch work, used by zoo recipes, probes, tests and benchmarks.

Small models run fastest on one thread, and a probe that fits scikit-learn models beside torch
oversubscribes two cores when both pools spin up; the cap is restored on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with at most ``n`` threads (small models train fastest on one), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(old)

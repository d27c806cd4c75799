"""The one timing rule every benchmark follows: contenders interleaved, medians compared.

Running the contenders round by round (A, B, C, A, B, C, ...) makes machine load hit them alike,
so the ratios printed by a benchmark stay meaningful on a busy machine even when the absolute
times do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(
    runs: Mapping[str, Callable[[], object]], rounds: int, *, warm_up: bool = True
) -> dict[str, float]:
    """Median seconds of each contender over ``rounds`` interleaved rounds (after one warm-up)."""
    if rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {rounds}")
    if warm_up:
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}

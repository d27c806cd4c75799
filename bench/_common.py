"""What the benchmarks share: the timing rule and the reference GPT-2 shape.

The timing rule: contenders interleaved, medians compared.

Running the contenders round by round (A, B, C, A, B, C, ...) makes machine load hit them alike,
so the ratios printed by a benchmark stay meaningful on a busy machine even when the absolute
times do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from workbench.models.scratch import save_random_model


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


def save_reference_gpt2(folder: Path) -> Path:
    """Random-weight GPT-2, 6 blocks x d=384, GPT-2's vocabulary: the shape the targets name."""
    return save_random_model(
        folder,
        "gpt2",
        n_layers=6,
        d_model=384,
        n_heads=6,
        n_positions=1024,
        words=[f"w{i}" for i in range(50257 - 6)],  # + 6 special tokens = GPT-2's 50257
    )

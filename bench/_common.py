"""What the benchmarks share: the timing rule and the reference GPT-2 shape.

The timing rule: contenders interleaved, medians compared.

Running the contenders round by round (A, B, C, A, B, C, ...) makes machine load hit them alike,
so the ratios printed by a benchmark stay meaningful on a busy machine even when the absolute
times do not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
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


QUICK_RUN = """
import json, resource, sys, time
started = time.perf_counter()
import torch
from workbench import load_model
from workbench.probe import get_probe, make_config
probe = sys.argv[1]
model = load_model(sys.argv[2])
get_probe(probe).run(model, make_config(probe, preset="quick"))
print(json.dumps({
    "wall_s": time.perf_counter() - started,
    "cpu_s": time.process_time(),
    "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "threads": torch.get_num_threads(),
}))
"""


def quick_preset_run(probe: str, folder: Path) -> dict[str, float]:
    """``probe``'s quick preset on the model in ``folder``, loading included, in a fresh process
    so that the peak memory is its own: wall and CPU seconds, peak resident GB, threads."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", QUICK_RUN, probe, str(folder)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{probe} quick preset on {folder.name}: {stats['wall_s'] / 60:.1f} min wall, "
        f"{stats['cpu_s'] / 60:.1f} min CPU, {stats['threads']} thread(s), peak "
        f"{stats['peak_gb']:.2f} GB"
    )
    return stats


def quick_on_shapes(probe: str, shapes: list[str], root: Path) -> str:
    """The quick preset on further published shapes (random weights); their ``key=value``s."""
    from workbench.models.published import save_published_shape

    keys = []
    for name in shapes:
        stats = quick_preset_run(probe, save_published_shape(root / name, name))
        keys.append(f"{name}_minutes={stats['wall_s'] / 60:.1f}")
        keys.append(f"{name}_peak_gb={stats['peak_gb']:.2f}")
    return " ".join(keys)

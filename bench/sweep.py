"""Sweep executors: the same four quick runs one at a time, on the local pool, and on Ray.

Four quick atlas runs (``zoo:vit-scenes`` and ``zoo:minilm``, seeds 0 and 1, the runner's
``--no-notebook`` path) go through ``run_sweep`` three ways, interleaved round by round:

- sequential: the local pool with one worker (each run gets every core's threads),
- pool: the local pool with one worker per core (2 on the reference machine, one thread each),
- ray: one Ray task per run on a local Ray started once beforehand, its workers warmed by one
  task each (start-up and warm-up are printed separately: a cluster is started once, not per
  sweep), one CPU per task.

``speedup`` is sequential / pool; ``ray_overhead_s`` is (ray - pool) / points, what Ray adds per
run. Every run writes a fresh result folder (``rerun``), so nothing is skipped.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from workbench.sweep import parse_sweep, run_sweep, start_local_ray

from _common import interleaved_medians

SWEEP = {
    "probe": "atlas",
    "preset": "quick",
    "notebook": False,
    "grid": {"model": ["zoo:vit-scenes", "zoo:minilm"], "params": {"seed": [0, 1]}},
    "resources": {"cpus": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true", help="measure the local pool only")
    args = parser.parse_args()
    sweep = parse_sweep(SWEEP)
    n = len(sweep.points)
    workers = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp:

        def sweep_with(executor: str, count: int | None) -> None:
            record = run_sweep(
                sweep,
                Path(tmp) / executor / str(count),
                executor=executor,
                workers=count,
                rerun=True,
                progress=False,
                log=lambda text: None,
            )
            failed = [p for p in record.points if p.state != "done"]
            if failed:
                raise SystemExit(f"{failed[0].name} failed: {failed[0].error}")

        runs = {
            "sequential": lambda: sweep_with("local", 1),
            "pool": lambda: sweep_with("local", workers),
        }
        ray_start = None
        if not args.no_ray:
            import ray

            @ray.remote(num_cpus=1)
            def warm() -> None:
                import workbench.sweep  # noqa: F401  (what every task's worker imports first)

            started = time.perf_counter()
            start_local_ray(workers)
            ray.get([warm.remote() for _ in range(workers)])  # a running cluster's warm workers
            ray_start = time.perf_counter() - started
            runs["ray"] = lambda: sweep_with("ray", None)
        try:
            med = interleaved_medians(runs, args.rounds, warm_up=False)
        finally:
            if not args.no_ray:
                ray.shutdown()

    print(f"{n} quick atlas runs (no notebook), {args.rounds} round(s), {workers} cores")
    print(f"  sequential (1 worker)      {med['sequential']:7.1f} s")
    print(f"  local pool ({workers} workers)     {med['pool']:7.1f} s")
    speedup = med["sequential"] / med["pool"]
    line = f"bench sweep: speedup={speedup:.2f}"
    if "ray" in med and ray_start is not None:
        overhead = (med["ray"] - med["pool"]) / n
        print(f"  ray ({workers} CPUs)              {med['ray']:7.1f} s")
        print(f"  local Ray start and warm-up (once) {ray_start:7.1f} s")
        line += f" ray_overhead_s={overhead:.2f}"
    print(line)


if __name__ == "__main__":
    main()

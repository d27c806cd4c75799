"""Reweaving overhead: a reweaved forward (capture + reconstruction + injection in the same pass)
against a plain forward of the same model; and the quick preset end to end at real size.

A 6-layer, d=384 GPT-2 (random weights, GPT-2's vocabulary size) runs 8 x 256 tokens, plain
and reweaved (sources blocks 0-2, injected before block 4), and with the causal read over
positions; then the same for the zoo LM neox-recall (8 x 256 tokens) and the embedded MiniLM
encoder (32 sentences) when they are available.
Runs are interleaved round by round so machine load hits all of them alike; ratios are medians
over rounds against the plain forward.

Then the quick preset runs end to end on a GPT-2 124M-shape model (published config, random
weights: timing, not science) in a fresh process: wall time, CPU time, peak memory. Target: at
most 3 minutes. On a busy machine the wall time grows with the load; the CPU time is what a
quiet machine would need on one core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from probes.reweave.operator import Reweaving, reweave
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel, load_model
from workbench.models.published import save_published_shape

from _common import interleaved_medians, quick_on_shapes, quick_preset_run, save_reference_gpt2


def compare(lm: LoadedModel, inputs: dict, rounds: int) -> dict[str, float]:
    """Median seconds of plain, reweaved and reweaved-with-read forwards, interleaved."""
    n = lm.n_layers
    sources, target = tuple(range(n // 2)), max(int(0.75 * n), n // 2)
    ops = {
        "reweave": Reweaving(sources, target, lm.d_model, gate=0.5),
        "read": Reweaving(sources, target, lm.d_model, gate=0.5, read="causal"),
    }
    mask = inputs["attention_mask"]

    def plain() -> None:
        lm(**inputs)

    def woven(op: Reweaving) -> Callable[[], None]:
        def fn() -> None:
            with reweave(lm, op, attention_mask=mask):
                lm(**inputs)

        return fn

    runs = {"plain": plain, **{k: woven(op) for k, op in ops.items()}}
    return interleaved_medians(runs, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (one is steadiest on a busy machine)"
    )
    parser.add_argument("--skip-quick", action="store_true", help="skip the end-to-end run")
    parser.add_argument(
        "--also", nargs="*", default=[], help="more published shapes for the quick preset"
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_reference_gpt2(Path(tmp) / "gpt2-6x384")
        lm = load_model(folder)
        ids = torch.randint(6, lm.model.config.vocab_size, (args.batch, args.tokens))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        results["gpt2 6 x d384"] = compare(lm, inputs, args.rounds)
    try:
        zoo_lm = load_model("zoo:neox-recall")
    except WorkbenchError as err:
        print(f"neox-recall skipped: {err}")
    else:
        ids = torch.randint(20, zoo_lm.model.config.vocab_size, (args.batch, args.tokens))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        results["neox-recall"] = compare(zoo_lm, inputs, args.rounds)
    try:
        minilm = load_model("zoo:minilm")
    except WorkbenchError as err:
        print(f"MiniLM skipped: {err}")
    else:
        texts = [f"sentence number {i} is about the weather and the sea ." for i in range(32)]
        results["minilm"] = compare(minilm, minilm.encode_texts(texts), args.rounds)

    print(f"{args.rounds} rounds, interleaved; medians; {args.threads} thread(s)")
    for name, med in results.items():
        for key in med:
            print(
                f"  {name:<14} {key:<8} {med[key] * 1e3:8.1f} ms  ({med[key] / med['plain']:.3f}x)"
            )
    gpt2 = results["gpt2 6 x d384"]
    line = (
        f"bench reweave: overhead={gpt2['reweave'] / gpt2['plain']:.3f} "
        f"read_overhead={gpt2['read'] / gpt2['plain']:.3f}"
    )
    for name, key in (("neox-recall", "zoo_lm_overhead"), ("minilm", "minilm_overhead")):
        if name in results:
            line += f" {key}={results[name]['reweave'] / results[name]['plain']:.3f}"
    others = ""
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_quick:
            quick = quick_preset_run("reweave", save_published_shape(Path(tmp) / "gpt2", "gpt2"))
            line += (
                f" quick_minutes={quick['wall_s'] / 60:.1f}"
                f" quick_cpu_minutes={quick['cpu_s'] / 60:.1f} quick_peak_gb={quick['peak_gb']:.2f}"
            )
        others = quick_on_shapes("reweave", args.also, Path(tmp))
    print(f"load average at the start: {load:.1f} on {os.cpu_count()} cores")
    print(" ".join(filter(None, [line, others, f"load={load:.1f}"])))


if __name__ == "__main__":
    main()

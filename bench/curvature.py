"""Benchmark the curvature probe at real size, against references measured in the same run.

1. Factor collection on a GPT-2 124M-shape model (published config, random weights: timing,
   not science) at batch 8: K-FAC collection (sampled labels) against a plain forward +
   backward (gold-label loss, parameter gradients) over the same tokens, interleaved, as a
   ratio of medians. ``collection_ratio`` collects what the probe collects by default (the 12
   MLP input projections); ``collection_ratio_all_mlp`` every MLP matrix. Target <= 1.3.
   Collection computes no parameter gradient and stops its backward at the first chosen
   layer, which pays for the factor products (d_in² + d_out² multiply-adds per token and
   matrix).
2. Component selection for a 3072 x 768 layer (GPT-2 small's MLP size) at rho = 0.97: the
   heap-based k-way merge of the reference code against the vectorised threshold search, on
   power-law spectra. Target >= 100x.
3. The quick preset end to end on the GPT-2 124M shape (load, factors, eigendecompositions,
   sweeps, figures), in a fresh process: wall time, CPU time and peak resident memory.
   Targets: at most 6 minutes and 4 GB. On a busy machine the wall time grows with the load;
   the CPU time is what a quiet machine would need on one core.

    .venv/bin/python bench/curvature.py [--repeats 3] [--sequences 16] [--skip-quick]
        [--also pythia-70m smollm-135m]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import torch

from probes.curvature.compute import counts_to_mask, select_by_mass, select_by_mass_heap
from probes.curvature.config import Config
from probes.curvature.factors import collect_factors
from workbench.models import LoadedModel, load_model
from workbench.models.published import save_published_shape
from workbench.threads import torch_threads

from _common import interleaved_medians, quick_on_shapes, quick_preset_run

SELECTION_SHAPE = (3072, 768)
SPECTRUM_EXPONENT = 1.25
RHO = 0.97
SEQ_LEN = 64


def plain_forward_backward(model: LoadedModel, ids: torch.Tensor, batch_size: int) -> None:
    """What one pass of training costs without the optimizer: loss, backward, drop the grads."""
    net = model.model
    for start in range(0, len(ids), batch_size):
        x = ids[start : start + batch_size]
        logits = net(input_ids=x, use_cache=False).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:])
        loss.backward()
        net.zero_grad(set_to_none=True)


def collection(model: LoadedModel, ids: torch.Tensor, batch_size: int, weights: str) -> None:
    collect_factors(model, {"input_ids": ids}, weights, batch_size=batch_size, progress=False)


def bench_collection(
    model: LoadedModel, repeats: int, sequences: int, batch_size: int
) -> dict[str, float]:
    ids = torch.randint(
        0, len(model.processor), (sequences, SEQ_LEN), generator=torch.Generator().manual_seed(0)
    )
    n_tokens = ids.numel()
    variants = {"default": Config().weights, "all_mlp": r"mlp\.W_"}
    runs = {"plain": lambda: plain_forward_backward(model, ids, batch_size)}
    for key, weights in variants.items():
        runs[key] = functools.partial(collection, model, ids, batch_size, weights)
    median = interleaved_medians(runs, repeats)
    print(
        f"plain forward+backward over {n_tokens} tokens ({sequences} x {SEQ_LEN}, batch "
        f"{batch_size}): {median['plain']:.2f} s ({n_tokens / median['plain']:.0f} tok/s); "
        f"medians of {repeats}"
    )
    for key, weights in variants.items():
        n = len(model.weight_names(weights))
        print(
            f"K-FAC collection, {key} ({n} matrices, {weights!r}): {median[key]:.2f} s "
            f"({n_tokens / median[key]:.0f} tok/s)"
        )
    return {k: median[k] / median["plain"] for k in variants}


def bench_selection(repeats: int) -> float:
    m, n = SELECTION_SHAPE
    lam = torch.arange(1, m + 1, dtype=torch.float64) ** -SPECTRUM_EXPONENT
    mu = torch.arange(1, n + 1, dtype=torch.float64) ** -SPECTRUM_EXPONENT
    median = interleaved_medians(
        {
            "heap": lambda: select_by_mass_heap(lam, mu, RHO),
            "vectorised": lambda: select_by_mass(lam, mu, RHO),
        },
        repeats,
    )
    h, v = median["heap"], median["vectorised"]
    counts = select_by_mass(lam, mu, RHO)
    same = torch.equal(counts_to_mask(counts, n), select_by_mass_heap(lam, mu, RHO))
    print(
        f"selection for a {m} x {n} layer at rho={RHO}: {int(counts.sum())} components kept "
        f"({counts.sum() / (m * n):.1%}); heap {h:.3f} s, vectorised {v * 1000:.2f} ms; "
        f"identical masks: {same}; medians of {repeats}"
    )
    if not same:
        raise SystemExit("the vectorised selection disagrees with the heap selection")
    return h / v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="threads of the ratio runs")
    parser.add_argument("--skip-quick", action="store_true", help="skip the end-to-end run")
    parser.add_argument(
        "--also", nargs="*", default=[], help="more published shapes for the quick preset"
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        folder = save_published_shape(Path(tmp) / "gpt2", "gpt2")
        print(f"gpt2-124M shape written in {time.perf_counter() - started:.0f} s")
        with torch_threads(args.threads):
            model = load_model(folder)
            ratios = bench_collection(model, args.repeats, args.sequences, args.batch_size)
            del model
            speedup = bench_selection(max(3, args.repeats))
        quick = None if args.skip_quick else quick_preset_run("curvature", folder)
        others = quick_on_shapes("curvature", args.also, Path(tmp))
    line = (
        f"bench curvature: selection_speedup={speedup:.0f} "
        f"collection_ratio={ratios['default']:.2f} collection_ratio_all_mlp={ratios['all_mlp']:.2f}"
    )
    if quick is not None:
        line += (
            f" quick_minutes={quick['wall_s'] / 60:.1f} quick_cpu_minutes={quick['cpu_s'] / 60:.1f}"
            f" quick_peak_gb={quick['peak_gb']:.2f}"
        )
    print(f"load average at the start: {load:.1f} on {os.cpu_count()} cores")
    print(" ".join(filter(None, [line, others, f"load={load:.1f}"])))


if __name__ == "__main__":
    main()

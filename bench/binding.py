"""Pair scoring: one batched bilinear form vs a per-pair loop; and the quadratic probe's fit time.

The quadratic IsSameObject probe scores every pair (i < j) of patches of a batch of images. The
workbench computes all of them as one batched product ``X W_s X^T``; the reference is a Python
loop over the pairs computing ``x_i^T W_s x_j`` (W_s computed once, so the loop pays only for
the per-pair work). Both run interleaved, round by round, so machine load hits them alike; the
speedup is the ratio of medians. Then the probe is fitted (L-BFGS, the probe's defaults) on
256 images x 64 patches of width 96, with labels from the binding scenes' instance masks.
Runs on one thread.
"""

from __future__ import annotations

import argparse
import time

import torch

from probes.binding import compute
from workbench.data.scenes import make_binding_scenes, patch_labels

from _common import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=4, help="images per scored batch")
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--fit-images", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    n = 64
    probe = compute.PairProbe("quadratic", args.dim)
    with torch.no_grad():
        probe.W.copy_(torch.randn(args.dim, args.dim, generator=gen))
        probe.bias.fill_(0.1)
    x = torch.randn(args.images, n, args.dim, generator=gen)
    ws = probe.symmetric_matrix().detach()
    bias = float(probe.bias.detach())

    def batched() -> torch.Tensor:
        return compute.score_pairs(probe, x)

    def loop() -> torch.Tensor:
        out = torch.zeros(args.images, n, n)
        with torch.no_grad():
            for b in range(args.images):
                for i in range(n):
                    for j in range(i + 1, n):
                        out[b, i, j] = x[b, i] @ ws @ x[b, j] + bias
        return out

    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    if not torch.allclose(batched()[:, upper], loop()[:, upper], rtol=1e-4, atol=1e-3):
        raise SystemExit("the batched scores differ from the per-pair loop")
    med = interleaved_medians({"batched": batched, "loop": loop}, args.rounds, warm_up=False)
    speedup = med["loop"] / med["batched"]

    scenes = make_binding_scenes(args.fit_images, size=64, seed=0)
    ids = patch_labels(scenes.instance_ids, 8, background=-1)
    same, valid = (torch.from_numpy(a) for a in compute.pair_targets(ids, "exclude"))
    features = torch.randn(args.fit_images, n, args.dim, generator=gen)
    features += (
        0.5
        * torch.randn(args.fit_images, 8, args.dim, generator=gen)[
            torch.arange(args.fit_images)[:, None], torch.from_numpy(ids.clip(0, 7).astype("int64"))
        ]
    )
    compute.fit_probe("quadratic", features[:8], same[:8], valid[:8])  # warm-up (imports)
    start = time.perf_counter()
    compute.fit_probe("quadratic", features, same, valid)
    fit_seconds = time.perf_counter() - start

    pairs = args.images * n * (n - 1) // 2
    print(f"quadratic probe, d={args.dim}, {args.images} images x {n} patches ({pairs} pairs)")
    print(f"  batched bilinear form  median {med['batched'] * 1e3:9.2f} ms")
    print(f"  per-pair loop          median {med['loop'] * 1e3:9.2f} ms")
    print(
        f"  fit on {args.fit_images} images x {n} patches: {int(valid.sum())} pairs, "
        f"{fit_seconds:.2f} s (one thread, L-BFGS, {compute.FitSettings().max_iter} iterations max)"
    )
    print(f"bench binding: speedup={speedup:.1f} fit_seconds={fit_seconds:.2f}")


if __name__ == "__main__":
    main()

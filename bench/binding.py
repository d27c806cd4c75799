"""Binding at real size, and pair scoring: one batched bilinear form vs a per-pair loop.

1. The quick preset on the google/vit-base-patch16-224 shape (random weights, 12 blocks, 60
   images, five layers, the random-init control included), in a child process: wall time
   (``quick_s``; target at most 180 s on a 2-core CPU) and peak RSS (``quick_rss_gb``).
2. The single extraction pass of that run (every probed layer and attention input kept) against
   a bare forward over the same images, interleaved: ``extract_overhead`` into memory and
   ``store_overhead`` into an activation store on disk (target at most 1.15 each).
3. With ``--large N`` (e.g. 2000): N images x every layer of ViT-B extracted into a store (2000
   images are about 15 GB in float32) and IsSameObject probes fitted from it by minibatches, in
   a child process: wall time and peak RSS (``large_rss_gb``; target under 3 GB).

The quadratic IsSameObject probe scores every pair (i < j) of patches of a batch of images. The
workbench computes all of them as one batched product ``X W_s X^T``; the reference is a Python
loop over the pairs computing ``x_i^T W_s x_j`` (W_s computed once, so the loop pays only for
the per-pair work). Both run interleaved, round by round, so machine load hits them alike; the
speedup is the ratio of medians. Then the probe is fitted (L-BFGS, the probe's defaults) on
256 images x 64 patches of width 96, with labels from the binding scenes' instance masks.
The pair-scoring part runs on one thread; the real-size parts on every core, as the probe does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from probes.binding import compute
from workbench.data.scenes import make_binding_scenes, patch_labels

from _common import interleaved_medians

VIT_BASE = "vit-base-patch16-224"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(kind: str, folder: str, images: int) -> None:
    """One real-size run, measured from inside its own process; prints one JSON line."""
    from probes import binding
    from workbench.models import load_model
    from workbench.probe import make_config

    lm = load_model(folder)
    if kind == "quick":
        config = make_config("binding", preset="quick")
    else:
        store = Path(folder).parent / "large-store"
        config = binding.Config(
            n_images=images,
            store=str(store),
            probes=("quadratic", "cosine"),
            control_probes=("quadratic",),
            controls=("pixels", "positions"),
            attention=False,
            ablation=False,
            ranks=(1,),
            epochs=1,
            bootstrap=50,
        )
    start, cpu = time.perf_counter(), time.process_time()
    result = binding.run(lm, config)
    wall = time.perf_counter() - start
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": time.process_time() - cpu,
                "rss_gb": peak_rss_gb(),
                "accuracy": result.metrics["distance_matched_balanced_accuracy"],
                "store_gb": _folder_gb(Path(config.store)) if config.store else 0.0,
            }
        )
    )


def _folder_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**30


def in_child(kind: str, folder: Path, images: int = 0) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--n", str(images)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def extraction_overheads(folder: Path, n_images: int, rounds: int) -> tuple[float, float]:
    """(capture into memory, store on disk) time over a bare forward, same images and sites."""
    from probes import binding
    from probes.binding.fit import attention_blocks, probed_layers
    from workbench.capture import capture
    from workbench.models import load_model
    from workbench.probe import make_config
    from workbench.store import build_store

    lm = load_model(folder)
    config = make_config("binding", preset="quick")
    assert isinstance(config, binding.Config)
    layers = probed_layers(config, lm.n_layers)
    sites = ["blocks.0.resid_pre", *(f"blocks.{k - 1}.resid_post" for k in layers if k)]
    sites += [f"blocks.{k}.attn.W_Q.input" for k in attention_blocks(lm, config, layers)]
    images = make_binding_scenes(n_images, size=224, seed=0).images
    size = config.batch_size

    def bare() -> None:
        for start in range(0, n_images, size):
            lm(**lm.encode_images(images[start : start + size]))

    def to_store() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            build_store(lm, images, sites, tmp, batch_size=size, progress=False)

    med = interleaved_medians(
        {
            "bare": bare,
            "memory": lambda: capture(lm, images, sites, batch_size=size, progress=False),
            "store": to_store,
        },
        rounds,
    )
    return med["memory"] / med["bare"], med["store"] / med["bare"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=4, help="images per scored batch")
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--fit-images", type=int, default=256)
    parser.add_argument("--extract-images", type=int, default=32)
    parser.add_argument("--large", type=int, default=0, help="images of the large run (0: skip)")
    parser.add_argument("--no-quick", action="store_true", help="skip the real-size parts")
    parser.add_argument("--child", choices=("quick", "large"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.n)
        return
    load = os.getloadavg()[0]
    real: dict[str, float] = {}
    if not args.no_quick:
        from workbench.models.published import save_published_shape

        with tempfile.TemporaryDirectory() as tmp:
            folder = save_published_shape(Path(tmp) / VIT_BASE, VIT_BASE)
            quick = in_child("quick", folder)
            real["quick_s"], real["quick_rss_gb"] = quick["wall_s"], quick["rss_gb"]
            real["quick_cpu_s"] = quick["cpu_s"]
            print(
                f"{VIT_BASE} shape, quick preset (60 images, 5 layers, random-init control): "
                f"{quick['wall_s']:.0f} s ({quick['cpu_s']:.0f} s of CPU: the wall time of a "
                f"one-thread run on an idle core), peak RSS {quick['rss_gb']:.2f} GB"
            )
            memory, store = extraction_overheads(folder, args.extract_images, args.rounds)
            real["extract_overhead"], real["store_overhead"] = memory, store
            print(
                f"  one extraction pass vs a bare forward ({args.extract_images} images): "
                f"{memory:.2f}x into memory, {store:.2f}x into a store on disk"
            )
            if args.large:
                large = in_child("large", folder, args.large)
                real["large_s"], real["large_rss_gb"] = large["wall_s"], large["rss_gb"]
                real["large_store_gb"] = large["store_gb"]
                print(
                    f"  {args.large} images x 13 layers through a store ({large['store_gb']:.1f} "
                    f"GB on disk): {large['wall_s']:.0f} s, peak RSS {large['rss_gb']:.2f} GB"
                )
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
    extra = " ".join(f"{k}={v:.2f}" for k, v in real.items())
    print(f"machine load (1-min average) at the start: {load:.1f} on {os.cpu_count()} cores")
    print(f"bench binding: speedup={speedup:.1f} fit_seconds={fit_seconds:.2f} {extra}".strip())


if __name__ == "__main__":
    main()

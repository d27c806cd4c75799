"""Capture throughput per device, whole and with half of the blocks offloaded.

GPT-2-124M and ViT-B/16 shapes (random weights from their published configs: speed does not
depend on the values) capture every block output, on each device this machine has: the CPU,
and the accelerator torch sees (CUDA, MPS, ...) if any. Each device also runs the same model with
the second half of its blocks offloaded through accelerate (to disk next to the CPU, to CPU RAM
next to an accelerator), so the cost of models bigger than memory is measured, not guessed.
Whole and offloaded runs are interleaved round by round; ratios are medians against the whole
model on the same device.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from workbench.capture import Inputs, capture
from workbench.devices import accelerator
from workbench.models import LoadedModel, load_model
from workbench.models.published import save_published_shape

from _common import interleaved_medians

SHAPES = {"gpt2": "gpt2", "vit": "vit-base-patch16-224"}


def half_offloaded(model: LoadedModel, device: str, offload: str) -> dict[str, str]:
    """A device map with the second half of the blocks on ``offload``, the rest on ``device``."""
    blocks = [model.site(f"blocks.{i}.resid_pre").module for i in range(model.n_layers)]
    placement: dict[str, str] = {}
    path = ""
    for part in blocks[0].rpartition(".")[0].split("."):  # beside the route down to the blocks
        route = f"{path}.{part}" if path else part
        for child, _ in model.model.get_submodule(path).named_children():
            full = f"{path}.{child}" if path else child
            if full != route:
                placement[full] = device
        path = route
    for i, block in enumerate(blocks):
        placement[block] = device if i < len(blocks) // 2 else offload
    return placement


def offloaded_share(model: LoadedModel) -> float:
    """Share of the parameters that live off the device (offloaded by accelerate)."""
    total = off = 0
    for p in model.model.parameters():
        total += p.numel()
        off += p.numel() if p.device.type == "meta" else 0
    return off / total


def measure(folder: Path, kind: str, device: str, args: argparse.Namespace) -> dict[str, float]:
    """Capture throughput of the whole model on ``device`` and of its half-offloaded twin."""
    whole = load_model(folder, device=device, dtype="float32")
    offload = "disk" if device == "cpu" else "cpu"
    half = load_model(folder, device_map=half_offloaded(whole, device, offload), dtype="float32")
    if kind == "gpt2":
        ids = torch.randint(3, 50257, (args.batch, args.tokens))
        inputs: Inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        n, unit, batch = args.batch * args.tokens, "tokens", args.batch
    else:
        size = whole.image_size
        inputs = torch.randint(0, 256, (args.images, size, size, 3), dtype=torch.uint8)
        n, unit, batch = args.images, "images", args.images
    sites = whole.layer_sites("resid_post")

    def run(lm: LoadedModel) -> None:
        capture(lm, inputs, sites, batch_size=batch, progress=False).close()

    med = interleaved_medians({"whole": lambda: run(whole), "half": lambda: run(half)}, args.rounds)
    rate = {key: n / seconds for key, seconds in med.items()}
    share = offloaded_share(half)
    print(f"{kind} ({whole.n_layers} blocks x d={whole.d_model}, {n} {unit} a batch) on {device}:")
    print(f"  whole on {device:<26} {rate['whole']:9.1f} {unit}/s")
    print(
        f"  {share:.0%} of weights on {offload:<16} {rate['half']:9.1f} {unit}/s  "
        f"({rate['half'] / rate['whole']:.3f}x)"
    )
    label = device.replace(":", "")
    return {
        f"{kind}_{label}_{unit}_s": rate["whole"],
        f"{kind}_{label}_offload_ratio": rate["half"] / rate["whole"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per GPT-2 sequence")
    parser.add_argument("--batch", type=int, default=4, help="GPT-2 sequences per batch")
    parser.add_argument("--images", type=int, default=8, help="ViT images per batch")
    args = parser.parse_args()
    torch.manual_seed(0)
    found = accelerator()
    devices = ["cpu"] + ([str(found)] if found is not None else [])
    summary: dict[str, float] = {}
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, shape in SHAPES.items():
            folder = save_published_shape(Path(tmp) / kind, shape, tokenizer_vocab=500)
            for device in devices:
                summary |= measure(folder, kind, device, args)
    if found is None:
        print("accelerator rows skipped: torch sees no accelerator (CUDA, MPS, ...) here")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    fields = " ".join(f"{key}={value:.3f}" for key, value in summary.items())
    print(f"bench devices: {fields} accelerator={found.type if found is not None else 'none'}")


if __name__ == "__main__":
    main()

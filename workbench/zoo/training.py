"""What zoo recipes share: the optimiser and schedule, flip augmentation, the ViT folder
writer, and an atomic save.

A recipe trains a small model on synthetic data and calls ``save_atomically`` with a function
that writes the model's files into a folder; the folder gets a ``recipe.json`` (recipe, seed,
metrics, torch and transformers versions, the weights' sha256) and replaces the old build in one
rename, so a failed build never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import transformers

MAX_CHECKPOINT_BYTES = 5 * 2**20
"""Every committed zoo checkpoint stays at or under 5 MB."""
WEIGHTS_FILE = "model.safetensors"


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to the full rate, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def adamw_warmup_cosine(
    params: Iterable[Any], *, lr: float, weight_decay: float, warmup: int, total: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (parameters or groups) with the ``lr_factor`` schedule over ``total`` steps."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total)
    )
    return optimizer, schedule


def flip_augment(
    x: torch.Tensor, patches: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and transposes per image, applied alike to its square grid of patch labels.

    ``x`` is (batch, channels, side, side) and ``patches`` (batch, grid * grid), row-major.
    """
    x = x.clone()
    grid_side = math.isqrt(patches.shape[1])
    grid = patches.view(-1, grid_side, grid_side).clone()
    for op in ("hflip", "vflip", "transpose"):
        pick = torch.rand(x.shape[0], generator=gen) < 0.5
        if not pick.any():
            continue
        if op == "hflip":
            x[pick], grid[pick] = x[pick].flip(-1), grid[pick].flip(-1)
        elif op == "vflip":
            x[pick], grid[pick] = x[pick].flip(-2), grid[pick].flip(-2)
        else:
            x[pick], grid[pick] = x[pick].transpose(-1, -2), grid[pick].transpose(-1, -2)
    return x, grid.reshape(len(x), -1)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_atomically(
    out_dir: Path,
    write: Callable[[Path], None],
    recipe: dict[str, Any],
    *,
    weights_file: str = WEIGHTS_FILE,
) -> Path:
    """Build ``out_dir`` in a temporary sibling (``write(tmp)`` + recipe.json), then swap it in.

    Refuses a weights file over 5 MB: zoo checkpoints are committed to the repository.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        weights = tmp / weights_file
        if not weights.is_file():
            raise FileNotFoundError(f"the recipe wrote no {weights_file} into {tmp}")
        size = weights.stat().st_size
        if size > MAX_CHECKPOINT_BYTES:
            raise ValueError(
                f"{weights_file} is {size / 2**20:.1f} MB; zoo checkpoints must stay at or under "
                f"{MAX_CHECKPOINT_BYTES / 2**20:.0f} MB (save fp16, or shrink the model)"
            )
        recipe = {
            **recipe,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "model_sha256": sha256_file(weights),
        }
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rename(old)
        try:
            tmp.rename(out_dir)
        except OSError:
            if old.exists():
                old.rename(out_dir)  # put the previous build back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def write_vit_folder(
    model: torch.nn.Module,
    folder: Path,
    image_mean: tuple[float, ...],
    image_std: tuple[float, ...],
) -> None:
    """A ViT's Hugging Face files: config, weights, and a preprocessor config that never resizes.

    Scenes are rendered at the model's own size, so resizing would only blur patch boundaries.
    """
    model.save_pretrained(folder)
    size = model.config.image_size
    preprocessor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": False,
        "size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(image_mean),
        "image_std": list(image_std),
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")

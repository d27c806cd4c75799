"""What zoo recipes share: one run record, the held-out seed offset, the scene recipes' pixel
scaling, the optimiser, schedule and step, flip augmentation, the ViT folder writer, an atomic
save, and checkpoints along training.

A recipe opens a ``RecipeRun`` (name, recipe module, seed), trains a small model on synthetic
data inside ``run.training()`` (seeded, thread-capped), and ends with ``run.save``: that
times the build, writes the model's files and a ``recipe.json`` (name, recipe, seed, metrics,
the recipe's own fields, torch and transformers versions, the weights' sha256) into a temporary
folder, and swaps it in with one rename, so a failed build never leaves a half-written model.

A run opened with ``checkpoints=K`` also keeps the weights at K log-spaced steps
(``log_spaced_steps``): the recipe calls ``run.checkpoint(step, write)`` after every optimiser
step (and at step 0), and the planned ones are written as loadable model folders into
``NAME/checkpoints/step-S/`` with an ``index.json`` of their sha256s, loaded as
``zoo:NAME@S``. Writing them reads no random numbers and leaves the training model untouched
(each is written from a copy). The last checkpoint is the build's final model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import transformers

from workbench.errors import WorkbenchError
from workbench.staging import temp_prefix
from workbench.threads import torch_threads

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MAX_CHECKPOINT_BYTES = 5 * 2**20
"""Every committed zoo checkpoint stays at or under 5 MB."""
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS_FOLDER = "checkpoints"
CHECKPOINT_INDEX = "index.json"
"""``NAME/checkpoints/index.json``: each checkpoint's step and sha256, and the final weights'."""
EVAL_SEED_OFFSET = 10_000
"""Held-out data comes from seed + this, so no recipe evaluates on what it trained on."""
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
PIXEL_NORMALISATION = "pixel_values = (uint8 / 255 - image_mean) / image_std, channels first"
"""How the scene recipes turn uint8 images into model inputs (``to_pixel_values``)."""


@dataclass
class RecipeRun:
    """One run of a zoo recipe: what ``recipe.json`` opens with, and the build's clock.

    Create it first thing in a recipe's builder, so ``build_seconds`` covers the whole build.
    """

    name: str
    recipe: str
    seed: int
    threads: int = 1
    checkpoints: int = 0
    """How many checkpoints to keep along training (0: none); see ``plan_checkpoints``."""
    started: float = field(default_factory=time.perf_counter, init=False)
    cpu_started: float = field(default_factory=time.process_time, init=False)
    planned: tuple[int, ...] = field(default=(), init=False)
    saved: dict[int, str] = field(default_factory=dict, init=False)
    """Step -> sha256 of the checkpoints written so far."""
    _staging: Path | None = field(default=None, init=False, repr=False)

    def plan_checkpoints(self, total_steps: int) -> tuple[int, ...]:
        """The steps whose weights ``checkpoint`` will keep (none unless ``checkpoints``)."""
        self.planned = log_spaced_steps(total_steps, self.checkpoints) if self.checkpoints else ()
        return self.planned

    def checkpoint(self, step: int, write: Callable[[Path], object]) -> None:
        """Keep the weights after ``step`` optimiser steps if that step is planned.

        ``write(folder)`` writes a loadable model folder exactly as the final save does (fp16);
        it must not change the training model (write a copy) nor draw random numbers.
        """
        if step not in self.planned or step in self.saved:
            return
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix=temp_prefix("checkpoints")))
            weakref.finalize(self, shutil.rmtree, self._staging, True)
        folder = self._staging / checkpoint_folder_name(step)
        folder.mkdir()
        write(folder)
        if not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"the checkpoint writer wrote no {WEIGHTS_FILE} into {folder}")
        self.saved[step] = sha256_file(folder / WEIGHTS_FILE)

    @contextmanager
    def training(self) -> Iterator[None]:
        """Torch capped at ``threads`` threads, its global generator seeded with ``seed``."""
        with torch_threads(self.threads):
            torch.manual_seed(self.seed)
            yield

    def save(
        self,
        out_dir: Path,
        write: Callable[[Path], object],
        *,
        metrics: dict[str, Any],
        train_loss: float,
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Add the final training loss and build times to ``metrics``, save; return them.

        ``write(folder)`` writes the model's files; ``fields`` are the recipe's own entries of
        ``recipe.json`` (data, schedule, objective).
        """
        metrics["final_train_loss"] = round(train_loss, 4)
        metrics["build_seconds"] = round(time.perf_counter() - self.started, 1)
        metrics["build_cpu_seconds"] = round(time.process_time() - self.cpu_started, 1)
        recipe = {
            "name": self.name,
            "recipe": self.recipe,
            "seed": self.seed,
            "metrics": metrics,
            **fields,
        }
        missing = [s for s in self.planned if s not in self.saved]
        if missing:
            raise WorkbenchError(
                f"the recipe of {self.name} planned checkpoints at steps {missing} but never "
                "reached them; it must call run.checkpoint(step, write) after every step"
            )

        def write_all(folder: Path) -> None:
            write(folder)
            if self._staging is not None:
                shutil.move(self._staging, folder / CHECKPOINTS_FOLDER)
                index = {
                    "name": self.name,
                    "model_sha256": sha256_file(folder / WEIGHTS_FILE),
                    "steps": {str(k): v for k, v in sorted(self.saved.items())},
                }
                text = json.dumps(index, indent=2) + "\n"
                (folder / CHECKPOINTS_FOLDER / CHECKPOINT_INDEX).write_text(text)

        save_atomically(Path(out_dir), write_all, recipe)
        return metrics


def log_spaced_steps(total_steps: int, count: int) -> tuple[int, ...]:
    """``count`` distinct steps from 0 (the initial weights) to ``total_steps`` (the final
    ones), log-spaced in between: early training, where weights change fastest, gets the most.

    ``count`` 1 is the final step alone; more than ``total_steps + 1`` is refused.
    """
    if count < 1 or total_steps < 1:
        raise WorkbenchError(f"checkpoints must be at least 1 (got {count}) over >= 1 steps")
    if count > total_steps + 1:
        raise WorkbenchError(
            f"{count} checkpoints do not fit a training run of {total_steps} steps; ask for at "
            f"most {total_steps + 1}"
        )
    if count <= 2:
        return (0, total_steps)[2 - count :]
    want, points = count - 1, count - 1
    while True:
        steps = np.unique(np.round(np.geomspace(1, total_steps, points)).astype(int))
        if len(steps) >= want:
            break
        points += 1
    if len(steps) > want:  # thin to ``want`` steps, keeping the first and the last
        steps = steps[np.round(np.linspace(0, len(steps) - 1, want)).astype(int)]
    return (0, *(int(s) for s in steps))


def checkpoint_folder_name(step: int) -> str:
    return f"step-{step}"


def to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), as the saved preprocessor does."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def scene_fields(
    make: Callable[..., Any],
    scene_kwargs: dict[str, Any],
    seed: int,
    train_size: int,
    eval_size: int,
) -> dict[str, Any]:
    """``recipe.json``'s record of a scene model's data: generator, split and pixel scaling.

    ``make(n, seed=..., **scene_kwargs)`` rebuilds the training and held-out scenes.
    """
    return {
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "normalisation": PIXEL_NORMALISATION,
        "train_size": train_size,
        "train_seed": seed,
        "eval_size": eval_size,
        "eval_seed": seed + EVAL_SEED_OFFSET,
        "scenes": f"{make.__module__}.{make.__name__}(n, seed=..., **scene_kwargs)",
        "scene_kwargs": scene_kwargs,
    }


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


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    params: Iterable[torch.Tensor],
) -> None:
    """One training step: backpropagate ``loss``, clip the gradient norm to 1, step both."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()


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
    write: Callable[[Path], object],
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
    model: PreTrainedModel,
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

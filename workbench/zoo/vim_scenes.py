"""Recipe for ``vim-scenes``: a small Vision Mamba trained on the scenes that ``vit-scenes`` sees.

The side-by-side partner is ``zoo:vit-scenes``: the same 64-px scenes and 8-px patches, the same
width (128) and depth (6), the same objective (multi-label BCE on which shapes are present, read
from the class token, plus a discarded linear head that predicts each patch's class from the
final patch tokens), the same flips and transposes, optimiser and schedule, and the same held-out
scenes and metrics. Vim has no MLPs, so it has fewer parameters; its selective scan costs far more
CPU time per image than attention at this size, so it sees fewer training images in its budget.
The middle class token and the bidirectional scans are as in the official Vim.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.data.scenes import SHAPES, Scenes, make_scenes, patch_labels
from workbench.models.vim import VimConfig, VisionMamba, flush_denormals, save_pretrained
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import (
    EVAL_SEED_OFFSET,
    IMAGE_MEAN,
    IMAGE_STD,
    RecipeRun,
    adamw_warmup_cosine,
    flip_augment,
    optimizer_step,
    to_pixel_values,
)
from workbench.zoo.vit_scenes import (
    EVAL_SIZE,
    IMAGE_SIZE,
    PATCH_SIZE,
    SCENE_KWARGS,
    data_fields,
    evaluate,
)

NAME = "vim-scenes"
ENTRIES = (
    ZooEntry(
        name=NAME,
        family="vim",
        description=(
            "6-layer Vision Mamba (width 96, state 8, middle class token, 8-px patches, 64-px "
            "images) trained like vit-scenes to say which shapes appear in synthetic scenes"
        ),
        recipe=__name__,
        seed=0,
    ),
)
D_MODEL = 96
N_LAYERS = 6
D_STATE = 8
TRAIN_SIZE = 16_000  # the same training scenes as vit-scenes (seed 0)
STEPS = 750  # 1.5 passes over them: what ten CPU minutes buy at this size
BATCH_SIZE = 32
LR = 2e-3
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
MAX_THREADS = 1
PATCH_LOSS_WEIGHT = 1.0


def vim_config() -> VimConfig:
    """The architecture: 6 bidirectional Mamba blocks, width 96 (inner 192), state size 8."""
    return VimConfig(
        d_model=D_MODEL,
        n_layers=N_LAYERS,
        d_state=D_STATE,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_classes=len(SHAPES),
        problem_type="multi_label_classification",
        id2label={str(i): name for i, name in enumerate(SHAPES)},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )


def build(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """Train, evaluate the fp16 weights on held-out scenes, and save atomically into ``out_dir``;
    keep ``checkpoints`` log-spaced checkpoints along the way."""
    run = RecipeRun(NAME, __name__, seed, threads=MAX_THREADS, checkpoints=checkpoints)
    with run.training(), flush_denormals():
        train = make_scenes(TRAIN_SIZE, seed=seed, **SCENE_KWARGS)
        held = make_scenes(EVAL_SIZE, seed=seed + EVAL_SEED_OFFSET, **SCENE_KWARGS)
        model = VisionMamba(vim_config())

        def write_checkpoint(folder: Path) -> None:
            save_pretrained(model, folder, torch.float16)  # writes fp16 copies

        run.plan_checkpoints(STEPS)
        run.checkpoint(0, write_checkpoint)
        train_loss = _train(model, train, seed, lambda step: run.checkpoint(step, write_checkpoint))
        model = model.half().float()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model, held)
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    fields = {
        **data_fields(seed, TRAIN_SIZE, EVAL_SIZE),
        "steps": STEPS,
        "batch_size": BATCH_SIZE,
        "optimizer": f"AdamW lr={LR} weight_decay={WEIGHT_DECAY}, warmup + cosine",
        "augmentation": "random horizontal/vertical flips and transposes (labels unchanged)",
        "patch_loss_weight": PATCH_LOSS_WEIGHT,
        "objective": "BCE on which shapes are present (class-token head) + weight x "
        "cross-entropy of each patch's class from the final patch tokens via a discarded "
        "linear head (as vit-scenes)",
        "partner": "zoo:vit-scenes",
    }

    def write(folder: Path) -> None:
        save_pretrained(model, folder, torch.float16)

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def _train(
    model: VisionMamba,
    scenes: Scenes,
    seed: int,
    after_step: Callable[[int], None] = lambda step: None,
) -> float:
    """Supervised multi-label training; returns the mean multi-label loss of the last 100 steps.

    Batches walk through a fresh permutation of the scenes each pass, for ``STEPS`` steps;
    ``after_step(k)`` is called after the k-th optimiser step (to keep checkpoints).
    """
    labels = torch.from_numpy(scenes.present().astype(np.float32))
    patch_classes = torch.from_numpy(
        patch_labels(scenes.class_ids, PATCH_SIZE, min_fraction=0.0).astype(np.int64)
    )
    patch_head = torch.nn.Linear(model.config.d_model, len(SHAPES) + 1)
    params = [*model.parameters(), *patch_head.parameters()]
    n = len(scenes)
    total = STEPS
    warmup = max(1, int(WARMUP_FRACTION * total))
    no_decay = {id(p) for name, p in model.named_parameters() if _no_weight_decay(name)}
    groups = [
        {"params": [p for p in params if id(p) not in no_decay]},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
    optimizer, schedule = adamw_warmup_cosine(
        groups, lr=LR, weight_decay=WEIGHT_DECAY, warmup=warmup, total=total
    )
    gen = torch.Generator().manual_seed(seed)
    passes = -(-total * BATCH_SIZE // n)  # ceil
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(passes)])
    model.train()
    losses = []
    bar = tqdm(total=total, desc=f"train {NAME}", unit="step")
    for step in range(total):
        idx = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
        pixels = to_pixel_values(scenes.images[idx.numpy()])
        x, patches = flip_augment(pixels, patch_classes[idx], gen)
        out = model(pixel_values=x)
        loss = F.binary_cross_entropy_with_logits(out.logits, labels[idx])
        tokens = model.patch_tokens(out.last_hidden_state)
        dense = F.cross_entropy(patch_head(tokens).flatten(0, 1), patches.flatten())
        optimizer_step(loss + PATCH_LOSS_WEIGHT * dense, optimizer, schedule, params)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", patch=f"{dense.item():.3f}", refresh=False)
        after_step(step + 1)
    bar.close()
    model.eval()
    return float(np.mean(losses[-100:]))


def _no_weight_decay(name: str) -> bool:
    """As in Vim: no decay on position embedding, class token, A_log and D (and norms, biases)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("pos_embed", "cls_token", "A_log", "A_b_log", "D", "D_b", "bias") or (
        "norm" in name
    )

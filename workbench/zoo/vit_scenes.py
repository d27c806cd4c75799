"""Recipe for ``vit-scenes``: a small ViT trained on synthetic scenes to say which shapes appear.

The task is image-level and multi-label (one sigmoid per shape class), so the model has to
recognise each object's shape whatever its colour or texture. Alone, that signal is too weak
for a ViT trained from scratch in a few CPU minutes (the loss barely moves in 1000 steps), so a
linear head that is thrown away afterwards also predicts each patch's class from the last
layer. The scenes' pixel masks then give per-patch ground truth for probing where, and in which
layer, object identity is represented. Training is seeded and the data deterministic.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data.scenes import SHAPES, Scenes, make_scenes, patch_labels
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import (
    EVAL_SEED_OFFSET,
    IMAGE_MEAN,
    IMAGE_STD,
    RecipeRun,
    adamw_warmup_cosine,
    flip_augment,
    optimizer_step,
    scene_fields,
    to_pixel_values,
    write_vit_folder,
)

if TYPE_CHECKING:
    from transformers import ViTConfig, ViTForImageClassification

NAME = "vit-scenes"
ENTRIES = (
    ZooEntry(
        name=NAME,
        family="vit",
        description=(
            "6-layer ViT (width 128, 8-px patches, 64-px images) trained to say which shapes "
            "appear in synthetic scenes (workbench.data.scenes); masks give per-patch truth"
        ),
        recipe=__name__,
        seed=0,
    ),
)
IMAGE_SIZE = 64
PATCH_SIZE = 8
SCENE_KWARGS: dict[str, Any] = {"size": IMAGE_SIZE}
"""Scene options for training and evaluation (the generator's defaults otherwise); pass them to
``make_scenes`` for in-distribution scenes. They are also stored in ``recipe.json``."""
TRAIN_SIZE = 16_000
EVAL_SIZE = 1_000
EPOCHS = 4
BATCH_SIZE = 64
LR = 1e-3
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
MAX_THREADS = 1  # a model this small trains fastest on one thread here
PATCH_LOSS_WEIGHT = 1.0


def vit_config() -> ViTConfig:
    """The architecture: 6 layers, width 128, 4 heads, 8-px patches on 64-px images."""
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        id2label=dict(enumerate(SHAPES)),
        label2id={name: i for i, name in enumerate(SHAPES)},
        problem_type="multi_label_classification",
    )


def data_fields(seed: int, train_size: int, eval_size: int) -> dict[str, Any]:
    """``recipe.json``'s record of the scenes, split and classes (``vim-scenes`` shares them)."""
    fields = scene_fields(make_scenes, SCENE_KWARGS, seed, train_size, eval_size)
    return {**fields, "classes": list(SHAPES)}


def build(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """Train the model, evaluate it on held-out scenes, and save it atomically into ``out_dir``;
    keep ``checkpoints`` log-spaced checkpoints along the way.

    Returns the held-out metrics (also written to ``recipe.json``).
    """
    from transformers import ViTForImageClassification

    run = RecipeRun(NAME, __name__, seed, threads=MAX_THREADS, checkpoints=checkpoints)
    with run.training():
        train = make_scenes(TRAIN_SIZE, seed=seed, **SCENE_KWARGS)
        held = make_scenes(EVAL_SIZE, seed=seed + EVAL_SEED_OFFSET, **SCENE_KWARGS)
        model = ViTForImageClassification(vit_config())

        def write_checkpoint(folder: Path) -> None:
            write_vit_folder(copy.deepcopy(model).half(), folder, IMAGE_MEAN, IMAGE_STD)

        run.plan_checkpoints(EPOCHS * (TRAIN_SIZE // BATCH_SIZE))
        run.checkpoint(0, write_checkpoint)
        train_loss = _train(model, train, seed, lambda step: run.checkpoint(step, write_checkpoint))
        model = model.half()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model.float(), held)
        model = model.half()
    fields = {
        **data_fields(seed, TRAIN_SIZE, EVAL_SIZE),
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "optimizer": f"AdamW lr={LR} weight_decay={WEIGHT_DECAY}, warmup + cosine",
        "augmentation": "random horizontal/vertical flips and transposes (labels unchanged)",
        "patch_loss_weight": PATCH_LOSS_WEIGHT,
        "objective": "BCE on which shapes are present (CLS head) + weight x cross-entropy of "
        "each patch's class from the final patch tokens via a discarded linear head",
    }

    def write(folder: Path) -> None:
        write_vit_folder(model, folder, IMAGE_MEAN, IMAGE_STD)

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def _train(
    model: ViTForImageClassification,
    scenes: Scenes,
    seed: int,
    after_step: Callable[[int], None] = lambda step: None,
) -> float:
    """Supervised multi-label training; returns the mean multi-label loss of the last epoch;
    ``after_step(k)`` is called after the k-th optimiser step (to keep checkpoints).

    With ``PATCH_LOSS_WEIGHT > 0`` a throw-away linear head also predicts each patch's class
    from the final patch tokens (dense supervision speeds learning up a lot on a CPU budget);
    the head is not saved, so the checkpoint is a plain ViTForImageClassification.
    """
    labels = torch.from_numpy(scenes.present().astype(np.float32))
    patch_classes = torch.from_numpy(
        patch_labels(scenes.class_ids, PATCH_SIZE, min_fraction=0.0).astype(np.int64)
    )
    patch_head = torch.nn.Linear(model.config.hidden_size, len(SHAPES) + 1)
    params = [*model.parameters(), *patch_head.parameters()]
    n = len(scenes)
    steps_per_epoch = n // BATCH_SIZE
    total = steps_per_epoch * EPOCHS
    warmup = max(1, int(WARMUP_FRACTION * total))
    optimizer, schedule = adamw_warmup_cosine(
        params, lr=LR, weight_decay=WEIGHT_DECAY, warmup=warmup, total=total
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    last = 0.0
    bar = tqdm(total=total, desc=f"train {NAME}", unit="step")
    for _epoch in range(EPOCHS):
        order = torch.randperm(n, generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
            x, patches = flip_augment(
                to_pixel_values(scenes.images[idx.numpy()]), patch_classes[idx], gen
            )
            out = model(pixel_values=x, labels=labels[idx], output_hidden_states=True)
            loss = out.loss
            if PATCH_LOSS_WEIGHT:
                tokens = model.vit.layernorm(out.hidden_states[-1][:, 1:])
                dense = torch.nn.functional.cross_entropy(
                    patch_head(tokens).flatten(0, 1), patches.flatten()
                )
                loss = loss + PATCH_LOSS_WEIGHT * dense
            optimizer_step(loss, optimizer, schedule, params)
            losses.append(out.loss.item())
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            after_step(bar.n)
        last = float(np.mean(losses))
    bar.close()
    model.eval()
    return last


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, C) bool: which shape classes the model says are present (sigmoid > 0.5)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    out = []
    for i in range(0, len(images), batch_size):
        x = to_pixel_values(images[i : i + batch_size]).to(dtype)
        out.append(model(pixel_values=x).logits.float() > 0)
    return torch.cat(out).numpy()


def evaluate(model: torch.nn.Module, scenes: Scenes) -> dict:
    """Exact-match, per-label accuracy and per-class F1 on ``scenes``, with chance baselines."""
    truth = scenes.present()
    pred = predict(model, scenes.images)
    tp = (pred & truth).sum(axis=0)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    f1 = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
    majority = np.maximum(truth.mean(axis=0), 1 - truth.mean(axis=0))
    majority_rows = (truth.mean(axis=0) >= 0.5)[None, :]
    return {
        "eval_scenes": len(scenes),
        "exact_match": round(float((pred == truth).all(axis=1).mean()), 4),
        "label_accuracy": round(float((pred == truth).mean()), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "f1": {name: round(float(v), 4) for name, v in zip(SHAPES, f1, strict=True)},
        "chance_label_accuracy": round(float(majority.mean()), 4),
        "chance_exact_match": round(float((truth == majority_rows).all(axis=1).mean()), 4),
    }

"""Recipes for the three ``vit-binding-*`` models: one ViT architecture, three training signals.

All three are the same small ViT (6 blocks, width 96, 4 heads, 8-px patches on 64-px images)
trained on the binding scenes of ``workbench.data.scenes.make_binding_scenes`` (large objects,
identical duplicates, touching objects, occluded objects cut into parts):

- ``vit-binding-mae``: masked autoencoding (MAE): 75% of the patches are hidden and a small
  decoder reconstructs their per-patch-normalised pixels from the encoder's view of the rest.
  Saved as a ViTMAE encoder (the loader runs it with masking off); the decoder is dropped.
- ``vit-binding-contrast``: contrastive (SimCLR-style InfoNCE): two random crops of a scene, with
  independent colour-channel permutations and brightness/contrast changes, must pick each other
  out among the batch, so colour alone does not match them; shapes and layout must.
- ``vit-binding-sup``: supervised: which shape classes appear (one sigmoid each), plus a
  throw-away per-patch class head that speeds learning up on a CPU budget (as ``vit-scenes``).

The random-init control is not a zoo model: ``LoadedModel.random_init_copy`` makes it. Training
is seeded and the scenes deterministic; held-out metrics come from scenes of another seed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.data.scenes import Scenes, make_binding_scenes, patch_labels
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
    from transformers import PreTrainedModel

Model = TypeVar("Model", bound=torch.nn.Module)
LossFn = Callable[[Model, torch.Tensor, dict, torch.Generator], torch.Tensor]
"""A recipe's loss: (model, pixel batch, batch labels, generator) -> scalar loss."""

ARCHITECTURE = "6-layer ViT (width 96, 4 heads, 8-px patches, 64-px images)"
ENTRIES = (
    ZooEntry(
        name="vit-binding-mae",
        family="vit",
        description=f"{ARCHITECTURE} trained by masked autoencoding (MAE, 75% masked) on the "
        "binding scenes (workbench.data.scenes.make_binding_scenes); ViTMAE encoder",
        recipe=__name__,
        seed=0,
        builder="build_mae",
    ),
    ZooEntry(
        name="vit-binding-contrast",
        family="vit",
        description=f"{ARCHITECTURE} trained contrastively (InfoNCE between two colour-shuffled "
        "crops of a scene) on the binding scenes",
        recipe=__name__,
        seed=0,
        builder="build_contrast",
    ),
    ZooEntry(
        name="vit-binding-sup",
        family="vit",
        description=f"{ARCHITECTURE} trained supervised (which shapes appear, plus a per-patch "
        "class head) on the binding scenes",
        recipe=__name__,
        seed=0,
        builder="build_supervised",
    ),
)
IMAGE_SIZE = 64
PATCH_SIZE = 8
HIDDEN = 96
LAYERS = 6
HEADS = 4
MLP = 384
SCENE_KWARGS: dict[str, Any] = {"size": IMAGE_SIZE}
"""Options for ``make_binding_scenes`` in training and evaluation (its defaults otherwise)."""
TRAIN_SIZE = 4_000
EVAL_SIZE = 500
BATCH_SIZE = 64
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
MAX_THREADS = 1
MAE_STEPS, MAE_LR, MAE_MASK_RATIO = 1500, 1.5e-3, 0.75
CONTRAST_STEPS, CONTRAST_LR, CONTRAST_TEMPERATURE = 450, 1e-3, 0.2
SUPERVISED_STEPS, SUPERVISED_LR = 1000, 1e-3


def encoder_kwargs() -> dict[str, Any]:
    """The encoder every recipe shares (ViTConfig and ViTMAEConfig take the same keywords)."""
    return dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=MLP,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
    )


# -- builders ----------------------------------------------------------------------------------
def build_mae(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """Masked autoencoding; saves the encoder as a ViTMAE model with ``mask_ratio`` 0."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

    def make() -> ViTMAEForPreTraining:
        config = ViTMAEConfig(
            **encoder_kwargs(),
            decoder_hidden_size=64,
            decoder_num_hidden_layers=2,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=256,
            mask_ratio=MAE_MASK_RATIO,
            norm_pix_loss=True,
        )
        return ViTMAEForPreTraining(config)

    def loss_fn(model: ViTMAEForPreTraining, x: torch.Tensor, _batch: dict, gen: torch.Generator):
        noise = torch.rand(x.shape[0], (IMAGE_SIZE // PATCH_SIZE) ** 2, generator=gen)
        return model(pixel_values=x, noise=noise).loss

    def evaluate(model: ViTMAEForPreTraining, held: Scenes) -> dict:
        return evaluate_mae(model, held, seed)

    def encoder(model: ViTMAEForPreTraining) -> ViTMAEModel:
        enc = model.vit
        enc.config.mask_ratio = 0.0
        enc.config.architectures = ["ViTMAEModel"]
        return enc

    return _build(
        "vit-binding-mae",
        out_dir,
        seed,
        checkpoints=checkpoints,
        make=make,
        loss_fn=loss_fn,
        steps=MAE_STEPS,
        lr=MAE_LR,
        evaluate=evaluate,
        to_save=encoder,
        details={
            "objective": f"MAE: reconstruct the per-patch-normalised pixels of {MAE_MASK_RATIO:.0%}"
            " randomly masked patches (decoder: 2 blocks, width 64, dropped after training)",
            "saved": "ViTMAEModel encoder, config.mask_ratio = 0",
        },
    )


def build_contrast(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """InfoNCE between two augmented views of each scene; the projection head is dropped."""
    from transformers import ViTConfig, ViTModel

    def make() -> ViTModel:
        model = ViTModel(ViTConfig(**encoder_kwargs()))  # the unused pooler is saved too
        model.projection = torch.nn.Sequential(
            torch.nn.Linear(HIDDEN, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)
        )
        return model

    def loss_fn(model: ViTModel, x: torch.Tensor, _batch: dict, gen: torch.Generator):
        views = torch.cat([augment_view(x, gen), augment_view(x, gen)])
        cls = model(pixel_values=views).last_hidden_state[:, 0]
        z = F.normalize(model.get_submodule("projection")(cls), dim=1)
        return info_nce(z, CONTRAST_TEMPERATURE)

    def evaluate(model: ViTModel, held: Scenes) -> dict:
        return evaluate_contrast(model, held, seed)

    def encoder(model: ViTModel) -> ViTModel:
        del model.projection
        model.config.architectures = ["ViTModel"]
        return model

    return _build(
        "vit-binding-contrast",
        out_dir,
        seed,
        checkpoints=checkpoints,
        make=make,
        loss_fn=loss_fn,
        steps=CONTRAST_STEPS,
        lr=CONTRAST_LR,
        evaluate=evaluate,
        to_save=encoder,
        details={
            "objective": "InfoNCE (temperature "
            f"{CONTRAST_TEMPERATURE}) between the CLS tokens (through a discarded 2-layer "
            "projection) of two views of each scene: random resized crops (scale 0.35-1), flips, "
            "colour-channel permutation, brightness and contrast jitter",
            "saved": "ViTModel (its pooler is untrained and unused); projection head dropped",
        },
    )


def build_supervised(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """Which shapes appear (multi-label BCE) plus a discarded per-patch class head."""
    from transformers import ViTConfig, ViTForImageClassification

    def make() -> ViTForImageClassification:
        names = _class_names()
        config = ViTConfig(
            **encoder_kwargs(),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            problem_type="multi_label_classification",
        )
        model = ViTForImageClassification(config)
        model.patch_head = torch.nn.Linear(HIDDEN, len(names) + 1)
        return model

    def loss_fn(
        model: ViTForImageClassification, x: torch.Tensor, batch: dict, _gen: torch.Generator
    ):
        out = model(pixel_values=x, labels=batch["present"], output_hidden_states=True)
        tokens = model.vit.layernorm(out.hidden_states[-1][:, 1:])
        patch_logits = model.get_submodule("patch_head")(tokens)
        dense = F.cross_entropy(patch_logits.flatten(0, 1), batch["patch_classes"].flatten())
        return out.loss + dense

    def evaluate(model: ViTForImageClassification, held: Scenes) -> dict:
        return evaluate_supervised(model, held)

    def encoder(model: ViTForImageClassification) -> ViTForImageClassification:
        del model.patch_head
        return model

    return _build(
        "vit-binding-sup",
        out_dir,
        seed,
        checkpoints=checkpoints,
        make=make,
        loss_fn=loss_fn,
        steps=SUPERVISED_STEPS,
        lr=SUPERVISED_LR,
        evaluate=evaluate,
        to_save=encoder,
        details={
            "objective": "BCE on which shape classes are present (classifier on the CLS token) + "
            "cross-entropy of each patch's class from the final patch tokens via a discarded "
            "linear head",
            "saved": "ViTForImageClassification (classifier kept, patch head dropped)",
            "classes": list(_class_names()),
        },
    )


# -- the shared loop ---------------------------------------------------------------------------
def _build(
    name: str,
    out_dir: Path,
    seed: int,
    *,
    make: Callable[[], Model],
    loss_fn: LossFn[Model],
    steps: int,
    lr: float,
    evaluate: Callable[[Model, Scenes], dict],
    to_save: Callable[[Model], PreTrainedModel],
    details: dict[str, Any],
    checkpoints: int = 0,
) -> dict:
    """Render scenes, train, evaluate the fp16 weights on held-out scenes, save atomically;
    keep ``checkpoints`` log-spaced checkpoints along the way, saved as the final model is."""
    run = RecipeRun(name, __name__, seed, threads=MAX_THREADS, checkpoints=checkpoints)
    with run.training():
        train = make_binding_scenes(TRAIN_SIZE, seed=seed, **SCENE_KWARGS)
        held = make_binding_scenes(EVAL_SIZE, seed=seed + EVAL_SEED_OFFSET, **SCENE_KWARGS)
        model = make()

        def write_checkpoint(folder: Path) -> None:
            encoder = to_save(copy.deepcopy(model)).half()
            write_vit_folder(encoder, folder, IMAGE_MEAN, IMAGE_STD)

        run.plan_checkpoints(steps)
        run.checkpoint(0, write_checkpoint)
        train_loss = _train(
            name,
            model,
            train,
            loss_fn,
            steps,
            lr,
            seed,
            lambda step: run.checkpoint(step, write_checkpoint),
        )
        model = model.half().float()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model, held)
        saved = to_save(model).half()
    fields = {
        "architecture": ARCHITECTURE,
        **scene_fields(make_binding_scenes, SCENE_KWARGS, seed, TRAIN_SIZE, EVAL_SIZE),
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "optimizer": f"AdamW lr={lr} weight_decay={WEIGHT_DECAY}, warmup + cosine",
        "augmentation": "random horizontal/vertical flips and transposes",
        **details,
    }

    def write(folder: Path) -> None:
        write_vit_folder(saved, folder, IMAGE_MEAN, IMAGE_STD)

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def _train(
    name: str,
    model: Model,
    scenes: Scenes,
    loss_fn: LossFn[Model],
    steps: int,
    lr: float,
    seed: int,
    after_step: Callable[[int], None] = lambda step: None,
) -> float:
    """AdamW with warm-up and cosine decay; returns the mean loss of the last tenth of steps.
    ``after_step(k)`` is called after the k-th optimiser step (to keep checkpoints)."""
    present = torch.from_numpy(_present(scenes).astype(np.float32))
    patch_classes = torch.from_numpy(
        patch_labels(scenes.class_ids, PATCH_SIZE, min_fraction=0.0).astype(np.int64)
    )
    params = list(model.parameters())
    warmup = max(1, int(WARMUP_FRACTION * steps))
    optimizer, schedule = adamw_warmup_cosine(
        params, lr=lr, weight_decay=WEIGHT_DECAY, warmup=warmup, total=steps
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(scenes), generator=gen)
    cursor = 0
    bar = tqdm(total=steps, desc=f"train {name}", unit="step")
    for step in range(steps):
        if cursor + BATCH_SIZE > len(order):
            order, cursor = torch.randperm(len(scenes), generator=gen), 0
        idx = order[cursor : cursor + BATCH_SIZE]
        cursor += BATCH_SIZE
        x, grid = flip_augment(to_pixel_values(scenes.images[idx.numpy()]), patch_classes[idx], gen)
        batch = {"present": present[idx], "patch_classes": grid}
        loss = loss_fn(model, x, batch, gen)
        optimizer_step(loss, optimizer, schedule, params)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        after_step(step + 1)
    bar.close()
    model.eval()
    return float(np.mean(losses[-max(1, steps // 10) :]))


def augment_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random resized crop (scale 0.35-1, bilinear), flip, channel permutation and jitter."""
    n = x.shape[0]
    scale = 0.35 + 0.65 * torch.rand(n, generator=gen)
    aspect = torch.exp((torch.rand(n, generator=gen) - 0.5) * math.log(4 / 3) * 2)
    sx = torch.sqrt(scale * aspect).clamp(max=1.0)
    sy = torch.sqrt(scale / aspect).clamp(max=1.0)
    tx = (1 - sx) * (2 * torch.rand(n, generator=gen) - 1)
    ty = (1 - sy) * (2 * torch.rand(n, generator=gen) - 1)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(n)])
    out = torch.gather(out, 1, perms[:, :, None, None].expand_as(out))
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen)
    brightness = 0.4 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * contrast + mean + brightness


def info_nce(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2n unit vectors where row i and row i + n are the two views of one scene."""
    n = z.shape[0] // 2
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


# -- held-out metrics --------------------------------------------------------------------------
def _class_names() -> tuple[str, ...]:
    return tuple(make_binding_scenes(1, **SCENE_KWARGS).class_names[1:])


def _present(scenes: Scenes) -> np.ndarray:
    return scenes.present()


@torch.no_grad()
def evaluate_mae(model: torch.nn.Module, scenes: Scenes, seed: int) -> dict:
    """Masked-patch reconstruction error on held-out scenes, against predicting zeros.

    Targets are per-patch normalised pixels, so predicting each patch's own mean (zero) scores
    about 1.0; a model that learned nothing cannot do better than that.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    for i in range(0, len(scenes), 100):
        x = to_pixel_values(scenes.images[i : i + 100])
        noise = torch.rand(x.shape[0], (IMAGE_SIZE // PATCH_SIZE) ** 2, generator=gen)
        losses.append(float(model(pixel_values=x, noise=noise).loss) * len(x))
    return {
        "eval_scenes": len(scenes),
        "masked_patch_mse": round(sum(losses) / len(scenes), 4),
        "baseline_mse_predict_patch_mean": 1.0,
    }


@torch.no_grad()
def evaluate_contrast(model: torch.nn.Module, scenes: Scenes, seed: int) -> dict:
    """Top-1 retrieval of a scene's second view among all held-out views, and its chance."""
    model.eval()
    projection = model.get_submodule("projection")
    gen = torch.Generator().manual_seed(seed + 1)
    x = to_pixel_values(scenes.images)
    views = [augment_view(x, gen), augment_view(x, gen)]
    z = [
        F.normalize(
            torch.cat(
                [
                    projection(model(pixel_values=v[i : i + 100]).last_hidden_state[:, 0])
                    for i in range(0, len(v), 100)
                ]
            ),
            dim=1,
        )
        for v in views
    ]
    hits = (z[0] @ z[1].T).argmax(dim=1) == torch.arange(len(scenes))
    loss = info_nce(torch.cat(z), CONTRAST_TEMPERATURE)
    return {
        "eval_scenes": len(scenes),
        "view_retrieval_top1": round(float(hits.float().mean()), 4),
        "chance_view_retrieval_top1": round(1.0 / len(scenes), 4),
        "eval_info_nce": round(float(loss), 4),
        "chance_info_nce": round(math.log(2 * len(scenes) - 1), 4),
    }


@torch.no_grad()
def evaluate_supervised(model: torch.nn.Module, scenes: Scenes) -> dict:
    """Per-label accuracy and macro F1 of "which shapes appear", with the majority baselines."""
    model.eval()
    truth = _present(scenes)
    logits = torch.cat(
        [
            model(pixel_values=to_pixel_values(scenes.images[i : i + 100])).logits
            for i in range(0, len(scenes), 100)
        ]
    )
    pred = (logits > 0).numpy()
    tp = (pred & truth).sum(axis=0)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    f1 = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
    majority = np.maximum(truth.mean(axis=0), 1 - truth.mean(axis=0))
    names = scenes.class_names[1:]
    return {
        "eval_scenes": len(scenes),
        "label_accuracy": round(float((pred == truth).mean()), 4),
        "chance_label_accuracy": round(float(majority.mean()), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "f1": {name: round(float(v), 4) for name, v in zip(names, f1, strict=True)},
        "exact_match": round(float((pred == truth).all(axis=1).mean()), 4),
    }

"""Labelled positions: which token of which input carries which label."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from workbench.data.images import ImageFolderSet, describe_images, load_images
from workbench.data.scenes import make_scenes, patch_labels
from workbench.data.segmentation import SegmentationSet
from workbench.data.words import word_sentences
from workbench.errors import DataError
from workbench.models import LoadedModel


@dataclass(frozen=True)
class LabelledPositions:
    """Inputs for ``capture`` plus, per labelled position, its label, CV group and hover text.

    ``positions[k] = (input index, token index in the model's sequence)``; ``colourings`` are
    alternative categorical annotations of the same positions for the maps.
    """

    inputs: Mapping[str, torch.Tensor] | np.ndarray | list[str]
    positions: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    groups: np.ndarray
    hover: np.ndarray
    label_title: str = "label"
    colourings: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = len(self.positions)
        if m == 0:
            raise DataError("the dataset has no labelled positions")
        if self.positions.ndim != 2 or self.positions.shape[1] != 2:
            raise DataError(f"positions must be (M, 2); got {self.positions.shape}")
        for name, arr in (
            ("labels", self.labels),
            ("groups", self.groups),
            ("hover", self.hover),
            *self.colourings.items(),
        ):
            if len(arr) != m:
                raise DataError(
                    f"{name} has {len(arr)} entries but there are {m} labelled positions; "
                    "labels must match the inputs one to one"
                )
        n_inputs = _n_inputs(self.inputs)
        if self.positions[:, 0].min() < 0 or self.positions[:, 0].max() >= n_inputs:
            raise DataError(f"positions refer to inputs outside 0..{n_inputs - 1}")
        if self.labels.min() < 0 or self.labels.max() >= len(self.label_names):
            raise DataError(f"labels must lie in 0..{len(self.label_names) - 1}")
        if len(np.unique(self.labels)) < 2:
            raise DataError("all positions carry one label; a probe needs at least two classes")


def _n_inputs(inputs: Mapping[str, torch.Tensor] | np.ndarray | list[str]) -> int:
    if isinstance(inputs, Mapping):
        return len(next(iter(inputs.values())))
    return len(inputs)


def scene_patches(model: LoadedModel, n: int, *, seed: int = 0) -> LabelledPositions:
    """Scenes at the model's resolution; label = class of the object covering each patch.

    Background patches are left out: the question is whether the model separates object classes.
    """
    size, patch = model.image_size, model.patch_size
    if size is None or patch is None:
        raise DataError(f"the scenes dataset needs a vision model; {model.spec} reads text")
    scenes = make_scenes(n, size=size, seed=seed)
    per_patch = patch_labels(scenes.class_ids, patch)
    image_idx, patch_idx = np.nonzero(per_patch > 0)
    side = size // patch
    names = tuple(scenes.class_names[1:])
    labels = per_patch[image_idx, patch_idx].astype(np.int64) - 1
    rows, cols = patch_idx // side, patch_idx % side
    hover = np.array(
        [
            f"image {i}, patch row {r} col {c}: {names[y]}"
            for i, r, c, y in zip(image_idx, rows, cols, labels, strict=True)
        ]
    )
    return LabelledPositions(
        inputs=scenes.images,
        positions=np.stack([image_idx, patch_idx + model.n_prefix_tokens], axis=1),
        labels=labels,
        label_names=names,
        groups=image_idx,
        hover=hover,
        label_title="object class",
        colourings={"patch_row": rows.astype(str), "image": image_idx.astype(str)},
    )


def word_tokens(model: LoadedModel, n: int, *, seed: int = 0) -> LabelledPositions:
    """Neutral sentences; label = semantic category of the one slot word (its last token)."""
    items = word_sentences(n, seed=seed)
    texts = [s.text for s in items]
    enc = model.processor(texts, return_tensors="pt", padding=True, return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping").numpy()
    rows, tokens = [], []
    for i, s in enumerate(items):
        inside = np.nonzero(
            (offsets[i, :, 0] < s.span[1])
            & (offsets[i, :, 1] > s.span[0])
            & enc["attention_mask"][i].numpy().astype(bool)
        )[0]
        if len(inside):
            rows.append(i)
            tokens.append(int(inside[-1]))
    if not rows:
        raise DataError(f"{model.spec}'s tokenizer located none of the labelled words")
    names = tuple(dict.fromkeys(s.category for s in items))
    kept = [items[i] for i in rows]
    words = sorted({s.word for s in kept})
    word_id = {w: k for k, w in enumerate(words)}
    hover = np.array([s.text.replace(s.word, f"[{s.word}]", 1) for s in kept])
    return LabelledPositions(
        inputs={"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
        positions=np.stack([np.array(rows), np.array(tokens)], axis=1),
        labels=np.array([names.index(s.category) for s in kept]),
        label_names=names,
        groups=np.array([word_id[s.word] for s in kept]),
        hover=hover,
        label_title="word category",
        colourings={
            "template": np.array([str(s.template) for s in kept]),
            "word": np.array([s.word for s in kept]),
        },
    )


def class_token_labels(model: LoadedModel, data: ImageFolderSet) -> LabelledPositions:
    """Your ImageFolder images; label = the image's class, read at the class token (token 0)."""
    if model.n_prefix_tokens < 1:
        raise DataError(f"{model.spec} has no class token to read an image's label at")
    names = tuple(data.class_names[1:])
    n = len(data)
    return LabelledPositions(
        inputs=data.images,
        positions=np.stack([np.arange(n), np.zeros(n, dtype=np.int64)], axis=1),
        labels=data.labels,
        label_names=names,
        groups=np.arange(n),
        hover=np.array(
            [
                f"{Path(src).name}: {names[y]}"
                for src, y in zip(data.sources, data.labels, strict=True)
            ]
        ),
        label_title="image class",
    )


def object_patches(model: LoadedModel, data: SegmentationSet) -> LabelledPositions:
    """Your ADE20K or COCO images; label = the class of the object under each patch."""
    patch = int(model.patch_size or 0)
    per_patch = patch_labels(data.class_ids, patch)
    image_idx, patch_idx = np.nonzero(per_patch > 0)
    if not len(image_idx):
        raise DataError("no patch is covered by a labelled object; use other images")
    present, labels = np.unique(per_patch[image_idx, patch_idx], return_inverse=True)
    names = tuple(data.class_names[c] or f"class {c}" for c in present)
    side = int(model.image_size or 0) // patch
    rows, cols = patch_idx // side, patch_idx % side
    hover = np.array(
        [
            f"{Path(data.sources[i]).name}, patch row {r} col {c}: {names[y]}"
            for i, r, c, y in zip(image_idx, rows, cols, labels, strict=True)
        ]
    )
    return LabelledPositions(
        inputs=data.images,
        positions=np.stack([image_idx, patch_idx + model.n_prefix_tokens], axis=1),
        labels=labels.astype(np.int64),
        label_names=names,
        groups=image_idx,
        hover=hover,
        label_title="object class",
        colourings={"patch_row": rows.astype(str), "image": image_idx.astype(str)},
    )


def user_images(
    model: LoadedModel, name: str, path: str, annotations: str, split: str, n: int
) -> tuple[LabelledPositions, dict]:
    """Your images on disk through the model's own preprocessing, and that preprocessing."""
    data = load_images(model, name, path=path, annotations=annotations, split=split, n=n)
    _, preprocessing = describe_images(model, name, path=path, annotations=annotations)
    if isinstance(data, ImageFolderSet):
        return class_token_labels(model, data), preprocessing
    return object_patches(model, data), preprocessing


def default_dataset(model: LoadedModel, name: str, n: int, seed: int) -> LabelledPositions:
    if name == "auto":
        name = "scenes" if model.is_vision else "words"
    if name == "scenes":
        if not model.is_vision:
            raise DataError(f"the scenes dataset needs a vision model; {model.spec} reads text")
        return scene_patches(model, n, seed=seed)
    if name == "words":
        if model.is_vision:
            raise DataError(f"the words dataset needs a text model; {model.spec} reads images")
        return word_tokens(model, n, seed=seed)
    raise DataError(f"unknown dataset {name!r}; choose auto, scenes or words")

"""Labelled positions: which token of which input carries which label."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from workbench.data.images import ImageFolderSet, describe_images, load_images
from workbench.data.labelled_text import TEXT_FORMATS, LabelledTexts, read_labelled_text
from workbench.data.scenes import make_scenes, patch_labels
from workbench.data.segmentation import SegmentationSet
from workbench.data.words import word_sentences
from workbench.errors import DataError
from workbench.models import LoadedModel


@dataclass(frozen=True)
class LabelledPositions:
    """Inputs for ``capture`` plus, per labelled position, its label, CV group and hover text.

    ``positions[k] = (input index, token index in the model's sequence)``: the k-th labelled
    position is token ``positions[k, 1]`` of input ``positions[k, 0]``, counted in the sequence
    the model sees (special and prefix tokens included, padding after the text). ``labels[k]``
    indexes ``label_names``; ``groups[k]`` keeps positions that must not be split between
    training and held-out folds together (one image, one word); ``colourings`` are alternative
    categorical annotations of the same positions for the maps.

    Two sentences, with the category of one word each, on a tokenizer that adds a [CLS] token
    (so the words "dog" and "red" are token 2 of their input)::

        batch = model.encode_texts(["a dog barked", "a red car"])
        LabelledPositions(
            inputs=batch,
            positions=np.array([[0, 2], [1, 2]]),  # (input, token): "dog", then "red"
            labels=np.array([0, 1]),
            label_names=("animal", "colour"),
            groups=np.array([0, 1]),  # one group per word
            hover=np.array(["a [dog] barked", "a [red] car"]),
        )

    ``atlas.run(model, config, data=positions)`` then probes those positions. For a file of
    labelled text, ``dataset=csv`` or ``dataset=jsonl`` builds this for you (``text_positions``).
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


def text_positions(
    model: LoadedModel, data: LabelledTexts, n: int, *, seed: int = 0
) -> LabelledPositions:
    """A user's labelled texts (at most ``n``, a seeded random choice when there are more):
    a sentence label is read at the text's last token, the only one that has read all of it in
    a causal model; a word label at the word's last token. CV groups are the file's ``group``
    column where it has one, else texts for sentence labels and word forms for word labels (so
    the probe is scored on words it has not seen)."""
    if model.is_vision:
        raise DataError(f"labelled text needs a text model; {model.spec} reads images")
    items = data.items
    if len(items) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
        items = [items[i] for i in keep]
    texts = [item.text for item in items]
    batch = model.encode_texts(texts, max_length=model.context_length)
    mask = batch["attention_mask"].numpy().astype(bool)
    offsets = _offsets(model, texts, batch) if data.kind == "word" else None
    rows, tokens, labels, hover, words, given = [], [], [], [], [], []
    for i, item in enumerate(items):
        for start, end, label, group in item.spans:
            if offsets is None:
                inside = np.nonzero(mask[i])[0]
            else:
                inside = np.nonzero(
                    (offsets[i, :, 0] < end) & (offsets[i, :, 1] > start) & mask[i]
                )[0]
            if not len(inside):  # cut off by the model's context length
                continue
            rows.append(i)
            tokens.append(int(inside[-1]))
            labels.append(label)
            given.append(group)
            words.append(item.text[start:end])
            hover.append(_clip(item.text) if offsets is None else _mark(item.text, start, end))
    if not rows:
        raise DataError(
            f"none of the labelled {'words' if offsets is not None else 'texts'} of "
            f"{data.source} fit in {model.spec}'s context"
        )
    names = tuple(dict.fromkeys(labels))
    colourings: dict[str, np.ndarray] = {}
    if offsets is not None:
        colourings["word"] = np.array(words)
    if any(given):
        keys = given
        colourings["group"] = np.array(given)
    else:
        keys = [str(r) for r in rows] if offsets is None else [w.lower() for w in words]
    codes = {key: k for k, key in enumerate(dict.fromkeys(keys))}
    groups = np.array([codes[key] for key in keys])
    return LabelledPositions(
        inputs=batch,
        positions=np.stack([np.array(rows), np.array(tokens)], axis=1),
        labels=np.array([names.index(label) for label in labels]),
        label_names=names,
        groups=groups,
        hover=np.array(hover),
        label_title=f"{data.kind} label",
        colourings=colourings,
    )


def _offsets(model: LoadedModel, texts: list[str], batch: Mapping[str, torch.Tensor]) -> np.ndarray:
    """(texts, tokens, 2) character span of every token, aligned with ``batch``."""
    try:
        enc = model.processor(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=model.context_length is not None,
            max_length=model.context_length,
            return_offsets_mapping=True,
        )
    except NotImplementedError:
        raise DataError(
            f"word labels need character offsets, which {model.spec}'s tokenizer does not give "
            "(it is not a fast tokenizer); label whole texts instead (columns text,label)"
        ) from None
    if not torch.equal(enc["input_ids"], batch["input_ids"]):
        raise DataError(f"{model.spec}'s tokenizer gave two tokenisations of the same texts")
    return enc["offset_mapping"].numpy()


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mark(text: str, start: int, end: int, context: int = 70) -> str:
    """The text around a labelled word, the word in brackets."""
    before = text[max(0, start - context) : start]
    after = text[end : end + context]
    return f"{'…' if start > context else ''}{before}[{text[start:end]}]{after}" + (
        "…" if end + context < len(text) else ""
    )


def default_dataset(
    model: LoadedModel, name: str, n: int, seed: int, data_path: str = ""
) -> LabelledPositions:
    if name in TEXT_FORMATS:
        return text_positions(model, read_labelled_text(data_path, name), n, seed=seed)
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
    raise DataError(
        f"unknown dataset {name!r}; choose auto, scenes, words, csv, jsonl, imagefolder, "
        "ade20k or coco"
    )

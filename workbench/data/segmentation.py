"""Real instance-segmentation data a user has on disk: ADE20K and COCO-style annotations.

Nothing is downloaded: point the loaders at the folders you have. Every image goes through the
model's own preprocessing (``Preprocessing.of_model``: its processor's resize and centre crop;
an int ``size`` means shorter side to ``size``, centre crop, bicubic); its masks go through
exactly the same resize (nearest neighbour, so ids are never blended) and crop, so they stay
aligned with the model's patches. Ids follow one convention for every source:

- ``instance_ids``: 0 = background / unlabelled, 1..k = object instances of that image,
  -1 = ignore (COCO crowd regions): patches there are never used as examples;
- ``class_ids``: 0 = background / unlabelled, otherwise the dataset's category id.

``workbench.data.scenes.patch_labels(instance_ids, patch_size, background=-1)`` then gives one id
per patch (its block's most common id; ambiguous patches become -1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.data.images import Preprocessing, read_rgb, resize_nearest
from workbench.errors import DataError

__all__ = [
    "IGNORE",
    "SegmentationSet",
    "decode_segmentation",
    "load_ade20k",
    "load_coco",
    "prepare",
    "resize_nearest",
    "rle_counts_from_string",
]

IGNORE = -1
"""Instance id of regions that must not be used (COCO crowds)."""


@dataclass(frozen=True, eq=False)
class SegmentationSet:
    """Images with aligned instance and class masks, in the layout of ``scenes.Scenes``."""

    images: np.ndarray  # uint8 (n, size, size, 3)
    instance_ids: np.ndarray  # int32 (n, size, size); 0 background, 1..k instances, -1 ignore
    class_ids: np.ndarray  # int32 (n, size, size); 0 background, else the dataset's category
    class_names: tuple[str, ...]  # class_names[c] names category c ("" where unknown)
    sources: tuple[str, ...]  # the image file each row came from

    def __len__(self) -> int:
        return int(self.images.shape[0])


# -- geometry ----------------------------------------------------------------------------------
def prepare(
    image: np.ndarray, masks: Sequence[np.ndarray], size: int | Preprocessing
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize (the image with its filter, masks nearest) and centre-crop an image and its masks
    alike: with the model's own ``Preprocessing``, or an int for shorter side to ``size`` and a
    ``size`` x ``size`` centre crop (bicubic)."""
    prep = size if isinstance(size, Preprocessing) else Preprocessing.square(size)
    return prep.apply(image, masks)


# -- ADE20K ------------------------------------------------------------------------------------
def load_ade20k(
    root: str | Path, *, size: int | Preprocessing, split: str = "validation", n: int | None = None
) -> SegmentationSet:
    """ADE20K instances from either folder layout the dataset ships in.

    - the full dataset (``ADE20K_2021_17_01``): ``images/ADE/<split>/**/NAME.jpg`` with
      ``NAME_seg.png`` beside it; class = R / 10 * 256 + G, instances = distinct B values;
    - the challenge release (``ADEChallengeData2016``) with its instance annotations:
      ``images/<split>/NAME.jpg`` and ``annotations_instance/<split>/NAME.png``; class = R,
      instance = G.

    ``split`` is ``training`` or ``validation``; the first ``n`` images in sorted order are used.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"ADE20K folder {root} does not exist; pass the dataset's root folder")
    if split not in ("training", "validation"):
        raise DataError(f"split must be 'training' or 'validation'; got {split!r}")
    challenge = root / "annotations_instance" / split
    if challenge.is_dir():
        pairs = [
            (img, challenge / f"{img.stem}.png")
            for img in sorted((root / "images" / split).glob("*.jpg"))
            if (challenge / f"{img.stem}.png").is_file()
        ]
        decode = _decode_ade_challenge
    else:
        base = root / "images" / "ADE" / split
        if not base.is_dir():
            base = root / split if (root / split).is_dir() else root
        pairs = [
            (img, img.with_name(f"{img.stem}_seg.png"))
            for img in sorted(base.rglob("*.jpg"))
            if img.with_name(f"{img.stem}_seg.png").is_file()
        ]
        decode = _decode_ade_full
    if not pairs:
        raise DataError(
            f"found no ADE20K images with instance masks under {root}. Expected either "
            f"images/ADE/{split}/**/NAME.jpg with NAME_seg.png beside it (ADE20K_2021_17_01), "
            f"or images/{split}/NAME.jpg with annotations_instance/{split}/NAME.png "
            "(ADEChallengeData2016 plus its instance annotations)"
        )
    pairs = pairs[:n] if n is not None else pairs
    images, instances, classes = [], [], []
    for image_path, mask_path in pairs:
        image = read_rgb(image_path)
        inst, cls = decode(read_rgb(mask_path))
        image, (inst, cls) = prepare(image, [inst, cls], size)
        images.append(image)
        instances.append(inst)
        classes.append(cls)
    max_class = int(max(c.max() for c in classes))
    names = ("background", *(f"class {c}" for c in range(1, max_class + 1)))
    return SegmentationSet(
        images=np.stack(images),
        instance_ids=np.stack(instances).astype(np.int32),
        class_ids=np.stack(classes).astype(np.int32),
        class_names=names,
        sources=tuple(str(p) for p, _ in pairs),
    )


def _decode_ade_full(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ADE20K full-release ``_seg.png``: class from R and G, one instance per distinct B > 0."""
    r, g, b = (seg[..., k].astype(np.int32) for k in range(3))
    cls = r // 10 * 256 + g
    values, inverse = np.unique(b, return_inverse=True)
    ranks = inverse.reshape(b.shape) + (0 if values[0] == 0 else 1)  # B == 0 stays 0
    inst = np.where(b == 0, 0, ranks)
    inst[cls == 0] = 0
    return inst.astype(np.int32), cls.astype(np.int32)


def _decode_ade_challenge(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ADEChallengeData2016 instance png: class in R, instance id in G (0 = void)."""
    cls = seg[..., 0].astype(np.int32)
    g = seg[..., 1].astype(np.int32)
    keys = np.where((cls > 0) & (g > 0), g * 256 + cls, 0)
    values, inverse = np.unique(keys, return_inverse=True)
    inst = inverse.reshape(g.shape) + (0 if values[0] == 0 else 1)  # objects numbered from 1
    inst[keys == 0] = 0
    return inst.astype(np.int32), cls


# -- COCO --------------------------------------------------------------------------------------
def load_coco(
    images_dir: str | Path,
    annotations: str | Path,
    *,
    size: int | Preprocessing,
    n: int | None = None,
) -> SegmentationSet:
    """Instances from a COCO-style ``instances_*.json`` (polygons or RLE) and its image folder.

    Objects are painted largest first, so a smaller object in front of a larger one stays
    visible; crowd regions (``iscrowd``) get instance id -1 (ignored). Images without any
    annotation are skipped; the first ``n`` images by id are used.
    """
    images_dir = Path(images_dir).expanduser()
    annotations = Path(annotations).expanduser()
    if not annotations.is_file():
        raise DataError(f"COCO annotation file {annotations} does not exist")
    if not images_dir.is_dir():
        raise DataError(f"COCO image folder {images_dir} does not exist")
    try:
        data = json.loads(annotations.read_text())
        entries = sorted(data["images"], key=lambda e: e["id"])
        categories = data.get("categories", [])
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise DataError(
            f"{annotations} is not a COCO instances file (needs images, annotations): {err}"
        ) from None
    images, instances, classes, sources = [], [], [], []
    for entry in entries:
        anns = by_image.get(entry["id"])
        if not anns:
            continue
        path = images_dir / entry["file_name"]
        if not path.is_file():
            raise DataError(f"{path} is listed in {annotations.name} but missing on disk")
        image = read_rgb(path)
        h, w = image.shape[:2]
        inst = np.zeros((h, w), np.int32)
        cls = np.zeros((h, w), np.int32)
        k = 0
        for ann in sorted(anns, key=lambda a: -float(a.get("area", 0.0))):
            mask = decode_segmentation(ann["segmentation"], h, w)
            if ann.get("iscrowd"):
                inst[mask] = IGNORE
            else:
                k += 1
                inst[mask] = k
            cls[mask] = int(ann["category_id"])
        image, (inst, cls) = prepare(image, [inst, cls], size)
        images.append(image)
        instances.append(inst)
        classes.append(cls)
        sources.append(str(path))
        if n is not None and len(images) >= n:
            break
    if not images:
        raise DataError(f"{annotations} has no annotated images")
    max_id = max([int(c["id"]) for c in categories] + [int(c.max()) for c in classes])
    names = ["background", *[""] * max_id]
    for c in categories:
        names[int(c["id"])] = str(c.get("name", ""))
    return SegmentationSet(
        images=np.stack(images),
        instance_ids=np.stack(instances),
        class_ids=np.stack(classes),
        class_names=tuple(names),
        sources=tuple(sources),
    )


def decode_segmentation(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> bool mask."""
    if isinstance(segmentation, list):
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if len(polygon) >= 6:
                draw.polygon([float(v) for v in polygon], outline=1, fill=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        h, w = segmentation.get("size", (height, width))
        counts = segmentation["counts"]
        if isinstance(counts, str | bytes):
            counts = rle_counts_from_string(counts)
        flat = np.zeros(int(h) * int(w), dtype=bool)
        position, value = 0, False
        for run in counts:
            if value:
                flat[position : position + int(run)] = True
            position += int(run)
            value = not value
        return flat.reshape((int(w), int(h))).T  # COCO runs are column-major
    raise DataError(f"unknown COCO segmentation format: {type(segmentation).__name__}")


def rle_counts_from_string(counts: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (6-bit chunks, deltas after the second run)."""
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(counts[p]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            p += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs

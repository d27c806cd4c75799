"""A user's own images: the model's own preprocessing, and folders of images per class.

``Preprocessing.of_model(model)`` reads the model folder's ``preprocessor_config.json`` (the
settings its Hugging Face image processor uses) and applies the same resize and centre crop to
an image and, with nearest-neighbour sampling so ids are never blended, to its masks. Pixel
normalisation is left to ``LoadedModel.encode_images``, which uses the same file's mean and std.

``load_image_folder`` reads the ImageFolder layout (``ROOT/CLASS/IMAGE.jpg``): the folder names
are the classes. An image may carry an instance mask ``IMAGE_mask.png`` beside it (0 =
background, k > 0 = instance k, every instance of the folder's class), which binding needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MASK_SUFFIX = "_mask.png"
_DEFAULT_RESAMPLE = {  # what each Hugging Face processor uses when its config does not say
    "ViTImageProcessor": 2,  # bilinear
    "BitImageProcessor": 3,  # bicubic
    "CLIPImageProcessor": 3,
}
BICUBIC = 3


@dataclass(frozen=True)
class Preprocessing:
    """Resize (to ``resize`` exactly, or the shorter side to ``shortest_edge``), then crop the
    centre ``crop``; ``resample`` is the PIL filter for images (masks: nearest)."""

    resize: tuple[int, int] | None = None
    shortest_edge: int | None = None
    crop: tuple[int, int] | None = None
    resample: int = BICUBIC

    @classmethod
    def square(cls, size: int) -> Preprocessing:
        """Shorter side to ``size``, centre crop ``size`` x ``size``, bicubic."""
        return cls(shortest_edge=size, crop=(size, size))

    @classmethod
    def from_config(cls, config: dict[str, Any], image_size: int) -> Preprocessing:
        """From a ``preprocessor_config.json`` dict, as its Hugging Face processor reads it."""
        kind = str(config.get("image_processor_type", ""))
        resample = int(config.get("resample", _DEFAULT_RESAMPLE.get(kind, BICUBIC)))
        resize, shortest = None, None
        size = config.get("size")
        if config.get("do_resize", True) and size is not None:
            if isinstance(size, int):
                resize = (size, size)
            elif "height" in size and "width" in size:
                resize = (int(size["height"]), int(size["width"]))
            elif "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
        crop = None
        if config.get("do_center_crop"):
            c = config.get("crop_size", image_size)
            crop = (c, c) if isinstance(c, int) else (int(c["height"]), int(c["width"]))
        if resize is None and shortest is None and crop is None:
            resize = (image_size, image_size)
        return cls(resize=resize, shortest_edge=shortest, crop=crop, resample=resample)

    @classmethod
    def of_model(cls, model: Any) -> Preprocessing:
        """The model's own: its folder's ``preprocessor_config.json``, else a square resize."""
        if not model.is_vision:
            raise DataError(f"{model.spec} is a {model.family} model; it takes text, not images")
        size = int(model.image_size)
        source = getattr(model, "source", None)
        path = Path(source) / "preprocessor_config.json" if source else None
        if path is not None and path.is_file():
            prep = cls.from_config(json.loads(path.read_text()), size)
        else:
            prep = cls.square(size)
        if prep.output_size(size, size) != (size, size):
            raise DataError(
                f"{path} gives {prep.output_size(size, size)} images but {model.spec} takes "
                f"{size}x{size}; fix the preprocessor config"
            )
        return prep

    def describe(self) -> dict[str, Any]:
        """A JSON-able record for manifests and provenance."""
        return {
            "resize": list(self.resize) if self.resize else None,
            "shortest_edge": self.shortest_edge,
            "crop": list(self.crop) if self.crop else None,
            "resample": self.resample,
        }

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step (as Hugging Face: the longer side truncated)."""
        if self.resize is not None:
            return self.resize
        if self.shortest_edge is None:
            return height, width
        short, long = (height, width) if height <= width else (width, height)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if height <= width else (new_long, self.shortest_edge)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.crop or self.resized_shape(height, width)

    def apply(
        self, image: np.ndarray, masks: Sequence[np.ndarray] = ()
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The image resized and cropped, and each mask through the same geometry (nearest)."""
        from PIL import Image

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"an image must be (H, W, 3) RGB; got shape {image.shape}")
        h, w = image.shape[:2]
        for m in masks:
            if m.shape[:2] != (h, w):
                raise DataError(
                    f"a mask of shape {m.shape[:2]} does not match its image of shape {(h, w)}; "
                    "masks must be at the image's own resolution"
                )
        new_h, new_w = self.resized_shape(h, w)
        out = image.astype(np.uint8)
        if (new_h, new_w) != (h, w):
            resized = Image.fromarray(out).resize((new_w, new_h), Image.Resampling(self.resample))
            out = np.asarray(resized)
        out_masks = [resize_nearest(m, new_h, new_w) for m in masks]
        if self.crop is not None:
            ch, cw = self.crop
            if ch > new_h or cw > new_w:
                raise DataError(
                    f"an image of {h}x{w} resizes to {new_h}x{new_w}, smaller than the "
                    f"{ch}x{cw} crop; the model's processor would pad it, use larger images"
                )
            top, left = (new_h - ch) // 2, (new_w - cw) // 2
            out = out[top : top + ch, left : left + cw]
            out_masks = [m[top : top + ch, left : left + cw] for m in out_masks]
        return np.ascontiguousarray(out), [np.ascontiguousarray(m) for m in out_masks]


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize with pixel-centre alignment (as PIL and torch "nearest-exact").

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * in / out)``, so ids are copied,
    never interpolated.
    """
    h, w = mask.shape[:2]
    if (h, w) == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_ids(path: Path) -> np.ndarray:
    """An id mask: a single-channel PNG's values (8 or 16 bit), as int32."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        raise DataError(f"{path} must be a single-channel id mask (mode L or I;16), not colour")
    return arr.astype(np.int32)


# -- ImageFolder -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageFolderSet:
    """Images of an ImageFolder tree at the model's input size, with per-image class labels.

    ``instance_ids`` / ``class_ids`` are filled when every image has a ``_mask.png`` (else
    None): the layout of ``segmentation.SegmentationSet``, so binding reads it the same way.
    """

    images: np.ndarray  # uint8 (n, H, W, 3)
    labels: np.ndarray  # int64 (n,): index into class_names[1:]
    class_names: tuple[str, ...]  # ("background", class folders in sorted order)
    sources: tuple[str, ...]
    instance_ids: np.ndarray | None = None
    class_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def image_folder_files(root: Path) -> list[tuple[Path, int]]:
    """(image, class index) in a deterministic order that alternates classes, so the first n
    images cover every class as evenly as they can."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [
        sorted(
            f
            for f in folder.rglob("*")
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.endswith(MASK_SUFFIX)
        )
        for folder in classes
    ]
    order = []
    for k in range(max((len(f) for f in per_class), default=0)):
        order += [(files[k], c) for c, files in enumerate(per_class) if k < len(files)]
    return order


def load_image_folder(
    root: str | Path, preprocessing: Preprocessing, *, n: int | None = None
) -> ImageFolderSet:
    """Images of ``ROOT/CLASS/*.jpg`` (any depth below the class folder), classes alternating;
    masks ``NAME_mask.png`` beside the images are read when every image has one."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; pass the folder holding one sub-folder per class"
        )
    files = image_folder_files(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2 or not files:
        raise DataError(
            f"{root} needs the ImageFolder layout: one sub-folder per class (at least two) "
            f"holding images ({', '.join(IMAGE_SUFFIXES)}); found {len(classes)} class folders "
            f"and {len(files)} images"
        )
    files = files[:n] if n is not None else files
    masks = [f.with_name(f.stem + MASK_SUFFIX) for f, _ in files]
    with_masks = all(m.is_file() for m in masks)
    images, instances, class_ids = [], [], []
    for (path, label), mask_path in zip(files, masks, strict=True):
        if with_masks:
            inst = read_ids(mask_path)
            image, (inst,) = preprocessing.apply(read_rgb(path), [inst])
            instances.append(inst)
            class_ids.append(np.where(inst > 0, label + 1, 0).astype(np.int32))
        else:
            image, _ = preprocessing.apply(read_rgb(path))
        images.append(image)
    return ImageFolderSet(
        images=np.stack(images),
        labels=np.array([label for _, label in files], dtype=np.int64),
        class_names=("background", *classes),
        sources=tuple(str(p) for p, _ in files),
        instance_ids=np.stack(instances) if with_masks else None,
        class_ids=np.stack(class_ids) if with_masks else None,
    )


# -- one entry for every image dataset ---------------------------------------------------------
IMAGE_DATASETS = ("scenes", "imagefolder", "ade20k", "coco")


def describe_images(
    model: Any, dataset: str, *, path: str = "", annotations: str = "", seed: int = 0
) -> tuple[str, dict[str, Any]]:
    """A name for an image dataset and how its images were preprocessed, for store manifests:
    the CLI's ``store build`` and a probe's ``store=DIR`` describe the same data alike."""
    if dataset == "scenes":
        return f"binding scenes (seed {seed})", {"rendered_at": int(model.image_size)}
    where = path + (f" + {annotations}" if annotations else "")
    return f"{dataset} {where}", Preprocessing.of_model(model).describe()


def load_images(
    model: Any,
    dataset: str,
    *,
    path: str = "",
    annotations: str = "",
    split: str = "validation",
    n: int | None = None,
    seed: int = 0,
) -> Any:
    """Images with masks for ``model``: the binding scenes rendered at the model's size
    (``scenes``), or your files through the model's own preprocessing."""
    from workbench.data.scenes import make_binding_scenes
    from workbench.data.segmentation import load_ade20k, load_coco

    if dataset not in IMAGE_DATASETS:
        raise DataError(f"unknown image dataset {dataset!r}; choose {', '.join(IMAGE_DATASETS)}")
    if not model.is_vision:
        raise DataError(f"{model.spec} is a {model.family} model; it takes text, not images")
    if dataset == "scenes":
        return make_binding_scenes(n or 160, size=int(model.image_size), seed=seed)
    if not path:
        raise DataError(f"dataset {dataset} needs the path of your data folder")
    prep = Preprocessing.of_model(model)
    if dataset == "imagefolder":
        return load_image_folder(path, prep, n=n)
    if dataset == "ade20k":
        return load_ade20k(path, size=prep, split=split, n=n)
    if not annotations:
        raise DataError("dataset coco needs the instances_*.json annotation file")
    return load_coco(path, annotations, size=prep, n=n)

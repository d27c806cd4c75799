"""Deterministic synthetic scenes with pixel-exact ground truth.

Each image holds a few shapes on a noisy, per-image background. Colour and texture are drawn
independently of the shape class, so a probe that recovers the class from a patch must have
learned shape, not colour. Later objects are drawn over earlier ones, and the masks record what is
*visible*. Image ``i`` is generated from ``np.random.default_rng([seed, i])``, so it is
bit-identical whatever ``n`` is, and two calls with the same arguments give identical arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import DataError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
"""Shape classes; class id ``k`` (1-based) is ``SHAPES[k - 1]``, class id 0 is background."""

TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker")

_MAX_TRIES = 12  # placements tried per object before it is skipped
_MIN_PIXELS = 12  # every object keeps at least this many visible pixels
_MIN_COLOUR_DISTANCE = 90.0  # RGB distance between an object's colour and the background mean
_OUTLINE = 15.0  # grey level of object contours
_BG_LOW = 70.0  # darkest background channel mean, so contours stay visible


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: what it is, where, how it looks, and how much of it is visible."""

    instance_id: int
    class_id: int
    class_name: str
    center: tuple[float, float]  # (row, col) in pixels
    radius: float
    angle: float  # radians
    colour: tuple[int, int, int]
    texture: str
    area: int  # pixels the shape covers inside the image before any occlusion
    visible: int  # pixels still visible in the final image
    # Set by ``make_binding_scenes`` only (instance ids; 0 = none):
    duplicate_of: int = 0  # an identical copy (shape, size, angle, colour, texture) of this one
    touching: int = 0  # placed so that it touches this earlier object
    occludes: int = 0  # a bar laid across this earlier object, cutting it into parts
    parts: int = 1  # visible connected pieces (4-connectivity) in the final image


@dataclass(frozen=True, eq=False)
class Scenes:
    """A batch of scenes: images plus instance and class maps at pixel resolution."""

    images: np.ndarray  # uint8 (n, size, size, 3)
    instance_ids: np.ndarray  # int16 (n, size, size); 0 = background, 1..k per image
    class_ids: np.ndarray  # int16 (n, size, size); 0 = background, 1..C = index in class_names
    class_names: tuple[str, ...]  # class_names[0] == "background"
    objects: tuple[tuple[SceneObject, ...], ...]  # per image, in drawing order (= instance id)
    seed: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of shape classes, not counting background."""
        return len(self.class_names) - 1

    def present(self) -> np.ndarray:
        """(n, C) bool: which shape classes are visible in each image (image-level labels)."""
        flat = self.class_ids.reshape(len(self), -1)
        return np.stack([(flat == c).any(axis=1) for c in range(1, self.n_classes + 1)], axis=1)


def make_scenes(
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    n_objects: tuple[int, int] = (2, 4),
    radius: tuple[float, float] = (0.1, 0.2),
    classes: Sequence[str] = SHAPES,
    textures: Sequence[str] = TEXTURES,
    min_visible: float = 0.4,
    noise: float = 6.0,
    outline: int = 1,
    align: int = 1,
    rotate: bool = True,
) -> Scenes:
    """Render ``n`` scenes of ``size`` x ``size`` pixels with their ground-truth masks.

    ``n_objects`` is the inclusive range of objects attempted per image; ``radius`` is the range
    of object radii as a fraction of ``size``. An object is re-placed (up to a few times, then
    skipped) if it would leave an earlier object with less than ``min_visible`` of its area, so
    every instance in the masks is clearly visible. ``noise`` is the std of per-pixel grain.
    ``outline`` is the width in pixels of a dark contour drawn inside every object (0 for none):
    like a cartoon's ink line it marks the object's edge the same way whatever its colour.
    """
    _check_args(n, size, seed, n_objects, radius, classes, textures, min_visible, noise, outline)
    classes = tuple(classes)
    textures = tuple(textures)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    instance_ids = np.zeros((n, size, size), dtype=np.int16)
    class_ids = np.zeros((n, size, size), dtype=np.int16)
    objects = []
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        image, inst, cls, objs = _render(
            rng,
            size,
            rows,
            cols,
            n_objects,
            radius,
            classes,
            textures,
            min_visible,
            noise,
            outline,
            align,
            rotate,
        )
        images[i], instance_ids[i], class_ids[i] = image, inst, cls
        objects.append(objs)
    return Scenes(
        images=images,
        instance_ids=instance_ids,
        class_ids=class_ids,
        class_names=("background", *classes),
        objects=tuple(objects),
        seed=seed,
    )


def patch_labels(
    mask: np.ndarray,
    patch_size: int,
    *,
    background: int = 0,
    min_fraction: float = 0.5,
    stride: int | None = None,
) -> np.ndarray:
    """One id per patch, in the row-major order a ViT flattens patches: (n, H//p * W//p).

    ``stride`` below ``patch_size`` labels overlapping patches (Vim's stride-8 grids): patch
    (r, c) covers pixels [r*stride, r*stride + p) in each direction, and the grid has
    (H - p) // stride + 1 patches per side.

    Each patch takes the most common id among its pixels (background included). Ties go to the
    smallest id, so a patch split 50/50 between background 0 and an object stays background. If
    the winning id covers less than ``min_fraction`` of the patch, the patch is ``background``:
    it is ambiguous and should not be used as an example of any one object.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise DataError(f"mask must have shape (n, H, W) or (H, W); got {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise DataError(f"mask must hold integer ids; got dtype {mask.dtype} (cast with .astype)")
    if not isinstance(patch_size, int | np.integer) or patch_size < 1:
        raise DataError(f"patch_size must be a positive integer; got {patch_size!r}")
    if not 0.0 <= min_fraction <= 1.0:
        raise DataError(f"min_fraction must be in [0, 1]; got {min_fraction}")
    n, h, w = mask.shape
    p = patch_size
    step = stride or p
    if step == p and (h % p or w % p):
        raise DataError(
            f"mask is {h}x{w}, not divisible by patch_size {p}; crop or resize the masks to a "
            f"multiple of {p}"
        )
    if (h - p) % step or (w - p) % step or step > p:
        raise DataError(
            f"mask is {h}x{w}, not tiled by patches of {p} at stride {step}; crop or resize the "
            f"masks so that (side - {p}) is a multiple of {step}"
        )
    gh, gw = (h - p) // step + 1, (w - p) // step + 1
    if step == p:
        blocks = mask.reshape(n, gh, p, gw, p).transpose(0, 1, 3, 2, 4).reshape(n * gh * gw, p * p)
    else:
        windows = np.lib.stride_tricks.sliding_window_view(mask, (p, p), axis=(1, 2))
        blocks = windows[:, ::step, ::step].reshape(n * gh * gw, p * p)
    values, codes = np.unique(blocks, return_inverse=True)  # values sorted: ties -> smallest id
    codes = codes.reshape(blocks.shape)
    k = len(values)
    offsets = np.arange(blocks.shape[0])[:, None] * k
    counts = np.bincount((codes + offsets).ravel(), minlength=blocks.shape[0] * k)
    counts = counts.reshape(blocks.shape[0], k)
    winner = counts.argmax(axis=1)
    labels = values[winner].astype(mask.dtype)
    share = counts[np.arange(len(winner)), winner] / (p * p)
    labels[share < min_fraction] = background
    return labels.reshape(n, gh * gw)


# -- binding scenes ----------------------------------------------------------------------------
BINDING_SHAPES: tuple[str, ...] = (*SHAPES, "bar")
"""Classes of ``make_binding_scenes``: the scene shapes plus a long thin bar (class id 6)."""

_BINDING_STREAM = 1  # image i of make_binding_scenes draws from default_rng([seed, i, 1])
_BAR_HALF_WIDTH = 0.16  # a bar's half-width as a fraction of its half-length
_BINDING_MIN_PIXELS = 48  # a binding-scene object keeps at least this many visible pixels


@dataclass(frozen=True)
class _Look:
    """Everything that decides how an object looks, so that a duplicate can copy it exactly."""

    class_id: int
    radius: float  # half-length for bars
    angle: float
    colour: tuple[float, float, float]
    texture: str
    period: float  # stripes
    theta: float  # stripes
    cell: int  # checker


def make_binding_scenes(
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    n_objects: tuple[int, int] = (2, 4),
    radius: tuple[float, float] = (0.24, 0.4),
    bar_length: tuple[float, float] = (0.6, 0.95),
    classes: Sequence[str] = BINDING_SHAPES,
    textures: Sequence[str] = TEXTURES,
    duplicate: float = 0.4,
    touching: float = 0.4,
    occluder: float = 0.2,
    min_visible: float = 0.3,
    noise: float = 6.0,
    outline: int = 1,
) -> Scenes:
    """Scenes built to separate object binding from its confounds, with pixel-exact masks.

    In ordinary scenes, two patches of one object are nearly always close together and look
    alike, so position and colour alone predict "same object". Here objects are large (``radius``
    and ``bar_length`` are fractions of ``size``), so one object covers many patches and far-apart
    patches can belong to it; and each object after the first is, with these probabilities:

    - ``duplicate``: an identical copy of an earlier object (same shape, size, angle, colour and
      texture, the texture anchored to the object) elsewhere: a different instance that looks
      the same, whose patches only position and grouping can tell apart;
    - ``touching`` (independently): placed flush against an earlier object, so that patches of
      two different objects are neighbours;
    - ``occluder``: a bar laid across the middle of an earlier object, cutting it into separate
      visible parts that keep one instance id (needs ``"bar"`` in ``classes``).

    Bars (class ``"bar"``) are long and thin; rings span far-apart patches around a hole. Every
    object keeps at least ``min_visible`` of its area visible. ``SceneObject`` records
    ``duplicate_of``, ``touching``, ``occludes`` and the number of visible ``parts``. Image ``i``
    is generated from its own random stream, so it does not depend on ``n``.
    """
    # the checks shared with make_scenes (radius and classes are checked below)
    _check_args(n, size, seed, n_objects, (0.1, 0.1), SHAPES, textures, min_visible, noise, outline)
    classes = tuple(classes)
    unknown = [c for c in classes if c not in BINDING_SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise DataError(
            f"classes must be distinct names from {', '.join(BINDING_SHAPES)}; got {classes!r}"
        )
    for name, pair, top in (("radius", radius, 0.5), ("bar_length", bar_length, 1.0)):
        if len(pair) != 2 or not 0.0 < pair[0] <= pair[1] <= top:
            raise DataError(
                f"{name} must be (low, high) fractions of size with 0 < low <= high <= {top}; "
                f"got {pair!r}"
            )
    for name, p in (("duplicate", duplicate), ("touching", touching), ("occluder", occluder)):
        if not 0.0 <= p <= 1.0:
            raise DataError(f"{name} is a probability and must be in [0, 1]; got {p}")
    if duplicate + occluder > 1.0:
        raise DataError(
            f"duplicate + occluder must be at most 1 (they exclude each other); got "
            f"{duplicate} + {occluder}"
        )
    textures = tuple(textures)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    instance_ids = np.zeros((n, size, size), dtype=np.int16)
    class_ids = np.zeros((n, size, size), dtype=np.int16)
    objects = []
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    render = functools.partial(
        _render_binding,
        n_objects=n_objects,
        radius=radius,
        bar_length=bar_length,
        classes=classes,
        textures=textures,
        duplicate=duplicate,
        touching=touching,
        occluder=occluder,
        min_visible=min_visible,
        noise=noise,
        outline=outline,
    )
    for i in range(n):
        rng = np.random.default_rng([seed, i, _BINDING_STREAM])
        image, inst, cls, objs = render(rng, size, rows, cols)
        images[i], instance_ids[i], class_ids[i] = image, inst, cls
        objects.append(objs)
    return Scenes(
        images=images,
        instance_ids=instance_ids,
        class_ids=class_ids,
        class_names=("background", *classes),
        objects=tuple(objects),
        seed=seed,
    )


def _render_binding(
    rng: np.random.Generator,
    size: int,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    n_objects: tuple[int, int],
    radius: tuple[float, float],
    bar_length: tuple[float, float],
    classes: tuple[str, ...],
    textures: tuple[str, ...],
    duplicate: float,
    touching: float,
    occluder: float,
    min_visible: float,
    noise: float,
    outline: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[SceneObject, ...]]:
    canvas, bg_mean = _background(rng, size)
    inst = np.zeros((size, size), dtype=np.int16)
    cls = np.zeros((size, size), dtype=np.int16)
    placed: list[dict] = []
    looks: list[_Look] = []
    bar_id = classes.index("bar") + 1 if "bar" in classes else 0

    def fresh_look(class_id: int) -> _Look:
        if classes[class_id - 1] == "bar":
            r = float(rng.uniform(*bar_length) * size / 2)
        else:
            r = float(rng.uniform(*radius) * size)
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        red, green, blue = (float(c) for c in _object_colour(rng, bg_mean))
        return _Look(
            class_id=class_id,
            radius=r,
            angle=angle,
            colour=(red, green, blue),
            texture=textures[int(rng.integers(len(textures)))],
            period=float(rng.uniform(3.0, 6.0)),
            theta=float(rng.uniform(0.0, math.pi)),
            cell=int(rng.integers(2, 5)),
        )

    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        roll, touch_roll = float(rng.random()), float(rng.random())
        targets = [o for o in placed if o["class_id"] != bar_id]
        duplicate_of = touching_id = occludes = 0
        if bar_id and targets and roll < occluder:
            target = targets[int(rng.integers(len(targets)))]
            look = fresh_look(bar_id)
            half = max(look.radius, min(0.5 * size, 1.3 * target["radius"]))
            look = dataclasses.replace(look, radius=half)
            occludes = target["instance_id"]
        elif placed and roll < occluder + duplicate:
            source = placed[int(rng.integers(len(placed)))]
            look = looks[source["instance_id"] - 1]
            duplicate_of = source["instance_id"]
        else:
            look = fresh_look(int(rng.integers(1, len(classes) + 1)))
        anchor = None
        if placed and not occludes and touch_roll < touching:
            anchor = placed[int(rng.integers(len(placed)))]
            touching_id = anchor["instance_id"]
        name = classes[look.class_id - 1]
        for _try in range(_MAX_TRIES):
            if occludes:
                cy, cx = np.round(np.array(target["center"]) + rng.uniform(-2.0, 2.0, size=2))
                shape = _shape_mask(name, rows - cy, cols - cx, look.radius, look.angle)
            elif anchor is not None:
                found = _slide_until_touching(
                    rng, inst == anchor["instance_id"], anchor["center"], name, look, rows, cols
                )
                if found is None:
                    continue
                (cy, cx), shape = found
            else:
                reach = 0.7 * min(look.radius, 0.45 * size)
                cy, cx = np.round(rng.uniform(reach, size - reach, size=2))
                shape = _shape_mask(name, rows - cy, cols - cx, look.radius, look.angle)
            area = int(shape.sum())
            if area < _BINDING_MIN_PIXELS or not _keeps_others_visible(
                inst, shape, placed, min_visible, min_pixels=_BINDING_MIN_PIXELS
            ):
                continue
            instance_id = len(placed) + 1
            canvas[shape] = _anchored_texture(look, rows - cy, cols - cx)[shape]
            if outline:
                canvas[shape & ~_erode(shape, outline)] = _OUTLINE
            inst[shape] = instance_id
            cls[shape] = look.class_id
            looks.append(look)
            placed.append(
                dict(
                    instance_id=instance_id,
                    class_id=look.class_id,
                    class_name=name,
                    center=(float(cy), float(cx)),
                    radius=look.radius,
                    angle=look.angle,
                    colour=tuple(int(c) for c in look.colour),
                    texture=look.texture,
                    area=area,
                    duplicate_of=duplicate_of,
                    touching=touching_id,
                    occludes=occludes,
                )
            )
            break
    if noise > 0:
        canvas += rng.normal(0.0, noise, size=canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    visible = np.bincount(inst.ravel(), minlength=len(placed) + 1)
    objs = tuple(
        SceneObject(
            **o,
            visible=int(visible[o["instance_id"]]),
            parts=_count_parts(inst == o["instance_id"]),
        )
        for o in placed
    )
    return image, inst, cls, objs


def _slide_until_touching(
    rng: np.random.Generator,
    anchor_mask: np.ndarray,
    anchor_center: tuple[float, float],
    name: str,
    look: _Look,
    rows: np.ndarray,
    cols: np.ndarray,
) -> tuple[tuple[float, float], np.ndarray] | None:
    """Move a shape out from ``anchor_center`` in a random direction, one pixel at a time, to
    the first position where it no longer overlaps the anchor but touches it (4-neighbours)."""
    size = rows.shape[0]
    phi = float(rng.uniform(0.0, 2.0 * math.pi))
    step = np.array([math.sin(phi), math.cos(phi)])
    for t in range(1, 2 * size):
        cy, cx = np.round(np.array(anchor_center) + t * step)
        if not (0 <= cy < size and 0 <= cx < size):
            return None
        shape = _shape_mask(name, rows - cy, cols - cx, look.radius, look.angle)
        if not (shape & anchor_mask).any():
            return ((float(cy), float(cx)), shape) if (_dilate(shape) & anchor_mask).any() else None
    return None


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Binary dilation with a 3x3 cross (one step)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _count_parts(mask: np.ndarray) -> int:
    """Number of 4-connected components of ``mask``."""
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def _anchored_texture(look: _Look, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """The object's fill, with its pattern fixed to the object's centre so copies match."""
    colour = np.array(look.colour)
    fill = np.empty((*dy.shape, 3))
    fill[:] = colour
    if look.texture == "solid":
        return fill
    other = colour * 0.45 if colour.mean() > 110 else colour + (255.0 - colour) * 0.6
    if look.texture == "stripes":
        phase = (dy * math.cos(look.theta) + dx * math.sin(look.theta)) / look.period
        alt = (np.floor(phase) % 2).astype(bool)
    else:  # checker
        alt = ((np.floor(dy / look.cell) + np.floor(dx / look.cell)) % 2).astype(bool)
    fill[alt] = other
    return fill


# -- rendering ---------------------------------------------------------------------------------
def _render(
    rng: np.random.Generator,
    size: int,
    rows: np.ndarray,
    cols: np.ndarray,
    n_objects: tuple[int, int],
    radius: tuple[float, float],
    classes: tuple[str, ...],
    textures: tuple[str, ...],
    min_visible: float,
    noise: float,
    outline: int,
    align: int,
    rotate: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[SceneObject, ...]]:
    canvas, bg_mean = _background(rng, size)
    inst = np.zeros((size, size), dtype=np.int16)
    cls = np.zeros((size, size), dtype=np.int16)
    placed: list[dict] = []
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        class_id = int(rng.integers(1, len(classes) + 1))
        texture = textures[int(rng.integers(len(textures)))]
        colour = _object_colour(rng, bg_mean)
        for _try in range(_MAX_TRIES):
            r = float(rng.uniform(radius[0], radius[1]) * size)
            cy, cx = rng.uniform(0.7 * r, size - 0.7 * r, size=2)
            if align > 1:
                cy, cx = align * np.round(np.array([cy, cx]) / align)
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            if not rotate:
                angle = (math.pi / 2) * round(angle / (math.pi / 2))
            shape = _shape_mask(classes[class_id - 1], rows - cy, cols - cx, r, angle)
            area = int(shape.sum())
            if area < _MIN_PIXELS or not _keeps_others_visible(inst, shape, placed, min_visible):
                continue
            instance_id = len(placed) + 1
            canvas[shape] = _texture(rng, texture, colour, rows, cols)[shape]
            if outline:
                canvas[shape & ~_erode(shape, outline)] = _OUTLINE
            inst[shape] = instance_id
            cls[shape] = class_id
            placed.append(
                dict(
                    instance_id=instance_id,
                    class_id=class_id,
                    class_name=classes[class_id - 1],
                    center=(float(cy), float(cx)),
                    radius=r,
                    angle=angle,
                    colour=tuple(int(c) for c in colour),
                    texture=texture,
                    area=area,
                )
            )
            break
    if noise > 0:
        canvas += rng.normal(0.0, noise, size=canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    visible = np.bincount(inst.ravel(), minlength=len(placed) + 1)
    objs = tuple(SceneObject(**o, visible=int(visible[o["instance_id"]])) for o in placed)
    return image, inst, cls, objs


def _keeps_others_visible(
    inst: np.ndarray,
    shape: np.ndarray,
    placed: list[dict],
    min_visible: float,
    min_pixels: int = _MIN_PIXELS,
) -> bool:
    """Whether drawing ``shape`` on top leaves every earlier object enough visible pixels."""
    if not placed:
        return True
    covered = np.bincount(inst[shape], minlength=len(placed) + 1)
    before = np.bincount(inst.ravel(), minlength=len(placed) + 1)
    for o in placed:
        left = before[o["instance_id"]] - covered[o["instance_id"]]
        if left < max(min_pixels, min_visible * o["area"]):
            return False
    return True


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion with a 3x3 cross, ``steps`` times; pixels outside the image count as off."""
    out = mask.copy()
    for _ in range(steps):
        inner = out.copy()
        inner[1:] &= out[:-1]
        inner[:-1] &= out[1:]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        inner[0] = inner[-1] = False
        inner[:, 0] = inner[:, -1] = False
        out = inner
    return out


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random colour field: a per-image base colour plus low-frequency colour noise."""
    base = rng.uniform(_BG_LOW, 225.0, size=3)
    grid = int(rng.integers(3, 7))
    coarse = rng.normal(0.0, 22.0, size=(grid, grid, 3))
    t = np.linspace(0.0, grid - 1.0, size)
    i0 = np.minimum(np.floor(t).astype(int), grid - 2)
    f = (t - i0)[:, None]
    along_rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]  # (size, g, 3)
    field = along_rows[:, i0] * (1 - f[None]) + along_rows[:, i0 + 1] * f[None]
    return base + field, base


def _object_colour(rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    """A uniform random RGB colour (independent of class) that stands out from the background."""
    colour = rng.uniform(0.0, 255.0, size=3)
    for _ in range(20):
        if np.linalg.norm(colour - bg_mean) >= _MIN_COLOUR_DISTANCE:
            break
        colour = rng.uniform(0.0, 255.0, size=3)
    return np.rint(colour)


def _texture(
    rng: np.random.Generator, texture: str, colour: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """A full-canvas fill pattern in ``colour`` and a contrasting second tone."""
    fill = np.empty((*rows.shape, 3))
    fill[:] = colour
    if texture == "solid":
        return fill
    other = colour * 0.45 if colour.mean() > 110 else colour + (255.0 - colour) * 0.6
    if texture == "stripes":
        period = float(rng.uniform(3.0, 6.0))
        theta = float(rng.uniform(0.0, math.pi))
        phase = (rows * math.cos(theta) + cols * math.sin(theta)) / period
        alt = (np.floor(phase) % 2).astype(bool)
    else:  # checker
        cell = int(rng.integers(2, 5))
        alt = ((rows // cell + cols // cell) % 2).astype(bool)
    fill[alt] = other
    return fill


def _shape_mask(name: str, dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of shape ``name`` with radius ``r``, rotated by ``angle``, at offsets."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if name == "circle":
        return u * u + v * v <= r * r
    if name == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    if name == "cross":
        au, av, arm = np.abs(u), np.abs(v), 0.3 * r
        return ((au <= arm) & (av <= r)) | ((av <= arm) & (au <= r))
    if name == "bar":  # long and thin: half-length r
        return (np.abs(u) <= r) & (np.abs(v) <= _BAR_HALF_WIDTH * r)
    if name == "triangle":  # equilateral, circumradius 1.2 r: three half-planes at the inradius
        inner = 0.6 * r
        out = np.ones(u.shape, dtype=bool)
        for k in range(3):
            a = 2.0 * math.pi * k / 3.0
            out &= u * math.cos(a) + v * math.sin(a) <= inner
        return out
    raise DataError(f"unknown shape {name!r}; choose from {', '.join(BINDING_SHAPES)}")


def _check_args(
    n: int,
    size: int,
    seed: int,
    n_objects: tuple[int, int],
    radius: tuple[float, float],
    classes: Sequence[str],
    textures: Sequence[str],
    min_visible: float,
    noise: float,
    outline: int,
) -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"n must be a positive integer number of scenes; got {n!r}")
    if not isinstance(size, int | np.integer) or size < 16:
        raise DataError(f"size must be an integer of at least 16 pixels; got {size!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer; got {seed!r}")
    if (
        len(n_objects) != 2
        or not all(isinstance(k, int | np.integer) for k in n_objects)
        or not 1 <= n_objects[0] <= n_objects[1]
    ):
        raise DataError(f"n_objects must be (low, high) with 1 <= low <= high; got {n_objects!r}")
    if len(radius) != 2 or not 0.0 < radius[0] <= radius[1] <= 0.5:
        raise DataError(
            f"radius must be (low, high) fractions of size with 0 < low <= high <= 0.5; "
            f"got {radius!r}"
        )
    unknown = [c for c in classes if c not in SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise DataError(
            f"classes must be distinct names from {', '.join(SHAPES)}; got {tuple(classes)!r}"
        )
    bad = [t for t in textures if t not in TEXTURES]
    if not textures or bad:
        raise DataError(f"textures must be names from {', '.join(TEXTURES)}; got {textures!r}")
    if not 0.0 <= min_visible < 1.0:
        raise DataError(f"min_visible must be in [0, 1); got {min_visible}")
    if noise < 0:
        raise DataError(f"noise must be >= 0 (std of per-pixel grain); got {noise}")
    if not isinstance(outline, int | np.integer) or outline < 0:
        raise DataError(f"outline must be a width in pixels >= 0; got {outline!r}")

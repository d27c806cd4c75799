"""An image with a per-patch score overlay; clicking a patch selects it."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import traitlets
from PIL import Image

from workbench.errors import DataError
from workbench.widgets.traits import optional_floats

COLORSCALES = ("Inferno", "Viridis", "Turbo", "RdBu_r")


def png_data_url(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a ``data:`` URL the browser draws without any request."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class PatchPicker(anywidget.AnyWidget):
    """Show ``image`` with one score per patch; a click (or ``select(i)``) calls ``on_select(i)``.

    The caller decides what a selection means: it typically computes new scores for the chosen
    patch and hands them back through ``show``. Drawn by a few lines of canvas code, so it
    renders at once and offline.
    """

    _esm = Path(__file__).parent / "js" / "patch_picker.js"
    image_src = traitlets.Unicode("").tag(sync=True)
    grid = traitlets.List(traitlets.Int(), default_value=[1, 1]).tag(sync=True)
    scores = optional_floats()
    zmin = traitlets.Float(0.0).tag(sync=True)
    zmax = traitlets.Float(1.0).tag(sync=True)
    colorscale = traitlets.Unicode("Inferno").tag(sync=True)
    colorbar_title = traitlets.Unicode("").tag(sync=True)
    opacity = traitlets.Float(0.6).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    outline = traitlets.Bool(True).tag(sync=True)
    """Whether the selected patch is outlined: off while the overlay does not belong to it."""
    width = traitlets.Int(420).tag(sync=True)

    def __init__(
        self,
        image: np.ndarray,
        patch_size: int,
        *,
        on_select: Callable[[int], None] | None = None,
        title: str = "click a patch",
        width: int = 420,
    ) -> None:
        super().__init__(title=title, width=width)
        self.patch_size = patch_size
        self.on_select = on_select
        self._set_image(image)
        self.observe(self._selected_changed, names="selected")

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def select(self, index: int) -> None:
        """Select patch ``index`` (row-major), as a click on it does."""
        if not 0 <= index < self.n_patches:
            raise IndexError(f"patch {index} is outside 0..{self.n_patches - 1}")
        if index == self.selected:
            self._selected_changed({"new": index})
        self.selected = int(index)

    def show(
        self,
        scores: np.ndarray | None,
        *,
        image: np.ndarray | None = None,
        title: str = "",
        zmin: float | None = None,
        zmax: float | None = None,
        colorscale: str = "Inferno",
        colorbar_title: str = "",
    ) -> None:
        """Replace the overlay (and optionally the image)."""
        if colorscale not in COLORSCALES:
            raise DataError(f"colorscale must be one of {', '.join(COLORSCALES)}")
        if image is not None:
            self._set_image(image)
        with self.hold_sync():
            if scores is None:
                self.scores = None
            else:
                flat = np.asarray(scores, dtype=float).ravel()
                if flat.size != self.n_patches:
                    raise DataError(f"{flat.size} scores for a {self.grid[0]}x{self.grid[1]} grid")
                finite = flat[np.isfinite(flat)]
                lo = float(finite.min()) if zmin is None and finite.size else (zmin or 0.0)
                hi = float(finite.max()) if zmax is None and finite.size else (zmax or 1.0)
                self.zmin, self.zmax = lo, hi if hi > lo else lo + 1.0
                self.scores = [float(v) if math.isfinite(v) else lo for v in flat]
            self.colorscale = colorscale
            self.colorbar_title = colorbar_title
            self.title = title

    def overlay_scores(self) -> np.ndarray:
        """The scores currently drawn, as a (grid_h, grid_w) array (for tests and export)."""
        if self.scores is None:
            return np.zeros(tuple(self.grid))
        return np.asarray(self.scores, dtype=float).reshape(tuple(self.grid))

    def _set_image(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DataError(f"image must be (H, W, 3); got {image.shape}")
        h, w = image.shape[:2]
        if h % self.patch_size or w % self.patch_size:
            raise DataError(f"image {h}x{w} is not a whole number of {self.patch_size}-px patches")
        self.grid = [h // self.patch_size, w // self.patch_size]
        self.image_src = png_data_url(image)

    def _selected_changed(self, change: dict) -> None:
        if self.on_select is not None and change["new"] >= 0:
            self.on_select(int(change["new"]))

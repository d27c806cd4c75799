"""An image with a per-patch score overlay; clicking a patch selects it."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from workbench.figures import image_overlay


class PatchPicker(widgets.VBox):
    """Show ``image`` with a score per patch; a click (or ``select(i)``) calls ``on_select(i)``.

    The caller decides what a selection means: it typically computes new scores for the chosen
    patch and hands them back through ``show``.
    """

    def __init__(
        self,
        image: np.ndarray,
        patch_size: int,
        *,
        on_select: Callable[[int], None] | None = None,
        title: str = "click a patch",
        width: int = 420,
    ) -> None:
        self.image = np.asarray(image)
        self.patch_size = patch_size
        self.on_select = on_select
        self.selected: int | None = None
        self._width = width
        self.figure = go.FigureWidget(image_overlay(self.image, None, patch_size, width=width))
        self.figure.layout.title = title
        self._attach_click()
        super().__init__([self.figure])

    @property
    def n_patches(self) -> int:
        h, w = self.image.shape[:2]
        return (h // self.patch_size) * (w // self.patch_size)

    def select(self, index: int) -> None:
        """Select patch ``index`` (row-major), as a click on it would."""
        if not 0 <= index < self.n_patches:
            raise IndexError(f"patch {index} is outside 0..{self.n_patches - 1}")
        self.selected = int(index)
        if self.on_select is not None:
            self.on_select(self.selected)

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
        """Replace the overlay (and optionally the image) in place."""
        if image is not None:
            self.image = np.asarray(image)
        fresh = image_overlay(
            self.image,
            scores,
            self.patch_size,
            title=title,
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            selected=self.selected,
            colorbar_title=colorbar_title,
            width=self._width,
        )
        with self.figure.batch_update():
            self.figure.data[0].z = fresh.data[0].z
            heat = self.figure.data[1]
            for key in ("z", "zmin", "zmax", "opacity", "showscale", "colorscale", "colorbar"):
                setattr(heat, key, fresh.data[1][key])
            self.figure.layout.shapes = fresh.layout.shapes
            self.figure.layout.title = fresh.layout.title

    def overlay_scores(self) -> np.ndarray:
        """The scores currently drawn, as a (grid_h, grid_w) array (for tests and export)."""
        return np.asarray(self.figure.data[1].z, dtype=float)

    def _attach_click(self) -> None:
        def clicked(_trace, points, _state) -> None:
            if points.point_inds:
                point = points.point_inds[0]  # heatmaps report [row, col]
                gw = self.image.shape[1] // self.patch_size
                if isinstance(point, list | tuple):
                    self.select(int(point[0]) * gw + int(point[1]))
                else:
                    self.select(int(point))

        self.figure.data[1].on_click(clicked)

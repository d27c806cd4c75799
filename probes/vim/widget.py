"""An explorer over a vim result: pick a scene, layer and direction; click a patch to see what
it reads (its hidden-attention row) and how full its state is across layers."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from probes.vim import compute
from probes.vim.plots import DIRECTION_COLOURS, DIRECTION_NAMES, MAP_KINDS
from workbench.figures import new_figure
from workbench.models.vim import DIRECTIONS
from workbench.results import ProbeResult
from workbench.widgets import FigureView, PatchPicker

PATCH_ROW = "clicked patch"


class VimExplorer(widgets.VBox):
    """Scene, layer, direction and map controls over a clickable image, plus a state plot.

    Works from the ProbeResult alone. ``view`` is either one of the class token's maps (raw for
    the chosen layer, rollout, attribution) or ``"clicked patch"``: the hidden-attention row of
    the selected patch in the chosen layer and direction. A click (or ``picker.select(i)``)
    selects a patch and switches to that view.
    """

    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        a = result.arrays
        self.cls_index = int(result.metrics["cls_index"])
        n_maps, n_layers = a["attention"].shape[:2]
        kinds = [k for k in MAP_KINDS if f"{k}_map" in a]
        self.scene = widgets.Dropdown(
            options=[(f"scene {m}", m) for m in range(n_maps)], value=0, description="scene"
        )
        self.layer = widgets.IntSlider(
            value=n_layers - 1,
            min=0,
            max=n_layers - 1,
            description="layer",
            continuous_update=False,
        )
        self.direction = widgets.ToggleButtons(
            options=[("both", "both"), ("forward", "fwd"), ("backward", "bwd")],
            value="both",
            description="scan",
        )
        self.view = widgets.ToggleButtons(
            options=[*kinds, PATCH_ROW], value=kinds[0], description="map"
        )
        self.info = widgets.HTML()
        self.picker = PatchPicker(
            a["images"][0], self._cell(), on_select=self._selected, title="click a patch"
        )
        self.trajectory = FigureView()
        for control in (self.scene, self.layer, self.direction, self.view):
            control.observe(lambda _change: self.redraw(), names="value")
        super().__init__(
            [
                widgets.HBox([self.scene, self.layer]),
                self.direction,
                self.view,
                self.info,
                widgets.HBox([self.picker, self.trajectory]),
            ]
        )
        self.redraw()

    def _cell(self) -> int:
        a = self.result.arrays
        return a["images"].shape[1] // round(float(np.sqrt(a["object_patches"].shape[1])))

    def _selected(self, _patch: int) -> None:
        if self.view.value == PATCH_ROW:
            self.redraw()
        else:
            self.view.value = PATCH_ROW  # observing view redraws

    def token_of(self, patch: int) -> int:
        """Token index of a patch (the class token sits in the middle of the sequence)."""
        return patch if patch < self.cls_index else patch + 1

    def scores(self) -> tuple[np.ndarray, str]:
        """The per-patch scores the controls ask for, and a title for them."""
        a, m = self.result.arrays, self.scene.value
        layer, view = self.layer.value, self.view.value
        if view == PATCH_ROW:
            patch = max(self.picker.selected, 0)
            token = self.token_of(patch)
            rows = a["attention"][m, layer, :, token]  # (2, L)
            k = self.direction.value
            row = rows.mean(axis=0) if k == "both" else rows[DIRECTIONS.index(k)]
            where = "both scans" if k == "both" else DIRECTION_NAMES[k]
            return compute.patch_scores(row, self.cls_index), (
                f"what patch {patch} reads in layer {layer} ({where})"
            )
        if view == "raw":
            k = self.direction.value
            if k == "both":
                row = a["raw_layer_rows"][m, layer]
            else:  # the class token's own row of this scan's hidden attention
                scan = DIRECTIONS.index(k)
                row = compute.row_normalise(a["attention"][m, layer, scan, self.cls_index])
            where = "both scans" if k == "both" else DIRECTION_NAMES[k]
            return compute.patch_scores(row, self.cls_index), (
                f"class token's hidden attention, layer {layer} ({where})"
            )
        return a[f"{view}_map"][m], f"class token: {view} (all layers from "
        f"{self.result.metrics['rollout_start']}, both scans)"

    def _enable_controls(self) -> None:
        """Rollout and attribution aggregate layers and scans: their layer and scan controls
        would do nothing, so they are disabled and say why."""
        aggregate = self.view.value in ("rollout", "attribution")
        start = self.result.metrics["rollout_start"]
        self.layer.disabled = self.direction.disabled = aggregate
        self.layer.tooltip = (
            f"{self.view.value} combines every layer from {start} on: pick raw or clicked patch "
            "to choose a layer"
            if aggregate
            else "layer whose hidden attention is shown"
        )
        self.direction.tooltip = (
            f"{self.view.value} averages both scans: pick raw or clicked patch to choose one"
            if aggregate
            else "which scan's hidden attention is shown"
        )
        self.picker.outline = self.view.value == PATCH_ROW  # the outline marks the clicked patch

    def redraw(self) -> None:
        a = self.result.arrays
        self._enable_controls()
        scores, title = self.scores()
        self.picker.show(
            scores,
            image=a["images"][self.scene.value],
            title=title,
            zmin=0,
            colorbar_title="share",
        )
        self._draw_trajectory()
        objects = a["object_patches"][self.scene.value]
        positive = np.clip(scores, 0, None)
        mass = positive[objects].sum() / positive.sum() if positive.sum() > 0 else 0.0
        self.info.value = (
            f"<b>{html.escape(title)}</b>: {mass:.0%} of the map lies on object patches, which "
            f"cover {objects.mean():.0%} of the image"
        )

    def _draw_trajectory(self) -> None:
        a = self.result.arrays
        norms = a["state_norm_maps"][self.scene.value]  # (layers, 2, L)
        selected = self.picker.selected
        if self.view.value == PATCH_ROW and selected >= 0:
            token, label = self.token_of(selected), f"patch {selected}"
        else:
            token, label = self.cls_index, "class token"
        layers = list(range(norms.shape[0]))
        fig = new_figure(
            width=440,
            height=380,
            title=f"state norm at the {label}, by layer",
            xaxis_title="layer",
            yaxis_title="‖h‖",
        )
        for k, d in enumerate(DIRECTIONS):
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=norms[:, k, token],
                    mode="lines+markers",
                    name=DIRECTION_NAMES[d],
                    line={"color": DIRECTION_COLOURS[d], "width": 3},
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=norms[:, k].mean(axis=1),
                    mode="lines",
                    name=f"mean token, {DIRECTION_NAMES[d]}",
                    line={"color": DIRECTION_COLOURS[d], "dash": "dot"},
                )
            )
        self.trajectory.show(fig)

    def trajectory_values(self) -> np.ndarray:
        """The plotted state norms of the selected token, (2, layers) (for tests)."""
        figure = self.trajectory.figure
        if figure is None:
            raise ValueError("no token is selected yet: pick a patch first")
        data = figure.data
        return np.array([data[0].y, data[2].y], dtype=float)

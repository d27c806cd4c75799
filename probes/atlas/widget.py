"""An explorer over a saved or fresh atlas result: layer, map method, colouring, hover."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from probes.atlas.plots import colour_options, scatter_traces
from workbench.figures import TEMPLATE
from workbench.results import ProbeResult


class AtlasExplorer(widgets.VBox):
    """Layer slider, PCA/UMAP toggle and colour-by menu over one interactive map.

    Works from the ProbeResult alone (no model needed); every control change rebuilds the map's
    traces with the same function the static figures use.
    """

    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        layers = result.arrays["layer_names"].tolist()
        methods = [m for m in ("pca", "umap") if m in result.arrays]
        self.layer = widgets.SelectionSlider(
            options=[(name, i) for i, name in enumerate(layers)],
            value=int(result.arrays["accuracy"].argmax()),
            description="layer",
            continuous_update=False,
        )
        self.method = widgets.ToggleButtons(options=methods, value=methods[0], description="map")
        self.colour_by = widgets.Dropdown(options=colour_options(result), description="colour by")
        self.info = widgets.HTML()
        self.hovered = widgets.HTML(value="<i>hover a point to see its input</i>")
        self.figure = go.FigureWidget(layout={"template": TEMPLATE, "height": 520})
        for control in (self.layer, self.method, self.colour_by):
            control.observe(lambda _change: self.redraw(), names="value")
        super().__init__(
            [
                widgets.HBox([self.layer, self.method, self.colour_by]),
                self.info,
                self.figure,
                self.hovered,
            ]
        )
        self.redraw()

    def redraw(self) -> None:
        layer, method = self.layer.value, self.method.value
        traces = scatter_traces(self.result, layer, method, self.colour_by.value)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(traces)
            self.figure.layout.title = (
                f"{self.result.arrays['layer_names'][layer]} · {method.upper()} · probe accuracy "
                f"{self.result.arrays['accuracy'][layer]:.1%}"
            )
        for trace in self.figure.data:
            trace.on_hover(self._show_hover)
        acc = self.result.arrays["accuracy"][layer]
        chance = self.result.metrics["chance_accuracy"]
        self.info.value = (
            f"<b>{html.escape(str(self.result.arrays['layer_names'][layer]))}</b>: held-out probe "
            f"accuracy {acc:.1%} (chance {chance:.1%})"
        )

    def _show_hover(self, trace: go.Scatter, points, _state) -> None:
        if points.point_inds:
            text = trace.text[points.point_inds[0]]
            self.hovered.value = f"<b>input:</b> {html.escape(str(text))}"

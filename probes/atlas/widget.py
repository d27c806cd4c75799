"""An explorer over a saved or fresh atlas result: layer, map method, colouring, hover."""

from __future__ import annotations

import html

import ipywidgets as widgets

from probes.atlas.plots import colour_options, explained_axis_titles, scatter_traces
from workbench.figures import new_figure
from workbench.results import ProbeResult
from workbench.widgets import FigureView


class AtlasExplorer(widgets.VBox):
    """Layer slider, PCA/UMAP toggle and colour-by menu over one interactive map.

    Works from the ProbeResult alone (no model needed); every control change rebuilds the map
    with the same function the static figures use. Hovering a point shows its input.
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
        self.method = widgets.ToggleButtons(
            options=methods,
            value=methods[0],
            description="map",
            style={"button_width": "64px"},
            layout={"width": "auto"},
            disabled=len(methods) < 2,
            tooltip=f"only {methods[0].upper()} maps were computed: run with "
            "methods=('pca', 'umap') to switch"
            if len(methods) < 2
            else "the 2-D map of each layer: PCA or UMAP",
        )
        self.colour_by = widgets.Dropdown(options=colour_options(result), description="colour by")
        self.info = widgets.HTML()
        self.view = FigureView()
        for control in (self.layer, self.method, self.colour_by):
            control.observe(lambda _change: self.redraw(), names="value")
        super().__init__(
            [widgets.HBox([self.layer, self.method, self.colour_by]), self.info, self.view]
        )
        self.redraw()

    @property
    def figure(self):
        """The map on screen (a plotly figure)."""
        return self.view.figure

    def redraw(self) -> None:
        layer, method = self.layer.value, self.method.value
        names = self.result.arrays["layer_names"]
        acc = self.result.arrays["accuracy"][layer]
        fig = new_figure(
            height=520,
            title=f"{names[layer]} · {method.upper()} · probe accuracy {acc:.1%}"
            "<br><sup>hover a point to see its input</sup>",
        )
        fig.add_traces(scatter_traces(self.result, layer, method, self.colour_by.value))
        x_title, y_title = explained_axis_titles(self.result, layer, method)
        fig.update_xaxes(showticklabels=False, zeroline=False, title_text=x_title)
        fig.update_yaxes(showticklabels=False, zeroline=False, title_text=y_title)
        self.view.show(fig)
        chance = self.result.metrics["chance_accuracy"]
        self.info.value = (
            f"<b>{html.escape(str(names[layer]))}</b>: held-out probe accuracy {acc:.1%} "
            f"(chance {chance:.1%})"
        )

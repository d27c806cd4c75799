"""A widget that shows one plotly figure and can swap it for another.

Probe explorers rebuild their figure with the same functions as the static plots and hand it
here. The figure is displayed through plotly's JupyterLab renderer (bundled with plotly, no CDN)
inside an Output widget, rather than as a ``go.FigureWidget``: that one loads a 5 MB script per
page, which anywidget gives two seconds, and on a busy CPU it misses them and stays blank.
Hovering still shows each point's text, because plotly draws tooltips in the browser.
"""

from __future__ import annotations

import json

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio

from workbench.figures import fit_cell

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def mimebundle(fig: go.Figure) -> dict:
    """The display bundle JupyterLab renders as an interactive plotly figure."""
    spec = json.loads(pio.to_json(fig, validate=False))
    title = fig.layout.title.text or "figure"
    return {
        PLOTLY_MIMETYPE: {**spec, "config": PLOT_CONFIG},
        "text/plain": f"<plotly figure: {title}>",
    }


class FigureView(widgets.Output):
    """Shows ``figure``; ``show(new)`` replaces it in place. ``figure`` is what is on screen,
    fitted to a notebook cell like every probe figure (``workbench.figures.fit_cell``)."""

    def __init__(self, figure: go.Figure | None = None) -> None:
        super().__init__()
        self.figure: go.Figure | None = None
        if figure is not None:
            self.show(figure)

    def show(self, figure: go.Figure) -> None:
        self.figure = fit_cell(figure)
        self.outputs = (
            {"output_type": "display_data", "data": mimebundle(figure), "metadata": {}},
        )

"""An explorer over a curvature result: pick an edit strength, see what each canary recites."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

from probes.curvature.plots import recitation_table, tradeoff_figure
from workbench.results import ProbeResult
from workbench.widgets import FigureView

METHODS = {"K-FAC (ρ)": "kfac", "SVD (energy)": "svd"}


class CurvatureExplorer(widgets.VBox):
    """Method toggle and a slider over the sweep's edit strengths.

    The trade-off plot marks the chosen edit and the table shows every canary's continuation
    under it, next to the unedited model's. Works from the ProbeResult alone: the sweep's
    continuations are stored in it.
    """

    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        self.method = widgets.ToggleButtons(options=list(METHODS), description="edit")
        self.strength = widgets.SelectionSlider(
            options=[0.0], description="keep", continuous_update=False
        )
        self.info = widgets.HTML()
        self.tradeoff = FigureView(tradeoff_figure(result))
        self.table = FigureView(recitation_table(result))
        self._quiet = False
        self.method.observe(lambda _change: self._reset_slider(), names="value")
        self.strength.observe(self._on_strength, names="value")
        super().__init__(
            [widgets.HBox([self.method, self.strength]), self.info, self.tradeoff, self.table]
        )
        self._reset_slider()

    def _on_strength(self, _change: object) -> None:
        if not self._quiet:
            self.redraw()

    @property
    def prefix(self) -> str:
        return METHODS[self.method.value]

    def _values(self) -> list[float]:
        return [float(v) for v in self.result.arrays[f"{self.prefix}_sweep_value"]]

    def _reset_slider(self) -> None:
        values = self._values()
        default = self.result.metrics["rho"] if self.prefix == "kfac" else values[-1]
        pick = min(values, key=lambda v: abs(v - default))
        self._quiet = True  # changing the options moves the value: redraw once, at the end
        try:
            self.strength.options = [(f"{v:g}", v) for v in values]
            self.strength.value = pick
        finally:
            self._quiet = False
        self.redraw()

    def index(self) -> int:
        return self._values().index(float(self.strength.value))

    def redraw(self) -> None:
        a, prefix, i = self.result.arrays, self.prefix, self.index()
        continuations = a[f"{prefix}_sweep_continuation"][i]
        distance = a[f"{prefix}_sweep_distance"][i]
        label = f"{'K-FAC ρ' if prefix == 'kfac' else 'SVD energy'}={self.strength.value:g}"
        table = recitation_table(self.result, (continuations, distance), label)
        trade = tradeoff_figure(self.result, highlight=(prefix, i))
        self.table.show(table)
        self.tradeoff.show(trade)
        memorized = a["memorized"]
        strict = float((distance[memorized] == 0).mean()) if memorized.any() else float("nan")
        self.info.value = (
            f"<b>{html.escape(label)}</b>: held-out perplexity "
            f"{a[f'{prefix}_sweep_perplexity'][i]:.3f} (unedited "
            f"{self.result.metrics['perplexity_before']:.3f}); verbatim recitation of the "
            f"memorized set {strict:.0%}, loose {a[f'{prefix}_sweep_loose'][i]:.0%}; "
            f"nDCG@k vs unedited {a[f'{prefix}_sweep_ndcg'][i]:.3f}; "
            f"{a[f'{prefix}_sweep_kept'][i]:.1%} of components kept"
        )

    def table_column(self, column: int) -> np.ndarray:
        """The text of one table column as shown (for tests and copying)."""
        assert self.table.figure is not None  # drawn in __init__
        return np.asarray(self.table.figure.data[0].cells.values[column])

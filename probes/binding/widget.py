"""Click a patch, see which patches the probe says belong to the same object."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

from probes.binding.compute import PROBE_LABELS
from probes.binding.plots import SOURCE_NAMES, job_index, layer_label, query_probabilities
from workbench.results import ProbeResult
from workbench.widgets import PatchPicker


class BindingExplorer(widgets.VBox):
    """Source (model or control), layer, probe type and image selectors over a PatchPicker.

    Works from the ProbeResult alone: it holds every probe's pair scores for the kept test
    images (``n_show``). Selecting a patch (a click, or ``select(i)``) colours every other
    patch by the probability that it is on the same object.
    """

    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        a = result.arrays
        self.patch_size = int(result.metrics["patch_size"])
        sources = [s for s in SOURCE_NAMES if s in set(a["job_source"].tolist())]
        self.source = widgets.Dropdown(
            options=[(SOURCE_NAMES[s], s) for s in sources], value="model", description="source"
        )
        self.layer = widgets.Dropdown(description="layer")
        self.probe = widgets.Dropdown(description="probe")
        self.image = widgets.Dropdown(
            options=[(f"test image {i}", i) for i in range(a["show_images"].shape[0])],
            value=0,
            description="image",
        )
        self.info = widgets.HTML()
        self.picker = PatchPicker(a["show_images"][0], self.patch_size)
        self.picker.selected = int(a["show_query"][0])
        self.picker.on_select = lambda _i: self.redraw()
        self._updating = False
        self._refresh_choices()
        self.source.observe(self._on_source, names="value")
        for control in (self.layer, self.probe):
            control.observe(lambda _c: self.redraw(), names="value")
        self.image.observe(self._on_image, names="value")
        super().__init__(
            [
                widgets.HBox([self.source, self.layer]),
                widgets.HBox([self.probe, self.image]),
                self.info,
                self.picker,
            ]
        )
        self.redraw()

    # -- choices -------------------------------------------------------------------------------
    def _rows(self, source: str) -> np.ndarray:
        return np.nonzero(self.result.arrays["job_source"] == source)[0]

    def _refresh_choices(self) -> None:
        """Layers and probes that exist for the chosen source; start at its best layer."""
        a = self.result.arrays
        rows = self._rows(self.source.value)
        best = [r for r in rows if a["job_is_best"][r]]
        head = self.result.metrics["headline_probe"]
        start = next((r for r in best if a["job_probe"][r] == head), best[0] if best else rows[0])
        layers = sorted(set(a["job_layer"][rows].tolist()))
        probes = [p for p in PROBE_LABELS if p in set(a["job_probe"][rows].tolist())]
        self._updating = True
        try:
            self.layer.options = [
                (layer_label(self.result, self._any_row(self.source.value, k)), k) for k in layers
            ]
            self.layer.value = int(a["job_layer"][start])
            self.probe.options = [(PROBE_LABELS[p], p) for p in probes]
            self.probe.value = str(a["job_probe"][start])
        finally:
            self._updating = False
        source = SOURCE_NAMES[self.source.value]
        single = {
            self.layer: f"the {source} has one input layer: nothing to choose",
            self.probe: f"the {source} was probed with this probe only "
            f"({'probes' if self.source.value == 'model' else 'control_probes'})",
        }
        for control, why in single.items():
            control.disabled = len(control.options) < 2
            control.tooltip = why if control.disabled else ""

    def _any_row(self, source: str, layer: int) -> int:
        a = self.result.arrays
        return int(np.nonzero((a["job_source"] == source) & (a["job_layer"] == layer))[0][0])

    def _on_source(self, _change: dict) -> None:
        self._refresh_choices()
        self.redraw()

    def _on_image(self, _change: dict) -> None:
        i = int(self.image.value)
        self.picker.selected = int(self.result.arrays["show_query"][i])
        self.redraw()

    # -- drawing -------------------------------------------------------------------------------
    def select(self, index: int) -> None:
        """Select patch ``index`` (row-major), as a click on it does."""
        self.picker.select(index)

    def current_scores(self) -> np.ndarray:
        """P(same object) of the selected patch with every patch, under the current choices."""
        a = self.result.arrays
        available = self._rows(self.source.value)
        row = job_index(self.result, self.source.value, int(self.layer.value), self.probe.value)
        if row not in available:  # pragma: no cover - guarded by the choices
            raise KeyError(row)
        logits = a["show_logits"][row, int(self.image.value)].astype(np.float32)
        return query_probabilities(logits, int(self.picker.selected or 0))

    def redraw(self) -> None:
        if self._updating:
            return
        a = self.result.arrays
        i = int(self.image.value)
        try:
            row = job_index(self.result, self.source.value, int(self.layer.value), self.probe.value)
        except KeyError:
            self.info.value = "<i>no result for this combination</i>"
            return
        scores = self.current_scores()
        self.picker.show(
            scores,
            image=a["show_images"][i],
            title=f"{SOURCE_NAMES[self.source.value]} · {layer_label(self.result, row)} · "
            f"{self.probe.value}: P(same object as patch {self.picker.selected})",
            zmin=0.0,
            zmax=1.0,
            colorbar_title="P(same)",
        )
        headline = a["test_distance_matched_balanced_accuracy"][row]
        self.info.value = (
            f"<b>{html.escape(SOURCE_NAMES[self.source.value])}</b>, "
            f"{html.escape(layer_label(self.result, row))}, "
            f"{html.escape(PROBE_LABELS[self.probe.value])}: held-out distance-matched balanced "
            f"accuracy {headline:.3f}, accuracy {a['test_accuracy'][row]:.1%}, ROC-AUC "
            f"{a['test_roc_auc'][row]:.3f}. Click a patch to make it the query."
        )

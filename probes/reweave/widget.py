"""An explorer of reweaved attention: type a text, pick a layer/head, open the gate, hover."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from probes.reweave import measure
from probes.reweave.data import token_labels
from probes.reweave.operator import Reweaving
from probes.reweave.plots import head_view_figure
from workbench.figures import token_heatmap
from workbench.models import LoadedModel
from workbench.results import ProbeResult
from workbench.widgets import FigureView, TokenPicker

MEAN_HEAD = -1
HIGHLIGHT = "#00E5FF"


class ReweaveExplorer(widgets.VBox):
    """Text box, layer and head menus, reweaving choice and a gate slider over live maps.

    Changing the text or the gate reruns the model (one base and one reweaved forward); changing
    layer or head only redraws. Hovering a token in the token row highlights its attention row
    in every map and the head view, and shades the row by where it looks (reweaved);
    ``highlight(i)`` does the same from Python.
    """

    def __init__(self, result: ProbeResult, model: LoadedModel, *, map_size: int = 310) -> None:
        self.result = result
        self.model = model
        a = result.arrays
        self.ops = {"fixed": Reweaving.from_arrays(a, "op_fixed")}
        if "op_learned.theta" in a:
            self.ops["learned"] = Reweaving.from_arrays(a, "op_learned")
        self.max_tokens = int(result.provenance.get("config", {}).get("max_map_tokens", 48))
        layer, head = (int(x) for x in a["example_most_changed"])
        self.query: int | None = None
        self._size = map_size

        self.text = widgets.Textarea(
            value=str(a["example_text"]),
            description="text",
            continuous_update=False,
            layout={"width": "95%", "height": "60px"},
        )
        self.layer = widgets.Dropdown(
            options=[(f"layer {i}", i) for i in range(model.n_layers)],
            value=layer,
            description="layer",
        )
        n_heads = a["example_patterns"].shape[2]
        self.head = widgets.Dropdown(
            options=[("mean of heads", MEAN_HEAD), *((f"head {j}", j) for j in range(n_heads))],
            value=head,
            description="head",
        )
        self.which = widgets.ToggleButtons(options=list(self.ops), description="reweaving")
        self.gate = widgets.FloatSlider(
            value=float(self.ops["fixed"].fixed_gate),
            min=0.0,
            max=1.0,
            step=0.05,
            description="gate",
            continuous_update=False,
            readout_format=".2f",
        )
        self.info = widgets.HTML()
        self.maps = {name: FigureView() for name in ("base", "reweaved", "difference")}
        self.head_view = FigureView()
        self.token_row = TokenPicker([], on_hover=self.highlight, on_select=self.highlight)
        self._map_figures: dict[str, go.Figure] = {}
        for control in (self.text,):
            control.observe(lambda _c: self.recompute(base=True), names="value")
        self.gate.observe(lambda _c: self.recompute(base=False), names="value")
        self.which.observe(self._on_which, names="value")
        for control in (self.layer, self.head):
            control.observe(lambda _c: self.redraw(), names="value")
        super().__init__(
            [
                self.text,
                widgets.HBox([self.layer, self.head, self.gate]),
                self.which,
                self.info,
                widgets.HTML("<b>tokens</b> (hover one to follow its attention row)"),
                self.token_row,
                # the maps wrap onto a second row where the cell is too narrow for three
                widgets.Box(list(self.maps.values()), layout={"flex_flow": "row wrap"}),
                self.head_view,
            ]
        )
        self.recompute(base=True)

    # -- state ---------------------------------------------------------------------------------
    @property
    def op(self) -> Reweaving:
        return self.ops[self.which.value]

    def recompute(self, *, base: bool) -> None:
        """Rerun the model on the text: the base pattern (if asked) and the reweaved one."""
        batch = measure.encode(self.model, [self.text.value or "."])
        batch = {k: v[:, : self.max_tokens] for k, v in batch.items()}
        if base or not hasattr(self, "base_patterns"):
            self.tokens = token_labels(self.model, batch["input_ids"][0])
            self.token_row.tokens = [str(t) for t in self.tokens]
            self.base_patterns = _stack(measure.attention_patterns(self.model, batch))
            self.query = None
        self.reweaved_patterns = _stack(
            measure.attention_patterns(self.model, batch, self.op, gate=self.gate.value)
        )
        self.redraw()

    def patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """(seq, seq) base and reweaved patterns of the chosen layer and head (or head mean)."""
        layer, head = self.layer.value, self.head.value
        pick = (lambda p: p[layer].mean(0)) if head == MEAN_HEAD else (lambda p: p[layer, head])
        return pick(self.base_patterns), pick(self.reweaved_patterns)

    # -- drawing -------------------------------------------------------------------------------
    def redraw(self) -> None:
        base, other = self.patterns()
        span = float(np.abs(other - base).max()) or 1e-9
        panels: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
            "base": (base, {"zmin": 0.0, "zmax": 1.0}),
            "reweaved": (other, {"zmin": 0.0, "zmax": 1.0}),
            "difference": (
                other - base,
                {"colorscale": "RdBu_r", "zmid": 0.0, "zmin": -span, "zmax": span},
            ),
        }
        for name, (values, kwargs) in panels.items():
            fresh = token_heatmap(values, self.tokens, self.tokens, title=name, **kwargs)
            fresh.update_layout(
                width=self._size, height=self._size, margin={"l": 40, "r": 10, "t": 40}
            )
            self._map_figures[name] = fresh
        self._draw_head_view()
        self._mark_row()
        before = self.layer.value < self.op.target
        for control in (self.gate, self.which):  # they cannot change a layer before the target
            control.disabled = before
            control.tooltip = (
                f"layer {self.layer.value} comes before the injection at block "
                f"{self.op.target}: pick a later layer to see the reweaving act"
                if before
                else ""
            )
        head = "mean of heads" if self.head.value == MEAN_HEAD else f"head {self.head.value}"
        self.info.value = (
            f"<b>layer {self.layer.value}, {head}</b>: {html.escape(self.describe())}. Largest "
            f"change of a weight: {span:.3f}."
            + (
                ""
                if self.layer.value >= self.op.target
                else " (this layer is before the injection, so it cannot change)"
            )
        )

    def describe(self) -> str:
        """The reweaving on screen, with the one gate in use: the slider's."""
        op = self.op
        weights = ", ".join(
            f"{layer}: {w:.2f}" for layer, w in zip(op.sources, op.weights().tolist(), strict=True)
        )
        return (
            f"{self.which.value} reweaving, sources {{{weights}}} → block {op.target}, read "
            f"{op.read}, gate {self.gate.value:.2f} (set by the slider)"
        )

    def _draw_head_view(self) -> None:
        base, other = self.patterns()
        fresh = head_view_figure(self.tokens, base, other, query=self.query, slider=False)
        fresh.update_layout(title="what each token attends to: base (left), reweaved (right)")
        self.head_view.show(fresh)

    def highlight(self, index: int | None) -> None:
        """Highlight token ``index``'s attention row (None clears), as hovering it does."""
        if index is not None and not 0 <= index < len(self.tokens):
            raise IndexError(f"token {index} is outside 0..{len(self.tokens) - 1}")
        self.query = index
        self._draw_head_view()
        self._mark_row()

    def highlighted_lines(self) -> list[int]:
        """Indices of head-view traces drawn for the highlighted query (for tests)."""
        assert self.head_view.figure is not None  # drawn in __init__
        return [
            i
            for i, t in enumerate(self.head_view.figure.data)
            if t.mode == "lines" and t.visible is True and t.line.color == "#D55E00" and t.x
        ]

    def _mark_row(self) -> None:
        n = len(self.tokens)
        shapes = []
        if self.query is not None:
            shapes = [
                {
                    "type": "rect",
                    "x0": -0.5,
                    "x1": n - 0.5,
                    "y0": self.query - 0.5,
                    "y1": self.query + 0.5,
                    "line": {"color": HIGHLIGHT, "width": 2.5},
                }
            ]
        for name, fig in self._map_figures.items():
            marked = go.Figure(fig)
            marked.update_layout(shapes=shapes)
            self.maps[name].show(marked)
        _, other = self.patterns()
        self.token_row.shade(
            None if self.query is None else other[self.query] / other[self.query].max()
        )

    def _on_which(self, change) -> None:
        """Start the gate at the chosen reweaving's own gate; recompute either way."""
        gate = round(float(self.ops[change["new"]].gate().detach().mean()), 2)
        if gate != self.gate.value:
            self.gate.value = gate  # its observer recomputes
        else:
            self.recompute(base=False)


def _stack(per_layer: list[torch.Tensor]) -> np.ndarray:
    return torch.stack([p[0] for p in per_layer]).numpy()

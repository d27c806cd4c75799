"""PMIExplorer: a story, a step slider and a slot selector over a pmi ProbeResult.

Hovering a token in the token row shows which slots wrote it at this step and which memories
answered it (the heatmap's own tooltips give each cell's weight). Everything a hover shows is
also available from Python through ``describe_token`` and ``hover_token``, which is what the
token row's hover calls.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from probes.pmi.plots import example_caption, example_tokens, held_fact
from workbench.figures import new_figure
from workbench.results import ProbeResult
from workbench.widgets import FigureView, TokenPicker

PHASES = ("after top-k", "before top-k")


class PMIExplorer(widgets.VBox):
    """Explore the kept example stories of a pmi result step by step and slot by slot."""

    def __init__(self, result: ProbeResult, top: int = 3) -> None:
        self.result = result
        self.top = top
        a = result.arrays
        n_examples, n_steps, n_slots = a["ex_write"].shape[:3]
        self.story = widgets.Dropdown(
            options=[
                (f"{i}: {a['ex_task'][i]} · {self._question(i)}", i) for i in range(n_examples)
            ],
            value=int(a["example_index"]),
            description="story",
            layout={"width": "480px"},
        )
        self.step = widgets.IntSlider(
            value=0, min=0, max=n_steps - 1, description="step", continuous_update=False
        )
        self.slot = widgets.Dropdown(
            options=[("all slots", -1), *[(f"slot {j}", j) for j in range(n_slots)]],
            value=-1,
            description="slot",
        )
        self.phase = widgets.ToggleButtons(options=PHASES, value=PHASES[0], description="write")
        self.caption = widgets.HTML()
        self.info = widgets.HTML(value="<i>hover a token to see who wrote it and who answered</i>")
        self.heatmap = FigureView()
        self.strip = FigureView()
        self.tokens = TokenPicker([], on_hover=self._show_token, on_select=self._show_token)
        self.hovered: int | None = None
        for control in (self.story, self.step, self.slot, self.phase):
            control.observe(lambda _change: self.redraw(), names="value")
        super().__init__(
            [
                widgets.HBox([self.story, self.step]),
                widgets.HBox([self.slot, self.phase]),
                self.caption,
                self.heatmap,
                self.strip,
                widgets.HTML("<b>tokens</b> (hover one; shading = write weight shown above)"),
                self.tokens,
                self.info,
            ]
        )
        self.redraw()

    # -- data --------------------------------------------------------------------------------
    def _question(self, story: int) -> str:
        a = self.result.arrays
        tokens = example_tokens(self.result, story)
        return " ".join(t for t, s in zip(tokens, a["ex_sentence"][story], strict=False) if s == -1)

    def write_weights(self) -> np.ndarray:
        """(N, T) write attention of the current story, step and phase."""
        a = self.result.arrays
        key = "ex_write" if self.phase.value == PHASES[0] else "ex_write_pre"
        n_tokens = int(a["ex_n_tokens"][self.story.value])
        return a[key][self.story.value, self.step.value][:, :n_tokens]

    def describe_token(self, position: int) -> dict[str, Any]:
        """Who wrote token ``position`` at the current step, and which memories answered it."""
        a = self.result.arrays
        s, t = self.story.value, self.step.value
        tokens = example_tokens(self.result, s)
        if not 0 <= position < len(tokens):
            raise IndexError(f"token {position} is outside 0..{len(tokens) - 1}")
        sentence = int(a["ex_sentence"][s, position])
        n_facts = int(a["ex_n_facts"][s])
        write = a["ex_write"][s, t][:, position]  # after top-k: the slots that really wrote it
        writers = [(int(j), float(write[j])) for j in np.argsort(-write) if write[j] > 0]
        read_wm = a["ex_read_wm"][s, t, position]
        read_ltm = a["ex_read_ltm"][s, t, position]
        correction = a["ex_correction"][s, t, position, : len(tokens)]
        holds = held_fact(self.result, s)[t]
        return {
            "token": tokens[position],
            "position": position,
            "fact": a["ex_facts"][s, n_facts if sentence == -1 else sentence],
            "step": t,
            "written_by": writers,
            "wm_share": float(a["ex_share_wm"][s, t, position]),
            "integration_gate": float(a["ex_gate"][s, t, position]),
            "read_wm": _top(read_wm, self.top),
            "read_ltm": _top(read_ltm, self.top),
            "slot_holds": {int(j): str(holds[j]) for j in range(len(holds))},
            "correction": [
                (int(k), tokens[int(k)], float(correction[k]))
                for k in np.argsort(-correction)[: self.top]
            ],
        }

    def _show_token(self, position: int) -> None:
        self.hover_token(position)

    def hover_token(self, position: int) -> str:
        """Show token ``position``'s description in the info panel (what a hover does)."""
        self.hovered = position
        d = self.describe_token(position)
        esc = html.escape

        def slots(pairs: list[tuple[int, float]]) -> str:
            return ", ".join(
                f"slot {j} ({w:.2f}; holds “{esc(d['slot_holds'][j])}”)" for j, w in pairs
            )

        writers = (
            ", ".join(f"slot {j} ({w:.2f})" for j, w in d["written_by"])
            or "no slot (outside every slot's top-k)"
        )
        correction = ", ".join(f"{k}: {esc(tok)} ({w:.2f})" for k, tok, w in d["correction"])
        self.info.value = (
            f"<b>{d['position']}: {esc(d['token'])}</b> in “{esc(d['fact'])}” · step {d['step']}"
            f"<br><b>written by</b> {writers}"
            f"<br><b>answered by</b> working memory {d['wm_share']:.0%} / long-term memory "
            f"{1 - d['wm_share']:.0%} (integration weight of U_w {d['integration_gate']:.2f})"
            f"<br>&nbsp;&nbsp;WM slots read: {slots(d['read_wm'])}"
            f"<br>&nbsp;&nbsp;LTM slots read (after top-k): {slots(d['read_ltm'])}"
            f"<br>&nbsp;&nbsp;correction looks up: {correction}"
        )
        return self.info.value

    # -- drawing -----------------------------------------------------------------------------
    def redraw(self) -> None:
        s, t, slot = self.story.value, self.step.value, self.slot.value
        tokens = example_tokens(self.result, s)
        w = self.write_weights()
        labels = [f"{i}: {tok}" for i, tok in enumerate(tokens)]
        self.caption.value = example_caption(self.result, s)
        heatmap = new_figure(
            height=360,
            title=f"step {t}: write attention of each slot over the tokens ({self.phase.value})",
        )
        heatmap.add_trace(
            go.Heatmap(
                z=w,
                x=list(range(len(tokens))),
                y=list(range(w.shape[0])),
                colorscale="Viridis",
                zmin=0,  # a distribution: the scale starts at 0 (plotly needs both bounds)
                zmax=max(float(w.max()), 1e-9),
                colorbar={"title": {"text": "write weight"}},
                customdata=np.tile(np.array(labels), (w.shape[0], 1)),
                hovertemplate="slot %{y} ← %{customdata}<br>%{z:.3f}<extra></extra>",
            )
        )
        if slot >= 0:
            heatmap.add_shape(
                type="rect",
                x0=-0.5,
                x1=len(tokens) - 0.5,
                y0=slot - 0.5,
                y1=slot + 0.5,
                line={"color": "#00E5FF", "width": 3},
            )
        token_axis = {
            "tickmode": "array",
            "tickvals": list(range(len(tokens))),
            "ticktext": tokens,
            "tickangle": -60,
            "showgrid": False,
        }
        heatmap.update_layout(
            xaxis=token_axis,
            yaxis={
                "title": "WM slot",
                "autorange": "reversed",
                "tickvals": list(range(w.shape[0])),
            },
        )
        self.heatmap.show(heatmap)

        written = w.sum(0) if slot < 0 else w[slot]
        share = self.result.arrays["ex_share_wm"][s, t, : len(tokens)]
        strip = new_figure(
            height=300, title="per token: write weight (bars) and WM read share (line)"
        )
        strip.add_trace(
            go.Bar(
                x=list(range(len(tokens))),
                y=written,
                name="written by " + ("all slots" if slot < 0 else f"slot {slot}"),
                customdata=labels,
                hovertemplate="%{customdata}<br>write %{y:.3f}<extra></extra>",
            )
        )
        strip.add_trace(
            go.Scatter(
                x=list(range(len(tokens))),
                y=share,
                mode="lines+markers",
                name="read share from WM",
                yaxis="y2",
                customdata=labels,
                hovertemplate="%{customdata}<br>WM share %{y:.2f}<extra></extra>",
            )
        )
        strip.update_layout(
            xaxis=token_axis,
            yaxis={"title": "write weight"},
            yaxis2={
                "title": "WM share",
                "overlaying": "y",
                "side": "right",
                "range": [0, 1],
                "showgrid": False,
            },
            legend={"orientation": "h", "y": 1.12},
        )
        self.strip.show(strip)
        if list(self.tokens.tokens) != list(tokens):
            self.tokens.tokens = list(tokens)
        peak = float(written.max()) if len(written) else 0.0
        self.tokens.shade(written / peak if peak > 0 else written)
        if self.hovered is not None and self.hovered < len(tokens):
            self.hover_token(self.hovered)


def _top(weights: np.ndarray, k: int) -> list[tuple[int, float]]:
    order = np.argsort(-weights)[:k]
    return [(int(j), float(weights[j])) for j in order if weights[j] > 0]

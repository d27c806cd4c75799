"""Reweave figures, built from a ProbeResult alone (or from arrays, for the widget)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probes.reweave.compute import STAT_TITLES, STATS
from workbench.figures import COLORWAY, TEMPLATE, new_figure, token_heatmap
from workbench.results import ProbeResult

CONDITION_COLOURS = {"base": "#333333", "fixed": COLORWAY[1], "learned": COLORWAY[0]}
CONDITION_NAMES = {"base": "base model", "fixed": "fixed reweaving", "learned": "learned reweaving"}
CONDITION_COLOURS |= {
    "control": "#333333",
    "trained": COLORWAY[2],
    "posthoc_fixed": COLORWAY[1],
    "posthoc_learned": COLORWAY[0],
    "ablated": COLORWAY[4],
}
CONDITION_NAMES |= {
    "control": "control (trained without)",
    "trained": "trained with reweaving",
    "posthoc_fixed": "control + post-hoc fixed reweaving",
    "posthoc_learned": "control + post-hoc fitted reweaving",
    "ablated": "trained with, operator taken out",
}
"""The conditions of a model trained with reweaving (``probes.reweave.trained``)."""
HEAD_VIEW_LEVELS = (0.02, 0.1, 0.3, 0.6)
"""Lower edges of the attention weights drawn at growing opacity and width in the head view."""
_LEVEL_STYLE = ((0.15, 1.0), (0.35, 1.8), (0.6, 2.8), (0.9, 4.0))


def conditions(result: ProbeResult) -> list[str]:
    return [str(c) for c in result.arrays["conditions"]]


def _spec(result: ProbeResult) -> str:
    return str(result.provenance.get("model_spec", "the model"))


def _where(result: ProbeResult) -> str:
    m = result.metrics
    return f"blocks {m['sources']} → before block {m['target']}"


# -- recall ------------------------------------------------------------------------------------
def recall_figure(result: ProbeResult) -> go.Figure:
    """Accuracy against prompt length per task, one line per condition, chance dotted."""
    a = result.arrays
    tasks = [str(t) for t in a["tasks"]]
    lengths = a["lengths"]
    titles = {"kv": "key-value retrieval", "passkey": "passkey"}
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=[titles[t] for t in tasks])
    for k in range(len(tasks)):
        for c, cond in enumerate(conditions(result)):
            fig.add_trace(
                go.Scatter(
                    x=lengths,
                    y=a["recall_accuracy"][c, k],
                    mode="lines+markers",
                    name=CONDITION_NAMES[cond],
                    legendgroup=cond,
                    showlegend=k == 0,
                    # the base line is wider and drawn first: a reweaving that matches it shows
                    # as a coloured line inside a black one
                    line={"color": CONDITION_COLOURS[cond], "width": 6 if cond == "base" else 2},
                    hovertemplate=f"{CONDITION_NAMES[cond]}<br>length %{{x}}: %{{y:.1%}}"
                    "<extra></extra>",
                ),
                row=1,
                col=k + 1,
            )
        fig.add_trace(
            go.Scatter(
                x=lengths,
                y=a["recall_chance"][k],
                mode="lines",
                name="chance (a guess among the candidates)",
                legendgroup="chance",
                showlegend=k == 0,
                line={"color": "#999999", "dash": "dot"},
            ),
            row=1,
            col=k + 1,
        )
    unit = "tokens" if result.metrics.get("lengths_in_tokens") else "words"
    fig.update_xaxes(type="log", title_text=f"prompt length ({unit})", tickvals=lengths.tolist())
    fig.update_yaxes(range=[-0.03, 1.03], tickformat=".0%", title_text="answer is the top token")
    fig.update_layout(
        template=TEMPLATE,
        width=980,
        height=430,
        title=f"Does reweaving help recall as prompts grow?<br><sup>{_spec(result)}: share of "
        f"{result.metrics['n_prompts']} held-out prompts per point whose most likely next token "
        f"is the answer; reweaving {_where(result)}</sup>",
    )
    return fig


def copy_figure(result: ProbeResult) -> go.Figure:
    """Copy accuracy per training-frequency bucket of the copied word, per condition."""
    a = result.arrays
    labels = [str(x) for x in a["copy_bucket_labels"]]
    fig = new_figure()
    for c, cond in enumerate(conditions(result)):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=a["copy_accuracy"][c],
                name=CONDITION_NAMES[cond],
                marker_color=CONDITION_COLOURS[cond],
                hovertemplate="%{x}: %{y:.1%}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        width=820,
        height=430,
        title="Are rare words harder to copy?<br><sup>"
        f"{_spec(result)}: passkey prompts of {result.metrics['copy_length']} tokens whose "
        "passkey comes from each quarter of the vocabulary by its count in "
        f"{result.metrics.get('copy_counts_from', 'the training corpus')} (rarest left)</sup>",
        xaxis_title="how often the copied word occurs in that corpus",
        yaxis={"title": "passkey is the top token", "tickformat": ".0%", "range": [0, 1.03]},
    )
    return fig


def gate_sweep_figure(result: ProbeResult) -> go.Figure:
    """How far the output moves, and what recall does, as the fixed gate opens."""
    a = result.arrays
    gates = a["sweep_gates"]
    causal = "sweep_accuracy" in a
    fig = make_subplots(specs=[[{"secondary_y": causal}]])
    change_name = "KL(base ‖ reweaved), next token" if causal else "1 − cosine(base, reweaved)"
    fig.add_trace(
        go.Scatter(
            x=gates,
            y=a["sweep_change"],
            mode="lines+markers",
            name=change_name,
            line={"color": COLORWAY[3]},
        ),
        secondary_y=False,
    )
    if causal:
        fig.add_trace(
            go.Scatter(
                x=gates,
                y=a["sweep_accuracy"],
                mode="lines+markers",
                name=f"recall at length {result.metrics['sweep_length']}",
                line={"color": COLORWAY[0]},
            ),
            secondary_y=True,
        )
        fig.update_yaxes(
            title_text="recall accuracy",
            tickformat=".0%",
            range=[-0.03, 1.03],
            tickmode="linear",
            tick0=0,
            dtick=0.2,
            showgrid=False,
            zeroline=False,
            secondary_y=True,
        )
    fig.update_yaxes(
        title_text="KL divergence (nats)" if causal else "mean 1 − cosine per token",
        secondary_y=False,
    )
    fig.update_xaxes(title_text="gate g (0: base model, 1: state replaced by the reconstruction)")
    fig.update_layout(
        template=TEMPLATE,
        width=820,
        height=430,
        title="How much does the fixed reweaving change the model as its gate opens?<br><sup>"
        f"{_spec(result)}: reweaving {_where(result)}; at g = 0 the change is exactly zero</sup>",
    )
    return fig


def fit_figure(result: ProbeResult) -> go.Figure:
    """The answer loss per fitting step, its running mean, and base vs fitted on all prompts."""
    loss = result.arrays["fit_loss"]
    window = max(1, min(10, len(loss) // 4))
    running = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig = new_figure(
        title="Fitting the learned reweaving<br><sup>cross-entropy of the answer token per Adam "
        "step on one batch of fitting prompts (the model's weights stay frozen);<br>the "
        "horizontal lines are the losses over all fitting prompts, base model and fitted "
        "reweaving</sup>",
        width=820,
        height=420,
        margin={"t": 110},
        xaxis_title="step",
        yaxis_title="answer cross-entropy (nats)",
    )
    fig.add_trace(
        go.Scatter(y=loss, mode="lines", name="one batch", line={"color": COLORWAY[5], "width": 1})
    )
    fig.add_trace(
        go.Scatter(
            x=np.arange(window - 1, len(loss)),
            y=running,
            mode="lines",
            name=f"running mean of {window}",
            line={"color": COLORWAY[0], "width": 2.5},
        )
    )
    for key, name, style in (
        ("fit_base_loss", "base model, all fitting prompts", {"dash": "dot", "color": "#333333"}),
        (
            "fit_final_loss",
            "fitted reweaving, all fitting prompts",
            {"dash": "dash", "color": COLORWAY[3]},
        ),
    ):
        value = float(result.metrics[key])
        fig.add_trace(
            go.Scatter(
                x=[0, len(loss) - 1],
                y=[value, value],
                mode="lines",
                name=f"{name}: {value:.3f}",
                line=style,
            )
        )
    return fig


# -- attention statistics ----------------------------------------------------------------------
def stat_grid_figure(result: ProbeResult, stat: str) -> go.Figure:
    """Layer x head grid of one statistic: base, then each reweaving's change."""
    a = result.arrays
    k = STATS.index(stat)
    conds = conditions(result)
    base = a["attention_stats"][0, k]
    panels: list[tuple[str, np.ndarray, str, float | None]] = [
        ("base model", base, "Viridis", None)
    ]
    for c, cond in enumerate(conds[1:], start=1):
        panels.append(
            (f"{CONDITION_NAMES[cond]} − base", a["attention_stats"][c, k] - base, "RdBu_r", 0.0)
        )
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.16
    )
    n_layers, n_heads = base.shape
    span = max(1e-9, max(float(np.abs(p[1]).max()) for p in panels[1:])) if len(panels) > 1 else 1
    for i, (name, z, scale, mid) in enumerate(panels):
        right = fig.layout[f"xaxis{i + 1 if i else ''}"].domain[1]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(range(n_heads)),
                y=list(range(n_layers)),
                colorscale=scale,
                zmid=mid,
                zmin=None if mid is None else -span,
                zmax=None if mid is None else span,
                colorbar={"x": right + 0.01, "xanchor": "left", "len": 0.8, "thickness": 10},
                hovertemplate=f"{name}<br>layer %{{y}}, head %{{x}}: %{{z:.3g}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    target = result.metrics["target"]
    for i in range(len(panels)):
        fig.add_hline(
            y=target - 0.5,
            line={"color": "#D55E00", "dash": "dash", "width": 1.5},
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(title_text="head", dtick=1 if n_heads <= 16 else None)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    fig.update_layout(
        template=TEMPLATE,
        width=330 * len(panels) + 120,
        height=max(360, 40 * n_layers + 200),
        title=f"{STAT_TITLES[stat].capitalize()} per layer and head<br><sup>{_spec(result)}: mean "
        f"over the queries of {result.metrics['attention_prompts']} prompts (first position "
        "left out).<br>The dashed line marks where the reconstruction enters: the layers above "
        "it come earlier and cannot change.</sup>",
        margin={"t": 120},
    )
    return fig


def attention_by_layer_figure(result: ProbeResult) -> go.Figure:
    """Each statistic's mean over heads per layer, one line per condition."""
    a = result.arrays
    stats = a["attention_stats"]
    layers = list(range(stats.shape[2]))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[STAT_TITLES[s] for s in STATS])
    for k in range(len(STATS)):
        for c, cond in enumerate(conditions(result)):
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=stats[c, k].mean(-1),
                    mode="lines+markers",
                    name=CONDITION_NAMES[cond],
                    legendgroup=cond,
                    showlegend=k == 0,
                    line={"color": CONDITION_COLOURS[cond]},
                ),
                row=1,
                col=k + 1,
            )
        fig.add_vline(
            x=result.metrics["target"] - 0.5,
            line={"color": "#D55E00", "dash": "dash"},
            row=1,
            col=k + 1,
        )
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_layout(
        template=TEMPLATE,
        width=1100,
        height=400,
        title=f"Attention statistics by layer, base and reweaved<br><sup>{_spec(result)}: mean "
        "over heads and queries; the dashed line marks where the reconstruction enters</sup>",
        margin={"t": 110},
    )
    fig.update_annotations(font_size=12)
    return fig


# -- attention maps ----------------------------------------------------------------------------
def map_figure(
    result: ProbeResult, which: str, layer: int | None = None, head: int | None = None
) -> go.Figure:
    """Query x key attention of the example text for one layer/head, with a menu of the rest.

    ``which`` is ``base``, ``reweaved`` (the fixed reweaving) or ``difference``.
    """
    a = result.arrays
    tokens = [str(t) for t in a["example_tokens"]]
    base, other = a["example_patterns"][0], a["example_patterns"][1]
    if layer is None or head is None:
        layer, head = (int(x) for x in a["example_most_changed"])
    values = {"base": base, "reweaved": other, "difference": other - base}[which]
    span = float(np.abs(other - base).max()) or 1e-9
    kwargs: dict[str, Any] = (
        {"colorscale": "RdBu_r", "zmid": 0.0, "zmin": -span, "zmax": span}
        if which == "difference"
        else {"colorscale": "Viridis", "zmin": 0.0, "zmax": 1.0}
    )
    first, second = (CONDITION_NAMES[c] for c in conditions(result)[:2])
    heading = {
        "base": f"Attention, {first}",
        "reweaved": f"Attention, {second}",
        "difference": f"Change of attention: {second} − {first}",
    }[which]
    fig = token_heatmap(
        values[layer, head],
        tokens,
        tokens,
        title="",
        colorbar_title="weight" if which != "difference" else "Δ weight",
        hover_value="Δ weight" if which == "difference" else "weight",
        **kwargs,
    )
    n_layers, n_heads = values.shape[:2]
    buttons = [
        {
            "label": f"layer {i} head {j}",
            "method": "restyle",
            "args": [{"z": [values[i, j]]}, [0]],
        }
        for i in range(n_layers)
        for j in range(n_heads)
    ]
    fig.update_layout(
        title=f"{heading}<br>layer {layer} head {head}; the menu shows any other head<br><sup>"
        f"{_spec(result)}: each row is a query token spreading its attention over<br>the key "
        f"tokens (columns); reweaving {_where(result)}, gate {result.metrics['gate']}</sup>",
        updatemenus=[
            {
                "buttons": buttons,
                "active": layer * n_heads + head,
                "x": 1.0,
                "xanchor": "right",
                "y": 1.0,
                "yanchor": "bottom",
                "direction": "down",
                "pad": {"b": 6},
            }
        ],
        xaxis_title="key (attended-to) token",
        yaxis_title="query token",
        margin={"t": 180},
        height=fig.layout.height + 90,
        width=max(fig.layout.width, 620),
    )
    return fig


def head_view_figure(
    tokens: Sequence[str],
    base: np.ndarray,
    reweaved: np.ndarray,
    *,
    title: str = "",
    query: int | None = None,
    slider: bool = True,
) -> go.Figure:
    """What each token attends to, base (left) and reweaved (right), as lines query -> key.

    ``base``/``reweaved`` are (seq, seq) patterns of one head (or a head average). Line opacity
    and width grow with the weight. With ``slider`` a slider picks one query token to highlight
    (the first step shows all); ``query`` highlights one from the start. Trace order: for each
    panel the four all-query levels, then one group of four per query, then the token labels.
    """
    n = len(tokens)
    base, reweaved = np.asarray(base), np.asarray(reweaved)
    if base.shape != (n, n) or reweaved.shape != (n, n):
        raise ValueError(f"patterns must be ({n}, {n}) for {n} tokens")
    fig = new_figure(title=title)
    panels = (
        ("base", 0.0, CONDITION_COLOURS["base"], base),
        ("reweaved", 3.0, COLORWAY[1], reweaved),
    )
    groups: list[tuple[str, int | None]] = []
    for _name, x0, colour, pattern in panels:
        for rows, q in [(range(n), None), *[([i], i) for i in range(n)]]:
            for level, (opacity, width) in enumerate(_LEVEL_STYLE):
                xs, ys = _segments(pattern, rows, x0, level)
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines",
                        line={"color": colour if q is None else "#D55E00", "width": width},
                        opacity=opacity * (0.5 if q is None else 1.0),
                        hoverinfo="skip",
                        showlegend=False,
                        visible=(q is None) if query is None else (q is None or q == query),
                    )
                )
                groups.append(("lines", q))
    for name, x0, colour, _pattern in panels:
        for side, dx, anchor in (("query", 0.0, "middle left"), ("key", 1.0, "middle right")):
            fig.add_trace(
                go.Scatter(
                    x=[x0 + dx] * n,
                    y=[-i for i in range(n)],
                    mode="markers+text",
                    text=list(tokens),
                    textposition=anchor if side == "key" else "middle left",
                    marker={"size": 7, "color": colour},
                    customdata=list(range(n)),
                    hovertemplate=f"{name} {side} %{{customdata}}: %{{text}}<extra></extra>",
                    showlegend=False,
                    name=f"{name} {side}",
                )
            )
            groups.append(("tokens", None))
    for name, x0, _colour, _pattern in panels:
        fig.add_annotation(
            x=x0 + 0.5,
            y=1.0,
            yref="paper",
            text=f"<b>{name}</b>",
            showarrow=False,
            yanchor="bottom",
        )
    if slider:
        steps = []
        for q in [None, *range(n)]:
            visible = [kind == "tokens" or g is None or g == q for kind, g in groups]
            if q is None:
                visible = [kind == "tokens" or g is None for kind, g in groups]
            label = "all" if q is None else f"{q}: {tokens[q]}"
            steps.append({"label": label, "method": "restyle", "args": [{"visible": visible}]})
        fig.update_layout(
            sliders=[
                {
                    "active": 0 if query is None else query + 1,
                    "currentvalue": {"prefix": "highlighted query: "},
                    "steps": steps,
                    "pad": {"t": 30},
                }
            ]
        )
    fig.update_xaxes(visible=False, range=[-1.4, 5.4])
    fig.update_yaxes(visible=False, range=[-n + 0.3, 0.9])
    fig.update_layout(width=860, height=max(420, 22 * n + 220), margin={"l": 20, "r": 20, "t": 110})
    return fig


def _segments(
    pattern: np.ndarray, rows: Sequence[int], x0: float, level: int
) -> tuple[list[float | None], list[float | None]]:
    """Line segments query -> key for weights in one level's range, joined by gaps."""
    low = HEAD_VIEW_LEVELS[level]
    high = HEAD_VIEW_LEVELS[level + 1] if level + 1 < len(HEAD_VIEW_LEVELS) else np.inf
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i in rows:
        for j in np.nonzero((pattern[i] >= low) & (pattern[i] < high))[0]:
            xs += [x0 + 0.08, x0 + 0.92, None]
            ys += [-i, -int(j), None]
    return xs, ys


def head_view_result_figure(result: ProbeResult) -> go.Figure:
    a = result.arrays
    layer, head = (int(x) for x in a["example_most_changed"])
    tokens = [str(t) for t in a["example_tokens"]]
    return head_view_figure(
        tokens,
        a["example_patterns"][0][layer, head],
        a["example_patterns"][1][layer, head],
        title=f"What each token attends to: layer {layer} head {head}, base and reweaved<br><sup>"
        f"{_spec(result)}: lines run from a query token (left column of each panel) to the keys "
        "it attends to<br>(right column), darker and wider for more weight; the slider "
        "highlights one query's attention</sup>",
    )


def figures(result: ProbeResult) -> dict[str, go.Figure]:
    out: dict[str, go.Figure] = {}
    if "recall_accuracy" in result.arrays:
        out["recall_vs_length"] = recall_figure(result)
    if "copy_accuracy" in result.arrays:
        out["copy_by_frequency"] = copy_figure(result)
    if "fit_loss" in result.arrays:
        out["fit"] = fit_figure(result)
    out["gate_sweep"] = gate_sweep_figure(result)
    for stat in STATS:
        out[f"{stat}_grid"] = stat_grid_figure(result, stat)
    out["attention_by_layer"] = attention_by_layer_figure(result)
    for which in ("base", "reweaved", "difference"):
        out[f"attention_{which}"] = map_figure(result, which)
    out["head_view"] = head_view_result_figure(result)
    return out


def closing_note(result: ProbeResult) -> str:
    """Markdown: the recall numbers per length and the attention statistics, base vs reweaved."""
    m, a = result.metrics, result.arrays
    conds = conditions(result)
    lines = [f"**{_spec(result)}** — {result.summary}", ""]
    if "recall_accuracy" in a:
        unit = "tokens" if m.get("lengths_in_tokens") else "words"
        lengths = [int(x) for x in a["lengths"]]
        header = f"| task | condition | {' | '.join(f'{n} {unit}' for n in lengths)} |"
        lines += [header, "|" + "---|" * (len(lengths) + 2)]
        for k, task in enumerate(str(t) for t in a["tasks"]):
            for c, cond in enumerate(conds):
                row = " | ".join(f"{v:.0%}" for v in a["recall_accuracy"][c, k])
                lines.append(f"| {task} | {cond} | {row} |")
            chance = " | ".join(f"{v:.0%}" for v in a["recall_chance"][k])
            lines.append(f"| {task} | chance | {chance} |")
        lines.append("")
    if "copy_accuracy" in a:
        labels = [str(x) for x in a["copy_bucket_labels"]]
        lines += [
            f"| copying a passkey | {' | '.join(labels)} |",
            "|" + "---|" * (len(labels) + 1),
        ]
        for c, cond in enumerate(conds):
            lines.append(f"| {cond} | {' | '.join(f'{v:.0%}' for v in a['copy_accuracy'][c])} |")
        lines.append("")
    target = m["target"]
    lines += [
        f"Attention statistics, mean over heads of blocks {target} and later "
        "(earlier blocks cannot change):",
        "",
        f"| statistic | {' | '.join(conds)} |",
        "|" + "---|" * (len(conds) + 1),
    ]
    for stat in STATS:
        values = " | ".join(f"{m[stat + '_' + c]:.3f}" for c in conds)
        lines.append(f"| {STAT_TITLES[stat]} | {values} |")
    return "\n".join(lines)

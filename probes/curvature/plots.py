"""Curvature figures, built from a ProbeResult alone so saved results can be re-plotted."""

from __future__ import annotations

import html
import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import CELL_WIDTH, COLORWAY, TEMPLATE, new_figure
from workbench.results import ProbeResult

BASE_COLOUR = "#555555"
KFAC_COLOUR = COLORWAY[0]
SVD_COLOUR = COLORWAY[1]
TABLE_ROWS_PER_GROUP = 3


def add_bar_pair(
    fig: go.Figure,
    x: list,
    ys: list[list[float]],
    name: str,
    colour: str,
    texttemplate: str,
) -> None:
    """One series as bars in the two panels of a 1 x 2 figure (``ys`` = left, right values),
    named once in the legend."""
    for col, y in enumerate(ys, start=1):
        fig.add_trace(
            go.Bar(
                x=x,
                y=y,
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                marker_color=colour,
                texttemplate=texttemplate,
                textposition="outside",
                textfont={"size": 10},
            ),
            row=1,
            col=col,
        )


def _title(main: str, subtitle: str, width: int = 120) -> str:
    """A bold-enough title with a wrapped, smaller subtitle (plotly titles do not wrap)."""
    lines = textwrap.wrap(html.escape(subtitle), width)
    return f"{html.escape(main)}<br><sup>{'<br>'.join(lines)}</sup>"


def _spec(result: ProbeResult) -> str:
    return str(result.provenance.get("model_spec"))


def _colour(i: int) -> str:
    return COLORWAY[i % len(COLORWAY)]


def spectra_figure(result: ProbeResult) -> go.Figure:
    """Eigenvalues of G and A per matrix, each scaled by its largest, on log axes."""
    a = result.arrays
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("G = E[g gᵀ] (output gradients)", "A = E[a aᵀ] (layer inputs)"),
        horizontal_spacing=0.1,
    )
    for i, name in enumerate(a["weight_names"].tolist()):
        for col, key in ((1, "eig_G"), (2, "eig_A")):
            values = a[f"{key}.{name}"]
            scaled = values / values[0] if values[0] > 0 else values
            fig.add_trace(
                go.Scatter(
                    x=np.arange(1, len(values) + 1),
                    y=np.maximum(scaled, 1e-12),
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": _colour(i), "width": 1.5},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(type="log", title_text="eigenvalue rank (1 = largest)")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="eigenvalue / largest", col=1)
    fig.update_layout(
        template=TEMPLATE,
        height=470,
        width=1000,
        margin={"t": 160},
        title=_title(
            "Eigenvalue spectra of the K-FAC factors, per edited matrix",
            f"{_spec(result)}: a steep fall means curvature lives in few directions; component "
            "(i, j) of a weight has curvature λ_i(G) × μ_j(A)",
        ),
    )
    return fig


def mass_figure(result: ProbeResult) -> go.Figure:
    """Cumulative curvature mass against the share of components kept, highest mass first."""
    a, m = result.arrays, result.metrics
    fig = new_figure(
        title=_title(
            "How few weight components carry the curvature mass",
            f"{_spec(result)}: components λ_i μ_j sorted by mass; the edit keeps the top ones "
            f"until ρ = {m['rho']:g} of the mass (dotted line) and zeroes the rest",
            width=100,
        ),
        margin={"t": 130},
        xaxis_title="share of components kept (highest mass first)",
        yaxis_title="share of curvature mass kept",
        xaxis_type="log",
        yaxis_range=[0, 1.02],
        height=430,
        width=820,
    )
    for i, name in enumerate(a["weight_names"].tolist()):
        fig.add_trace(
            go.Scatter(
                x=a[f"mass_x.{name}"],
                y=a[f"mass_y.{name}"],
                mode="lines",
                name=name,
                line={"color": _colour(i)},
            )
        )
    fig.add_hline(
        y=m["rho"],
        line={"dash": "dot", "color": "#b22"},
        annotation_text=f"ρ = {m['rho']:g}: {m['kept_components']:.1%} of components kept",
        annotation_position="bottom right",
    )
    return fig


def loose_threshold(result: ProbeResult) -> float:
    """The similarity at or above which a continuation counts as a loose recitation."""
    config = result.provenance.get("config") or {}
    return float(config.get("loose_threshold", result.metrics.get("loose_threshold", 0.75)))


def tradeoff_figure(result: ProbeResult, highlight: tuple[str, int] | None = None) -> go.Figure:
    """Memorization against held-out perplexity for every ρ and every SVD truncation."""
    a, m = result.arrays, result.metrics
    base_ppl = m["perplexity_before"]
    fig = new_figure(
        title=_title(
            "Removing memorization: curvature edit vs SVD truncation",
            f"{_spec(result)}: each point is one edit of the model, labelled with its ρ (K-FAC) "
            "or kept energy (SVD); down and left is better. Filled dots: loose recitation "
            f"(similarity ≥ {loose_threshold(result):g}); rings: verbatim; a dot inside a ring: "
            f"both are equal. Memorized set = {m['memorized_set']}",
        ),
        xaxis_title="held-out perplexity (lower is better)",
        yaxis_title="share of the memorized set recited",
        yaxis_range=[-0.04, 1.06],
        yaxis_tickformat=".0%",
        height=520,
    )
    labels: list[tuple[float, float, str, str]] = []
    for prefix, label, colour in (
        ("kfac", "K-FAC, ρ", KFAC_COLOUR),
        ("svd", "SVD, energy", SVD_COLOUR),
    ):
        ppl = a[f"{prefix}_sweep_perplexity"]
        values = a[f"{prefix}_sweep_value"]
        text = [f"{v:g}" for v in values]
        # rings first, so a filled dot with the same value sits visibly inside its ring
        fig.add_trace(
            go.Scatter(
                x=ppl,
                y=a[f"{prefix}_sweep_strict"],
                mode="markers",
                name=f"{label}: verbatim (ring)",
                marker={"size": 15, "color": "white", "line": {"color": colour, "width": 2}},
                text=text,
                hovertemplate=f"{label} %{{text}}<br>perplexity %{{x:.3f}}<br>verbatim %{{y:.0%}}"
                "<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=ppl,
                y=a[f"{prefix}_sweep_loose"],
                mode="lines+markers",
                text=text,
                name=f"{label}: loose (dot)",
                line={"color": colour},
                marker={"size": 8},
                hovertemplate=f"{label} %{{text}}<br>perplexity %{{x:.3f}}<br>loose %{{y:.0%}}"
                "<extra></extra>",
            )
        )
        labels += [
            (float(x), float(y), t, colour)
            for x, y, t in zip(ppl, a[f"{prefix}_sweep_loose"], text, strict=True)
        ]
    fig.add_trace(
        go.Scatter(
            x=[base_ppl],
            y=[m["loose_before"]],
            mode="markers",
            name="unedited model",
            marker={"symbol": "star", "size": 16, "color": BASE_COLOUR},
        )
    )
    if "svd_matched" in m:
        s = m["svd_matched"]
        fig.add_trace(
            go.Scatter(
                x=[s["perplexity"]],
                y=[s["loose_memorized"]],
                mode="markers",
                name=f"SVD at matched perplexity (energy {s['energy']:.3g})",
                marker={"symbol": "diamond", "size": 13, "color": SVD_COLOUR},
            )
        )
    if highlight is not None:
        prefix, index = highlight
        fig.add_trace(
            go.Scatter(
                x=[a[f"{prefix}_sweep_perplexity"][index]],
                y=[a[f"{prefix}_sweep_loose"][index]],
                mode="markers",
                name="selected",
                marker={
                    "size": 24,
                    "color": "rgba(0,0,0,0)",
                    "line": {"color": "#b22", "width": 3},
                },
            )
        )
    fig.add_vline(
        x=base_ppl * 1.01,
        line={"dash": "dot", "color": "#b22"},
        annotation_text="+1% perplexity",
        annotation_position="right",
    )
    ppl_all = np.concatenate([a["kfac_sweep_perplexity"], a["svd_sweep_perplexity"], [base_ppl]])
    lower = float(ppl_all.min())
    upper = max(min(float(ppl_all.max()), base_ppl * 1.6), base_ppl * 1.015)
    pad = 0.08 * (upper - lower)
    x_range = (lower - pad, upper + 2 * pad)
    fig.update_xaxes(range=list(x_range))
    obstacles = [(x, y) for x, y, _, _ in labels] + [(base_ppl, float(m["loose_before"]))]
    for annotation in place_labels(labels, obstacles, x_range, (-0.04, 1.06)):
        fig.add_annotation(annotation)
    return fig


# plot-area size the label placement assumes: a figure of CELL_WIDTH by 520 px, less margins
_PLOT_PX = (CELL_WIDTH - 110, 300)
_LABEL_OFFSETS = ((10, 10), (10, -10), (-10, 10), (-10, -10), (0, 16), (0, -16))


def place_labels(
    points: list[tuple[float, float, str, str]],
    obstacles: list[tuple[float, float]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> list[dict]:
    """Text labels beside points, each at the first offset where it covers no marker and no
    label placed before it; a label with no free place is left out (hovering still shows it)."""

    def to_px(x: float, y: float) -> tuple[float, float]:
        fx = (x - x_range[0]) / (x_range[1] - x_range[0])
        fy = (y - y_range[0]) / (y_range[1] - y_range[0])
        return fx * _PLOT_PX[0], fy * _PLOT_PX[1]

    markers = [to_px(x, y) for x, y in obstacles]
    boxes: list[tuple[float, float, float, float]] = []
    out = []
    for x, y, text, colour in points:
        px, py = to_px(x, y)
        w, h = 6.5 * len(text) + 4, 14.0
        for dx, dy in _LABEL_OFFSETS:
            left = px + dx if dx > 0 else px + dx - w if dx < 0 else px - w / 2
            bottom = py + dy if dy > 0 else py + dy - h if dy < 0 else py - h / 2
            box = (left, bottom, left + w, bottom + h)
            hits_marker = any(
                box[0] - 6 < mx < box[2] + 6 and box[1] - 6 < my < box[3] + 6 for mx, my in markers
            )
            hits_label = any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes
            )
            if not hits_marker and not hits_label:
                boxes.append(box)
                out.append(
                    {
                        "x": x,
                        "y": y,
                        "text": text,
                        "showarrow": False,
                        "xshift": dx,
                        "yshift": dy,
                        "xanchor": "left" if dx > 0 else "right" if dx < 0 else "center",
                        "yanchor": "bottom" if dy > 0 else "top" if dy < 0 else "middle",
                        "font": {"size": 11, "color": colour},
                    }
                )
                break
    return out


def _states(result: ProbeResult) -> list[tuple[str, str, dict]]:
    m = result.metrics
    states = [
        ("unedited", BASE_COLOUR, m["base"]),
        (f"K-FAC ρ={m['rho']:g}", KFAC_COLOUR, m["kfac"]),
    ]
    if "svd_matched" in m:
        states.append(("SVD, matched perplexity", SVD_COLOUR, m["svd_matched"]))
    return states


def _group_axis(result: ProbeResult) -> str:
    if "repetitions" in result.arrays:
        return "times the canary was planted in training"
    return "sequences (controls: each candidate's words shuffled)"


def repetition_figure(result: ProbeResult) -> go.Figure:
    """Verbatim and loose recitation per group (repetition count on a canary corpus), before and
    after each edit."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "verbatim (distance 0)",
            f"loose (similarity ≥ {loose_threshold(result):g})",
        ),
        horizontal_spacing=0.08,
    )
    for label, colour, state in _states(result):
        groups = list(state["by_group"])
        add_bar_pair(
            fig,
            groups,
            [[state["by_group"][g][key] for g in groups] for key in ("strict", "loose")],
            label,
            colour,
            "%{y:.0%}",
        )
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", title_text="share of sequences", col=1)
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", col=2)
    fig.update_xaxes(title_text=_group_axis(result))
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        height=460,
        width=1100,
        margin={"t": 160},
        title=_title(
            "Recitation by group",
            f"{_spec(result)}: greedy continuation of each sequence's prefix compared with its "
            "true suffix; controls (unseen canaries, shuffled candidates) are the floor",
        ),
    )
    return fig


def likelihood_figure(result: ProbeResult) -> go.Figure:
    """Suffix loss per token by repetition count: the likelihood trace an edit leaves behind."""
    fig = new_figure(
        title=_title(
            "What the edit leaves behind: likelihood of the true suffix",
            f"{_spec(result)}: mean negative log-likelihood per suffix token; the gap between "
            "memorized sequences and controls after the edit is what a membership-inference "
            "attack could still use",
            width=110,
        ),
        margin={"t": 130},
        xaxis_title=_group_axis(result),
        yaxis_title="nats per token (lower = more likely)",
        barmode="group",
        height=460,
        width=1000,
    )
    for label, colour, state in _states(result):
        groups = list(state["by_group"])
        fig.add_trace(
            go.Bar(
                x=groups,
                y=[state["by_group"][g]["nll_per_token"] for g in groups],
                name=f"{label} (membership AUC {state['membership_auc']:.2f})",
                marker_color=colour,
                texttemplate="%{y:.1f}",
                textposition="outside",
                textfont={"size": 10},
            )
        )
    control = result.metrics["base"]["nll_control"]
    fig.add_hline(
        y=control,
        line={"dash": "dot", "color": "#b22"},
        annotation_text=f"controls, unedited: {control:.2f}",
        annotation_position="top right",
    )
    return fig


def activation_ratio_figure(result: ProbeResult) -> go.Figure:
    """Per band of components: how much more canaries drive it than typical text does."""
    a, m = result.arrays, result.metrics
    bands = a["band_labels"].tolist()
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("curvature basis (bands of K-FAC mass)", "SVD basis (bands of σ² energy)"),
        shared_yaxes=True,
        horizontal_spacing=0.05,
    )
    for i, name in enumerate(a["weight_names"].tolist()):
        for col, view in ((1, "kfac"), (2, "svd")):
            for group, dash in (("memorized", "solid"), ("control", "dot")):
                fig.add_trace(
                    go.Scatter(
                        x=bands,
                        y=a[f"ratio_{view}_{group}"][i],
                        mode="lines+markers",
                        name=f"{name}, {group}",
                        legendgroup=name,
                        showlegend=col == 1,
                        line={"color": _colour(i), "dash": dash},
                        marker={"symbol": "circle" if group == "memorized" else "circle-open"},
                    ),
                    row=1,
                    col=col,
                )
    kept = a["band_kept"]
    first_removed = int(np.argmin(kept)) if not kept.all() else len(bands)
    for col in (1, 2):
        fig.add_hline(y=1.0, line={"dash": "dot", "color": "#888"}, row=1, col=col)
    if first_removed < len(bands):
        fig.add_vrect(
            x0=first_removed - 0.5,
            x1=len(bands) - 0.5,
            fillcolor="rgba(178,34,34,0.08)",
            line_width=0,
            row=1,
            col=1,
            annotation_text=f"removed at ρ = {m['rho']:g}",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="band of cumulative mass (high curvature → low)")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="activation relative to held-out text", col=1)
    fig.update_yaxes(showticklabels=True, col=2)
    fig.update_layout(
        template=TEMPLATE,
        height=520,
        width=1150,
        margin={"t": 170},
        title=_title(
            "Which components do memorized sequences use?",
            f"{_spec(result)}: mean norm of each band's contribution to the layer output on "
            "suffix positions, divided by that on held-out text (1 = used like typical text). "
            "Solid: memorized sequences; dotted: controls. Where solid and dotted lines "
            "coincide, the band is used by unusual inputs in general, not by memorized ones "
            "in particular.",
        ),
    )
    return fig


def recitation_table(
    result: ProbeResult,
    continuations: tuple[np.ndarray, np.ndarray] | None = None,
    label: str | None = None,
) -> go.Figure:
    """Per sequence: true suffix and the continuations before and after the edits; or, with
    ``continuations`` (texts, distances), the unedited ones beside those of one edit. A few rows
    per group, most memorized group first."""
    a, m = result.arrays, result.metrics
    group = a["group"]
    order = np.concatenate(
        [np.nonzero(group == g)[0][:TABLE_ROWS_PER_GROUP] for g in a["groups"][::-1]]
    )
    columns = [("unedited", a["base_continuation"], a["base_distance"])]
    if continuations is None:
        columns.append((f"K-FAC ρ={m['rho']:g}", a["kfac_continuation"], a["kfac_distance"]))
        if "svd_continuation" in a:
            columns.append(("SVD, matched", a["svd_continuation"], a["svd_distance"]))
    else:
        columns.append((label or "edited", continuations[0], continuations[1]))
    header = ["group", "prompt (end)", "true suffix"]
    cells: list[list[str]] = [
        [str(group[i]) for i in order],
        ["… " + " ".join(str(a["prompt_text"][i]).split()[-4:]) for i in order],
        [str(a["target_text"][i]) for i in order],
    ]
    fills: list[list[str]] = [["white"] * len(order)] * 3
    threshold = loose_threshold(result)
    for title, text, distance in columns:
        header.append(f"{title} (distance)")
        cells.append([f"{text[i]} ({distance[i]:.2f})" for i in order])
        fills.append([_fill(distance[i], threshold) for i in order])
    widths = [62, 100, 240] + [240] * len(columns)
    fig = go.Figure(
        go.Table(
            columnwidth=widths,
            header={"values": header, "fill_color": "#E5E7EB", "align": "left"},
            cells={"values": cells, "fill_color": fills, "align": "left", "height": 24},
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=160 + _wrapped_height(cells, widths),
        margin={"l": 10, "r": 10, "b": 10},
        title=_title(
            "Recitations before and after",
            "greedy continuation of each sequence's prompt; green = verbatim, yellow = loose match "
            f"(similarity ≥ {threshold:g}), white = not recited; in brackets the normalised "
            "token-level Levenshtein distance to the true suffix",
        ),
    )
    return fig


def _wrapped_height(cells: list[list[str]], widths: list[int]) -> int:
    """Pixel height of a table's rows once plotly wraps each cell's text to its column, in a
    table as wide as a notebook cell."""
    scale = (CELL_WIDTH - 20) / sum(widths)
    per_line = [max(4, int(w * scale / 7.4)) for w in widths]
    total = 0
    for row in zip(*cells, strict=True):
        lines = max(len(textwrap.wrap(text, per_line[c]) or [""]) for c, text in enumerate(row))
        total += 12 + 19 * lines
    return total


def _fill(distance: float, threshold: float) -> str:
    if distance == 0:
        return "#C6F6D5"
    if 1.0 - distance >= threshold:
        return "#FEF3C7"
    return "white"


def coherence_figure(result: ProbeResult) -> go.Figure:
    """Held-out perplexity and nDCG@k against the share of components each edit keeps: the
    trade-off view when no memorized set was found."""
    a, m = result.arrays, result.metrics
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("held-out perplexity", f"nDCG@{m.get('ndcg_k', 10)} vs unedited"),
        horizontal_spacing=0.1,
    )
    for prefix, label, colour in (
        ("kfac", "K-FAC (ρ)", KFAC_COLOUR),
        ("svd", "SVD (energy)", SVD_COLOUR),
    ):
        text = [f"{v:g}" for v in a[f"{prefix}_sweep_value"]]
        for col, key in ((1, "perplexity"), (2, "ndcg")):
            fig.add_trace(
                go.Scatter(
                    x=a[f"{prefix}_sweep_kept"],
                    y=a[f"{prefix}_sweep_{key}"],
                    mode="lines+markers+text",
                    text=text,
                    textposition="top right",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    line={"color": colour},
                ),
                row=1,
                col=col,
            )
    fig.add_hline(y=m["perplexity_before"], line={"dash": "dot", "color": BASE_COLOUR}, col=1)
    fig.update_xaxes(title_text="share of components kept", tickformat=".0%")
    fig.update_layout(
        template=TEMPLATE,
        height=470,
        width=1000,
        margin={"t": 150},
        title=_title(
            "What each edit costs (no memorized set was found)",
            f"{_spec(result)}: {m['memorized_set']}; the dotted line is the unedited model",
        ),
    )
    return fig


def figures(result: ProbeResult) -> dict[str, go.Figure]:
    found = bool(result.metrics.get("memorized_found", 1))
    out = {"tradeoff": tradeoff_figure(result) if found else coherence_figure(result)}
    out |= {
        "by_group": repetition_figure(result),
        "likelihood": likelihood_figure(result),
        "recitations": recitation_table(result),
    }
    if "band_labels" in result.arrays:
        out["activation_ratio"] = activation_ratio_figure(result)
    out |= {"spectra": spectra_figure(result), "mass": mass_figure(result)}
    from probes.curvature.audit_plots import audit_figures  # it builds on this module

    out |= audit_figures(result)
    return out

"""Atlas figures, built from a ProbeResult alone so saved results can be re-plotted."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import COLORWAY, TEMPLATE, new_figure
from workbench.results import ProbeResult

MAX_LEGEND_CATEGORIES = 20


def colour_options(result: ProbeResult) -> list[str]:
    """What the maps can be coloured by: the label, then every extra annotation."""
    extra = [k.removeprefix("colour_") for k in result.arrays if k.startswith("colour_")]
    return ["label", *extra]


def colour_values(result: ProbeResult, colour_by: str) -> np.ndarray:
    if colour_by == "label":
        names = result.arrays["label_names"]
        return names[result.arrays["labels"]]
    key = f"colour_{colour_by}"
    if key not in result.arrays:
        raise KeyError(f"cannot colour by {colour_by!r}; options: {colour_options(result)}")
    return result.arrays[key]


def scatter_traces(
    result: ProbeResult, layer: int, method: str, colour_by: str = "label", *, legend: bool = True
) -> list[go.Scatter]:
    """One trace per category (legend) or, with many categories, one trace coloured by code."""
    xy = result.arrays[method][layer]
    values = colour_values(result, colour_by)
    hover = result.arrays["hover"]
    categories = list(dict.fromkeys(values.tolist()))
    if len(categories) > MAX_LEGEND_CATEGORIES:
        codes = np.unique(values, return_inverse=True)[1]
        return [
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                text=hover,
                hoverinfo="text",
                marker={"size": 5, "color": codes, "colorscale": "Turbo", "opacity": 0.75},
                name=colour_by,
                showlegend=False,
            )
        ]
    if colour_by == "label":
        categories = [c for c in result.arrays["label_names"].tolist() if c in set(categories)]
    else:
        categories = sorted(categories, key=_natural_key)
    traces = []
    for k, category in enumerate(categories):
        mask = values == category
        traces.append(
            go.Scatter(
                x=xy[mask, 0],
                y=xy[mask, 1],
                mode="markers",
                name=str(category),
                legendgroup=str(category),
                showlegend=legend,
                text=hover[mask],
                hoverinfo="text",
                marker={"size": 5, "color": COLORWAY[k % len(COLORWAY)], "opacity": 0.75},
            )
        )
    return traces


def _natural_key(text: str) -> tuple:
    """Sort "2" before "10" and numbers before words."""
    return (
        (0, float(text), "") if text.lstrip("-").replace(".", "", 1).isdigit() else (1, 0.0, text)
    )


def decodability_figure(result: ProbeResult) -> go.Figure:
    """Accuracy per layer with its CV spread, against both chances and the random-init control."""
    a = result.arrays
    layers = a["layer_names"].tolist()
    acc, std = a["accuracy"], a["accuracy_std"]
    m = result.metrics
    uniform = 1.0 / m["n_classes"]
    fig = new_figure(
        title=f"Where does the {m['label']} become linearly decodable?<br>"
        f"<sup>{result.provenance.get('model_spec')}: held-out accuracy of a logistic-regression "
        f"probe per layer, {m['n_points']} positions, CV grouped by {m['n_groups']} groups.</sup>"
        "<br><sup>Two chances: always answering the most common class, and guessing among the "
        f"{m['n_classes']} classes (1/{m['n_classes']}). A probe on features that carry nothing "
        "about the label scores near the guess, below the majority rate when classes are "
        "unbalanced.</sup>",
        xaxis_title="layer (embeddings, then each block's output)",
        yaxis_title="held-out accuracy",
        yaxis_range=[0, 1.02],
        yaxis_tickformat=".0%",
    )
    fig.add_trace(
        go.Scatter(
            x=layers + layers[::-1],
            y=np.concatenate([acc + std, (acc - std)[::-1]]),
            fill="toself",
            mode="lines",
            line={"width": 0},
            fillcolor="rgba(0,114,178,0.15)",
            hoverinfo="skip",
            name="±1 s.d. over folds",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=acc,
            mode="lines+markers",
            name="trained model",
            line={"color": COLORWAY[0], "width": 3},
        )
    )
    if "control_accuracy" in a:
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=a["control_accuracy"],
                mode="lines+markers",
                name="random-init copy (the floor)",
                line={"color": "#888", "dash": "dash"},
            )
        )
    for value, name, dash in (
        (m["chance_accuracy"], f"chance: majority class {m['chance_accuracy']:.0%}", "dot"),
        (uniform, f"chance: uniform guess 1/{m['n_classes']} = {uniform:.0%}", "dashdot"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[layers[0], layers[-1]],
                y=[value, value],
                mode="lines",
                name=name,
                line={"dash": dash, "color": "#b22", "width": 1.5},
                hoverinfo="name",
            )
        )
    peak = int(np.argmax(acc))
    fig.add_annotation(
        x=layers[peak],
        y=acc[peak],
        text=f"peak {acc[peak]:.0%}",
        showarrow=True,
        arrowhead=2,
        ay=-30 if acc[peak] < 0.85 else 30,
        bgcolor="white",
    )
    return fig


def explained_axis_titles(result: ProbeResult, layer: int, method: str) -> tuple[str, str]:
    """Axis titles of one layer's map: for PCA, the share of the variance each axis explains."""
    share = result.arrays.get(f"{method}_explained")
    if share is None:
        return f"{method.upper()} 1", f"{method.upper()} 2"
    return (
        f"PC1 · {share[layer][0]:.0%} of variance",
        f"PC2 · {share[layer][1]:.0%}",
    )


def maps_figure(result: ProbeResult, method: str, colour_by: str = "label") -> go.Figure:
    """Small multiples: every layer's 2-D map, coloured alike, titled with its probe accuracy."""
    a = result.arrays
    layers = a["layer_names"].tolist()
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    titles = [f"{name}: probe {acc:.0%}" for name, acc in zip(layers, a["accuracy"], strict=True)]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.05,
        vertical_spacing=0.14 if rows > 1 else 0.2,
    )
    for i in range(len(layers)):
        for trace in scatter_traces(result, i, method, colour_by, legend=i == 0):
            fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    for i in range(len(layers)):
        x_title, y_title = explained_axis_titles(result, i, method)
        small = {"font": {"size": 11}, "standoff": 2}
        fig.update_xaxes(title={"text": x_title, **small}, row=i // cols + 1, col=i % cols + 1)
        fig.update_yaxes(title={"text": y_title, **small}, row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False, ticks="")
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False, ticks="")
    fig.update_annotations(font_size=12)
    explained = (
        "; axes: the share of the variance each principal component explains"
        if f"{method}_explained" in a
        else ""
    )
    fig.update_layout(
        template=TEMPLATE,
        height=300 * rows + 120,
        title=f"{method.upper()} of each layer's representations, coloured by "
        f"{result.metrics['label'] if colour_by == 'label' else colour_by}<br>"
        f"<sup>{result.provenance.get('model_spec')}: {result.metrics['n_points']} labelled "
        f"positions{explained}; hover a point to see its input</sup>",
        legend={"itemsizing": "constant"},
    )
    return fig


def figures(result: ProbeResult) -> dict[str, go.Figure]:
    out = {"decodability": decodability_figure(result)}
    for method in ("pca", "umap"):
        if method in result.arrays:
            out[f"maps_{method}"] = maps_figure(result, method)
    return out

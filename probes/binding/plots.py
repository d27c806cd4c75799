"""Binding figures, built from a ProbeResult alone so saved results can be re-plotted."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probes.binding.compute import PROBE_LABELS
from probes.binding.fit import HEADLINE
from workbench.figures import COLORWAY, TEMPLATE, new_figure
from workbench.results import ProbeResult

SOURCE_NAMES = {
    "model": "model",
    "random_init": "random-init model",
    "pixels": "pixel patches",
    "positions": "positions only",
}
SHORT_PROBE_LABELS = {
    "linear": "linear<br>(additive)",
    "diagonal": "diagonal<br>quadratic",
    "quadratic": "full<br>quadratic",
    "lowrank": "low-rank<br>quadratic",
    "cosine": "cosine<br>(untrained)",
    "dot": "dot product<br>(untrained)",
    "attention": "next layer's<br>attention (untrained)",
}
SOURCE_COLOURS = {
    "model": COLORWAY[0],
    "random_init": COLORWAY[9],
    "pixels": COLORWAY[1],
    "positions": COLORWAY[3],
    "embed": COLORWAY[2],
}


# -- choosing rows ----------------------------------------------------------------------------
def job_index(result: ProbeResult, source: str, layer: int, probe: str) -> int:
    """Row of the (source, layer, probe) result in the job arrays."""
    a = result.arrays
    hit = np.nonzero(
        (a["job_source"] == source) & (a["job_layer"] == layer) & (a["job_probe"] == probe)
    )[0]
    if not len(hit):
        raise KeyError(f"no result for {source} / layer {layer} / {probe}")
    return int(hit[0])


def best_index(result: ProbeResult, source: str, probe: str | None = None) -> int | None:
    """Row of the validation-chosen best layer of ``source`` (best probe if ``probe`` is None)."""
    a = result.arrays
    rows = np.nonzero((a["job_source"] == source) & a["job_is_best"])[0]
    if probe is not None:
        rows = rows[a["job_probe"][rows] == probe]
    if not len(rows):
        return None
    val = np.nan_to_num(a[f"val_{HEADLINE}"][rows], nan=-1.0)
    return int(rows[int(np.argmax(val))])


def model_best_index(result: ProbeResult, probe: str) -> int:
    """Row of the model's validation-chosen best layer for ``probe`` (it has one for every
    probe type it ran)."""
    row = best_index(result, "model", probe)
    if row is None:
        raise KeyError(f"no model result for the {probe} probe")
    return row


def layer_label(result: ProbeResult, row: int) -> str:
    a = result.arrays
    if a["job_source"][row] in ("pixels", "positions"):
        return "input"
    names = dict(zip(a["layer_index"].tolist(), a["layer_names"].tolist(), strict=True))
    return names[int(a["job_layer"][row])]


def control_rows(result: ProbeResult) -> dict[str, int]:
    """Best row of each flat control (pixels, positions) over its probes."""
    out = {}
    for source in ("pixels", "positions"):
        row = best_index(result, source)
        if row is not None:
            out[source] = row
    return out


def _series(result: ProbeResult, source: str, probe: str, metric: str) -> tuple[list, np.ndarray]:
    a = result.arrays
    rows = np.nonzero((a["job_source"] == source) & (a["job_probe"] == probe))[0]
    rows = rows[np.argsort(a["job_layer"][rows])]
    return [layer_label(result, int(r)) for r in rows], a[f"test_{metric}"][rows]


def _probe_for_random(result: ProbeResult) -> str | None:
    a = result.arrays
    probes = set(a["job_probe"][a["job_source"] == "random_init"].tolist())
    head = result.metrics["headline_probe"]
    if head in probes:
        return head
    return sorted(probes)[0] if probes else None


# -- figures -----------------------------------------------------------------------------------
def headline_figure(result: ProbeResult) -> go.Figure:
    """Headline metric and plain accuracy per layer, the model beside every control."""
    m, head = result.metrics, result.metrics["headline_probe"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "distance-matched balanced accuracy (headline)",
            "plain accuracy (what is usually reported)",
        ),
        horizontal_spacing=0.1,
    )
    flat = control_rows(result)
    random_probe = _probe_for_random(result)
    for col, metric in ((1, HEADLINE), (2, "accuracy")):
        x, y = _series(result, "model", head, metric)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=f"model ({head})",
                line={"color": SOURCE_COLOURS["model"], "width": 3},
                legendgroup="model",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        best = m.get("best_probe", head)
        if best != head:
            xb, yb = _series(result, "model", best, metric)
            fig.add_trace(
                go.Scatter(
                    x=xb,
                    y=yb,
                    mode="lines+markers",
                    name=f"model ({best}, its best probe)",
                    line={"color": SOURCE_COLOURS["model"], "width": 1.5, "dash": "dash"},
                    legendgroup="model-best",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=x[:1],
                y=y[:1],
                mode="markers",
                name="patch embedding (layer 0 of the model)",
                marker={"color": SOURCE_COLOURS["embed"], "size": 14, "symbol": "diamond"},
                legendgroup="embed",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        if random_probe is not None:
            xr, yr = _series(result, "random_init", random_probe, metric)
            fig.add_trace(
                go.Scatter(
                    x=xr,
                    y=yr,
                    mode="lines+markers",
                    name=f"random-init model ({random_probe})",
                    line={"color": SOURCE_COLOURS["random_init"], "dash": "dash"},
                    legendgroup="random",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        for source, row in flat.items():
            value = float(result.arrays[f"test_{metric}"][row])
            fig.add_trace(
                go.Scatter(
                    x=[x[0], x[-1]],
                    y=[value, value],
                    mode="lines",
                    name=f"{SOURCE_NAMES[source]} ({result.arrays['job_probe'][row]})",
                    line={"color": SOURCE_COLOURS[source], "dash": "dot", "width": 2},
                    legendgroup=source,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        if metric == HEADLINE:
            baseline, text = 0.5, "chance 0.5"
        else:
            baseline, text = float(m["majority_baseline"]), "always 'different'"
        fig.add_hline(
            y=baseline,
            line={"color": "#6B7280", "dash": "dashdot", "width": 1},
            annotation_text=text,
            annotation_position="bottom right",
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="held-out score", range=[0.35, 1.0], row=1, col=1)
    fig.update_yaxes(range=[0.35, 1.0], row=1, col=2)
    fig.update_xaxes(title_text="layer (embed = patch embedding, then each block's output)")
    fig.update_layout(
        template=TEMPLATE,
        width=1150,
        height=480,
        title=f"Does {result.provenance.get('model_spec')} know which patches are one object?"
        f"<br><sup>{head} IsSameObject probe per layer on held-out images, beside controls on the "
        "same pairs. Left: positives and negatives reweighted to one distance mix,<br>so distance "
        "alone scores 0.5. A trained model must beat the dotted controls to claim binding.</sup>",
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 130},
    )
    return fig


def probe_types_figure(result: ProbeResult) -> go.Figure:
    """Every probe type at its best layer, with the controls' best as reference lines."""
    a = result.arrays
    probes = [p for p in PROBE_LABELS if p in set(a["job_probe"][a["job_source"] == "model"])]
    rows = [model_best_index(result, p) for p in probes]
    values = [float(a[f"test_{HEADLINE}"][r]) for r in rows]
    aucs = [float(a["test_roc_auc"][r]) for r in rows]
    fig = new_figure(
        title="Which kind of probe reads binding out?<br><sup>Distance-matched balanced accuracy "
        "on held-out images at each probe's best layer (chosen on validation images;<br>the layer "
        "is written on each bar). Dotted lines: the best of each control.</sup>",
        width=950,
        height=480,
    )
    fig.add_trace(
        go.Bar(
            x=[SHORT_PROBE_LABELS[p] for p in probes],
            y=values,
            text=[layer_label(result, r) for r in rows],
            textposition="outside",
            marker_color=SOURCE_COLOURS["model"],
            name="distance-matched balanced accuracy",
            customdata=np.array(aucs)[:, None],
            hovertemplate="%{x}<br>headline %{y:.3f}<br>ROC-AUC %{customdata[0]:.3f}"
            "<extra></extra>",
        )
    )
    refs = dict(control_rows(result))
    rnd = best_index(result, "random_init")
    if rnd is not None:
        refs["random_init"] = rnd
    embed = [
        r
        for r in range(len(a["job_source"]))
        if a["job_source"][r] == "model"
        and a["job_layer"][r] == 0
        and a["job_probe"][r] == result.metrics["headline_probe"]
    ]
    lines = [
        (f"{SOURCE_NAMES[s]} ({a['job_probe'][r]}, {layer_label(result, r)})", r, SOURCE_COLOURS[s])
        for s, r in refs.items()
    ]
    if embed:
        lines.append(("patch embedding (the model's layer 0)", embed[0], SOURCE_COLOURS["embed"]))
    x_names = [SHORT_PROBE_LABELS[p] for p in probes]
    for name, row, colour in lines:
        value = float(a[f"test_{HEADLINE}"][row])
        fig.add_trace(
            go.Scatter(
                x=[x_names[0], x_names[-1]],
                y=[value, value],
                mode="lines",
                name=name,
                line={"color": colour, "dash": "dot", "width": 2},
            )
        )
    fig.add_hline(y=0.5, line={"color": "#6B7280", "dash": "dashdot"}, annotation_text="chance")
    fig.update_yaxes(title_text="distance-matched balanced accuracy", range=[0.35, 1.02])
    fig.update_xaxes(title_text="probe type")
    fig.update_layout(legend={"orientation": "h", "y": -0.3}, margin={"t": 120})
    return fig


def subspace_figure(result: ProbeResult) -> go.Figure:
    """Spectrum of W_s and the accuracy of the low-rank probe by rank: how many directions."""
    a, m = result.arrays, result.metrics
    sub = m["subspace"]
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=(
            f"eigenvalues of W_s ({m['headline_probe']} probe, {sub['layer']})",
            "low-rank probe: held-out headline by rank",
        ),
    )
    values = a["spectrum"]
    k = min(len(values), 48)
    direction = np.arange(1, k + 1)
    for sign, name, colour in ((1, "positive", COLORWAY[0]), (-1, "negative", COLORWAY[3])):
        keep = np.sign(values[:k]) == sign
        fig.add_trace(
            go.Bar(
                x=direction[keep],
                y=np.abs(values[:k][keep]),
                marker_color=colour,
                name=f"{name} eigenvalue",
                hovertemplate=f"direction %{{x}}<br>{name}, |eigenvalue| %{{y:.3g}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=a["rank_values"],
            y=a["rank_headline"],
            mode="lines+markers",
            name="low-rank probe",
            line={"color": COLORWAY[0]},
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    fig.add_hline(
        y=sub["full_rank"],
        line={"dash": "dash", "color": COLORWAY[0]},
        annotation_text="full quadratic",
        row=1,
        col=2,
    )
    for source, row in control_rows(result).items():
        fig.add_hline(
            y=float(a[f"test_{HEADLINE}"][row]),
            line={"dash": "dot", "color": SOURCE_COLOURS[source]},
            annotation_text=SOURCE_NAMES[source],
            annotation_position="bottom right",
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="direction (sorted by |eigenvalue|)", row=1, col=1)
    fig.update_yaxes(title_text="|eigenvalue|", row=1, col=1)
    fig.update_xaxes(
        title_text="rank r", type="log", tickvals=a["rank_values"].tolist(), row=1, col=2
    )
    fig.update_yaxes(title_text="distance-matched balanced accuracy", row=1, col=2)
    fig.update_layout(
        template=TEMPLATE,
        height=440,
        bargap=0.15,
        title="Does binding live in a few directions?<br><sup>Left: a fast-decaying spectrum "
        "means W_s acts on few directions (blue bars: positive eigenvalues, red: negative; the "
        "bars show |eigenvalue|). Right: the rank at which the low-rank probe catches up with "
        f"the full one ({sub['dims_for_90pct_of_W_energy']} directions hold 90% of W_s's "
        "energy).</sup>",
    )
    return fig


def distance_figure(result: ProbeResult) -> go.Figure:
    """Balanced accuracy per distance bin for the model and each control."""
    a = result.arrays
    edges = a["bin_edges"]
    labels = [f"{edges[k]:.0f}–{edges[k + 1]:.0f}" for k in range(len(edges) - 1)]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            x=labels,
            y=a["bin_positive_fraction"],
            name="share of same-object pairs",
            marker_color="#D1D5DB",
            opacity=0.6,
            customdata=a["bin_pairs"],
            hovertemplate="%{x} patches<br>same-object share %{y:.2f}<br>%{customdata} pairs"
            "<extra></extra>",
        ),
        secondary_y=True,
    )
    rows = {"model": model_best_index(result, result.metrics["headline_probe"])}
    rows.update(control_rows(result))
    rnd = best_index(result, "random_init")
    if rnd is not None:
        rows["random_init"] = rnd
    for source, row in rows.items():
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=a["bin_balanced_accuracy"][row],
                mode="lines+markers",
                name=f"{SOURCE_NAMES[source]} ({a['job_probe'][row]}, {layer_label(result, row)})",
                line={
                    "color": SOURCE_COLOURS[source],
                    "dash": "solid" if source == "model" else "dot",
                },
            ),
            secondary_y=False,
        )
    fig.add_hline(y=0.5, line={"color": "#6B7280", "dash": "dashdot"}, annotation_text="chance")
    fig.update_yaxes(
        title_text="balanced accuracy within the bin", range=[0.3, 1.02], secondary_y=False
    )
    fig.update_yaxes(
        title_text="share of same-object pairs", range=[0, 1], secondary_y=True, showgrid=False
    )
    fig.update_xaxes(title_text="distance between the two patches (patches)")
    fig.update_layout(
        template=TEMPLATE,
        width=1000,
        height=460,
        title="Within one distance, who still tells same from different objects?<br><sup>Balanced "
        "accuracy per distance bin on held-out pairs (bins with fewer than 20 pairs of either "
        "kind are blank);<br>grey bars: how often pairs at that distance are one object.</sup>",
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 125},
    )
    return fig


def hard_pairs_figure(result: ProbeResult) -> go.Figure:
    """Accuracy on the pairs that separate binding from its confounds."""
    a = result.arrays
    rows = {"model": model_best_index(result, result.metrics["headline_probe"])}
    rnd = best_index(result, "random_init")
    if rnd is not None:
        rows["random_init"] = rnd
    rows.update(control_rows(result))
    groups = [
        ("hard_negative_accuracy", "hard negatives<br>(same class, other instance)"),
        ("touching_negative_accuracy", "touching negatives<br>(neighbouring patches, two objects)"),
        ("far_positive_accuracy", "hard positives<br>(one object, far apart)"),
        ("balanced_accuracy", "all pairs<br>(balanced accuracy)"),
    ]
    fig = new_figure(
        title="The pairs that separate binding from look-alike and nearby<br><sup>Held-out "
        "accuracy of each source's best probe (as chosen on validation images) on each kind of "
        "hard pair.<br>A source that only sees colour fails the hard negatives; one that only "
        "sees distance fails the far positives.</sup>",
        width=1000,
        height=480,
        barmode="group",
    )
    for source, row in rows.items():
        fig.add_trace(
            go.Bar(
                x=[g[1] for g in groups],
                y=[float(a[f"test_{g[0]}"][row]) for g in groups],
                name=f"{SOURCE_NAMES[source]} ({a['job_probe'][row]}, {layer_label(result, row)})",
                marker_color=SOURCE_COLOURS[source],
            )
        )
    fig.update_yaxes(title_text="accuracy on these pairs", range=[0, 1.02])
    fig.update_layout(legend={"orientation": "h", "y": -0.3}, margin={"t": 125})
    return fig


def attention_figure(result: ProbeResult) -> go.Figure:
    """Correlation of the next block's attention with IsSameObject scores, per layer."""
    a = result.arrays
    names = a["layer_names"].tolist()
    fig = new_figure(
        title="Does the next block attend along object membership?<br><sup>Pearson r between the "
        "next block's attention weights (mean over heads, symmetrised) and the probe's "
        "same-object probability over held-out pairs (solid, filled dots); partial r with the "
        "exact patch distance partialled out of both (dashed, open diamonds). Where the two "
        "coincide, distance explains none of the correlation.</sup>",
        height=440,
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=a["attention_r"],
            mode="lines+markers",
            name="Pearson r",
            line={"color": COLORWAY[0], "width": 4},
            marker={"size": 9},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=a["attention_partial_r"],
            mode="lines+markers",
            name="partial r given distance",
            line={"color": COLORWAY[1], "dash": "dash", "width": 2},
            marker={"symbol": "diamond-open", "size": 13, "line": {"width": 2}},
        )
    )
    fig.add_hline(y=0.0, line={"color": "#6B7280"})
    fig.update_xaxes(title_text="layer whose scores are compared with the next block's attention")
    fig.update_yaxes(title_text="correlation", range=[-1, 1])
    return fig


def ablation_figure(result: ProbeResult) -> go.Figure:
    """Downstream measures with the binding subspace removed or shuffled, against random ones."""
    a, ab = result.arrays, result.metrics["ablation"]
    conditions = a["ablation_conditions"].tolist()
    measures = a["ablation_measures"].tolist()
    labels = {
        "final_layer_binding": "IsSameObject at the last layer<br>(distance-matched)",
        "final_layer_class_accuracy": "patch class read-out at the last layer<br>(accuracy)",
        "own_head_accuracy": "the model's own head<br>(which shapes appear)",
    }
    colours = {
        "clean": "#6B7280",
        "binding_remove": COLORWAY[3],
        "random_remove": COLORWAY[5],
        "binding_shuffle": COLORWAY[1],
        "random_shuffle": COLORWAY[7],
    }
    chance = float(ab.get("class_chance", float("nan")))
    clean_readout = ab.get("results", {}).get("clean", {}).get("final_layer_class_accuracy")
    below = ""
    if clean_readout is not None and clean_readout < chance:
        below = (
            f" The clean read-out ({clean_readout:.2f}) is below it: a read-out whose predictions "
            "carry no class information scores below this chance whenever the classes it favours "
            "are rare among the test patches, so the last layer holds no patch class that a "
            "linear read-out fitted on other images can use."
        )
    fig = new_figure(
        title=f"Ablating the binding subspace at {ab['layer']} (rank {ab['rank']})<br>"
        "<sup>Held-out "
        "measures downstream, with the top directions of the probe's W_s removed or shuffled "
        f"across patches, against random subspaces of the same rank (mean ± sd of "
        f"{ab['random_subspaces']}).</sup><br><sup>Chance for the class read-out (black "
        f"line): {chance:.2f}, always answering the most common class of the test patches."
        f"{below}</sup>",
        height=480,
        barmode="group",
    )
    for c, cond in enumerate(conditions):
        fig.add_trace(
            go.Bar(
                x=[labels.get(k, k) for k in measures],
                y=a["ablation_mean"][c],
                error_y={
                    "type": "data",
                    "array": a["ablation_std"][c],
                    "visible": cond.startswith("random"),
                },
                name=cond.replace("_", " "),
                marker_color=colours.get(cond, COLORWAY[c % len(COLORWAY)]),
            )
        )
    if "final_layer_class_accuracy" in measures and np.isfinite(chance):
        fig.add_trace(
            go.Scatter(
                x=[labels["final_layer_class_accuracy"]],
                y=[chance],
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 120, "line": {"width": 3}},
                marker_color="black",
                name=f"class read-out chance {chance:.2f}",
                hovertemplate="chance (most common class) %{y:.2f}<extra></extra>",
            )
        )
    fig.update_yaxes(title_text="score (higher = better)", range=[0, 1.02])
    return fig


def overlay_traces(
    image: np.ndarray, scores: np.ndarray, patch_size: int, query: int, *, showscale: bool
) -> tuple[list[go.BaseTraceType], dict]:
    """An image and a per-patch probability map over it, for a subplot grid."""
    h, w = image.shape[:2]
    gw = w // patch_size
    centres_x = patch_size * (np.arange(gw) + 0.5) - 0.5
    centres_y = patch_size * (np.arange(h // patch_size) + 0.5) - 0.5
    traces = [
        go.Image(z=image, hoverinfo="skip"),
        go.Heatmap(
            z=scores.reshape(h // patch_size, gw),
            x=centres_x,
            y=centres_y,
            zmin=0,
            zmax=1,
            colorscale="Inferno",
            opacity=0.6,
            showscale=showscale,
            colorbar={"title": {"text": "P(same object)"}},
            hovertemplate="P(same object) %{z:.2f}<extra></extra>",
        ),
    ]
    r, c = divmod(int(query), gw)
    box = dict(
        type="rect",
        x0=c * patch_size - 0.5,
        x1=(c + 1) * patch_size - 0.5,
        y0=r * patch_size - 0.5,
        y1=(r + 1) * patch_size - 0.5,
        line={"color": "#00E5FF", "width": 2},
    )
    return traces, box


def query_probabilities(logits: np.ndarray, query: int) -> np.ndarray:
    """P(same object) of ``query`` with every patch, from an (N, N) logit matrix whose upper
    triangle (i < j) holds the scores; the query itself gets 1."""
    row = np.where(np.arange(logits.shape[0]) > query, logits[query], logits[:, query]).astype(
        float
    )
    prob = 1.0 / (1.0 + np.exp(-row))
    prob[query] = 1.0
    return prob


def examples_figure(result: ProbeResult, n_images: int = 4) -> go.Figure:
    """Which patches bind with the outlined one: the model beside the pixel and position
    controls."""
    a, m = result.arrays, result.metrics
    p = int(m["patch_size"])
    rows = [("model", model_best_index(result, m["headline_probe"]))]
    rows += [(s, r) for s, r in control_rows(result).items()]
    k = min(n_images, a["show_images"].shape[0])
    titles = []
    for source, row in rows:
        for i in range(k):
            titles.append(
                f"{SOURCE_NAMES[source]} ({a['job_probe'][row]}, {layer_label(result, row)})"
                if i == 0
                else ""
            )
    fig = make_subplots(
        rows=len(rows),
        cols=k,
        subplot_titles=titles,
        horizontal_spacing=0.01,
        vertical_spacing=0.06,
    )
    for ri, (_source, row) in enumerate(rows):
        for i in range(k):
            q = int(a["show_query"][i])
            prob = query_probabilities(a["show_logits"][row, i].astype(np.float32), q)
            traces, box = overlay_traces(
                a["show_images"][i], prob, p, q, showscale=(ri == 0 and i == k - 1)
            )
            for t in traces:
                fig.add_trace(t, row=ri + 1, col=i + 1)
            fig.add_shape(box, row=ri + 1, col=i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", scaleratio=1)
    for ri in range(len(rows)):
        for i in range(k):
            n = ri * k + i + 1
            fig.layout[f"yaxis{'' if n == 1 else n}"].scaleanchor = f"x{'' if n == 1 else n}"
    fig.update_annotations(font_size=12, xanchor="left", x=0.0)
    fig.update_layout(
        template=TEMPLATE,
        width=230 * k + 120,
        height=240 * len(rows) + 120,
        title="Which patches bind with the outlined one?<br><sup>Held-out images; colour = the "
        "probe's probability that each patch is on the same object as the outlined patch.</sup>",
        margin={"t": 100, "l": 10, "r": 10},
    )
    return fig


def table_figure(result: ProbeResult) -> go.Figure:
    """Model and controls x best layer x probe, headline first."""
    rows = sorted(
        result.metrics["table"],
        key=lambda r: (
            ["model", "random_init", "pixels", "positions"].index(r["source"]),
            -np.nan_to_num(r[HEADLINE], nan=-1),
        ),
    )
    cols = [
        ("source", "source"),
        ("probe", "probe"),
        ("best_layer", "best layer"),
        (HEADLINE, "distance-matched BA"),
        ("accuracy", "accuracy"),
        ("majority_baseline", "majority"),
        ("balanced_accuracy", "balanced acc."),
        ("roc_auc", "ROC-AUC"),
        ("hard_negative_accuracy", "hard neg."),
        ("far_positive_accuracy", "far pos."),
    ]

    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(SOURCE_NAMES.get(str(v), v))

    fig = go.Figure(
        go.Table(
            columnwidth=[1.6, 1.1, 1.0, 1.3, 1, 1, 1.1, 1, 1, 1],
            header={"values": [c[1] for c in cols], "fill_color": "#E5E7EB", "align": "left"},
            cells={
                "values": [[fmt(r[c[0]]) for r in rows] for c in cols],
                "align": "left",
                "height": 26,
            },
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        width=1250,
        height=160 + 27 * len(rows),
        title="Every source and probe at its best layer (chosen on validation images; scores "
        "on held-out test images)",
        margin={"t": 60, "l": 10, "r": 10, "b": 10},
    )
    return fig


def figures(result: ProbeResult) -> dict[str, go.Figure]:
    out = {
        "headline": headline_figure(result),
        "probe_types": probe_types_figure(result),
        "subspace": subspace_figure(result),
        "distance": distance_figure(result),
        "hard_pairs": hard_pairs_figure(result),
    }
    if "attention_r" in result.arrays:
        out["attention"] = attention_figure(result)
    if "ablation_mean" in result.arrays:
        out["ablation"] = ablation_figure(result)
    out["examples"] = examples_figure(result)
    out["table"] = table_figure(result)
    return out

"""Figures of the vim probe, built from a ProbeResult alone so saved results can be re-plotted."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import COLORWAY, TEMPLATE, image_overlay, new_figure
from workbench.models.vim import DIRECTIONS
from workbench.results import ProbeResult

DIRECTION_NAMES = {"fwd": "forward scan", "bwd": "backward scan"}
DIRECTION_COLOURS = {"fwd": COLORWAY[0], "bwd": COLORWAY[1]}
MAP_KINDS = ("raw", "rollout", "attribution")
MAP_TITLES = {
    "raw": "raw: class-token row of the hidden attention",
    "rollout": "rollout of hidden attention",
    "attribution": "attribution: rollout × positive gradient",
}


def _spec(result: ProbeResult) -> str:
    return str(result.provenance.get("model_spec"))


def _cell(result: ProbeResult) -> int:
    images, objects = result.arrays["images"], result.arrays["object_patches"]
    return images.shape[1] // round(float(np.sqrt(objects.shape[1])))


def map_overlay(
    result: ProbeResult, image: int, scores: np.ndarray | None, title: str, **kwargs
) -> go.Figure:
    """One image with a per-patch map over it (the shared ``image_overlay``)."""
    return image_overlay(
        result.arrays["images"][image], scores, _cell(result), title=title, **kwargs
    )


def _maps_grid(result: ProbeResult, columns: list[tuple[str, str | None]], title: str) -> go.Figure:
    """Rows: map scenes; columns: (subplot title, array name or None for the bare image)."""
    a = result.arrays
    n_maps = a["images"].shape[0]
    fig = make_subplots(
        rows=n_maps,
        cols=len(columns),
        subplot_titles=[name if m == 0 else "" for m in range(n_maps) for name, _ in columns],
        horizontal_spacing=0.02,
        vertical_spacing=0.03,
    )
    size = a["images"].shape[1]
    for m in range(n_maps):
        for c, (_, key) in enumerate(columns):
            panel = map_overlay(result, m, None if key is None else a[key][m], "")
            for trace in panel.data:
                if isinstance(trace, go.Heatmap):
                    trace.update(showscale=False, zmin=0)
                fig.add_trace(trace, row=m + 1, col=c + 1)
            axis = fig.get_subplot(m + 1, c + 1)
            fig.update_xaxes(visible=False, range=[-0.5, size - 0.5], row=m + 1, col=c + 1)
            fig.update_yaxes(
                visible=False,
                range=[size - 0.5, -0.5],
                scaleanchor=axis.xaxis.plotly_name.replace("axis", ""),
                row=m + 1,
                col=c + 1,
            )
    fig.update_layout(
        template=TEMPLATE,
        width=190 * len(columns) + 80,
        height=190 * n_maps + 150,
        margin={"l": 10, "r": 10, "t": 130, "b": 10},
        title=title,
    )
    fig.update_annotations(font_size=11)
    return fig


def _mass(m: dict, key: str) -> str:
    return f"{m[key]:.0%}" if key in m else "n/a"


def class_token_maps(result: ProbeResult) -> go.Figure:
    """Rows: scenes; columns: the image, then the class token's raw, rollout, attribution maps."""
    a, m = result.arrays, result.metrics
    kinds = [k for k in MAP_KINDS if f"{k}_map" in a]
    columns = [("scene", None), *((MAP_TITLES[k], f"{k}_map") for k in kinds)]
    mass = ", ".join(f"{k} {_mass(m, f'{k}_object_mass')}" for k in kinds)
    return _maps_grid(
        result,
        columns,
        f"Where the class token looks<br><sup>{_spec(result)}: brighter = more of the class "
        f"token's hidden attention (averaged over both scans; layers ≥ {m['rollout_start']}). "
        f"Share on object patches (at least half covered by an object): {mass}; they are "
        f"{m['object_area']:.0%} of the patches, the share a map blind to objects would get. "
        f"Mean over {m['n_maps']} scenes.</sup>",
    )


def side_by_side(result: ProbeResult) -> go.Figure:
    """The Vim's class-token maps next to the ViT's CLS attention rollout on the same scenes."""
    a, m = result.arrays, result.metrics
    columns = [("scene", None), ("Vim: rollout", "rollout_map")]
    if "attribution_map" in a:
        columns.append(("Vim: attribution", "attribution_map"))
    columns.append(("ViT: CLS attention rollout", "vit_rollout_map"))
    accuracy = ""
    if "vit_label_accuracy" in m and "label_accuracy" in m:
        accuracy = (
            f" Accuracy on the {m['n_images']} scenes (which shapes are present): Vim "
            f"{m['label_accuracy']:.0%}, ViT {m['vit_label_accuracy']:.0%}, chance "
            f"{m['chance_label_accuracy']:.0%}."
        )
    return _maps_grid(
        result,
        columns,
        f"Vision Mamba vs ViT on the same scenes<br><sup>{_spec(result)} vs {m['comparison']}: "
        f"share of each map on object patches: Vim rollout {_mass(m, 'rollout_object_mass')}, "
        f"ViT rollout {_mass(m, 'vit_rollout_object_mass')} (objects cover "
        f"{m['object_area']:.0%}).{accuracy}</sup>",
    )


def state_norm_figure(result: ProbeResult) -> go.Figure:
    """Heatmaps (layer × token) of the mean hidden-state norm, one per scan direction."""
    a, m = result.arrays, result.metrics
    norms = a["state_norm"]  # (layers, 2, L)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            DIRECTION_NAMES[d]
            + (" (reads left → right)" if d == "fwd" else " (reads right → left)")
            for d in DIRECTIONS
        ],
        horizontal_spacing=0.08,
    )
    zmax = float(np.percentile(norms, 99)) or None
    for k in range(2):
        fig.add_trace(
            go.Heatmap(
                z=norms[:, k],
                coloraxis="coloraxis",
                hovertemplate="layer %{y}, token %{x}<br>‖h‖ %{z:.3g}<extra></extra>",
            ),
            row=1,
            col=k + 1,
        )
        fig.add_vline(x=m["cls_index"], line={"color": "white", "dash": "dot"}, row=1, col=k + 1)
    fig.update_xaxes(title_text="token position (class token dotted)")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    fig.update_layout(
        template=TEMPLATE,
        width=1000,
        height=160 + 28 * norms.shape[0] + 120,
        coloraxis={
            "colorscale": "Viridis",
            "cmin": 0,
            "cmax": zmax,
            "colorbar": {"title": {"text": "‖h_t‖"}},
        },
        title="How much each scan's hidden state holds along the sequence<br><sup>"
        f"{_spec(result)}: Frobenius norm of h_t (E × N) at each token, mean over "
        f"{m['n_images']} scenes. The forward state at the class token has read the first half of "
        "the patches, the backward state the second half.</sup>",
    )
    return fig


def class_state_figure(result: ProbeResult) -> go.Figure:
    """The class token's state norm per layer and direction, against the mean over tokens."""
    a, m = result.arrays, result.metrics
    norms = a["state_norm"]
    layers = list(range(norms.shape[0]))
    fig = new_figure(
        title="The class token's hidden state, layer by layer<br><sup>"
        f"{_spec(result)}: ‖h‖ at the class token (solid) and averaged over all tokens "
        "(dotted); a solid line above its dotted partner means the state has absorbed more than "
        "a typical token's by the time the scan reaches the class token.</sup>",
        xaxis_title="layer",
        yaxis_title="state norm ‖h‖",
    )
    for k, d in enumerate(DIRECTIONS):
        colour = DIRECTION_COLOURS[d]
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=norms[:, k, m["cls_index"]],
                mode="lines+markers",
                name=f"class token, {DIRECTION_NAMES[d]}",
                line={"color": colour, "width": 3},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=norms[:, k].mean(axis=1),
                mode="lines",
                name=f"mean over tokens, {DIRECTION_NAMES[d]}",
                line={"color": colour, "dash": "dot"},
            )
        )
    fig.update_layout(width=760, height=440)
    return fig


def decay_spectrum_figure(result: ProbeResult) -> go.Figure:
    """Per layer, the distribution of memory lengths 1 / (Δ̄ |A|) over channels and states."""
    a, m = result.arrays, result.metrics
    memory = a["memory_tokens"]  # (layers, 2, E, N)
    fig = new_figure(
        title="Memory decay spectrum: how many tokens each state mode remembers<br><sup>"
        f"{_spec(result)}: e-folding length 1 / (Δ̄ |A|) of every (channel, state) at the "
        "channel's mean step size Δ̄; a mode keeps exp(−Δ̄|A|) per token, i.e. 1/e after this "
        "many tokens. Boxes span the middle half, whiskers the 5-95% range.</sup>",
        xaxis_title="layer",
        yaxis_title="memory length (tokens, log scale)",
        yaxis_type="log",
        boxmode="group",
    )
    for k, d in enumerate(DIRECTIONS):
        values = memory[:, k].reshape(memory.shape[0], -1)
        q = np.percentile(values, [5, 25, 50, 75, 95], axis=1)
        fig.add_trace(
            go.Box(
                x=list(range(memory.shape[0])),
                q1=q[1],
                median=q[2],
                q3=q[3],
                lowerfence=q[0],
                upperfence=q[4],
                name=DIRECTION_NAMES[d],
                marker_color=DIRECTION_COLOURS[d],
            )
        )
    span = [-0.5, memory.shape[0] - 0.5]
    for value, label, colour in (
        (1, "1 token", "#888"),
        (m["sequence_length"], f"whole sequence ({m['sequence_length']} tokens)", "#b22"),
    ):
        fig.add_trace(
            go.Scatter(
                x=span,
                y=[value, value],
                mode="lines",
                name=label,
                line={"dash": "dot", "color": colour},
                hoverinfo="skip",
            )
        )
    fig.update_xaxes(tickmode="linear", dtick=1, zeroline=False)
    fig.update_layout(width=820, height=460)
    return fig


def memory_figure(result: ProbeResult) -> go.Figure:
    """Per layer: the median memory length of the modes, and the hidden attention's reach."""
    a, m = result.arrays, result.metrics
    memory, lookback = a["memory_tokens"], a["lookback_tokens"]
    layers = list(range(memory.shape[0]))
    fig = new_figure(
        title="Effective memory per layer<br><sup>"
        f"{_spec(result)}: solid, how far back the hidden attention reaches (mean |i − j| "
        f"weighted by channel-mean |α_ij|, {m['n_maps']} scenes); dashed, the median e-folding "
        "length of each channel's slowest state mode. The dotted line is uniform attention.</sup>",
        xaxis_title="layer",
        yaxis_title="tokens",
    )
    for k, d in enumerate(DIRECTIONS):
        colour = DIRECTION_COLOURS[d]
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=lookback[:, k],
                mode="lines+markers",
                name=f"attention reach, {DIRECTION_NAMES[d]}",
                line={"color": colour, "width": 3},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=np.median(memory[:, k].max(axis=-1), axis=-1),
                mode="lines+markers",
                name=f"slowest-mode memory, {DIRECTION_NAMES[d]}",
                line={"color": colour, "dash": "dash"},
            )
        )
    fig.add_hline(
        y=m["uniform_lookback_tokens"],
        line={"dash": "dot", "color": "#b22"},
        annotation_text=f"uniform attention ({m['uniform_lookback_tokens']:.1f})",
        annotation_position="top left",
    )
    fig.update_layout(width=820, height=460, yaxis_rangemode="tozero")
    return fig


def branch_figure(result: ProbeResult) -> go.Figure:
    """Forward share of the mixer output per layer (bars) and per layer × token (heatmap)."""
    a, m = result.arrays, result.metrics
    share, by_position = a["forward_share"], a["forward_share_by_position"]
    layers = list(range(len(share)))
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.35, 0.65],
        subplot_titles=["mean over tokens", "per token"],
        horizontal_spacing=0.1,
    )
    fig.add_trace(
        go.Bar(
            x=layers,
            y=share,
            marker_color=COLORWAY[0],
            name="forward share",
            hovertemplate="layer %{x}: %{y:.0%}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_hline(
        y=0.5,
        line={"dash": "dot", "color": "#b22"},
        row=1,
        col=1,
        annotation_text="equal",
        annotation_position="top left",
    )
    fig.add_trace(
        go.Heatmap(
            z=by_position,
            zmid=0.5,
            zmin=0,
            zmax=1,
            colorscale="RdBu",
            colorbar={"title": {"text": "forward share"}, "tickformat": ".0%"},
            hovertemplate="layer %{y}, token %{x}: forward %{z:.0%}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    fig.add_vline(x=m["cls_index"], line={"dash": "dot", "color": "#333"}, row=1, col=2)
    fig.update_yaxes(title_text="forward share", tickformat=".0%", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="token position (class token dotted)", row=1, col=2)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=2)
    fig.update_layout(
        template=TEMPLATE,
        width=1060,
        height=460,
        showlegend=False,
        title="Forward vs backward scan: who writes the mixer output<br><sup>"
        f"{_spec(result)}: the mixer adds out_proj(gate ⊙ y_f)/2 + out_proj(gate ⊙ y_b)/2; "
        "shown is the forward term's share of the two squared norms (blue: forward, red: "
        f"backward), mean over {m['n_images']} scenes. Early tokens can only lean on the "
        "backward scan for context, late ones on the forward scan.</sup>",
    )
    return fig


def ablation_figure(result: ProbeResult) -> go.Figure:
    """How far the logits move when one branch of one layer is zeroed."""
    change = result.arrays["ablation_logit_change"]
    layers = list(range(change.shape[0]))
    fig = new_figure(
        title="What each branch is worth: zero it and watch the logits<br><sup>"
        f"{_spec(result)}: ‖logits(branch zeroed) − logits‖ / ‖logits‖ per layer, mean over "
        f"{result.metrics['n_images']} scenes; 0 means the branch does not matter.</sup>",
        xaxis_title="layer",
        yaxis_title="relative logit change",
        yaxis_tickformat=".0%",
        barmode="group",
    )
    for k, d in enumerate(DIRECTIONS):
        fig.add_trace(
            go.Bar(
                x=layers,
                y=change[:, k],
                name=f"{DIRECTION_NAMES[d]} zeroed",
                marker_color=DIRECTION_COLOURS[d],
            )
        )
    fig.update_layout(width=760, height=420)
    return fig


def attention_matrix_figure(
    result: ProbeResult, image: int = 0, layer: int | None = None
) -> go.Figure:
    """The channel-mean hidden attention |α| of one layer, forward and backward, on a log scale."""
    a = result.arrays
    layer = a["attention"].shape[1] - 1 if layer is None else layer
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[f"{DIRECTION_NAMES[d]}" for d in DIRECTIONS],
        horizontal_spacing=0.08,
    )
    for k in range(2):
        z = a["attention"][image, layer, k]
        fig.add_trace(
            go.Heatmap(
                z=np.log10(np.maximum(z, 1e-8)),
                coloraxis="coloraxis",
                hovertemplate="token %{y} reads token %{x}<br>log10 mean|α| %{z:.2f}"
                "<extra></extra>",
            ),
            row=1,
            col=k + 1,
        )
    L = a["attention"].shape[-1]
    fig.update_xaxes(title_text="source token j", constrain="domain", range=[-0.5, L - 0.5])
    fig.update_yaxes(
        title_text="output token i", range=[L - 0.5, -0.5], scaleanchor="x", constrain="domain"
    )
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    fig.update_layout(
        template=TEMPLATE,
        width=1000,
        height=560,
        coloraxis={
            "colorscale": "Inferno",
            "cmin": -6,  # plotly ignores a lone cmin: the top comes from the data
            "cmax": float(np.log10(max(float(a["attention"][image, layer].max()), 1e-6))),
            "colorbar": {"title": {"text": "log10 mean |α|"}},
        },
        title=f"Hidden attention of layer {layer} (scene {image})<br><sup>{_spec(result)}: "
        "channel-mean |α_ij| with y_i = Σ_j α_ij x_j + D x_i. The forward scan only reads "
        "earlier tokens (lower triangle), the backward scan only later ones; the bright band "
        "along the diagonal is short memory, vertical stripes are tokens many others read.</sup>",
    )
    return fig


def figures(result: ProbeResult) -> dict[str, go.Figure]:
    out = {
        "class_token_maps": class_token_maps(result),
        "state_norms": state_norm_figure(result),
        "class_token_state": class_state_figure(result),
        "decay_spectrum": decay_spectrum_figure(result),
        "memory": memory_figure(result),
        "branches": branch_figure(result),
        "hidden_attention": attention_matrix_figure(result),
    }
    if "ablation_logit_change" in result.arrays:
        out["branch_ablation"] = ablation_figure(result)
    if "vit_rollout_map" in result.arrays:
        out["side_by_side"] = side_by_side(result)
    return {name: _tidy(fig) for name, fig in out.items()}


def _tidy(fig: go.Figure) -> go.Figure:
    """Whole-number ticks on layer axes, and no zero lines across heatmaps and images."""
    fig.update_xaxes(zeroline=False)
    if any(isinstance(t, go.Heatmap) for t in fig.data):
        fig.update_yaxes(zeroline=False)
    for name in dir(fig.layout):
        if name.startswith(("xaxis", "yaxis")):
            axis = getattr(fig.layout, name)
            if getattr(axis, "title", None) is not None and axis.title.text == "layer":
                axis.update(tickmode="linear", dtick=1)
    return fig

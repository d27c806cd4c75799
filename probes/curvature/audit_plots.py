"""Figures of the membership audit (``probes.curvature.audit``), built from a ProbeResult."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probes.curvature.audit import ATTACK_NAMES, ATTACKS
from probes.curvature.plots import (
    BASE_COLOUR,
    KFAC_COLOUR,
    SVD_COLOUR,
    _spec,
    _title,
    add_bar_pair,
)
from workbench.figures import TEMPLATE
from workbench.results import ProbeResult

STATE_STYLE = {
    "base": ("unedited", BASE_COLOUR),
    "kfac": ("K-FAC at ρ", KFAC_COLOUR),
    "svd": ("SVD, matched perplexity", SVD_COLOUR),
}
SWEEP_ATTACKS = ("loss", "min_k_pp")
"""The attacks the sweep figure draws: the plain likelihood, and the calibrated one."""


def _states(result: ProbeResult) -> list[str]:
    return [str(s) for s in result.arrays["audit_states"]]


def audit_sweep_figure(result: ProbeResult) -> go.Figure:
    """Recitation against membership AUC for every ρ and every SVD truncation."""
    a, m = result.arrays, result.metrics
    fig = make_subplots(
        rows=1,
        cols=len(SWEEP_ATTACKS),
        subplot_titles=[f"{ATTACK_NAMES[x]} attack" for x in SWEEP_ATTACKS],
        shared_yaxes=True,
        horizontal_spacing=0.06,
    )
    for col, attack in enumerate(SWEEP_ATTACKS, start=1):
        row = ATTACKS.index(attack)
        for prefix, label, colour in (
            ("kfac", "K-FAC, ρ", KFAC_COLOUR),
            ("svd", "SVD, energy", SVD_COLOUR),
        ):
            if f"{prefix}_sweep_mia_auc" not in a:
                continue
            text = [f"{v:g}" for v in a[f"{prefix}_sweep_value"]]
            for metric, filled in (("loose", True), ("strict", False)):
                marker = {"size": 9, "color": colour}
                if not filled:
                    marker = {"size": 9, "color": "white", "line": {"color": colour, "width": 2}}
                fig.add_trace(
                    go.Scatter(
                        x=a[f"{prefix}_sweep_mia_auc"][row],
                        y=a[f"{prefix}_sweep_{metric}"],
                        mode="lines+markers+text" if filled else "markers",
                        text=text,
                        textposition="top left",
                        textfont={"size": 10, "color": colour},
                        name=f"{label} ({'loose' if filled else 'verbatim'})",
                        legendgroup=f"{prefix}{metric}",
                        showlegend=col == 1,
                        line={"color": colour},
                        marker=marker,
                        hovertemplate=f"{label} %{{text}}<br>AUC %{{x:.3f}}<br>{metric} "
                        "%{y:.0%}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        fig.add_trace(
            go.Scatter(
                x=[m[f"mia_auc_{attack}_base"]],
                y=[m["loose_before"]],
                mode="markers",
                name="unedited model",
                legendgroup="base",
                showlegend=col == 1,
                marker={"symbol": "star", "size": 16, "color": BASE_COLOUR},
            ),
            row=1,
            col=col,
        )
        fig.add_vline(x=0.5, line={"dash": "dot", "color": "#888"}, row=1, col=col)
    fig.update_xaxes(title_text="membership AUC (0.5 = chance)", range=[0.4, 1.03])
    fig.update_yaxes(title_text="share of the memorized set recited", tickformat=".0%", col=1)
    fig.update_yaxes(range=[-0.04, 1.08])
    fig.update_layout(
        template=TEMPLATE,
        height=500,
        width=1000,
        margin={"t": 150},
        legend={"x": 1.02, "y": 1, "xanchor": "left"},
        title=_title(
            "Does removing recitation remove membership?",
            f"{_spec(result)}: each point is one edit; y = greedy recitation of the memorized "
            f"set, x = how well an attack tells its {m['audit_members']} sequences from "
            f"{m['audit_non_members']} non-members ({m['audit_non_member_source']}). Points "
            "low on the left forgot; points low on the right stopped reciting but are still "
            "recognisable.",
            width=130,
        ),
    )
    return fig


def audit_battery_figure(result: ProbeResult) -> go.Figure:
    """AUC and TPR at 1% FPR of every attack, unedited vs each edit."""
    m = result.metrics
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("ROC AUC (0.5 = chance)", "true-positive rate at 1% false positives"),
        horizontal_spacing=0.09,
    )
    names = [ATTACK_NAMES[x] for x in ATTACKS]
    for state in _states(result):
        label, colour = STATE_STYLE[state]
        if state == "kfac":
            label = f"K-FAC ρ={m['rho']:g}"
        ys = [[m[f"mia_{key}_{x}_{state}"] for x in ATTACKS] for key in ("auc", "tpr1")]
        add_bar_pair(fig, names, ys, label, colour, "%{y:.2f}")
    fig.add_hline(y=0.5, line={"dash": "dot", "color": "#888"}, row=1, col=1)
    fig.update_yaxes(range=[0, 1.12])
    fig.update_yaxes(tickformat=".0%", col=2)
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        height=450,
        width=1000,
        margin={"t": 150},
        title=_title(
            "Membership-inference battery before and after the edit",
            f"{_spec(result)}: loss, zlib ratio (Carlini et al. 2021), Min-K% (Shi et al. 2024) "
            f"and Min-K%++ (Zhang et al. 2024; k = {m['audit_min_k']:g}) on whole sequences; "
            f"{m['audit_members']} members vs {m['audit_non_members']} non-members",
            width=130,
        ),
    )
    return fig


def extraction_figure(result: ProbeResult) -> go.Figure:
    """Greedy recitation beside extraction by sampling, memorized set and controls."""
    m = result.metrics
    states = _states(result)
    greedy = {"base": m["base"], "kfac": m["kfac"], "svd": m.get("svd_matched")}
    measures = (
        ("greedy, verbatim", lambda s: greedy[s]["strict_memorized"]),
        ("≥ 1 sample verbatim", lambda s: m[f"sampled_any_exact_memorized_{s}"]),
        ("≥ 1 sample loose", lambda s: m[f"sampled_any_loose_memorized_{s}"]),
        ("samples verbatim", lambda s: m[f"sampled_sample_exact_memorized_{s}"]),
        ("controls: ≥ 1 sample loose", lambda s: m[f"sampled_any_loose_control_{s}"]),
    )
    fig = go.Figure()
    for state in states:
        label, colour = STATE_STYLE[state]
        fig.add_trace(
            go.Bar(
                x=[name for name, _ in measures],
                y=[float(get(state)) for _, get in measures],
                name=label if state != "kfac" else f"K-FAC ρ={m['rho']:g}",
                marker_color=colour,
                texttemplate="%{y:.0%}",
                textposition="outside",
                textfont={"size": 10},
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        height=450,
        width=1000,
        margin={"t": 150},
        yaxis={"range": [0, 1.12], "tickformat": ".0%", "title": "share"},
        title=_title(
            "Extraction under sampling, beside greedy recitation",
            f"{_spec(result)}: {m['audit_samples']} continuations per prompt at temperature "
            f"{m['audit_temperature']:g} (seeded); share of the memorized set with at least one "
            "verbatim (or loose) sample, and the share of all samples that are verbatim. The "
            "controls are the floor.",
            width=130,
        ),
    )
    return fig


def audit_figures(result: ProbeResult) -> dict[str, go.Figure]:
    a, m = result.arrays, result.metrics
    if "audit_states" not in a:
        return {}
    out = {"audit_sweep": audit_sweep_figure(result), "audit_battery": audit_battery_figure(result)}
    if any(k.startswith("sampled_any_exact_memorized_") for k in m):
        out["audit_extraction"] = extraction_figure(result)
    return out

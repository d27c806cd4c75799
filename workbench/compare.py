"""Several runs of one probe on one axis, from the metrics the probe declares comparable.

Each probe lists its ``METRICS`` (``workbench.probe.Metric``): a scalar becomes one dot per run,
a per-position array (accuracy per layer) one line per run. A new probe gets comparisons by
declaring its metrics; nothing here knows any probe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import WorkbenchError
from workbench.figures import COLORWAY, new_figure
from workbench.probe import Metric, get_probe
from workbench.results import ProbeResult


def run_labels(results: Sequence[ProbeResult]) -> list[str]:
    """One readable label per run: its model, with the seed or position when models repeat."""
    labels = [str(r.provenance.get("model_spec") or r.probe) for r in results]
    counts = Counter(labels)
    seeds = [r.provenance.get("seed") for r in results]
    out = []
    for k, label in enumerate(labels):
        if counts[label] > 1:
            same = [seeds[j] for j in range(len(labels)) if labels[j] == label]
            label += f" (seed {seeds[k]})" if len(set(same)) == len(same) else f" (run {k + 1})"
        out.append(label)
    return out


def comparable(results: Sequence[ProbeResult]) -> tuple[str, tuple[Metric, ...]]:
    """The one probe of ``results`` and its metrics present in at least one run."""
    if len(results) < 1:
        raise WorkbenchError("compare needs at least one run")
    probes = Counter(r.probe for r in results)
    if len(probes) > 1:
        found = ", ".join(f"{p} ({n} runs)" for p, n in probes.items())
        raise WorkbenchError(
            f"compare draws runs of one probe on shared axes; got {found}. Compare each probe's "
            "runs separately"
        )
    probe = results[0].probe
    metrics = tuple(
        m
        for m in get_probe(probe).METRICS
        if any((m.key in r.arrays) if m.over else (m.key in r.metrics) for r in results)
    )
    if not metrics:
        raise WorkbenchError(f"none of the {probe} probe's comparable metrics is in these runs")
    return probe, metrics


def compare_figures(
    results: Sequence[ProbeResult], labels: Sequence[str] | None = None
) -> dict[str, go.Figure]:
    """``compare_NAME`` figures: curves for per-position metrics, then one chart of scalars."""
    probe, metrics = comparable(results)
    labels = list(labels) if labels is not None else run_labels(results)
    figures: dict[str, go.Figure] = {}
    for metric in (m for m in metrics if m.over):
        figures[f"compare_{metric.key}"] = _curves(results, labels, metric, probe)
    scalars = [m for m in metrics if not m.over]
    if scalars:
        figures["compare_summary"] = _scalars(results, labels, scalars, probe)
    return figures


def _curves(
    results: Sequence[ProbeResult], labels: Sequence[str], metric: Metric, probe: str
) -> go.Figure:
    fig = new_figure(
        title=f"{probe}: {metric.label}, {len(results)} runs",
        yaxis_title=metric.label,
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
    )
    for k, (result, label) in enumerate(zip(results, labels, strict=True)):
        if metric.key not in result.arrays:
            continue
        y = np.asarray(result.arrays[metric.key], dtype=float).reshape(-1)
        names = result.arrays.get(metric.over or "")
        x = [str(v) for v in names] if names is not None and len(names) == len(y) else None
        fig.add_trace(
            go.Scatter(
                x=x if x is not None else list(range(len(y))),
                y=100 * y if metric.percent else y,
                mode="lines+markers",
                name=label,
                line={"color": COLORWAY[k % len(COLORWAY)]},
            )
        )
    if metric.percent:
        fig.update_yaxes(ticksuffix="%")
    return fig


def _scalars(
    results: Sequence[ProbeResult], labels: Sequence[str], metrics: list[Metric], probe: str
) -> go.Figure:
    """One small bar chart per metric (each with its own axis and unit), one bar per run."""
    arrows = {"higher": " (higher is better)", "lower": " (lower is better)", "neither": ""}
    fig = make_subplots(
        rows=len(metrics),
        cols=1,
        subplot_titles=[m.label + arrows[m.better] for m in metrics],
        vertical_spacing=min(0.12, 0.5 / len(metrics)),
    )
    fig.update_layout(new_figure().layout)
    fig.update_layout(
        title=f"{probe}: {len(results)} runs",
        height=120 + len(metrics) * (40 + 24 * len(results)),
        showlegend=False,
        margin={"l": 10},
    )
    colours = [COLORWAY[k % len(COLORWAY)] for k in range(len(results))]
    for row, metric in enumerate(metrics, start=1):
        values = [r.metrics.get(metric.key) for r in results]
        shown = [
            (label, v, c)
            for label, v, c in zip(labels, values, colours, strict=True)
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        fig.add_trace(
            go.Bar(
                x=[100 * v if metric.percent else v for _, v, _ in shown],
                y=[label for label, _, _ in shown],
                orientation="h",
                marker_color=[c for _, _, c in shown],
                text=[metric.format(v) for _, v, _ in shown],
                textposition="auto",
                hovertemplate="%{y}: %{text}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", automargin=True, row=row, col=1)
        if metric.percent:
            fig.update_xaxes(ticksuffix="%", row=row, col=1)
    return fig


def load_runs(folders: Sequence[str | Path]) -> list[ProbeResult]:
    """Result folders as ProbeResults; every folder must hold one run."""
    return [ProbeResult.load(folder) for folder in folders]

"""Several runs of one probe on one axis, from the metrics the probe declares comparable.

Each probe lists its ``METRICS`` (``workbench.probe.Metric``): a scalar becomes one bar per run,
a per-position array (accuracy per layer) one line per run with its floors (controls, chance)
dashed in the run's colour, and a curve ``against`` another array a trade-off per run. A new
probe gets comparisons by declaring its metrics; nothing here knows any probe. ``load_runs``
takes result folders and sweep folders; ``CompareExplorer`` is the notebook widget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import WorkbenchError
from workbench.figures import COLORWAY, new_figure
from workbench.probe import Metric, get_probe
from workbench.results import ProbeResult
from workbench.widgets import FigureView


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


def figure_key(metric: Metric) -> str:
    """The comparison figure's name for ``metric``: ``compare_KEY`` (``_vs_X`` for a trade-off)."""
    return f"compare_{metric.key}" + (f"_vs_{metric.against}" if metric.against else "")


def compare_figures(
    results: Sequence[ProbeResult],
    labels: Sequence[str] | None = None,
    colours: Sequence[str] | None = None,
) -> dict[str, go.Figure]:
    """``compare_NAME`` figures: curves for per-position metrics, then one chart of scalars.

    ``colours`` (one per run) keeps a run's colour when a caller draws a subset of its runs.
    """
    probe, metrics = comparable(results)
    labels = list(labels) if labels is not None else run_labels(results)
    if colours is None:
        colours = [COLORWAY[k % len(COLORWAY)] for k in range(len(results))]
    figures: dict[str, go.Figure] = {}
    for metric in (m for m in metrics if m.over):
        figures[figure_key(metric)] = _curves(results, labels, colours, metric, probe)
    scalars = [m for m in metrics if not m.over]
    if scalars:
        figures["compare_summary"] = _scalars(results, labels, colours, scalars, probe)
    return figures


RUN_TRACE = "run"
"""``meta`` of the one trace per run in a comparison figure; floors carry ``baseline``."""
_DASHES = (
    ("dash", "dashed"),
    ("dot", "dotted"),
    ("dashdot", "dash-dot"),
    ("longdash", "long dashes"),
)


def _curves(
    results: Sequence[ProbeResult],
    labels: Sequence[str],
    colours: Sequence[str],
    metric: Metric,
    probe: str,
) -> go.Figure:
    """One line per run; its floors dashed in the same colour (grouped with it in the legend)."""
    scale = 100.0 if metric.percent else 1.0
    title = f"{probe}: {metric.label}, {len(results)} runs"
    if metric.baselines:
        floors = [
            f"{_readable(key)} {_DASHES[n % len(_DASHES)][1]}"
            for n, key in enumerate(metric.baselines)
        ]
        title += f"<br><sup>floors in each run's colour: {', '.join(floors)}</sup>"
    fig = new_figure(
        title=title,
        yaxis_title=metric.label if not metric.against else _readable(metric.key),
        xaxis_title=_readable(metric.against) if metric.against else None,
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
    )
    for result, label, colour in zip(results, labels, colours, strict=True):
        if metric.key not in result.arrays:
            continue
        y = np.asarray(result.arrays[metric.key], dtype=float).reshape(-1)
        names = result.arrays.get(metric.over or "")
        positions = [str(v) for v in names] if names is not None and len(names) == len(y) else None
        if metric.against:  # a trade-off: the position (e.g. rho) is in the hover text
            x: list[Any] = np.asarray(result.arrays[metric.against], dtype=float).tolist()
            text = [f"{_readable(metric.over or '')} {p}" for p in positions or []]
        else:
            x, text = positions or list(range(len(y))), []
        fig.add_trace(
            go.Scatter(
                x=x,
                y=scale * y,
                mode="lines+markers",
                text=text or None,
                hovertemplate=(f"{label}<br>%{{text}}<br>" if text else f"{label}<br>")
                + ("%{x:.4g}" if metric.against else "%{x}")
                + ": %{y:.4g}<extra></extra>",
                name=label,
                legendgroup=label,
                meta=RUN_TRACE,
                line={"color": colour},
            )
        )
        for n, key in enumerate(metric.baselines):
            floor = _baseline(result, key, len(y))
            if floor is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=scale * floor,
                    mode="lines",
                    name=f"{label}: {_readable(key)}",
                    legendgroup=label,
                    showlegend=False,
                    meta="baseline",
                    line={"color": colour, "dash": _DASHES[n % len(_DASHES)][0], "width": 1.5},
                    hovertemplate=f"{label}<br>{_readable(key)}: %{{y:.3g}}<extra></extra>",
                )
            )
    if metric.percent:
        fig.update_yaxes(ticksuffix="%")
    return fig


def _baseline(result: ProbeResult, key: str, length: int) -> np.ndarray | None:
    """A floor as long as the curve: an array of that length, or a scalar metric repeated."""
    if key in result.arrays:
        values = np.asarray(result.arrays[key], dtype=float).reshape(-1)
        return values if len(values) == length else None
    value = result.metrics.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return np.full(length, float(value))
    return None


def _readable(key: str) -> str:
    return key.replace("_", " ")


def _scalars(
    results: Sequence[ProbeResult],
    labels: Sequence[str],
    colours: Sequence[str],
    metrics: list[Metric],
    probe: str,
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


def load_runs(folders: Sequence[str | Path], probe: str | None = None) -> list[ProbeResult]:
    """The runs in ``folders``: result folders, and sweep folders (their finished points).

    ``probe`` keeps that probe's runs only, for sweeps over several probes.
    """
    from workbench.sweep import SWEEP_FILE, run_folders

    paths: list[Path] = []
    for folder in map(Path, folders):
        is_sweep = (folder / SWEEP_FILE).is_file() and not (folder / "result.json").is_file()
        paths += run_folders(folder) if is_sweep else [folder]
    results = [ProbeResult.load(path) for path in paths]
    if probe is not None:
        results = [r for r in results if r.probe == probe]
        if not results:
            raise WorkbenchError(f"none of these runs is of the {probe} probe")
    return results


class CompareExplorer(widgets.VBox):
    """Pick runs and a metric; the figure is redrawn with the same code as ``compare_figures``.

    Runs keep their colour whichever subset is shown, so a line is recognisable across views.
    """

    def __init__(self, results: Sequence[ProbeResult], labels: Sequence[str] | None = None):
        _, metrics = comparable(results)
        self.results = list(results)
        self.labels = list(labels) if labels is not None else run_labels(self.results)
        self.colours = [COLORWAY[k % len(COLORWAY)] for k in range(len(self.results))]
        choices = [(m.label, figure_key(m)) for m in metrics if m.over]
        if any(not m.over for m in metrics):
            choices.append(("summary of scalar metrics", "compare_summary"))
        self.metric = widgets.Dropdown(options=choices, description="metric")
        self.runs = widgets.SelectMultiple(
            options=[(label, k) for k, label in enumerate(self.labels)],
            value=tuple(range(len(self.results))),
            description="runs",
            rows=min(8, len(self.results)),
            layout=widgets.Layout(width="100%"),
        )
        self.view = FigureView()
        self.metric.observe(self._redraw, names="value")
        self.runs.observe(self._redraw, names="value")
        super().__init__([widgets.HBox([self.metric, self.runs]), self.view])
        self._redraw()

    def _redraw(self, *_: Any) -> None:
        picked = sorted(self.runs.value)
        if not picked:
            self.view.show(new_figure(title="Pick at least one run"))
            return
        figures = compare_figures(
            [self.results[k] for k in picked],
            [self.labels[k] for k in picked],
            [self.colours[k] for k in picked],
        )
        key = self.metric.value
        self.view.show(figures.get(key) or new_figure(title=f"None of the picked runs has {key}"))

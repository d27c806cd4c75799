"""Comparisons: runs of one probe on shared axes from its METRICS, one trace per run with its
floors, trade-off curves, the notebook widget, the CLI on sweep folders and the report's pages."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.compare import RUN_TRACE, CompareExplorer, compare_figures, load_runs
from workbench.errors import WorkbenchError
from workbench.report import build_report
from workbench.results import ProbeResult
from workbench.sweep import PointRecord, SweepRecord

cli = CliRunner()
LAYERS = np.array(["embed", "block 0", "block 1", "block 2"])


def binding_run(model: str, shift: float) -> ProbeResult:
    """A binding result with what its comparison reads: the curve by layer and the controls."""
    return ProbeResult(
        probe="binding",
        metrics={
            "distance_matched_balanced_accuracy": 0.7 + shift,
            "pixel_control": 0.55,
            "position_control": 0.5 + shift,
            "random_init_control": 0.52,
        },
        arrays={
            "headline_probe_by_layer": np.array([0.5, 0.6, 0.7, 0.65]) + shift,
            "layer_names": LAYERS,
        },
        figures={},
        provenance={"model_spec": model, "seed": 0},
    )


def curvature_run(model: str, scale: float) -> ProbeResult:
    return ProbeResult(
        probe="curvature",
        metrics={"strict_after": 0.1 * scale},
        arrays={
            "kfac_sweep_value": np.array([0.9, 0.97, 0.99]),
            "kfac_sweep_strict": np.array([0.05, 0.3, 0.6]) * scale,
            "kfac_sweep_perplexity": np.array([40.0, 31.0, 30.2]) * scale,
        },
        figures={},
        provenance={"model_spec": model, "seed": 0},
    )


def run_traces(fig) -> list:
    return [t for t in fig.data if t.meta == RUN_TRACE]


def test_binding_draws_one_curve_per_model_with_its_controls():
    runs = [binding_run(f"zoo:vit-{k}", 0.05 * k) for k in range(3)]
    figures = compare_figures(runs)
    curves = figures["compare_headline_probe_by_layer"]
    lines = run_traces(curves)
    assert [t.name for t in lines] == ["zoo:vit-0", "zoo:vit-1", "zoo:vit-2"]
    assert list(lines[2].x) == list(LAYERS)
    assert np.allclose(lines[2].y, 100 * (np.array([0.5, 0.6, 0.7, 0.65]) + 0.1))
    floors = [t for t in curves.data if t.meta == "baseline"]
    assert len(floors) == 3 * 3  # pixel, position, random-init control for each run
    position = next(t for t in floors if t.name == "zoo:vit-2: position control")
    assert np.allclose(position.y, 100 * 0.6) and position.line.color == lines[2].line.color
    assert position.line.dash
    bars = figures["compare_summary"].data[0]
    assert list(bars.y) == ["zoo:vit-0", "zoo:vit-1", "zoo:vit-2"]


def test_curvature_draws_a_trade_off_curve_per_model():
    runs = [curvature_run("zoo:a", 1.0), curvature_run("zoo:b", 2.0)]
    figures = compare_figures(runs)
    trade = figures["compare_kfac_sweep_strict_vs_kfac_sweep_perplexity"]
    lines = run_traces(trade)
    assert len(lines) == 2
    assert list(lines[1].x) == [80.0, 62.0, 60.4]  # perplexity on x
    assert np.allclose(lines[1].y, [10.0, 60.0, 120.0])  # recited verbatim, in %
    assert "kfac sweep perplexity" in trade.layout.xaxis.title.text
    assert len(run_traces(figures["compare_kfac_sweep_strict"])) == 2  # and by rho


def test_runs_of_different_probes_are_refused_by_name():
    with pytest.raises(
        WorkbenchError, match=r"one probe.*binding \(1 runs\), curvature \(1 runs\)"
    ):
        compare_figures([binding_run("a", 0), curvature_run("b", 1)])


def test_the_widget_redraws_when_runs_or_metric_change():
    runs = [binding_run(f"zoo:vit-{k}", 0.05 * k) for k in range(3)]
    explorer = CompareExplorer(runs)
    assert explorer.metric.value == "compare_headline_probe_by_layer"
    assert len(run_traces(explorer.view.figure)) == 3
    colour = run_traces(explorer.view.figure)[2].line.color
    explorer.runs.value = (0, 2)
    shown = run_traces(explorer.view.figure)
    assert [t.name for t in shown] == ["zoo:vit-0", "zoo:vit-2"]
    assert shown[1].line.color == colour  # a run keeps its colour in a subset
    explorer.metric.value = "compare_summary"
    assert list(explorer.view.figure.data[0].y) == ["zoo:vit-0", "zoo:vit-2"]
    explorer.runs.value = ()
    assert "Pick at least one run" in explorer.view.figure.layout.title.text


def saved_sweep(root, runs: list[ProbeResult]) -> None:
    points = []
    for k, result in enumerate(runs):
        name = f"{result.probe}-{k}"
        result.save(root / name, formats=("html",))
        points.append(
            PointRecord(name, result.probe, str(result.provenance["model_spec"]), None, {}, "done")
        )
    SweepRecord(points=points).write(root)


def test_compare_reads_sweep_folders_and_refuses_mixed_probes(tmp_path):
    saved_sweep(tmp_path, [binding_run("m0", 0), binding_run("m1", 0.1), curvature_run("c", 1)])
    mixed = cli.invoke(app, ["compare", str(tmp_path), "--out", str(tmp_path / "cmp")])
    assert mixed.exit_code == 2 and "runs of one probe" in mixed.output
    ok = cli.invoke(
        app,
        [
            "compare",
            str(tmp_path),
            "--probe",
            "binding",
            "--out",
            str(tmp_path / "cmp"),
            "--format",
            "html",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "cmp" / "compare_headline_probe_by_layer.html").is_file()
    assert [r.provenance["model_spec"] for r in load_runs([tmp_path], "binding")] == ["m0", "m1"]


def test_the_report_links_a_comparison_page_per_sweep_and_probe(tmp_path):
    saved_sweep(
        tmp_path / "sweep", [binding_run("m0", 0), binding_run("m1", 0.1), curvature_run("c", 1)]
    )
    index = build_report(tmp_path).read_text()
    pages = sorted(p.name for p in tmp_path.glob("compare-*.html"))
    assert pages == ["compare-sweep-binding.html"]  # curvature has one run: nothing to compare
    assert 'href="compare-sweep-binding.html"' in index
    page = (tmp_path / pages[0]).read_text()
    assert 'src="plotly.min.js"' in page and "binding-0" in page and "binding-1" in page
    blocks = re.findall(
        r'<script type="application/json" id="compare-[^"]+">(.*?)</script>', page, re.S
    )
    figures = [json.loads(b) for b in blocks]
    curve = next(f for f in figures if "by layer" in f["layout"]["title"]["text"])
    assert [t["name"] for t in curve["data"] if t.get("meta") == RUN_TRACE] == ["m0", "m1"]
    (tmp_path / "sweep" / "sweep.json").unlink()  # the sweep is gone: so is its page
    assert "compare-" not in build_report(tmp_path).read_text()
    assert not list(tmp_path.glob("compare-*.html"))


@pytest.mark.slow
def test_the_compare_notebook_draws_a_sweep(tmp_path):
    import nbformat
    import papermill as pm

    from workbench.runner import NOTEBOOKS

    saved_sweep(tmp_path / "sweep", [binding_run("m0", 0), binding_run("m1", 0.1)])
    executed = tmp_path / "compare.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "compare.ipynb"),
        str(executed),
        parameters={"runs": [str(tmp_path / "sweep")], "probe": "binding"},
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        kernel_name="python3",
    )
    outputs = [o for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) == 2  # the by-layer curves and the summary
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)

"""Sweeps: points from a file, each an ordinary run in a process of its own, on the local pool or
Ray; finished points are skipped, a killed or failing point is retried once, the sweep goes on."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import probes
from workbench.cli import app
from workbench.errors import WorkbenchError
from workbench.sweep import (
    SWEEP_FILE,
    load_sweep,
    parse_sweep,
    run_sweep,
    start_local_ray,
    summary_table,
)

cli = CliRunner()

# A probe small enough that a run is mostly process start-up: the mean residual norm of a few
# seeded sentences. ``hold_file`` makes a first run write its pid there and wait to be killed;
# ``fail`` makes every run fail.
TOY_PROBE = '''
"""toy: residual norms of a few seeded sentences (for testing sweeps)."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench import capture
from workbench.probe import Findings, Metric, ProbeConfig, run_frame

NAME = "toy"
FAMILIES = ("encoder", "causal-lm")
DEFAULT_MODELS = tuple(os.environ.get("TOY_MODELS", "").split(os.pathsep))


@dataclass(frozen=True)
class Config(ProbeConfig):
    n_inputs: int = 4
    hold_file: str = ""
    fail: bool = False


METRICS = (
    Metric("mean_norm", "mean residual norm", better="neither"),
    Metric("norm", "residual norm by layer", better="neither", over="layer_names"),
)


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=lambda result: {})
def run(model, config, data):
    if config.fail:
        raise ValueError("planted failure")
    if config.hold_file and not Path(config.hold_file).exists():
        Path(config.hold_file).write_text(str(os.getpid()))
        time.sleep(600)
    rng = np.random.default_rng(config.seed)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 200, 6)) for _ in range(config.n_inputs)]
    sites = model.layer_sites("resid_post")
    cache = capture(model, texts, sites, progress=False)
    try:
        mask = cache.attention_mask.bool()
        norm = np.array([float(cache[s].norm(dim=-1)[mask].mean()) for s in sites])
    finally:
        cache.close()
    return Findings(
        metrics={"mean_norm": float(norm.mean())},
        arrays={"norm": norm, "layer_names": np.array(sites)},
    )
'''


@pytest.fixture(scope="module")
def toy_probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy-probes")
    (folder / "toy").mkdir()
    (folder / "toy" / "__init__.py").write_text(TOY_PROBE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_PROBE_PATH", str(folder))  # worker processes inherit it
        patch.setattr(probes, "__path__", list(probes.__path__))
        yield folder
    sys.modules.pop("probes.toy", None)


def four_points(models: dict[str, Path], **params) -> dict:
    return {
        "probe": "toy",
        "notebook": False,
        "params": params,
        "grid": {"model": [str(models["bert"]), str(models["gpt2"])], "params": {"seed": [0, 1]}},
    }


def metrics_of(out: Path, names: list[str]) -> dict[str, float]:
    return {
        n: json.loads((out / n / "result.json").read_text())["metrics"]["mean_norm"] for n in names
    }


# -- the sweep file ----------------------------------------------------------------------------
def test_grid_and_points_expand_into_named_points(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "probe: atlas\npreset: quick\nparams: {n_inputs: 40}\n"
        "grid:\n  model: [zoo:vit-scenes, zoo:minilm]\n  params: {seed: [0, 1, 2]}\n"
        "points:\n  - {model: zoo:minilm, params: {methods: [pca, umap]}}\n"
        "resources: {cpus: 2, gpus: 0.5}\nnotebook: false\n"
    )
    sweep = load_sweep(spec)
    assert len(sweep.points) == 7 and not sweep.notebook
    assert sweep.resources.cpus == 2 and sweep.resources.gpus == 0.5
    names = [p.name for p in sweep.points]
    assert len(set(names)) == 7
    assert names[0] == "atlas-vit-scenes-quick-n_inputs=40-seed=0"
    last = sweep.points[-1]
    assert last.params == {"n_inputs": 40, "methods": ["pca", "umap"]}
    assert last.name == "atlas-minilm-quick-n_inputs=40-methods=pca,umap"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"probe": "atlas", "grid": {"modle": ["zoo:minilm"]}}, "unknown key modle"),
        ({"probe": "atlas", "grid": {"model": "zoo:minilm"}}, "must be a non-empty list"),
        ({"probe": "atlas", "resources": {"cpus": -1}}, "resources.cpus must be a number"),
        ({"probe": "atlas", "points": [{"model": "zoo:minilm"}, {"model": "zoo:minilm"}]}, "twice"),
        ({"grid": {"model": ["zoo:minilm"]}}, "needs a probe"),
        ({"probe": "atlas", "notebook": "yes"}, "notebook must be true or false"),
        (["atlas"], "must be a mapping"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_fix(raw, message):
    with pytest.raises(WorkbenchError, match=message):
        parse_sweep(raw)


def test_a_bad_point_stops_the_sweep_before_any_run(tmp_path, scratch_models):
    sweep = parse_sweep(
        {
            "probe": "atlas",
            "notebook": False,
            "grid": {"model": [str(scratch_models["bert"])], "params": {"n_inputs": [8, 0]}},
        }
    )
    with pytest.raises(WorkbenchError, match=r"point atlas-.*n_inputs=0: n_inputs must be"):
        run_sweep(sweep, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe: atlas\ngrid: {model: zoo:minilm}\n")
    result = cli.invoke(app, ["sweep", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


# -- running -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_sweep(toy_probe, scratch_models, tmp_path_factory):
    """Four points on the local pool (2 workers on this machine)."""
    out = tmp_path_factory.mktemp("sweeps") / "local"
    record = run_sweep(parse_sweep(four_points(scratch_models)), out, progress=False)
    return out, record


@pytest.mark.slow
def test_local_sweep_runs_every_point_and_a_rerun_skips_them(local_sweep, scratch_models):
    out, record = local_sweep
    assert record.executor == "local" and record.workers == min(4, os.cpu_count() or 1)
    assert [p.state for p in record.points] == ["done"] * 4
    assert all(p.attempts == 1 and p.headline["mean_norm"] > 0 for p in record.points)
    first = metrics_of(out, [p.name for p in record.points])
    assert len(set(first.values())) == 4  # two models x two seeds: four different runs
    stamps = {n: (out / n / "result.json").stat().st_mtime_ns for n in first}
    assert "done" in summary_table(record)

    again = run_sweep(parse_sweep(four_points(scratch_models)), out, progress=False)
    assert [p.state for p in again.points] == ["skipped"] * 4
    assert {n: (out / n / "result.json").stat().st_mtime_ns for n in first} == stamps

    # a changed setting is a new run; the same setting again is not
    changed = run_sweep(parse_sweep(four_points(scratch_models, n_inputs=3)), out, progress=False)
    assert [p.state for p in changed.points] == ["done"] * 4  # new names, new folders
    record_file = json.loads((out / SWEEP_FILE).read_text())
    assert all(p["state"] == "done" for p in record_file["points"])


@pytest.mark.slow
def test_a_result_made_with_other_weights_is_run_again(toy_probe, scratch_models, tmp_path):
    from workbench.models.scratch import save_random_model

    model = save_random_model(tmp_path / "model", "bert")
    spec = {"probe": "toy", "notebook": False, "model": str(model)}
    out = tmp_path / "out"
    assert run_sweep(parse_sweep(spec), out, progress=False).points[0].state == "done"
    assert run_sweep(parse_sweep(spec), out, progress=False).points[0].state == "skipped"
    save_random_model(model, "bert", seed=1)  # same spec, new weights
    assert run_sweep(parse_sweep(spec), out, progress=False).points[0].state == "done"


@pytest.mark.slow
def test_a_killed_run_is_retried_and_a_failing_one_recorded(toy_probe, scratch_models, tmp_path):
    hold = tmp_path / "hold.pid"
    bert = str(scratch_models["bert"])
    spec = {
        "probe": "toy",
        "notebook": False,
        "points": [
            {"model": bert, "params": {"hold_file": str(hold)}},
            {"model": bert, "params": {"fail": True}},
            {"model": bert, "params": {"seed": 3}},
        ],
    }
    killed = []

    def kill_when_held() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not (hold.is_file() and hold.read_text().strip()):
            time.sleep(0.2)
        if hold.is_file():
            pid = int(hold.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_when_held, daemon=True)
    killer.start()
    record = run_sweep(parse_sweep(spec), tmp_path / "out", workers=2, progress=False)
    killer.join(timeout=5)
    assert killed, "the held run never started"
    held, failing, plain = record.points
    assert held.state == "done" and held.attempts == 2 and held.error is None
    assert failing.state == "failed" and failing.attempts == 2
    assert "planted failure" in (failing.error or "")
    assert plain.state == "done" and plain.attempts == 1
    saved = json.loads((tmp_path / "out" / SWEEP_FILE).read_text())
    assert [p["state"] for p in saved["points"]] == ["done", "failed", "done"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_ray_sweep_gives_the_local_pool_results(local_sweep, scratch_models, tmp_path):
    ray = pytest.importorskip("ray")
    out, local = local_sweep
    start_local_ray(num_cpus=2)  # the sweep then uses this Ray
    try:
        record = run_sweep(
            parse_sweep({**four_points(scratch_models), "resources": {"cpus": 1}}),
            tmp_path / "ray",
            executor="ray",
            progress=False,
        )
    finally:
        ray.shutdown()
    assert record.executor == "ray" and [p.state for p in record.points] == ["done"] * 4
    names = [p.name for p in local.points]
    assert [p.name for p in record.points] == names
    assert metrics_of(tmp_path / "ray", names) == metrics_of(out, names)


@pytest.mark.slow
def test_demo_runs_in_parallel_with_progress_and_a_comparison_page(
    toy_probe, scratch_models, tmp_path, monkeypatch
):
    models = [str(scratch_models["bert"]), str(scratch_models["gpt2"])]
    monkeypatch.setenv("TOY_MODELS", os.pathsep.join(models))
    sys.modules.pop("probes.toy", None)  # DEFAULT_MODELS is read on import
    out = tmp_path / "results"
    result = cli.invoke(app, ["demo", "--probe", "toy", "--no-notebook", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "run 1 of 2 done" in result.output and "ETA" in result.output
    assert "run 2 of 2 done" in result.output
    record = json.loads((out / SWEEP_FILE).read_text())
    assert record["workers"] == min(2, os.cpu_count() or 1)
    assert [p["state"] for p in record["points"]] == ["done", "done"]
    assert (out / "index.html").is_file() and list(out.glob("compare-*toy.html"))

"""The probe contract: every probe follows it, the run frame enforces it, and the guide's toy
probe (probes/README.md) runs through the CLI, the report and the comparison view."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import probes
from workbench import capture, hooks, load_model
from workbench.cli import app
from workbench.compare import compare_figures, load_runs
from workbench.errors import ConfigError, FamilyError, WorkbenchError
from workbench.probe import (
    CONTRACT,
    Findings,
    Metric,
    ProbeConfig,
    get_probe,
    make_config,
    probe_names,
    run_frame,
)
from workbench.report import build_report

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "probes" / "README.md"
cli = CliRunner()


def test_every_shipped_probe_exports_the_contract():
    for name in probe_names():
        module = get_probe(name)
        assert all(hasattr(module, attr) for attr in CONTRACT), name
        assert name == module.NAME and issubclass(module.Config, ProbeConfig)
        assert module.METRICS and all(isinstance(m, Metric) for m in module.METRICS)
        module.Config()  # the defaults pass their own checks


def test_no_probe_reaches_past_the_loaded_model():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "probes").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bmodel\.model\b|\.model\.model\b|\bvim\.model\b", line)
    ]
    assert not offenders, f"probes must use LoadedModel, not model.model: {offenders}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"batch_size": "0"}, "batch_size must be at least 1"),
        ({"seed": "-1"}, "seed must be at least 0"),
        ({"n_inputs": "1e8"}, "not a valid whole number"),
        ({"n_inputs": 10**8}, "n_inputs must lie in"),
        ({"dataset": "imagenet"}, "dataset must be one of"),
        ({"probe_c": float("nan")}, "probe_c must be a finite number"),
        ({"random_control": 1}, "random_control must be true or false"),
    ],
)
def test_bad_settings_fail_when_the_config_is_built(params, message):
    with pytest.raises(ConfigError, match=message):
        make_config("atlas", params=params)


# -- the frame ---------------------------------------------------------------------------------
def _frame(science, families=("encoder",)):
    return run_frame(name="toy", config=ProbeConfig, families=families, figures=lambda r: {})(
        science
    )


def test_frame_refuses_wrong_family_and_config_before_the_science(scratch_models):
    lm = load_model(scratch_models["bert"])
    calls = []
    run = _frame(lambda m, c, d: calls.append(1) or Findings({}, {}), families=("vit",))
    with pytest.raises(FamilyError, match="accepts vit"):
        run(lm)
    run = _frame(lambda m, c, d: calls.append(1) or Findings({}, {}))
    with pytest.raises(ConfigError, match=r"takes a probes\.toy\.Config"):
        run(lm, {"seed": 0})
    assert not calls


def test_frame_undoes_hooks_and_flags_left_behind(scratch_models):
    lm = load_model(scratch_models["bert"])
    site = lm.site("blocks.0.resid_post")

    def leaky(model, config, data):
        model.model.get_submodule(site.module).register_forward_hook(lambda *a: None)
        next(model.model.parameters()).requires_grad_(False)
        return Findings({"x": 1.0}, {})

    with pytest.raises(RuntimeError, match="left"):
        _frame(leaky)(lm)
    assert not any(m._forward_hooks for m in lm.model.modules())
    assert all(p.requires_grad for p in lm.model.parameters())

    def fails_halfway(model, config, data):
        with hooks(model, {"blocks.0.resid_post": lambda v: v}):
            model.model.get_submodule(site.module).register_forward_hook(lambda *a: None)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _frame(fails_halfway)(lm)
    assert not any(m._forward_hooks for m in lm.model.modules())


def test_frame_records_provenance_and_builds_figures(scratch_models):
    lm = load_model(scratch_models["bert"])
    run = run_frame(
        name="toy",
        config=ProbeConfig,
        families=("encoder",),
        figures=lambda r: {"x": __import__("plotly.graph_objects").graph_objects.Figure()},
    )(lambda m, c, d: Findings({"v": 2.0}, {"a": np.arange(3)}, "s", {"extra": "yes"}))
    result = run(lm, ProbeConfig(seed=3))
    prov = result.provenance
    assert prov["seed"] == 3 and prov["model_digest"] == lm.digest() and prov["extra"] == "yes"
    assert prov["wall_time_s"] >= 0 and list(result.figures) == ["x"]


# -- the guide's toy probe ---------------------------------------------------------------------
def _write_guide_probe(folder: Path) -> None:
    text = GUIDE.read_text()
    blocks = re.findall(r"### `(norms/[\w/.]+)`\n+```python\n(.*?)```", text, flags=re.S)
    assert blocks, "probes/README.md lost its worked example"
    for rel, code in blocks:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)


@pytest.fixture
def guide_probe(tmp_path, monkeypatch):
    folder = tmp_path / "my-probes"
    _write_guide_probe(folder)
    monkeypatch.setenv("WORKBENCH_PROBE_PATH", str(folder))
    monkeypatch.setattr(probes, "__path__", list(probes.__path__))
    yield folder
    import sys

    sys.modules.pop("probes.norms", None)


@pytest.mark.slow
def test_guide_probe_runs_through_cli_report_and_compare(guide_probe, scratch_models, tmp_path):
    assert "norms" in probe_names()
    listing = cli.invoke(app, ["list"])
    assert "norms" in listing.output

    bad = cli.invoke(app, ["run", "norms", "--out", str(tmp_path / "x"), "--param", "n_inputs=0"])
    assert bad.exit_code == 2 and "n_inputs must be at least 1" in bad.output

    runs = tmp_path / "runs"
    first = cli.invoke(
        app,
        ["run", "norms", "--model", str(scratch_models["bert"]), "--out", str(runs / "bert")],
        catch_exceptions=False,
    )
    assert first.exit_code == 0, first.output
    assert (runs / "bert" / "probe.ipynb").is_file()  # the generic notebook ran it
    second = cli.invoke(
        app,
        [
            "run",
            "norms",
            "--model",
            str(scratch_models["gpt2"]),
            "--out",
            str(runs / "gpt2"),
            "--no-notebook",
            "--param",
            "n_inputs=8",
        ],
        catch_exceptions=False,
    )
    assert second.exit_code == 0, second.output
    record = json.loads((runs / "gpt2" / "result.json").read_text())
    assert record["probe"] == "norms" and record["metrics"]["growth"] > 0

    index = build_report(runs)
    assert "norms" in index.read_text()

    figures = compare_figures(load_runs([runs / "bert", runs / "gpt2"]))
    curves = figures["compare_mean_norm"]
    assert len(curves.data) == 2 and {t.name for t in curves.data} == {
        str(scratch_models["bert"]),
        str(scratch_models["gpt2"]),
    }
    assert len(figures["compare_summary"].data[0].y) == 2
    compared = cli.invoke(
        app,
        ["compare", str(runs / "bert"), str(runs / "gpt2"), "--out", str(tmp_path / "cmp")],
    )
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "cmp" / "compare_mean_norm.html").is_file()


def test_compare_refuses_runs_of_different_probes(guide_probe, scratch_models):
    from probes import norms

    lm = load_model(scratch_models["bert"])
    a = norms.run(lm, norms.Config(n_inputs=4))
    b = a.__class__(**{**a.__dict__, "probe": "atlas"})
    with pytest.raises(WorkbenchError, match="runs of one probe"):
        compare_figures([a, b])


def test_guide_probe_measures_what_it_says(guide_probe, scratch_models):
    """The toy probe's norms equal a direct computation on the same inputs."""
    from probes import norms

    lm = load_model(scratch_models["bert"])
    texts = ["a small test sentence", "another one here", "three"]
    result = norms.run(lm, norms.Config(), data=texts)
    cache = capture(lm, texts, ["blocks.1.resid_post"], progress=False)
    mask = cache.attention_mask.bool()
    expected = float(cache["blocks.1.resid_post"].norm(dim=-1)[mask].mean())
    assert result.arrays["mean_norm"][2] == pytest.approx(expected, rel=1e-6)
    assert torch.is_tensor(cache["blocks.1.resid_post"])

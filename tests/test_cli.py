"""The `workbench` command and headless runs, papermill included."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()
QUICK = ["--preset", "quick", "--param", "n_inputs=24", "--param", "max_points=200"]


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_list_shows_probes_and_zoo():
    result = _run("list")
    assert result.exit_code == 0
    assert "atlas" in result.output and "minilm" in result.output
    assert "vit-scenes" in result.output


def test_run_without_notebook_then_refuse_then_overwrite(scratch_models, tmp_path):
    out = tmp_path / "run"
    model = str(scratch_models["bert"])
    first = _run("run", "atlas", "--model", model, "--out", str(out), "--no-notebook", *QUICK)
    assert first.exit_code == 0, first.output
    record = json.loads((out / "result.json").read_text())
    assert record["probe"] == "atlas" and record["provenance"]["model_spec"] == model
    before = (out / "result.json").read_bytes()

    again = _run("run", "atlas", "--model", model, "--out", str(out), "--no-notebook", *QUICK)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (out / "result.json").read_bytes() == before

    forced = _run(
        "run",
        "atlas",
        "--model",
        model,
        "--out",
        str(out),
        "--no-notebook",
        "--overwrite",
        *QUICK,
        "--param",
        "seed=1",
    )
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "result.json").read_text())["provenance"]["seed"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "zoo:nope"], "zoo"),
        (["--model", "no such model!"], "names no known model"),
        (["--param", "n_inputs=lots"], "not a valid"),
        (["--preset", "huge"], "no preset"),
    ],
)
def test_bad_input_fails_before_work_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    result = _run("run", "atlas", "--out", str(out), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_notebook_run_keeps_the_executed_notebook(scratch_models, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` passes it
    out = tmp_path / "nb"
    result = _run("run", "atlas", "--model", str(scratch_models["bert"]), "--out", "nb", *QUICK)
    assert result.exit_code == 0, result.output
    assert (out / "result.json").is_file() and (out / "atlas.ipynb").is_file()
    nb = json.loads((out / "atlas.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and str(scratch_models["bert"]) in "".join(injected[0]["source"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb"]  # no staging folder left
    # the kernel is reached over local sockets, so it has no unencrypted TCP to warn about
    assert "without encryption" not in capfd.readouterr().err


def test_failing_notebook_reports_the_cell_error_and_leaves_nothing(scratch_models, tmp_path):
    out = tmp_path / "nb"
    result = _run(
        "run",
        "atlas",
        "--model",
        str(scratch_models["bert"]),
        "--out",
        str(out),
        *QUICK,
        "--param",
        "dataset=scenes",  # valid settings, but a text model cannot read scenes: fails in a cell
    )
    assert result.exit_code == 2
    assert "DataError" in result.output and "needs a vision model" in result.output
    assert list(tmp_path.iterdir()) == []


def test_report_command(scratch_models, tmp_path):
    _run(
        "run",
        "atlas",
        "--model",
        str(scratch_models["bert"]),
        "--out",
        str(tmp_path / "a"),
        "--no-notebook",
        *QUICK,
    )
    result = _run("report", str(tmp_path))
    assert result.exit_code == 0, result.output
    index = (tmp_path / "index.html").read_text()
    assert "probe-atlas.html" in index  # the summary links the probe's page
    assert "decodability" in (tmp_path / "probe-atlas.html").read_text()

"""ProbeResult: exact round trip, strict JSON, and atomic, overwrite-safe saving."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench import results
from workbench.errors import DataError, OutputExistsError, WorkbenchError
from workbench.figures import new_figure
from workbench.results import ProbeResult, make_provenance, to_jsonable

HTML = ("html",)  # no browser needed; PNG/SVG are covered by test_figures.py


def _strict_loads(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _make(accuracy: float = 0.75, **overrides: Any) -> ProbeResult:
    rng = np.random.default_rng(1)
    line = new_figure(title="accuracy by layer")
    line.add_trace(go.Scatter(x=np.arange(4), y=rng.uniform(size=4), name="test"))
    heat = new_figure(title="similarity")
    heat.add_trace(go.Heatmap(z=rng.normal(size=(3, 5)).astype(np.float32)))
    fields: dict[str, Any] = {
        "probe": "linear_probe",
        "metrics": {
            "accuracy": np.float32(accuracy),
            "best_layer": np.int64(2),
            "loss": float("nan"),
            "ratio": float("inf"),
            "per_layer": np.array([0.5, np.nan, 0.75]),
            "by_class": {"cat": 0.5, "dog": np.float64(0.25)},
            "pair": (1, 2),
            "headline": ["accuracy", "best_layer"],
        },
        "arrays": {
            "acts": rng.normal(size=(6, 4)).astype(np.float32),
            "labels": np.array([0, 1, 1, 2, 0, 2], dtype=np.int64),
            "mask": np.array([True, False, True]),
            "scalar": np.array(3.5),
            "fortran": np.asfortranarray(rng.normal(size=(3, 2))),
            "words": np.array(["alpha", "beta", "γ"]),
            "empty": np.zeros((0, 3), dtype=np.float16),
        },
        "figures": {"accuracy": line, "similarity": heat},
        "provenance": make_provenance(
            probe="linear_probe",
            model_spec="tiny-gpt",
            model_digest="sha256:0123",
            family="decoder",
            config={"layers": (1, 2), "out": Path("/tmp/x"), "lr": 1e-3},
            seed=7,
            started=time.time() - 1.0,
        ),
        "summary": "Accuracy peaks at layer 2.",
    }
    fields.update(overrides)
    return ProbeResult(**fields)


@pytest.fixture
def result() -> ProbeResult:
    return _make()


def test_round_trip_is_exact(tmp_path: Path, result: ProbeResult) -> None:
    folder = result.save(tmp_path / "run", formats=HTML)
    loaded = ProbeResult.load(folder)

    assert loaded.probe == result.probe
    assert loaded.summary == result.summary
    assert loaded.metrics == to_jsonable(result.metrics)
    assert loaded.metrics["accuracy"] == pytest.approx(0.75)
    assert loaded.metrics["per_layer"] == [0.5, None, 0.75]
    assert loaded.provenance == json.loads(json.dumps(to_jsonable(result.provenance)))

    assert list(loaded.arrays) == list(result.arrays)
    for name, array in result.arrays.items():
        got = loaded.arrays[name]
        assert got.dtype == array.dtype, name
        assert got.shape == array.shape, name
        assert np.array_equal(got, array), name

    assert list(loaded.figures) == list(result.figures)
    for name, fig in result.figures.items():
        assert isinstance(loaded.figures[name], go.Figure)
        assert json.loads(loaded.figures[name].to_json()) == json.loads(fig.to_json())


def test_result_json_is_strict_and_nan_is_null(tmp_path: Path, result: ProbeResult) -> None:
    folder = result.save(tmp_path / "run", formats=HTML)
    record = _strict_loads((folder / "result.json").read_text(encoding="utf-8"))
    assert record["format_version"] == results.FORMAT_VERSION
    assert record["metrics"]["loss"] is None
    assert record["metrics"]["ratio"] is None
    assert record["metrics"]["best_layer"] == 2
    assert record["metrics"]["pair"] == [1, 2]
    assert record["arrays"]["acts"] == {"shape": [6, 4], "dtype": "<f4"}
    assert "figures/accuracy.json" in record["figures"]["accuracy"]
    assert "figures/accuracy.html" in record["figures"]["accuracy"]
    for files in record["figures"].values():
        for file in files:
            assert (folder / file).is_file()
    assert record["provenance"]["config"] == {"layers": [1, 2], "out": "/tmp/x", "lr": 0.001}


def test_arrays_load_without_pickle(tmp_path: Path, result: ProbeResult) -> None:
    folder = result.save(tmp_path / "run", formats=HTML)
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(result.arrays)


def test_refuses_to_overwrite_and_leaves_run_untouched(tmp_path: Path) -> None:
    folder = _make().save(tmp_path / "run", formats=HTML)
    before = _snapshot(folder)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        _make(accuracy=0.5).save(folder, formats=HTML)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_replaces_the_whole_folder(tmp_path: Path) -> None:
    folder = _make().save(tmp_path / "run", formats=HTML)
    (folder / "stale.txt").write_text("from the old run")
    _make(accuracy=0.5, figures={}).save(folder, overwrite=True, formats=HTML)
    loaded = ProbeResult.load(folder)
    assert loaded.metrics["accuracy"] == 0.5
    assert loaded.figures == {}
    assert not (folder / "stale.txt").exists()
    assert not (folder / "figures").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp or old siblings


def test_existing_empty_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    _make().save(tmp_path / "run", formats=HTML)
    assert (tmp_path / "run" / "result.json").is_file()


def test_failure_mid_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(results, "export_figures", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _make().save(tmp_path / "out" / "run", formats=HTML)
    assert not (tmp_path / "out" / "run").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no .run.tmp-* left behind


def test_failure_during_overwrite_keeps_old_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _make().save(tmp_path / "run", formats=HTML)
    before = _snapshot(folder)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("no space left")

    monkeypatch.setattr(results.np, "savez", broken)
    with pytest.raises(OSError, match="no space left"):
        _make(accuracy=0.1).save(folder, overwrite=True, formats=HTML)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_extra_files_are_copied_in(tmp_path: Path) -> None:
    notebook = tmp_path / "executed.ipynb"
    notebook.write_text('{"cells": []}')
    folder = _make().save(
        tmp_path / "run",
        formats=HTML,
        extra_files={"atlas.ipynb": notebook, "logs/run.txt": notebook},
    )
    assert (folder / "atlas.ipynb").read_text() == '{"cells": []}'
    assert (folder / "logs" / "run.txt").is_file()
    with pytest.raises(WorkbenchError, match="relative path"):
        _make().save(tmp_path / "run2", formats=HTML, extra_files={"../x": notebook})
    with pytest.raises(WorkbenchError, match="not a file"):
        _make().save(tmp_path / "run3", formats=HTML, extra_files={"a.ipynb": tmp_path / "nope"})
    assert not (tmp_path / "run2").exists()
    assert not (tmp_path / "run3").exists()


def test_headline() -> None:
    assert _make().headline() == {"accuracy": np.float32(0.75), "best_layer": 2}
    plain = _make(metrics={"a": 1.0, "curve": [1, 2], "b": "x", "c": 3, "d": 4, "e": 5})
    assert plain.headline() == {"a": 1.0, "b": "x", "c": 3, "d": 4}
    with pytest.raises(DataError, match="not metrics"):
        _make(metrics={"a": 1.0, "headline": ["a", "missing"]})


def test_bad_contents_are_refused_early() -> None:
    with pytest.raises(DataError, match="object"):
        _make(arrays={"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(DataError, match="numpy array"):
        _make(arrays={"list": [1, 2, 3]})
    with pytest.raises(DataError, match="not allowed"):
        _make(arrays={"file": np.zeros(2)})
    with pytest.raises(DataError, match="JSON cannot hold"):
        _make(metrics={"when": datetime(2024, 1, 1)})
    with pytest.raises(DataError, match="file name"):
        _make(figures={"a/b": new_figure()})


def test_load_of_a_non_result_folder(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match=r"no result\.json"):
        ProbeResult.load(tmp_path)


def test_provenance_records_what_is_needed() -> None:
    prov = make_provenance(
        probe="p",
        model_spec="m",
        model_digest="d",
        family=None,
        config={"k": 1},
        seed=None,
        started=time.time() - 2.0,
    )
    assert prov["model_spec"] == "m" and prov["model_digest"] == "d" and prov["config"] == {"k": 1}
    assert prov["device"] == "cpu"
    assert 2.0 <= prov["wall_time_s"] < 60
    assert datetime.fromisoformat(prov["timestamp_utc"]).utcoffset().total_seconds() == 0
    versions = prov["versions"]
    for key in ("python", "torch", "transformers", "numpy", "sklearn", "plotly", "workbench"):
        assert key in versions
    assert versions["numpy"] == np.__version__
    assert "git_commit" in prov
    json.dumps(prov, allow_nan=False)


def test_repr_shows_everything_compactly(result: ProbeResult) -> None:
    text = repr(result)
    for needle in (
        "linear_probe",
        "tiny-gpt",
        "accuracy=0.75",
        "best_layer=2",
        "acts float32[6, 4]",
        "labels int64[6]",
        "accuracy, similarity",
        "Accuracy peaks",
    ):
        assert needle in text, needle
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "linear_probe" in result._repr_html_()

"""Property tests: random input to the loaders, the result reader, the report and the CLI.

Whatever the input, the outcome is success or a WorkbenchError with a one-line message: never
another exception, never a payload run, never a file written outside the folders given.
Examples are bounded and derandomized so the whole file takes seconds and fails the same way
twice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import WorkbenchError
from workbench.figures import new_figure
from workbench.models import load_model
from workbench.models.vim import VimConfig, VisionMamba, save_pretrained
from workbench.probe import get_probe, probe_names
from workbench.report import build_report
from workbench.results import ProbeResult

cli_runner = CliRunner()


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written into the working tree
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@contextlib.contextmanager
def _sandbox() -> Iterator[Path]:
    """A fresh folder that is also the process's temp folder, so every stray write shows."""
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        (root / "tmp").mkdir()
        with mock.patch.object(tempfile, "tempdir", str(root / "tmp")):
            yield root
        # torch keeps its compiler cache there (``torchinductor_USER``); anything else is ours
        left = [p.name for p in (root / "tmp").iterdir() if not p.name.startswith("torchinductor")]
        assert left == []


def _outcome(call: Callable[[], Any]) -> Any:
    """Run ``call``; a WorkbenchError must be one line. Any other exception fails the test."""
    try:
        return call()
    except WorkbenchError as err:
        assert "\n" not in str(err), str(err)
        return None


def _cli_outcome(*args: Any) -> Any:
    result = cli_runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (
            result.output
        )
    return result


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


# -- random --param strings -------------------------------------------------------------------
PARAM_KEYS = sorted(
    {f.name for name in probe_names() for f in dataclasses.fields(get_probe(name).Config)}
)
param_values = st.text(max_size=30) | st.sampled_from(
    ["0", "-1", "1e8", "nan", "inf", "none", "1,2,3", "'; import os", '"""', "\n", "x" * 200]
)
param_strings = st.builds(
    lambda k, v: f"{k}={v}", st.sampled_from(PARAM_KEYS) | st.text(max_size=8), param_values
) | st.text(max_size=20)


@_settings(60)
@given(
    probe=st.sampled_from(probe_names()),
    params=st.lists(param_strings, max_size=4),
    preset=st.none() | st.sampled_from(["quick", "nope"]),
)
def test_random_params_plan_a_run_or_fail_in_one_line(
    probe: str, params: list[str], preset: str | None
) -> None:
    executed: list[Any] = []
    with (
        _sandbox() as root,
        mock.patch(
            "workbench.runner.execute", lambda plan, **kw: executed.append(plan) or plan.out
        ),
    ):
        args = ["run", probe, "--out", root / "out", *(a for p in params for a in ("--param", p))]
        result = _cli_outcome(*args, *(["--preset", preset] if preset else []))
        assert (result.exit_code == 0) == bool(executed)
        assert sorted(p.name for p in root.iterdir()) == ["tmp"]  # planning writes nothing


# -- random result.json structures and result files -------------------------------------------
SECRET = "TOPSECRET"


@pytest.fixture(scope="module")
def result_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fig = new_figure(title="accuracy")
    fig.add_scatter(x=[0, 1], y=[1.0, 2.0])
    result = ProbeResult(
        probe="atlas",
        metrics={"accuracy": 0.5, "headline": ["accuracy"]},
        arrays={"x": np.arange(3)},
        figures={"acc": fig},
        provenance={"model_spec": "m"},
        summary="s",
    )
    return result.save(tmp_path_factory.mktemp("template") / "run", formats=("html",))


def _record_strategy() -> st.SearchStrategy:
    names = st.sampled_from(["acc", "../../secret", "a/b", "", ".hidden", "x" * 300]) | st.text(
        max_size=6
    )
    files = st.lists(
        st.sampled_from(
            ["figures/acc.html", "//host/x", "../../secret.json", "/etc/passwd", "https://h/x"]
        )
        | st.text(max_size=10),
        max_size=3,
    )
    return st.fixed_dictionaries(
        {
            "format_version": st.just(1) | json_values,
            "probe": st.just("atlas") | json_values,
            "metrics": st.dictionaries(
                st.sampled_from(["accuracy", "headline"]) | st.text(max_size=5),
                json_values,
                max_size=3,
            )
            | json_values,
            "provenance": st.fixed_dictionaries(
                {},
                optional={
                    "model_spec": json_values,
                    "config": json_values,
                    "versions": json_values,
                    "wall_time_s": json_values,
                },
            )
            | json_values,
            "arrays": st.dictionaries(
                st.sampled_from(["x", "../x", "file", "y"]), json_values, max_size=2
            )
            | json_values,
            "figures": st.dictionaries(names, files | json_values, max_size=3) | json_values,
        },
        optional={
            "summary": json_values,
            "arrays_file": st.sampled_from(
                ["arrays.npz", "../outside.npz", "OUTSIDE", "figures/acc.json"]
            )
            | json_values,
        },
    )


result_files = st.one_of(
    _record_strategy().map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@_settings(80)
@given(
    record=result_files,
    figure=st.none() | json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64),
    arrays=st.none() | st.binary(max_size=200),
)
def test_random_result_folders_load_or_fail_in_one_line(
    result_template: Path, record: bytes, figure: bytes | None, arrays: bytes | None
) -> None:
    with _sandbox() as root:
        (root / "secret.json").write_text(json.dumps({"data": [], "layout": {"title": SECRET}}))
        np.savez(root / "outside.npz", x=np.array([7, 7, 7]))
        results = root / "results"
        folder = results / "run"
        shutil.copytree(result_template, folder)
        record = record.replace(b'"OUTSIDE"', json.dumps(str(root / "outside.npz")).encode())
        (folder / "result.json").write_bytes(record)
        if figure is not None:
            (folder / "figures" / "acc.json").write_bytes(figure)
        if arrays is not None:
            (folder / "arrays.npz").write_bytes(arrays)
        before = _tree(root)

        loaded = _outcome(lambda: ProbeResult.load(folder))
        if loaded is not None:
            assert not any(np.array_equal(a, [7, 7, 7]) for a in loaded.arrays.values())
            assert SECRET not in str([f.to_json() for f in loaded.figures.values()])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = _outcome(lambda: build_report(results))
        after = _tree(root)
        written = {k for k in after if k not in before or after[k] != before[k]}
        pages = {k for k in written if re.fullmatch(r"results/probe-[\w-]+\.html", k)}
        assert written - pages <= {"results/index.html", "results/plotly.min.js"}
        if index is not None:
            text = "\n".join(p.read_text() for p in index.parent.glob("*.html"))
            assert SECRET not in text and 'href="//' not in text and 'href="http' not in text


# -- random bytes and structures as checkpoints -----------------------------------------------
def _tiny_vim_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    config = VimConfig(d_model=8, n_layers=1, d_state=2, image_size=16, patch_size=8, num_classes=2)
    return dict(VisionMamba(config).state_dict())


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "vim.pth"
    torch.save({"model": _tiny_vim_state(), "args": argparse.Namespace(lr=0.1, s={1})}, path)
    return path


def _mutated(data: st.DataObject, original: bytes) -> bytes:
    choice = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if choice == "random":
        return data.draw(st.binary(max_size=2048))
    if choice == "truncate":
        return original[: data.draw(st.integers(0, len(original)))]
    mutable = bytearray(original)
    for index in data.draw(st.lists(st.integers(0, len(original) - 1), min_size=1, max_size=16)):
        mutable[index] = data.draw(st.integers(0, 255))
    return bytes(mutable)


def _load_in_sandbox(write: Callable[[Path], Path]) -> None:
    with _sandbox() as root:
        spec = write(root)
        before = _tree(root)
        _outcome(lambda: load_model(spec))
        assert _tree(root) == before


@_settings(80)
@given(data=st.data())
def test_random_bytes_as_a_checkpoint_load_or_fail_in_one_line(
    real_checkpoint: Path, data: st.DataObject
) -> None:
    content = _mutated(data, real_checkpoint.read_bytes())

    def write(root: Path) -> Path:
        (root / "vim.pth").write_bytes(content)
        return root / "vim.pth"

    _load_in_sandbox(write)


tensors = st.lists(st.integers(0, 5), max_size=4).map(lambda shape: torch.zeros(shape))
entries = (
    tensors
    | st.integers()
    | st.text(max_size=5)
    | st.none()
    | st.just(torch.zeros(3, dtype=torch.complex64))
)
STATE_KEYS = sorted(_tiny_vim_state())
keys = (
    st.sampled_from([*STATE_KEYS, "layers.x.w", "layers.7.w", "module.head.weight"])
    | st.text(max_size=6)
    | st.integers()
)


@_settings(80)
@given(
    changes=st.dictionaries(keys, entries, max_size=4),
    drop=st.lists(st.sampled_from(STATE_KEYS), max_size=3),
    layout=st.sampled_from(["model", "state_dict", "top", "list"]),
)
def test_random_state_dicts_load_or_fail_in_one_line(
    changes: dict, drop: list[str], layout: str
) -> None:
    state: dict[Any, Any] = {k: v for k, v in _tiny_vim_state().items() if k not in drop}
    state.update(changes)
    checkpoint: Any = {"model": state, "epoch": 1} if layout == "model" else state
    checkpoint = {"state_dict": state} if layout == "state_dict" else checkpoint
    checkpoint = list(state.values()) if layout == "list" else checkpoint

    def write(root: Path) -> Path:
        torch.save(checkpoint, root / "vim.pth")
        return root / "vim.pth"

    _load_in_sandbox(write)


# -- random bytes as model files in a folder ---------------------------------------------------
@pytest.fixture(scope="module")
def vim_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = VimConfig(d_model=8, n_layers=1, d_state=2, image_size=16, patch_size=8, num_classes=2)
    folder = tmp_path_factory.mktemp("vim") / "vim"
    save_pretrained(VisionMamba(config), folder, torch.float32)
    return folder


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models.scratch import save_random_model

    return save_random_model(tmp_path_factory.mktemp("vit") / "vit", "vit")


def _copy_with(folder: Path, name: str, content: bytes) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        copy = root / "model"
        shutil.copytree(folder, copy)
        (copy / name).write_bytes(content)
        return copy

    return write


@_settings(60)
@given(data=st.data(), family=st.sampled_from(["vim", "vit"]))
def test_random_safetensors_load_or_fail_in_one_line(
    vim_folder: Path, vit_folder: Path, data: st.DataObject, family: str
) -> None:
    folder = vim_folder if family == "vim" else vit_folder
    content = _mutated(data, (folder / "model.safetensors").read_bytes())
    _load_in_sandbox(_copy_with(folder, "model.safetensors", content))


VIM_FIELDS = [f.name for f in dataclasses.fields(VimConfig)]
config_objects = st.fixed_dictionaries(
    {"model_type": st.sampled_from(["vim", "nope", ""]) | json_values},
    optional={name: json_values | st.integers(-3, 40) for name in VIM_FIELDS},
)
config_files = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | config_objects.map(lambda v: json.dumps(v).encode())
)


@_settings(100)
@given(content=config_files)
def test_random_config_json_loads_or_fails_in_one_line(vim_folder: Path, content: bytes) -> None:
    _load_in_sandbox(_copy_with(vim_folder, "config.json", content))


@_settings(15)
@given(content=st.binary(min_size=1, max_size=512))
def test_cli_run_on_random_checkpoint_bytes_fails_in_one_line(content: bytes) -> None:
    with _sandbox() as root:
        (root / "vim.pth").write_bytes(content)
        result = _cli_outcome(
            "run", "vim", "--model", root / "vim.pth", "--out", root / "out", "--no-notebook"
        )
        assert result.exit_code == 2
        assert sorted(p.name for p in root.iterdir()) == ["tmp", "vim.pth"]

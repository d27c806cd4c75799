"""A hostile user's inputs, one group per reliability guarantee (README, "Reliability").

Each test feeds what a careless or malicious user could: a folder that is not a run, paths that
point outside a result, corrupt model files, killed processes, a second run to the same folder.
"""

from __future__ import annotations

import argparse
import builtins
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from workbench import results
from workbench.cli import app
from workbench.errors import ModelNotFoundError, OutputExistsError, WorkbenchError
from workbench.figures import new_figure
from workbench.models import load_model
from workbench.models.vim import (
    CheckpointRefusedError,
    VimConfig,
    VisionMamba,
    read_checkpoint,
    save_pretrained,
)
from workbench.report import build_report
from workbench.results import ProbeResult

HTML = ("html",)
ZOO = Path(__file__).resolve().parent.parent / "data" / "zoo"
cli_runner = CliRunner()


# -- helpers -----------------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    return cli_runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result: Any) -> str:
    """The CLI failed with exactly one line ``error: ...`` and no traceback."""
    assert result.exit_code not in (0, None), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _small_result(accuracy: float = 0.5, figures: dict | None = None) -> ProbeResult:
    return ProbeResult(
        probe="atlas",
        metrics={"accuracy": accuracy},
        arrays={"x": np.arange(3)},
        figures=figures or {},
        provenance={"model_spec": "m"},
        summary="small",
    )


def _figure(title: str = "accuracy") -> go.Figure:
    fig = new_figure(title=title)
    fig.add_trace(go.Scatter(x=[0, 1, 2], y=[1.0, 3.0, 2.0], name="line"))
    return fig


def _dead_pid() -> int:
    """The pid of a process that has exited (owner of leftovers from a killed run)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def _tiny_vim(folder: Path) -> Path:
    torch.manual_seed(0)
    config = VimConfig(
        d_model=16, n_layers=2, d_state=4, image_size=32, patch_size=8, num_classes=5
    )
    save_pretrained(VisionMamba(config), folder, torch.float32)
    return folder


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """An encoder folder that passes every cheap check (config, weights header, tokenizer)."""
    folder = tmp_path / "models" / "bert"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture
def fake_compute(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Model loading and the atlas probe replaced by instant stand-ins that record each call."""
    import probes.atlas
    import workbench.models

    calls: list[str] = []

    def load(spec: Any, **kwargs: Any) -> object:
        calls.append("load")
        return object()

    def run(model: Any, config: Any = None, data: Any = None) -> ProbeResult:
        calls.append("run")
        return _small_result()

    monkeypatch.setattr(workbench.models, "load_model", load)
    monkeypatch.setattr(probes.atlas, "run", run)
    return calls


class _JsonScripts(HTMLParser):
    """The text of every <script type="application/json"> element."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and dict(attrs).get("type") == "application/json":
            self._open = True
            self.blocks.append("")

    def handle_data(self, data: str) -> None:
        if self._open:
            self.blocks[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = False


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if href is not None:
            self.hrefs.append(href)


# -- 1. --overwrite only ever replaces one run -------------------------------------------------
def test_overwrite_never_deletes_a_folder_that_is_not_one_run(
    tmp_path: Path, model_folder: Path, fake_compute: list[str]
) -> None:
    out = tmp_path / "DIR"
    _small_result().save(out / "run-a", formats=HTML)
    _small_result().save(out / "run-b", formats=HTML)
    (out / "notes.txt").write_text("my notes")
    before = _snapshot(out)
    for extra in ([], ["--overwrite"]):
        result = _cli(
            "run", "atlas", "--model", model_folder, "--out", out, "--preset", "quick",
            "--no-notebook", *extra,
        )  # fmt: skip
        line = _one_line_error(result)
        assert "--overwrite" not in line and "not one workbench run" in line
    assert _snapshot(out) == before and fake_compute == []
    with pytest.raises(OutputExistsError) as info:
        _small_result(0.1).save(out, overwrite=True, formats=HTML)
    assert "overwrite=True" not in str(info.value) and "--overwrite" not in str(info.value)
    # A run folder with another run nested inside it is not "one run" either.
    nested = _small_result().save(tmp_path / "outer", formats=HTML)
    _small_result().save(nested / "inner", formats=HTML)
    with pytest.raises(OutputExistsError, match="not one workbench run"):
        _small_result(0.1).save(nested, overwrite=True, formats=HTML)
    assert ProbeResult.load(nested / "inner").metrics["accuracy"] == 0.5


def test_overwrite_still_replaces_a_run(tmp_path: Path) -> None:
    folder = _small_result().save(tmp_path / "run", formats=HTML)
    _small_result(0.9).save(folder, overwrite=True, formats=HTML)
    assert ProbeResult.load(folder).metrics["accuracy"] == 0.9


# -- 2. every path read from a result stays inside its folder ----------------------------------
def _report_text(index: Path) -> str:
    """Every page of a report: its summary and the pages beside it."""
    return "\n".join(p.read_text() for p in sorted(index.parent.glob("*.html")))


def _edit_record(folder: Path, **changes: Any) -> None:
    path = folder / "result.json"
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def test_report_embeds_no_file_from_outside_the_result_folder(tmp_path: Path) -> None:
    secret = {"data": [], "layout": {"title": {"text": "TOPSECRET"}}}
    (tmp_path / "secret.json").write_text(json.dumps(secret))
    root = tmp_path / "results"
    _small_result(figures={"acc": _figure()}).save(root / "good", formats=HTML)
    named = _small_result(figures={"acc": _figure()}).save(root / "named", formats=HTML)
    _edit_record(named, figures={"../../../secret": ["figures/acc.html"]})
    linked = _small_result(figures={"acc": _figure()}).save(root / "linked", formats=HTML)
    (linked / "figures" / "acc.json").unlink()
    (linked / "figures" / "acc.json").symlink_to(tmp_path / "secret.json")
    with pytest.warns(UserWarning, match="skips"):
        text = _report_text(build_report(root))
    assert "TOPSECRET" not in text
    assert "good" in text


def test_load_reads_no_file_from_outside_the_result_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.npz"
    np.savez(outside, x=np.array([42, 42, 42]))
    folder = _small_result().save(tmp_path / "run", formats=HTML)
    _edit_record(folder, arrays_file=str(outside))
    with pytest.raises(WorkbenchError, match="arrays_file"):
        ProbeResult.load(folder)
    _edit_record(folder, arrays_file="../outside.npz")
    with pytest.raises(WorkbenchError, match="arrays_file"):
        ProbeResult.load(folder)
    _edit_record(folder, arrays_file="arrays.npz", figures={"../../secret": []})
    with pytest.raises(WorkbenchError, match="secret"):
        ProbeResult.load(folder)


def test_file_list_entries_never_become_external_links(tmp_path: Path) -> None:
    root = _small_result(figures={"acc": _figure()}).save(tmp_path / "results", formats=HTML)
    _edit_record(root, figures={"acc": ["//host/x", "https://host/y", "figures/acc.html"]})
    _small_result(figures={"acc": _figure()}).save(root / "nested", formats=HTML)
    with pytest.warns(UserWarning, match="skips"):
        text = _report_text(build_report(root))
    links = _Links()
    links.feed(text)
    assert links.hrefs and all("host" not in href for href in links.hrefs)
    assert not any(href.startswith(("//", "http:", "https:")) for href in links.hrefs)


# -- 3. any figure text round-trips through the report -----------------------------------------
def test_figure_text_with_html_comment_round_trips_in_the_report(tmp_path: Path) -> None:
    fig = _figure(title="a <!-- b --> </script><script>alert(1)</script> & \u2028 <\\!--")
    fig.add_trace(go.Scatter(x=[0], y=[1], name="<!--<script>"))
    folder = _small_result(figures={"odd": fig}).save(tmp_path / "run", formats=HTML)
    path = folder / "figures" / "odd.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps(saved, ensure_ascii=False))  # as any JSON writer would: raw "<"
    assert "<!--" in path.read_text()
    text = _report_text(build_report(tmp_path))
    scripts = _JsonScripts()
    scripts.feed(text)
    assert len(scripts.blocks) == 1
    assert json.loads(scripts.blocks[0]) == saved


# -- 4. zoo files are verified against their recorded sha256 ----------------------------------
@pytest.fixture
def zoo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "zoo"
    shutil.copytree(ZOO / "vim-scenes", root / "vim-scenes")
    monkeypatch.setenv("WORKBENCH_ZOO_DIR", str(root))
    return root / "vim-scenes"


def _flip_bytes(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) - 4 * count  # in the tensor data, past the header
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_zoo_file_is_refused_and_not_listed_ready(zoo_copy: Path) -> None:
    assert load_model("zoo:vim-scenes").family == "vim"  # the intact copy loads
    _flip_bytes(zoo_copy / "model.safetensors")
    with pytest.raises(ModelNotFoundError, match="workbench zoo build vim-scenes") as info:
        load_model("zoo:vim-scenes")
    assert "\n" not in str(info.value)
    listing = _cli("list")
    row = next(line for line in listing.output.splitlines() if "vim-scenes" in line)
    assert "ready" not in row
    run = _cli("run", "vim", "--model", "zoo:vim-scenes", "--out", zoo_copy.parent / "o")
    assert "workbench zoo build vim-scenes" in _one_line_error(run)


def test_zoo_verification_is_cached_by_size_and_mtime(
    zoo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workbench.zoo as zoo

    calls: list[Path] = []
    real = zoo.sha256_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(zoo, "sha256_file", counting)
    zoo.zoo_path("vim-scenes")
    zoo.zoo_path("vim-scenes")
    assert len(calls) == 1
    weights = zoo_copy / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    zoo.zoo_path("vim-scenes")
    assert len(calls) == 2


# -- 5. checkpoints: torch's weights-only unpickler with an allowlist --------------------------
def test_plain_torch_save_with_a_set_in_its_args_loads(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"model": {}, "args": argparse.Namespace(a={1}, b=frozenset({2}))}, path)
    checkpoint = read_checkpoint(path)
    assert checkpoint["args"].a == {1} and checkpoint["args"].b == frozenset({2})


class _Payload:
    def __init__(self, call: Any, *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple:
        return self.call, self.args


def _payloads(marker: Path) -> dict[str, Any]:
    touch = f"touch {marker}"
    return {
        "os.system": _Payload(os.system, touch),
        "eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "subprocess": _Payload(subprocess.Popen, ["touch", str(marker)]),
        "nested": [torch.zeros(1), {"deep": argparse.Namespace(x=_Payload(os.system, touch))}],
    }


@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "subprocess", "nested"])
@pytest.mark.parametrize("zipped", [True, False])
def test_malicious_checkpoints_are_refused_without_running(
    tmp_path: Path, kind: str, zipped: bool
) -> None:
    marker = tmp_path / "was-called"
    path = tmp_path / "evil.pth"
    checkpoint = {"model": {"w": torch.zeros(1)}, "extra": _payloads(marker)[kind]}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointRefusedError, match="refusing to unpickle") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


# -- 6. one clear line for each bad input -----------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_shape(path: Path) -> None:
    state = load_file(str(path))
    state["layers.0.mixer.in_proj.weight"] = torch.zeros(7, 3)
    save_file(state, str(path))


BAD_MODEL_FOLDERS = {
    "truncated safetensors": ("model.safetensors", _truncate, "model.safetensors"),
    "random safetensors": (
        "model.safetensors",
        lambda p: p.write_bytes(os.urandom(4096)),
        "model.safetensors",
    ),
    "config not json": ("config.json", lambda p: p.write_text("{oops"), "config.json"),
    "config a list": ("config.json", lambda p: p.write_text("[1, 2]"), "config.json"),
    "config type a list": (
        "config.json",
        lambda p: p.write_text('{"model_type": ["vim"]}'),
        "model_type",
    ),
    "vim config values": (
        "config.json",
        lambda p: p.write_text('{"model_type": "vim", "d_model": "wide", "n_layers": 2}'),
        "config.json",
    ),
    "wrong-shape tensor": ("model.safetensors", _wrong_shape, "layers.0.mixer.in_proj.weight"),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_FOLDERS))
def test_bad_model_files_give_one_line(tmp_path: Path, case: str) -> None:
    name, spoil, named = BAD_MODEL_FOLDERS[case]
    folder = _tiny_vim(tmp_path / "vim")
    spoil(folder / name)
    with pytest.raises(WorkbenchError) as info:
        load_model(folder)
    assert named in str(info.value) and "\n" not in str(info.value)
    out = tmp_path / "out"
    line = _one_line_error(_cli("run", "vim", "--model", folder, "--out", out, "--no-notebook"))
    assert named in line
    assert not out.exists()


def _vim_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    config = VimConfig(
        d_model=16, n_layers=2, d_state=4, image_size=32, patch_size=8, num_classes=5
    )
    return dict(VisionMamba(config).state_dict())


BAD_CHECKPOINTS = {
    "values not tensors": lambda: {
        "model": {**_vim_state(), "patch_embed.proj.weight": "text", "pos_embed": 3}
    },
    "keys not strings": lambda: {"model": {**_vim_state(), 7: torch.zeros(1)}},
    "layer index not a number": lambda: {"model": {**_vim_state(), "layers.x.w": torch.zeros(1)}},
    "wrong ndim": lambda: {"model": {**_vim_state(), "patch_embed.proj.weight": torch.zeros(3)}},
    "far layer index": lambda: {"model": {**_vim_state(), "layers.99999.w": torch.zeros(1)}},
    "wrong shape": lambda: {
        "model": {**_vim_state(), "layers.1.mixer.out_proj.weight": torch.zeros(16, 5)}
    },
    "not a dict": lambda: [torch.zeros(1)],
    "empty": lambda: {},
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_contents_give_one_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "vim_bad.pth"
    torch.save(BAD_CHECKPOINTS[case](), path)
    with pytest.raises(WorkbenchError) as info:
        load_model(path)
    assert path.name in str(info.value) and "\n" not in str(info.value)
    line = _one_line_error(
        _cli("run", "vim", "--model", path, "--out", tmp_path / "o", "--no-notebook")
    )
    assert path.name in line


def test_a_fitting_checkpoint_still_loads_exactly(tmp_path: Path) -> None:
    state = _vim_state()
    path = tmp_path / "vim_ok.pth"
    torch.save({"model": state, "epoch": 3, "args": argparse.Namespace(lr=0.1)}, path)
    loaded = load_model(path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def _object_array_npz(folder: Path) -> None:
    np.savez(folder / "arrays.npz", x=np.array([{"a": 1}], dtype=object))  # pickled


BAD_RESULT_FOLDERS = {
    "missing arrays.npz": lambda f: (f / "arrays.npz").unlink(),
    "corrupt arrays.npz": lambda f: (f / "arrays.npz").write_bytes(os.urandom(300)),
    "truncated arrays.npz": lambda f: _truncate(f / "arrays.npz"),
    "object array": _object_array_npz,
    "result.json a list": lambda f: (f / "result.json").write_text("[]"),
    "result.json not utf-8": lambda f: (f / "result.json").write_bytes(b'{"probe": "\xff\xfe"}'),
    "figure file missing": lambda f: (f / "figures" / "acc.json").unlink(),
    "figure file not a figure": lambda f: (f / "figures" / "acc.json").write_text('{"data": 5}'),
}


@pytest.mark.parametrize("case", list(BAD_RESULT_FOLDERS))
def test_bad_result_folders_give_one_line(tmp_path: Path, case: str) -> None:
    folder = _small_result(figures={"acc": _figure()}).save(tmp_path / "run", formats=HTML)
    BAD_RESULT_FOLDERS[case](folder)
    with pytest.raises(WorkbenchError) as info:
        ProbeResult.load(folder)
    assert "\n" not in str(info.value)
    _one_line_error(_cli("export", folder, "--out", tmp_path / "exported", "--format", "html"))
    assert not (tmp_path / "exported").exists()


def test_out_under_a_file_fails_before_any_work(
    tmp_path: Path, model_folder: Path, fake_compute: list[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "run"
    line = _one_line_error(
        _cli("run", "atlas", "--model", model_folder, "--out", out, "--no-notebook")
    )
    assert "afile" in line
    assert fake_compute == []


def test_out_in_a_read_only_folder_fails_before_any_work(
    tmp_path: Path, model_folder: Path, fake_compute: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse writes there as a read-only mount would
        real_open = os.open

        def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if str(path).startswith(str(locked)) and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        real_mkdir = os.mkdir

        def no_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if str(path).startswith(str(locked)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        monkeypatch.setattr(os, "mkdir", no_mkdir)
    try:
        out = locked / "run"
        line = _one_line_error(
            _cli("run", "atlas", "--model", model_folder, "--out", out, "--no-notebook")
        )
        assert "locked" in line
        assert fake_compute == []
    finally:
        locked.chmod(0o755)


def test_disk_full_during_save_gives_one_line_and_leaves_nothing(
    tmp_path: Path, model_folder: Path, fake_compute: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "arrays.npz")

    monkeypatch.setattr(results.np, "savez", full)
    out = tmp_path / "runs" / "run"
    line = _one_line_error(
        _cli("run", "atlas", "--model", model_folder, "--out", out, "--no-notebook")
    )
    assert "No space left" in line
    assert list((tmp_path / "runs").iterdir()) == []


# -- 8. the report skips malformed results ----------------------------------------------------
MALFORMED_RECORDS = {
    "metrics a list": {"metrics": [1, 2]},
    "figures of numbers": {"figures": {"acc": 5}},
    "figure files not strings": {"figures": {"acc": [1, None]}},
    "provenance a string": {"provenance": "yesterday"},
    "probe a number": {"probe": 3},
    "summary a dict": {"summary": {"a": 1}},
    "headline of lists": {"metrics": {"headline": [["a"]], "a": 1}},
    "arrays a list": {"arrays": [1]},
}


def test_report_skips_malformed_results_with_a_warning(tmp_path: Path) -> None:
    _small_result(figures={"acc": _figure()}).save(tmp_path / "good", formats=HTML)
    for index, changes in enumerate(MALFORMED_RECORDS.values()):
        folder = _small_result(figures={"acc": _figure()}).save(
            tmp_path / f"bad{index}", formats=HTML
        )
        _edit_record(folder, **changes)
    binary = _small_result().save(tmp_path / "binary", formats=HTML)
    (binary / "result.json").write_bytes(b'{"probe": "\xff"}')
    with pytest.warns(UserWarning, match="skips"):
        text = _report_text(build_report(tmp_path))
    assert "good" in text
    for index in range(len(MALFORMED_RECORDS)):
        assert f"<code>bad{index}</code>" in text  # listed under Skipped
    assert "<code>binary</code>" in text


# -- 9. leftovers of killed runs are removed by the next run ----------------------------------
def test_a_killed_save_is_cleaned_up_by_the_next_save(tmp_path: Path) -> None:
    script = (
        "import os, signal, numpy as np\n"
        "from workbench import results\n"
        "results.np.savez = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "results.ProbeResult('p', {}, {'x': np.zeros(2)}, {}, {}).save(\n"
        f"    {str(tmp_path / 'run')!r}, formats=('html',))\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), timeout=300)
    assert killed.returncode == -9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.tmp-")]
    _small_result().save(tmp_path / "other", formats=HTML)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_a_run_killed_between_the_renames_is_put_back(tmp_path: Path) -> None:
    kept = _small_result(0.7).save(tmp_path / "staging", formats=HTML)
    kept.rename(tmp_path / f".run.old-{_dead_pid()}-0123abcd")  # the old run, moved aside
    _small_result().save(tmp_path / "other", formats=HTML)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "run"]
    assert ProbeResult.load(tmp_path / "run").metrics["accuracy"] == 0.7


def test_stale_temporary_files_are_removed_by_the_next_run(
    tmp_path: Path, model_folder: Path, fake_compute: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    runs = tmp_path / "runs"
    runs.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale = [
        runs / f".out.run-{dead}-0123abcd",
        runs / f".out.tmp-{dead}-89abcdef",
        runs / f".elsewhere.tmp-{dead}-00000000",
        temp / f"wb-capture-{dead}-abc123",
        temp / f"wb-failed-{dead}-0123abcd-atlas.ipynb",
    ]
    live = [runs / f".out.run-{alive}-0123abcd", temp / f"wb-capture-{alive}-abc123"]
    for path in stale + live:
        if path.suffix == ".ipynb":
            path.write_text("{}")
        else:
            path.mkdir()
            (path / "big.npy").write_bytes(b"\0" * 1024)
    result = _cli("run", "atlas", "--model", model_folder, "--out", runs / "out", "--no-notebook")
    assert result.exit_code == 0, result.output
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in live)


def test_a_failed_capture_removes_its_files_from_a_given_spill_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.capture import capture, hooks

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    stale = tmp_path / "tmp" / f"wb-capture-{_dead_pid()}-abc123"
    stale.mkdir()
    lm = load_model(_tiny_vim(tmp_path / "vim"))
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    sites = ["blocks.0.resid_post", "blocks.1.resid_post"]
    seen: list[int] = []

    def fail_on_second_batch(value: torch.Tensor) -> None:
        seen.append(1)
        if len(seen) == 2:
            raise RuntimeError("interrupted")

    given = tmp_path / "spill"
    given.mkdir()
    (given / "keep.txt").write_text("the user's own file")
    created = tmp_path / "new-spill"
    for spill in (given, created):
        seen.clear()
        with (
            pytest.raises(RuntimeError, match="interrupted"),
            hooks(lm, {"blocks.1.resid_post": fail_on_second_batch}),
        ):
            capture(
                lm, images, sites, batch_size=2, memory_budget=0, spill_dir=spill, progress=False
            )
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
    assert not created.exists()
    cache = capture(lm, images, sites, batch_size=2, memory_budget=0, progress=False)
    assert not stale.exists()  # the next capture that spills removed the dead owner's folder
    cache.close()


# -- 10. one run per output folder, and a swap that never loses the old run -------------------
def test_a_second_run_to_the_same_out_is_refused_before_computing(
    tmp_path: Path, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import probes.atlas
    import workbench.models
    from workbench.runner import execute, plan_run

    calls: list[str] = []
    started, release = threading.Event(), threading.Event()

    def slow_load(spec: Any, **kwargs: Any) -> object:
        calls.append("load")
        started.set()
        release.wait(5)
        return object()

    monkeypatch.setattr(workbench.models, "load_model", slow_load)
    monkeypatch.setattr(probes.atlas, "run", lambda model, config=None: _small_result())
    out = tmp_path / "out"
    plan = plan_run("atlas", str(model_folder), out=out)
    first = threading.Thread(target=execute, args=(plan,), kwargs={"notebook": False})
    first.start()
    try:
        assert started.wait(30)
        second = _cli("run", "atlas", "--model", model_folder, "--out", out, "--no-notebook")
        line = _one_line_error(second)
        assert "another run" in line and calls == ["load"]
    finally:
        release.set()
        first.join(30)
    assert ProbeResult.load(out).metrics["accuracy"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "out"]  # lock released


def test_a_failed_swap_puts_the_old_run_back(
    tmp_path: Path, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papermill

    def fake_notebook(source: str, executed: str, parameters: dict, **kwargs: Any) -> None:
        _small_result(float(parameters["params"]["seed"])).save(parameters["out"], formats=HTML)
        Path(executed).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", fake_notebook)
    out = tmp_path / "out"
    args = ["run", "atlas", "--model", model_folder, "--out", out]
    assert _cli(*args, "--param", "seed=1").exit_code == 0
    before = _snapshot(out)
    real_replace = os.replace

    def flaky(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst) == out and Path(src).name == "result":
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", flaky)
    _one_line_error(_cli(*args, "--param", "seed=2", "--overwrite"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "out"]

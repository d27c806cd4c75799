"""The workbench plotly look and the export path (HTML offline, JSON, PNG/SVG via kaleido)."""

from __future__ import annotations

import json
import re
import struct
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from workbench import figures
from workbench.errors import DataError, WorkbenchError
from workbench.figures import (
    CELL_WIDTH,
    COLORWAY,
    DEFAULT_HEIGHT,
    PNG_SCALE,
    TEMPLATE,
    export_figures,
    fit_cell,
    new_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REMOTE_SRC = re.compile(r"""src\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def _figures() -> dict[str, go.Figure]:
    rng = np.random.default_rng(0)
    scatter = new_figure(title="Scatter", xaxis_title="x", yaxis_title="y")
    for label in range(3):
        scatter.add_trace(
            go.Scatter(
                x=rng.normal(size=50), y=rng.normal(size=50), mode="markers", name=f"c{label}"
            )
        )
    heat = new_figure(title="Heatmap", width=400, height=300)
    heat.add_trace(go.Heatmap(z=rng.normal(size=(8, 8))))
    bars = new_figure(title="Bars")
    bars.add_trace(go.Bar(x=["a", "b", "c"], y=[1, 3, 2]))
    return {"scatter": scatter, "heat": heat, "bars": bars}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    """One shared export (one Chrome start) for every test that needs real images.

    Not skipped without a browser: the project needs one, and the error says how to install it.
    """
    folder = tmp_path_factory.mktemp("figs")
    figs = _figures()
    started = time.perf_counter()
    paths = export_figures(figs, folder, formats=("html", "png", "svg"))
    print(f"export of {len(figs)} figures as html+png+svg: {time.perf_counter() - started:.2f}s")
    return figs, paths, folder


def test_template_is_registered_and_used() -> None:
    assert TEMPLATE in pio.templates
    fig = new_figure(title="hello", xaxis_title="layer")
    assert fig.layout.title.text == "hello"
    assert fig.layout.xaxis.title.text == "layer"
    assert tuple(fig.layout.template.layout.colorway) == COLORWAY
    assert fig.layout.template.layout.paper_bgcolor == "white"


def test_every_figure_gets_every_format(exported: tuple[dict, dict, Path]) -> None:
    figs, paths, folder = exported
    assert set(paths) == set(figs)
    for name, files in paths.items():
        assert sorted(p.name for p in files) == sorted(
            f"{name}.{ext}" for ext in ("json", "html", "png", "svg")
        )
        for path in files:
            assert path.parent == folder
            assert path.stat().st_size > 0


def test_png_files_are_png_at_the_export_scale(exported: tuple[dict, dict, Path]) -> None:
    _, _, folder = exported
    data = (folder / "heat.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", data[16:24])  # IHDR follows the magic and chunk header
    assert (width, height) == (400 * PNG_SCALE, 300 * PNG_SCALE)
    for name in ("scatter", "bars"):  # no width of their own: drawn as wide as a cell
        data = (folder / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC)
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (CELL_WIDTH * PNG_SCALE, DEFAULT_HEIGHT * PNG_SCALE)


def test_svg_files_parse_as_svg(exported: tuple[dict, dict, Path]) -> None:
    _, _, folder = exported
    for name in ("scatter", "heat", "bars"):
        root = ET.parse(folder / f"{name}.svg").getroot()
        assert root.tag.rsplit("}", 1)[-1] == "svg"


def test_html_is_offline_and_shares_one_plotlyjs(exported: tuple[dict, dict, Path]) -> None:
    _, _, folder = exported
    bundle = folder / "plotly.min.js"
    assert bundle.stat().st_size > 1_000_000
    for name in ("scatter", "heat", "bars"):
        text = (folder / f"{name}.html").read_text(encoding="utf-8")
        assert not REMOTE_SRC.search(text)
        assert 'src="plotly.min.js"' in text
        assert len(text) < 200_000  # plotly.js is referenced, not inlined


def test_plotlyjs_is_linked_not_copied_where_it_can_be(tmp_path: Path) -> None:
    """Every result folder has its own plotly.min.js; on one filesystem they are one file."""
    source = figures.plotlyjs_source()
    first = figures.write_plotlyjs(tmp_path)
    again = figures.write_plotlyjs(tmp_path)  # rewriting in place keeps working
    assert first == again and first.read_bytes() == source.read_bytes()
    if source.stat().st_dev == tmp_path.stat().st_dev:
        assert first.samefile(source)


def test_json_round_trips(exported: tuple[dict, dict, Path]) -> None:
    figs, _, folder = exported
    for name, fig in figs.items():
        loaded = pio.from_json((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert json.loads(loaded.to_json()) == json.loads(fig.to_json())


def test_html_only_needs_no_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(figures, "find_browser", lambda: None)
    paths = export_figures({"bars": _figures()["bars"]}, tmp_path, formats=("html",))
    assert [p.name for p in paths["bars"]] == ["bars.json", "bars.html"]
    assert (tmp_path / "plotly.min.js").is_file()


def test_missing_browser_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(figures, "find_browser", lambda: None)
    with pytest.raises(WorkbenchError) as info:
        export_figures({"bars": _figures()["bars"]}, tmp_path / "out", formats=("png",))
    message = str(info.value)
    assert "apt-get install chromium" in message
    assert "formats=('html',)" in message
    assert not (tmp_path / "out").exists()  # failed before writing anything


def test_browser_path_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert figures.find_browser() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    with pytest.raises(WorkbenchError, match="BROWSER_PATH"):
        figures.find_browser()


def test_bad_names_and_formats_are_refused(tmp_path: Path) -> None:
    fig = _figures()["bars"]
    with pytest.raises(DataError, match="file name"):
        export_figures({"../evil": fig}, tmp_path, formats=("html",))
    with pytest.raises(WorkbenchError, match="Unknown figure format"):
        export_figures({"ok": fig}, tmp_path, formats=("gif",))
    with pytest.raises(DataError, match=r"go\.Figure"):
        export_figures({"ok": fig.to_dict()}, tmp_path, formats=("html",))  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_save_figure_writes_each_format_in_one_call(tmp_path: Path) -> None:
    fig = new_figure(title="one call")
    fig.add_bar(x=["a", "b"], y=[1, 2])
    paths = figures.save_figure(fig, tmp_path / "paper" / "fig2.png")
    names = sorted(p.name for p in paths)
    assert names == ["fig2.html", "fig2.json", "fig2.png", "fig2.svg"]
    assert (tmp_path / "paper" / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(tmp_path / "paper" / "fig2.svg").getroot().tag.endswith("svg")
    assert (tmp_path / "paper" / "plotly.min.js").is_file()


def test_cli_export_writes_the_asked_figures_and_formats(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.results import ProbeResult

    figs = {}
    for name in ("first", "second"):
        figs[name] = new_figure(title=name)
        figs[name].add_scatter(x=[0, 1], y=[1, 0])
    ProbeResult("demo", {"m": 1.0}, {}, figs, {"model_spec": "x"}).save(
        tmp_path / "run", formats=("html",)
    )
    runner = CliRunner()
    args = ["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    ok = runner.invoke(app, [*args, "--figure", "second", "--format", "svg"])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["second.json", "second.svg"]
    bad = runner.invoke(app, [*args, "--figure", "third"])
    assert bad.exit_code == 2 and "first, second" in bad.output


# -- fitting a notebook cell -------------------------------------------------------------------
def _wide_figure() -> go.Figure:
    note = " ".join(f"word{i}" for i in range(80))
    fig = new_figure(title=f"A title<br><sup>{note}</sup>", width=1400, height=400)
    for k in range(3):
        fig.add_scatter(x=[0, 1], y=[k, k], name=f"a rather long series name number {k}")
    fig.update_layout(legend={"x": 1.02, "xanchor": "left"})
    return fig


def test_fit_cell_makes_a_wide_figure_fill_the_cell_instead() -> None:
    fig = fit_cell(_wide_figure())
    assert fig.layout.width is None  # responsive: fills its cell, never runs past it
    lines = fig.layout.title.text.split("<br>")
    assert lines[0] == "A title" and len(lines) >= 3  # the note wrapped onto several lines
    assert all(len(line) < 160 for line in lines)
    assert fig.layout.margin.t >= 24 + 20 * (len(lines) - 1)  # room for it above the plot
    legend = fig.layout.legend
    assert (legend.orientation, legend.yref, legend.y) == ("h", "container", 0)  # below
    assert fig.layout.height > 400  # the plot keeps its height; title and legend add to it
    again = fit_cell(go.Figure(fig))
    assert json.loads(again.to_json()) == json.loads(fig.to_json())  # twice: nothing more


def test_fit_cell_keeps_narrow_figures_and_legends_inside() -> None:
    fig = new_figure(title="short", width=500, height=300, legend={"x": 0.02, "y": 0.98})
    fig.add_scatter(x=[0], y=[0], name="a")
    fig.add_scatter(x=[0], y=[1], name="b")
    fitted = fit_cell(go.Figure(fig))
    assert fitted.layout.width == 500
    assert fitted.layout.height - fitted.layout.margin.t == 300 - 64  # the plot keeps its size
    assert (fitted.layout.legend.x, fitted.layout.legend.y) == (0.02, 0.98)


def test_every_probe_figure_is_fitted_by_the_run_frame(scratch_models) -> None:
    from workbench.models import load_model
    from workbench.probe import Findings, ProbeConfig, run_frame

    def wide(_result) -> dict[str, go.Figure]:
        fig = new_figure(title="wide", width=1500)
        for k in range(2):
            fig.add_scatter(x=[0, 1], y=[k, k], name=f"series {k}")
        return {"wide": fig}

    run = run_frame(name="toy", config=ProbeConfig, families=("encoder",), figures=wide)(
        lambda m, c, d: Findings({"v": 1.0}, {})
    )
    fig = run(load_model(scratch_models["bert"])).figures["wide"]
    assert fig.layout.width is None and fig.layout.legend.yref == "container"

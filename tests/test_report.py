"""The offline report: a summary page and one page per probe, every result and figure present,
one shared local plotly.js, readable metric tiles, no CDN."""

from __future__ import annotations

import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.errors import WorkbenchError
from workbench.figures import new_figure
from workbench.report import ReportPage, build_report, embed_figure
from workbench.results import ProbeResult, make_provenance

REMOTE_SRC = re.compile(r"""src\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)

# (probe, model, figure names), deliberately not in sorted order
RUNS = [
    ("patching", "gpt2", ["effect"]),
    ("atlas", "minilm", ["pca", "accuracy"]),
    ("atlas", "gpt2", ["pca"]),
]


class _Scripts(HTMLParser):
    """Collect <script> elements: their src and the text of JSON data blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.json_blocks: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "script":
            return
        a = dict(attrs)
        if a.get("src"):
            self.srcs.append(a["src"] or "")
        if a.get("type") == "application/json":
            self._open = a.get("id") or ""
            self.json_blocks[self._open] = ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.json_blocks[self._open] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def _save(root: Path, probe: str, model: str, names: list[str]) -> Path:
    figures = {}
    for name in names:
        fig = new_figure(title=f"{probe} {name} </script><b>x</b>")  # must not break the page
        fig.add_trace(go.Scatter(x=[0, 1, 2], y=np.array([1.0, 3.0, 2.0]), name=name))
        figures[name] = fig
    result = ProbeResult(
        probe=probe,
        metrics={"accuracy": 0.9, "curve": [0.1, 0.2], "missing": float("nan")},
        arrays={"x": np.arange(3)},
        figures=figures,
        provenance=make_provenance(
            probe=probe,
            model_spec=model,
            model_digest="sha256:feedbeef",
            family="decoder",
            config={"layer": 3},
            seed=0,
            started=time.time(),
        ),
        summary=f"{probe} on {model}: a <summary> with markup.",
    )
    return result.save(root / probe / model, formats=("html",))


def _pages(root: Path) -> str:
    """The text of every page the report wrote, summary first."""
    names = ["index.html", *sorted(p.name for p in root.glob("probe-*.html"))]
    return "\n".join((root / name).read_text(encoding="utf-8") for name in names)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("results")
    for probe, model, names in RUNS:
        _save(root, probe, model, names)
    (root / "atlas" / "minilm" / "atlas.ipynb").write_text('{"cells": []}')
    hidden = root / "atlas" / ".gpt2.tmp-1234"  # a save in progress: not a result yet
    hidden.mkdir()
    (hidden / "result.json").write_text('{"probe": "half-written"}')
    index = build_report(root, title="My <results>")
    return root, index, _pages(root)


def test_a_summary_page_and_one_page_per_probe_share_one_plotlyjs(
    built: tuple[Path, Path, str],
) -> None:
    root, index, _ = built
    assert index == root / "index.html"
    assert sorted(p.name for p in root.glob("*.html")) == [
        "index.html",
        "probe-atlas.html",
        "probe-patching.html",
    ]
    assert (root / "plotly.min.js").stat().st_size > 1_000_000
    for page in root.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        parser = _Scripts()
        parser.feed(text)
        assert parser.srcs == ["plotly.min.js"]  # the one shared copy, never a CDN
        assert not REMOTE_SRC.search(text)
        assert "My &lt;results&gt;" in text
        for other in ("index.html", "probe-atlas.html", "probe-patching.html"):
            assert f'href="{other}' in text  # every page links every other
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_every_result_and_figure_is_present(built: tuple[Path, Path, str]) -> None:
    root, _, text = built
    parser = _Scripts()
    parser.feed(text)
    expected_figures = 0
    for probe, model, names in RUNS:
        page = (root / f"probe-{probe}.html").read_text()
        assert f'href="{probe}/{model}"' in page
        for name in names:
            expected_figures += 1
            assert f'href="{probe}/{model}/figures/{name}.html"' in page
            assert f'href="{probe}/{model}/figures/{name}.json"' in page
            assert (root / probe / model / "figures" / f"{name}.html").is_file()
    assert len(parser.json_blocks) == expected_figures
    assert text.count('class="plot"') == expected_figures
    assert "half-written" not in text


def test_embedded_figures_are_the_saved_json(built: tuple[Path, Path, str]) -> None:
    root, _, text = built
    parser = _Scripts()
    parser.feed(text)
    embedded = [json.loads(block) for block in parser.json_blocks.values()]
    saved = [
        json.loads((root / probe / model / "figures" / f"{name}.json").read_text())
        for probe, model, names in sorted(RUNS)
        for name in names
    ]
    assert sorted(map(json.dumps, embedded)) == sorted(map(json.dumps, saved))


def test_summary_lists_every_result_and_links_it_on_its_probe_page(
    built: tuple[Path, Path, str],
) -> None:
    root, index, _ = built
    summary = index.read_text()
    atlas = (root / "probe-atlas.html").read_text()
    for probe, model, _ in RUNS:
        anchor = re.search(rf'href="probe-{probe}.html#(r[\d-]+)">{model}<', summary)
        assert anchor, (probe, model)
        assert f'id="{anchor.group(1)}"' in (root / f"probe-{probe}.html").read_text()
    assert "a &lt;summary&gt; with markup." in summary
    assert 'class="plot"' not in summary  # figures live on the probe pages
    # within a probe's page, results are sorted by model
    assert atlas.index('href="atlas/gpt2"') < atlas.index('href="atlas/minilm"')
    assert summary.index("probe-atlas.html") < summary.index("probe-patching.html")


def test_details_summary_and_notebook(built: tuple[Path, Path, str]) -> None:
    root, _, _ = built
    text = (root / "probe-atlas.html").read_text()
    assert 'href="atlas/minilm/atlas.ipynb"' in text
    assert "a &lt;summary&gt; with markup." in text
    assert "sha256:feedbeef" in text
    assert "<details>" in text and "Provenance" in text
    assert '<span class="null">null</span>' in text  # the NaN metric


def test_tiles_use_the_probes_readable_metric_names_units_and_digits(tmp_path: Path) -> None:
    from probes.curvature import METRICS

    result = ProbeResult(
        probe="curvature",
        metrics={
            "perplexity_change_pct": 0.536712,
            "strict_after": 0.04999,
            "perplexity_before": 5.70231,
            "headline": ["perplexity_change_pct", "strict_after", "perplexity_before"],
        },
        arrays={},
        figures={},
        provenance={"model_spec": "zoo:gpt2-canaries"},
    )
    result.save(tmp_path / "run", formats=("html",))
    build_report(tmp_path)
    page = (tmp_path / "probe-curvature.html").read_text()
    tiles = re.findall(r'<div class="tval">(.*?)</div><div class="tkey">(.*?)</div>', page)
    labels = {m.key: m.label for m in METRICS}
    assert tiles == [
        ("0.537 %", labels["perplexity_change_pct"]),  # a unit and three digits, not 0.536712
        ("5.0%", labels["strict_after"]),  # a fraction shown as a percentage
        ("5.7", "perplexity before"),  # no Metric: the key made readable, three digits
    ]
    assert "perplexity_change_pct 0.5367" not in page


def test_extra_pages_get_the_navigation_and_stale_pages_go(tmp_path: Path) -> None:
    _save(tmp_path, "atlas", "gpt2", ["pca"])
    _save(tmp_path, "patching", "gpt2", ["effect"])
    figure = new_figure(title="runs side by side")
    page = ReportPage(
        slug="compare-atlas",
        title="atlas: runs compared",
        body="<p>two runs</p>" + embed_figure(figure, "cmp-0"),
        description="held-out accuracy of every run",
    )
    build_report(tmp_path, extra_pages=[page])
    extra = (tmp_path / "compare-atlas.html").read_text()
    assert '<script src="plotly.min.js"' in extra and 'data-src="cmp-0"' in extra
    assert 'href="probe-atlas.html"' in extra and 'aria-current="page"' in extra
    summary = (tmp_path / "index.html").read_text()
    assert 'href="compare-atlas.html"' in summary and "held-out accuracy of every run" in summary
    written = ReportPage(slug="sweep-x", title="a sweep", body=None)  # written by its caller
    (tmp_path / "sweep-x.html").write_text("<p>the caller's page</p>")
    build_report(tmp_path, extra_pages=[page, written])
    assert 'href="sweep-x.html"' in (tmp_path / "probe-atlas.html").read_text()
    assert (tmp_path / "sweep-x.html").read_text() == "<p>the caller's page</p>"
    (tmp_path / "notes.html").write_text("<p>mine</p>")  # a page the report did not write
    shutil.rmtree(tmp_path / "patching")
    build_report(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.html")) == [
        "index.html",
        "notes.html",
        "probe-atlas.html",
        "sweep-x.html",  # not the report's to remove
    ]
    with pytest.raises(WorkbenchError, match="slug"):
        ReportPage(slug="../x", title="x", body="")
    with pytest.raises(WorkbenchError, match="probe pages"):
        ReportPage(slug="probe-atlas", title="x", body="")


def test_report_open_opens_the_summary_in_a_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    from typer.testing import CliRunner

    from workbench.cli import app

    _save(tmp_path, "atlas", "gpt2", ["pca"])
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [(tmp_path / "index.html").resolve().as_uri()]
    CliRunner().invoke(app, ["report", str(tmp_path)])
    assert len(opened) == 1  # only when asked


def test_no_results_raises(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="No results found"):
        build_report(tmp_path)
    assert not (tmp_path / "index.html").exists()
    with pytest.raises(WorkbenchError, match="not a folder"):
        build_report(tmp_path / "missing")


def test_broken_result_is_listed_not_fatal(tmp_path: Path) -> None:
    _save(tmp_path, "atlas", "gpt2", ["pca"])
    broken = tmp_path / "atlas" / "broken"
    broken.mkdir()
    (broken / "result.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skips"):
        text = build_report(tmp_path).read_text()
    assert "Skipped" in text and "atlas/broken" in text
    assert 'href="atlas/gpt2/figures/pca.html"' in (tmp_path / "probe-atlas.html").read_text()

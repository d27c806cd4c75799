"""The offline results gallery: every result and figure present, local plotly.js, no CDN."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.errors import WorkbenchError
from workbench.figures import new_figure
from workbench.report import build_report
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
    return root, index, index.read_text(encoding="utf-8")


def test_index_is_written_with_local_plotlyjs(built: tuple[Path, Path, str]) -> None:
    root, index, text = built
    assert index == root / "index.html"
    assert (root / "plotly.min.js").stat().st_size > 1_000_000
    parser = _Scripts()
    parser.feed(text)
    assert parser.srcs == ["plotly.min.js"]
    assert not REMOTE_SRC.search(text)
    assert "My &lt;results&gt;" in text
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_every_result_and_figure_is_present(built: tuple[Path, Path, str]) -> None:
    root, _, text = built
    parser = _Scripts()
    parser.feed(text)
    expected_figures = 0
    for probe, model, names in RUNS:
        assert f'href="{probe}/{model}"' in text
        for name in names:
            expected_figures += 1
            assert f'href="{probe}/{model}/figures/{name}.html"' in text
            assert f'href="{probe}/{model}/figures/{name}.json"' in text
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


def test_results_are_sorted_by_probe_then_model(built: tuple[Path, Path, str]) -> None:
    _, _, text = built
    order = [text.index(f'href="{p}/{m}"') for p, m in (("atlas", "gpt2"), ("atlas", "minilm"))]
    order.append(text.index('href="patching/gpt2"'))
    assert order == sorted(order)


def test_details_summary_and_notebook(built: tuple[Path, Path, str]) -> None:
    _, _, text = built
    assert 'href="atlas/minilm/atlas.ipynb"' in text
    assert "a &lt;summary&gt; with markup." in text
    assert "sha256:feedbeef" in text
    assert "<details>" in text and "Provenance" in text
    assert '<span class="null">null</span>' in text  # the NaN metric


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
    assert 'href="atlas/gpt2/figures/pca.html"' in text

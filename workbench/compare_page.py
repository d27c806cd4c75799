"""Comparison pages of the report: every sweep's runs of each probe on shared axes.

For each sweep below a results folder (a folder with ``sweep.json``, such as ``workbench demo``
and ``workbench sweep`` write) and each probe with two or more finished runs in it, one page
``compare-SWEEP-PROBE.html`` beside the report's ``index.html``: the sweep's table of points
(state, time, headline metrics) and the figures of ``workbench.compare``. The pages use the
report's one ``plotly.min.js`` and need no network. Sweep records and result folders are
untrusted: a malformed one is skipped with a warning, and nothing outside them is read.
"""

from __future__ import annotations

import html
import os
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go

from workbench.errors import WorkbenchError, one_line
from workbench.staging import sibling_name

PAGE_PREFIX = "compare-"


def comparison_pages(root: str | Path) -> str:
    """Write the comparison pages of every sweep below ``root``; return the index's links to
    them (an HTML fragment, empty when there is none). Pages of sweeps gone are removed."""
    from workbench.sweep import SWEEP_FILE

    root = Path(root)
    written: list[tuple[str, str]] = []
    for record_path in sorted(root.rglob(SWEEP_FILE)):
        folder = record_path.parent
        rel = folder.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            written += _sweep_pages(root, folder)
        except (WorkbenchError, OSError, ValueError) as err:
            warnings.warn(f"Report skips the sweep in {folder}: {one_line(err)}", stacklevel=2)
    keep = {name for _, name in written}
    for old in root.glob(f"{PAGE_PREFIX}*.html"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    if not written:
        return ""
    items = "".join(
        f'<li><a href="{quote(name)}">{html.escape(title)}</a></li>' for title, name in written
    )
    return f'<h3>Comparisons</h3><ul class="comparisons">{items}</ul>'


def _sweep_pages(root: Path, folder: Path) -> list[tuple[str, str]]:
    from workbench.compare import compare_figures, run_labels
    from workbench.results import ProbeResult
    from workbench.sweep import read_sweep_record, run_folders

    record = read_sweep_record(folder)
    rel = folder.relative_to(root).as_posix()
    sweep_name = root.resolve().name if rel == "." else rel
    by_probe: dict[str, list[tuple[Path, ProbeResult]]] = {}
    for path in run_folders(folder):
        try:
            result = ProbeResult.load(path)
        except WorkbenchError as err:
            warnings.warn(f"Comparison skips {path}: {one_line(err)}", stacklevel=3)
            continue
        by_probe.setdefault(result.probe, []).append((path, result))
    pages = []
    for probe, runs in sorted(by_probe.items()):
        if len(runs) < 2:
            continue
        results = [r for _, r in runs]
        figures = compare_figures(results, run_labels(results))
        points = [p for p in record["points"] if p.get("probe") == probe]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{sweep_name}-{probe}").strip("-.")
        name = f"{PAGE_PREFIX}{slug}.html"
        title = f"{probe}: {len(runs)} runs of {sweep_name}"
        links = {p.name: quote(p.relative_to(root).as_posix()) for p, _ in runs}
        _write(root / name, _page(title, points, links, figures))
        pages.append((title, name))
    return pages


def _write(target: Path, text: str) -> None:
    tmp = target.parent / sibling_name(target.name, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _embedded(figure: go.Figure) -> str:
    """The figure's JSON, safe inside a <script> element: <, > and & only occur inside JSON
    strings, where their escapes mean the same characters."""
    text = figure.to_json(validate=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _points_table(points: list[dict[str, Any]], links: dict[str, str]) -> str:
    from workbench.probe import get_probe

    rows = []
    for p in points:
        try:
            metrics = {m.key: m for m in get_probe(str(p.get("probe"))).METRICS if not m.over}
        except WorkbenchError:
            metrics = {}
        headline = p.get("headline")
        if not isinstance(headline, dict):
            headline = {}
        shown = ", ".join(
            f"{k} {metrics[k].format(v) if k in metrics else v}" for k, v in headline.items()
        )
        seconds = p.get("seconds")
        name = _esc(p.get("name"))
        link = links.get(str(p.get("name")))
        rows.append(
            "<tr>"
            + (f'<td><a href="{link}/">{name}</a></td>' if link else f"<td>{name}</td>")
            + f'<td class="{_esc(p.get("state"))}">{_esc(p.get("state"))}</td>'
            + f"<td>{f'{seconds:.0f} s' if isinstance(seconds, int | float) else '-'}</td>"
            + f"<td>{_esc(p.get('error') or shown or '-')}</td></tr>"
        )
    head = "<tr><th>point</th><th>state</th><th>time</th><th>headline</th></tr>"
    return f'<table class="points">{head}{"".join(rows)}</table>'


def _page(
    title: str, points: list[dict[str, Any]], links: dict[str, str], figures: dict[str, go.Figure]
) -> str:
    cards, scripts = [], []
    for n, (name, fig) in enumerate(figures.items()):
        scripts.append(f'<script type="application/json" id="cmp-{n}">{_embedded(fig)}</script>')
        cards.append(
            f'<figure class="card"><div class="plot" data-src="cmp-{n}"></div>'
            f"<figcaption>{_esc(name)}</figcaption></figure>"
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
<script src="plotly.min.js" charset="utf-8"></script>
</head>
<body>
<header><p><a href="index.html">← all results</a></p><h1>{_esc(title)}</h1></header>
<main>
<section><h2>Points</h2>{_points_table(points, links)}</section>
<section><h2>On shared axes</h2>{"".join(cards)}</section>
</main>
{"".join(scripts)}
<script>{_JS}</script>
</body>
</html>
"""


_CSS = """
body { margin:0; background:#f6f7f9; color:#1f2933;
  font:15px/1.5 Inter,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
a { color:#0072b2; text-decoration:none; } a:hover { text-decoration:underline; }
header { background:#fff; border-bottom:1px solid #e5e7eb; padding:16px 32px; }
header h1 { margin:4px 0 0; font-size:22px; } header p { margin:0; font-size:13px; }
main { padding:16px 32px; max-width:1200px; }
h2 { font-size:17px; }
table.points { border-collapse:collapse; font-size:13px; background:#fff; width:100%; }
table.points th, table.points td { text-align:left; padding:4px 10px;
  border-bottom:1px solid #f0f1f3; vertical-align:top; overflow-wrap:anywhere; }
td.failed { color:#b42318; font-weight:600; }
.card { margin:0 0 16px; background:#fff; border:1px solid #e5e7eb; border-radius:10px;
  padding:8px; }
.plot { width:100%; min-height:420px; }
figcaption { font-size:13px; color:#6b7280; padding:4px; }
"""

_JS = """
(function () {
  document.querySelectorAll(".plot").forEach(function (div) {
    if (!window.Plotly) {
      div.textContent = "plotly.min.js did not load; it should sit next to this page.";
      return;
    }
    var fig = JSON.parse(document.getElementById(div.dataset.src).textContent);
    if (fig.layout) { delete fig.layout.width; fig.layout.autosize = true; }
    if (fig.layout && fig.layout.height) { div.style.minHeight = fig.layout.height + "px"; }
    Plotly.newPlot(div, fig.data || [], fig.layout || {}, {responsive: true, displaylogo: false});
  });
})();
"""

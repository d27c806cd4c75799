"""Comparison pages of the report: every sweep's runs of each probe on shared axes.

For each sweep below a results folder (a folder with ``sweep.json``, such as ``workbench demo``
and ``workbench sweep`` write) and each probe with two or more finished runs in it, one page
``compare-SWEEP-PROBE.html`` of the report: the sweep's table of points (state, time, headline
metrics) and the figures of ``workbench.compare``. The report gives the pages its navigation,
styles and one ``plotly.min.js``. Sweep records and result folders are untrusted: a malformed one
is skipped with a warning, and nothing outside them is read.
"""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from workbench.errors import WorkbenchError, one_line

if TYPE_CHECKING:
    from workbench.report import ReportPage

PAGE_PREFIX = "compare-"


def comparison_pages(root: str | Path) -> list[ReportPage]:
    """The comparison pages of every sweep below ``root``, for the report to write."""
    from workbench.sweep import SWEEP_FILE

    root = Path(root)
    pages: list[ReportPage] = []
    for record_path in sorted(root.rglob(SWEEP_FILE)):
        folder = record_path.parent
        rel = folder.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            pages += _sweep_pages(root, folder)
        except (WorkbenchError, OSError, ValueError) as err:
            warnings.warn(f"Report skips the sweep in {folder}: {one_line(err)}", stacklevel=2)
    return pages


def _sweep_pages(root: Path, folder: Path) -> list[ReportPage]:
    from workbench.compare import compare_figures, run_labels
    from workbench.report import ReportPage, embed_figure
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
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{PAGE_PREFIX}{sweep_name}-{probe}").strip("-")
        links = {p.name: quote(p.relative_to(root).as_posix()) for p, _ in runs}
        cards = "".join(
            f'<figure class="card">{embed_figure(fig, f"{slug}-{n}")}'
            f"<figcaption>{_esc(name)}</figcaption></figure>"
            for n, (name, fig) in enumerate(figures.items())
        )
        body = (
            f'<section class="result"><h3>Points</h3>{_points_table(points, links)}</section>'
            f'<section class="result"><h3>On shared axes</h3>{cards}</section>'
        )
        pages.append(
            ReportPage(
                slug=slug,
                title=f"{probe}: {len(runs)} runs of {sweep_name}",
                body=body,
                description="every run's figures on shared axes",
            )
        )
    return pages


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


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

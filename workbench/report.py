"""One offline HTML gallery of every result under a folder.

``build_report`` finds result folders (those with a ``result.json``) and writes
``index.html`` next to one local ``plotly.min.js``: a table of contents, then per result the
summary, headline metrics, all metrics and provenance (folded), and every figure drawn
interactively from its plotly JSON, with links to its PNG/SVG/HTML files and the executed
notebook. The page needs no network: no CDN, and plotly.js is stored once, not per figure.
Figures are drawn when scrolled into view, so a page with many of them still opens quickly.

Result folders are untrusted input: a malformed one is skipped with a warning, and nothing is
read or linked from outside a result's own folder.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workbench.compare_page import comparison_pages
from workbench.errors import WorkbenchError, one_line
from workbench.figures import write_plotlyjs
from workbench.results import FIGURES_DIR, RESULT_FILE, headline_metrics, path_inside, read_record
from workbench.staging import sibling_name, sweep_stale

INDEX_FILE = "index.html"
_LINK_ORDER = {".html": 0, ".png": 1, ".svg": 2, ".pdf": 3, ".json": 4}


@dataclass
class _Entry:
    """One result folder as the report needs it."""

    folder: Path
    rel: str  # folder relative to the results dir, posix, "." for the dir itself
    record: dict[str, Any]
    notebooks: list[str] = field(default_factory=list)

    @property
    def probe(self) -> str:
        return str(self.record.get("probe", "?"))

    @property
    def model(self) -> str:
        return str(self.record.get("provenance", {}).get("model_spec") or "")


# -- public ------------------------------------------------------------------------------------
def build_report(results_dir: str | Path, *, title: str = "Workbench results") -> Path:
    """Write ``results_dir/index.html`` (atomically) for every result below it; return its path."""
    root = Path(results_dir)
    if not root.is_dir():
        raise WorkbenchError(f"{root} is not a folder. Pass the folder probes saved results in.")
    entries, skipped = _scan(root)
    if not entries:
        raise WorkbenchError(
            f"No results found under {root} (no folder with a {RESULT_FILE}). Run a probe "
            "first, e.g. `workbench run ...`, or point build_report at the folder it saved to."
        )
    entries.sort(key=lambda e: (e.probe, e.model, e.rel))
    sweep_stale(root)
    write_plotlyjs(root)
    page = _page(root, entries, skipped, title, comparison_pages(root))
    target = root / INDEX_FILE
    tmp = root / sibling_name(INDEX_FILE, "tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# -- scanning ----------------------------------------------------------------------------------
def _scan(root: Path) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """Result folders below ``root``; hidden folders (saves in progress) are skipped."""
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(root.rglob(RESULT_FILE)):
        folder = path.parent
        rel_parts = folder.relative_to(root).parts
        if any(part.startswith(".") for part in rel_parts):
            continue
        rel = "/".join(rel_parts) or "."
        try:
            record = read_record(folder)
        except WorkbenchError as exc:
            warnings.warn(f"Report skips {folder}: {exc}", stacklevel=3)
            skipped.append((rel, str(exc)))
            continue
        notebooks = sorted(p.name for p in folder.glob("*.ipynb"))
        entries.append(_Entry(folder=folder, rel=rel, record=record, notebooks=notebooks))
    return entries, skipped


# -- rendering ---------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(*parts: str) -> str:
    """A relative URL to a file below the results dir."""
    path = "/".join(p for p in parts if p and p != ".")
    return quote(path, safe="/")


def _fmt(value: Any) -> str:
    """HTML for one metric value: numbers short, structures as compact JSON."""
    if value is None:
        return '<span class="null">null</span>'
    if isinstance(value, bool):
        return _esc(str(value).lower())
    if isinstance(value, float):
        return _esc(f"{value:.4g}")
    if isinstance(value, int | str):
        return _esc(value)
    return f'<code class="wrap">{_esc(_compact(value))}</code>'


def _compact(value: Any, limit: int = 64) -> str:
    """Short JSON-like text for lists and dicts: floats to 4 digits, long lists cut."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        items = [_compact(v, limit) for v in value[:limit]]
        if len(value) > limit:
            items.append(f"… {len(value)} items")
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v, limit)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _table(rows: dict[str, Any], css: str = "kv") -> str:
    if not rows:
        return '<p class="muted">none</p>'
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
    return f'<table class="{css}">{body}</table>'


def _script_json(value: Any) -> str:
    """JSON text that can sit inside a <script> element and still parse as the same value.

    ``<``, ``>`` and ``&`` only occur inside JSON strings, where their ``\\u`` escapes mean the
    same characters, so no ``</script>`` or ``<!--`` can appear while every string round-trips.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _figure_json(entry: _Entry, name: str) -> str:
    """The figure's plotly JSON, read from inside the result folder, ready to embed."""
    path = path_inside(entry.folder, f"{FIGURES_DIR}/{name}.json")
    figure = json.loads(path.read_bytes().decode("utf-8"), parse_constant=lambda _: None)
    if not isinstance(figure, dict):
        raise ValueError(f"it holds a JSON {type(figure).__name__}, not a plotly figure")
    return _script_json(figure)


def _figures_html(entry: _Entry, index: int) -> tuple[str, str]:
    """Figure cards and their JSON <script> blocks for one result."""
    cards: list[str] = []
    scripts: list[str] = []
    figures = entry.record.get("figures", {})
    for number, (name, files) in enumerate(figures.items()):
        files = sorted(files, key=lambda f: _LINK_ORDER.get(Path(f).suffix, len(_LINK_ORDER)))
        links = [
            f'<a href="{_href(entry.rel, f)}">{_esc(Path(f).suffix.lstrip(".").upper())}</a>'
            for f in files
        ]
        try:
            embedded = _figure_json(entry, name)
        except (WorkbenchError, OSError, ValueError, RecursionError) as exc:
            body = f'<p class="missing">Cannot draw {_esc(name)}: {_esc(one_line(exc))}</p>'
        else:
            script_id = f"fig-{index}-{number}"
            scripts.append(f'<script type="application/json" id="{script_id}">{embedded}</script>')
            body = f'<div class="plot" data-src="{script_id}"></div>'
        cards.append(
            '<figure class="card">'
            f"{body}"
            f'<figcaption><span class="fname">{_esc(name)}</span>'
            f'<span class="links">{" · ".join(links)}</span></figcaption></figure>'
        )
    if not cards:
        return '<p class="muted">No figures.</p>', ""
    return f'<div class="figures">{"".join(cards)}</div>', "".join(scripts)


def _provenance_html(prov: dict[str, Any]) -> str:
    main_keys = (
        "model_spec",
        "model_digest",
        "family",
        "seed",
        "device",
        "wall_time_s",
        "timestamp_utc",
        "git_commit",
        "git_dirty",
    )
    main = {k: prov.get(k) for k in main_keys if k in prov}
    rest = {
        k: v
        for k, v in prov.items()
        if k not in main_keys and k not in ("config", "versions", "probe")
    }
    parts = [_table({**main, **rest})]
    if isinstance(prov.get("versions"), dict):
        parts.append("<h4>Versions</h4>" + _table(prov["versions"]))
    if "config" in prov:
        config = json.dumps(prov["config"], indent=2, sort_keys=True)
        parts.append(f'<h4>Config</h4><pre class="json">{_esc(config)}</pre>')
    return "".join(parts)


def _result_html(entry: _Entry, index: int) -> str:
    record = entry.record
    prov = record.get("provenance", {})
    metrics = record.get("metrics", {})
    try:
        headline = headline_metrics(metrics)
    except WorkbenchError:
        headline = {}
    tiles = "".join(
        f'<div class="tile"><div class="tval">{_fmt(v)}</div><div class="tkey">{_esc(k)}</div>'
        "</div>"
        for k, v in headline.items()
    )
    meta = [f'<a href="{_href(entry.rel) or "./"}">{_esc(entry.rel)}</a>']
    if prov.get("timestamp_utc"):
        meta.append(_esc(prov["timestamp_utc"]))
    if isinstance(prov.get("wall_time_s"), int | float):
        meta.append(f"{prov['wall_time_s']:.1f} s")
    if prov.get("model_digest"):
        meta.append(f'<code title="weights digest">{_esc(str(prov["model_digest"])[:12])}</code>')
    for nb in entry.notebooks:
        meta.append(f'notebook: <a href="{_href(entry.rel, nb)}">{_esc(nb)}</a>')
    all_metrics = {k: v for k, v in metrics.items() if k != "headline"}
    figures, scripts = _figures_html(entry, index)
    summary = record.get("summary") or ""
    model = entry.model or "no model"
    return f"""
<section class="result" id="r{index}">
  <h2><span class="probe">{_esc(entry.probe)}</span>
      <span class="model">{_esc(model)}</span></h2>
  <p class="meta">{" · ".join(meta)}</p>
  {f'<p class="summary">{_esc(summary)}</p>' if summary else ""}
  {f'<div class="tiles">{tiles}</div>' if tiles else ""}
  <details><summary>All metrics ({len(all_metrics)})</summary>{_table(all_metrics)}</details>
  <details><summary>Provenance</summary>{_provenance_html(prov)}</details>
  {figures}
  {scripts}
</section>"""


def _toc_html(entries: list[_Entry]) -> str:
    groups: dict[str, list[str]] = {}
    for index, entry in enumerate(entries):
        label = _esc(entry.model or entry.rel)
        groups.setdefault(entry.probe, []).append(f'<li><a href="#r{index}">{label}</a></li>')
    return "".join(
        f'<li><span class="tprobe">{_esc(probe)}</span><ul>{"".join(items)}</ul></li>'
        for probe, items in groups.items()
    )


def _page(
    root: Path, entries: list[_Entry], skipped: list[tuple[str, str]], title: str, links: str
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = "".join(_result_html(entry, i) for i, entry in enumerate(entries))
    skipped_html = ""
    if skipped:
        items = "".join(f"<li><code>{_esc(r)}</code>: {_esc(why)}</li>" for r, why in skipped)
        skipped_html = f'<section class="skipped"><h2>Skipped</h2><ul>{items}</ul></section>'
    count = f"{len(entries)} result{'s' if len(entries) != 1 else ''}"
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
<header><h1>{_esc(title)}</h1><p>{count} · built {now} · {_esc(root.resolve().name)}</p></header>
<div class="layout">
<nav class="toc">{links}<h3>Contents</h3><ul>{_toc_html(entries)}</ul></nav>
<main>{results}{skipped_html}</main>
</div>
<script>{_JS}</script>
</body>
</html>
"""


_CSS = """
:root { --ink:#1f2933; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff;
  --accent:#0072b2; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.5 Inter,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
header { background:#fff; border-bottom:1px solid var(--line); padding:20px 32px; }
header h1 { margin:0; font-size:24px; } header p { margin:4px 0 0; color:var(--muted); }
.layout { display:flex; gap:28px; padding:24px 32px; align-items:flex-start; }
.toc { position:sticky; top:16px; flex:0 0 230px; max-height:calc(100vh - 32px); overflow:auto;
  background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px 16px;
  font-size:14px; }
.toc h3 { margin:0 0 8px; font-size:13px; text-transform:uppercase; letter-spacing:.06em;
  color:var(--muted); }
.toc ul { list-style:none; margin:0; padding:0; }
.toc ul ul { padding-left:12px; margin:2px 0 8px; }
.tprobe { font-weight:600; }
main { flex:1; min-width:0; }
.result { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:20px 24px; margin-bottom:24px; scroll-margin-top:16px; }
.result h2 { margin:0; font-size:20px; display:flex; gap:12px; align-items:baseline;
  flex-wrap:wrap; }
.model { font-weight:400; color:var(--muted); font-size:16px; }
.meta { color:var(--muted); font-size:13px; margin:4px 0 12px; }
.summary { font-size:16px; max-width:80ch; }
.tiles { display:flex; flex-wrap:wrap; gap:12px; margin:12px 0; }
.tile { border:1px solid var(--line); border-radius:10px; padding:10px 16px; min-width:130px;
  background:#fafbfc; }
.tval { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.tkey { font-size:12px; color:var(--muted); }
details { margin:8px 0; border:1px solid var(--line); border-radius:8px; padding:6px 12px; }
summary { cursor:pointer; font-weight:600; font-size:14px; }
details h4 { margin:12px 0 4px; font-size:13px; }
table.kv { border-collapse:collapse; margin:8px 0; font-size:13px; }
table.kv th { text-align:left; font-weight:500; color:var(--muted); padding:3px 16px 3px 0;
  vertical-align:top; white-space:nowrap; }
table.kv td { padding:3px 0; font-variant-numeric:tabular-nums; }
table.kv tr + tr { border-top:1px solid #f0f1f3; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
pre.json { background:#f8f9fb; border:1px solid var(--line); border-radius:6px; padding:8px;
  max-height:320px; overflow:auto; margin:4px 0; }
.null, .muted { color:var(--muted); }
code.wrap { white-space:normal; overflow-wrap:anywhere; }
.figures { display:grid; grid-template-columns:1fr; gap:16px;
  margin-top:16px; }
.card { margin:0; border:1px solid var(--line); border-radius:10px; padding:8px;
  background:#fff; min-width:0; }
.plot { width:100%; min-height:420px; }
figcaption { display:flex; gap:8px; align-items:baseline; flex-wrap:wrap; font-size:13px;
  padding:6px 4px 0; border-top:1px solid #f0f1f3; }
.fname { font-weight:600; } .links { margin-left:auto; }
.missing { color:#b42318; }
.skipped { background:#fff7ed; border:1px solid #fed7aa; border-radius:12px; padding:12px 24px; }
@media (max-width: 900px) { .layout { display:block; padding:16px; } .toc { position:static;
  margin-bottom:16px; } .figures { grid-template-columns:1fr; } }
"""

_JS = """
(function () {
  var config = {responsive: true, displaylogo: false};
  function draw(div) {
    if (div.dataset.drawn) return;
    div.dataset.drawn = "1";
    if (!window.Plotly) {
      div.textContent = "plotly.min.js did not load; it should sit next to index.html.";
      return;
    }
    var fig = JSON.parse(document.getElementById(div.dataset.src).textContent);
    if (fig.layout) { delete fig.layout.width; fig.layout.autosize = true; }
    if (fig.layout && fig.layout.height) { div.style.minHeight = fig.layout.height + "px"; }
    Plotly.newPlot(div, {data: fig.data || [], layout: fig.layout || {},
                         frames: fig.frames || [], config: config});
  }
  var plots = document.querySelectorAll(".plot");
  if ("IntersectionObserver" in window) {
    var seen = new IntersectionObserver(function (items) {
      items.forEach(function (item) {
        if (item.isIntersecting) { draw(item.target); seen.unobserve(item.target); }
      });
    }, {rootMargin: "600px"});
    plots.forEach(function (div) { seen.observe(div); });
  } else {
    plots.forEach(draw);
  }
})();
"""

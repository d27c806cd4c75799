"""An offline HTML report of every result under a folder: a summary page and one page per probe.

``build_report`` finds result folders (those with a ``result.json``) and writes, next to one
shared local ``plotly.min.js``:

- ``index.html``, the summary: per probe its question, and per result its model, headline
  metrics and summary sentence, linked to the result on its probe's page;
- ``probe-NAME.html`` for each probe: per result the summary, metric tiles (readable names,
  units and digits from the probe's ``METRICS``), all metrics and provenance (folded), and every
  figure drawn interactively from its plotly JSON, with links to its PNG/SVG/HTML files and the
  executed notebook;
- any extra pages handed in as ``ReportPage`` (comparisons of runs, for example), with the same
  navigation, styles and plotly.js.

Every page loads the one shared ``plotly.min.js``; result folders keep their own copy, so each
still opens alone when exported. Figures are drawn when scrolled into view, so a long page opens
quickly. Nothing is loaded from the network.

Result folders are untrusted input: a malformed one is skipped with a warning (and listed on the
summary page), and nothing is read or linked from outside a result's own folder.
"""

from __future__ import annotations

import html
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
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
PROBE_PAGE_PREFIX = "probe-"
GENERATOR = "workbench report"
"""Marks the pages a report wrote, so a rebuild removes its own stale pages and nothing else."""
_LINK_ORDER = {".html": 0, ".png": 1, ".svg": 2, ".pdf": 3, ".json": 4}
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ReportPage:
    """A page of the report beyond the summary and the probe pages, such as a comparison of runs.

    ``body`` is the page's own HTML (trusted: the caller builds it, escaping what it quotes);
    ``embed_figure`` gives the HTML that draws a plotly figure in it. The report adds the
    navigation, the styles and the shared plotly.js, and lists the page under ``section``. With
    ``body=None`` the caller writes ``SLUG.html`` beside ``index.html`` itself (loading the same
    ``plotly.min.js``) and the report only links it.
    """

    slug: str
    """File name without ``.html``: letters, digits, ``-`` and ``_``."""
    title: str
    body: str | None
    section: str = "Comparisons"
    description: str = ""
    """One line for the summary page's list of extra pages."""

    def __post_init__(self) -> None:
        if not _SLUG_RE.fullmatch(self.slug) or self.slug.startswith(PROBE_PAGE_PREFIX):
            raise WorkbenchError(
                f"report page slug {self.slug!r} must be letters, digits, '-' or '_' and not "
                f"start with {PROBE_PAGE_PREFIX!r} (those are the probe pages)"
            )
        if self.slug == Path(INDEX_FILE).stem:
            raise WorkbenchError("report page slug 'index' is the summary page's; pick another")


@dataclass
class _Entry:
    """One result folder as the report needs it."""

    folder: Path
    rel: str  # folder relative to the results dir, posix, "." for the dir itself
    record: dict[str, Any]
    notebooks: list[str] = field(default_factory=list)
    anchor: str = ""

    @property
    def probe(self) -> str:
        return str(self.record.get("probe", "?"))

    @property
    def model(self) -> str:
        return str(self.record.get("provenance", {}).get("model_spec") or "")


@dataclass
class _Site:
    """Every page of one report: which file each probe's results go to, and the extra pages."""

    root: Path
    title: str
    entries: dict[str, list[_Entry]]  # probe -> its results, in page order
    pages: dict[str, str]  # probe -> file name of its page
    extra: list[ReportPage]
    skipped: list[tuple[str, str]]
    built: str


# -- public ------------------------------------------------------------------------------------
def build_report(
    results_dir: str | Path,
    *,
    title: str = "Workbench results",
    extra_pages: Sequence[ReportPage] = (),
) -> Path:
    """Write the report of every result below ``results_dir`` (each page atomically) and return
    the path of its summary page, ``index.html``.

    ``extra_pages`` are further pages that the report writes beside its own, links from every
    page's navigation and lists on the summary page; the comparison pages of every sweep below
    ``results_dir`` are added to them.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise WorkbenchError(f"{root} is not a folder. Pass the folder probes saved results in.")
    found, skipped = _scan(root)
    if not found:
        raise WorkbenchError(
            f"No results found under {root} (no folder with a {RESULT_FILE}). Run a probe "
            "first, e.g. `workbench run ...`, or point build_report at the folder it saved to."
        )
    extra_pages = [*extra_pages, *comparison_pages(root)]
    slugs = [page.slug for page in extra_pages]
    if len(set(slugs)) != len(slugs):
        raise WorkbenchError(f"two extra report pages share a slug: {sorted(slugs)}")
    found.sort(key=lambda e: (e.probe, e.model, e.rel))
    entries: dict[str, list[_Entry]] = {}
    for entry in found:
        entries.setdefault(entry.probe, []).append(entry)
    for number, results in enumerate(entries.values()):
        for index, entry in enumerate(results):
            entry.anchor = f"r{number}-{index}"
    site = _Site(
        root=root,
        title=title,
        entries=entries,
        pages=_page_names(list(entries)),
        extra=list(extra_pages),
        skipped=skipped,
        built=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    sweep_stale(root)
    write_plotlyjs(root)
    pages = {INDEX_FILE: _summary_page(site)}
    for probe, results in entries.items():
        pages[site.pages[probe]] = _probe_page(site, probe, results)
    for page in site.extra:
        if page.body is not None:
            pages[f"{page.slug}.html"] = _extra_page(site, page)
    for name, text in pages.items():
        _write(root / name, text)
    _remove_stale_pages(root, keep=set(pages) | {f"{p.slug}.html" for p in site.extra})
    return root / INDEX_FILE


def embed_figure(figure: Mapping[str, Any] | Any, element_id: str) -> str:
    """HTML that draws ``figure`` (a plotly figure or its JSON dict) on a report page, when it
    scrolls into view. ``element_id`` must be unique on the page."""
    spec = figure if isinstance(figure, Mapping) else json.loads(figure.to_json())
    return _plot_html(_script_json(dict(spec)), element_id)


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


def _page_names(probes: list[str]) -> dict[str, str]:
    """A file name per probe: its name, made safe for a file and kept unique."""
    names: dict[str, str] = {}
    for probe in probes:
        base = PROBE_PAGE_PREFIX + (re.sub(r"[^A-Za-z0-9_-]+", "-", probe).strip("-") or "probe")
        name, n = f"{base}.html", 2
        while name in names.values():
            name, n = f"{base}-{n}.html", n + 1
        names[probe] = name
    return names


# -- writing -----------------------------------------------------------------------------------
def _write(target: Path, text: str) -> None:
    tmp = target.parent / sibling_name(target.name, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_pages(root: Path, keep: set[str]) -> None:
    """Pages an earlier build wrote for probes or extra pages that are gone now."""
    marker = f'<meta name="generator" content="{GENERATOR}">'
    for path in root.glob("*.html"):
        if path.name in keep or not path.is_file() or path.is_symlink():
            continue
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                head = handle.read(2048)
        except OSError:
            continue
        if marker in head:
            path.unlink(missing_ok=True)


# -- pieces ------------------------------------------------------------------------------------
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


def _plot_html(embedded: str, element_id: str) -> str:
    return (
        f'<div class="plot" data-src="{_esc(element_id)}"></div>'
        f'<script type="application/json" id="{_esc(element_id)}">{embedded}</script>'
    )


def _figure_json(entry: _Entry, name: str) -> str:
    """The figure's plotly JSON, read from inside the result folder, ready to embed."""
    path = path_inside(entry.folder, f"{FIGURES_DIR}/{name}.json")
    figure = json.loads(path.read_bytes().decode("utf-8"), parse_constant=lambda _: None)
    if not isinstance(figure, dict):
        raise ValueError(f"it holds a JSON {type(figure).__name__}, not a plotly figure")
    return _script_json(figure)


# -- metrics as a reader wants them ------------------------------------------------------------
def _metric_specs(probe: str) -> dict[str, Any]:
    """The probe's scalar ``Metric``s by key (readable label, unit, digits); {} if unknown."""
    from workbench.probe import get_probe

    try:
        module = get_probe(probe)
    except (WorkbenchError, ImportError):
        return {}
    return {m.key: m for m in getattr(module, "METRICS", ()) if m.over is None}


def _probe_question(probe: str) -> str:
    from workbench.probe import get_probe

    try:
        module = get_probe(probe)
    except (WorkbenchError, ImportError):
        return ""
    doc = (getattr(module.run, "__doc__", None) or module.__doc__ or "").strip()
    first = doc.split("\n\n")[0]  # the first paragraph, as one line
    return " ".join(first.replace("``", "").split())


def _readable(key: str, value: Any, specs: dict[str, Any]) -> tuple[str, str] | None:
    """(label, value text) of one headline metric, or None for values a tile cannot show."""
    if isinstance(value, bool):
        return key.replace("_", " "), "yes" if value else "no"
    if key in specs:
        return specs[key].label, specs[key].format(value)
    if isinstance(value, dict | list):
        return None
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = str(value)
    return key.replace("_", " "), text


def _tiles(entry: _Entry, specs: dict[str, Any]) -> str:
    try:
        headline = headline_metrics(entry.record.get("metrics", {}))
    except WorkbenchError:
        return ""
    tiles = []
    for key, value in headline.items():
        shown = _readable(key, value, specs)
        if shown is not None:
            label, text = shown
            tiles.append(
                f'<div class="tile" title="{_esc(key)}"><div class="tval">{_esc(text)}</div>'
                f'<div class="tkey">{_esc(label)}</div></div>'
            )
    return f'<div class="tiles">{"".join(tiles)}</div>' if tiles else ""


# -- the probe pages ---------------------------------------------------------------------------
def _figures_html(entry: _Entry, index: str) -> str:
    """Figure cards (each with its JSON <script> block) of one result."""
    cards: list[str] = []
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
            body = _plot_html(embedded, f"fig-{index}-{number}")
        cards.append(
            '<figure class="card">'
            f"{body}"
            f'<figcaption><span class="fname">{_esc(name)}</span>'
            f'<span class="links">{" · ".join(links)}</span></figcaption></figure>'
        )
    if not cards:
        return '<p class="muted">No figures.</p>'
    return f'<div class="figures">{"".join(cards)}</div>'


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


def _result_html(entry: _Entry, specs: dict[str, Any]) -> str:
    record = entry.record
    prov = record.get("provenance", {})
    metrics = record.get("metrics", {})
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
    summary = record.get("summary") or ""
    model = entry.model or "no model"
    return f"""
<section class="result" id="{entry.anchor}">
  <h2><span class="probe">{_esc(entry.probe)}</span>
      <span class="model">{_esc(model)}</span></h2>
  <p class="meta">{" · ".join(meta)}</p>
  {f'<p class="summary">{_esc(summary)}</p>' if summary else ""}
  {_tiles(entry, specs)}
  <details><summary>All metrics ({len(all_metrics)})</summary>{_table(all_metrics)}</details>
  <details><summary>Provenance</summary>{_provenance_html(prov)}</details>
  {_figures_html(entry, entry.anchor)}
</section>"""


def _probe_page(site: _Site, probe: str, results: list[_Entry]) -> str:
    specs = _metric_specs(probe)
    toc = "".join(f'<li><a href="#{e.anchor}">{_esc(e.model or e.rel)}</a></li>' for e in results)
    question = _probe_question(probe)
    intro = f'<p class="question">{_esc(question)}</p>' if question else ""
    body = f"""<div class="layout">
<nav class="toc"><h3>{_esc(probe)}: {len(results)} result{"s" * (len(results) != 1)}</h3>
<ul>{toc}</ul></nav>
<main>{intro}{"".join(_result_html(e, specs) for e in results)}</main>
</div>"""
    return _page(site, f"{probe} · {site.title}", site.pages[probe], body)


# -- the summary page --------------------------------------------------------------------------
def _summary_page(site: _Site) -> str:
    cards = []
    for probe, results in site.entries.items():
        page = site.pages[probe]
        specs = _metric_specs(probe)
        rows = []
        for entry in results:
            summary = entry.record.get("summary") or ""
            rows.append(
                f'<tr><th><a href="{_esc(page)}#{entry.anchor}">'
                f"{_esc(entry.model or entry.rel)}</a>"
                f'<div class="rel">{_esc(entry.rel)}</div></th>'
                f"<td>{_tiles(entry, specs)}"
                f"{f'<p class=summary>{_esc(summary)}</p>' if summary else ''}</td></tr>"
            )
        question = _probe_question(probe)
        cards.append(
            f'<section class="result probe-card"><h2><a href="{_esc(page)}">{_esc(probe)}</a>'
            f' <span class="model">{len(results)} result{"s" * (len(results) != 1)}</span></h2>'
            f"{f'<p class=question>{_esc(question)}</p>' if question else ''}"
            f'<table class="overview">{"".join(rows)}</table></section>'
        )
    extra = ""
    if site.extra:
        items = "".join(
            f'<li><a href="{_esc(p.slug)}.html">{_esc(p.title)}</a>'
            f"{f' · {_esc(p.description)}' if p.description else ''}</li>"
            for p in site.extra
        )
        extra = f'<section class="result"><h2>More pages</h2><ul>{items}</ul></section>'
    skipped = ""
    if site.skipped:
        items = "".join(f"<li><code>{_esc(r)}</code>: {_esc(why)}</li>" for r, why in site.skipped)
        skipped = f'<section class="skipped"><h2>Skipped</h2><ul>{items}</ul></section>'
    body = f'<main class="single">{"".join(cards)}{extra}{skipped}</main>'
    return _page(site, site.title, INDEX_FILE, body)


def _extra_page(site: _Site, page: ReportPage) -> str:
    title = f'<h2 class="page-title">{_esc(page.title)}</h2>'
    body = f'<main class="single">{title}{page.body or ""}</main>'
    return _page(site, f"{page.title} · {site.title}", f"{page.slug}.html", body)


# -- the frame of every page -------------------------------------------------------------------
def _nav(site: _Site, current: str) -> str:
    def link(href: str, label: str) -> str:
        here = ' aria-current="page" class="here"' if href == current else ""
        return f'<a href="{_esc(href)}"{here}>{label}</a>'

    items = [link(INDEX_FILE, "Summary")]
    items += [
        link(site.pages[probe], f"{_esc(probe)} <span>{len(results)}</span>")
        for probe, results in site.entries.items()
    ]
    sections: dict[str, list[str]] = {}
    for page in site.extra:
        sections.setdefault(page.section, []).append(link(f"{page.slug}.html", _esc(page.title)))
    for section, links in sections.items():
        items.append(f'<span class="section">{_esc(section)}:</span>')
        items += links
    return f'<nav class="pages">{"".join(items)}</nav>'


def _page(site: _Site, title: str, current: str, body: str) -> str:
    count = sum(len(r) for r in site.entries.values())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
<script src="plotly.min.js" charset="utf-8"></script>
</head>
<body>
<header><h1>{_esc(site.title)}</h1><p>{count} result{"s" * (count != 1)} ·
{len(site.entries)} probe{"s" * (len(site.entries) != 1)} · built {site.built} ·
{_esc(site.root.resolve().name)}</p>{_nav(site, current)}</header>
{body}
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
header { background:#fff; border-bottom:1px solid var(--line); padding:16px 32px 0; }
header h1 { margin:0; font-size:24px; } header p { margin:4px 0 10px; color:var(--muted); }
nav.pages { display:flex; flex-wrap:wrap; gap:4px 18px; font-size:14px; align-items:baseline; }
nav.pages a { padding:6px 2px 8px; border-bottom:3px solid transparent; color:var(--ink); }
nav.pages a span { color:var(--muted); font-size:12px; }
nav.pages a.here { border-bottom-color:var(--accent); font-weight:600; }
nav.pages .section { color:var(--muted); margin-left:12px; }
.layout { display:flex; gap:28px; padding:24px 32px; align-items:flex-start; }
main.single { padding:24px 32px; max-width:1400px; }
.toc { position:sticky; top:16px; flex:0 0 220px; max-height:calc(100vh - 32px); overflow:auto;
  background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px 16px;
  font-size:14px; }
.toc h3 { margin:0 0 8px; font-size:13px; text-transform:uppercase; letter-spacing:.06em;
  color:var(--muted); }
.toc ul { list-style:none; margin:0; padding:0; }
main { flex:1; min-width:0; }
.question { font-size:16px; color:var(--muted); margin:0 0 16px; }
.result { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:20px 24px; margin-bottom:24px; scroll-margin-top:16px; }
.result h2 { margin:0; font-size:20px; display:flex; gap:12px; align-items:baseline;
  flex-wrap:wrap; }
.model { font-weight:400; color:var(--muted); font-size:16px; }
.meta { color:var(--muted); font-size:13px; margin:4px 0 12px; overflow-wrap:anywhere; }
.summary { font-size:15px; max-width:90ch; margin:6px 0; }
.tiles { display:flex; flex-wrap:wrap; gap:10px; margin:10px 0; }
.tile { border:1px solid var(--line); border-radius:10px; padding:8px 14px; min-width:120px;
  max-width:240px; background:#fafbfc; }
.tval { font-size:21px; font-weight:600; font-variant-numeric:tabular-nums; }
.tkey { font-size:12px; color:var(--muted); line-height:1.3; }
table.overview { border-collapse:collapse; width:100%; margin-top:8px; }
table.overview th { text-align:left; vertical-align:top; padding:10px 16px 10px 0;
  width:220px; font-weight:600; overflow-wrap:anywhere; }
table.overview td { padding:4px 0 10px; }
table.overview tr + tr { border-top:1px solid #f0f1f3; }
.rel { font-weight:400; font-size:12px; color:var(--muted); }
details { margin:8px 0; border:1px solid var(--line); border-radius:8px; padding:6px 12px; }
summary { cursor:pointer; font-weight:600; font-size:14px; }
details h4 { margin:12px 0 4px; font-size:13px; }
table.kv { border-collapse:collapse; margin:8px 0; font-size:13px; }
table.kv th { text-align:left; font-weight:500; color:var(--muted); padding:3px 16px 3px 0;
  vertical-align:top; white-space:nowrap; }
table.kv td { padding:3px 0; font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
table.kv tr + tr { border-top:1px solid #f0f1f3; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
pre.json { background:#f8f9fb; border:1px solid var(--line); border-radius:6px; padding:8px;
  max-height:320px; overflow:auto; margin:4px 0; }
.null, .muted { color:var(--muted); }
code.wrap { white-space:normal; overflow-wrap:anywhere; }
.figures { display:grid; grid-template-columns:1fr; gap:16px; margin-top:16px; }
.card { margin:0; border:1px solid var(--line); border-radius:10px; padding:8px;
  background:#fff; min-width:0; }
.plot { width:100%; min-height:420px; }
figcaption { display:flex; gap:8px; align-items:baseline; flex-wrap:wrap; font-size:13px;
  padding:6px 4px 0; border-top:1px solid #f0f1f3; }
.fname { font-weight:600; } .links { margin-left:auto; }
.missing { color:#b42318; }
.page-title { margin:0 0 16px; }
table.points { border-collapse:collapse; font-size:13px; width:100%; }
table.points th, table.points td { text-align:left; padding:4px 10px;
  border-bottom:1px solid #f0f1f3; vertical-align:top; overflow-wrap:anywhere; }
td.failed { color:#b42318; font-weight:600; }
.skipped { background:#fff7ed; border:1px solid #fed7aa; border-radius:12px; padding:12px 24px; }
@media (max-width: 900px) { .layout { display:block; padding:16px; } .toc { position:static;
  margin-bottom:16px; } main.single { padding:16px; } }
"""

_JS = """
(function () {
  var config = {responsive: true, displaylogo: false};
  function draw(div) {
    if (div.dataset.drawn) return;
    div.dataset.drawn = "1";
    if (!window.Plotly) {
      div.textContent = "plotly.min.js did not load; it should sit next to this page.";
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

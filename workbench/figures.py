"""One plotly look and one export path for every figure the workbench makes.

``new_figure`` starts a figure in the registered ``"workbench"`` template, so probes and
notebooks look alike without repeating layout code. ``export_figures`` writes each figure as
offline HTML (sharing one local ``plotly.min.js``, never a CDN), as plotly JSON (for an exact
round trip) and as PNG/SVG through kaleido, which drives a headless Chrome/Chromium. All static
images of one call are rendered in one browser session, because starting Chrome is the slow
part (about a second) and rendering an image takes a fraction of that.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kaleido
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from choreographer.errors import BrowserFailedError, ChromeNotFoundError

from workbench.errors import DataError, WorkbenchError
from workbench.staging import sibling_name, sweep_stale

TEMPLATE = "workbench"
"""Name of the registered template; pass ``template=TEMPLATE`` to plotly express calls."""

HTML_FORMAT = "html"
STATIC_FORMATS = ("png", "svg", "pdf")
FORMATS = (HTML_FORMAT, *STATIC_FORMATS)
DEFAULT_FORMATS = ("html", "png", "svg")

PNG_SCALE = 2
"""PNG pixels per layout pixel: sharp on high-density screens and in printed reports."""

CELL_WIDTH = 960
"""The widest a figure may be drawn: the output area of a JupyterLab notebook cell in a 1400-px
window with the file browser open. A figure with no fixed width fills whatever holds it; static
exports of such a figure are drawn this wide."""

# Okabe-Ito (colour-blind safe) first, then four distinct extras for up to ten classes.
COLORWAY = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#332288",  # indigo
    "#999933",  # olive
    "#8C564B",  # brown
    "#7F7F7F",  # grey
)

FONT_FAMILY = (
    "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', 'Liberation Sans', "
    "'DejaVu Sans', Arial, sans-serif"
)

_INK = "#1F2933"
_GRID = "#E5E7EB"
_AXIS = "#9CA3AF"

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_PATHS = (
    "/usr/bin/chromium",
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)

FIGURE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""What a figure name may be: it becomes a file name."""


# -- the look ----------------------------------------------------------------------------------
def _make_template() -> go.layout.Template:
    """Start from plotly_white (trace defaults for every type) and set our own layout on top."""
    template = go.layout.Template(pio.templates["plotly_white"])
    axis = {
        "showgrid": True,
        "gridcolor": _GRID,
        "gridwidth": 1,
        "zeroline": True,
        "zerolinecolor": _AXIS,
        "zerolinewidth": 1,
        "showline": True,
        "linecolor": _AXIS,
        "linewidth": 1,
        "ticks": "outside",
        "tickcolor": _AXIS,
        "ticklen": 4,
        "automargin": True,
        "title": {"standoff": 10, "font": {"size": 13}},
    }
    template.layout.update(
        font={"family": FONT_FAMILY, "size": 13, "color": _INK},
        title={"x": 0.0, "xanchor": "left", "xref": "paper", "font": {"size": 16}},
        colorway=list(COLORWAY),
        colorscale={"sequential": "Viridis", "diverging": "RdBu_r"},
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin={"l": 64, "r": 24, "t": 64, "b": 56, "pad": 0},
        xaxis=axis,
        yaxis=axis,
        legend={"bgcolor": "rgba(255,255,255,0.85)", "borderwidth": 0, "itemsizing": "constant"},
        hovermode="closest",
        hoverlabel={"font": {"family": FONT_FAMILY, "size": 12}, "bgcolor": "white"},
        coloraxis={"colorbar": {"outlinewidth": 0, "thickness": 14, "ticks": "outside"}},
    )
    return template


pio.templates[TEMPLATE] = _make_template()


def new_figure(**layout: Any) -> go.Figure:
    """An empty figure in the workbench look; ``layout`` keywords go to ``update_layout``."""
    fig = go.Figure(layout={"template": TEMPLATE})
    if layout:
        fig.update_layout(**layout)
    return fig


# -- fitting a notebook cell -------------------------------------------------------------------
DEFAULT_HEIGHT = 450
"""plotly.js's height for a figure that sets none."""
_MAIN_CHAR_PX = 9.0  # mean width of a title character at the template's 16 px
_NOTE_CHAR_PX = 6.4  # and of a <sup> note character (70% of that size)
_TITLE_PAD = 20
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_LEGENDLESS = ("heatmap", "image", "table", "contour", "histogram2d", "surface")


def cell_width(preferred: float) -> int | None:
    """``preferred`` if a figure that wide fits a notebook cell, else None: the figure then fills
    its cell (plotly's responsive width) instead of running past the cell's edge."""
    return int(preferred) if preferred <= CELL_WIDTH else None


def fit_cell(fig: go.Figure) -> go.Figure:
    """Make ``fig`` fit a notebook cell, in place, and return it.

    No fixed width wider than ``CELL_WIDTH`` (such a figure fills its cell instead); the title's
    notes are wrapped to the width, with room made above the plot; a legend that would sit right
    of the plot goes below it, where long names cannot squeeze the plot. A legend placed inside
    the plot stays. Fitting twice changes nothing more.
    """
    if fig.layout.width is not None and fig.layout.width > CELL_WIDTH:
        fig.layout.width = None
    _fit_title(fig)
    _legend_below(fig)
    return fig


def _margin(fig: go.Figure, side: str) -> float:
    value = getattr(fig.layout.margin, side)
    if value is None:
        value = getattr(pio.templates[TEMPLATE].layout.margin, side)
    return float(value or 0)


def _height(fig: go.Figure) -> float:
    return float(fig.layout.height or DEFAULT_HEIGHT)


def _title_parts(text: str) -> tuple[str, list[str]]:
    """The title's main text, and its ``<sup>`` notes (one per ``<sup>`` element; breaks inside
    one note were made for some fixed width, so they are dropped and the note is re-wrapped)."""
    main: list[str] = []
    notes: list[str] = []
    inside = False
    for piece in _BREAK.split(text):
        opens = "<sup>" in piece
        if opens:
            notes.append("")
        target_is_note = inside or opens
        inside = (inside or opens) and "</sup>" not in piece
        clean = piece.replace("<sup>", "").replace("</sup>", "").strip()
        if target_is_note:
            notes[-1] = f"{notes[-1]} {clean}".strip()
        elif clean:
            main.append(clean)
    return " ".join(main), [n for n in notes if n]


def _fit_title(fig: go.Figure) -> None:
    text = fig.layout.title.text
    if not text:
        return
    room = (fig.layout.width or CELL_WIDTH) - _margin(fig, "l") - 16
    main, notes = _title_parts(text)
    main_lines = textwrap.wrap(main, max(30, int(room / _MAIN_CHAR_PX))) or [""]
    note_lines = [
        line for note in notes for line in textwrap.wrap(note, max(40, int(room / _NOTE_CHAR_PX)))
    ]
    subplot_titles = any(
        a.yref == "paper" and a.y is not None and a.y >= 1 for a in fig.layout.annotations
    )
    top = _TITLE_PAD + 24 * len(main_lines) + 20 * len(note_lines) + (30 if subplot_titles else 12)
    grow = top - _margin(fig, "t")
    fig.update_layout(
        title={
            "text": "<br>".join([*main_lines, *(f"<sup>{line}</sup>" for line in note_lines)]),
            "y": 1.0,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": _TITLE_PAD},
        },
    )
    if grow:  # the plot keeps its height; the margin above it holds the title exactly
        fig.update_layout(margin_t=top, height=_height(fig) + grow)


def _legend_entries(fig: go.Figure) -> list[str]:
    """Names the legend shows (plotly shows a legend for two or more traces, or when asked)."""
    if fig.layout.showlegend is False:
        return []
    traces = [t for t in fig.data if t.type not in _LEGENDLESS]
    if len(traces) < 2 and fig.layout.showlegend is not True:
        return []
    return [str(t.name or "") for t in traces if t.showlegend is not False and t.name]


def _legend_below(fig: go.Figure) -> None:
    legend = fig.layout.legend
    if legend.yref == "container":  # already placed below (or deliberately in the margin)
        return
    inside = all(v is not None and 0 <= v <= 1 for v in (legend.x, legend.y))
    names = _legend_entries(fig)
    if inside or not names:
        return
    width = (fig.layout.width or CELL_WIDTH) - 40
    rows, used = 1, 0.0
    for name in names:
        item = 46 + 7.2 * len(_BREAK.sub(" ", name))
        if used and used + item > width:
            rows, used = rows + 1, 0.0
        used += item
    fig.update_layout(
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 0,
            "yanchor": "bottom",
            "x": 0,
            "xanchor": "left",
        },
        height=_height(fig) + 24 * rows + 12,
    )


# -- shared figure builders -------------------------------------------------------------------
def token_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str = "",
    colorscale: str = "Viridis",
    zmid: float | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    colorbar_title: str = "",
    hover_value: str = "value",
) -> go.Figure:
    """A (rows x cols) heatmap over token (or slot) labels, e.g. attention query x key.

    Axes are integer positions with the labels as tick text, so repeated tokens (two "the")
    stay separate cells instead of being merged the way categorical axes would merge them. Give
    ``zmin=0`` for a distribution (attention, shares): the other end then comes from the data,
    so the colour scale starts at 0 rather than stretching a near-uniform map to full contrast.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise DataError(
            f"heatmap values have shape {values.shape} but there are {len(row_labels)} row and "
            f"{len(col_labels)} column labels"
        )
    finite = values[np.isfinite(values)]
    if (zmin is None) != (zmax is None) and finite.size:  # plotly ignores a lone bound
        zmin = float(finite.min()) if zmin is None else zmin
        zmax = float(finite.max()) if zmax is None else zmax
        if zmax <= zmin:
            zmax = zmin + 1.0
    rows = [f"{i}: {t}" for i, t in enumerate(row_labels)]
    cols = [f"{j}: {t}" for j, t in enumerate(col_labels)]
    hover = np.array([[f"{r} → {c}" for c in cols] for r in rows])
    fig = new_figure(title=title)
    fig.add_trace(
        go.Heatmap(
            z=values,
            x=list(range(len(cols))),
            y=list(range(len(rows))),
            text=hover,
            hovertemplate=f"%{{text}}<br>{hover_value} %{{z:.4g}}<extra></extra>",
            colorscale=colorscale,
            zmid=zmid,
            zmin=zmin,
            zmax=zmax,
            colorbar={"title": {"text": colorbar_title}},
        )
    )
    size = max(len(rows), len(cols))
    font = 11 if size <= 40 else 8
    fig.update_xaxes(
        tickmode="array",
        tickvals=list(range(len(cols))),
        ticktext=[str(t) for t in col_labels],
        tickangle=-60,
        tickfont={"size": font},
        showgrid=False,
        zeroline=False,
    )
    fig.update_yaxes(
        tickmode="array",
        tickvals=list(range(len(rows))),
        ticktext=[str(t) for t in row_labels],
        autorange="reversed",
        tickfont={"size": font},
        showgrid=False,
        zeroline=False,
    )
    cell = 22 if size <= 30 else 14
    fig.update_layout(
        width=cell_width(220 + cell * len(cols)), height=min(1400, 160 + cell * len(rows))
    )
    return fig


def image_overlay(
    image: np.ndarray,
    scores: np.ndarray | None,
    patch_size: int,
    *,
    title: str = "",
    colorscale: str = "Inferno",
    zmin: float | None = None,
    zmax: float | None = None,
    opacity: float = 0.6,
    selected: int | None = None,
    colorbar_title: str = "",
    width: int = 460,
    categories: Sequence[str] | None = None,
) -> go.Figure:
    """An image with a per-patch score map laid over it (``scores``: grid_h x grid_w or flat).

    The overlay is a heatmap in pixel coordinates, one cell per patch, so hovering or clicking
    gives the patch; ``selected`` (a flat patch index) is outlined. With ``categories``, the
    scores are class ids (0 .. len(categories) - 1), drawn in one distinct colour per class with
    the class names on the colour bar.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"image must be (H, W, 3); got {image.shape}")
    h, w = image.shape[:2]
    if h % patch_size or w % patch_size:
        raise DataError(f"image {h}x{w} is not a whole number of {patch_size}-px patches")
    gh, gw = h // patch_size, w // patch_size
    grid = np.zeros((gh, gw)) if scores is None else np.asarray(scores, dtype=float)
    if grid.size != gh * gw:
        raise DataError(f"{grid.size} scores for a {gh}x{gw} patch grid")
    grid = grid.reshape(gh, gw)
    centres_x = patch_size * (np.arange(gw) + 0.5) - 0.5
    centres_y = patch_size * (np.arange(gh) + 0.5) - 0.5
    index = np.arange(gh * gw).reshape(gh, gw)
    colour: dict[str, Any] = {"colorscale": colorscale, "zmin": zmin, "zmax": zmax}
    colorbar: dict[str, Any] = {"title": {"text": colorbar_title}}
    value = "score %{z:.3g}"
    if categories is not None:
        colour, value = _category_colours(grid, categories), "%{text}"
        colorbar |= {"tickvals": list(range(len(categories))), "ticktext": list(categories)}
    fig = new_figure(title=title)
    fig.add_trace(go.Image(z=image.astype(np.uint8), hoverinfo="skip", name="image"))
    fig.add_trace(
        go.Heatmap(
            z=grid,
            x=centres_x,
            y=centres_y,
            customdata=index,
            text=None if categories is None else np.asarray(categories)[grid.astype(int)],
            opacity=0.0 if scores is None else opacity,
            showscale=scores is not None,
            colorbar=colorbar,
            hovertemplate=f"patch %{{customdata}} (row %{{y:.0f}}px, col %{{x:.0f}}px)<br>{value}"
            "<extra></extra>",
            name="patches",
            **colour,
        )
    )
    if selected is not None:
        r, c = divmod(int(selected), gw)
        fig.add_shape(
            type="rect",
            x0=c * patch_size - 0.5,
            x1=(c + 1) * patch_size - 0.5,
            y0=r * patch_size - 0.5,
            y1=(r + 1) * patch_size - 0.5,
            line={"color": "#00E5FF", "width": 3},
        )
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain="domain")
    fig.update_yaxes(
        visible=False, range=[h - 0.5, -0.5], scaleanchor="x", scaleratio=1, constrain="domain"
    )
    fig.update_layout(width=width, height=width * h / w + 80, margin={"l": 10, "r": 10, "b": 10})
    return fig


def _category_colours(ids: np.ndarray, categories: Sequence[str]) -> dict[str, Any]:
    """A stepped colour scale: class k is one flat colour over [k - 0.5, k + 0.5]."""
    k = len(categories)
    if k > len(COLORWAY):
        raise DataError(f"{k} categories, but only {len(COLORWAY)} distinct colours")
    if ids.size and (ids.min() < 0 or ids.max() >= k or not np.all(ids == np.round(ids))):
        raise DataError(f"category ids must be whole numbers in 0..{k - 1}")
    steps = [
        [edge, colour] for i, colour in enumerate(COLORWAY[:k]) for edge in (i / k, (i + 1) / k)
    ]
    return {"colorscale": steps, "zmin": -0.5, "zmax": k - 0.5}


# -- finding a browser -------------------------------------------------------------------------
def _is_executable(path: str | Path) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_browser() -> str | None:
    """Path of a Chrome/Chromium for kaleido, or None.

    Order: ``BROWSER_PATH`` (an explicit choice, so a wrong value is an error), the usual names
    on ``PATH``, the usual install locations, and finally choreographer's own search, which
    also finds a Chrome downloaded with ``kaleido_get_chrome``.
    """
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        if _is_executable(explicit):
            return explicit
        raise WorkbenchError(
            f"BROWSER_PATH={explicit!r} is not an executable file. Point it at Chrome or "
            "Chromium (e.g. /usr/bin/chromium), or unset it to search the usual places."
        )
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found and _is_executable(found):
            return found
    for candidate in BROWSER_PATHS:
        if _is_executable(candidate):
            return candidate
    try:
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # best effort: an internal API of choreographer that may change
        return None


def _no_browser_error() -> WorkbenchError:
    return WorkbenchError(
        "PNG/SVG export needs Chrome or Chromium, and none was found (looked at BROWSER_PATH, "
        f"{', '.join(BROWSER_NAMES)} on PATH, and {BROWSER_PATHS[0]}). Install one with "
        "`apt-get install chromium` (or `make setup`), or set BROWSER_PATH to its executable. "
        "To skip static images, pass formats=('html',)."
    )


# -- export ------------------------------------------------------------------------------------
def check_figure_name(name: str) -> None:
    """Figure names become file names, so keep them to letters, digits, ``_``, ``.``, ``-``."""
    if not isinstance(name, str) or not FIGURE_NAME_RE.fullmatch(name):
        raise DataError(
            f"Figure name {name!r} cannot be a file name. Use letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (e.g. 'accuracy_by_layer')."
        )


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    wanted = tuple(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise WorkbenchError(
            f"Unknown figure format(s) {unknown}. Choose from {FORMATS} "
            "(plotly JSON is always written)."
        )
    return wanted


def plotlyjs_source() -> Path:
    """The plotly.js file of the installed plotly package."""
    return Path(pio.__file__).parent.parent / "package_data" / "plotly.min.js"


def write_plotlyjs(folder: str | Path) -> Path:
    """Write the installed plotly.js as ``folder/plotly.min.js`` (atomically), for offline HTML.

    On the installed file's filesystem it is a hard link, so every result folder keeps its own
    copy (each opens alone) while the disk holds the 4.8 MB once; elsewhere it is copied.
    """
    folder = Path(folder)
    source = plotlyjs_source()
    target = folder / "plotly.min.js"
    sweep_stale(folder)
    tmp = folder / sibling_name(target.name, "tmp")
    try:
        if source.is_file():
            try:
                os.link(source, tmp)
            except OSError:  # another filesystem, or links not allowed: a copy
                shutil.copyfile(source, tmp)
        else:  # unusual installs: ask plotly for the text instead of guessing its layout
            from plotly.offline import get_plotlyjs

            tmp.write_text(get_plotlyjs(), encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def export_figures(
    figures: Mapping[str, go.Figure],
    folder: str | Path,
    formats: Iterable[str] = DEFAULT_FORMATS,
) -> dict[str, list[Path]]:
    """Write every figure as NAME.json plus NAME.<format> for each format; return the paths.

    HTML files load ``plotly.min.js`` from the same folder, so the folder opens offline and the
    4.8 MB library is stored once rather than once per figure. PNG/SVG/PDF need Chrome or
    Chromium (see ``find_browser``); all of them are rendered in one browser session.
    """
    folder = Path(folder)
    formats = _check_formats(formats)
    for name, fig in figures.items():
        check_figure_name(name)
        if not isinstance(fig, go.Figure):
            raise DataError(
                f"Figure {name!r} is a {type(fig).__name__}, not a plotly go.Figure. "
                "Wrap dicts with go.Figure(...) first."
            )
    if not figures:
        return {}
    static = [f for f in formats if f in STATIC_FORMATS]
    browser = find_browser() if static else None
    if static and browser is None:
        raise _no_browser_error()

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {name: [] for name in figures}
    for name, fig in figures.items():
        path = folder / f"{name}.json"
        fig.write_json(path)
        written[name].append(path)

    if HTML_FORMAT in formats:
        write_plotlyjs(folder)
        for name, fig in figures.items():
            path = folder / f"{name}.html"
            fig.write_html(
                path,
                include_plotlyjs="directory",
                include_mathjax=False,
                full_html=True,
                config={"displaylogo": False, "responsive": True},
            )
            written[name].append(path)

    if static and browser is not None:
        jobs = []
        for name, fig in figures.items():
            for fmt in static:
                path = folder / f"{name}.{fmt}"
                opts = {
                    "format": fmt,
                    "scale": PNG_SCALE if fmt == "png" else 1,
                    # a responsive figure is drawn as wide as a notebook cell shows it
                    "width": fig.layout.width or CELL_WIDTH,
                    "height": fig.layout.height or DEFAULT_HEIGHT,
                }
                jobs.append({"fig": fig, "path": path, "opts": opts})
                written[name].append(path)
        _render_static(jobs, browser)
    return written


def save_figure(
    fig: go.Figure, path: str | Path, formats: Iterable[str] = DEFAULT_FORMATS
) -> list[Path]:
    """Export one figure in one call: ``save_figure(fig, "paper/fig2")`` writes fig2.html,
    fig2.png and fig2.svg (plus fig2.json and the shared plotly.min.js) into ``paper/``.

    A suffix such as ``.png`` on ``path`` is dropped: ``formats`` decides what is written.
    """
    path = Path(path)
    if path.suffix.lower().lstrip(".") in (*FORMATS, "json"):
        path = path.with_suffix("")
    return export_figures({path.name: fig}, path.parent, formats)[path.name]


def _render_static(jobs: list[dict[str, Any]], browser: str) -> None:
    """Render all jobs in one kaleido session on ``browser``.

    ``enable_sandbox=False`` (kaleido's default, stated here on purpose) passes ``--no-sandbox``,
    without which Chrome refuses to start as root, as in containers and CI. MathJax is off: its
    only source would be a CDN.
    """
    kopts = {"path": browser, "n": 1, "mathjax": False, "enable_sandbox": False}
    try:
        kaleido.write_fig_from_object_sync(jobs, kopts=kopts, cancel_on_error=True)
    except (ChromeNotFoundError, BrowserFailedError) as exc:
        raise WorkbenchError(
            f"Chrome at {browser} could not start for PNG/SVG export ({exc}). Reinstall it "
            "(`apt-get install chromium` or `make setup`), set BROWSER_PATH to a working "
            "Chrome, or pass formats=('html',) to skip static images."
        ) from exc


def setup_notebook() -> None:
    """Show figures in notebooks without a CDN: JupyterLab renders plotly's own mimetype.

    Saved notebooks stay small (no inlined plotly.js); the report carries the static copies.
    """
    pio.renderers.default = "plotly_mimetype"

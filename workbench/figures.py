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
    stay separate cells instead of being merged the way categorical axes would merge them.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise DataError(
            f"heatmap values have shape {values.shape} but there are {len(row_labels)} row and "
            f"{len(col_labels)} column labels"
        )
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
        width=min(1400, 220 + cell * len(cols)), height=min(1400, 160 + cell * len(rows))
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
) -> go.Figure:
    """An image with a per-patch score map laid over it (``scores``: grid_h x grid_w or flat).

    The overlay is a heatmap in pixel coordinates, one cell per patch, so hovering or clicking
    gives the patch; ``selected`` (a flat patch index) is outlined.
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
    fig = new_figure(title=title)
    fig.add_trace(go.Image(z=image.astype(np.uint8), hoverinfo="skip", name="image"))
    fig.add_trace(
        go.Heatmap(
            z=grid,
            x=centres_x,
            y=centres_y,
            customdata=index,
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            opacity=0.0 if scores is None else opacity,
            showscale=scores is not None,
            colorbar={"title": {"text": colorbar_title}},
            hovertemplate="patch %{customdata} (row %{y:.0f}px, col %{x:.0f}px)<br>"
            "score %{z:.3g}<extra></extra>",
            name="patches",
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


def write_plotlyjs(folder: str | Path) -> Path:
    """Write the installed plotly.js as ``folder/plotly.min.js`` (atomically), for offline HTML."""
    folder = Path(folder)
    source = Path(pio.__file__).parent.parent / "package_data" / "plotly.min.js"
    target = folder / "plotly.min.js"
    sweep_stale(folder)
    tmp = folder / sibling_name(target.name, "tmp")
    try:
        if source.is_file():
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
                opts = {"format": fmt, "scale": PNG_SCALE if fmt == "png" else 1}
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

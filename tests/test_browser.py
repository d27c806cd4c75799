"""The workbench in a real JupyterLab, driven by headless Chromium (Debian's, via Playwright).

A JupyterLab server from the project's environment serves copies of the notebooks on loopback.
The browser opens them, runs every cell, and checks what a researcher would see: widgets render
as live views (not their text fallbacks), moving a control changes the figure, no JavaScript
error is logged, and no request leaves the machine. Screenshots land in ``build/browser/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "build" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
RUN_TIMEOUT_S = 600

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (make setup)"),
]


# -- the server --------------------------------------------------------------------------------
@dataclass
class Lab:
    url: str
    token: str
    root: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_settings(settings: Path) -> None:
    """Every cell in the DOM (no windowing), and no news or update checks (they go online)."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, value in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


BROWSER_PARAMS: dict[str, dict] = {
    # smaller than the quick preset where a probe's science is slow: these runs check what the
    # browser shows and what the controls do, not the science (tests/test_notebooks.py runs the
    # quick presets themselves)
    "binding.ipynb": {"n_images": 30, "max_iter": 10, "bootstrap": 20},
    "curvature.ipynb": {"factor_tokens": 4096, "held_out_tokens": 2560, "audit_samples": 2},
    "reweave.ipynb": {"lengths": [16, 64], "n_prompts": 8, "fit_steps": 5, "copy_prompts": 8},
    "vim.ipynb": {"n_images": 4, "n_maps": 2},
}


def _quick_copy(source: Path, target: Path) -> None:
    """Copy a notebook, with its parameters cell set to the quick preset where it has one (and
    the few smaller settings of ``BROWSER_PARAMS``)."""
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []) and re.search(
            r"^preset\s*=", cell.source, re.M
        ):
            cell.source += '\npreset = "quick"'
            if source.name in BROWSER_PARAMS:
                cell.source += f"\nparams = {{**params, **{BROWSER_PARAMS[source.name]!r}}}"
        if source.name == "trajectory.ipynb" and "parameters" in cell.metadata.get("tags", []):
            cell.source += '\nsaved = "../trajectory"'  # drawn from a saved run, not trained
    nbformat.write(nb, target)


def _sweep_to_compare(folder: Path) -> None:
    """Three saved binding runs in a sweep folder: what compare.ipynb shows in the browser."""
    from test_compare import binding_run, saved_sweep

    folder.mkdir()
    saved_sweep(folder, [binding_run(f"zoo:vit-{k}", 0.05 * k) for k in range(3)])


def _saved_trajectory(folder: Path) -> None:
    """Three checkpoints' measurements, saved as a trajectory run saves them."""
    from workbench.trajectory import Trajectory

    Trajectory(
        "zoo:gpt2-canaries",
        [0, 10, 100],
        ["a", "b", "c"],
        layer_names=["embed", "block 0", "block 1"],
        atlas=[[0.2, 0.2, 0.2], [0.2, 0.4, 0.5], [0.2, 0.7, 0.9]],
        atlas_chance=[0.2, 0.2, 0.2],
        recitation={
            "strict:0": [0, 0, 0],
            "loose:0": [0, 0, 0],
            "strict:64": [0, 0.5, 1],
            "loose:64": [0, 0.75, 1],
            "perplexity": [300.0, 40.0, 20.0],
        },
    ).save(folder)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    for path in NOTEBOOKS.glob("*.ipynb"):
        _quick_copy(path, root / path.name)
    _sweep_to_compare(home / "results")  # compare.ipynb reads ../results
    _saved_trajectory(home / "trajectory")  # trajectory.ipynb reads ../trajectory
    _lab_settings(home / "settings")
    port, token = _free_port(), "workbench-browser-test"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # containers and CI run as root
        cmd.append("--allow-root")
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed in teardown
    server = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start:\n{(home / 'server.log').read_text()}"
                    ) from None
                time.sleep(0.5)
        yield Lab(url, token, root)
    finally:  # the server and every kernel it started share one process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


# -- the browser -------------------------------------------------------------------------------
@dataclass
class Watch:
    """What the page did that a test must see: console errors and requests to other hosts."""

    errors: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    """A fresh page whose every request to a non-loopback host is refused and recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    watch = Watch()

    def route(r) -> None:
        host = urlparse(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            r.continue_()
        else:
            watch.remote.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
    pg.on(
        "websocket",
        lambda ws: (
            None if urlparse(ws.url).hostname in LOCAL_HOSTS else watch.remote.append(ws.url)
        ),
    )
    pg.watch = watch
    yield pg
    context.close()


NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) return null;
  const cells = Array.from(panel.content.model.cells).filter(c => c.type === 'code');
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const failed = cells.filter(c => c.outputs.toJSON().some(o => o.output_type === 'error'));
  return {
    status: kernel ? kernel.status : 'none',
    total: cells.length,
    done: cells.filter(c => c.executionCount !== null).length,
    errors: failed.map(c => c.outputs.toJSON().filter(o => o.output_type === 'error')
                              .map(o => o.ename + ': ' + o.evalue).join('; ')),
  };
}"""


def run_notebook(page, lab: Lab, name: str) -> None:
    """Open ``name``, wait for its kernel, run all cells, and wait for the last one."""
    # A workspace of its own (reset), so no tab from an earlier test is restored beside it.
    workspace = re.sub(r"\W", "-", name)
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.wait_for_function(
        f"() => {{ const s = ({NOTEBOOK_STATE})(); return s && s.status === 'idle'; }}",
        timeout=120_000,
    )
    page.evaluate("window.jupyterapp.commands.execute('filebrowser:activate')")
    page.locator(".jp-FileBrowser").wait_for(state="visible", timeout=30_000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()  # make it the active notebook
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.time() + RUN_TIMEOUT_S
    while True:
        state = page.evaluate(NOTEBOOK_STATE)
        assert not state["errors"], f"{name} raised in the browser: {state['errors']}"
        if state["done"] == state["total"] and state["status"] == "idle":
            break
        assert time.time() < deadline, f"{name} did not finish in {RUN_TIMEOUT_S} s: {state}"
        time.sleep(1)
    page.wait_for_timeout(1500)  # let widget views and plots finish rendering


def assert_live_widgets(page, name: str) -> None:
    """Widget outputs render as widget views, not as their text/plain fallback."""
    views = page.locator(".jp-OutputArea-output .jupyter-widgets")
    assert views.count() > 0, f"{name}: no widget view rendered"
    text = page.locator(".jp-NotebookPanel").inner_text()
    for fallback in ("(children=(", "Error displaying widget", "Loading widget..."):
        assert fallback not in text, f"{name}: a widget shows {fallback!r} instead of a view"


FIGURES_JS = """() => Array.from(document.querySelectorAll('.jp-RenderedPlotly')).map(el =>
  el.querySelector('.plot-container .main-svg') !== null ||
  (el.querySelector('img.plot-img') || {src: ''}).src.startsWith('data:image/png'))"""


def assert_figures_drawn(page, name: str) -> None:
    """Every plotly output is drawn: as a live plot, or as the PNG snapshot JupyterLab's
    plotly renderer swaps in after drawing (it redraws the live plot on mouse-over)."""
    drawn = page.evaluate(FIGURES_JS)
    assert drawn and all(drawn), f"{name}: {drawn.count(False)} of {len(drawn)} figures not drawn"


OVERFLOW_JS = """() => {
  const found = [];
  const outputs = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output'));
  outputs.forEach((out, k) => {
    const box = out.getBoundingClientRect();
    if (box.width === 0) return;
    const cell = out.closest('.jp-Cell');
    const prompt = cell && cell.querySelector('.jp-InputPrompt');
    const where = `output ${k} of cell ${prompt ? prompt.textContent.trim() : '?'}`;
    if (out.scrollWidth > out.clientWidth + 1)
      found.push(`${where} scrolls: ${out.scrollWidth} px in ${out.clientWidth} px`);
    const parts = out.querySelectorAll(
      '.js-plotly-plot, .main-svg, img, canvas, table, .jupyter-widgets, .widget-box');
    for (const el of parts) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > box.right + 1) {
        const kind = String(el.className.baseVal ?? el.className).split(' ')[0];
        const past = Math.round(r.right - box.right);
        found.push(`${where}: ${el.tagName.toLowerCase()}.${kind} ends ${past} px past the cell`);
        break;
      }
    }
  });
  return {found, widths: outputs.map(o => o.clientWidth)};
}"""


def assert_fits_the_cells(page, name: str) -> None:
    """No output of the notebook runs past its cell: every figure, table, widget and image
    fits (responsive widths, wrapping tables, legends inside or below)."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.wait_for_timeout(500)  # let responsive figures follow the window
    report = page.evaluate(OVERFLOW_JS)
    widths = [w for w in report["widths"] if w]
    assert widths and max(widths) <= 1000, f"{name}: cells are {max(widths)} px wide"
    assert not report["found"], f"{name}: outputs wider than their cell: {report['found'][:5]}"


def screenshot_main_figure(page, name: str, index: int = 0) -> None:
    """The notebook's main figure, for the record: ``build/browser/NAME-figure.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figure = page.locator(".jp-NotebookPanel .jp-RenderedPlotly").nth(index)
    figure.scroll_into_view_if_needed()
    figure.screenshot(path=ARTIFACTS / f"{name}-figure.png")


def assert_clean(page, name: str) -> None:
    watch = page.watch
    assert not watch.remote, f"{name}: requests left the machine: {watch.remote[:5]}"
    assert not watch.errors, f"{name}: JavaScript errors: {watch.errors[:5]}"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


# -- controls: move one, see the figure change -------------------------------------------------
LEGEND_JS = "el => Array.from(el.querySelectorAll('.legendtext')).map(e => e.textContent)"
DRAWING_JS = """el => Array.from(el.querySelectorAll('.jp-RenderedPlotly')).map(p => {
  // a fingerprint of each figure: its PNG snapshot, or its live SVG
  const img = p.querySelector('img.plot-img');
  const plot = p.querySelector('.plot-container');
  const text = img && img.src.startsWith('data:') ? img.src : (plot ? plot.innerHTML : '');
  let hash = 0;
  for (let i = 0; i < text.length; i += 3) hash = (hash * 31 + text.charCodeAt(i)) | 0;
  return text.length ? text.length + ':' + hash : '';
}).join('|')"""


def _explorer(page, marker: str):
    """The last widget box holding ``marker`` (the explorer), scrolled into view."""
    explorer = page.locator(".widget-vbox").filter(has=page.locator(marker)).last
    explorer.scroll_into_view_if_needed()
    handle = explorer.element_handle()
    page.wait_for_function(f"el => ({DRAWING_JS})(el).length > 0", arg=handle, timeout=30_000)
    return explorer, handle


def _wait_redrawn(page, handle, before: str) -> str:
    page.wait_for_function(
        f"([el, old]) => {{ const now = ({DRAWING_JS})(el); return now && now !== old; }}",
        arg=[handle, before],
        timeout=60_000,
    )
    return handle.evaluate(DRAWING_JS)


def change_atlas_explorer(page) -> tuple[list[str], list[str]]:
    """Colour the atlas map by another annotation: the legend entries change."""
    explorer = page.locator(".widget-vbox").filter(has=page.locator(".widget-dropdown")).last
    explorer.scroll_into_view_if_needed()
    handle = explorer.element_handle()
    page.wait_for_function(f"el => ({LEGEND_JS})(el).length > 0", arg=handle, timeout=30_000)
    before = handle.evaluate(LEGEND_JS)
    explorer.locator(".widget-dropdown select").select_option(label="patch_row")
    page.wait_for_function(
        f"([el, old]) => {{ const now = ({LEGEND_JS})(el); "
        "return now.length > 0 && now.join('|') !== old; }",
        arg=[handle, "|".join(before)],
        timeout=30_000,
    )
    return before, handle.evaluate(LEGEND_JS)


def change_pmi_explorer(page) -> tuple[list[str], list[str]]:
    """Pick one slot: the strip's legend names it; hover a token: the panel explains it."""
    explorer = page.locator(".widget-vbox").filter(has=page.locator(".wb-token-picker")).last
    explorer.scroll_into_view_if_needed()
    handle = explorer.element_handle()
    page.wait_for_function(f"el => ({LEGEND_JS})(el).length > 0", arg=handle, timeout=30_000)
    before = handle.evaluate(LEGEND_JS)
    explorer.locator(".widget-dropdown select").nth(1).select_option(label="slot 3")
    page.wait_for_function(
        f"el => ({LEGEND_JS})(el).some(t => t.includes('slot 3'))", arg=handle, timeout=30_000
    )
    explorer.locator(".wb-token-picker span").last.hover()
    explorer.get_by_text("written by", exact=True).wait_for(timeout=30_000)
    return before, handle.evaluate(LEGEND_JS)


def change_binding_explorer(page) -> tuple[str, str]:
    """Click a patch on the image: the overlay is recomputed for that patch as the query."""
    picker = page.locator(".wb-patch-picker").last
    picker.scroll_into_view_if_needed()
    title = picker.locator("div").first
    before = title.inner_text()
    canvas = picker.locator("canvas")
    box = canvas.bounding_box()
    assert box and box["width"] > 50, "the patch picker drew no image"
    canvas.click(position={"x": 0.1 * box["width"], "y": 0.1 * box["height"]})
    page.wait_for_function(
        "([el, old]) => el.textContent !== old", arg=[title.element_handle(), before]
    )
    return before, title.inner_text()


def change_curvature_explorer(page) -> tuple[str, str]:
    """Switch from the K-FAC edit to the SVD baseline: the table shows the SVD column."""
    explorer, handle = _explorer(page, ".widget-toggle-buttons")
    before = handle.evaluate(DRAWING_JS)
    explorer.get_by_role("button", name="SVD (energy)").click()
    after = _wait_redrawn(page, handle, before)
    explorer.get_by_text("SVD energy=", exact=False).first.wait_for(timeout=30_000)
    return before, after


def change_vim_explorer(page) -> tuple[str, str]:
    """Rollout greys out the layer slider and the scan buttons, each with a tooltip; on the raw
    map the scan buttons act; a click on a patch shows what that patch reads."""
    explorer = page.locator(".widget-vbox").filter(has=page.locator(".wb-patch-picker")).last
    explorer.scroll_into_view_if_needed()
    title = explorer.locator(".wb-patch-picker div").first
    explorer.get_by_role("button", name="rollout").click()
    page.wait_for_function("el => el.textContent.includes('rollout')", arg=title.element_handle())
    slider = explorer.locator(".widget-slider").first
    disabled = "el => el.querySelector('[disabled]') !== null || el.className.includes('disabled')"
    assert slider.evaluate(disabled), "the layer slider stays live on rollout"
    tooltip = "el => [el, ...el.querySelectorAll('[title]')].map(e => e.title || '').join(' ')"
    assert "combines every layer" in slider.evaluate(tooltip), "no tooltip says why"
    explorer.get_by_role("button", name="raw").click()
    page.wait_for_function(
        "el => el.textContent.includes('both scans')", arg=title.element_handle()
    )
    before = title.inner_text()
    explorer.get_by_role("button", name="backward").click()
    page.wait_for_function(
        "el => el.textContent.includes('backward scan')", arg=title.element_handle()
    )
    canvas = explorer.locator(".wb-patch-picker canvas")
    box = canvas.bounding_box()
    assert box and box["width"] > 50, "the patch picker drew no image"
    canvas.click(position={"x": 0.2 * box["width"], "y": 0.2 * box["height"]})
    page.wait_for_function(
        "el => el.textContent.includes('reads in layer')", arg=title.element_handle()
    )
    return before, title.inner_text()


def change_reweave_explorer(page) -> tuple[str, str]:
    """Show the mean of the heads: every map is redrawn."""
    explorer, handle = _explorer(page, ".wb-token-picker")
    before = handle.evaluate(DRAWING_JS)
    explorer.locator(".widget-dropdown select").nth(1).select_option(label="mean of heads")
    return before, _wait_redrawn(page, handle, before)


def change_compare_explorer(page) -> tuple[str, str]:
    """Show another metric: the explorer's figure is redrawn."""
    explorer, handle = _explorer(page, ".widget-select-multiple")
    before = handle.evaluate(DRAWING_JS)
    explorer.locator(".widget-dropdown select").select_option(index=1)
    return before, _wait_redrawn(page, handle, before)


CONTROLS: dict[str, Callable | None] = {
    "00_tour.ipynb": change_atlas_explorer,
    "atlas.ipynb": change_atlas_explorer,
    "binding.ipynb": change_binding_explorer,
    "compare.ipynb": change_compare_explorer,
    "trajectory.ipynb": None,  # figures only: no explorer to move
    "curvature.ipynb": change_curvature_explorer,
    "pmi.ipynb": change_pmi_explorer,
    "reweave.ipynb": change_reweave_explorer,
    "vim.ipynb": change_vim_explorer,
}
MAIN_FIGURES = {"00_tour.ipynb": (0, 1)}
"""Which plotly outputs to keep as screenshots (default: the first, the notebook's main one)."""


def test_every_notebook_is_in_the_browser_test():
    assert set(CONTROLS) == {p.name for p in NOTEBOOKS.glob("*.ipynb")} - {"probe.ipynb"}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_notebook_runs_in_jupyterlab_with_live_widgets(lab, page, name):
    started = time.time()
    run_notebook(page, lab, name)
    print(f"{name} ran in the browser in {time.time() - started:.0f} s")
    stem = name.removesuffix(".ipynb")
    screenshot(page, f"{stem}-run")
    change = CONTROLS[name]
    if change is not None:
        assert_live_widgets(page, name)
    assert_figures_drawn(page, name)
    assert_fits_the_cells(page, name)
    for number, index in enumerate(MAIN_FIGURES.get(name, (0,))):
        screenshot_main_figure(page, stem if number == 0 else f"{stem}-{number}", index)
    if change is None:
        assert_clean(page, name)
        return
    before, after = change(page)
    screenshot(page, stem)
    assert before and after and before != after, f"{name}: the figure did not change"
    assert_fits_the_cells(page, name)  # also after the controls redrew their figures
    assert_clean(page, name)


# -- the report --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_site(tmp_path_factory: pytest.TempPathFactory, scratch_models) -> Iterator[str]:
    """Two atlas results and their report, served over loopback like any static site."""
    import functools
    import http.server
    import threading

    from workbench.report import build_report
    from workbench.runner import execute, plan_run

    root = tmp_path_factory.mktemp("report")
    quick = {"n_inputs": "24", "max_points": "200"}
    for kind in ("bert", "vit"):
        plan = plan_run(
            "atlas", str(scratch_models[kind]), out=root / kind, preset="quick", params=quick
        )
        execute(plan, notebook=False)
    build_report(root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_report_opens_offline_with_every_figure_drawn(report_site, page):
    page.goto(f"{report_site}/index.html")
    summary = page.locator("section.probe-card")
    assert summary.count() == 1  # one probe (atlas), two results
    assert page.locator("table.overview tr").count() == 2
    assert page.locator(".tile").count() >= 4  # headline tiles with readable names
    assert "peak held-out accuracy" in page.locator(".tkey").first.inner_text()
    screenshot(page, "report")
    page.locator("nav.pages a", has_text="atlas").click()
    page.wait_for_url("**/probe-atlas.html")
    cards = page.locator("figure.card")
    n = cards.count()
    assert n == 4  # decodability + PCA maps, for each of the two results
    for i in range(n):  # figures are drawn as they scroll into view
        cards.nth(i).scroll_into_view_if_needed()
        cards.nth(i).locator(".js-plotly-plot").wait_for(timeout=30_000)
    assert page.locator("figure.card .js-plotly-plot").count() == n
    wide = page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 1400, f"the probe page is {wide} px wide in a 1400-px window"
    links = page.locator("nav.toc a")
    assert links.count() == 2
    target = links.last.get_attribute("href")
    links.last.click()
    assert page.evaluate("() => window.location.hash") == target
    screenshot(page, "report-atlas")
    assert_clean(page, "report")

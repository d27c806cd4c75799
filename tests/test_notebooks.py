"""Every notebook runs top to bottom under papermill, headlessly, with its quick preset.

Probe notebooks run through ``workbench run`` (the runner) on their first default model and
must save a result; the tour runs as it is. A notebook with an error output fails the test
with the cell's error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest

from workbench.probe import get_probe, probe_names
from workbench.runner import NOTEBOOKS, execute, plan_run

pytestmark = pytest.mark.slow


def _errors(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def test_every_probe_has_a_notebook_and_every_notebook_is_tested():
    notebooks = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    # probe.ipynb serves probes without a notebook of their own (test_probe_contract runs it);
    # compare.ipynb compares saved runs (test_compare runs it)
    assert notebooks == {"00_tour", "probe", "compare", *probe_names()}


@pytest.mark.parametrize("probe", probe_names())
def test_probe_notebook_runs_with_the_quick_preset(probe, tmp_path):
    module = get_probe(probe)
    plan = plan_run(probe, module.DEFAULT_MODELS[0], out=tmp_path / probe, preset="quick")
    started = time.time()
    folder = execute(plan, notebook=True, progress=False)
    print(f"{probe} notebook (quick): {time.time() - started:.0f} s")
    record = json.loads((folder / "result.json").read_text())
    assert record["probe"] == probe and record["figures"]
    assert not _errors(folder / f"{probe}.ipynb")


def test_tour_runs(tmp_path):
    import papermill as pm

    executed = tmp_path / "00_tour.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "00_tour.ipynb"),
        str(executed),
        parameters={"preset": "quick", "out": str(tmp_path / "atlas-tour")},
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        kernel_name="python3",
    )
    assert not _errors(executed)
    assert (tmp_path / "atlas-tour" / "result.json").is_file()
    assert (tmp_path / "exports" / "atlas-decodability.svg").is_file()

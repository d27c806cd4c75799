"""Headless probe runs: ``notebooks/<probe>.ipynb`` under papermill, or the probe function directly.

Every check that can fail cheaply (probe name, parameters, model spec and family, output
folder) runs before the kernel starts. The run writes into a hidden staging folder beside the
output and moves it into place only when complete, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import OutputExistsError, WorkbenchError
from workbench.probe import check_family, get_probe, make_config, probe_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"
GENERIC_NOTEBOOK = "probe.ipynb"


@dataclass(frozen=True)
class RunPlan:
    """A validated run: everything needed, nothing executed yet."""

    probe: str
    model: str
    preset: str | None
    params: dict[str, Any]
    out: Path
    overwrite: bool


def plan_run(
    probe: str,
    model: str | None = None,
    *,
    out: str | Path,
    params: dict[str, Any] | None = None,
    preset: str | None = None,
    overwrite: bool = False,
) -> RunPlan:
    """Validate a run before any heavy work; raise a WorkbenchError naming the fix."""
    from workbench.models import peek_family

    module = get_probe(probe)
    make_config(probe, preset=preset, params=params)
    model = model or module.DEFAULT_MODELS[0]
    check_family(probe, module.FAMILIES, model, peek_family(model))
    out = Path(out).absolute()  # the notebook runs in notebooks/, so relative paths would move
    check_output(out, overwrite)
    return RunPlan(probe, model, preset, dict(params or {}), out, overwrite)


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; choose a folder for the results")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "another run" if (out / "result.json").exists() else "other files"
        raise OutputExistsError(
            f"{out} already holds {what}; choose another --out or pass --overwrite to replace it"
        )


def execute(plan: RunPlan, *, notebook: bool = True, progress: bool = True) -> Path:
    """Run the plan; returns the output folder holding result.json, figures and notebook."""
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    if not notebook:
        from workbench.models import load_model

        config = make_config(plan.probe, preset=plan.preset, params=plan.params)
        result = get_probe(plan.probe).run(load_model(plan.model), config)
        return result.save(plan.out, overwrite=plan.overwrite)
    return _execute_notebook(plan, progress=progress)


def _execute_notebook(plan: RunPlan, *, progress: bool) -> Path:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source = notebook_for(plan.probe)
    stage = Path(tempfile.mkdtemp(prefix=f".{plan.out.name}.run-", dir=plan.out.parent))
    staged_result = stage / "result"
    parameters: dict[str, Any] = {
        "model": plan.model,
        "preset": plan.preset,
        "params": plan.params,
        "out": str(staged_result),
    }
    if source == NOTEBOOKS / GENERIC_NOTEBOOK:
        parameters["probe"] = plan.probe
    executed = stage / source.name
    try:
        try:
            pm.execute_notebook(
                str(source),
                str(executed),
                parameters=parameters,
                cwd=str(NOTEBOOKS),
                progress_bar=progress,
                kernel_name="python3",
            )
        except PapermillExecutionError as err:
            kept = _keep_failed_notebook(executed)
            raise WorkbenchError(
                f"notebook {source.name} failed in cell {err.exec_count}: "
                f"{err.ename}: {_strip_ansi(err.evalue)}\nexecuted notebook kept at {kept}"
            ) from None
        if not (staged_result / "result.json").is_file():
            raise WorkbenchError(f"notebook {source.name} ran but saved no result to `out`")
        shutil.move(str(executed), staged_result / source.name)
        _swap_into_place(staged_result, plan.out, plan.overwrite)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return plan.out


def notebook_for(probe: str) -> Path:
    """The notebook a headless run executes: ``notebooks/PROBE.ipynb``, else the probe package's
    own ``notebook.ipynb``, else the generic ``notebooks/probe.ipynb`` (run, figures, save)."""
    for path in (NOTEBOOKS / f"{probe}.ipynb", probe_folder(probe) / "notebook.ipynb"):
        if path.is_file():
            return path
    generic = NOTEBOOKS / GENERIC_NOTEBOOK
    if not generic.is_file():
        raise WorkbenchError(f"{generic} is missing; run with --no-notebook or restore it")
    return generic


def _swap_into_place(staged: Path, out: Path, overwrite: bool) -> None:
    check_output(out, overwrite)
    if out.exists():
        old = staged.parent / "previous"
        os.replace(out, old)
    os.replace(staged, out)


def _keep_failed_notebook(executed: Path) -> Path | None:
    if not executed.is_file():
        return None
    fd, path = tempfile.mkstemp(prefix="failed-", suffix=f"-{executed.name}")
    os.close(fd)
    shutil.copyfile(executed, path)
    return Path(path)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def result_folder_name(probe: str, model: str) -> str:
    """``atlas-vit-scenes`` for (atlas, zoo:vit-scenes): readable and filesystem-safe."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model.removeprefix("zoo:")).strip("-.")
    return f"{probe}-{slug}"

"""Headless probe runs: ``notebooks/<probe>.ipynb`` under papermill, or the probe function directly.

Every check that can fail cheaply (probe name, parameters, model spec and family, output
folder) runs before the kernel starts. The run holds the output folder's lock from before the
model loads until its result is in place, so a second run to the same folder is refused at
once. It writes into a hidden staging folder beside the output and moves it into place only
when complete, so a failed run leaves nothing behind, and it first removes what killed runs
left there and in the temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from workbench.errors import WorkbenchError
from workbench.probe import check_family, get_probe, make_config, probe_folder
from workbench.results import check_output
from workbench.staging import (
    check_writable,
    output_lock,
    sibling_name,
    swap_into_place,
    sweep_stale,
    temp_dir,
    temp_prefix,
)

LOAD_OPTIONS = ("device", "dtype", "device_map", "max_memory", "backend")
"""The ``load_model`` choices a headless run passes on (``workbench run --device ...``)."""
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
    load: dict[str, Any] = field(default_factory=dict)
    """``load_model`` choices (device, dtype, device_map, max_memory, backend); the notebook
    gets them as its ``load`` parameter."""


def plan_run(
    probe: str,
    model: str | None = None,
    *,
    out: str | Path,
    params: dict[str, Any] | None = None,
    preset: str | None = None,
    overwrite: bool = False,
    load: dict[str, Any] | None = None,
) -> RunPlan:
    """Validate a run before any heavy work; raise a WorkbenchError naming the fix.

    ``load`` holds ``load_model``'s choices (``device``, ``dtype``, ``device_map``,
    ``max_memory``, ``backend``), checked against this machine and the model's family here.
    """
    from workbench.devices import check_load_options
    from workbench.models import peek_family

    module = get_probe(probe)
    # a notebook runs in notebooks/, so a relative file setting (data_path=...) would move
    params = {
        k: str(Path(v).absolute()) if k.endswith("_path") and isinstance(v, str) and v else v
        for k, v in (params or {}).items()
    }
    make_config(probe, preset=preset, params=params)
    model = model or module.DEFAULT_MODELS[0]
    family = peek_family(model)
    check_family(probe, module.FAMILIES, model, family)
    load = {k: v for k, v in (load or {}).items() if v is not None}
    unknown = sorted(set(load) - set(LOAD_OPTIONS))
    if unknown:
        raise WorkbenchError(
            f"unknown loading option(s) {', '.join(unknown)}; choose from {', '.join(LOAD_OPTIONS)}"
        )
    check_load_options(family, spec=model, **load)
    out = Path(out).absolute()  # the notebook runs in notebooks/, so relative paths would move
    check_output(out, overwrite)
    check_writable(out)
    return RunPlan(probe, model, preset, dict(params or {}), out, overwrite, load)


def execute(plan: RunPlan, *, notebook: bool = True, progress: bool = True) -> Path:
    """Run the plan; returns the output folder holding result.json, figures and notebook."""
    with output_lock(plan.out):
        check_output(plan.out, plan.overwrite)  # again, now that no other run can write there
        sweep_stale(plan.out.parent)
        sweep_stale(temp_dir())
        if not notebook:
            from workbench.models import load_model

            config = make_config(plan.probe, preset=plan.preset, params=plan.params)
            result = get_probe(plan.probe).run(load_model(plan.model, **plan.load), config)
            return result.save(plan.out, overwrite=plan.overwrite)
        return _execute_notebook(plan, progress=progress)


KERNEL_START_TIMEOUT_S = 300
"""How long a notebook's kernel may take to start: papermill's 60 s default is too short when
parallel runs start their kernels at once on a small machine (each imports torch)."""


def _execute_notebook(plan: RunPlan, *, progress: bool) -> Path:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source = notebook_for(plan.probe)
    stage = plan.out.parent / sibling_name(plan.out.name, "run")
    stage.mkdir()
    staged_result = stage / "result"
    parameters: dict[str, Any] = {
        "model": plan.model,
        "preset": plan.preset,
        "params": plan.params,
        "load": plan.load,
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
                kernel_manager_class=LocalKernelManager,
                start_timeout=KERNEL_START_TIMEOUT_S,
            )
        except PapermillExecutionError as err:
            kept = _keep_failed_notebook(executed)
            message = " ".join(_strip_ansi(err.evalue).split())
            raise WorkbenchError(
                f"notebook {source.name} failed in cell {err.exec_count}: {err.ename}: "
                f"{message} (executed notebook kept until the next run at {kept})"
            ) from None
        if not (staged_result / "result.json").is_file():
            raise WorkbenchError(f"notebook {source.name} ran but saved no result to `out`")
        shutil.move(str(executed), staged_result / source.name)
        check_output(plan.out, plan.overwrite)
        swap_into_place(staged_result, plan.out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return plan.out


class LocalKernelManager(AsyncKernelManager):
    """A kernel reached over local sockets (IPC), not TCP: the kernel runs on this machine, so
    nothing needs a network port, and it has no plain-text TCP traffic to warn about."""

    @default("transport")
    def _local_sockets(self) -> str:
        return "ipc"


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


def _keep_failed_notebook(executed: Path) -> Path | None:
    if not executed.is_file():
        return None
    fd, path = tempfile.mkstemp(prefix=temp_prefix("failed"), suffix=f"-{executed.name}")
    os.close(fd)
    shutil.copyfile(executed, path)
    return Path(path)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def result_folder_name(probe: str, model: str) -> str:
    """``atlas-vit-scenes`` for (atlas, zoo:vit-scenes): readable and filesystem-safe."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model.removeprefix("zoo:")).strip("-.")
    return f"{probe}-{slug}"

"""``ProbeResult``: the one result type every probe returns, and its folder on disk.

A result folder is what a reader, the report and a later notebook all share::

    result.json      probe, summary, metrics, provenance, the list of arrays and figures
    arrays.npz       every array, exactly (numpy format, no pickle)
    figures/         NAME.json (plotly, for a round trip), NAME.html/.png/.svg, plotly.min.js

``save`` owns the whole folder: it builds the new folder next to the target and swaps it in
only when complete, so a crash never leaves a half-written run, and an old run is never mixed
with a new one. It only ever replaces a folder that is itself one run. Files a runner wants in
the same folder (an executed notebook) are passed as ``extra_files`` and copied inside that
same atomic step.

``load`` and every other reader treat a result folder as untrusted input: the record is checked
field by field, and every path it names must resolve inside the folder.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import textwrap
import time
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from workbench.errors import DataError, OutputExistsError, WorkbenchError, one_line
from workbench.figures import DEFAULT_FORMATS, FIGURE_NAME_RE, check_figure_name, export_figures
from workbench.staging import sibling_name, swap_into_place, sweep_stale

if TYPE_CHECKING:
    from workbench.models import LoadedModel

FORMAT_VERSION = 1
RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"
FIGURES_DIR = "figures"
HEADLINE_KEY = "headline"
HEADLINE_COUNT = 4

_RESERVED = (RESULT_FILE, ARRAYS_FILE, FIGURES_DIR)
_ARRAY_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# A path inside a result folder as result.json may name it: no "..", no absolute or empty parts.
_RELATIVE_PATH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
MAX_NESTING = 64
"""Deepest nesting of lists and objects a result.json may have (real ones have under 10)."""
# np.savez takes these as its own keyword arguments, so arrays cannot use them as names.
_SAVEZ_RESERVED = ("file", "allow_pickle")
_VERSION_PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "numpy": "numpy",
    "sklearn": "scikit-learn",
    "plotly": "plotly",
    "kaleido": "kaleido",
    "workbench": "workbench",
}


# -- JSON --------------------------------------------------------------------------------------
def to_jsonable(value: Any, where: str = "value", *, strict: bool = True) -> Any:
    """Plain-Python copy of ``value`` for strict JSON: numpy → Python, NaN/inf → None.

    Dict keys become strings (JSON has no other kind); tuples become lists. Anything else that
    JSON cannot hold raises DataError naming where it was found, or, with ``strict=False``
    (provenance, where a record beats a crash), is stored as its ``repr``.
    """
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{where}[{k!r}]", strict=strict) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.hasobject and strict:
        raise DataError(f"{where} is an object array; JSON needs numbers or strings.")
    if not isinstance(value, list | tuple) and callable(getattr(value, "tolist", None)):
        value = value.tolist()  # numpy arrays, torch tensors; a 0-d one gives a scalar
        return to_jsonable(value, where, strict=strict)
    if isinstance(value, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]", strict=strict) for i, v in enumerate(value)]
    if not strict:
        return repr(value)
    raise DataError(
        f"{where} is a {type(value).__name__}, which JSON cannot hold. Store numbers, strings, "
        "lists or small dicts in metrics/provenance, and large data in `arrays`."
    )


def _dumps(obj: Any) -> str:
    """Strict JSON (no NaN), so any parser can read result.json."""
    return json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False)


# -- headline ----------------------------------------------------------------------------------
def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str | np.generic)


def headline_metrics(metrics: Mapping[str, Any], count: int = HEADLINE_COUNT) -> dict[str, Any]:
    """The few metrics a reader sees first.

    A probe names them with ``metrics["headline"] = [key, ...]``; otherwise the first ``count``
    scalar metrics are used.
    """
    named = metrics.get(HEADLINE_KEY)
    if named is not None:
        if not isinstance(named, list | tuple) or not all(isinstance(k, str) for k in named):
            raise DataError(
                f"metrics[{HEADLINE_KEY!r}] must be a list of metric keys, got "
                f"{_clip(repr(named), 80)}."
            )
        missing = [k for k in named if k not in metrics]
        if missing:
            raise DataError(
                f"metrics[{HEADLINE_KEY!r}] names {missing}, which are not metrics. "
                f"Known keys: {sorted(k for k in metrics if k != HEADLINE_KEY)}."
            )
        return {k: metrics[k] for k in named}
    scalars = [(k, v) for k, v in metrics.items() if k != HEADLINE_KEY and _is_scalar(v)]
    return dict(scalars[:count])


# -- provenance --------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(args: list[str]) -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """Commit of the workbench checkout and whether tracked files differ from it (or None)."""
    commit = _git(["rev-parse", "HEAD"])
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def make_provenance(
    *,
    probe: str,
    model_spec: str | None,
    model_digest: str | None,
    family: str | None,
    config: dict,
    seed: int | None,
    started: float,
    device: str = "cpu",
    dtype: str | None = None,
    device_map: dict[str, str] | None = None,
    backend: str | None = None,
) -> dict:
    """Everything needed to tell what produced a result and to run it again.

    ``started`` is ``time.time()`` at the start of the run; the wall time is measured from it.
    ``device`` is where the inputs went, ``dtype`` the model's, ``device_map`` accelerate's
    placement of a split or offloaded model (None when it sat whole on ``device``).
    """
    git = git_state()
    return {
        "probe": probe,
        "model_spec": model_spec,
        "model_digest": model_digest,
        "family": family,
        "config": to_jsonable(config, "config", strict=False),
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "device_map": device_map,
        "backend": backend,
        "versions": {
            "python": platform.python_version(),
            **{key: _version(dist) for key, dist in _VERSION_PACKAGES.items()},
        },
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "wall_time_s": round(time.time() - started, 3),
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
    }


def run_provenance(probe: str, model: LoadedModel, config: Any, started: float) -> dict:
    """``make_provenance`` for the usual run: a loaded model (with where and how it was placed)
    and a dataclass config with a seed."""
    return make_provenance(
        probe=probe,
        model_spec=model.spec,
        model_digest=model.digest(),
        family=model.family,
        config=asdict(config),
        seed=config.seed,
        started=started,
        **model.placement(),
    )


# -- the result --------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """What a probe found: metrics, arrays, figures, and how it was made."""

    probe: str
    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray]
    figures: dict[str, go.Figure]
    provenance: dict[str, Any]
    summary: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise DataError for anything that could not be saved, before any work is done."""
        if not isinstance(self.probe, str) or not self.probe:
            raise DataError(f"ProbeResult.probe must be a non-empty string, got {self.probe!r}.")
        for field_name in ("metrics", "arrays", "figures", "provenance"):
            if not isinstance(getattr(self, field_name), dict):
                raise DataError(
                    f"ProbeResult.{field_name} must be a dict, "
                    f"got {type(getattr(self, field_name)).__name__}."
                )
        if not isinstance(self.summary, str):
            raise DataError("ProbeResult.summary must be a string (a few sentences).")
        for name, array in self.arrays.items():
            if (
                not isinstance(name, str)
                or not _ARRAY_NAME_RE.fullmatch(name)
                or name in _SAVEZ_RESERVED
            ):
                raise DataError(
                    f"Array name {name!r} is not allowed. Use letters, digits, '_', '.' or '-' "
                    f"(and not {list(_SAVEZ_RESERVED)})."
                )
            if not isinstance(array, np.ndarray):
                raise DataError(
                    f"arrays[{name!r}] is a {type(array).__name__}, not a numpy array. "
                    "Convert it, e.g. tensor.detach().cpu().numpy()."
                )
            if array.dtype.hasobject:
                raise DataError(
                    f"arrays[{name!r}] has dtype object, which cannot be saved without pickle. "
                    "Use a numeric or fixed-width string dtype (np.array(..., dtype=str))."
                )
        for name, fig in self.figures.items():
            check_figure_name(name)
            if not isinstance(fig, go.Figure):
                raise DataError(f"figures[{name!r}] is a {type(fig).__name__}, not a go.Figure.")
        headline_metrics(self.metrics)
        to_jsonable(self.metrics, "metrics")

    def headline(self) -> dict[str, Any]:
        """The few key metrics (named by ``metrics["headline"]``, else the first scalars)."""
        return headline_metrics(self.metrics)

    # -- saving --------------------------------------------------------------------------------
    def save(
        self,
        folder: str | Path,
        *,
        overwrite: bool = False,
        formats: Iterable[str] = DEFAULT_FORMATS,
        extra_files: Mapping[str, str | Path] | None = None,
    ) -> Path:
        """Write the result folder atomically and return its path.

        The folder is built as a hidden sibling and renamed into place at the end; on any error
        the sibling is removed and the target is left as it was. An existing run is refused
        unless ``overwrite=True``, and is then replaced as a whole (save owns the folder); a
        folder that is not one run is never replaced (see ``check_output``). ``extra_files``
        maps names inside the folder to files to copy in the same step. Leftovers of killed
        saves beside the target are removed first.
        """
        self.validate()
        target = Path(folder).absolute()
        extras = _check_extra_files(extra_files)
        check_output(target, overwrite)
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target.parent)

        tmp = target.parent / sibling_name(target.name, "tmp")
        tmp.mkdir()
        try:
            self._write(tmp, formats)
            for name, source in extras.items():
                destination = tmp / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)
            check_output(target, overwrite)  # again: another process may have written meanwhile
            swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _write(self, folder: Path, formats: Iterable[str]) -> None:
        figure_files = export_figures(self.figures, folder / FIGURES_DIR, formats)
        np.savez(folder / ARRAYS_FILE, allow_pickle=False, **self.arrays)
        record = {
            "format_version": FORMAT_VERSION,
            "probe": self.probe,
            "summary": self.summary,
            "metrics": to_jsonable(self.metrics, "metrics"),
            "provenance": to_jsonable(self.provenance, "provenance", strict=False),
            "arrays_file": ARRAYS_FILE,
            "arrays": {
                name: {"shape": list(a.shape), "dtype": a.dtype.str}
                for name, a in self.arrays.items()
            },
            "figures": {
                name: [p.relative_to(folder).as_posix() for p in paths]
                for name, paths in figure_files.items()
            },
        }
        (folder / RESULT_FILE).write_text(_dumps(record) + "\n", encoding="utf-8")

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> ProbeResult:
        """Read a folder written by ``save``: metrics, exact arrays, figures, provenance.

        Anything missing, corrupt or pointing outside the folder raises one WorkbenchError.
        """
        folder = Path(folder)
        record = read_record(folder)
        arrays = _read_arrays(folder, record) if record["arrays"] else {}
        figures = {name: _read_figure(folder, name) for name in record["figures"]}
        return cls(
            probe=record["probe"],
            metrics=record["metrics"],
            arrays=arrays,
            figures=figures,
            provenance=record["provenance"],
            summary=record.get("summary", ""),
        )

    # -- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        prov = self.provenance
        wall = prov.get("wall_time_s")
        head = f"ProbeResult({self.probe!r}, model={prov.get('model_spec')!r}"
        head += f", wall={wall:.1f}s)" if isinstance(wall, int | float) else ")"
        lines = [head]
        if self.summary:
            lines.append(_wrap("summary", _clip(" ".join(self.summary.split()), 300)))
        metrics = [f"{k}={_short(v)}" for k, v in self.metrics.items() if k != HEADLINE_KEY]
        lines.append(_wrap("metrics", ", ".join(metrics) or "-"))
        arrays = [f"{k} {a.dtype}{list(a.shape)}" for k, a in self.arrays.items()]
        lines.append(_wrap("arrays", ", ".join(arrays) or "-"))
        lines.append(_wrap("figures", ", ".join(self.figures) or "-"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        prov = self.provenance
        esc = html.escape
        rows = "".join(
            f"<tr><th style='text-align:left'>{esc(k)}</th><td>{esc(_short(v))}</td></tr>"
            for k, v in self.headline().items()
        )
        arrays = ", ".join(
            f"{esc(k)} <code>{a.dtype}{list(a.shape)}</code>" for k, a in self.arrays.items()
        )
        wall = prov.get("wall_time_s")
        return (
            f"<div><b>ProbeResult</b> <code>{esc(self.probe)}</code> · model "
            f"<code>{esc(str(prov.get('model_spec')))}</code>"
            + (f" · {wall:.1f} s" if isinstance(wall, int | float) else "")
            + (f"<p>{esc(self.summary)}</p>" if self.summary else "")
            + f"<table>{rows}</table>"
            + f"<div>arrays: {arrays or '-'}</div>"
            + f"<div>figures: {esc(', '.join(self.figures)) or '-'}</div></div>"
        )


# -- helpers -----------------------------------------------------------------------------------
def read_record(folder: str | Path) -> dict[str, Any]:
    """Parsed ``result.json`` of a result folder, checked field by field.

    Anything ``save`` could not have written (wrong types, unsafe names, paths leaving the
    folder, absurd nesting) raises a one-line WorkbenchError naming the file.
    """
    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        raise WorkbenchError(f"{folder} is not a result folder: it has no {RESULT_FILE}.")
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"{path} cannot be read ({one_line(exc)}).") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested too deeply
        raise WorkbenchError(
            f"{path} is not valid JSON ({one_line(exc)}); re-run the probe."
        ) from None
    _check_record(record, path)
    return record


def _check_record(record: Any, path: Path) -> None:
    def malformed(what: str) -> WorkbenchError:
        return WorkbenchError(f"{path} {what}; re-run the probe to rewrite it.")

    if not isinstance(record, dict):
        raise malformed(f"holds a JSON {type(record).__name__}, not an object")
    version = record.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise WorkbenchError(
            f"{path} has format_version {_clip(repr(version), 40)}; this workbench reads up to "
            f"{FORMAT_VERSION}. Update the workbench or re-run the probe."
        )
    missing = [
        k for k in ("probe", "metrics", "provenance", "arrays", "figures") if k not in record
    ]
    if missing:
        raise malformed(f"lacks {missing}")
    if not isinstance(record["probe"], str) or not record["probe"]:
        raise malformed("has no probe name")
    if not isinstance(record.get("summary", ""), str):
        raise malformed("has a summary that is not a string")
    for key in ("metrics", "provenance", "arrays", "figures"):
        if not isinstance(record[key], dict):
            raise malformed(f"has {key} of type {type(record[key]).__name__}, not an object")
    if _nesting_exceeds(record, MAX_NESTING):
        raise malformed(f"nests lists and objects deeper than {MAX_NESTING} levels")
    try:
        headline_metrics(record["metrics"])
    except DataError as exc:
        raise malformed(f"has a bad headline ({exc})") from None
    for name in record["arrays"]:
        if not _ARRAY_NAME_RE.fullmatch(name) or name in _SAVEZ_RESERVED:
            raise malformed(f"names an array {_clip(repr(name), 60)} that is not allowed")
    arrays_file = record.get("arrays_file", ARRAYS_FILE)
    if not _is_relative_path(arrays_file):
        raise malformed(f"has an arrays_file {_clip(repr(arrays_file), 60)} outside its folder")
    for name, files in record["figures"].items():
        if not FIGURE_NAME_RE.fullmatch(name):
            raise malformed(f"names a figure {_clip(repr(name), 60)} that is not a file name")
        if not isinstance(files, list) or not all(_is_relative_path(f) for f in files):
            raise malformed(f"lists files for figure {name!r} that are not paths inside it")


def _nesting_exceeds(value: Any, limit: int) -> bool:
    if limit < 0:
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(_nesting_exceeds(v, limit - 1) for v in value)


def _is_relative_path(value: Any) -> bool:
    return isinstance(value, str) and _RELATIVE_PATH_RE.fullmatch(value) is not None


def path_inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refused unless it resolves inside ``folder`` (symlinks followed)."""
    path = folder / relative
    if not _is_relative_path(relative) or not path.resolve().is_relative_to(folder.resolve()):
        raise WorkbenchError(
            f"{path} points outside its result folder {folder}; refusing to read it."
        )
    return path


def _read_arrays(folder: Path, record: dict[str, Any]) -> dict[str, np.ndarray]:
    path = path_inside(folder, record.get("arrays_file", ARRAYS_FILE))
    if not path.is_file():
        raise WorkbenchError(f"{path} is missing; re-run the probe to rewrite the result.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise WorkbenchError(
                f"{path} is a single array, not an .npz archive; re-run the probe."
            )
        with loaded as archive:
            missing = [name for name in record["arrays"] if name not in archive.files]
            if missing:
                raise WorkbenchError(
                    f"{path} lacks the arrays {_clip(repr(missing), 80)} that result.json lists; "
                    "re-run the probe."
                )
            return {name: archive[name] for name in record["arrays"]}
    except WorkbenchError:
        raise
    except ValueError as exc:
        if "Object arrays cannot be loaded" in str(exc):
            raise WorkbenchError(
                f"{path} holds a pickled object array, which is refused (unpickling can run "
                "code); re-run the probe to rewrite it."
            ) from None
        raise WorkbenchError(f"{path} is not a readable .npz file ({one_line(exc)}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        raise WorkbenchError(f"{path} is not a readable .npz file ({one_line(exc)}).") from None


def _read_figure(folder: Path, name: str) -> go.Figure:
    path = path_inside(folder, f"{FIGURES_DIR}/{name}.json")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkbenchError(
            f"{path} is missing or unreadable ({one_line(exc)}); re-run the probe."
        ) from None
    try:
        return pio.from_json(text)
    except Exception as exc:  # plotly's validators raise many kinds for a foreign structure
        raise WorkbenchError(
            f"{path} is not a plotly figure ({one_line(exc)}); re-run the probe."
        ) from None


def _check_extra_files(extra_files: Mapping[str, str | Path] | None) -> dict[str, Path]:
    extras: dict[str, Path] = {}
    for name, source in (extra_files or {}).items():
        relative = Path(name)
        if (
            not name
            or relative.is_absolute()
            or ".." in relative.parts
            or relative.parts[0] in _RESERVED
        ):
            raise WorkbenchError(
                f"extra_files name {name!r} must be a relative path inside the result folder "
                f"and must not be one of {list(_RESERVED)}."
            )
        source = Path(source)
        if not source.is_file():
            raise WorkbenchError(f"extra_files[{name!r}] = {source} is not a file.")
        extras[relative.as_posix()] = source
    return extras


def check_output(target: Path, overwrite: bool) -> None:
    """Refuse an output folder that would lose data: one that holds a run (unless
    ``overwrite``) or anything that is not exactly one run (always)."""
    if os.path.lexists(target) and not target.is_dir():
        raise OutputExistsError(f"{target} is a file; choose a folder for the results.")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not is_run_folder(target):
        raise OutputExistsError(
            f"{target} holds files that are not one workbench run, so it is never replaced; "
            "choose a new or empty folder."
        )
    if not overwrite:
        raise OutputExistsError(
            f"{target} already holds a run. Pass overwrite=True (CLI: --overwrite) to replace "
            "it, or choose another folder."
        )


def is_run_folder(folder: Path) -> bool:
    """True for a folder written by ``save``: a run's result.json on top, no run nested inside."""
    try:
        record = json.loads((folder / RESULT_FILE).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("probe"), str):
        return False
    if not isinstance(record.get("format_version"), int):
        return False
    return not any(path.parent != folder for path in folder.rglob(RESULT_FILE))


def _short(value: Any) -> str:
    """Compact text for one metric value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    if isinstance(value, list | tuple):
        if len(value) <= 4 and all(_is_scalar(v) for v in value):
            return "[" + ", ".join(_short(v) for v in value) + "]"
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "{" + f"{len(value)} keys" + "}"
    if isinstance(value, str):
        return repr(_clip(value, 40))
    return repr(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(label: str, text: str) -> str:
    return textwrap.fill(
        text,
        width=100,
        initial_indent=f"  {label + ':':<9}",
        subsequent_indent=" " * 11,
        break_long_words=False,
        break_on_hyphens=False,
    )

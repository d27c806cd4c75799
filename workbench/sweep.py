"""Sweeps: many ordinary runs from one file, on a local process pool or a Ray cluster.

A sweep file lists points (probe, model, preset, params), as a grid, an explicit list, or both::

    probe: binding                 # the same for every point unless a point or the grid says
    preset: quick
    params: {n_images: 40}
    grid:                          # every combination of these lists
      model: [zoo:vit-binding-mae, zoo:vit-binding-contrast, zoo:vit-binding-sup]
      params: {seed: [0, 1]}
    points:                        # and these points as they are
      - {probe: atlas, model: zoo:minilm, params: {n_inputs: 40}}
    notebook: false                # true (default): each point runs its notebook via papermill
    resources: {cpus: 1, gpus: 0}  # what one run needs; Ray schedules by it

Each point is an ordinary run folder, ``OUT/NAME``, written by the runner (``plan_run`` and
``execute``) in a process of its own: results are atomic and carry provenance, and a crash or a
``kill -9`` of one run cannot take the sweep down. Every point is checked before any runs. A
point whose result is already there with the same model spec, weights digest and config is
skipped; a failed point is run once more, then recorded as failed with its error while the
sweep goes on. ``OUT/sweep.json`` records every point's state, time and headline metrics; it is
rewritten (atomically) as each point finishes.

Executors: the local pool (default) runs as many points at once as there are cores (or
points), each with ``cores / workers`` threads, passed to the run as ``OMP_NUM_THREADS`` (torch,
numpy's BLAS and scikit-learn honour it, as does ``workbench.threads``). Ray
(``pip install .[ray]``) runs one
task per point with the sweep's ``resources`` on a cluster (``--address``) or a local one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from workbench.errors import WorkbenchError, one_line
from workbench.staging import sibling_name, sweep_stale

SWEEP_FILE = "sweep.json"
FORMAT_VERSION = 1
RETRIES = 1
"""A failed point runs this many more times before it is recorded as failed."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Set to each run's thread budget: torch and the BLAS libraries read them when they start."""
MAX_NAME = 120
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=,-]*")

State = Literal["pending", "done", "failed", "skipped"]


# -- the sweep file ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One run of the sweep; ``name`` is its folder inside the sweep's output folder."""

    probe: str
    model: str
    preset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class Resources:
    """What one run needs: Ray reserves it per task; the local pool sizes its workers by it."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Sweep:
    points: tuple[Point, ...]
    notebook: bool = True
    resources: Resources = Resources()


_TOP_KEYS = ("probe", "model", "preset", "params", "grid", "points", "notebook", "resources")
_POINT_KEYS = ("probe", "model", "preset", "params")


def load_sweep(path: str | Path) -> Sweep:
    """The sweep file at ``path``, expanded into points and checked for shape (not yet run)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise WorkbenchError(f"cannot read the sweep file {path} ({one_line(err)})") from None
    except yaml.YAMLError as err:
        raise WorkbenchError(f"{path} is not valid YAML ({one_line(err)})") from None
    return parse_sweep(raw, where=str(path))


def parse_sweep(raw: Any, where: str = "the sweep") -> Sweep:
    """A sweep from its parsed YAML (a mapping); see the module docstring for the keys."""
    if not isinstance(raw, dict):
        raise WorkbenchError(f"{where} must be a mapping with keys such as probe, model, grid")
    _known(raw, _TOP_KEYS, where)
    base = {k: raw[k] for k in _POINT_KEYS if k in raw}
    points: list[Point] = []
    if "grid" in raw:
        points += _grid(base, raw["grid"], where)
    extra = raw.get("points") or []
    if not isinstance(extra, list):
        raise WorkbenchError(f"{where}: points must be a list of mappings")
    for i, item in enumerate(extra):
        if not isinstance(item, dict):
            raise WorkbenchError(f"{where}: points[{i}] must be a mapping of {_POINT_KEYS}")
        _known(item, _POINT_KEYS, f"{where}: points[{i}]")
        params = {**_params(base.get("params"), where), **_params(item.get("params"), where)}
        points.append(_point({**base, **item, "params": params}, f"{where}: points[{i}]"))
    if "grid" not in raw and "points" not in raw:
        points.append(_point(base, where))
    if not points:
        raise WorkbenchError(f"{where} has no points: give a grid, points, or a probe")
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict):
        raise WorkbenchError(f"{where}: resources must be a mapping such as {{cpus: 1, gpus: 0}}")
    _known(resources, ("cpus", "gpus"), f"{where}: resources")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise WorkbenchError(f"{where}: resources.{key} must be a number >= 0, got {value!r}")
    notebook = raw.get("notebook", True)
    if not isinstance(notebook, bool):
        raise WorkbenchError(f"{where}: notebook must be true or false, got {notebook!r}")
    return Sweep(tuple(_named(points, where)), notebook, Resources(**resources))


def _known(mapping: dict, keys: Sequence[str], where: str) -> None:
    unknown = [str(k) for k in mapping if k not in keys]
    if unknown:
        raise WorkbenchError(f"{where}: unknown key {', '.join(unknown)}; known: {', '.join(keys)}")


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WorkbenchError(f"{where}: params must be a mapping of parameter: value")
    return {str(k): v for k, v in value.items()}


def _axis(value: Any, what: str, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise WorkbenchError(
            f"{where}: grid {what} must be a non-empty list of values (a list of lists for a "
            "list-valued parameter)"
        )
    return value


def _grid(base: dict[str, Any], grid: Any, where: str) -> list[Point]:
    if not isinstance(grid, dict) or not grid:
        raise WorkbenchError(f"{where}: grid must map probe, model, preset or params to lists")
    _known(grid, _POINT_KEYS, f"{where}: grid")
    axes: list[tuple[str, list]] = [
        (key, _axis(grid[key], key, where)) for key in ("probe", "model", "preset") if key in grid
    ]
    axes += [
        (f"params.{name}", _axis(values, f"params.{name}", where))
        for name, values in _params(grid.get("params"), where).items()
    ]
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        values = dict(base, params=_params(base.get("params"), where))
        for (key, _), value in zip(axes, combo, strict=True):
            if key.startswith("params."):
                values["params"][key.removeprefix("params.")] = value
            else:
                values[key] = value
        points.append(_point(values, f"{where}: grid"))
    return points


def _point(values: dict[str, Any], where: str) -> Point:
    from workbench.probe import get_probe

    probe = values.get("probe")
    if not isinstance(probe, str) or not probe:
        raise WorkbenchError(f"{where}: every point needs a probe (a probe name)")
    model = values.get("model") or get_probe(probe).DEFAULT_MODELS[0]
    preset = values.get("preset")
    if not isinstance(model, str) or not (preset is None or isinstance(preset, str)):
        raise WorkbenchError(f"{where}: model and preset must be strings")
    return Point(probe, model, preset, _params(values.get("params"), where))


def point_name(point: Point) -> str:
    """``binding-vit-binding-mae-quick-seed=1``: readable, filesystem-safe, unique per point."""
    from workbench.runner import result_folder_name

    parts = [result_folder_name(point.probe, point.model)]
    if point.preset:
        parts.append(point.preset)
    for key, value in point.params.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        parts.append(f"{key}={text}")
    name = re.sub(r"[^A-Za-z0-9._=,-]+", "-", "-".join(parts)).strip("-.")
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 11]}-{digest}"
    return name


def _named(points: list[Point], where: str) -> list[Point]:
    named = [p if p.name else dataclasses.replace(p, name=point_name(p)) for p in points]
    seen: set[str] = set()
    for point in named:
        if point.name in seen:
            raise WorkbenchError(f"{where} lists the point {point.name} twice; drop the repeat")
        seen.add(point.name)
    return named


# -- one point, in a process of its own ---------------------------------------------------------
@dataclass
class Attempt:
    ok: bool
    seconds: float
    error: str | None = None


def point_task(point: Point, out: Path, notebook: bool) -> dict[str, Any]:
    """What a worker process needs to run ``point`` (plain JSON, so it crosses to Ray nodes)."""
    return {
        "probe": point.probe,
        "model": point.model,
        "preset": point.preset,
        "params": point.params,
        "out": str(out / point.name),
        "notebook": notebook,
    }


def run_in_process(task: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one point as ``python -m workbench.sweep TASK`` with ``threads`` threads.

    A process per run keeps runs apart (memory, threads, a crash) and makes a killed run an
    ordinary failure that the sweep retries.
    """
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(max(1, threads)))}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.sweep", json.dumps(task)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        check=False,
    )
    seconds = round(time.time() - started, 2)
    if proc.returncode == 0:
        return dataclasses.asdict(Attempt(True, seconds))
    return dataclasses.asdict(Attempt(False, seconds, _failure(proc.returncode, proc.stderr)))


def _failure(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            return f"the run's process was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"the run's process was killed by signal {-returncode}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    message = errors[-1].removeprefix("error: ") if errors else (lines[-1] if lines else "")
    message = message or f"the run's process exited with code {returncode}"
    return message if len(message) <= 400 else message[:399] + "…"


def _run_point(argv: list[str]) -> int:
    """The worker side of ``run_in_process``: plan (checks again) and execute one point."""
    from workbench.runner import execute, plan_run

    task = json.loads(argv[0])
    try:
        plan = plan_run(
            task["probe"],
            task["model"],
            out=task["out"],
            params=task["params"],
            preset=task["preset"],
            overwrite=True,
        )
        execute(plan, notebook=task["notebook"], progress=False)
    except (WorkbenchError, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


# -- executors ---------------------------------------------------------------------------------
class Executor(Protocol):
    """Runs point tasks; each ``submit`` returns a future of ``run_in_process``'s outcome."""

    name: str
    workers: int

    def submit(self, task: dict[str, Any]) -> Future[dict[str, Any]]: ...

    def close(self) -> None: ...


def cores() -> int:
    return os.cpu_count() or 1


class LocalPool:
    """Up to ``workers`` runs at once on this machine, each with ``threads`` threads."""

    name = "local"

    def __init__(
        self, workers: int | None = None, resources: Resources = Resources(), points: int = 0
    ) -> None:
        per_run = max(1, int(resources.cpus))
        self.workers = max(1, workers or min(cores() // per_run, points or cores()))
        self.threads = max(1, cores() // self.workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sweep")

    def submit(self, task: dict[str, Any]) -> Future[dict[str, Any]]:
        return self._pool.submit(run_in_process, task, self.threads)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """One Ray task per run, reserving the sweep's resources (``--address`` for a cluster).

    Without an address and without a running Ray, a local Ray is started on this machine's
    cores (dashboard off) and stopped at the end. The workers run the same ``run_in_process``,
    so every node needs the workbench installed and ``--out`` on a filesystem all nodes share.
    """

    name = "ray"

    def __init__(self, address: str | None = None, resources: Resources = Resources()) -> None:
        try:
            import ray
        except ImportError:
            raise WorkbenchError(
                "the ray executor needs Ray: pip install 'workbench[ray]' (or pip install ray)"
            ) from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                else:
                    start_local_ray(cores())
            except Exception as err:  # Ray raises many kinds for an unreachable or failed start
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise WorkbenchError(f"cannot start or reach {where}: {one_line(err)}") from None
        self.threads = max(1, int(resources.cpus))
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(resources.cpus, 1)))
        self._remote = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0)(
            run_in_process
        )

    def submit(self, task: dict[str, Any]) -> Future[dict[str, Any]]:
        return self._remote.remote(task, self.threads).future()

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def start_local_ray(num_cpus: int) -> None:
    """A new Ray on this machine alone (never one that happens to run here), dashboard off.

    On a busy machine Ray's node can give up waiting for its own agents at start; one more
    try then usually succeeds, so a local start is tried twice.
    """
    import ray

    for attempt in range(2):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            return
        except Exception:
            ray.shutdown()
            if attempt:
                raise


def make_executor(
    kind: str,
    resources: Resources,
    *,
    workers: int | None = None,
    address: str | None = None,
    points: int = 0,
) -> Executor:
    """The ``local`` pool (sized for ``points`` runs) or ``ray``."""
    if kind == "local":
        if address:
            raise WorkbenchError("--address names a Ray cluster; add --executor ray")
        return LocalPool(workers, resources, points)
    if kind == "ray":
        if workers:
            raise WorkbenchError("--workers sizes the local pool; Ray schedules by resources")
        return RayPool(address, resources)
    raise WorkbenchError(f"unknown executor {kind!r}; choose local or ray")


# -- the record: sweep.json --------------------------------------------------------------------
@dataclass
class PointRecord:
    """A point's state as ``sweep.json`` keeps it."""

    name: str
    probe: str
    model: str
    preset: str | None
    params: dict[str, Any]
    state: State = "pending"
    attempts: int = 0
    seconds: float | None = None
    error: str | None = None
    headline: dict[str, Any] = field(default_factory=dict)
    model_digest: str | None = None


@dataclass
class SweepRecord:
    points: list[PointRecord]
    executor: str = "local"
    workers: int = 1
    started_utc: str = ""
    wall_time_s: float | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Weights digest per model spec with the files' fingerprint it was computed for."""

    def write(self, out: Path) -> Path:
        from workbench.results import to_jsonable

        record = {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}
        text = json.dumps(to_jsonable(record, strict=False), indent=2, ensure_ascii=False)
        target = out / SWEEP_FILE
        tmp = out / sibling_name(SWEEP_FILE, "tmp")
        try:
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def read_sweep_record(folder: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder, checked enough to be read safely (names stay inside)."""
    path = Path(folder) / SWEEP_FILE
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise WorkbenchError(f"{path} is not a readable sweep record ({one_line(err)})") from None
    points = record.get("points") if isinstance(record, dict) else None
    if not isinstance(points, list) or not all(
        isinstance(p, dict) and _is_plain_name(p.get("name")) for p in points
    ):
        raise WorkbenchError(f"{path} is not a sweep record (points with folder names)")
    return record


def _is_plain_name(name: Any) -> bool:
    return (
        isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._=,-]*", name) is not None
    )


def _old_models(out: Path) -> dict[str, dict[str, Any]]:
    try:
        models = read_sweep_record(out).get("models")
    except WorkbenchError:
        return {}
    return models if isinstance(models, dict) else {}


# -- resuming ----------------------------------------------------------------------------------
def _fingerprint(spec: str) -> list[list[Any]] | None:
    """Names, sizes and modification times of the model's files: a change means a new digest."""
    from workbench.models import resolve_spec

    try:
        path = resolve_spec(spec)
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    except (WorkbenchError, OSError):
        return None


class Digests:
    """Weights digests per model spec; a model is loaded only when its files changed."""

    def __init__(self, known: dict[str, dict[str, Any]]) -> None:
        self.known = known
        self._fingerprints: dict[str, list[list[Any]] | None] = {}

    def fingerprint(self, spec: str) -> list[list[Any]] | None:
        if spec not in self._fingerprints:
            self._fingerprints[spec] = _fingerprint(spec)
        return self._fingerprints[spec]

    def digest(self, spec: str) -> str | None:
        entry = self.known.get(spec)
        current = self.fingerprint(spec)
        if isinstance(entry, dict) and current is not None and entry.get("fingerprint") == current:
            return entry.get("digest")
        from workbench.models import load_model

        try:
            digest = load_model(spec).digest()
        except WorkbenchError:
            return None
        self.learn(spec, digest)
        return digest

    def learn(self, spec: str, digest: str | None) -> None:
        current = self.fingerprint(spec)
        if digest and current is not None and _fingerprint(spec) == current:
            self.known[spec] = {"fingerprint": current, "digest": digest}


def expected_config(point: Point) -> dict[str, Any]:
    """The config a run of ``point`` records in its provenance."""
    from workbench.probe import make_config
    from workbench.results import to_jsonable

    config = make_config(point.probe, preset=point.preset, params=point.params)
    return to_jsonable(dataclasses.asdict(config), "config", strict=False)


def finished_result(point: Point, out: Path, digests: Digests) -> dict[str, Any] | None:
    """The record of ``point``'s result if it is there and was made by this very point: same
    model spec, same weights, same config. Otherwise None (the point runs)."""
    from workbench.results import read_record

    try:
        record = read_record(out / point.name)
    except WorkbenchError:
        return None
    prov = record["provenance"]
    if record["probe"] != point.probe or prov.get("model_spec") != point.model:
        return None
    if prov.get("config") != expected_config(point):
        return None
    if not prov.get("model_digest") or prov.get("model_digest") != digests.digest(point.model):
        return None
    return record


def _headline(record: dict[str, Any]) -> dict[str, Any]:
    from workbench.results import headline_metrics

    try:
        return headline_metrics(record["metrics"])
    except WorkbenchError:
        return {}


# -- running a sweep ---------------------------------------------------------------------------
def plan_points(sweep: Sweep, out: Path) -> None:
    """Check every point (probe, params, model and family, output folder) before any runs."""
    from workbench.runner import plan_run

    for point in sweep.points:
        try:
            plan_run(
                point.probe,
                point.model,
                out=out / point.name,
                params=point.params,
                preset=point.preset,
                overwrite=True,
            )
        except WorkbenchError as err:
            raise WorkbenchError(f"point {point.name}: {one_line(err)}") from None


def _expected_seconds(out: Path, point: Point) -> float:
    """The point's previous wall time, so the longest runs start first (0 when unknown)."""
    try:
        prov = json.loads((out / point.name / "result.json").read_text())["provenance"]
        return float(prov.get("wall_time_s") or 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    rerun: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepRecord:
    """Run every point not already finished (all of them with ``rerun``) and record the sweep.

    Returns the record also written to ``OUT/sweep.json``. Failed points are in it with their
    error; the sweep itself raises only for bad input, before any point runs.
    """
    from tqdm.auto import tqdm

    out = Path(out).absolute()
    plan_points(sweep, out)
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    started = time.time()
    records = {
        p.name: PointRecord(p.name, p.probe, p.model, p.preset, dict(p.params))
        for p in sweep.points
    }
    digests = Digests(_old_models(out))
    record = SweepRecord(
        points=list(records.values()),
        started_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        models=digests.known,
    )
    todo = []
    for point in sweep.points:
        previous = None if rerun else finished_result(point, out, digests)
        if previous is None:
            todo.append(point)
            continue
        entry = records[point.name]
        entry.state, entry.headline = "skipped", _headline(previous)
        entry.seconds = previous["provenance"].get("wall_time_s")
        entry.model_digest = previous["provenance"].get("model_digest")
    todo.sort(key=lambda p: -_expected_seconds(out, p))
    with tqdm(
        total=len(sweep.points),
        initial=len(sweep.points) - len(todo),
        desc="sweep",
        unit="run",
        disable=not progress,
    ) as bar:
        say = log or (lambda text: bar.write(text))
        if len(todo) < len(sweep.points):
            say(f"{len(sweep.points) - len(todo)} of {len(sweep.points)} points already done")
        if not todo:
            record.wall_time_s = round(time.time() - started, 2)
            record.write(out)
            return record
        pool = make_executor(
            executor, sweep.resources, workers=workers, address=address, points=len(todo)
        )
        record.executor, record.workers = pool.name, pool.workers
        record.write(out)
        try:
            _drive(pool, todo, sweep, out, records, record, digests, bar, say)
        finally:
            pool.close()
    record.wall_time_s = round(time.time() - started, 2)
    record.write(out)
    return record


def _drive(
    pool: Executor,
    todo: list[Point],
    sweep: Sweep,
    out: Path,
    records: dict[str, PointRecord],
    record: SweepRecord,
    digests: Digests,
    bar: Any,
    say: Callable[[str], None],
) -> None:
    from workbench.results import read_record

    for point in todo:
        digests.fingerprint(point.model)  # as the files are when the run starts
    started = time.time()
    running = {pool.submit(point_task(p, out, sweep.notebook)): p for p in todo}
    finished = 0
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            point = running.pop(future)
            entry = records[point.name]
            attempt = _outcome(future)
            entry.attempts += 1
            if not attempt.ok and entry.attempts <= RETRIES:
                say(f"retrying {point.name}: {attempt.error}")
                running[pool.submit(point_task(point, out, sweep.notebook))] = point
                continue
            entry.seconds, entry.error = attempt.seconds, attempt.error
            entry.state = "done" if attempt.ok else "failed"
            if attempt.ok:
                try:
                    result = read_record(out / point.name)
                except WorkbenchError as err:
                    entry.state, entry.error = "failed", one_line(err)
                else:
                    entry.headline = _headline(result)
                    entry.model_digest = result["provenance"].get("model_digest")
                    digests.learn(point.model, entry.model_digest)
            finished += 1
            bar.update(1)
            record.write(out)
            eta = (time.time() - started) / finished * (len(todo) - finished)
            say(
                f"run {finished} of {len(todo)} {entry.state}: {point.name} "
                f"({entry.seconds:.0f} s)"
                + (f", ETA {_duration(eta)}" if running else "")
                + (f": {entry.error}" if entry.error else "")
            )


def _outcome(future: Future[dict[str, Any]]) -> Attempt:
    try:
        return Attempt(**future.result())
    except Exception as err:  # the executor lost the task (a Ray worker died, ...)
        return Attempt(False, 0.0, f"the executor lost the run: {one_line(err)}")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# -- the summary -------------------------------------------------------------------------------
def summary_table(record: SweepRecord) -> str:
    """Every point's state, time and headline metrics, one line each."""
    from workbench.probe import get_probe

    rows = [("point", "state", "time", "headline")]
    for p in record.points:
        try:
            metrics = {m.key: m for m in get_probe(p.probe).METRICS if not m.over}
        except WorkbenchError:
            metrics = {}
        headline = ", ".join(
            f"{k} {metrics[k].format(v) if k in metrics else _short(v)}"
            for k, v in p.headline.items()
        )
        seconds = f"{p.seconds:.0f} s" if isinstance(p.seconds, int | float) else "-"
        rows.append((p.name, p.state, seconds, p.error or headline or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def counts(record: SweepRecord) -> dict[str, int]:
    states = [p.state for p in record.points]
    return {
        state: states.count(state) for state in ("done", "skipped", "failed") if state in states
    }


def run_folders(folder: str | Path, states: Iterable[str] = ("done", "skipped")) -> list[Path]:
    """The result folders of a sweep's finished points, in the sweep's order."""
    folder = Path(folder)
    record = read_sweep_record(folder)
    return [
        folder / p["name"]
        for p in record["points"]
        if p.get("state") in states and (folder / p["name"] / "result.json").is_file()
    ]


if __name__ == "__main__":  # the worker process of run_in_process
    sys.exit(_run_point(sys.argv[1:]))

"""The probe contract, as code: what a probe exports, how its settings are checked, and the one
frame every probe's ``run`` goes through.

A probe is a package under ``probes/`` (or in a folder listed in ``$WORKBENCH_PROBE_PATH``)
whose ``__init__`` exports:

``NAME``            its name (the folder's name)
``Config``          a frozen dataclass deriving from ``ProbeConfig``: every setting, with types
                    and ranges checked when it is built, so bad values fail before a model loads
``FAMILIES``        the model families it accepts (``vit``, ``causal-lm``, ``encoder``, ...)
``DEFAULT_MODELS``  the models ``workbench demo`` runs it on
``METRICS``         its comparable metrics (``Metric``): readable names, units, which way is
                    better; the report's tiles and ``workbench compare`` read them
``run``             ``run(model, config=None, data=None) -> ProbeResult``

``run`` is the probe's science wrapped by ``run_frame``: the frame fills in the default config,
checks the config's type and the model's family, runs the probe's own model checks, times the
run, checks that no hook or flag was left on the model, records provenance, builds the figures
and names the fix when memory runs out. The science returns ``Findings`` and nothing else.
``probes/README.md`` walks through adding a probe.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
import pkgutil
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

import numpy as np
import yaml

from workbench.errors import ConfigError, FamilyError, ResourceError, WorkbenchError

if typing.TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.models import LoadedModel
    from workbench.results import ProbeResult

PROBE_PATH_ENV = "WORKBENCH_PROBE_PATH"
"""Extra folders (``os.pathsep``-separated) holding probe packages of your own."""


# -- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeConfig:
    """Base of every probe's settings. Building one checks every value, so the CLI refuses a bad
    ``--param`` before any model loads.

    Field types are enforced (``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` choices,
    ``tuple[T, ...]``, ``T | None``); lists become tuples and ints become floats where a float
    is asked for. A probe's own ranges go in ``check``.
    """

    seed: int = 0
    """Seed of every random choice the probe makes: the same seed gives the same numbers."""

    def __post_init__(self) -> None:
        check_types(self)
        at_least(self, 0, "seed")
        self.check()

    def check(self) -> None:
        """The probe's own value checks (ranges, combinations); raise ``ConfigError``."""


def check_types(config: Any) -> None:
    """Coerce lists to tuples and ints to floats; refuse values of the wrong type or choice."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        conformed = _conform(f.name, value, hints[f.name])
        if conformed is not value:
            object.__setattr__(config, f.name, conformed)


def _conform(name: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _conform(name, value, options[0])
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list of values; got {value!r}")
        item = args[0] if args else Any
        items = tuple(_conform(f"{name}[{i}]", v, item) for i, v in enumerate(value))
        return value if isinstance(value, tuple) and items == value else items
    if hint is bool:
        if not isinstance(value, bool | np.bool_):
            raise ConfigError(f"{name} must be true or false; got {value!r}")
        return bool(value)
    if hint is int:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{name} must be a whole number; got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
            raise ConfigError(f"{name} must be a number; got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{name} must be a finite number; got {value!r}")
        return value if type(value) is float else float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string; got {value!r}")
    return value


def _values(config: Any, names: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    for name in names:
        value = getattr(config, name)
        for i, v in enumerate(value) if isinstance(value, tuple) else [(None, value)]:
            yield (name if i is None else f"{name}[{i}]"), v


def at_least(config: Any, low: float, *names: str) -> None:
    """Each named setting (or each item of a tuple setting) is at least ``low``."""
    for name, value in _values(config, names):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}; got {value!r}")


def between(config: Any, low: float, high: float, *names: str) -> None:
    """Each named setting (or each item of a tuple setting) lies in ``[low, high]``."""
    for name, value in _values(config, names):
        if not low <= value <= high:
            raise ConfigError(f"{name} must lie in [{low}, {high}]; got {value!r}")


def require(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition``: for checks across settings."""
    if not condition:
        raise ConfigError(message)


# -- comparable metrics ------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A metric that means the same across runs, so runs can be drawn on one axis.

    ``key`` names a scalar in ``result.metrics``; with ``over`` set, it names an array in
    ``result.arrays`` instead, whose positions are labelled by the array ``over`` (for example
    accuracy per layer over ``layer_names``).
    """

    key: str
    label: str
    """What a reader sees: a short name with its unit, e.g. "held-out accuracy"."""
    better: Literal["higher", "lower", "neither"] = "higher"
    percent: bool = False
    """The value is a fraction shown as a percentage."""
    unit: str = ""
    over: str | None = None
    baselines: tuple[str, ...] = ()
    """For a curve: its floors, drawn dashed in each run's colour: arrays as long as the curve
    (a control per layer) or scalar metrics (chance), so no number is compared without them."""
    against: str | None = None
    """For a curve: the array whose values are its x axis (a trade-off, e.g. recitation against
    perplexity along a sweep) instead of the labels in ``over``."""

    def format(self, value: Any) -> str:
        """The value as a reader wants it: percentages, sensible digits, the unit."""
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return str(value)
        if self.percent:
            return f"{100 * float(value):.1f}%"
        if isinstance(value, int | np.integer):
            text = f"{int(value):,}"
        else:
            text = f"{float(value):.3g}" if abs(float(value)) < 1e4 else f"{float(value):,.0f}"
        return f"{text} {self.unit}".strip()


# -- the frame ---------------------------------------------------------------------------------
@dataclass
class Findings:
    """What a probe's science returns; the frame turns it into a ``ProbeResult``.

    ``metrics["headline"]`` may list the keys a reader should see first; ``provenance`` adds
    run facts of the probe's own (a control model's spec, a reused store) to the automatic ones.
    """

    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray]
    summary: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)


C = TypeVar("C", bound=ProbeConfig)
D = TypeVar("D")
C_in = TypeVar("C_in", bound=ProbeConfig, contravariant=True)
D_in = TypeVar("D_in", contravariant=True)


class ProbeRun(Protocol[C_in, D_in]):
    """The public ``run`` a probe exports: config and data optional."""

    def __call__(
        self, model: LoadedModel, config: C_in | None = None, data: D_in | None = None
    ) -> ProbeResult: ...


def run_frame(
    *,
    name: str,
    config: type[C],
    families: tuple[str, ...],
    figures: Callable[[ProbeResult], dict[str, go.Figure]],
    check: Callable[[LoadedModel, C], None] | None = None,
) -> Callable[[Callable[[LoadedModel, C, D | None], Findings]], ProbeRun[C, D]]:
    """Wrap a probe's science ``(model, config, data) -> Findings`` into its public ``run``.

    ``check(model, config)`` is the probe's own test of the model (a head it needs, a layer
    that must exist), run before any heavy work.
    """
    config_type = config

    def wrap(science: Callable[[LoadedModel, C, D | None], Findings]) -> ProbeRun[C, D]:
        @functools.wraps(science)
        def run(model: LoadedModel, config: C | None = None, data: D | None = None) -> ProbeResult:
            from workbench.results import ProbeResult, run_provenance

            started = time.time()
            if config is None:
                config = config_type()
            elif not isinstance(config, config_type):
                raise ConfigError(
                    f"the {name} probe takes a probes.{name}.Config (or "
                    f"make_config({name!r}, ...)); got a {type(config).__name__}"
                )
            check_family(name, families, model.spec, model.family)
            if check is not None:
                check(model, config)
            with _leaves_no_trace(model, name), _names_resources(model, name):
                findings = science(model, config, data)
            if not isinstance(findings, Findings):
                raise TypeError(f"the {name} probe's science must return Findings")
            provenance = {**run_provenance(name, model, config, started), **findings.provenance}
            result = ProbeResult(
                probe=name,
                metrics=findings.metrics,
                arrays=findings.arrays,
                figures={},
                provenance=provenance,
                summary=findings.summary,
            )
            from workbench.figures import fit_cell  # plotting stays out of a bare import

            # every figure fits a notebook cell, whichever probe drew it
            result.figures = {name: fit_cell(fig) for name, fig in figures(result).items()}
            result.provenance["wall_time_s"] = round(time.time() - started, 3)
            return result

        run.science = science  # type: ignore[attr-defined]
        return cast(ProbeRun[C, D], run)

    return wrap


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hook_state(module: Any) -> dict[tuple[str, str], frozenset]:
    state = {}
    for path, sub in module.named_modules():
        for kind in _HOOK_DICTS:
            hooks = getattr(sub, kind, None)
            if hooks:
                state[(path, kind)] = frozenset(hooks)
    return state


@contextmanager
def _leaves_no_trace(model: LoadedModel, probe: str) -> Iterator[None]:
    """Hooks, ``requires_grad`` and train/eval flags as they were, also when the science fails.

    A probe that returns normally with something left behind is a bug: the leftovers are
    removed and the run fails loudly, so the test suite catches it.
    """
    module = model.model
    hooks_before = _hook_state(module)
    grads_before = {n: p.requires_grad for n, p in module.named_parameters()}
    training_before = {n: m.training for n, m in module.named_modules()}
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        left = []
        for (path, kind), keys in _hook_state(module).items():
            extra = keys - hooks_before.get((path, kind), frozenset())
            hooks = getattr(module.get_submodule(path), kind)
            for key in extra:
                del hooks[key]
                left.append(f"{path or 'model'}.{kind}")
        for n, p in module.named_parameters():
            if p.requires_grad != grads_before.get(n, p.requires_grad):
                p.requires_grad_(grads_before[n])
                left.append(f"{n}.requires_grad")
        for n, m in module.named_modules():
            if m.training != training_before.get(n, m.training):
                m.train(training_before[n])
                left.append(f"{n or 'model'}.training")
        if left and not failed:
            raise RuntimeError(f"the {probe} probe left {left[:5]} on {model.spec} (undone)")


@contextmanager
def _names_resources(model: LoadedModel, probe: str) -> Iterator[None]:
    import torch

    try:
        yield
    except (MemoryError, torch.OutOfMemoryError) as err:
        raise ResourceError(
            f"the {probe} probe ran out of memory on {model.spec} ({type(err).__name__}); lower "
            "batch_size or the number of inputs, or load the model in a smaller dtype"
        ) from err


def check_family(probe: str, families: tuple[str, ...], spec: str, family: str) -> None:
    """Refuse a model of the wrong family before any heavy work."""
    if family not in families:
        raise FamilyError(
            f"the {probe} probe accepts {' or '.join(families)} models; {spec} is a {family} model"
        )


# -- the registry ------------------------------------------------------------------------------
class Probe(Protocol):
    """What ``get_probe`` returns: a probe package following the contract above."""

    NAME: str
    Config: type[ProbeConfig]
    FAMILIES: tuple[str, ...]
    DEFAULT_MODELS: tuple[str, ...]
    METRICS: tuple[Metric, ...]

    def run(self, model: LoadedModel, config: Any = None, data: Any = None) -> ProbeResult: ...


CONTRACT = ("NAME", "Config", "FAMILIES", "DEFAULT_MODELS", "METRICS", "run")


def _probe_folders() -> list[str]:
    """The ``probes`` package's folders, with those of ``$WORKBENCH_PROBE_PATH`` appended."""
    import probes

    for folder in os.environ.get(PROBE_PATH_ENV, "").split(os.pathsep):
        folder = str(Path(folder).expanduser().absolute()) if folder else ""
        if folder and folder not in probes.__path__:
            probes.__path__.append(folder)
    return list(probes.__path__)


def probe_names() -> list[str]:
    """Every probe package, named after its folder."""
    return sorted({m.name for m in pkgutil.iter_modules(_probe_folders()) if m.ispkg})


def get_probe(name: str) -> Probe:
    """The probe package ``name``, checked against the contract."""
    names = probe_names()
    if name not in names:
        raise WorkbenchError(f"unknown probe {name!r}; available: {', '.join(names)}")
    module = importlib.import_module(f"probes.{name}")
    missing = [attr for attr in CONTRACT if not hasattr(module, attr)]
    if missing:
        raise WorkbenchError(
            f"probe {name!r} ({module.__file__}) does not export {', '.join(missing)}; "
            "see probes/README.md for what a probe exports"
        )
    if not issubclass(module.Config, ProbeConfig) or name != module.NAME:
        raise WorkbenchError(
            f"probe {name!r}: Config must derive from workbench.probe.ProbeConfig and NAME must "
            f"be {name!r}"
        )
    return cast(Probe, module)


def probe_folder(name: str) -> Path:
    module = importlib.import_module(f"probes.{name}")
    return Path(module.__file__ or "").parent


def presets_of(name: str) -> dict[str, Path]:
    get_probe(name)
    folder = probe_folder(name) / "presets"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


# -- configs from presets and ``k=v`` params ---------------------------------------------------
def make_config(
    probe: str, *, preset: str | None = None, params: dict[str, Any] | None = None
) -> ProbeConfig:
    """The probe's Config from its defaults, then a preset, then explicit params (strings ok).

    Every value is checked here, so a bad one fails before any model loads.
    """
    cls = get_probe(probe).Config
    values: dict[str, Any] = {}
    if preset is not None:
        presets = presets_of(probe)
        if preset not in presets:
            raise WorkbenchError(
                f"{probe} has no preset {preset!r}; presets: {', '.join(presets) or 'none'}"
            )
        values.update(yaml.safe_load(presets[preset].read_text()) or {})
    values.update(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise WorkbenchError(
            f"{probe} has no parameter {', '.join(unknown)}; parameters: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; values are coerced later against the Config."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise WorkbenchError(f"--param takes key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A ``--param`` string parsed against the field's type; other values pass unchanged."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if origin in (typing.Union, types.UnionType) and len(args) == 1 else hint
    if origin in (typing.Union, types.UnionType) and value.lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            return tuple(_parse(v.strip(), item) for v in value.split(",") if v.strip())
        return _parse(value, base)
    except ValueError:
        raise ConfigError(f"parameter {name}={value!r} is not a valid {_type_name(base)}") from None


def _parse(text: str, hint: Any) -> Any:
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if hint in (int, float):
        return hint(text)
    return text


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"comma-separated list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true/false", int: "whole number", float: "number"}.get(hint, str(hint))

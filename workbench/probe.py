"""What every probe shares: the registry, configs from presets and ``k=v`` params, family checks.

A probe is a module under ``probes/`` that defines ``NAME``, ``Config`` (a dataclass),
``FAMILIES`` (the model families it accepts), ``DEFAULT_MODELS`` (the embedded models the demo
runs it on) and ``run(model, config) -> ProbeResult``. Presets are YAML files of config values in
the probe's ``presets/`` folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import FamilyError, WorkbenchError


def probe_names() -> list[str]:
    """Every sub-package of ``probes`` is a probe, named after its folder."""
    import probes

    return sorted(m.name for m in pkgutil.iter_modules(probes.__path__) if m.ispkg)


def get_probe(name: str) -> types.ModuleType:
    names = probe_names()
    if name not in names:
        raise WorkbenchError(f"unknown probe {name!r}; available: {', '.join(names)}")
    return importlib.import_module(f"probes.{name}")


def presets_of(name: str) -> dict[str, Path]:
    folder = Path(get_probe(name).__file__).parent / "presets"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def check_family(model: Any, families: tuple[str, ...], probe: str) -> None:
    """Refuse a model of the wrong family before any heavy work."""
    if model.family not in families:
        raise FamilyError(
            f"the {probe} probe accepts {' or '.join(families)} models; "
            f"{model.spec} is a {model.family} model"
        )


def make_config(
    probe: str, *, preset: str | None = None, params: dict[str, Any] | None = None
) -> Any:
    """The probe's Config from its defaults, then a preset, then explicit params (strings ok)."""
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
        if not sep or not key:
            raise WorkbenchError(f"--param takes key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _coerce(name: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if origin in (typing.Union, types.UnionType) and len(args) == 1 else hint
    if origin in (typing.Union, types.UnionType) and value.lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base in (int, float):
            return base(value)
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            return tuple(item(v) for v in value.split(",") if v)
    except ValueError:
        raise WorkbenchError(f"parameter {name}={value!r} is not a valid {base}") from None
    return value

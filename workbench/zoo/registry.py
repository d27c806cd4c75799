"""``ZooEntry``: one embedded model, and how to rebuild or find it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    """One embedded model: how to find or rebuild it, and what family the loader treats it as.

    ``recipe`` is the module whose ``builder`` function (``build(out_dir, seed) -> metrics``)
    trains the model; packaged models have no recipe and name the ``package`` that ships them.
    """

    name: str
    family: str
    description: str
    recipe: str | None
    seed: int
    builder: str = "build"
    package: str | None = None

"""reweave: contextual memory reweaving (earlier layers' states woven into a later layer),
its effect on recall with length, and what it does to attention."""

from probes.reweave.config import Config
from probes.reweave.operator import Memory, Reweaving, capture_memory, reweave
from probes.reweave.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = [
    "DEFAULT_MODELS",
    "FAMILIES",
    "NAME",
    "Config",
    "Memory",
    "Reweaving",
    "capture_memory",
    "reweave",
    "run",
]

"""curvature: memorization in the spectrum of loss curvature (K-FAC weight edit vs SVD).

The pieces stay in their modules: ``data`` (sequences to recite, held-out and factor text),
``factors`` (K-FAC factors),
``edit`` (the edit and its SVD baseline as new weights), ``memorization`` (recitation and
perplexity), ``audit`` (membership inference and extraction by sampling after each edit),
``compute`` (eigenbases and component selection), ``probe.factors_for``.
"""

from probes.curvature.config import METRICS, Config
from probes.curvature.data import CanarySet, CurvatureData
from probes.curvature.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = [
    "DEFAULT_MODELS",
    "FAMILIES",
    "METRICS",
    "NAME",
    "CanarySet",
    "Config",
    "CurvatureData",
    "run",
]

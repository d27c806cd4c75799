"""curvature: memorization in the spectrum of loss curvature (K-FAC weight edit vs SVD)."""

from probes.curvature.compute import (
    Eigenbasis,
    eigendecompose,
    select_by_mass,
    select_by_mass_heap,
)
from probes.curvature.config import Config
from probes.curvature.data import CanarySet, canary_set, default_canary_set
from probes.curvature.edit import (
    edited,
    edited_copy,
    kfac_edit,
    kfac_weights,
    svd_weights,
)
from probes.curvature.factors import KFACFactors, collect_factors
from probes.curvature.memorization import evaluate, greedy_continue, score_text
from probes.curvature.probe import DEFAULT_MODELS, FAMILIES, NAME, factors_for, run

__all__ = [
    "DEFAULT_MODELS",
    "FAMILIES",
    "NAME",
    "CanarySet",
    "Config",
    "Eigenbasis",
    "KFACFactors",
    "canary_set",
    "collect_factors",
    "default_canary_set",
    "edited",
    "edited_copy",
    "eigendecompose",
    "evaluate",
    "factors_for",
    "greedy_continue",
    "kfac_edit",
    "kfac_weights",
    "run",
    "score_text",
    "select_by_mass",
    "select_by_mass_heap",
    "svd_weights",
]

"""atlas: per-layer representation maps (PCA/UMAP) and linear decodability, for any model."""

from probes.atlas.config import METRICS, Config
from probes.atlas.data import LabelledPositions
from probes.atlas.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = ["DEFAULT_MODELS", "FAMILIES", "METRICS", "NAME", "Config", "LabelledPositions", "run"]

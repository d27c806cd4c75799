"""atlas: per-layer representation maps (PCA/UMAP) and linear decodability, for any model."""

from probes.atlas.config import Config
from probes.atlas.data import LabelledPositions, default_dataset, scene_patches, word_tokens
from probes.atlas.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = [
    "DEFAULT_MODELS",
    "FAMILIES",
    "NAME",
    "Config",
    "LabelledPositions",
    "default_dataset",
    "run",
    "scene_patches",
    "word_tokens",
]

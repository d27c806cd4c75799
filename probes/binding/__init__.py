"""binding: do a ViT's patch embeddings say which patches belong to the same object?"""

from probes.binding.config import METRICS, Config
from probes.binding.fit import load_data
from probes.binding.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = ["DEFAULT_MODELS", "FAMILIES", "METRICS", "NAME", "Config", "load_data", "run"]

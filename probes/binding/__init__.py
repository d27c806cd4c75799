"""binding: do a ViT's patch embeddings say which patches belong to the same object?"""

from probes.binding.config import Config
from probes.binding.probe import DEFAULT_MODELS, FAMILIES, NAME, load_data, run

__all__ = ["DEFAULT_MODELS", "FAMILIES", "NAME", "Config", "load_data", "run"]

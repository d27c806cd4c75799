"""pmi: how a PMI-Transformer writes, consolidates and reads its working and long-term memory."""

from probes.pmi.config import Config
from probes.pmi.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = ["DEFAULT_MODELS", "FAMILIES", "NAME", "Config", "run"]

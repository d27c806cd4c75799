"""pmi: how a PMI-Transformer writes, consolidates and reads its working and long-term memory."""

from probes.pmi.config import METRICS, Config
from probes.pmi.probe import DEFAULT_MODELS, FAMILIES, NAME, run
from workbench.data.stories import Story

__all__ = ["DEFAULT_MODELS", "FAMILIES", "METRICS", "NAME", "Config", "Story", "run"]

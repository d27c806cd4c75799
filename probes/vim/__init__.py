"""vim: Vision Mamba hidden states on the CPU: memory decay, hidden attention, scan directions."""

from probes.vim.config import METRICS, Config
from probes.vim.probe import DEFAULT_MODELS, FAMILIES, NAME, run
from workbench.data.scenes import Scenes

__all__ = ["DEFAULT_MODELS", "FAMILIES", "METRICS", "NAME", "Config", "Scenes", "run"]

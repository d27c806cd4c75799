"""vim: Vision Mamba hidden states on the CPU: memory decay, hidden attention, scan directions."""

from probes.vim.config import Config
from probes.vim.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = ["DEFAULT_MODELS", "FAMILIES", "NAME", "Config", "run"]

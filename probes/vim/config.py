"""Settings of the vim probe; every field can be set from a preset or ``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    n_images: int = 32
    """Scenes whose statistics are averaged: state norms, step sizes, branch shares, ablations."""
    n_maps: int = 4
    """Of those, scenes whose full hidden attention, maps and state trajectories are kept for the
    figures and the explorer (hidden attention costs E x L x L numbers per layer and direction)."""
    rollout_start: int = -1
    """First layer of rollout and attribution; -1 means 5/8 of the depth (15 of 24 in Vim-Ti, as
    in the hidden-attention paper)."""
    target: str = "predicted"
    """Logit that attribution explains: ``predicted`` (each image's top logit), a class name
    (``circle``) or a class index."""
    attribution: bool = True
    """Gradient-weighted rollout (one backward pass per map image)."""
    ablation: bool = True
    """Zero each branch of each layer in turn and measure how much the logits move."""
    compare_with: str = "zoo:vit-scenes"
    """A ViT shown side by side (its CLS attention rollout and accuracy on the same scenes), when
    it takes images of the same size; empty for none."""
    batch_size: int = 8
    seed: int = 0

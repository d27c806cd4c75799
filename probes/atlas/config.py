"""Atlas settings; every field can be set from a preset or ``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    dataset: str = "auto"
    """``scenes`` (vision: object class under each patch), ``words`` (text: semantic category of
    a word in a neutral sentence), or ``auto`` to pick by the model's family."""
    site_kind: str = "resid_post"
    """Which site of each block to read; the embedding output is always added as layer 0."""
    n_inputs: int = 240
    """Images or sentences to run through the model."""
    max_points: int = 2000
    """Labelled positions kept (a class-balanced-as-possible random subset) for probes and maps."""
    folds: int = 5
    """Cross-validation folds, grouped by image or by word so no group is on both sides."""
    probe_c: float = 1.0
    """Inverse L2 strength of the logistic-regression probe."""
    methods: tuple[str, ...] = ("pca", "umap")
    umap_neighbors: int = 15
    random_control: bool = True
    """Also probe a randomly initialised copy of the model: the floor a trained model must beat."""
    batch_size: int = 16
    seed: int = 0

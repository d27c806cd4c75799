"""pmi probe settings; every field can be set from a preset or ``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    n_stories: int = 240
    """Held-out stories to run (the tasks take turns); accuracy, ablations and maps use them."""
    tasks: tuple[str, ...] = ("one_fact", "two_facts", "counting")
    """Story tasks from ``workbench.data.stories``: one_fact, two_facts, counting."""
    n_examples: int = 6
    """Stories kept in full (every tensor, every step) for the per-story views and the widget."""
    example: int = 0
    """Which kept story the static per-story figures show (0 .. n_examples - 1)."""
    control: str = "zoo:pmi-stories-control"
    """The same-size Transformer whose accuracy on the same stories is shown beside the PMI
    model's; empty to skip."""
    ablations: bool = True
    """Also measure accuracy with the LTM read, the correction or the WM read zeroed."""
    slot_map: str = "umap"
    """Map of working-memory slot states: ``umap``, ``pca``, or ``none``."""
    max_map_points: int = 2000
    """Slot states (story x step x slot) kept for the map, a seeded random subset."""
    umap_neighbors: int = 15
    batch_size: int = 64
    seed: int = 20_000
    """Story seed; the zoo models trained on seed 0 and were evaluated on seed 10 000."""

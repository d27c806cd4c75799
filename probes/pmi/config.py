"""pmi probe settings and comparable metrics; every field can be set from a preset or
``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.probe import Metric, ProbeConfig, at_least, between, require

MAX_STORIES = 10_000
"""Every captured tensor of every story is held at once; beyond this the run outgrows memory."""
MAX_MAP_POINTS = 100_000
MAX_FACTS_PER_SLOT = 8.0
"""Beyond this a recall story outgrows any sensible model's positions and the people named."""


@dataclass(frozen=True)
class Config(ProbeConfig):
    n_stories: int = 240
    """Held-out stories to run (the tasks take turns); accuracy, ablations and maps use them."""
    tasks: tuple[Literal["one_fact", "two_facts", "counting", "recall"], ...] = (
        "one_fact",
        "recall",
    )
    """Story tasks from ``workbench.data.stories``: one_fact, two_facts, counting, recall (the
    zoo models are trained on one_fact and recall)."""
    n_examples: int = 6
    """Stories kept in full (every tensor, every step) for the per-story views and the widget."""
    example: int = 0
    """Which kept story the static per-story figures show (0 .. n_examples - 1)."""
    control: str = "zoo:pmi-stories-control"
    """The same-size Transformer whose accuracy on the same stories is shown beside the PMI
    model's; empty to skip."""
    ablations: bool = True
    """Also measure accuracy with the LTM read, the correction or the WM read zeroed."""
    facts_per_slot: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    """Difficulties of the recall sweep: story length in facts per working-memory slot. At each,
    PMI and control accuracy, the question's LTM read share and (with ``ablations``) accuracy
    with each read path zeroed. Empty to skip the sweep."""
    n_per_difficulty: int = 150
    """Recall stories at each difficulty of the sweep."""
    slot_map: Literal["umap", "pca", "none"] = "umap"
    """Map of working-memory slot states: ``umap``, ``pca``, or ``none``."""
    max_map_points: int = 2000
    """Slot states (story x step x slot) kept for the map, a seeded random subset."""
    umap_neighbors: int = 15
    batch_size: int = 64
    seed: int = 20_000
    """Story seed; the zoo models trained on seed 0 and were evaluated on seed 10 000."""

    def check(self) -> None:
        require(
            len(self.tasks) > 0,
            "tasks must name at least one of one_fact, two_facts, counting, recall",
        )
        between(self, max(3, len(self.tasks)), MAX_STORIES, "n_stories")
        between(self, 1, self.n_stories, "n_examples")
        between(self, 0, self.n_examples - 1, "example")
        between(self, 10, MAX_MAP_POINTS, "max_map_points")
        at_least(self, 2, "umap_neighbors")
        at_least(self, 1, "batch_size")
        between(self, 0.1, MAX_FACTS_PER_SLOT, "facts_per_slot")
        between(self, 10, MAX_STORIES, "n_per_difficulty")


METRICS = (
    Metric("accuracy", "answer accuracy", percent=True),
    Metric("control_accuracy", "Transformer control accuracy", better="neither", percent=True),
    Metric("chance_majority", "chance (majority answer)", better="neither", percent=True),
    Metric("accuracy_no_ltm_read", "accuracy without the LTM read", better="neither", percent=True),
    Metric("accuracy_no_wm_read", "accuracy without the WM read", better="neither", percent=True),
    Metric(
        "ltm_read_share_question_last_step",
        "LTM share of the question's read (last step)",
        better="neither",
        percent=True,
    ),
    Metric("accuracy_by_task", "accuracy by task", percent=True, over="task_names"),
    Metric(
        "difficulty_accuracy",
        "recall accuracy by facts per WM slot",
        percent=True,
        over="difficulty_facts_per_slot",
    ),
    Metric(
        "difficulty_control_accuracy",
        "control recall accuracy by facts per WM slot",
        better="neither",
        percent=True,
        over="difficulty_facts_per_slot",
    ),
    Metric(
        "difficulty_accuracy_no_ltm_read",
        "recall accuracy without the LTM read, by facts per WM slot",
        better="neither",
        percent=True,
        over="difficulty_facts_per_slot",
    ),
    Metric(
        "difficulty_accuracy_no_wm_read",
        "recall accuracy without the WM read, by facts per WM slot",
        better="neither",
        percent=True,
        over="difficulty_facts_per_slot",
    ),
    Metric(
        "difficulty_ltm_read_share",
        "LTM share of the question's read (last step), by facts per WM slot",
        better="neither",
        percent=True,
        over="difficulty_facts_per_slot",
    ),
    Metric(
        "ablation_accuracy",
        "accuracy with one read path zeroed",
        better="neither",
        percent=True,
        over="ablation_names",
    ),
)

"""Atlas settings and comparable metrics; every field can be set from a preset or ``--param``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.data.labelled_text import TEXT_FORMATS, check_text_file
from workbench.errors import ConfigError, DataError
from workbench.probe import Metric, ProbeConfig, at_least, between, require

MAX_INPUTS = 100_000


@dataclass(frozen=True)
class Config(ProbeConfig):
    dataset: Literal["auto", "scenes", "words", "csv", "jsonl", "imagefolder", "ade20k", "coco"] = (
        "auto"
    )
    """``scenes`` (vision: object class under each patch), ``words`` (text: semantic category of
    a word in a neutral sentence), or ``auto`` to pick by the model's family.

    Your own labelled text in ``data_path``: ``csv`` or ``jsonl`` with columns ``text,label`` (a
    label per text, read at its last token) or ``text,word,label`` (a label per word, read at the
    word's last token); JSON Lines may instead give ``words`` and ``labels`` lists (null: no
    label). An optional ``group`` column keeps rows that share it on one side of every CV split.

    Your own images in ``data_path``, read through the model's own preprocessing:
    ``imagefolder`` (a folder per class; label = the image's class, read at the class token),
    ``ade20k`` or ``coco`` (label = the class of the object under each patch)."""
    data_path: str = ""
    """Your data: the CSV / JSON Lines file, the ImageFolder root, the ADE20K root, or the COCO
    image folder."""
    annotations: str = ""
    """COCO: the ``instances_*.json`` file."""
    split: Literal["training", "validation"] = "validation"
    """ADE20K split."""
    store: str = ""
    """An activation-store folder: the model's activations are extracted there once and read
    back by later runs on the same model, sites and inputs (the random-init control keeps its
    own store in a sub-folder). Empty: activations are kept in memory for this run only."""
    site_kind: Literal["resid_pre", "resid_post", "attn.out", "mlp.in", "mlp.out"] = "resid_post"
    """Which site of each block to read; the embedding output is always added as layer 0."""
    n_inputs: int = 240
    """Images or sentences to run through the model."""
    max_points: int = 2000
    """Labelled positions kept (a class-balanced-as-possible random subset) for probes and maps."""
    folds: int = 5
    """Cross-validation folds, grouped by image or by word so no group is on both sides."""
    probe_c: float = 1.0
    """Inverse L2 strength of the logistic-regression probe."""
    methods: tuple[Literal["pca", "umap"], ...] = ("pca", "umap")
    umap_neighbors: int = 15
    random_control: bool = True
    """Also probe a randomly initialised copy of the model: the floor a trained model must beat."""
    batch_size: int = 16

    def check(self) -> None:
        require(
            self.dataset not in ("imagefolder", "ade20k", "coco") or bool(self.data_path),
            f"dataset={self.dataset} needs data_path=<folder on disk>",
        )
        require(
            self.dataset != "coco" or bool(self.annotations),
            "dataset=coco needs annotations=<instances_*.json>",
        )
        require(
            self.dataset not in TEXT_FORMATS or bool(self.data_path),
            f"dataset={self.dataset} needs data_path=<your .{self.dataset} file>",
        )
        if self.dataset in TEXT_FORMATS:
            try:
                check_text_file(self.data_path, self.dataset)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
        at_least(self, 2, "n_inputs", "folds", "umap_neighbors")
        at_least(self, 10, "max_points")
        at_least(self, 1, "batch_size")
        between(self, 0, MAX_INPUTS, "n_inputs", "max_points")
        between(self, 1e-6, 1e6, "probe_c")


METRICS = (
    Metric("peak_accuracy", "peak held-out accuracy", percent=True),
    Metric("chance_accuracy", "chance (majority class)", better="neither", percent=True),
    Metric("control_peak_accuracy", "random-init peak accuracy", better="neither", percent=True),
    Metric(
        "accuracy",
        "held-out accuracy by layer",
        percent=True,
        over="layer_names",
        baselines=("control_accuracy", "chance_accuracy"),
    ),
)

"""Binding settings and comparable metrics; every field can be set from a preset or ``--param``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.probe import Metric, ProbeConfig, at_least, between, require

ProbeKind = Literal["linear", "diagonal", "quadratic", "lowrank", "cosine", "dot", "attention"]
"""The probe family of ``compute.PROBES``."""

MAX_IMAGES = 100_000
MAX_RANK = 4096
"""Above any model's width: a larger rank is a typo, refused before an allocation of that size."""


@dataclass(frozen=True)
class Config(ProbeConfig):
    dataset: Literal["scenes", "ade20k", "coco", "imagefolder"] = "scenes"
    """``scenes`` (synthetic binding scenes at the model's resolution, from
    ``workbench.data.scenes.make_binding_scenes``), or your own images on disk, read through the
    model's own preprocessing: ``ade20k``, ``coco``, or ``imagefolder`` (a folder per class,
    each image with an instance mask ``NAME_mask.png`` beside it)."""
    data_path: str = ""
    """ADE20K: the dataset's root folder. COCO: the folder holding the images. ImageFolder: the
    folder holding one sub-folder per class."""
    annotations: str = ""
    """COCO: the ``instances_*.json`` file."""
    split: Literal["training", "validation"] = "validation"
    """ADE20K split."""
    n_images: int = 160
    """Images used in all; they are split by image into train / validation / test."""
    val_fraction: float = 0.2
    """Images for choosing each probe's best layer (never used to fit or to report)."""
    test_fraction: float = 0.25
    """Images every reported number comes from."""
    background: Literal["exclude", "as_object"] = "exclude"
    """``exclude``: pairs with a background patch are left out (the question is about objects).
    ``as_object``: background counts as one more object (the reference code's convention). The
    other convention is also measured once, for the headline probe at its best layer."""
    min_patch_fraction: float = 0.5
    """A patch takes its block's most common instance id; if that id covers less than this
    share of the patch, the patch is ambiguous and left out."""
    layers: tuple[int, ...] = ()
    """Layers to probe (0 = the patch-embedding output, k = block k-1's output); empty = all
    (or ``max_layers`` of them). Layer 0 is always included: it is a control."""
    max_layers: int = 0
    """With ``layers`` empty: probe this many evenly spaced layers, the embedding and the last
    one included (0 = every layer)."""
    store: str = ""
    """An activation-store folder: features are extracted there once and read back by every
    later run on the same model, sites and images (the random-init control keeps its own store
    in a sub-folder). Empty: features are kept in memory for this run only."""
    probes: tuple[ProbeKind, ...] = (
        "linear",
        "diagonal",
        "quadratic",
        "lowrank",
        "cosine",
        "dot",
        "attention",
    )
    """Probe types run on the model: linear, diagonal, quadratic, lowrank (trained); cosine, dot,
    attention (untrained baselines: only a scale and a threshold are fitted)."""
    headline_probe: Literal["quadratic", "lowrank", "diagonal"] = "quadratic"
    """The probe of the headline figure, the ablation and the attention correlation (it needs a
    bilinear matrix W_s)."""
    controls: tuple[Literal["pixels", "positions", "random_init"], ...] = (
        "pixels",
        "positions",
        "random_init",
    )
    """Controls measured on the same pairs: raw pixel patches, one-hot patch positions, and the
    same architecture with random weights (layer 0 of the model is the patch-embedding control)."""
    control_probes: tuple[ProbeKind, ...] = ("quadratic", "cosine")
    """Probe types run on the controls."""
    rank: int = 8
    """Rank of the low-rank quadratic probe."""
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Ranks of the accuracy-vs-rank curve (at the headline probe's best layer)."""
    balanced_loss: bool = True
    """Weight positive pairs by #negatives/#positives so that logit 0 targets balanced accuracy."""
    l2: float = 3e-3
    """L2 penalty on the probe weights; with a few hundred images a full d x d W overfits
    without it (measured on the zoo models: 1e-4 gave 0.82 train vs 0.60 test)."""
    max_iter: int = 30
    """L-BFGS iterations per probe fit."""
    full_batch_images: int = 256
    """Training sets of up to this many images are fitted by full-batch L-BFGS (exact, and fast
    on small sets); larger ones by Adam over minibatches read from the features as they are
    needed, so memory is bounded by the minibatch, not the dataset."""
    minibatch_images: int = 32
    """Images per Adam minibatch (every valid pair of each image is used)."""
    epochs: int = 5
    """Passes over the training images of the minibatch (Adam) fit."""
    learning_rate: float = 0.03
    """Adam's step size in the minibatch fit."""
    far_distance: float = 4.0
    """Same-object pairs at least this many patches apart are the hard positives."""
    attention: bool = True
    """Correlate the next layer's attention weights with the IsSameObject scores."""
    ablation: bool = True
    """Remove / shuffle the binding subspace at one layer and measure the effect downstream."""
    ablation_layer: int = -1
    """Layer to ablate at; -1 = the headline probe's best layer that is not the last."""
    ablation_rank: int = 8
    ablation_random: int = 3
    """Random subspaces of the same dimension to compare against."""
    n_show: int = 6
    """Test images kept with all their pair scores for the example figure and the widget."""
    bootstrap: int = 300
    """Bootstrap resamples of test images for the model-minus-control intervals."""
    batch_size: int = 32
    threads: int = 1
    """Torch threads for the run (restored afterwards); 0 = every core. One is the default
    because it measured faster on a shared 2-core machine for both parts of a ViT-B run (probe
    fit 9.3 s vs 24.1 s, forward of 8 images 20.6 s vs 25.0 s at load 9); on an idle machine
    with more cores, 0 may win."""

    def check(self) -> None:
        require(
            self.dataset == "scenes" or bool(self.data_path),
            f"dataset={self.dataset} needs data_path=<folder on disk>",
        )
        require(
            self.dataset != "coco" or bool(self.annotations),
            "dataset=coco needs annotations=<instances_*.json>",
        )
        between(self, 10, MAX_IMAGES, "n_images")
        require(
            self.val_fraction > 0
            and self.test_fraction > 0
            and self.val_fraction + self.test_fraction <= 0.8,
            "val_fraction and test_fraction must be in (0, 1) and sum to at most 0.8",
        )
        between(self, 0.0, 1.0, "min_patch_fraction")
        at_least(self, 0, "layers")
        require(bool(self.probes), "probes must name at least one probe type")
        require(
            self.headline_probe in self.probes,
            f"headline_probe {self.headline_probe!r} must be one of the probes",
        )
        require(
            "attention" not in self.control_probes,
            "the attention probe needs a model; drop it from control_probes",
        )
        between(self, 1, MAX_RANK, "rank", "ranks", "ablation_rank")
        between(self, 0.0, 1e6, "l2")
        between(self, 1, 10_000, "max_iter")
        between(self, 0.0, 10_000.0, "far_distance")
        at_least(self, -1, "ablation_layer")
        between(self, 1, 100, "ablation_random")
        between(self, 1, 1000, "n_show")
        between(self, 0, 100_000, "bootstrap")
        between(self, 1, MAX_IMAGES, "batch_size")
        between(self, 0, 1024, "threads", "max_layers")
        between(self, 1, MAX_IMAGES, "full_batch_images", "minibatch_images")
        between(self, 1, 1000, "epochs")
        between(self, 1e-6, 1.0, "learning_rate")


METRICS = (
    Metric(
        "distance_matched_balanced_accuracy",
        "distance-matched balanced accuracy (best probe and layer, test images)",
        percent=True,
    ),
    Metric(
        "headline_probe_accuracy",
        "headline probe at its best layer, distance-matched (test images)",
        percent=True,
    ),
    Metric("pixel_control", "pixel-patch control", better="neither", percent=True),
    Metric("position_control", "positions-only control", better="neither", percent=True),
    Metric("random_init_control", "random-init model control", better="neither", percent=True),
    Metric(
        "majority_baseline",
        "always-different baseline (plain accuracy)",
        better="neither",
        percent=True,
    ),
    Metric(
        "headline_probe_by_layer",
        "headline probe's distance-matched accuracy by layer (test images)",
        percent=True,
        over="layer_names",
        baselines=("pixel_control", "position_control", "random_init_control"),
    ),
)

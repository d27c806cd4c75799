"""Binding settings; every field can be set from a preset or ``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    dataset: str = "scenes"
    """``scenes`` (synthetic binding scenes at the model's resolution, from
    ``workbench.data.scenes.make_binding_scenes``), ``ade20k`` or ``coco`` (files on disk)."""
    data_path: str = ""
    """ADE20K: the dataset's root folder. COCO: the folder holding the images."""
    annotations: str = ""
    """COCO: the ``instances_*.json`` file."""
    split: str = "validation"
    """ADE20K split: ``training`` or ``validation``."""
    n_images: int = 160
    """Images used in all; they are split by image into train / validation / test."""
    val_fraction: float = 0.2
    """Images for choosing each probe's best layer (never used to fit or to report)."""
    test_fraction: float = 0.25
    """Images every reported number comes from."""
    background: str = "exclude"
    """``exclude``: pairs with a background patch are left out (the question is about objects).
    ``as_object``: background counts as one more object (the reference code's convention). The
    other convention is also measured once, for the headline probe at its best layer."""
    min_patch_fraction: float = 0.5
    """A patch takes its block's most common instance id; if that id covers less than this
    share of the patch, the patch is ambiguous and left out."""
    layers: tuple[int, ...] = ()
    """Layers to probe (0 = the patch-embedding output, k = block k-1's output); empty = all.
    Layer 0 is always included: it is a control."""
    probes: tuple[str, ...] = (
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
    headline_probe: str = "quadratic"
    """The probe of the headline figure, the ablation and the attention correlation."""
    controls: tuple[str, ...] = ("pixels", "positions", "random_init")
    """Controls measured on the same pairs: raw pixel patches, one-hot patch positions, and the
    same architecture with random weights (layer 0 of the model is the patch-embedding control)."""
    control_probes: tuple[str, ...] = ("quadratic", "cosine")
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
    """Torch threads for the run (restored afterwards). The many small matrix products of probe
    fitting are fastest on one thread; raise it for large models on an idle machine."""
    seed: int = 0

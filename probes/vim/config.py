"""Settings and comparable metrics of the vim probe; every field can be set from a preset or
``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.probe import Metric, ProbeConfig, at_least, between, require

MAX_IMAGES = 10_000
"""The ablation sweep holds every image's pixels at once; beyond this the run outgrows memory."""
MAX_MAPS = 256
"""Map scenes keep layers x 2 x L x L hidden attention each (7 MB per scene for Vim-Ti)."""


@dataclass(frozen=True)
class Config(ProbeConfig):
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

    def check(self) -> None:
        between(self, 1, MAX_IMAGES, "n_images")
        between(self, 1, MAX_MAPS, "n_maps")
        require(
            self.n_maps <= self.n_images,
            f"n_maps must lie in 1..n_images ({self.n_images}); got {self.n_maps}",
        )
        at_least(self, -1, "rollout_start")
        at_least(self, 1, "batch_size")
        require(bool(self.target.strip()), "target must be 'predicted', a class name or an index")


METRICS = (
    Metric("forward_share", "forward-scan share of mixer output", better="neither", percent=True),
    Metric("median_memory_tokens", "median state memory", better="neither", unit="tokens"),
    Metric("mean_lookback_tokens", "hidden-attention lookback", better="neither", unit="tokens"),
    Metric("rollout_object_mass", "class-token rollout mass on objects", percent=True),
    Metric("object_area", "object share of the image (floor)", better="neither", percent=True),
    Metric("label_accuracy", "scene label accuracy", percent=True),
    Metric("chance_label_accuracy", "chance (majority per label)", better="neither", percent=True),
    Metric(
        "forward_share",
        "forward-scan share by layer",
        better="neither",
        percent=True,
        over="layer_names",
    ),
)

"""The side-by-side ViT: the same scenes through a ViT, its CLS attention rollout and accuracy.

``zoo:vit-scenes`` and ``zoo:vim-scenes`` see the same 64-px scenes in 8-px patches, so their
class tokens' maps can be laid side by side and scored against the same object masks.
"""

from __future__ import annotations

import numpy as np

from probes.vim import compute
from workbench.capture import capture
from workbench.data.scenes import SHAPES
from workbench.models import LoadedModel


def vit_rollout_maps(vit: LoadedModel, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(images, patches): the CLS token's attention rollout from the first layer (heads averaged).

    Raises the model's own errors for images of the wrong size (``encode_images``).
    """
    sites = vit.layer_sites("attn.pattern")
    cache = capture(vit, images, sites, batch_size=batch_size, progress=False)
    try:
        patterns = np.stack([cache[s].mean(dim=1).numpy() for s in sites], axis=1)  # (b, l, T, T)
    finally:
        cache.close()
    prefix = vit.n_prefix_tokens
    maps = [compute.rollout(p.astype(np.float64), 0)[0, prefix:] for p in patterns]
    return np.stack(maps).astype(np.float32)


def scene_label_accuracy(
    model: LoadedModel, images: np.ndarray, present: np.ndarray
) -> float | None:
    """Share of (scene, shape) pairs a scene-shape classifier gets right, or None for others."""
    if list(model.head_labels or ()) != list(SHAPES):
        return None
    logits = model(**model.encode_images(images)).logits.float()
    return float(((logits > 0).numpy() == present).mean())

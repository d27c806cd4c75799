"""Binding and atlas on the real widths, patch grids and prefix tokens of four published vision
models (one block each, random weights: plumbing, not science), reading a user's ImageFolder
with instance masks through each model's own preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from probes import atlas, binding
from workbench.data.scenes import make_binding_scenes
from workbench.models import load_model
from workbench.models.published import save_published_shape

pytestmark = pytest.mark.slow

SHAPES = {  # name: (width, patches, prefix tokens)
    "vit-base-patch16-224": (768, 196, 1),
    "dinov2-small-registers": (384, 256, 5),
    "clip-vit-base-patch32": (768, 49, 1),
    "vit-mae-base": (768, 196, 1),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An ImageFolder of 260 x 300 photos with their instance masks, two classes."""
    root = tmp_path_factory.mktemp("photos")
    scenes = make_binding_scenes(14, size=300, seed=5)
    for k, (image, ids) in enumerate(zip(scenes.images, scenes.instance_ids, strict=True)):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image[20:280]).save(folder / f"{k}.png")
        Image.fromarray(ids[20:280].astype(np.uint8)).save(folder / f"{k}_mask.png")
    return root


@pytest.mark.parametrize("name", list(SHAPES))
def test_binding_and_atlas_run_at_the_real_width_and_grid(name, photos, tmp_path):
    width, patches, prefix = SHAPES[name]
    lm = load_model(save_published_shape(tmp_path / name, name, n_layers=1))
    assert (lm.d_model, lm.n_patches, lm.n_prefix_tokens) == (width, patches, prefix)
    config = binding.Config(
        dataset="imagefolder",
        data_path=str(photos),
        n_images=14,
        probes=("quadratic", "attention"),
        control_probes=("cosine",),
        controls=("pixels", "random_init"),
        ranks=(1,),
        max_iter=2,
        bootstrap=5,
        ablation=False,
        n_show=2,
        store=str(tmp_path / "store"),
    )
    result = binding.run(lm, config)
    assert result.arrays["show_patch_ids"].shape == (2, patches)
    assert 0.0 <= result.metrics["distance_matched_balanced_accuracy"] <= 1.0
    assert result.provenance["features"]["reused"] is False
    store_sites = result.provenance["features"]["store"]
    mapped = atlas.run(
        lm,
        atlas.Config(
            dataset="imagefolder",
            data_path=str(photos),
            folds=2,
            methods=("pca",),
            random_control=False,
            store=store_sites + "-atlas",
        ),
    )
    assert mapped.metrics["n_points"] == 14 and mapped.arrays["pca"].shape == (2, 14, 2)

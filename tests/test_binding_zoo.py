"""The three vit-binding zoo models: committed checkpoints match their recipes and load."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from workbench.data.scenes import make_binding_scenes
from workbench.models import load_model
from workbench.zoo import ZOO, zoo_path
from workbench.zoo import vit_binding as recipe

NAMES = ("vit-binding-mae", "vit-binding-contrast", "vit-binding-sup")


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_matches_its_recipe_and_loads(name):
    folder = zoo_path(name)
    weights = folder / "model.safetensors"
    meta = json.loads((folder / "recipe.json").read_text())
    assert weights.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == meta["model_sha256"]
    assert meta["seed"] == ZOO[name].seed and meta["recipe"] == ZOO[name].recipe
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    lm = load_model(f"zoo:{name}")
    assert (lm.family, lm.n_layers, lm.d_model, lm.image_size, lm.patch_size) == (
        "vit",
        recipe.LAYERS,
        recipe.HIDDEN,
        recipe.IMAGE_SIZE,
        recipe.PATCH_SIZE,
    )
    digest = lm.digest()
    assert load_model(f"zoo:{name}").digest() == digest  # nothing is initialised at random


def test_mae_encoder_runs_without_masking_and_keeps_patch_order():
    lm = load_model("zoo:vit-binding-mae")
    assert lm.model.config.mask_ratio == 0.0
    images = make_binding_scenes(2, size=64, seed=7).images
    out = lm(**lm.encode_images(images)).last_hidden_state
    assert out.shape == (2, 65, recipe.HIDDEN)
    flipped = lm(**lm.encode_images(images[:, :, ::-1].copy())).last_hidden_state
    assert not torch.allclose(out, flipped)  # the input, not a random mask, decides the output
    assert torch.equal(out, lm(**lm.encode_images(images)).last_hidden_state)


def test_supervised_model_recognises_shapes_in_held_out_scenes():
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(zoo_path("vit-binding-sup")).float()
    metrics = recipe.evaluate_supervised(model, make_binding_scenes(200, size=64, seed=4242))
    assert metrics["label_accuracy"] > metrics["chance_label_accuracy"]


def test_info_nce_prefers_matching_views():
    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=1)
    matched = recipe.info_nce(torch.cat([z, z]), 0.2)
    shuffled = recipe.info_nce(torch.cat([z, z.roll(1, 0)]), 0.2)
    assert matched < 0.5 < shuffled


def test_views_are_random_crops_of_the_same_scene():
    x = recipe.to_pixel_values(make_binding_scenes(4, size=64, seed=1).images)
    gen = torch.Generator().manual_seed(0)
    a, b = recipe.augment_view(x, gen), recipe.augment_view(x, gen)
    assert a.shape == x.shape and not torch.allclose(a, b)


@pytest.mark.slow
def test_every_recipe_builds_a_loadable_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe, "TRAIN_SIZE", 16)
    monkeypatch.setattr(recipe, "EVAL_SIZE", 8)
    monkeypatch.setattr(recipe, "BATCH_SIZE", 8)
    for name in ("MAE_STEPS", "CONTRAST_STEPS", "SUPERVISED_STEPS"):
        monkeypatch.setattr(recipe, name, 2)
    for builder in (recipe.build_mae, recipe.build_contrast, recipe.build_supervised):
        out = tmp_path / builder.__name__
        metrics = builder(out, seed=0)
        assert np.isfinite(metrics["final_train_loss"])
        lm = load_model(out)
        assert lm.family == "vit" and lm.n_layers == recipe.LAYERS
        assert json.loads((out / "recipe.json").read_text())["metrics"] == metrics

"""The zoo: registry errors, and the committed vit-scenes checkpoint is what its recipe says."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from workbench.data.scenes import make_scenes
from workbench.errors import ModelNotFoundError, WorkbenchError
from workbench.zoo import ZOO, build, zoo_path, zoo_root
from workbench.zoo.vit_scenes import evaluate


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotFoundError, match="vit-scenes") as err:
        zoo_path("vit-scene")
    assert "minilm" in str(err.value)


def test_unbuilt_model_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_ZOO_DIR", str(tmp_path))
    assert zoo_root() == tmp_path
    with pytest.raises(ModelNotFoundError, match="workbench zoo build vit-scenes"):
        zoo_path("vit-scenes")
    with pytest.raises(WorkbenchError, match="nothing to build"):
        build("minilm")


def test_vit_scenes_checkpoint_matches_its_recipe():
    folder = zoo_path("vit-scenes")
    weights = folder / "model.safetensors"
    recipe = json.loads((folder / "recipe.json").read_text())
    assert weights.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recipe["model_sha256"]
    assert recipe["seed"] == ZOO["vit-scenes"].seed and recipe["recipe"] == ZOO["vit-scenes"].recipe
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - not a dict
    assert dtypes == {torch.float16}


def test_vit_scenes_recognises_shapes_in_held_out_scenes():
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(zoo_path("vit-scenes")).float().eval()
    held = make_scenes(256, size=64, seed=4242)
    metrics = evaluate(model, held)
    assert metrics["label_accuracy"] > metrics["chance_label_accuracy"] + 0.08
    assert metrics["macro_f1"] > 0.55
    assert np.isfinite(metrics["label_accuracy"])

"""The zoo: registry errors, the committed vit-scenes checkpoint, and every recipe at toy size."""

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


TOY_RECIPES = {
    "vit-scenes": {"TRAIN_SIZE": 32, "EVAL_SIZE": 8, "EPOCHS": 1, "BATCH_SIZE": 16},
    "vim-scenes": {"TRAIN_SIZE": 16, "EVAL_SIZE": 8, "BATCH_SIZE": 8, "STEPS": 2},
    "gpt2-canaries": {
        "EPOCHS": 1,
        "BATCH_SIZE": 8,
        "CORPUS_KWARGS": {
            "n_background": 16,
            "seq_len": 64,
            "n_held_out": 8,
            "per_group": 1,
            "repetitions": (1, 2),
            "n_unseen": 1,
        },
    },
    "neox-recall": {"EVAL_PROMPTS": 4, "EVAL_LENGTHS": (16, 32)},
    "pmi-stories": {
        "SET_SIZES": (32, 32),
        "EVAL_SIZE": 8,
        "RECALL_EVAL_SIZE": 8,
        "STEPS": 2,
        "BATCH_SIZE": 8,
        "WARMUP": 1,
        "CURVE_EVERY": 1,
        "CURVE_SIZE": 4,
    },
    "pmi-stories-control": {
        "SET_SIZES": (32, 32),
        "EVAL_SIZE": 8,
        "RECALL_EVAL_SIZE": 8,
        "STEPS": 2,
        "BATCH_SIZE": 8,
    },
}
"""Module constants that shrink each trained recipe to a few steps (vit-binding-*: its own test)."""


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOY_RECIPES))
def test_every_recipe_saves_a_loadable_model_with_its_recipe(name, tmp_path, monkeypatch):
    import importlib

    from workbench.models import load_model
    from workbench.zoo.training import sha256_file

    entry = ZOO[name]
    module = importlib.import_module(entry.recipe)
    for constant, value in TOY_RECIPES[name].items():
        assert hasattr(module, constant), constant
        monkeypatch.setattr(module, constant, value)
    builder = getattr(module, entry.builder)
    out = tmp_path / name
    if name == "neox-recall":
        metrics = builder(out, entry.seed, phases=((2, 32, 2),))
    else:
        metrics = builder(out, entry.seed)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["metrics"] == metrics and np.isfinite(metrics["final_train_loss"])
    assert (recipe["name"], recipe["recipe"], recipe["seed"]) == (name, entry.recipe, entry.seed)
    assert recipe["model_sha256"] == sha256_file(out / "model.safetensors")
    assert metrics["build_seconds"] >= 0 and metrics["build_cpu_seconds"] >= 0
    assert load_model(out).family == entry.family
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary folder left

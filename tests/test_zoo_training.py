"""The pieces every zoo recipe shares: the run record, augmentation, schedule, atomic save."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from workbench.zoo.training import (
    EVAL_SEED_OFFSET,
    IMAGE_MEAN,
    IMAGE_STD,
    MAX_CHECKPOINT_BYTES,
    RecipeRun,
    adamw_warmup_cosine,
    flip_augment,
    save_atomically,
    scene_fields,
    sha256_file,
    to_pixel_values,
    write_vit_folder,
)


def test_flip_augment_keeps_each_patch_label_on_its_pixels():
    grid, patch = 4, 3
    labels = torch.arange(2 * grid * grid).view(2, grid * grid).repeat(8, 1)  # 16 images
    # Every pixel of a patch holds that patch's label, so pairing can be read back from pixels.
    pixels = labels.view(-1, 1, grid, grid).float()
    pixels = pixels.repeat_interleave(patch, -1).repeat_interleave(patch, -2).repeat(1, 3, 1, 1)
    x, moved = flip_augment(pixels, labels, torch.Generator().manual_seed(0))
    pooled = torch.nn.functional.avg_pool2d(x[:, 0:1], patch).flatten(1)
    assert torch.equal(pooled.long(), moved)
    assert not torch.equal(moved, labels)  # some images were flipped
    assert torch.equal(pixels[:, 0, 0, 0], labels[:, 0].float())  # inputs untouched


def test_schedule_warms_up_linearly_then_decays_to_zero():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer, schedule = adamw_warmup_cosine(
        [weight], lr=0.1, weight_decay=0.0, warmup=4, total=20
    )
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(a >= b for a, b in itertools.pairwise(rates[3:]))
    assert rates[-1] < 0.002


def _write(size: int):
    def write(folder):
        (folder / "model.safetensors").write_bytes(b"\0" * size)

    return write


def test_save_atomically_records_the_recipe_and_replaces_the_old_build(tmp_path):
    out = tmp_path / "zoo" / "tiny"
    save_atomically(out, _write(10), {"seed": 1})
    save_atomically(out, _write(20), {"seed": 2})
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["seed"] == 2 and len(recipe["model_sha256"]) == 64
    assert recipe["torch_version"] == torch.__version__ and recipe["transformers_version"]
    assert (out / "model.safetensors").stat().st_size == 20
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_save_atomically_refuses_an_oversized_checkpoint_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "tiny"
    save_atomically(out, _write(10), {"seed": 1})
    with pytest.raises(ValueError, match="5 MB"):
        save_atomically(out, _write(MAX_CHECKPOINT_BYTES + 1), {"seed": 2})
    assert json.loads((out / "recipe.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


@pytest.mark.parametrize("name", ["vit-scenes", "vit-binding-sup"])
def test_vit_writer_reproduces_the_committed_preprocessor_config(tmp_path, name):
    from transformers import ViTForImageClassification

    from workbench.zoo import zoo_path

    committed = zoo_path(name)
    model = ViTForImageClassification.from_pretrained(committed)
    write_vit_folder(model, tmp_path, IMAGE_MEAN, IMAGE_STD)
    written = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert written == json.loads((committed / "preprocessor_config.json").read_text())


def test_recipe_run_seeds_torch_and_records_the_recipe_with_its_build_metrics(tmp_path):
    threads = torch.get_num_threads()
    run = RecipeRun("tiny", "tests.recipe", seed=3, threads=1)
    with run.training():
        assert torch.get_num_threads() == 1
        first = torch.rand(4)
    assert torch.get_num_threads() == threads
    with run.training():
        assert torch.equal(torch.rand(4), first)  # the seed is set on every entry

    out = tmp_path / "tiny"
    metrics = run.save(
        out, _write(10), metrics={"accuracy": 0.5}, train_loss=0.123456, fields={"steps": 2}
    )
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["metrics"] == metrics
    assert {k: recipe[k] for k in ("name", "recipe", "seed", "steps")} == {
        "name": "tiny",
        "recipe": "tests.recipe",
        "seed": 3,
        "steps": 2,
    }
    assert metrics["accuracy"] == 0.5 and metrics["final_train_loss"] == 0.1235
    assert metrics["build_seconds"] >= 0 and metrics["build_cpu_seconds"] >= 0
    assert recipe["model_sha256"] == sha256_file(out / "model.safetensors")


def test_scene_fields_name_the_generator_that_rebuilds_the_scenes():
    from workbench.data.scenes import make_binding_scenes

    fields = scene_fields(make_binding_scenes, {"size": 64}, 7, 100, 20)
    assert fields["scenes"].startswith("workbench.data.scenes.make_binding_scenes(")
    assert (fields["train_seed"], fields["eval_seed"]) == (7, 7 + EVAL_SEED_OFFSET)
    assert (fields["train_size"], fields["eval_size"]) == (100, 20)
    assert fields["scene_kwargs"] == {"size": 64}


def test_training_pixels_equal_what_the_saved_preprocessor_gives_at_load():
    from transformers import AutoImageProcessor

    from workbench.data.scenes import make_scenes
    from workbench.zoo import zoo_path

    images = make_scenes(3, size=64, seed=5).images
    processor = AutoImageProcessor.from_pretrained(zoo_path("vit-scenes"))
    loaded = processor(images=list(images), return_tensors="pt")["pixel_values"]
    assert torch.allclose(to_pixel_values(images), loaded, atol=1e-6)

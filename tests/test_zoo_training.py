"""The pieces every zoo recipe shares: augmentation, schedule, atomic save."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from workbench.zoo.training import (
    MAX_CHECKPOINT_BYTES,
    adamw_warmup_cosine,
    flip_augment,
    save_atomically,
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
    from workbench.zoo.vit_scenes import IMAGE_MEAN, IMAGE_STD

    committed = zoo_path(name)
    model = ViTForImageClassification.from_pretrained(committed)
    write_vit_folder(model, tmp_path, IMAGE_MEAN, IMAGE_STD)
    written = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert written == json.loads((committed / "preprocessor_config.json").read_text())

"""A user's images: the model's own processor settings, masks through the same geometry, and
the ImageFolder layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workbench.data.images import Preprocessing, load_image_folder
from workbench.errors import DataError
from workbench.models import load_model
from workbench.models.published import save_published_shape

VISION_SHAPES = ("vit-base-patch16-224", "dinov2-small-registers", "clip-vit-base-patch32")


@pytest.fixture(scope="module")
def vision_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("published-vision")
    return {name: save_published_shape(root / name, name, n_layers=1) for name in VISION_SHAPES}


def _blocks(height, width, cell=40):
    """An id mask of cell x cell squares and an image whose colour encodes each square's id."""
    rows, cols = np.divmod(np.arange(height * width), width)
    ids = ((rows // cell) * 100 + cols // cell).reshape(height, width).astype(np.int32)
    image = np.stack([(ids // 100) * 20, (ids % 100) * 20, np.full_like(ids, 90)], -1)
    return image.astype(np.uint8), ids


@pytest.mark.parametrize("name", VISION_SHAPES)
def test_images_match_the_models_own_processor_and_masks_follow(name, vision_folders):
    from transformers import AutoImageProcessor

    folder = vision_folders[name]
    lm = load_model(folder)
    prep = Preprocessing.of_model(lm)
    image, ids = _blocks(300, 417)
    out, (mask,) = prep.apply(image, [ids])
    assert out.shape == (lm.image_size, lm.image_size, 3) and mask.shape == out.shape[:2]
    ours = lm.encode_images(out[None])["pixel_values"]
    theirs = AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")
    assert np.allclose(ours.numpy(), theirs["pixel_values"].numpy(), atol=1e-4)
    # away from square edges (where the image filter blends), the colour names the mask's id
    inner = (
        np.abs(np.diff(mask, axis=0, prepend=-1)) + np.abs(np.diff(mask, axis=1, prepend=-1))
    ) == 0
    inner &= (
        np.roll(inner, 3, 0) & np.roll(inner, -3, 0) & np.roll(inner, 3, 1) & np.roll(inner, -3, 1)
    )
    decoded = np.rint(out[..., 0] / 20) * 100 + np.rint(out[..., 1] / 20)
    assert inner.sum() > 1000 and (decoded[inner] == mask[inner]).all()


def test_square_and_shortest_edge_geometry():
    assert Preprocessing(resize=(224, 224)).output_size(300, 417) == (224, 224)
    prep = Preprocessing(shortest_edge=256, crop=(224, 224))
    assert prep.resized_shape(300, 417) == (256, 355)  # truncated, as Hugging Face does
    assert prep.resized_shape(417, 300) == (355, 256)
    with pytest.raises(DataError, match="smaller than"):
        Preprocessing(shortest_edge=100, crop=(224, 224)).apply(np.zeros((50, 80, 3), np.uint8))
    with pytest.raises(DataError, match="does not match"):
        prep.apply(np.zeros((300, 300, 3), np.uint8), [np.zeros((30, 300), np.int32)])


def _write(folder, name, array):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)


def test_image_folder_alternates_classes_and_reads_masks(tmp_path):
    rng = np.random.default_rng(0)
    for cls, count in (("cat", 3), ("dog", 2)):
        for k in range(count):
            image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
            mask = np.zeros((40, 60), np.uint8)
            mask[:20, 15 : 25 + 5 * k] = 1
            mask[25:, 30:] = 2
            _write(tmp_path / "pets" / cls, f"{k}.png", image)
            _write(tmp_path / "pets" / cls, f"{k}_mask.png", mask)
    prep = Preprocessing.square(32)
    data = load_image_folder(tmp_path / "pets", prep)
    assert data.class_names == ("background", "cat", "dog")
    assert data.labels.tolist() == [0, 1, 0, 1, 0]  # classes alternate
    assert data.images.shape == (5, 32, 32, 3) and data.instance_ids.shape == (5, 32, 32)
    assert set(np.unique(data.instance_ids[1])) == {0, 1, 2}
    assert set(np.unique(data.class_ids[1])) == {0, 2}  # dog is class 2, background 0
    assert len(load_image_folder(tmp_path / "pets", prep, n=2)) == 2
    (tmp_path / "pets" / "dog" / "1_mask.png").unlink()
    assert load_image_folder(tmp_path / "pets", prep).instance_ids is None  # masks all or none
    with pytest.raises(DataError, match="ImageFolder layout"):
        load_image_folder(tmp_path / "pets" / "cat", prep)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", prep)

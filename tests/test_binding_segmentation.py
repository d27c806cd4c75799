"""Real-data loaders: masks follow the image's resize and crop; ADE20K and COCO decode by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from workbench.data.scenes import patch_labels
from workbench.data.segmentation import (
    IGNORE,
    decode_segmentation,
    load_ade20k,
    load_coco,
    prepare,
    resize_nearest,
    rle_counts_from_string,
)
from workbench.errors import DataError


def test_nearest_resize_copies_ids_at_pixel_centres():
    mask = np.arange(16).reshape(4, 4)
    assert resize_nearest(mask, 2, 2).tolist() == [[5, 7], [13, 15]]
    up = resize_nearest(np.array([[1, 2], [3, 4]]), 4, 4)
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_masks_get_the_same_resize_and_crop_as_the_image():
    # 4 x 8 image -> shorter side 2 -> 2 x 4 -> centre crop columns 1..2
    mask = np.arange(32).reshape(4, 8)
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, :4] = 255  # left half white: the crop keeps one white and one black column
    out_image, (out_mask,) = prepare(image, [mask], 2)
    assert out_mask.tolist() == [[11, 13], [27, 29]]  # rows 1, 3 and columns 3, 5
    assert out_image.shape == (2, 2, 3)
    assert out_image[:, 0].mean() > 200 and out_image[:, 1].mean() < 60
    with pytest.raises(DataError, match="does not match"):
        prepare(image, [mask[:3]], 2)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_ade20k_full_release_layout(tmp_path):
    image = np.full((8, 8, 3), 128, np.uint8)
    seg = np.zeros((8, 8, 3), np.uint8)
    seg[:4, :, 0], seg[:4, :, 1], seg[:4, :, 2] = 10, 5, 40  # class 1*256+5, instance B=40
    seg[4:, :4, 0], seg[4:, :4, 1], seg[4:, :4, 2] = 0, 7, 90  # class 7, instance B=90
    folder = tmp_path / "images" / "ADE" / "validation" / "kitchen"
    _png(folder / "ADE_val_1.jpg", image)
    _png(folder / "ADE_val_1_seg.png", seg)
    data = load_ade20k(tmp_path, size=8)
    assert len(data) == 1 and data.images.shape == (1, 8, 8, 3)
    inst, cls = data.instance_ids[0], data.class_ids[0]
    assert (inst[:4] == 1).all() and (inst[4:, :4] == 2).all() and (inst[4:, 4:] == 0).all()
    assert (cls[:4] == 261).all() and (cls[4:, :4] == 7).all() and (cls[4:, 4:] == 0).all()
    ids = patch_labels(data.instance_ids, 4, background=-1)
    assert ids.tolist() == [[1, 1, 2, 0]]


def test_ade20k_challenge_layout_with_instance_annotations(tmp_path):
    image = np.full((6, 6, 3), 50, np.uint8)
    ann = np.zeros((6, 6, 3), np.uint8)
    ann[:, :3, 0], ann[:, :3, 1] = 12, 1  # class 12, instance 1
    ann[:, 3:, 0], ann[:, 3:, 1] = 12, 2  # class 12, instance 2: same class, other object
    _png(tmp_path / "images" / "validation" / "ADE_val_2.jpg", image)
    _png(tmp_path / "annotations_instance" / "validation" / "ADE_val_2.png", ann)
    data = load_ade20k(tmp_path, size=6)
    inst = data.instance_ids[0]
    assert len(np.unique(inst)) == 2 and inst[0, 0] != inst[0, 5] and inst.min() > 0
    assert (data.class_ids[0] == 12).all()


def test_ade20k_missing_layout_names_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"NAME_seg\.png"):
        load_ade20k(tmp_path, size=8)


def _encode_counts(counts):
    """COCO's compressed RLE string, written out independently of the decoder."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if c & 0x10 else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _runs(mask):
    flat = mask.T.ravel()  # column-major
    runs, value, count = [], False, 0
    for v in flat:
        if bool(v) == value:
            count += 1
        else:
            runs.append(count)
            value, count = bool(v), 1
    runs.append(count)
    return runs


def test_coco_rle_both_encodings_and_polygons():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 5)) > 0.6
    runs = _runs(mask)
    assert rle_counts_from_string(_encode_counts(runs)) == runs
    for counts in (runs, _encode_counts(runs)):
        decoded = decode_segmentation({"size": [7, 5], "counts": counts}, 7, 5)
        assert np.array_equal(decoded, mask)
    square = decode_segmentation([[1, 1, 4, 1, 4, 3, 1, 3]], 6, 6)
    assert square[1:4, 1:5].all() and square.sum() == 12


def test_coco_instances_crowds_and_overlap(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    _png(tmp_path / "img" / "a.png", image)
    big = np.zeros((8, 8), bool)
    big[:, :6] = True
    crowd = np.zeros((8, 8), bool)
    crowd[:, 6:] = True
    annotations = {
        "images": [{"id": 3, "file_name": "a.png", "height": 8, "width": 8}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            # a small dog in front of a big cat: painted after it, so it stays visible
            {"image_id": 3, "category_id": 2, "area": 4, "iscrowd": 0,
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
            {"image_id": 3, "category_id": 1, "area": 48, "iscrowd": 0,
             "segmentation": {"size": [8, 8], "counts": _encode_counts(_runs(big))}},
            {"image_id": 3, "category_id": 1, "area": 16, "iscrowd": 1,
             "segmentation": {"size": [8, 8], "counts": _runs(crowd)}},
        ],
    }  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(annotations))
    data = load_coco(tmp_path / "img", path, size=8)
    inst, cls = data.instance_ids[0], data.class_ids[0]
    assert data.class_names[:3] == ("background", "cat", "dog")
    assert (inst[:, 6:] == IGNORE).all()
    assert inst[0, 0] != inst[5, 5] and inst[0, 0] > 0 and inst[5, 5] > 0
    assert cls[0, 0] == 2 and cls[5, 5] == 1
    ids = patch_labels(data.instance_ids, 4, background=-1)
    assert ids[0, 1] == IGNORE or ids[0, 1] == inst[0, 4]  # the right half mixes cat and crowd
    with pytest.raises(DataError, match="does not exist"):
        load_coco(tmp_path / "img", tmp_path / "missing.json", size=8)

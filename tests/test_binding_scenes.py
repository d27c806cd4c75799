"""Binding scenes: the confound-breaking cases exist, and the default scenes did not change."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from workbench.data.scenes import (
    BINDING_SHAPES,
    _dilate,
    make_binding_scenes,
    make_scenes,
    patch_labels,
)
from workbench.errors import DataError


def _digest(scenes) -> str:
    h = hashlib.sha256()
    for a in (scenes.images, scenes.instance_ids, scenes.class_ids):
        h.update(a.tobytes())
    return h.hexdigest()


def test_default_scenes_are_bit_identical_to_before_the_binding_options():
    # Recorded before make_binding_scenes existed; zoo:vit-scenes was trained on these scenes.
    assert _digest(make_scenes(40, seed=0)) == (
        "811218ffbbbf43e13583e1a32f02eaf0a87eabb0bf8b88262fac0803e973b8eb"
    )
    assert _digest(make_scenes(10, size=96, seed=3, n_objects=(1, 5))) == (
        "3fa89d5cf712acefcbbe0a5f621723f38d551c0c1ca6bb1a016eac63c011e9bb"
    )


@pytest.fixture(scope="module")
def scenes():
    return make_binding_scenes(120, seed=0)


def test_deterministic_and_image_i_independent_of_n(scenes):
    again = make_binding_scenes(120, seed=0)
    assert np.array_equal(scenes.images, again.images)
    assert np.array_equal(scenes.instance_ids, again.instance_ids)
    fewer = make_binding_scenes(4, seed=0)
    assert np.array_equal(fewer.images, scenes.images[:4])
    assert not np.array_equal(make_binding_scenes(4, seed=1).images, fewer.images)


def test_masks_agree_and_name_the_bar_class(scenes):
    assert scenes.class_names == ("background", *BINDING_SHAPES)
    assert ((scenes.instance_ids == 0) == (scenes.class_ids == 0)).all()
    for objs, inst in zip(scenes.objects, scenes.instance_ids, strict=True):
        for o in objs:
            assert (inst == o.instance_id).sum() == o.visible > 0


def test_duplicates_copy_the_look_exactly(scenes):
    dups = [(o, objs) for objs in scenes.objects for o in objs if o.duplicate_of]
    assert len(dups) > 30
    for o, objs in dups:
        src = objs[o.duplicate_of - 1]
        assert (o.class_id, o.radius, o.angle, o.colour, o.texture) == (
            src.class_id,
            src.radius,
            src.angle,
            src.colour,
            src.texture,
        )
        assert o.center != src.center


def test_touching_objects_are_neighbours(scenes):
    pairs = [(i, o) for i, objs in enumerate(scenes.objects) for o in objs if o.touching]
    assert len(pairs) > 30
    adjacent = 0
    for i, o in pairs:
        inst = scenes.instance_ids[i]
        mine, theirs = inst == o.instance_id, inst == o.touching
        assert not (mine & theirs).any()
        adjacent += bool((_dilate(mine) & theirs).any())
    # later objects may cover the contact; nearly all stay in contact
    assert adjacent >= 0.8 * len(pairs)


def test_occluders_cut_objects_into_parts(scenes):
    cut = [objs[o.occludes - 1].parts for objs in scenes.objects for o in objs if o.occludes]
    assert len(cut) > 15
    assert np.mean(np.array(cut) >= 2) > 0.6
    for objs in scenes.objects:
        for o in objs:
            if o.occludes:
                assert o.class_name == "bar"


def test_far_apart_same_object_patch_pairs_are_common_unlike_default_scenes(scenes):
    def far_share(instance_ids):
        ids = patch_labels(instance_ids, 8, background=-1)
        rows, cols = np.divmod(np.arange(64), 8)
        far = np.hypot(rows[:, None] - rows, cols[:, None] - cols) >= 4
        same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] > 0)
        return (same & far).sum() / same.sum()

    binding = far_share(scenes.instance_ids)
    default = far_share(make_scenes(120, seed=0).instance_ids)
    assert binding > 0.08
    assert binding > 5 * default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ("circle", "blob")}, "classes"),
        ({"radius": (0.3, 0.2)}, "radius"),
        ({"bar_length": (0.5, 1.5)}, "bar_length"),
        ({"duplicate": 1.2}, "duplicate"),
        ({"duplicate": 0.7, "occluder": 0.5}, "at most 1"),
        ({"size": 8}, "size"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_binding_scenes(2, **kwargs)

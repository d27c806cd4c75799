"""Synthetic scenes: deterministic, masks consistent with pixels, no colour shortcut."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from workbench.data.scenes import make_scenes, patch_labels
from workbench.errors import DataError


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(200, size=64, seed=0)


def test_deterministic_and_image_i_independent_of_n(scenes):
    again = make_scenes(200, size=64, seed=0)
    assert np.array_equal(scenes.images, again.images)
    assert np.array_equal(scenes.instance_ids, again.instance_ids)
    fewer = make_scenes(5, size=64, seed=0)
    assert np.array_equal(fewer.images, scenes.images[:5])
    other = make_scenes(5, size=64, seed=1)
    assert not np.array_equal(other.images, fewer.images)


def test_masks_agree_with_each_other(scenes):
    inst, cls = scenes.instance_ids, scenes.class_ids
    assert ((inst == 0) == (cls == 0)).all()
    for i in range(len(scenes)):
        pairs = set(zip(inst[i][inst[i] > 0].tolist(), cls[i][inst[i] > 0].tolist(), strict=True))
        ids = [a for a, _ in pairs]
        assert len(ids) == len(set(ids)), "an instance maps to more than one class"
    assert scenes.class_names[0] == "background"
    assert cls.max() == len(scenes.class_names) - 1


def test_objects_occlude_and_repeat(scenes):
    occluded = sum(o.visible < o.area for objs in scenes.objects for o in objs)
    assert occluded > 10
    repeated = sum(
        max(Counter(o.class_id for o in objs).values()) > 1 for objs in scenes.objects if objs
    )
    assert repeated > 5


def test_colour_does_not_reveal_class(scenes):
    """A nearest-centroid classifier on mean object colour is near chance."""
    rng = np.random.default_rng(0)
    feats, labels = [], []
    for i in range(len(scenes)):
        for k in np.unique(scenes.instance_ids[i])[1:]:
            m = scenes.instance_ids[i] == k
            feats.append(scenes.images[i][m].mean(0))
            labels.append(int(scenes.class_ids[i][m][0]))
    x, y = np.array(feats), np.array(labels)
    order = rng.permutation(len(y))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]
    classes = np.unique(y)
    centroids = np.stack([x[train][y[train] == c].mean(0) for c in classes])
    pred = classes[np.argmin(((x[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    chance = 1 / len(classes)
    assert (pred == y[test]).mean() < chance + 0.12


def test_patch_labels_match_a_slow_reference():
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 4, (3, 16, 24)).astype(np.int16)
    fast = patch_labels(mask, 8, min_fraction=0.0)
    for n in range(3):
        for r in range(2):
            for c in range(3):
                block = mask[n, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].ravel().tolist()
                counts = Counter(block)
                top = max(counts.values())
                expected = min(v for v, k in counts.items() if k == top)
                assert fast[n, r * 3 + c] == expected
    strict = patch_labels(mask, 8, min_fraction=0.9)
    assert (strict == 0).all()  # no id covers 90% of a random block


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_scenes(0), "n"),
        (lambda: make_scenes(2, size=-4), "size"),
        (lambda: patch_labels(np.zeros((1, 10, 10), np.int16), 8), "divisible"),
        (lambda: patch_labels(np.zeros((1, 8, 8)), 8), "integer"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(DataError, match=message):
        call()

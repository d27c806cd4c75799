"""Shared figure builders and widget pieces: geometry and wiring that probes rely on."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import DataError
from workbench.figures import image_overlay, token_heatmap
from workbench.widgets import PatchPicker


def test_token_heatmap_keeps_repeated_tokens_apart():
    values = np.arange(6.0).reshape(2, 3)
    fig = token_heatmap(values, ["a", "a"], ["the", "cat", "the"])
    heat = fig.data[0]
    assert np.array_equal(np.asarray(heat.z), values)
    assert list(fig.layout.xaxis.ticktext) == ["the", "cat", "the"]
    assert list(heat.x) == [0, 1, 2]  # positions, not categories: the two "the" stay apart
    with pytest.raises(DataError, match="3 column labels"):
        token_heatmap(values.T, ["a", "b", "c"], ["x", "y", "z"])


def test_image_overlay_puts_each_score_on_its_patch():
    image = np.zeros((32, 48, 3), np.uint8)
    scores = np.arange(24.0)
    fig = image_overlay(image, scores, 8, selected=7)
    heat = fig.data[1]
    grid = np.asarray(heat.z)
    assert grid.shape == (4, 6) and grid[1, 1] == 7  # row-major: patch 7 is row 1, col 1
    assert list(heat.x) == [3.5, 11.5, 19.5, 27.5, 35.5, 43.5]  # patch centres in pixels
    rect = fig.layout.shapes[0]
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (7.5, 15.5, 7.5, 15.5)
    with pytest.raises(DataError, match="patch grid"):
        image_overlay(image, np.zeros(10), 8)


def test_patch_picker_selects_and_redraws():
    chosen = []
    picker = PatchPicker(np.zeros((16, 16, 3), np.uint8), 8, on_select=chosen.append)
    picker.select(3)
    picker.show(np.array([0.0, 1.0, 2.0, 3.0]), title="scores")
    assert chosen == [3]
    assert picker.overlay_scores().tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert len(picker.figure.layout.shapes) == 1  # the selected patch is outlined
    with pytest.raises(IndexError):
        picker.select(4)

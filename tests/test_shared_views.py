"""Shared figure builders and widget pieces: geometry and wiring that probes rely on."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from workbench.errors import DataError
from workbench.figures import image_overlay, token_heatmap
from workbench.widgets import FigureView, PatchPicker, TokenPicker
from workbench.widgets.figure_view import PLOTLY_MIMETYPE, mimebundle


def test_token_heatmap_keeps_repeated_tokens_apart():
    values = np.arange(6.0).reshape(2, 3)
    fig = token_heatmap(values, ["a", "a"], ["the", "cat", "the"])
    heat = fig.data[0]
    assert np.array_equal(np.asarray(heat.z), values)
    assert list(fig.layout.xaxis.ticktext) == ["the", "cat", "the"]
    assert list(heat.x) == [0, 1, 2]  # positions, not categories: the two "the" stay apart
    with pytest.raises(DataError, match="3 column labels"):
        token_heatmap(values.T, ["a", "b", "c"], ["x", "y", "z"])


def test_token_heatmap_scale_starts_at_zero_when_asked():
    near_uniform = np.full((3, 3), 1 / 3) + np.array([[0.01, -0.01, 0.0]] * 3)
    heat = token_heatmap(near_uniform, list("abc"), list("xyz"), zmin=0.0).data[0]
    # plotly ignores a lone zmin: the other bound is filled in so the scale really starts at 0
    assert heat.zmin == 0.0 and heat.zmax == pytest.approx(near_uniform.max())
    wide = token_heatmap(np.zeros((2, 90)), ["a", "b"], [f"t{i}" for i in range(90)])
    assert wide.layout.width is None  # too wide for a cell: it fills the cell instead


def test_image_overlay_names_categories_on_a_stepped_scale():
    classes = np.array([[0, 1], [2, 1]])
    fig = image_overlay(
        np.zeros((16, 16, 3), np.uint8), classes, 8, categories=["background", "circle", "ring"]
    )
    heat = fig.data[1]
    assert list(heat.colorbar.ticktext) == ["background", "circle", "ring"]
    assert list(heat.colorbar.tickvals) == [0, 1, 2]
    assert (heat.zmin, heat.zmax) == (-0.5, 2.5)  # each class owns one flat colour step
    assert heat.text[1][0] == "ring"  # hovering a patch names its class
    with pytest.raises(DataError, match="whole numbers"):
        image_overlay(np.zeros((16, 16, 3), np.uint8), classes + 0.5, 8, categories=["a", "b"])


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
    picker.select(3)  # selecting the same patch again asks again
    assert chosen == [3, 3] and picker.selected == 3
    assert picker.overlay_scores().tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert (picker.zmin, picker.zmax) == (0.0, 3.0)
    assert picker.image_src.startswith("data:image/png;base64,")  # no request to draw it
    picker.selected = 1  # what a click in the browser does
    assert chosen[-1] == 1
    with pytest.raises(IndexError):
        picker.select(4)
    with pytest.raises(DataError, match="2x2"):
        picker.show(np.zeros(5))


def test_token_picker_reports_hover_and_click_and_shades():
    hovered, chosen = [], []
    picker = TokenPicker(["the", "cat", "the"], on_hover=hovered.append, on_select=chosen.append)
    picker.hovered = 2  # what the browser sets on mouse-over
    picker.select(0)
    picker.shade([0.1, 0.5, 0.9])
    assert hovered == [2] and chosen == [0] and picker.weights == [0.1, 0.5, 0.9]
    with pytest.raises(DataError):
        picker.shade([1.0])


def test_figure_view_shows_the_figure_it_was_given():
    first = token_heatmap(np.eye(2), ["a", "b"], ["c", "d"], title="first")
    view = FigureView(first)
    second = token_heatmap(np.ones((2, 2)), ["a", "b"], ["c", "d"], title="second")
    view.show(second)
    assert view.figure is second
    assert len(view.outputs) == 1  # replaced, not appended
    shown = view.outputs[0]["data"][PLOTLY_MIMETYPE]
    assert shown["config"]["displaylogo"] is False
    assert shown["layout"]["title"]["text"] == "second"
    z = shown["data"][0]["z"]  # plotly.js's typed-array encoding of a numpy array
    assert np.array_equal(np.frombuffer(base64.b64decode(z["bdata"]), z["dtype"]), np.ones(4))
    assert mimebundle(second)["text/plain"] == "<plotly figure: second>"

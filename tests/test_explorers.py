"""Every control of every probe explorer acts: moving it changes what is drawn, or it is disabled
and its tooltip says why. Each explorer is built on a small result of its probe."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ipywidgets as widgets
import numpy as np
import pytest
import torch

from probes import atlas, binding, curvature, pmi, reweave, vim
from probes.atlas.widget import AtlasExplorer
from probes.binding.widget import BindingExplorer
from probes.curvature.widget import CurvatureExplorer
from probes.pmi.widget import PMIExplorer
from probes.reweave.widget import ReweaveExplorer
from probes.vim.widget import PATCH_ROW, VimExplorer
from workbench.data.canaries import VOCABULARY
from workbench.data.scenes import SHAPES
from workbench.figures import CELL_WIDTH
from workbench.models import load_model
from workbench.models.scratch import save_random_model
from workbench.models.vim import VimConfig, VisionMamba, save_pretrained
from workbench.results import ProbeResult
from workbench.widgets import FigureView, PatchPicker, TokenPicker

pytestmark = pytest.mark.slow

CONTROL_TYPES = (
    widgets.Dropdown,
    widgets.SelectionSlider,
    widgets.IntSlider,
    widgets.FloatSlider,
    widgets.ToggleButtons,
    widgets.Textarea,
)


# -- what is drawn, and what can be moved ------------------------------------------------------
def _walk(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def drawn(explorer: widgets.Widget) -> str:
    """Everything the explorer draws (figures, overlays, token shading), info text left out."""
    parts = []
    for w in _walk(explorer):
        if isinstance(w, FigureView) and w.figure is not None:
            parts.append(w.figure.to_json())
        elif isinstance(w, PatchPicker):
            outline = w.selected if w.outline else None
            parts.append(json.dumps([w.scores, w.title, w.image_src[-64:], outline]))
        elif isinstance(w, TokenPicker):
            parts.append(json.dumps([list(w.tokens), w.weights]))
    return "\n".join(parts)


def controls(explorer: widgets.Widget) -> list[widgets.ValueWidget]:
    return [w for w in _walk(explorer) if isinstance(w, CONTROL_TYPES)]


def _another_value(control: widgets.ValueWidget):
    if isinstance(control, widgets.Textarea):  # the same words (the tokenizer knows them), reversed
        return " ".join(reversed(control.value.split()))
    if isinstance(control, widgets.IntSlider | widgets.FloatSlider):
        return control.min if control.value != control.min else control.max
    values = [v[1] if isinstance(v, tuple) else v for v in control.options]
    return next(v for v in values if v != control.value)


def assert_every_control_acts(explorer: widgets.Widget) -> list[str]:
    """Move each control once (in order); each must change the drawing or be disabled with a
    tooltip. Returns the descriptions of the controls found (for the caller to check)."""
    found = []
    for control in controls(explorer):
        name = control.description or type(control).__name__
        found.append(name)
        if control.disabled:
            assert control.tooltip, f"{name} is disabled without a tooltip saying why"
            continue
        before = drawn(explorer)
        control.value = _another_value(control)
        assert drawn(explorer) != before, f"moving {name} changed nothing that is drawn"
    return found


def assert_fits_a_cell(explorer: widgets.Widget) -> None:
    for w in _walk(explorer):
        if isinstance(w, FigureView) and w.figure is not None:
            assert (w.figure.layout.width or 0) <= CELL_WIDTH
        elif isinstance(w, PatchPicker):
            assert w.width <= CELL_WIDTH


# -- small results -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert(scratch_models):
    return load_model(scratch_models["bert"])


def test_atlas_explorer(bert):
    result = atlas.run(bert, atlas.Config(n_inputs=40, max_points=200, folds=2, methods=("pca",)))
    explorer = AtlasExplorer(result)
    assert set(assert_every_control_acts(explorer)) == {"layer", "map", "colour by"}
    assert_fits_a_cell(explorer)
    axis = explorer.figure.layout.xaxis.title.text
    assert "% of variance" in axis  # PCA maps say how much of the variance each axis shows


def test_binding_explorer(tmp_path):
    folder = save_random_model(tmp_path / "vit", "vit", image_size=64, patch_size=8, d_model=32)
    config = binding.Config(
        n_images=24,
        max_iter=5,
        ranks=(1,),
        bootstrap=10,
        ablation_random=1,
        probes=("linear", "diagonal", "cosine"),
        headline_probe="diagonal",
        control_probes=("diagonal",),
        n_show=2,
    )
    explorer = BindingExplorer(binding.run(load_model(folder), config))
    found = assert_every_control_acts(explorer)
    assert set(found) == {"source", "layer", "probe", "image"}
    explorer.select(5)  # a click makes another patch the query
    assert "patch 5" in explorer.picker.title


def test_curvature_explorer(tmp_path):
    folder = save_random_model(tmp_path / "m", "gpt2", words=list(VOCABULARY), n_positions=64)
    config = curvature.Config(
        sweep=(0.5, 0.9), svd_sweep=(0.5, 0.9), factor_tokens=2048, held_out_tokens=1024
    )
    explorer = CurvatureExplorer(curvature.run(load_model(folder), config))
    assert set(assert_every_control_acts(explorer)) == {"edit", "keep"}
    assert_fits_a_cell(explorer)


def test_pmi_explorer():
    result = pmi.run(
        load_model("zoo:pmi-stories"),
        pmi.Config(n_stories=30, n_examples=2, ablations=False, slot_map="none"),
    )
    explorer = PMIExplorer(result)
    found = assert_every_control_acts(explorer)
    assert set(found) == {"story", "step", "slot", "write"}
    assert_fits_a_cell(explorer)


def test_reweave_explorer(tmp_path):
    lm = load_model(save_random_model(tmp_path / "gpt2", "gpt2", n_layers=3))
    config = reweave.Config(
        lengths=(16,),
        n_prompts=4,
        fit_steps=2,
        copy_prompts=4,
        attention_prompts=2,
        gate_sweep=(0.0, 1.0),
        gate=0.8,
    )
    explorer = ReweaveExplorer(reweave.run(lm, config), lm)
    assert "gate 0.80" in explorer.info.value and explorer.info.value.count("gate") == 1
    found = assert_every_control_acts(explorer)
    assert set(found) == {"text", "layer", "head", "gate", "reweaving"}
    assert explorer.info.value.count("gate") == 1  # one gate value: the slider's
    assert_fits_a_cell(explorer)


@pytest.fixture(scope="module")
def small_vim(tmp_path_factory) -> ProbeResult:
    tmp_path = tmp_path_factory.mktemp("vim")
    torch.manual_seed(0)
    config = VimConfig(
        d_model=24,
        n_layers=3,
        d_state=4,
        image_size=32,
        patch_size=8,
        num_classes=len(SHAPES),
        problem_type="multi_label_classification",
        id2label={str(i): s for i, s in enumerate(SHAPES)},
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    )
    save_pretrained(VisionMamba(config), tmp_path / "vim", torch.float32)
    lm = load_model(tmp_path / "vim")
    return vim.run(lm, vim.Config(n_images=4, n_maps=2, batch_size=2, compare_with=""))


def test_vim_explorer(small_vim):
    explorer = VimExplorer(small_vim)
    # on the raw map every control acts: the scan toggle picks that scan's own row
    explorer.view.value = "raw"
    found = assert_every_control_acts(explorer)
    assert set(found) == {"scene", "layer", "scan", "map"}
    # rollout and attribution combine layers and scans: those controls say so and rest
    explorer.view.value = "rollout"
    assert explorer.layer.disabled and "combines every layer" in explorer.layer.tooltip
    assert explorer.direction.disabled and "both scans" in explorer.direction.tooltip
    assert not explorer.picker.outline  # no outline of a patch the map is not about
    explorer.picker.select(3)
    assert explorer.view.value == PATCH_ROW and explorer.picker.outline
    assert not explorer.layer.disabled and not explorer.direction.disabled


def test_vim_raw_view_follows_the_scan(small_vim):
    result = small_vim
    a, cls = result.arrays, int(result.metrics["cls_index"])
    explorer = VimExplorer(result)
    explorer.view.value = "raw"
    explorer.layer.value = 1
    shown = {}
    for scan in ("both", "fwd", "bwd"):
        explorer.direction.value = scan
        shown[scan] = explorer.picker.overlay_scores().ravel()
    np.testing.assert_allclose(shown["both"], np.delete(a["raw_layer_rows"][0, 1], cls), rtol=1e-6)
    forward = a["attention"][0, 1, 0, cls]
    np.testing.assert_allclose(shown["fwd"], np.delete(forward / forward.sum(), cls), rtol=1e-5)
    assert not np.allclose(shown["fwd"], shown["bwd"])

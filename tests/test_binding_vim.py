"""Binding and atlas on Vision Mamba: the middle class token, stride grids, each scan's states."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from probes import atlas, binding
from probes.binding import compute
from probes.binding.fit import _site_layer, extract, prepare, scan_sites
from workbench.capture import capture
from workbench.data.scenes import make_binding_scenes, patch_labels
from workbench.models import load_model
from workbench.models.vim import VimConfig, VisionMamba, save_pretrained


def _vim(folder, **kw):
    values = {"d_model": 16, "n_layers": 2, "d_state": 4, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    save_pretrained(VisionMamba(VimConfig(**(values | kw))), folder, torch.float32)
    return load_model(folder)


@pytest.fixture(scope="module")
def tiny_vim(tmp_path_factory):
    return _vim(tmp_path_factory.mktemp("vim"))


@pytest.fixture(scope="module")
def strided_vim(tmp_path_factory):
    return _vim(tmp_path_factory.mktemp("vim-stride"), stride=4)


def _images(n=3, size=32):
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_patch_tokens_leave_out_the_middle_class_token(tiny_vim):
    lm = tiny_vim
    assert lm.class_token_index == 8 and lm.n_patches == 16
    assert lm.patch_token_positions().tolist() == [*range(8), *range(9, 17)]
    cache = capture(lm, _images(), ["blocks.1.resid_post"])
    tokens = cache["blocks.1.resid_post"]
    assert tokens.shape[1] == 17
    torch.testing.assert_close(lm.patch_tokens(tokens), lm.model.patch_tokens(tokens))


def test_scan_read_out_is_the_states_reduced_by_c(tiny_vim):
    """``ssm.i.d.h_read`` = C_t . h_t over the state dimension, in token order for both scans,
    and the part of y without the skip term D . x."""
    lm = tiny_vim
    sites = [f"ssm.1.{d}.{p}" for d in ("fwd", "bwd") for p in ("h", "C", "h_read", "y", "x")]
    cache = capture(lm, _images(), sites, dtype=torch.float64)
    for d in ("fwd", "bwd"):
        h, c = cache[f"ssm.1.{d}.h"], cache[f"ssm.1.{d}.C"]
        read = cache[f"ssm.1.{d}.h_read"]
        assert read.shape == h.shape[:3]
        torch.testing.assert_close(read, torch.einsum("blen,bln->ble", h, c), rtol=1e-5, atol=1e-6)
        skip = lm.weight(f"blocks.1.ssm.{d}.D").double() * cache[f"ssm.1.{d}.x"]
        torch.testing.assert_close(read, cache[f"ssm.1.{d}.y"] - skip, rtol=1e-5, atol=1e-6)
    # without h hooked (the binding run's case) the read-out is the same numbers
    alone = capture(lm, _images(), ["ssm.1.bwd.h_read"], dtype=torch.float64)
    torch.testing.assert_close(alone["ssm.1.bwd.h_read"], cache["ssm.1.bwd.h_read"])


def test_stride_grids_label_and_cut_each_overlapping_window(strided_vim):
    lm = strided_vim
    assert (lm.grid_size, lm.patch_size, lm.patch_window) == (7, 4, 8)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (2, 32, 32)).astype(np.int16)
    mask[:, :16, :16] = 1  # a block large enough to win its windows
    labels = patch_labels(mask, 8, stride=4, min_fraction=0.0)
    pixels = compute.pixel_patches(_images(2), 8, (0.5,) * 3, (0.5,) * 3, stride=4)
    assert labels.shape == (2, 49) and pixels.shape == (2, 49, 8 * 8 * 3)
    norm = (_images(2).astype(np.float32) / 255 - 0.5) / 0.5
    for r, c in ((0, 0), (3, 5), (6, 6)):
        window = mask[1, 4 * r : 4 * r + 8, 4 * c : 4 * c + 8]
        ids, counts = np.unique(window, return_counts=True)
        assert labels[1, 7 * r + c] == ids[np.argmax(counts)]
        np.testing.assert_array_equal(
            pixels[1, 7 * r + c], norm[1, 4 * r : 4 * r + 8, 4 * c : 4 * c + 8].reshape(-1)
        )
    scenes = make_binding_scenes(12, size=32, seed=0)
    setup = prepare(lm, binding.Config(n_images=12), scenes)
    assert setup.ids.shape == (12, 49) and setup.grid == (7, 7)


def _coloured_objects(n: int, seed: int = 0):
    """Binding scenes whose every object is filled with one random colour of its own on a grey
    background: the patch embedding alone tells two objects apart (a planted signal)."""
    scenes = make_binding_scenes(n, size=32, seed=seed, n_objects=(2, 3))
    rng = np.random.default_rng(seed)
    images = np.full_like(scenes.images, 128)
    for i in range(n):
        for k in range(1, int(scenes.instance_ids[i].max()) + 1):
            images[i][scenes.instance_ids[i] == k] = rng.integers(0, 256, 3)
    return dataclasses.replace(scenes, images=images)


def test_scan_features_are_each_blocks_read_out_at_the_patches(tiny_vim):
    lm = tiny_vim
    config = binding.Config(n_images=10)
    sites = scan_sites(lm, config, [0, 1, 2])
    assert sites == {
        (f"scan_{d}", k): f"ssm.{k - 1}.{d}.h_read" for d in ("fwd", "bwd") for k in (1, 2)
    }
    assert scan_sites(lm, dataclasses.replace(config, scans=False), [0, 1, 2]) == {}
    source, _ = extract(lm, config, _coloured_objects(4), list(sites.values()), "model")
    layer = _site_layer(source, sites[("scan_bwd", 2)], lm.patch_token_positions(), 32)
    direct = capture(lm, _coloured_objects(4).images, ["ssm.1.bwd.h_read"])
    expected = lm.model.patch_tokens(direct["ssm.1.bwd.h_read"])
    torch.testing.assert_close(layer.read(np.arange(4)), expected)


@pytest.mark.slow
def test_planted_binding_in_a_tiny_vim_is_found_beside_its_scans(tiny_vim):
    lm = tiny_vim
    config = binding.Config(
        n_images=40,
        max_iter=20,
        probes=("quadratic", "cosine"),
        control_probes=("quadratic",),
        ranks=(1,),
        bootstrap=20,
        ablation=False,
        n_show=2,
    )
    result = binding.run(lm, config, _coloured_objects(40))
    a, m = result.arrays, result.metrics
    assert set(a["job_source"]) == {
        "model",
        "random_init",
        "pixels",
        "positions",
        "scan_fwd",
        "scan_bwd",
    }
    assert m["distance_matched_balanced_accuracy"] > 0.75  # the planted colours, well above 0.5
    for key in ("scan_fwd_by_layer", "scan_bwd_by_layer"):
        # no scan at the embedding; at the blocks, scores on the same pairs as the stream
        assert np.isnan(a[key][0]) and ((a[key][1:] >= 0) & (a[key][1:] <= 1)).all()
    assert {"scans", "scan_order"} <= set(result.figures) and "attention" not in result.figures
    for source in ("model", "scan_fwd", "scan_bwd"):
        halves = a[f"{source}_by_half"]
        assert halves.shape == (2, 3) and np.isfinite(halves[:, 1:]).all()
    assert set(m["scan_order"]) == {"model", "scan_fwd", "scan_bwd"}
    assert all(not mod._forward_hooks for mod in lm.model.modules())


def test_atlas_reads_vim_patches_around_the_class_token(tiny_vim):
    result = atlas.run(
        tiny_vim, atlas.Config(n_inputs=16, folds=2, methods=("pca",), random_control=False)
    )
    assert result.arrays["accuracy"].shape == (3,)
    from probes.atlas.data import scene_patches

    data = scene_patches(tiny_vim, 16)
    assert 8 not in set(data.positions[:, 1].tolist())  # never the middle class token
    assert data.positions[:, 1].max() <= 16

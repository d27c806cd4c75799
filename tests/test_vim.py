"""The vim probe: hidden attention against the scan, planted decays and branches, the widget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import probes.vim as vim_probe
import probes.vim.probe as vim_probe_module
from probes.vim import compute
from probes.vim.widget import PATCH_ROW, VimExplorer
from workbench.data.scenes import SHAPES
from workbench.errors import ConfigError, DataError, FamilyError
from workbench.models import load_model
from workbench.models.vim import VimConfig, VisionMamba, save_pretrained, selective_scan

F64 = torch.float64


def scan_inputs(batch=2, L=29, E=4, N=3, seed=0, delta_scale=1.0, a_scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, L, E, generator=g, dtype=F64),
        torch.rand(batch, L, E, generator=g, dtype=F64) * delta_scale,
        -torch.rand(E, N, generator=g, dtype=F64) * a_scale - 0.05,
        torch.randn(batch, L, N, generator=g, dtype=F64),
        torch.randn(batch, L, N, generator=g, dtype=F64),
        torch.randn(E, generator=g, dtype=F64),
    )


@pytest.mark.parametrize("block", [None, 4, 7, 64])
def test_hidden_attention_reproduces_the_scan_output(block):
    x, delta, A, B, C, D = scan_inputs()
    alpha = compute.hidden_attention(delta, A, B, C, block=block)
    y = selective_scan(x, delta, A, B, C, D)
    y_from_alpha = torch.einsum("beij,bje->bie", alpha, x) + D * x
    torch.testing.assert_close(y_from_alpha, y, rtol=0, atol=1e-6)
    assert torch.all(alpha.triu(1) == 0)  # the forward scan never reads ahead
    torch.testing.assert_close(
        alpha, compute.hidden_attention_pairwise(delta, A, B, C), rtol=0, atol=1e-12
    )
    one_block = compute.hidden_attention(delta, A, B, C, block=1)  # a block per position
    torch.testing.assert_close(one_block, alpha, rtol=0, atol=1e-12)


def test_hidden_attention_is_stable_for_long_memories_and_fast_decays():
    """Large Δ|A| (decays underflow) and long sums: every exponent stays ≤ 0, nothing overflows."""
    _, delta, A, B, C, _ = scan_inputs(L=70, delta_scale=6.0, a_scale=60.0)
    alpha = compute.hidden_attention(delta.float(), A.float(), B.float(), C.float(), block=8)
    assert torch.isfinite(alpha).all()
    exact = compute.hidden_attention(delta, A, B, C, block=8)
    torch.testing.assert_close(alpha.double(), exact, rtol=1e-4, atol=1e-5)


def test_class_token_row_includes_its_own_decay():
    """α_{i,j} has Π_{k=j+1..i} exp(Δ_k A): the decay at i itself is in (the reference's
    class-token vector leaves it out). Feed a one-hot input at j and read y at i."""
    x, delta, A, B, C, _ = scan_inputs(batch=1, L=11, E=2, N=3, seed=3, delta_scale=2.0)
    i = 6
    row = compute.attention_row(delta, A, B, C, i)
    for j in range(11):
        onehot = torch.zeros_like(x)
        onehot[:, j] = 1.0
        y = selective_scan(onehot, delta, A, B, C)
        torch.testing.assert_close(row[:, :, j], y[:, i], rtol=0, atol=1e-12)
    torch.testing.assert_close(row, compute.hidden_attention(delta, A, B, C)[:, :, i])


def test_rollout_follows_a_planted_chain():
    """Layer 0: token 2 reads token 0; layer 1: token 4 reads token 2. Rollout links 4 to 0."""
    L = 5
    first, second = np.zeros((L, L)), np.zeros((L, L))
    first[2, 0] = 1.0
    second[4, 2] = 1.0
    joint = compute.rollout(np.stack([first, second]))
    # Each layer keeps half of a token itself (the residual), so 4 ends up 1/4 token 0.
    np.testing.assert_allclose(joint[4], [0.25, 0, 0.25, 0, 0.5])
    np.testing.assert_allclose(joint[1], [0, 1, 0, 0, 0])  # a token nobody wires stays itself
    np.testing.assert_allclose(
        compute.rollout(np.stack([first, second]), start=1)[4], [0, 0, 0.5, 0, 0.5]
    )
    np.testing.assert_allclose(joint.sum(axis=1), 1.0)
    weights = compute.gradient_weights(np.array([[[1.0, -2.0], [3.0, 0.5], [0.0, -1.0]]]))
    np.testing.assert_allclose(weights, [[1 / 3, 1.0, 0.0]])


def test_memory_length_and_branch_split():
    np.testing.assert_allclose(
        compute.memory_lengths(np.array([0.5]), np.array([[-2.0, -0.1]])), [[1.0, 20.0]]
    )
    g = torch.Generator().manual_seed(0)
    y_f, y_b, gate = (torch.randn(2, 5, 6, generator=g) for _ in range(3))
    w = torch.randn(4, 6, generator=g)
    f, b = compute.branch_contributions(y_f, y_b, gate, w)
    torch.testing.assert_close(f + b, (gate * (y_f + y_b) / 2) @ w.T)
    share = compute.forward_share(f, torch.zeros_like(b))
    torch.testing.assert_close(share, torch.ones(2, 5))


# -- the probe on small models -----------------------------------------------------------------
def _config(**kw) -> VimConfig:
    values = {
        "d_model": 24,
        "n_layers": 3,
        "d_state": 4,
        "image_size": 32,
        "patch_size": 8,
        "num_classes": len(SHAPES),
        "problem_type": "multi_label_classification",
        "id2label": {str(i): s for i, s in enumerate(SHAPES)},
        "image_mean": (0.5, 0.5, 0.5),
        "image_std": (0.5, 0.5, 0.5),
    }
    return VimConfig(**(values | kw))


PLANTED_DELTA = 0.25
PLANTED_A = (1.0, 2.0, 4.0, 8.0)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A random Vim with planted structure: layer 1's backward branch is silent (no B, C, D), and
    layer 2's forward scan has a constant step Δ = 0.25 and A = −(1, 2, 4, 8) in every channel."""
    torch.manual_seed(0)
    model = VisionMamba(_config())
    with torch.no_grad():
        silent = model.layers[1].mixer
        silent.x_proj_b.weight.zero_()
        silent.D_b.zero_()
        fixed = model.layers[2].mixer
        fixed.dt_proj.weight.zero_()
        fixed.dt_proj.bias.fill_(float(np.log(np.expm1(PLANTED_DELTA))))  # softplus⁻¹(0.25)
        fixed.A_log.copy_(torch.log(torch.tensor(PLANTED_A)).repeat(fixed.A_log.shape[0], 1))
    folder = tmp_path_factory.mktemp("planted-vim")
    save_pretrained(model, folder, torch.float32)
    lm = load_model(folder)
    digest = lm.digest()
    config = vim_probe.Config(n_images=6, n_maps=2, batch_size=3, compare_with="")
    result = vim_probe.run(lm, config)
    lm._digest = None
    assert lm.digest() == digest  # weights untouched
    return lm, result


def test_probe_recovers_the_planted_memory_and_silent_branch(planted):
    lm, result = planted
    a = result.arrays
    memory = a["memory_tokens"][2, 0]  # layer 2, forward: (E, N)
    expected = 1.0 / (PLANTED_DELTA * np.array(PLANTED_A))
    np.testing.assert_allclose(memory, np.broadcast_to(expected, memory.shape), rtol=1e-5)
    assert a["forward_share"][1] == pytest.approx(1.0)  # layer 1: only the forward branch writes
    assert a["forward_share"][0] < 0.95 and a["forward_share"][2] < 0.95
    assert a["ablation_logit_change"][1, 1] == pytest.approx(0.0, abs=1e-6)
    assert a["ablation_logit_change"][1, 0] > 1e-3
    assert np.all(a["attention"][:, 1, 1] == 0)  # a silent scan attends to nothing
    assert a["attention"].shape == (2, 3, 2, 17, 17)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_probe_result_is_complete_and_saves(planted, tmp_path):
    _, result = planted
    m = result.metrics
    assert set(result.headline()) >= {"rollout_object_mass", "forward_share"}
    for kind in ("raw", "rollout", "attribution"):
        scores = result.arrays[f"{kind}_map"]
        assert scores.shape == (2, 16) and np.isfinite(scores).all()
    assert m["cls_index"] == 8 and m["sequence_length"] == 17
    assert {"class_token_maps", "decay_spectrum", "branches", "branch_ablation"} <= set(
        result.figures
    )
    result.save(tmp_path / "out", formats=("html",))
    assert (tmp_path / "out" / "figures" / "class_token_maps.html").is_file()
    for metric in vim_probe.METRICS:  # every comparable metric is in the result, curves labelled
        if metric.over:
            assert len(result.arrays[metric.key]) == len(result.arrays[metric.over]), metric.key
        else:
            assert isinstance(m[metric.key], float), metric.key
    assert list(result.arrays["layer_names"]) == ["layer 0", "layer 1", "layer 2"]


def test_wrong_family_and_bad_config_fail_before_work(planted, scratch_models, monkeypatch):
    lm, _ = planted
    with pytest.raises(FamilyError, match="accepts vim"):
        vim_probe.run(load_model(scratch_models["vit"]))
    with pytest.raises(ConfigError, match="n_maps"):
        vim_probe.Config(n_images=2, n_maps=3)
    with pytest.raises(ConfigError, match="n_images must lie in"):
        vim_probe.Config(n_images=10**8)
    with pytest.raises(ConfigError, match="rollout_start must be at least -1"):
        vim_probe.Config(rollout_start=-2)

    def no_work(*args, **kwargs):
        raise AssertionError("the science started before the model checks")

    monkeypatch.setattr(vim_probe_module, "make_scenes", no_work)
    with pytest.raises(DataError, match="rollout_start"):
        vim_probe.run(lm, vim_probe.Config(rollout_start=7))
    with pytest.raises(DataError, match="target 'hexagon'"):
        vim_probe.run(lm, vim_probe.Config(target="hexagon"))
    with pytest.raises(DataError, match="compare_with must name a ViT"):
        vim_probe.run(lm, vim_probe.Config(compare_with=str(scratch_models["bert"])))


def test_widget_follows_its_controls_and_clicks(planted):
    _, result = planted
    a = result.arrays
    explorer = VimExplorer(result)
    explorer.view.value = "rollout"
    np.testing.assert_allclose(explorer.picker.overlay_scores().ravel(), a["rollout_map"][0])
    explorer.scene.value = 1
    np.testing.assert_allclose(explorer.picker.overlay_scores().ravel(), a["rollout_map"][1])
    explorer.layer.value = 0
    explorer.direction.value = "fwd"
    explorer.picker.select(10)  # patch 10 is token 11 (the class token is token 8)
    assert explorer.view.value == PATCH_ROW
    row = compute.patch_scores(a["attention"][1, 0, 0, 11], 8)
    np.testing.assert_allclose(explorer.picker.overlay_scores().ravel(), row, rtol=1e-6)
    np.testing.assert_allclose(explorer.trajectory_values(), a["state_norm_maps"][1][:, :, 11].T)
    explorer.direction.value = "bwd"
    row_b = compute.patch_scores(a["attention"][1, 0, 1, 11], 8)
    np.testing.assert_allclose(explorer.picker.overlay_scores().ravel(), row_b, rtol=1e-6)
    assert not np.allclose(row, row_b)


def test_scan_blocks_keep_every_span_within_the_limit():
    _, delta, A, _, _, _ = scan_inputs(L=60, delta_scale=2.0, a_scale=10.0)
    S = torch.cumsum(delta, dim=1)
    blocks = compute.scan_blocks(S, A, limit=5.0)
    assert blocks[0][0] == 0 and blocks[-1][1] == 60
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    rate = A.abs().amax(-1)
    for start, stop in blocks:
        assert float(((S[:, stop - 1] - S[:, start]) * rate).max()) <= 5.0
    assert max(stop - start for start, stop in compute.scan_blocks(S, A, block=3)) <= 3

"""The Vision Mamba model: scan vs recurrence, an independent Mamba, official checkpoints, sites."""

from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workbench.models.vim as vim_module
from workbench.capture import capture, hooks
from workbench.errors import ModelNotFoundError
from workbench.models import load_model, peek_family
from workbench.models.vim import (
    CheckpointRefusedError,
    VimConfig,
    VisionMamba,
    save_pretrained,
    selective_scan,
)

F64 = torch.float64


def recurrence(x, delta, A, B, C, D):
    """Mamba's scan one position at a time, in float64: the definition."""
    batch, L, E = x.shape
    h = torch.zeros(batch, E, A.shape[1], dtype=F64)
    ys, hs = [], []
    for t in range(L):
        decay = torch.exp(delta[:, t, :, None] * A)
        h = decay * h + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
        hs.append(h)
    return torch.stack(ys, 1), torch.stack(hs, 1)


def random_scan_inputs(batch=2, L=13, E=5, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, L, E, generator=g, dtype=F64),
        torch.rand(batch, L, E, generator=g, dtype=F64) * 1.5,
        -torch.rand(E, N, generator=g, dtype=F64) * 4 - 0.1,
        torch.randn(batch, L, N, generator=g, dtype=F64),
        torch.randn(batch, L, N, generator=g, dtype=F64),
        torch.randn(E, generator=g, dtype=F64),
    )


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_scan_equals_the_recurrence_with_states_and_channel_subsets(chunk):
    x, delta, A, B, C, D = random_scan_inputs()
    y_ref, h_ref = recurrence(x, delta, A, B, C, D)
    y, h = selective_scan(x, delta, A, B, C, D, return_states=True, chunk=chunk)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    y2, h2 = selective_scan(x, delta, A, B, C, D, return_states=True, channels=[3, 1])
    torch.testing.assert_close(y2, y_ref[..., [3, 1]], rtol=0, atol=1e-12)
    torch.testing.assert_close(h2, h_ref[:, :, [3, 1]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("keep_states", [True, False])
def test_scan_gradients_match_finite_differences(monkeypatch, keep_states):
    if not keep_states:  # force the chunk-recomputing backward
        monkeypatch.setattr(vim_module, "SAVE_STATES_ELEMENTS", 0)
    x, delta, A, B, C, D = random_scan_inputs(batch=2, L=7, E=3, N=2, seed=1)
    A3 = A.expand(2, -1, -1).clone()  # one A per example, as when both directions share a batch
    for a in (A, A3):
        inputs = [t.clone().requires_grad_() for t in (x, delta, a, B, C)]
        assert torch.autograd.gradcheck(
            lambda *args: selective_scan(*args, D, chunk=3), inputs, atol=1e-8
        )


def _tiny_config(**kw) -> VimConfig:
    values = {
        "d_model": 16,
        "n_layers": 2,
        "d_state": 4,
        "image_size": 32,
        "patch_size": 8,
        "num_classes": 5,
    }
    return VimConfig(**(values | kw))


def _mixer_reference(mixer, hidden):
    """The v2 mixer from its definition: each direction with its own conv/projections/A/D on
    the (flipped, for backward) sequence, gated by SiLU(z), averaged, then out_proj."""
    L = hidden.shape[1]
    x, z = (hidden @ mixer.in_proj.weight.T).chunk(2, dim=-1)
    outs = []
    for suffix, flip in (("", False), ("_b", True)):
        conv = getattr(mixer, f"conv1d{suffix}")
        seq = x.flip(1) if flip else x
        u = F.silu(
            F.conv1d(
                seq.transpose(1, 2), conv.weight, conv.bias, padding=3, groups=conv.weight.shape[0]
            )[..., :L]
        ).transpose(1, 2)
        dbc = u @ getattr(mixer, f"x_proj{suffix}").weight.T
        r, n = mixer.dt_rank, mixer.d_state
        dt, B, C = dbc[..., :r], dbc[..., r : r + n], dbc[..., r + n :]
        dt_proj = getattr(mixer, f"dt_proj{suffix}")
        delta = F.softplus(dt @ dt_proj.weight.T + dt_proj.bias)
        A = -torch.exp(getattr(mixer, "A_b_log" if flip else "A_log"))
        D = mixer.D_b if flip else mixer.D
        y, _ = recurrence(u, delta, A, B, C, D)
        outs.append(y.flip(1) if flip else y)
    return ((outs[0] + outs[1]) / 2 * F.silu(z)) @ mixer.out_proj.weight.T


def test_bidirectional_mixer_equals_its_definition_in_float64():
    torch.manual_seed(0)
    model = VisionMamba(_tiny_config()).double()
    mixer = model.layers[0].mixer
    with torch.no_grad():
        for p in mixer.parameters():  # larger values so that every term matters
            p.add_(torch.randn_like(p) * 0.3)
        hidden = torch.randn(2, 9, 16, dtype=F64)
        torch.testing.assert_close(
            mixer(hidden), _mixer_reference(mixer, hidden), rtol=0, atol=1e-10
        )


def test_each_direction_matches_mambapy_on_shared_weights():
    """An independent pure-PyTorch Mamba (mambapy) on the same weights as one branch."""
    from mambapy.mamba import MambaBlock, MambaConfig
    from mambapy.vim import MambaConfig as VimMambaConfig
    from mambapy.vim import VMambaBlock

    torch.manual_seed(0)
    model = VisionMamba(_tiny_config())
    mixer = model.layers[1].mixer
    hidden = torch.randn(3, 17, 16)
    shared = {"in_proj.weight", "out_proj.weight"}
    for direction, suffix in (("fwd", ""), ("bwd", "_b")):
        reference = MambaBlock(MambaConfig(d_model=16, n_layers=1, d_state=4, pscan=False))
        state = {k: v for k, v in mixer.state_dict().items() if k in shared}
        for name in (
            "conv1d.weight",
            "conv1d.bias",
            "x_proj.weight",
            "dt_proj.weight",
            "dt_proj.bias",
        ):
            part, leaf = name.split(".")
            state[name] = mixer.state_dict()[f"{part}{suffix}.{leaf}"]
        state["A_log"] = mixer.A_b_log if suffix else mixer.A_log
        state["D"] = mixer.D_b if suffix else mixer.D
        reference.load_state_dict(state, strict=True)
        with torch.no_grad():
            ours = mixer.one_direction(hidden, direction)
            theirs = reference(hidden.flip(1)).flip(1) if suffix else reference(hidden)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

    both = VMambaBlock(VimMambaConfig(d_model=16, n_layers=1, d_state=4, pscan=False))
    renamed = {k.replace("A_b_log", "A_log_b"): v for k, v in mixer.state_dict().items()}
    both.load_state_dict(renamed, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(mixer(hidden), both(hidden), rtol=1e-4, atol=1e-5)


# The official Vim-Ti state dict (hustvl/Vim, vim_tiny_patch16_224_bimambav2_..._midclstok):
# parameter names and shapes as the official code creates them.
VIM_TI_TOP = {
    "cls_token": (1, 1, 192),
    "pos_embed": (1, 197, 192),
    "patch_embed.proj.weight": (192, 3, 16, 16),
    "patch_embed.proj.bias": (192,),
    "norm_f.weight": (192,),
    "head.weight": (1000, 192),
    "head.bias": (1000,),
}
VIM_TI_LAYER = {
    "norm.weight": (192,),
    "mixer.A_log": (384, 16),
    "mixer.A_b_log": (384, 16),
    "mixer.D": (384,),
    "mixer.D_b": (384,),
    "mixer.in_proj.weight": (768, 192),
    "mixer.out_proj.weight": (192, 384),
    "mixer.conv1d.weight": (384, 1, 4),
    "mixer.conv1d.bias": (384,),
    "mixer.conv1d_b.weight": (384, 1, 4),
    "mixer.conv1d_b.bias": (384,),
    "mixer.x_proj.weight": (44, 384),
    "mixer.x_proj_b.weight": (44, 384),
    "mixer.dt_proj.weight": (384, 12),
    "mixer.dt_proj.bias": (384,),
    "mixer.dt_proj_b.weight": (384, 12),
    "mixer.dt_proj_b.bias": (384,),
}


def _official_vim_ti_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = dict(VIM_TI_TOP)
    for i in range(24):
        shapes |= {f"layers.{i}.{k}": v for k, v in VIM_TI_LAYER.items()}
    return {k: torch.randn(v, generator=g) * 0.02 for k, v in shapes.items()}


@pytest.fixture(scope="module")
def vim_ti_checkpoint(tmp_path_factory):
    """A training checkpoint laid out like the released ones: weights under ``model``."""
    state = _official_vim_ti_state()
    path = tmp_path_factory.mktemp("vim-ti") / "vim_t_midclstok_76p1acc.pth"
    args = argparse.Namespace(model="vim_tiny_patch16_224", lr=5e-4, input_size=224)
    torch.save({"model": state, "epoch": 299, "args": args, "scaler": "none"}, path)
    return path, state


def test_official_vim_ti_checkpoint_loads_strictly(vim_ti_checkpoint):
    path, state = vim_ti_checkpoint
    assert peek_family(path) == "vim"
    lm = load_model(path)
    cfg = lm.model.config
    assert (cfg.d_model, cfg.n_layers, cfg.d_state, cfg.dt_rank, cfg.image_size) == (
        192,
        24,
        16,
        12,
        224,
    )
    assert lm.model.cls_index == 98 and lm.n_patches == 196 and lm.family == "vim"
    ours = lm.model.state_dict()
    assert set(ours) == set(state)
    for name, tensor in state.items():
        assert torch.equal(ours[name], tensor), name
    assert sum(t.numel() for t in state.values()) == 7_148_008  # Vim-Ti's 7M parameters


def test_overlapping_patches_count_the_real_grid(tmp_path):
    config = VimConfig(
        d_model=16, n_layers=2, d_state=4, image_size=32, patch_size=16, stride=8, num_classes=3
    )
    save_pretrained(VisionMamba(config), tmp_path / "vim-s8", torch.float32)
    lm = load_model(tmp_path / "vim-s8")
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    tokens = lm(**lm.encode_images(images)).last_hidden_state.shape[1]
    assert lm.n_patches == 9 == tokens - 1  # a 3 x 3 grid of 16-px windows plus the class token
    assert "9 patches (stride 8px)" in repr(lm)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "was-called"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointRefusedError, match=r"refusing to unpickle io\.open"):
        load_model(path)
    assert not marker.exists()
    legacy = tmp_path / "evil_legacy.pth"
    torch.save({"extra": Payload()}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointRefusedError):
        load_model(legacy)
    plain = tmp_path / "plain.pkl.pth"
    plain.write_bytes(pickle.dumps(Payload()))
    with pytest.raises((CheckpointRefusedError, ModelNotFoundError)):
        load_model(plain)
    assert not marker.exists()


def test_checkpoint_files_that_are_not_vim_are_named(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelNotFoundError, match="not a Vision Mamba"):
        load_model(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        load_model(text)


@pytest.fixture(scope="module")
def tiny_vim(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vim")
    save_pretrained(VisionMamba(_tiny_config(n_layers=3)), folder, torch.float32)
    return load_model(folder)


def _images(n=3, size=32):
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_sites_agree_with_the_forward_pass(tiny_vim):
    lm = tiny_vim
    sites = [
        *(f"blocks.{i}.{k}" for i in range(3) for k in ("resid_pre", "resid_post", "mixer.out")),
        *(f"ssm.1.{d}.{p}" for d in ("fwd", "bwd") for p in ("x", "delta", "B", "C", "h", "y")),
        "ssm.1.gate",
    ]
    cache = capture(lm, _images(), sites, batch_size=2, progress=False)
    with torch.no_grad():
        out = lm.model(**lm.encode_images(_images()), output_hidden_states=True)
    for i in range(3):
        torch.testing.assert_close(cache[f"blocks.{i}.resid_pre"], out.hidden_states[i])
        torch.testing.assert_close(
            cache[f"blocks.{i}.resid_pre"] + cache[f"blocks.{i}.mixer.out"],
            cache[f"blocks.{i}.resid_post"],
        )
    mixer = lm.model.layers[1].mixer
    for d in ("fwd", "bwd"):
        get = {p: cache[f"ssm.1.{d}.{p}"] for p in ("x", "delta", "B", "C", "h", "y")}
        flip = (lambda t: t.flip(1)) if d == "bwd" else (lambda t: t)
        y, h = selective_scan(
            *(flip(get[p]) for p in ("x", "delta")),
            mixer.A(d),
            flip(get["B"]),
            flip(get["C"]),
            mixer.direction_params(d)["D"].detach(),
            return_states=True,
        )
        # Backward values are in token order: the state at t has read tokens t..L-1.
        torch.testing.assert_close(flip(h), get["h"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(flip(y), get["y"], rtol=1e-5, atol=1e-6)
    assert cache["ssm.1.fwd.h"].shape == (3, 17, 32, 4)


def test_zeroing_a_branch_changes_the_output_and_leaves_no_hooks(tiny_vim):
    lm = tiny_vim
    batch = lm.encode_images(_images())
    base = lm(**batch).logits
    with hooks(lm, {"ssm.2.bwd.y": torch.zeros_like}):
        ablated = lm(**batch).logits
    assert not torch.allclose(base, ablated)
    torch.testing.assert_close(lm(**batch).logits, base)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_random_init_copy_and_named_weights(tiny_vim):
    fresh = tiny_vim.random_init_copy(seed=1)
    assert type(fresh.model) is VisionMamba
    assert fresh.digest() != tiny_vim.digest()
    w = tiny_vim.weight("blocks.0.mixer.W_in")
    assert w.shape == (64, 16)
    assert w.data_ptr() == tiny_vim.model.layers[0].mixer.in_proj.weight.data_ptr()


def test_vim_scenes_checkpoint_matches_its_recipe():
    import hashlib
    import json

    from workbench.zoo import ZOO, zoo_path

    folder = zoo_path("vim-scenes")
    weights = folder / "model.safetensors"
    recipe = json.loads((folder / "recipe.json").read_text())
    assert weights.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recipe["model_sha256"]
    assert recipe["seed"] == ZOO["vim-scenes"].seed and recipe["partner"] == "zoo:vit-scenes"
    lm = load_model("zoo:vim-scenes")
    assert lm.family == "vim" and lm.image_size == 64 and lm.patch_size == 8
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}


# Measured on these 256 scenes: label accuracy 0.70 against a majority-class chance of 0.53,
# macro F1 0.67 (vit-scenes: 0.65 on its own held-out set).
LABEL_MARGIN = 0.1
MACRO_F1_FLOOR = 0.58


@pytest.mark.slow
def test_vim_scenes_recognises_shapes_in_held_out_scenes():
    from workbench.data.scenes import make_scenes
    from workbench.models.vim import flush_denormals
    from workbench.zoo.vit_scenes import predict

    lm = load_model("zoo:vim-scenes")
    held = make_scenes(256, size=64, seed=4242)
    truth = held.present()
    with flush_denormals():
        pred = predict(lm.model, held.images, batch_size=32)
    chance = np.maximum(truth.mean(0), 1 - truth.mean(0)).mean()
    tp, fp, fn = ((pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0))
    macro_f1 = (2 * tp / np.maximum(1, 2 * tp + fp + fn)).mean()
    assert (pred == truth).mean() > chance + LABEL_MARGIN
    assert macro_f1 > MACRO_F1_FLOOR

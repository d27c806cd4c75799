"""The loader: every family maps the standard sites, and bad specs fail with the right advice."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from workbench.capture import capture
from workbench.errors import DataError, FamilyError, ModelNotFoundError, SiteError
from workbench.models import load_model
from workbench.models.scratch import SCRATCH_KINDS

KINDS = ("resid_pre", "resid_post", "attn.out", "attn.pattern", "mlp.in", "mlp.out")


def _inputs(lm):
    if lm.is_vision:
        rng = np.random.default_rng(0)
        return rng.integers(0, 255, (3, lm.image_size, lm.image_size, 3), dtype=np.uint8)
    return ["w1 w2 w3 w4", "w5 w6", "w7"]


@pytest.mark.parametrize("kind", SCRATCH_KINDS)
def test_sites_match_hidden_states_and_have_expected_shapes(scratch_models, kind):
    lm = load_model(scratch_models[kind])
    assert lm.n_layers == 2 and lm.d_model == 32
    activation_sites = {n for n in lm.site_names() if not n.endswith((".input", ".output"))}
    assert activation_sites == {f"blocks.{i}.{k}" for i in range(2) for k in KINDS}
    cache = capture(lm, _inputs(lm), lm.site_names(), batch_size=2, progress=False)
    batch = lm.encode_images(_inputs(lm)) if lm.is_vision else lm.encode_texts(_inputs(lm))
    with torch.no_grad():
        out = lm.model(**lm.forward_kwargs(batch), output_hidden_states=True)
    hidden = out.hidden_states
    n, t = cache["blocks.0.resid_pre"].shape[:2]
    for i in range(2):
        # A block's input is the previous hidden state; its output the next (the last
        # hidden state may have a final norm applied, so compare block 0 output to h[1]).
        torch.testing.assert_close(cache[f"blocks.{i}.resid_pre"], hidden[i])
    torch.testing.assert_close(cache["blocks.0.resid_post"], hidden[1])
    pattern = cache["blocks.1.attn.pattern"]
    assert pattern.shape == (n, 2, t, t)
    real = batch.get("attention_mask", torch.ones(n, t)).bool()
    # Attention rows over real query tokens are probability distributions.
    torch.testing.assert_close(
        pattern.sum(-1)[real[:, None, :].expand(-1, 2, -1)], torch.ones(int(real.sum()) * 2)
    )
    for name in ("attn.out", "mlp.in", "mlp.out"):
        assert cache[f"blocks.1.{name}"].shape == (n, t, 32)


def test_attention_implementation_restored_after_pattern_capture(scratch_models):
    lm = load_model(scratch_models["gpt2"], attn_implementation="sdpa")
    assert lm.model.config._attn_implementation == "sdpa"
    cache = capture(lm, ["w1 w2"], ["blocks.0.attn.pattern"], progress=False)
    assert cache["blocks.0.attn.pattern"].shape == (1, 2, 2, 2)
    assert lm.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_causal_lm_pass_builds_no_key_value_cache(scratch_models, kind):
    lm = load_model(scratch_models[kind])
    batch = lm.encode_texts(["w1 w2 w3"])
    assert lm(**batch).past_key_values is None
    assert lm(**batch, use_cache=True).past_key_values is not None  # still on request


def test_vit_mae_keeps_patch_order_with_masking_off(scratch_models):
    lm = load_model(scratch_models["vit_mae"])
    assert lm.model.config.mask_ratio == 0.0
    images = _inputs(lm)
    a = capture(lm, images, ["blocks.0.resid_pre"], progress=False)["blocks.0.resid_pre"]
    b = capture(lm, images, ["blocks.0.resid_pre"], progress=False)["blocks.0.resid_pre"]
    torch.testing.assert_close(a, b)  # no random shuffling between runs
    emb = lm.model.embeddings
    with torch.no_grad():
        patches = emb.patch_embeddings(lm.encode_images(images)["pixel_values"])
    expected = patches + emb.position_embeddings[:, 1:, :]
    torch.testing.assert_close(a[:, 1:], expected)  # patch k stays at token 1 + k


def test_minilm_loads_from_its_package():
    lm = load_model("zoo:minilm")
    assert lm.family == "encoder" and lm.n_layers == 6 and lm.d_model == 384
    batch = lm.encode_texts(["a cat sat on the mat"])
    out = lm(**batch).last_hidden_state
    # The real pretrained encoder: similar sentences embed closer than unrelated ones.
    emb = [
        lm(**lm.encode_texts([t])).last_hidden_state.mean(1)[0]
        for t in ("a cat sat on the mat", "a kitten sat on the rug", "stock prices fell sharply")
    ]
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[1], dim=0) > cos(emb[0], emb[2], dim=0) + 0.2
    assert out.shape[-1] == 384


def test_uncached_hub_id_offline_says_how_to_use_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"(?s)HF_HUB_OFFLINE.*load_model\('./models/"):
        load_model("some-org/not-a-cached-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # no network here: the hub cannot be reached
    with pytest.raises(ModelNotFoundError, match=r"(?s)could not be reached.*hf download"):
        load_model("some-org/not-a-cached-model")


def test_unknown_spec_and_missing_files_are_named(scratch_models, tmp_path):
    with pytest.raises(ModelNotFoundError, match="names no known model"):
        load_model("not a model!")
    with pytest.raises(ModelNotFoundError, match=r"zoo list|known"):
        load_model("zoo:no-such-model")
    folder = tmp_path / "gpt2"
    shutil.copytree(scratch_models["gpt2"], folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors"):
        load_model(folder)
    shutil.copytree(scratch_models["gpt2"], tmp_path / "notok")
    (tmp_path / "notok" / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match=r"tokenizer\.json"):
        load_model(tmp_path / "notok")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        load_model(tmp_path / "empty")


def test_bad_site_and_wrong_input_kind(scratch_models):
    lm = load_model(scratch_models["vit"])
    with pytest.raises(SiteError, match=r"blocks\.0\.resid_post"):
        lm.site("blocks.0.resid_postt")
    with pytest.raises(DataError, match="32x32"):
        lm.encode_images(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(DataError, match="takes images"):
        lm.encode_texts(["hello"])
    with pytest.raises(FamilyError, match="causal LMs"):
        load_model(scratch_models["vit"], backend="transformer-lens")


def test_transformer_lens_bridge_maps_the_same_sites(scratch_models):
    hf = load_model(scratch_models["gpt2"])
    tl = load_model(scratch_models["gpt2"], backend="transformer-lens")
    assert tl.backend == "transformer-lens"
    assert set(hf.layer_sites("resid_post")) <= set(tl.sites)
    ids = hf.encode_texts(["w1 w2 w3"])
    a = capture(hf, ids, ["blocks.1.resid_post"], progress=False)["blocks.1.resid_post"]
    b = capture(tl, ids, ["blocks.1.resid_post"], progress=False)["blocks.1.resid_post"]
    # The bridge may prepend a BOS token; the last positions line up with the HF model's.
    torch.testing.assert_close(b[:, -a.shape[1] :], a, atol=1e-4, rtol=1e-4)


def test_digest_tracks_weights_and_random_copy_differs(scratch_models):
    lm = load_model(scratch_models["bert"])
    again = load_model(scratch_models["bert"])
    assert lm.digest() == again.digest()
    control = lm.random_init_copy(seed=1)
    assert control.digest() != lm.digest()
    assert control.sites == lm.sites


@pytest.mark.parametrize("kind", SCRATCH_KINDS)
def test_named_weights_are_the_matrices_the_forward_uses(scratch_models, kind):
    """W_in / W_out (and W_Q, W_K where separate) reproduce the layer's output from its input."""
    lm = load_model(scratch_models[kind])
    roles = {n.split(".", 2)[2] for n in lm.weight_names()}
    assert {"mlp.W_in", "mlp.W_out", "attn.W_O"} <= roles
    if kind != "gpt_neox":  # NeoX interleaves heads in its fused projection
        assert {"attn.W_Q", "attn.W_K", "attn.W_V"} <= roles
    inputs = _inputs(lm)
    names = ["blocks.1.mlp.W_out", "blocks.0.mlp.W_in"]
    cache = capture(lm, inputs, [f"{n}.{s}" for n in names for s in ("input", "output")])
    for name in names:
        w = lm.weight(name)
        bias = lm.model.get_submodule(lm.weights[name].module).bias
        expected = cache[f"{name}.input"] @ w.detach().T
        if bias is not None:
            expected = expected + bias.detach()
        torch.testing.assert_close(cache[f"{name}.output"], expected, rtol=1e-4, atol=1e-5)


def test_gpt2_fused_qkv_views_write_through(scratch_models):
    lm = load_model(scratch_models["gpt2"])
    d = lm.d_model
    fused = lm.weight("blocks.0.attn.W_QKV")
    assert fused.shape == (3 * d, d)
    assert torch.equal(lm.weight("blocks.0.attn.W_K"), fused[d : 2 * d])
    with torch.no_grad():
        lm.weight("blocks.0.attn.W_K").zero_()
    c_attn = lm.model.get_submodule(lm.weights["blocks.0.attn.W_K"].module).weight
    assert torch.count_nonzero(c_attn[:, d : 2 * d]) == 0 and torch.count_nonzero(c_attn[:, :d])
    with pytest.raises(SiteError, match="weight_names"):
        lm.weight("blocks.0.mlp.W_up")


def test_digest_covers_scalar_parameters():
    from torch import nn

    from workbench.models.loaded import LoadedModel

    module = nn.Module()
    module.scale = nn.Parameter(torch.tensor(0.5))
    lm = LoadedModel("scalar", "pmi", module, None, {}, 0, 1, "test")
    before = lm.digest()
    with torch.no_grad():
        module.scale.fill_(0.25)
    lm._digest = None
    assert lm.digest() != before

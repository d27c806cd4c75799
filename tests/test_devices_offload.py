"""Models bigger than memory: real architectures (GPT-2 and ViT-B/16 widths, few blocks, random
weights) loaded with ``device_map="auto"`` and a ``max_memory`` that pushes part of the weights
to disk behave exactly like the plain load: same activations, working patches, the curvature
edit taking effect and every weight restored bit for bit, also after an exception."""

from __future__ import annotations

import pytest
import torch

from probes.curvature.edit import kfac_weights, svd_weights
from probes.curvature.factors import collect_factors
from workbench import capture, edited, hooks, load_model
from workbench.devices import stored_tensor
from workbench.models.published import save_published_shape

pytestmark = pytest.mark.slow

# Room on the CPU for the embeddings and the first blocks; accelerate puts the rest on disk.
SPLITS = {"gpt2": ("gpt2", 4, "240MB"), "vit": ("vit-base-patch16-224", 2, "60MB")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("published")
    return {
        kind: save_published_shape(root / kind, name, n_layers=n, tokenizer_vocab=500)
        for kind, (name, n, _) in SPLITS.items()
    }


def _pair(folders, kind):
    """(plain load, load split between the CPU and disk)."""
    plain = load_model(folders[kind], device="cpu")
    split = load_model(folders[kind], device_map="auto", max_memory={"cpu": SPLITS[kind][2]})
    return plain, split


def _inputs(model, n=3):
    if model.is_vision:
        generator = torch.Generator().manual_seed(0)
        size = model.image_size
        return torch.randint(0, 256, (n, size, size, 3), generator=generator, dtype=torch.uint8)
    ids = torch.randint(3, 500, (n, 10), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _batch(model, inputs):
    return model.encode_images(inputs.numpy()) if model.is_vision else inputs


def _output(model, inputs):
    out = model(**_batch(model, inputs))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _stored(model, name):
    module, _, attr = name.rpartition(".")
    return stored_tensor(model.model, module, attr)


def _stored_state(model):
    """Every parameter's values, read wherever they are (a copy for offloaded ones)."""
    return {n: _stored(model, n).read().detach().clone() for n, _ in model.model.named_parameters()}


def _no_stray_copies(model):
    """Every offloaded parameter is a meta placeholder again (its values only on disk)."""
    return all(
        p.device.type == "meta"
        for n, p in model.model.named_parameters()
        if _stored(model, n).offloaded
    )


@pytest.mark.parametrize("kind", list(SPLITS))
def test_split_load_captures_what_the_plain_load_captures(folders, kind):
    plain, split = _pair(folders, kind)
    places = set(split.device_map.values())
    assert places == {"cpu", "disk"}, split.device_map
    assert "disk" in repr(split) and "block 0        cpu, float32" in repr(split)
    assert any(p.device.type == "meta" for p in split.model.parameters())
    assert split.device == torch.device("cpu")
    assert split.digest() == plain.digest()  # the same weights, read from where they are
    inputs = _inputs(plain)
    sites = [*plain.layer_sites("resid_post"), "blocks.1.mlp.out", "blocks.1.attn.pattern"]
    sites += [f"blocks.{plain.n_layers - 1}.mlp.W_in.input"]
    want = capture(plain, inputs, sites, batch_size=2, progress=False)
    got = capture(split, inputs, sites, batch_size=2, progress=False)
    for site in sites:
        assert got[site].device.type == "cpu"
        torch.testing.assert_close(got[site], want[site], atol=1e-5, rtol=1e-5)
    assert _no_stray_copies(split)


@pytest.mark.parametrize("kind", list(SPLITS))
def test_patching_a_split_model_matches_patching_the_plain_one(folders, kind):
    plain, split = _pair(folders, kind)
    inputs = _inputs(plain)
    last = f"blocks.{plain.n_layers - 1}.resid_pre"  # read on a block that lives on disk
    assert split.stored(f"blocks.{plain.n_layers - 1}.mlp.W_in").home == "disk"

    def halve(value):
        return value * 0.5

    base = _output(plain, inputs)
    with hooks(plain, {last: halve}):
        want = _output(plain, inputs)
    with hooks(split, {last: halve}):
        got = _output(split, inputs)
    assert (want - base).abs().max() > 1e-3  # the patch changes the output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_output(split, inputs), base, atol=1e-5, rtol=1e-5)  # undone


def test_curvature_edit_on_a_split_lm_takes_effect_and_restores_bit_exactly_after_an_exception(
    folders,
):
    plain, split = _pair(folders, "gpt2")
    inputs = _inputs(plain, n=4)
    names = ["blocks.0.attn.W_O", "blocks.3.attn.W_O", "blocks.3.attn.W_Q"]  # 768 x 768: fast
    assert [split.stored(n).home for n in names] == ["cpu", "disk", "disk"]
    factors = {
        lm: collect_factors(lm, inputs, names[:2], batch_size=2, progress=False)
        for lm in (plain, split)
    }
    for name in names[:2]:  # K-FAC statistics through offloaded blocks equal the plain ones
        torch.testing.assert_close(
            factors[split].a[name], factors[plain].a[name], rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(
            factors[split].g[name], factors[plain].g[name], rtol=1e-3, atol=1e-8
        )
    new = kfac_weights(split, factors[split].eigenbases(), rho=0.5)
    new |= svd_weights(split, names[2:], energy=0.5)[0]  # a fused QKV row block, on disk
    before = _stored_state(split)
    loader = split.model.get_submodule("transformer.h.3.attn.c_proj")._hf_hook.weights_map.dataset
    held = dict(loader.state_dict)
    base = _output(plain, inputs)
    with edited(plain, new):
        want = _output(plain, inputs)
    assert (want - base).abs().max() > 1e-3

    def explode(value):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), edited(split, new):
        torch.testing.assert_close(_output(split, inputs), want, atol=1e-4, rtol=1e-4)
        with hooks(split, {"blocks.3.mlp.out": explode}):  # raises midway through a forward
            _output(split, inputs)
    after = _stored_state(split)
    assert all(
        torch.equal(after[n], before[n]) and after[n].dtype == before[n].dtype for n in before
    )
    assert loader.state_dict.keys() == held.keys()  # nothing left in accelerate's map
    assert all(loader.state_dict[k] is held[k] for k in held)
    assert _no_stray_copies(split)
    assert split.digest() == plain.digest()
    torch.testing.assert_close(_output(split, inputs), base, atol=1e-5, rtol=1e-5)


def test_edit_restores_weights_accelerate_keeps_in_ram(folders):
    """accelerate's CPU offload (weights in a RAM dict, meta in the modules), as on a GPU
    machine where "cpu" entries of a device map are offloaded."""
    from accelerate import cpu_offload

    plain = load_model(folders["vit"], device="cpu")
    offloaded = load_model(folders["vit"], device="cpu")
    cpu_offload(offloaded.model, execution_device=torch.device("cpu"))
    assert offloaded.stored("blocks.1.attn.W_V").home == "cpu-offload"
    before = _stored_state(offloaded)
    inputs = _inputs(plain)
    new = {n: plain.weight(n) * -0.5 for n in ("blocks.1.attn.W_V", "blocks.0.mlp.W_out")}
    with edited(plain, new):
        want = _output(plain, inputs)
    with pytest.raises(KeyError), edited(offloaded, new):
        torch.testing.assert_close(_output(offloaded, inputs), want, atol=1e-5, rtol=1e-5)
        raise KeyError("body fails")
    after = _stored_state(offloaded)
    assert all(torch.equal(after[n], before[n]) for n in before)
    torch.testing.assert_close(_output(offloaded, inputs), _output(plain, inputs))


def test_reweave_on_a_split_lm_matches_the_plain_load(folders):
    from probes.reweave.operator import Reweaving, reweave

    plain, split = _pair(folders, "gpt2")
    inputs = _inputs(plain)
    op = Reweaving((0, 1), 3, plain.d_model, gate=0.5)
    outs = {}
    for lm in (plain, split):
        base = _output(lm, inputs)
        with reweave(lm, op, attention_mask=inputs["attention_mask"]):
            outs[lm] = _output(lm, inputs)
        with reweave(lm, op, gate=0.0):  # gate 0 is the identity, exactly
            assert torch.equal(_output(lm, inputs), base)
    torch.testing.assert_close(outs[split], outs[plain], atol=1e-5, rtol=1e-5)
    assert (outs[plain] - _output(plain, inputs)).abs().max() > 1e-3

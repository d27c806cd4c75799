"""The PMI model family: every equation against a slow re-computation, shapes, sites, loading."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.capture import capture, hooks
from workbench.errors import DataError
from workbench.models import pmi
from workbench.models.pmi import PMIConfig, build_model


def _cfg(**kw) -> PMIConfig:
    values = {"vocab_size": 30, "n_answers": 5, "d_model": 16, "n_heads": 2, "n_steps": 3}
    values.update(kw)
    return PMIConfig(**values)


def _batch(cfg: PMIConfig, b: int = 3, t: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t - 3 :] = 0  # a padded story
    ids[mask == 0] = 0
    return ids, mask


# -- single equations --------------------------------------------------------------------------
def test_write_softmax_runs_over_inputs_and_ignores_padding():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 3, 4, 8, generator=g), torch.randn(2, 3, 7, 8, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    w = pmi.attention_weights(q, k, mask)
    for b in range(2):
        for h in range(3):
            for n in range(4):
                real = [j for j in range(7) if mask[b, j]]
                logits = [float(q[b, h, n] @ k[b, h, j]) / math.sqrt(8) for j in real]
                top = max(logits)
                z = sum(math.exp(s - top) for s in logits)
                for j in range(7):
                    expected = math.exp(logits[real.index(j)] - top) / z if j in real else 0.0
                    assert w[b, h, n, j].item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 4))


def test_topk_keeps_exactly_k_strongest_inputs_per_slot():
    g = torch.Generator().manual_seed(2)
    w = torch.rand(2, 3, 8, 11, generator=g).softmax(-1)
    kept = pmi.topk_mask(w, 5)
    assert ((kept > 0).sum(-1) == 5).all()
    for row, out in zip(w.reshape(-1, 11), kept.reshape(-1, 11), strict=True):
        order = sorted(range(11), key=lambda j: -row[j].item())
        for rank, j in enumerate(order):
            assert out[j].item() == (row[j].item() if rank < 5 else 0.0)
    assert torch.equal(pmi.topk_mask(w, 11), w)  # k >= inputs: nothing to mask


def test_gate_arithmetic():
    g = torch.Generator().manual_seed(3)
    cand, prev, i_log, f_log = (torch.randn(2, 4, 6, generator=g) for _ in range(4))
    new, i, f = pmi.gated_update(cand, prev, i_log, f_log, 0.25, 1.0)
    for idx in torch.cartesian_prod(torch.arange(2), torch.arange(4), torch.arange(6)):
        b, n, d = idx.tolist()
        ig = 1 / (1 + math.exp(-(i_log[b, n, d].item() + 0.25)))
        fg = 1 / (1 + math.exp(-(f_log[b, n, d].item() + 1.0)))
        assert i[b, n, d].item() == pytest.approx(ig, abs=1e-6)
        assert f[b, n, d].item() == pytest.approx(fg, abs=1e-6)
        expected = ig * math.tanh(cand[b, n, d].item()) + fg * prev[b, n, d].item()
        assert new[b, n, d].item() == pytest.approx(expected, abs=1e-5)


def test_consolidation_outer_product_and_the_reference_variant():
    g = torch.Generator().manual_seed(4)
    b, c, n, d = 2, 3, 4, 5
    ltm, wm = torch.randn(b, c, n, d, generator=g), torch.randn(b, n, d, generator=g)
    outer = pmi.consolidation_outer_product(ltm, wm)
    rowsum = pmi.consolidation_rowsum_scaled_wm(ltm, wm)
    for bi in range(b):
        assoc = sum(torch.outer(wm[bi, m], wm[bi, m]) for m in range(n))  # D x D
        for ci in range(c):
            for ni in range(n):
                expected = ltm[bi, ci, ni] @ assoc / (n * math.sqrt(d))
                assert torch.allclose(outer[bi, ci, ni], expected, atol=1e-5)
                # the reference einsum "bmnd,bnf->bmnf": sum over d of the per-slot outer product
                per_slot = torch.outer(ltm[bi, ci, ni], wm[bi, ni])  # d x f
                assert torch.allclose(rowsum[bi, ci, ni], per_slot.sum(0), atol=1e-5)
    ref = torch.einsum("bmnd,bnf->bmnf", ltm, wm)
    assert torch.allclose(rowsum, ref, atol=1e-5)
    # the reference variant is a scalar times each slot's WM row; the outer product is not
    ratio = rowsum / wm[:, None]
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4)
    ratio = outer / wm[:, None]
    assert not torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-2)


def test_integration_mix():
    u_w, u_wl = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(pmi.integrate(u_w, u_wl, 0.7), 0.7 * u_w + 0.3 * u_wl)
    gate = torch.rand(2, 3, 1)
    assert torch.allclose(pmi.integrate(u_w, u_wl, gate), gate * u_w + (1 - gate) * u_wl)


# -- a whole step against a slow re-computation from its own sites -------------------------
def _slow_attention(queries, memory, proj, n_heads, topk=None, key_mask=None):
    """Per batch, head and query: softmax of scaled dot products, optional top-k, then values."""
    b, lq, d = queries.shape
    dh = d // n_heads
    q, k, v = proj.q(queries), proj.k(memory), proj.v(memory)
    out = torch.zeros(b, lq, d)
    for bi in range(b):
        for h in range(n_heads):
            sl = slice(h * dh, (h + 1) * dh)
            for i in range(lq):
                scores = torch.stack(
                    [q[bi, i, sl] @ k[bi, j, sl] / math.sqrt(dh) for j in range(memory.shape[1])]
                )
                if key_mask is not None:
                    scores = scores.masked_fill(~key_mask[bi], float("-inf"))
                w = scores.softmax(0)
                if topk is not None and topk < len(w):
                    cut = w.sort(descending=True).values[topk - 1]
                    w = torch.where(w >= cut, w, torch.zeros_like(w))
                out[bi, i, sl] = (w[:, None] * v[bi, :, sl]).sum(0)
    return out


@pytest.mark.parametrize("integration", ["fixed", "learned_gate"])
def test_memory_step_matches_slow_recomputation(integration):
    torch.manual_seed(0)
    cfg = _cfg(n_slots=4, n_segments=2, write_topk=3, read_topk=2, integration=integration)
    model = build_model(cfg).eval()
    ids, mask = _batch(cfg)
    lm = pmi.LoadedModel("test", "pmi", model, None, pmi.site_map(cfg), 3, 16, "pmi")
    t = 1  # a middle step: inputs are the previous step's memories
    names = [f"steps.{t}.{s}" for s in pmi.PMI_STEP_SITES]
    names += [f"blocks.{t}.resid_pre", f"steps.{t - 1}.wm", f"steps.{t - 1}.ltm"]
    cache = capture(lm, {"input_ids": ids, "attention_mask": mask}, names, progress=False)
    step = model.block(t).mixer
    x = model.block(t).mix_norm(cache[f"blocks.{t}.resid_pre"])
    wm0, ltm0 = cache[f"steps.{t - 1}.wm"], cache[f"steps.{t - 1}.ltm"]
    real = mask.bool()
    with torch.no_grad():
        written = _slow_attention(wm0, x, step.write, 2, topk=3, key_mask=real)
        memory = step.write_norm(wm0 + written)
        cand = step.write_mlp_norm(memory + step.write_mlp(memory))
        assert torch.allclose(cache[f"steps.{t}.write.candidate"], cand, atol=1e-5)
        assert ((cache[f"steps.{t}.write.attn"] > 0).sum(-1) == 3).all()
        new_wm = cache[f"steps.{t}.gate.input"] * torch.tanh(cand)
        new_wm = new_wm + cache[f"steps.{t}.gate.forget"] * wm0
        assert torch.allclose(cache[f"steps.{t}.wm"], new_wm, atol=1e-5)
        assoc = torch.einsum("bnd,bne->bde", new_wm, new_wm) / (4 * math.sqrt(16))
        delta = torch.einsum("bcnd,bde->bcne", ltm0, assoc)
        assert torch.allclose(cache[f"steps.{t}.consolidation.delta"], delta, atol=1e-5)
        new_ltm = step.ltm_norm(ltm0 + delta)
        assert torch.allclose(cache[f"steps.{t}.ltm"], new_ltm, atol=1e-5)
        u_w = _slow_attention(x, new_wm, step.read_wm, 2)
        assert torch.allclose(cache[f"steps.{t}.read.wm"], u_w, atol=1e-5)
        u_l = _slow_attention(x, new_ltm.mean(1), step.read_ltm, 2, topk=2)
        assert torch.allclose(cache[f"steps.{t}.read.ltm"], u_l, atol=1e-5)
        u_wl = _slow_attention(u_l, u_w, step.correction, 2, key_mask=real)
        assert torch.allclose(cache[f"steps.{t}.correction.out"], u_wl, atol=1e-5)
        gate = cache[f"steps.{t}.integration.gate"]
        if integration == "fixed":
            assert torch.all(gate == 0.7)
        else:
            assert not torch.allclose(gate, gate.flatten()[0].expand_as(gate))
        assert torch.allclose(
            cache[f"steps.{t}.integrated"], gate * u_w + (1 - gate) * u_wl, atol=1e-5
        )


# -- shapes, sites, hooks ----------------------------------------------------------------------
@pytest.mark.parametrize(("n", "c", "d"), [(4, 1, 8), (8, 5, 16), (3, 2, 24)])
def test_memory_shapes_and_every_site_runs_once(n, c, d):
    cfg = _cfg(n_slots=n, n_segments=c, d_model=d, n_heads=2, write_topk=2, read_topk=2)
    model = build_model(cfg).eval()
    ids, mask = _batch(cfg, b=2, t=7)
    sites = pmi.site_map(cfg)
    calls = {name: 0 for name in sites}
    shapes = {}

    def counter(name):
        def fn(value):
            calls[name] += 1
            shapes[name] = tuple(value.shape)

        return fn

    lm = pmi.LoadedModel("test", "pmi", model, None, sites, cfg.n_steps, d, "pmi")
    with hooks(lm, {name: counter(name) for name in sites}):
        lm(input_ids=ids, attention_mask=mask)
    assert all(v == 1 for v in calls.values()), {k: v for k, v in calls.items() if v != 1}
    h = cfg.n_heads
    assert shapes["memory.wm_init"] == (2, n, d) and shapes["memory.ltm_init"] == (2, c, n, d)
    for t in range(cfg.n_steps):
        assert shapes[f"steps.{t}.write.attn_pre_topk"] == (2, h, n, 7)
        assert shapes[f"steps.{t}.wm"] == (2, n, d)
        assert shapes[f"steps.{t}.ltm"] == (2, c, n, d)
        assert shapes[f"steps.{t}.read.ltm_attn"] == (2, h, 7, n)
        assert shapes[f"steps.{t}.correction.attn"] == (2, h, 7, 7)
        assert shapes[f"blocks.{t}.resid_post"] == (2, 7, d)
    # the weights are shared, but every step has its own hook points
    assert len(model.blocks) == 1
    assert len({id(model.get_submodule(s.module)) for s in sites.values()}) == len(sites)
    assert all(not m._forward_hooks for m in model.modules())


def test_hook_replacing_a_site_changes_the_forward_downstream():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg).eval()
    ids, mask = _batch(cfg)
    lm = pmi.LoadedModel("test", "pmi", model, None, pmi.site_map(cfg), 3, 16, "pmi")
    base = lm(input_ids=ids, attention_mask=mask).logits
    for site in ("steps.2.read.wm", "steps.1.write.attn", "steps.0.wm"):
        with hooks(lm, {site: lambda v: torch.zeros_like(v)}):
            ablated = lm(input_ids=ids, attention_mask=mask).logits
        assert (base - ablated).abs().max() > 1e-3, site
    assert torch.equal(lm(input_ids=ids, attention_mask=mask).logits, base)


def test_padding_does_not_change_a_story():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg).eval()
    ids, mask = _batch(cfg, b=1, t=6)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    pmask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model(ids, mask).logits
        b = model(padded, pmask).logits
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("architecture", pmi.ARCHITECTURES)
def test_positions_from_end_count_back_from_the_last_real_token(architecture):
    torch.manual_seed(0)
    cfg = _cfg(architecture=architecture, positions="from_end", max_positions=12)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.embed.weight.zero_()
        model.pos_embed.weight.copy_(torch.arange(12.0)[:, None].expand(12, 16))
    lm = pmi.LoadedModel("test", "pmi", model, None, pmi.site_map(cfg), 3, 16, "pmi")
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 10], [0, 0, 7, 8, 9, 10]])
    mask = (ids > 0).long()
    cache = capture(lm, {"input_ids": ids, "attention_mask": mask}, ["blocks.0.resid_pre"])
    position = cache["blocks.0.resid_pre"][..., 0]
    cache.close()
    assert position[0, :4].tolist() == [3, 2, 1, 0]  # right padding
    assert position[1].tolist() == [5, 4, 3, 2, 1, 0]
    assert position[2, 2:].tolist() == [3, 2, 1, 0]  # left padding: the same count
    # a story's last tokens sit at the same positions whatever comes before them
    story = torch.randint(1, cfg.vocab_size, (1, 7))
    model = build_model(cfg).eval()
    longer = torch.cat([torch.randint(1, cfg.vocab_size, (1, 3)), story], 1)
    padded = torch.cat([story, torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model(story, torch.ones_like(story)).logits
        b = model(padded, (padded > 0).long()).logits
        c = model(longer, torch.ones_like(longer)).logits
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-3)
    with pytest.raises(DataError, match="positions must be one of"):
        _cfg(positions="relative")


def test_control_has_attention_patterns_and_unshared_layers():
    cfg = _cfg(architecture="transformer", share_layers=False)
    model = build_model(cfg).eval()
    sites = pmi.site_map(cfg)
    assert "blocks.0.attn.pattern" in sites and not any(s.startswith("steps.") for s in sites)
    assert len(model.blocks) == cfg.n_steps
    fresh = type(model)(model.config)  # what LoadedModel.random_init_copy does
    assert fresh.config is model.config


def test_bad_configs_are_refused():
    with pytest.raises(DataError, match="consolidation must be one of"):
        _cfg(consolidation="einsum")
    with pytest.raises(DataError, match="integration must be one of"):
        _cfg(integration="mean")
    with pytest.raises(DataError, match="not divisible"):
        _cfg(d_model=10, n_heads=4)
    model = build_model(_cfg()).eval()
    with pytest.raises(DataError, match="no real tokens"):
        model(torch.ones(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))


def test_save_and_load_round_trip(tmp_path):
    from workbench.models import load_model

    torch.manual_seed(0)
    cfg = _cfg(vocab_size=6 + 3, answer_labels=list("abcde"))
    model = build_model(cfg).eval()
    pmi.save_model(model, tmp_path / "m", ["x", "y", "z"])
    lm = load_model(tmp_path / "m")
    assert lm.family == "pmi" and lm.n_layers == 3
    enc = lm.encode_texts(["x y z", "z"])
    assert enc["input_ids"][0].tolist() == [6, 7, 8]
    with torch.no_grad():
        expected = model.half().float()(enc["input_ids"], enc["attention_mask"]).logits
    assert torch.allclose(lm(**enc).logits, expected, atol=1e-5)


def test_reference_consolidation_vanishes_after_an_untrained_layernorm():
    """The reference einsum scales each WM row by its LTM row's sum; rows leaving a LayerNorm
    with unit gain and zero bias sum to zero, so from step 1 on it adds nothing at init. The
    outer-product association does not have this blind spot."""
    torch.manual_seed(0)
    ids, mask = _batch(_cfg())
    deltas = {}
    for mode in pmi.CONSOLIDATIONS:
        cfg = _cfg(consolidation=mode)
        lm = pmi.LoadedModel(
            "t", "pmi", build_model(cfg).eval(), None, pmi.site_map(cfg), 3, 16, "pmi"
        )
        sites = [f"steps.{t}.consolidation.delta" for t in range(3)]
        cache = capture(lm, {"input_ids": ids, "attention_mask": mask}, sites, progress=False)
        deltas[mode] = [cache[s].abs().max().item() for s in sites]
    assert deltas["rowsum_scaled_wm"][0] > 1e-2  # the learned initial LTM is not normalised
    assert max(deltas["rowsum_scaled_wm"][1:]) < 1e-4
    assert min(deltas["outer_product"]) > 1e-2

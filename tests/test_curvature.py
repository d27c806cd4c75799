"""The curvature probe: factors against explicit computations, selection against the heap,
exact restoration, metrics on hand-made sequences, and the edit on the zoo LM's canaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import curvature
from probes.curvature import compute
from probes.curvature import probe as curvature_probe
from probes.curvature.data import memorization_set
from probes.curvature.edit import kfac_edit, kfac_weights, svd_weights
from probes.curvature.factors import KFACFactors, collect_factors
from probes.curvature.widget import CurvatureExplorer
from workbench.data.canaries import VOCABULARY
from workbench.edit import edited, edited_copy
from workbench.errors import ConfigError, DataError, FamilyError, SiteError
from workbench.models import load_model
from workbench.threads import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest on one thread, and a shared machine punishes more."""
    with torch_threads(1):
        yield


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def _same_state(model, saved) -> bool:
    now = model.model.state_dict()
    return all(torch.equal(now[k], v) for k, v in saved.items())


def _close(x: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal up to float32 rounding, measured against the matrix's largest entry."""
    x, ref = x.detach(), ref.detach()
    return float((x - ref).abs().max() / ref.abs().max()) < tol


def _reference_factors(lm, ids, mask, names):
    """A and G from plain module hooks and one outer product per token position."""
    inputs, outputs, handles = {}, {}, []
    for name in names:
        module = lm.model.get_submodule(lm.weights[name].module)

        def hook(_module, args, output, name=name):
            inputs[name], outputs[name] = args[0], output

        handles.append(module.register_forward_hook(hook))
    try:
        logits = lm.model(input_ids=ids, attention_mask=mask).logits
    finally:
        for h in handles:
            h.remove()
    valid = torch.zeros_like(mask, dtype=torch.bool)
    valid[:, :-1] = (mask[:, :-1] & mask[:, 1:]).bool()
    token_loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none"
    )
    grads = torch.autograd.grad((token_loss * valid[:, :-1]).sum(), [outputs[n] for n in names])
    a = {n: 0.0 for n in names}
    g = {n: 0.0 for n in names}
    positions = [(b, t) for b in range(ids.shape[0]) for t in range(ids.shape[1]) if valid[b, t]]
    for name, grad in zip(names, grads, strict=True):
        for b, t in positions:
            x, d = inputs[name][b, t].double(), grad[b, t].double()
            a[name] = a[name] + torch.outer(x, x)
            g[name] = g[name] + torch.outer(d, d)
    return {n: a[n] / len(positions) for n in names}, {n: g[n] / len(positions) for n in names}


# -- factors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_factors_match_explicit_per_position_outer_products(scratch_models, kind):
    lm = load_model(scratch_models[kind])
    names = lm.weight_names(r"mlp\.W_")
    assert len(names) == (6 if kind == "llama" else 4)  # Llama: gate, up and down
    ids = torch.randint(6, 250, (5, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding contributes nothing
    saved = _state(lm)
    factors = collect_factors(
        lm,
        {"input_ids": ids, "attention_mask": mask},
        names,
        labels="gold",
        batch_size=2,
        progress=False,
    )
    ref_a, ref_g = _reference_factors(lm, ids, mask, names)
    assert factors.n_positions == 5 * 8 - 3
    for name in names:
        assert factors.a[name].dtype == torch.float64
        assert _close(factors.a[name], ref_a[name]) and _close(factors.g[name], ref_g[name])
    assert _same_state(lm, saved)
    assert all(p.grad is None for p in lm.model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_sampled_labels_estimate_the_true_fisher(scratch_models):
    """G from sampled labels converges to E_y[g gᵀ] under the model's own prediction."""
    lm = load_model(scratch_models["gpt2"])
    name = "blocks.1.mlp.W_in"
    ids = torch.tensor([[7, 19, 33, 48, 5]])
    captured = {}
    module = lm.model.get_submodule(lm.weights[name].module)
    handle = module.register_forward_hook(lambda _m, _a, out: captured.__setitem__("out", out))
    try:
        logits = lm.model(input_ids=ids).logits[0]
    finally:
        handle.remove()
    out = captured["out"]
    exact = torch.zeros(out.shape[-1], out.shape[-1], dtype=torch.float64)
    vocab = logits.shape[-1]
    for s in range(ids.shape[1] - 1):  # each predicted position's loss
        p = torch.softmax(logits[s].double(), -1)
        fisher = torch.diag(p) - torch.outer(p, p)  # E_y[(p - e_y)(p - e_y)ᵀ]
        (jac,) = torch.autograd.grad(
            logits[s], out, torch.eye(vocab), retain_graph=True, is_grads_batched=True
        )
        for t in range(s + 1):
            j = jac[:, 0, t].double()  # (vocab, out)
            exact += j.T @ fisher @ j
    exact /= ids.shape[1] - 1

    repeated = ids.repeat(3000, 1)
    sampled = collect_factors(lm, {"input_ids": repeated}, [name], batch_size=1000, progress=False)
    gold = collect_factors(lm, {"input_ids": ids}, [name], labels="gold", progress=False)
    error = (sampled.g[name] - exact).norm() / exact.norm()
    assert error < 0.08, error
    assert (gold.g[name] - exact).norm() / exact.norm() > 0.3  # the test can tell them apart
    assert _close(sampled.a[name], gold.a[name])  # A does not depend on labels


def test_sampling_is_deterministic_under_the_seed(scratch_models):
    lm = load_model(scratch_models["gpt_neox"])
    ids = {"input_ids": torch.randint(6, 250, (4, 7), generator=torch.Generator().manual_seed(1))}
    one = collect_factors(lm, ids, seed=3, progress=False)
    two = collect_factors(lm, ids, seed=3, progress=False)
    other = collect_factors(lm, ids, seed=4, progress=False)
    name = one.names[0]
    assert torch.equal(one.g[name], two.g[name])
    assert not torch.equal(one.g[name], other.g[name])


def test_factors_save_and_load_exactly(scratch_models, tmp_path):
    lm = load_model(scratch_models["gpt2"])
    factors = collect_factors(lm, {"input_ids": torch.randint(6, 250, (3, 6))}, progress=False)
    factors.save(tmp_path / "f" / "factors.safetensors")
    back = KFACFactors.load(tmp_path / "f" / "factors.safetensors")
    assert back.names == factors.names and back.n_positions == factors.n_positions
    assert back.model_digest == lm.digest()
    for n in factors.names:
        assert torch.equal(back.a[n], factors.a[n]) and torch.equal(back.g[n], factors.g[n])
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "factors.json",
        "factors.safetensors",
    ]
    with pytest.raises(DataError, match=r"ends in \.safetensors"):
        factors.save(tmp_path / "f" / "factors.pt")
    kept = factors.eigenbases(progress=False)
    released = back.eigenbases(progress=False, release=True)
    assert not back.a and not back.g  # each weight's factors dropped once decomposed
    for n in factors.names:
        assert torch.equal(released[n].u_g, kept[n].u_g) and torch.equal(released[n].mu, kept[n].mu)


def _tiny_vit_classifier(folder):
    import transformers as tf

    config = tf.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=4,
    )
    torch.manual_seed(0)
    tf.ViTForImageClassification(config).save_pretrained(folder)
    return load_model(folder)


def test_vit_classifier_factors_and_edit(tmp_path):
    lm = _tiny_vit_classifier(tmp_path / "vit")
    names = lm.weight_names(r"mlp\.W_")
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    factors = collect_factors(
        lm, images, names, labels="gold", gold=labels, batch_size=4, progress=False
    )
    assert factors.n_positions == 6 * 17  # 16 patches + CLS per image
    # Reference: every token of every image, gradient of the summed per-image loss.
    pixels = lm.encode_images(images)["pixel_values"]
    inputs, outputs, handles = {}, {}, []
    for name in names:
        module = lm.model.get_submodule(lm.weights[name].module)

        def hook(_module, args, output, name=name):
            inputs[name], outputs[name] = args[0], output

        handles.append(module.register_forward_hook(hook))
    logits = lm.model(pixel_values=pixels).logits
    for h in handles:
        h.remove()
    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    grads = torch.autograd.grad(loss, [outputs[n] for n in names])
    for name, grad in zip(names, grads, strict=True):
        x = inputs[name].reshape(-1, inputs[name].shape[-1]).double()
        d = grad.reshape(-1, grad.shape[-1]).double()
        assert _close(factors.a[name], x.T @ x / len(x))
        assert _close(factors.g[name], d.T @ d / len(d))
    saved = _state(lm)
    bases = factors.eigenbases()
    with kfac_edit(lm, bases, 0.5):
        assert not _same_state(lm, saved)
    assert _same_state(lm, saved)


def test_headless_vit_is_refused(scratch_models):
    lm = load_model(scratch_models["vit"])
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(FamilyError, match="no classification head"):
        collect_factors(lm, images, progress=False)


# -- selection and edit ------------------------------------------------------------------------
def _random_spectrum(rng, size, zeros=0):
    values = np.sort(rng.lognormal(0, rng.uniform(0.5, 3), size))[::-1].copy()
    if zeros:
        values[-zeros:] = 0.0
    return torch.tensor(values)


def test_vectorised_selection_equals_heap_selection_on_random_spectra():
    rng = np.random.default_rng(0)
    for trial in range(40):
        m, n = rng.integers(1, 70, size=2)
        lam = _random_spectrum(rng, m, zeros=int(m // 4) if trial % 3 == 0 else 0)
        mu = _random_spectrum(rng, n)
        for rho in (0.0, 0.05, 0.5, 0.9, 0.97, 0.999, 1.0):
            counts = compute.select_by_mass(lam, mu, rho)
            mask = compute.counts_to_mask(counts, n)
            assert torch.equal(mask, compute.select_by_mass_heap(lam, mu, rho)), (trial, rho)
            if 0 < rho < 1:
                mass = torch.outer(lam, mu)
                kept = float(mass[mask].sum())
                assert kept >= rho * float(mass.sum()) * (1 - 1e-12)
                smallest = float(mass[mask].min())
                assert kept - smallest < rho * float(mass.sum())  # no component to spare


def test_large_selection_takes_the_bisection_path():
    lam = torch.arange(1, 1025, dtype=torch.float64) ** -1.2
    mu = torch.arange(1, 257, dtype=torch.float64) ** -1.2
    counts = compute.select_by_mass(lam, mu, 0.97)
    assert counts.sum() > compute.FINAL_CANDIDATES  # more than one explicit band
    assert torch.equal(
        compute.counts_to_mask(counts, 256), compute.select_by_mass_heap(lam, mu, 0.97)
    )


def _basis(seed=0, out_dim=12, in_dim=7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(200, in_dim, generator=gen, dtype=torch.float64) * torch.linspace(
        3, 0.1, in_dim
    )
    d = torch.randn(200, out_dim, generator=gen, dtype=torch.float64) * torch.linspace(
        2, 0.05, out_dim
    )
    weight = torch.randn(out_dim, in_dim, generator=gen, dtype=torch.float64)
    return weight, compute.eigendecompose(x.T @ x / 200, d.T @ d / 200)


def test_full_mask_reconstructs_the_weight_and_rho_one_is_identity():
    weight, basis = _basis()
    full = torch.full((12,), 7, dtype=torch.int64)
    torch.testing.assert_close(
        compute.masked_weight(weight, basis, full), weight, rtol=0, atol=1e-12
    )
    assert torch.equal(compute.kfac_weight(weight.float(), basis, 1.0), weight.float())
    near_one = compute.kfac_weight(weight, basis, 1 - 1e-12)
    torch.testing.assert_close(near_one, weight, rtol=0, atol=1e-9)


def test_edit_masks_exactly_the_selected_components_in_the_eigenbasis():
    weight, basis = _basis(seed=1)
    counts = compute.select_by_mass(basis.lam, basis.mu, 0.8)
    mask = compute.counts_to_mask(counts, 7)
    assert 0 < mask.sum() < mask.numel()
    new = compute.masked_weight(weight, basis, counts)
    c_new = compute.coordinates(new, basis)
    c_old = compute.coordinates(weight, basis)
    torch.testing.assert_close(c_new[mask], c_old[mask], rtol=0, atol=1e-12)
    torch.testing.assert_close(
        c_new[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64), rtol=0, atol=1e-12
    )


def test_eigendecomposition_is_sorted_and_clamped():
    a = torch.tensor([[1.0, 0.0], [0.0, -1e-12]], dtype=torch.float64)
    values, vectors = compute.symmetric_eigh(a)
    assert values.tolist() == [1.0, 0.0]
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(2, dtype=torch.float64))
    with pytest.raises(DataError, match="NaN"):
        compute.symmetric_eigh(torch.tensor([[float("nan")]]))


def test_svd_truncation_keeps_the_requested_energy():
    weight = torch.diag(torch.tensor([3.0, 2.0, 1.0]))  # energies 9, 4, 1 of 14
    kept, rank = compute.svd_weight(weight, 0.9)
    assert rank == 2 and torch.allclose(kept, torch.diag(torch.tensor([3.0, 2.0, 0.0])), atol=1e-6)
    assert compute.svd_weight(weight, 0.5)[1] == 1
    assert torch.equal(compute.svd_weight(weight, 1.0)[0], weight)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_edit_context_restores_weights_bit_exactly_after_an_exception(scratch_models, kind):
    lm = load_model(scratch_models[kind])
    factors = collect_factors(lm, {"input_ids": torch.randint(6, 250, (4, 8))}, progress=False)
    bases = factors.eigenbases()
    saved = _state(lm)
    new = kfac_weights(lm, bases, 0.6)
    with pytest.raises(RuntimeError, match="inside"), edited(lm, new):
        for name, matrix in new.items():  # the edit is live, through the (out, in) views
            assert torch.equal(lm.weight(name), matrix)
        raise RuntimeError("inside")
    assert _same_state(lm, saved)
    copy = edited_copy(lm, new)
    assert _same_state(lm, saved)
    assert all(torch.equal(copy.weight(n), m) for n, m in new.items())
    assert copy.digest() != lm.digest()
    svd_new, ranks = svd_weights(lm, factors.names, 0.9)
    with edited(lm, svd_new):
        assert all(0 < r < 32 for r in ranks.values())
    assert _same_state(lm, saved)


def test_factors_of_another_model_are_refused(scratch_models, tmp_path):
    from workbench.models.scratch import save_random_model

    narrow = load_model(save_random_model(tmp_path / "narrow", "gpt2", d_model=16))
    factors = collect_factors(narrow, {"input_ids": torch.randint(6, 250, (2, 5))}, progress=False)
    lm = load_model(scratch_models["gpt2"])
    with pytest.raises(DataError, match="collect factors on this model"):
        factors.check_model(lm)
    with pytest.raises(DataError, match="were the factors collected on this model"):
        kfac_weights(lm, factors.eigenbases(), 0.9)


def test_edit_refuses_wrong_shapes(scratch_models):
    lm = load_model(scratch_models["gpt2"])
    with (
        pytest.raises(DataError, match=r"\(out, in\)"),
        edited(lm, {"blocks.0.mlp.W_in": torch.zeros(32, 128)}),
    ):
        pass


# -- metrics -----------------------------------------------------------------------------------
def test_levenshtein_metrics_on_hand_made_sequences():
    targets = [[1, 2, 3, 4]] * 5
    generated = [
        [1, 2, 3, 4],  # verbatim
        [1, 2, 9, 4],  # one substitution: similarity 0.75, loose
        [1, 9, 9, 4],  # two: 0.5, not loose
        [9, 1, 2, 3, 4],  # an insertion shifts everything; cut to 4 tokens -> distance 2
        [5, 6, 7, 8],
    ]
    rec = compute.recitation(generated, targets, loose_threshold=0.75)
    assert rec.distance.tolist() == [0, 1, 2, 2, 4]
    assert rec.normalised.tolist() == [0.0, 0.25, 0.5, 0.5, 1.0]
    assert rec.strict.tolist() == [True, False, False, False, False]
    assert rec.loose.tolist() == [True, True, False, False, False]


def test_ndcg_against_the_base_ranking():
    base = torch.tensor([[1, 2, 3]])
    assert float(compute.ndcg_at_k(base, base)) == pytest.approx(1.0)
    assert float(compute.ndcg_at_k(base, torch.tensor([[7, 8, 9]]))) == 0.0
    swapped = float(compute.ndcg_at_k(base, torch.tensor([[2, 1, 3]])))
    ideal = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert swapped == pytest.approx((2 + 3 / np.log2(3) + 1 / np.log2(4)) / ideal)


def test_auc():
    assert compute.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert compute.auc(np.array([1.0]), np.array([1.0])) == 0.5


# -- the probe ---------------------------------------------------------------------------------
def test_bad_input_fails_before_work(scratch_models, monkeypatch):
    bert = load_model(scratch_models["bert"])
    with pytest.raises(FamilyError, match="accepts causal-lm"):
        curvature.run(bert)
    lm = load_model(scratch_models["gpt2"])
    with pytest.raises(ConfigError, match="rho"):
        curvature.Config(rho=1.5)
    with pytest.raises(ConfigError, match="rho must be a finite number"):
        curvature.Config(rho=float("nan"))
    with pytest.raises(ConfigError, match="sweep values"):
        curvature.Config(sweep=(0.9, 0.0))
    with pytest.raises(ConfigError, match="labels must be one of"):
        curvature.Config(labels="argmax")
    with pytest.raises(ConfigError, match="factor_tokens must lie in"):
        curvature.Config(factor_tokens=10**10)
    with pytest.raises(ConfigError, match="held_out_tokens must lie in"):
        curvature.Config(held_out_tokens=8, seq_len=64)
    with pytest.raises(ConfigError, match="regular expression"):
        curvature.Config(weights="mlp(")
    with pytest.raises(DataError, match="unknown to"):
        curvature.run(lm)  # its vocabulary is w0..w249: the shipped English is all unknown

    def science_ran(*args):
        raise AssertionError("the model check must refuse before the science starts")

    monkeypatch.setattr(curvature_probe, "_run", science_ran)
    with pytest.raises(SiteError, match="no weight"):
        curvature.run(lm, curvature.Config(weights=r"mlp\.W_nothing"))


@pytest.fixture(scope="module")
def zoo_lm_and_result():
    lm = load_model("zoo:gpt2-canaries")
    saved = _state(lm)
    config = curvature.Config(sweep=(0.97,), svd_sweep=(0.7, 0.99), held_out_tokens=12800)
    result = curvature.run(lm, config)
    assert _same_state(lm, saved)
    return lm, result


@pytest.mark.slow
def test_zoo_edit_removes_recitation_of_frequent_canaries_at_under_one_percent(zoo_lm_and_result):
    lm, result = zoo_lm_and_result
    m = result.metrics
    for group in ("x16", "x64"):  # the unedited model recites them all, the edit none
        assert m["base"]["by_group"][group]["strict"] == 1.0
        assert m["kfac"]["by_group"][group]["strict"] == 0.0
        assert m["kfac"]["by_group"][group]["loose"] == 0.0
    assert m["base"]["by_group"]["unseen"]["loose"] == 0.0
    assert 0.0 < m["perplexity_change_pct"] < 1.0
    # SVD truncation at the same perplexity keeps reciting: the basis matters, not the budget.
    assert abs(m["svd_matched_perplexity"] / m["perplexity_after"] - 1) < 0.002
    assert m["svd_strict_at_matched_perplexity"] >= 0.5
    # Recitation is gone but a likelihood trace is left: memorized still beat unseen canaries.
    assert m["kfac"]["nll_memorized"] < m["kfac"]["nll_control"] - 2.0
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in lm.model.modules())
    assert result.provenance["model_digest"] == lm.digest()
    assert set(result.figures) >= {"tradeoff", "recitations", "spectra", "mass", "activation_ratio"}


@pytest.mark.slow
def test_widget_slider_changes_the_table_and_the_highlight(zoo_lm_and_result):
    _, result = zoo_lm_and_result
    explorer = CurvatureExplorer(result)
    assert explorer.strength.value == result.metrics["rho"]
    at_default = explorer.table_column(4).copy()
    assert not any(cell.endswith("(0.00)") for cell in at_default[:6])  # nothing recited
    explorer.strength.value = 0.97
    i = list(result.arrays["kfac_sweep_value"]).index(0.97)
    (highlighted,) = [t for t in explorer.tradeoff.figure.data if t.name == "selected"]
    assert highlighted.x[0] == result.arrays["kfac_sweep_perplexity"][i]
    shown = explorer.table_column(4)
    assert any(cell.endswith("(0.00)") for cell in shown[:6])  # ρ = 0.97 still recites some
    assert "K-FAC ρ=0.97" in explorer.info.value
    explorer.method.value = "SVD (energy)"
    assert explorer.strength.value == 0.99
    assert "SVD energy=0.99" in explorer.info.value


def test_vocabulary_model_runs_end_to_end_quickly(tmp_path):
    """A random GPT-2 over the corpus's words: nothing is memorized, nothing breaks."""
    from workbench.models.scratch import save_random_model

    folder = save_random_model(tmp_path / "m", "gpt2", words=list(VOCABULARY), n_positions=64)
    lm = load_model(folder)
    config = curvature.Config(
        sweep=(0.9,), svd_sweep=(0.9,), match_svd=False, factor_tokens=2048, held_out_tokens=1024
    )
    result = curvature.run(lm, config)
    assert result.metrics["strict_before"] == 0.0
    assert "svd_matched" not in result.metrics
    bands = len(result.arrays["band_labels"])
    assert result.arrays["ratio_kfac_memorized"].shape == (2, bands)  # W_in of both blocks
    assert result.arrays["ratio_svd_control"].shape == (2, bands)


def test_factors_given_in_the_data_are_used_instead_of_collected(tmp_path, monkeypatch):
    """``CurvatureData(canaries, factors)`` skips the collection and gives the same numbers."""
    from workbench.models.scratch import save_random_model

    folder = save_random_model(tmp_path / "m", "gpt2", words=list(VOCABULARY), n_positions=64)
    lm = load_model(folder)
    config = curvature.Config(
        sweep=(0.9,), svd_sweep=(0.9,), match_svd=False, factor_tokens=2048, held_out_tokens=1024
    )
    canaries = memorization_set(lm, config)
    factors = curvature_probe.factors_for(lm, config)
    collected = curvature.run(lm, config, curvature.CurvatureData(canaries))

    def no_collection(*args, **kwargs):
        raise AssertionError("the factors were collected although the data holds them")

    monkeypatch.setattr(curvature_probe, "collect_factors", no_collection)
    reused = curvature.run(lm, config, curvature.CurvatureData(canaries, factors))
    for key in ("perplexity_before", "perplexity_after", "kept_components", "factor_positions"):
        assert reused.metrics[key] == collected.metrics[key], key
    for key in ("kfac_sweep_perplexity", "eig_G.blocks.0.mlp.W_in", "ratio_kfac_control"):
        np.testing.assert_array_equal(reused.arrays[key], collected.arrays[key])
    with pytest.raises(DataError, match="lack"):
        every_mlp = curvature.Config(weights=r"mlp\.W_", sweep=(0.9,), svd_sweep=(0.9,))
        curvature.run(lm, every_mlp, curvature.CurvatureData(canaries, factors))
    with pytest.raises(DataError, match=r"CurvatureData\(canaries=..., factors=...\)"):
        curvature.run(lm, config, canaries)
    with pytest.raises(DataError, match="factors must be KFACFactors"):
        curvature.CurvatureData(canaries, factors.a)

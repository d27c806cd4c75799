"""The binding probe: its pieces on planted data, then whole runs on small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import binding
from probes.binding import compute
from probes.binding import probe as binding_probe
from probes.binding.widget import BindingExplorer
from workbench.data.scenes import make_binding_scenes, patch_labels
from workbench.errors import ConfigError, DataError, FamilyError
from workbench.models import load_model
from workbench.threads import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# -- planted data ------------------------------------------------------------------------------
def _planted_instances(n_images=60, side=6, d=24, rank=3, seed=0):
    """Patches carry a class code (two classes per image, so same class != same object) plus a
    per-instance code of norm 2 in a hidden ``rank``-dim subspace; positions carry nothing."""
    rng = np.random.default_rng(seed)
    n = side * side
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    inst_dirs, class_dirs = basis[:, :rank], basis[:, rank : rank + 4]
    class_codes = rng.normal(size=(4, 4)) * 2.0
    ids = np.zeros((n_images, n), int)
    classes = np.zeros((n_images, n), int)
    x = np.zeros((n_images, n, d))
    for b in range(n_images):
        k = int(rng.integers(3, 6))
        inst = rng.integers(1, k + 1, size=n)
        cls = rng.integers(0, 2, size=k + 1)
        codes = rng.normal(size=(k + 1, rank))
        codes = 2.0 * codes / np.linalg.norm(codes, axis=1, keepdims=True)
        ids[b], classes[b] = inst, cls[inst] + 1
        x[b] = class_codes[cls[inst]] @ class_dirs.T + codes[inst] @ inst_dirs.T
        x[b] += rng.normal(size=(n, d)) * 0.5
    return torch.tensor(x, dtype=torch.float32), ids, classes, inst_dirs


def _fit_and_score(kind, x, ids, classes, side, train, test, rank=8):
    same, valid = (torch.from_numpy(a) for a in compute.pair_targets(ids[train]))
    scaler = compute.Standardiser.fit(x[train], torch.from_numpy(ids[train] > 0))
    probe = compute.fit_probe(kind, scaler(x[train]), same, valid, rank=rank)
    pairs = compute.PairSet.build(ids[test], classes[test], (side, side), "exclude")
    scores = pairs.take(compute.score_pairs(probe, scaler(x[test])).numpy())
    return probe, scaler, compute.pair_metrics(scores, pairs, far_distance=3.0)


def test_quadratic_probe_recovers_a_planted_low_rank_signal_and_linear_cannot():
    x, ids, classes, planted = _planted_instances()
    train, test = slice(0, 40), slice(40, 60)
    quad, scaler, m_quad = _fit_and_score("quadratic", x, ids, classes, 6, train, test)
    _, _, m_lin = _fit_and_score("linear", x, ids, classes, 6, train, test)
    assert m_quad["balanced_accuracy"] > 0.8
    assert m_lin["balanced_accuracy"] < 0.6  # an additive probe cannot compare two patches
    values, _ = compute.subspace_spectrum(quad.symmetric_matrix())
    assert abs(values[2]) > 1.5 * abs(values[3])  # a gap after the planted rank
    found = compute.binding_directions(quad, scaler, 3).numpy()
    overlap = float(((planted.T @ found) ** 2).sum())  # 3.0 = the same subspace
    assert overlap > 2.5
    _, _, m_r1 = _fit_and_score("lowrank", x, ids, classes, 6, train, test, rank=1)
    _, _, m_r3 = _fit_and_score("lowrank", x, ids, classes, 6, train, test, rank=3)
    assert m_r3["balanced_accuracy"] > m_r1["balanced_accuracy"] + 0.03


def _voronoi_ids(n_images, side, seed):
    """Objects that are blobs around random centres: being one object is mostly nearness."""
    rng = np.random.default_rng(seed)
    rows, cols = np.divmod(np.arange(side * side), side)
    ids = np.zeros((n_images, side * side), int)
    for b in range(n_images):
        centres = rng.uniform(0, side, size=(4, 2))
        d = np.hypot(rows[:, None] + 0.5 - centres[:, 0], cols[:, None] + 0.5 - centres[:, 1])
        ids[b] = d.argmin(1) + 1
    return ids


def test_distance_matched_metric_is_chance_when_distance_explains_everything():
    side, n = 8, 160
    ids = _voronoi_ids(n, side, seed=0)
    pairs = compute.PairSet.build(ids, ids, (side, side), "exclude")
    # a predictor that only knows the distance: plain accuracy high, matched exactly 0.5
    pred = pairs.distance <= 3.0
    assert compute.balanced_accuracy(pred, pairs.same) > 0.7
    assert (pred == pairs.same).mean() > 0.75
    assert compute.distance_matched_balanced_accuracy(pred, pairs.same, pairs.key) == pytest.approx(
        0.5
    )
    # a quadratic probe on one-hot positions, trained and tested on different images
    x = torch.from_numpy(compute.position_features(n, side * side))
    _, _, m = _fit_and_score("quadratic", x, ids, ids, side, slice(0, 120), slice(120, 160))
    assert m["accuracy"] > 0.72 and m["balanced_accuracy"] > 0.7
    assert abs(m["distance_matched_balanced_accuracy"] - 0.5) < 0.07


def test_distance_matched_metric_rewards_a_perfect_predictor():
    ids = _voronoi_ids(20, 8, seed=1)
    pairs = compute.PairSet.build(ids, ids, (8, 8), "exclude")
    assert compute.distance_matched_balanced_accuracy(pairs.same, pairs.same, pairs.key) == 1.0
    counts = compute.image_counts(pairs.same.astype(float) * 2 - 1, pairs, 20)
    assert compute.matched_from_counts(counts.sum(0)) == 1.0


def test_batched_pair_scores_equal_the_per_pair_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 5, generator=gen)
    attention = torch.randn(2, 7, 7, generator=gen)
    upper = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)
    for kind in compute.PROBES:
        probe = compute.PairProbe(kind, 5, rank=2, seed=1)
        with torch.no_grad():
            for p in probe.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        att = attention if kind == "attention" else None
        fast = compute.score_pairs(probe, x, att)
        slow = compute.pair_logits_loop(probe, x, att)
        assert torch.allclose(fast[:, upper], slow[:, upper], atol=1e-5), kind


def test_attention_scores_match_a_per_head_reference():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 5, 8, generator=gen), torch.randn(1, 5, 8, generator=gen)
    s = compute.attention_scores(q, k, n_heads=2)
    ref = np.zeros((5, 5))
    for h in range(2):
        qh, kh = q[0, :, 4 * h : 4 * h + 4], k[0, :, 4 * h : 4 * h + 4]
        ref += (qh @ kh.T).numpy() / 2 / 2.0
    assert np.allclose(s[0].numpy(), (ref + ref.T) / 2, atol=1e-6)


# -- labels from masks -------------------------------------------------------------------------
def test_mask_to_patch_pairs_match_a_hand_computed_example():
    # 4 x 4 pixels, 2-px patches -> a 2 x 2 grid: [[1, 0], [1, 2]] after the majority vote
    mask = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 0, 2],
            [1, 1, 2, 2],
            [1, 1, 2, 0],
        ],
        dtype=np.int16,
    )
    ids = patch_labels(mask, 2, background=-1)
    assert ids.tolist() == [[1, 0, 1, 2]]
    same, valid = compute.pair_targets(ids, "exclude")
    # usable patches 0, 2, 3 (objects); pairs (0,2) same; (0,3), (2,3) different
    assert {tuple(p) for p in np.argwhere(valid[0])} == {(0, 2), (0, 3), (2, 3)}
    assert {tuple(p) for p in np.argwhere(same[0])} == {(0, 2)}
    same, valid = compute.pair_targets(ids, "as_object")
    assert int(valid.sum()) == 6  # all i < j of 4 patches
    assert {tuple(p) for p in np.argwhere(same[0])} == {(0, 2)}
    # two background patches are the same "object" under as_object
    same2, _ = compute.pair_targets(np.array([[0, 0, 1, -1]]), "as_object")
    assert same2[0, 0, 1] and not same2[0, 0, 3]
    # ambiguous patches (winner < min_fraction) are never used
    amb = patch_labels(np.array([[1, 2], [3, 0]], np.int16), 2, background=-1)
    assert amb.tolist() == [[-1]]


# -- ablation ----------------------------------------------------------------------------------
def test_ablation_changes_the_forward_and_leaves_the_model_bit_identical(scratch_vit64):
    lm = scratch_vit64
    images = make_binding_scenes(3, size=64, seed=5).images
    batch = lm.encode_images(images)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    clean = lm(**batch).last_hidden_state
    directions = compute.random_directions(lm.d_model, 4, seed=0)
    for mode in ("remove", "shuffle"):
        with compute.ablate_subspace(lm, "blocks.0.resid_post", directions, mode=mode):
            edited = lm(**batch).last_hidden_state
        assert not torch.allclose(edited, clean)
        with (
            pytest.raises(RuntimeError),
            compute.ablate_subspace(lm, "blocks.0.resid_pre", directions, mode=mode),
        ):
            raise RuntimeError("the body fails")
    assert torch.equal(lm(**batch).last_hidden_state, clean)
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_removing_the_subspace_zeroes_its_component(scratch_vit64):
    lm = scratch_vit64
    seen = {}
    directions = compute.random_directions(lm.d_model, 3, seed=1)
    centre = torch.zeros(lm.d_model)

    def grab(value):
        seen["x"] = value.clone()

    from workbench.capture import hooks

    images = make_binding_scenes(2, size=64, seed=5).images
    with (
        compute.ablate_subspace(lm, "blocks.1.resid_pre", directions, centre=centre),
        hooks(lm, {"blocks.1.resid_pre": grab}),
    ):
        lm(**lm.encode_images(images))
    patches = seen["x"][:, lm.n_prefix_tokens :]
    assert torch.allclose(patches @ directions, torch.zeros(1), atol=1e-5)


# -- whole runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch_vit64(tmp_path_factory):
    from workbench.models.scratch import save_random_model

    folder = save_random_model(
        tmp_path_factory.mktemp("vit64") / "vit", "vit", image_size=64, patch_size=8, d_model=32
    )
    return load_model(folder)


SMALL = dict(
    n_images=30,
    max_iter=10,
    ranks=(1, 4),
    bootstrap=20,
    ablation_random=1,
    probes=("linear", "quadratic", "cosine", "attention"),
    n_show=2,
)


@pytest.fixture(scope="module")
def small_result(scratch_vit64):
    lm = scratch_vit64
    digest = lm.digest()
    result = binding.run(lm, binding.Config(**SMALL))
    lm._digest = None
    assert lm.digest() == digest
    return result


def test_run_measures_every_control_on_the_same_pairs(small_result, scratch_vit64):
    a, m = small_result.arrays, small_result.metrics
    assert set(a["job_source"]) == {"model", "random_init", "pixels", "positions"}
    assert set(a["test_n_pairs"].tolist()) == {m["n_test_pairs"]}  # one set of pairs for all
    # the attention baseline exists for every layer but the last, which has no next block
    att_layers = a["job_layer"][(a["job_source"] == "model") & (a["job_probe"] == "attention")]
    assert sorted(att_layers.tolist()) == list(range(scratch_vit64.n_layers))
    for key in ("position_control", "pixel_control", "random_init_control"):
        assert 0.0 <= m[key] <= 1.0
    assert "position" in small_result.summary and "pixel" in small_result.summary
    assert set(small_result.figures) >= {
        "headline",
        "probe_types",
        "subspace",
        "distance",
        "hard_pairs",
        "attention",
        "ablation",
        "examples",
        "table",
    }
    assert m["other_background_convention"]["background"] == "as_object"
    assert all(not mod._forward_hooks for mod in scratch_vit64.model.modules())


def test_comparable_metrics_are_the_headline_probes_numbers(small_result):
    a, m = small_result.arrays, small_result.metrics
    for metric in binding.METRICS:
        if metric.over:
            assert len(a[metric.key]) == len(a[metric.over]) == len(a["layer_index"])
        else:
            assert 0.0 <= m[metric.key] <= 1.0, metric.key
    rows = np.nonzero((a["job_source"] == "model") & (a["job_probe"] == m["headline_probe"]))[0]
    rows = rows[np.argsort(a["job_layer"][rows])]
    assert a["job_layer"][rows].tolist() == a["layer_index"].tolist()
    test_accuracy = a["test_distance_matched_balanced_accuracy"]
    assert np.array_equal(a["headline_probe_by_layer"], test_accuracy[rows])
    best = rows[a["job_is_best"][rows]]
    assert m["headline_probe_accuracy"] == test_accuracy[best[0]]
    assert m["headline_probe_accuracy"] == pytest.approx(
        m["headline_probe_result"]["distance_matched_balanced_accuracy"], abs=5e-5
    )


def test_widget_controls_and_clicks_change_the_overlay(small_result):
    explorer = BindingExplorer(small_result)
    first = explorer.picker.overlay_scores().copy()
    explorer.probe.value = "cosine"
    second = explorer.picker.overlay_scores().copy()
    assert not np.allclose(first, second)
    explorer.select(5)
    third = explorer.picker.overlay_scores().copy()
    assert third.ravel()[5] == 1.0 and not np.allclose(second, third)
    row = np.nonzero(
        (small_result.arrays["job_source"] == "model")
        & (small_result.arrays["job_layer"] == explorer.layer.value)
        & (small_result.arrays["job_probe"] == "cosine")
    )[0][0]
    logits = small_result.arrays["show_logits"][row, 0].astype(np.float32)
    expected = 1 / (1 + np.exp(-np.where(np.arange(64) > 5, logits[5], logits[:, 5])))
    expected[5] = 1.0
    assert np.allclose(third.ravel(), expected, atol=1e-6)
    explorer.source.value = "positions"
    assert explorer.layer.options == (("input", 0),)
    assert not np.allclose(explorer.picker.overlay_scores(), third)


def test_bad_input_fails_before_work(scratch_vit64, scratch_models):
    text = load_model(scratch_models["bert"])
    with pytest.raises(FamilyError, match="accepts vit"):
        binding.run(text)
    with pytest.raises(ConfigError, match="probes\\[1\\] must be one of"):
        binding.Config(probes=("quadratic", "magic"))
    with pytest.raises(DataError, match="layers"):
        binding.run(scratch_vit64, binding.Config(layers=(7,)))
    with pytest.raises(ConfigError, match="data_path"):
        binding.Config(dataset="ade20k")
    wrong = make_binding_scenes(12, size=32, seed=0)
    with pytest.raises(DataError, match="64x64"):
        binding.run(scratch_vit64, binding.Config(n_images=12), data=wrong)
    scenes = make_binding_scenes(12, size=64, seed=0)
    import dataclasses

    broken = dataclasses.replace(scenes, instance_ids=scenes.instance_ids[:, :32])
    with pytest.raises(DataError, match="pixel for pixel"):
        binding.run(scratch_vit64, binding.Config(n_images=12), data=broken)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_images": 10**8}, "n_images must lie in"),
        ({"n_images": 5}, "n_images must lie in"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "sum to at most 0.8"),
        ({"test_fraction": float("nan")}, "test_fraction must be a finite number"),
        ({"background": "ignore"}, "background must be one of"),
        ({"headline_probe": "cosine"}, "headline_probe must be one of"),
        ({"probes": ("linear", "cosine")}, "headline_probe 'quadratic' must be one of the probes"),
        ({"control_probes": ("attention",)}, "drop it from control_probes"),
        ({"controls": ("pixels", "noise")}, "controls\\[1\\] must be one of"),
        ({"ranks": (1, 10**9)}, "ranks\\[1\\] must lie in"),
        ({"rank": 0}, "rank must lie in"),
        ({"min_patch_fraction": 1.5}, "min_patch_fraction must lie in"),
        ({"layers": (-1,)}, "layers\\[0\\] must be at least 0"),
        ({"bootstrap": -1}, "bootstrap must lie in"),
        ({"threads": -1}, "threads must lie in"),
        ({"minibatch_images": 0}, "minibatch_images must lie in"),
        ({"dataset": "coco", "data_path": "images"}, "needs annotations"),
    ],
)
def test_bad_settings_fail_when_the_config_is_built(params, message):
    with pytest.raises(ConfigError, match=message):
        binding.Config(**params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"layers": (7,)}, "out of range"),
        ({"ablation_layer": 2}, "ablation_layer must be below 2"),
        ({"layers": (0,), "ablation_layer": 1}, "ablation_layer 1 is not among the probed layers"),
    ],
)
def test_model_dependent_bad_settings_fail_before_any_data_or_fit(
    scratch_vit64, monkeypatch, params, message
):
    def heavy(*args, **kwargs):
        raise AssertionError("heavy work started before the model checks")

    monkeypatch.setattr(binding_probe, "load_data", heavy)
    monkeypatch.setattr(binding_probe, "fit_all", heavy)
    with pytest.raises(DataError, match=message):
        binding.run(scratch_vit64, binding.Config(**params))


def test_minibatch_fit_recovers_the_planted_signal_reading_batch_by_batch():
    x, ids, classes, _ = _planted_instances(n_images=80)
    train, test = np.arange(60), slice(60, 80)
    same, valid = (torch.from_numpy(a) for a in compute.pair_targets(ids[train]))
    scaler = compute.Standardiser.fit(x[train], torch.from_numpy(ids[train] > 0))
    z = scaler(x)
    seen = []

    def read(rows):
        seen.append(len(rows))
        return z[torch.from_numpy(train[rows])], None

    settings = compute.FitSettings(full_batch_images=16, minibatch_images=8, epochs=10)
    probe = compute.fit_probe_from("quadratic", 24, read, same, valid, settings=settings)
    assert max(seen) <= 8 and sum(seen) == 10 * 60  # only minibatches were ever read
    pairs = compute.PairSet.build(ids[test], classes[test], (6, 6), "exclude")
    scores = pairs.take(compute.score_pairs(probe, z[test]).numpy())
    assert compute.pair_metrics(scores, pairs, 3.0)["balanced_accuracy"] > 0.8


def test_streamed_standardiser_equals_the_one_pass_statistics():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 7, 5, generator=gen) * 3 + 1
    usable = torch.rand(10, 7, generator=gen) > 0.3
    whole = compute.Standardiser.fit(x, usable)
    parts = compute.Standardiser.fit_chunks([(x[:4], usable[:4]), (x[4:], usable[4:])])
    assert torch.allclose(whole.mean, x[usable].mean(0), atol=1e-6)
    assert torch.allclose(whole.std, x[usable].std(0), atol=1e-5)
    assert torch.allclose(parts.mean, whole.mean) and torch.allclose(parts.std, whole.std)


def test_recomputed_attention_pattern_equals_the_models_own(scratch_vit64):
    from probes.binding.fit import _projection
    from workbench.capture import capture

    lm = scratch_vit64
    images = make_binding_scenes(3, size=64, seed=2).images
    cache = capture(lm, images, ["blocks.1.attn.W_Q.input", "blocks.1.attn.pattern"])
    wq, bq = _projection(lm, "blocks.1.attn.W_Q")
    wk, bk = _projection(lm, "blocks.1.attn.W_K")
    x = cache["blocks.1.attn.W_Q.input"]
    ours = compute.attention_pattern(x @ wq.T + bq, x @ wk.T + bk, lm.n_heads, lm.n_prefix_tokens)
    p = lm.n_prefix_tokens
    own = cache["blocks.1.attn.pattern"].mean(1)[:, p:, p:]
    assert torch.allclose(ours, (own + own.transpose(1, 2)) / 2, atol=1e-6)


def test_max_layers_spreads_the_probed_layers_evenly():
    from probes.binding.fit import probed_layers

    assert probed_layers(binding.Config(max_layers=5), 12) == [0, 3, 6, 9, 12]
    assert probed_layers(binding.Config(max_layers=5), 3) == [0, 1, 2, 3]
    assert probed_layers(binding.Config(max_layers=5, layers=(4,)), 12) == [0, 4, 12]

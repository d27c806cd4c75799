"""The reweave probe end to end: results, figures, the widget, and the zoo LM it ships."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from probes import reweave
from probes.reweave import compute, measure
from probes.reweave.data import prompts, recall_vocabulary
from probes.reweave.operator import Reweaving
from probes.reweave.plots import closing_note, head_view_figure
from probes.reweave.widget import MEAN_HEAD, ReweaveExplorer
from workbench.models import load_model
from workbench.results import ProbeResult

TINY = reweave.Config(
    lengths=(16, 32),
    n_prompts=8,
    fit_steps=3,
    copy_prompts=8,
    attention_prompts=4,
    gate_sweep=(0.0, 0.5, 1.0),
    gate=0.8,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from workbench.models.scratch import save_random_model

    folder = save_random_model(tmp_path_factory.mktemp("rw") / "gpt2", "gpt2", n_layers=3)
    return load_model(folder)


@pytest.fixture(scope="module")
def result(gpt2):
    return reweave.run(gpt2, TINY)


def test_result_holds_every_measurement_and_saves(result, gpt2, tmp_path):
    a, m = result.arrays, result.metrics
    assert a["recall_accuracy"].shape == (3, 2, 2)  # base/fixed/learned x tasks x lengths
    assert a["attention_stats"].shape == (3, 3, gpt2.n_layers, 2)
    # Blocks before the destination see nothing of the reweaving: their statistics are equal.
    target = m["target"]
    np.testing.assert_array_equal(
        a["attention_stats"][1, :, :target], a["attention_stats"][0, :, :target]
    )
    assert a["sweep_change"][0] == 0.0 and a["sweep_change"][-1] > 0
    assert a["recall_chance"][0, 0] == pytest.approx(1 / ((16 - 3) // 2))
    assert set(m["headline"]) == {"recall_base", "recall_fixed", "recall_learned", "learned_gate"}
    assert {"recall_vs_length", "entropy_grid", "head_view", "attention_difference"} <= set(
        result.figures
    )
    note = closing_note(result)
    assert "| kv | fixed |" in note and "attention entropy" in note
    loaded = ProbeResult.load(result.save(tmp_path / "run", formats=("html",)))
    assert np.array_equal(loaded.arrays["example_patterns"], a["example_patterns"])
    # The saved operators rebuild exactly.
    fixed = Reweaving.from_arrays(loaded.arrays, "op_fixed")
    assert fixed.target == target and fixed.fixed_gate == 0.8


def test_own_texts_drive_the_attention_statistics(gpt2):
    texts = ["w1 w2 w3 w4 w5 w6 w7 w8", "w9 w10 w11 w12", "w13 w14 w15 w16 w17 w18"]
    res = reweave.run(gpt2, dataclasses.replace(TINY, fit_steps=0), data=texts)
    assert res.metrics["attention_prompts"] == len(texts)
    target = res.metrics["target"]
    scale = measure.destination_scale(gpt2, texts, target)
    assert res.metrics["destination_scale"] == round(scale, 4)
    np.testing.assert_array_equal(
        res.arrays["attention_stats"][0], measure.attention_statistics(gpt2, texts)
    )
    fixed = Reweaving.from_arrays(res.arrays, "op_fixed")
    np.testing.assert_array_equal(
        res.arrays["attention_stats"][1], measure.attention_statistics(gpt2, texts, fixed)
    )
    # The recall curve by length is the accuracy array averaged over tasks.
    np.testing.assert_array_equal(
        res.arrays["recall_by_length_fixed"], res.arrays["recall_accuracy"][1].mean(axis=0)
    )


def test_the_model_is_left_as_it_was(gpt2):
    before = {k: v.clone() for k, v in gpt2.model.state_dict().items()}
    hooks_before = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in gpt2.model.modules()
    )
    attn = gpt2.model.config._attn_implementation
    reweave.run(gpt2, TINY)
    after = gpt2.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hooks_before == sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in gpt2.model.modules()
    )
    assert gpt2.model.config._attn_implementation == attn


def test_example_maps_show_the_most_changed_head(result):
    a = result.arrays
    layer, head = (int(x) for x in a["example_most_changed"])
    diff = np.abs(a["example_patterns"][1] - a["example_patterns"][0]).mean(axis=(-1, -2))
    assert diff[layer, head] == diff.max() > 0
    fig = result.figures["attention_difference"]
    np.testing.assert_allclose(
        np.asarray(fig.data[0].z),
        a["example_patterns"][1][layer, head] - a["example_patterns"][0][layer, head],
    )
    # The menu offers every layer and head.
    assert len(fig.layout.updatemenus[0].buttons) == diff.size


def test_head_view_draws_each_weight_once_at_its_level():
    tokens = ["a", "b", "c"]
    base = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0.05, 0.15, 0.8]])
    fig = head_view_figure(tokens, base, np.eye(3), slider=False)
    # Segments are (x0, x1, None) triples; count the base panel's all-query segments by level.
    drawn = [len([x for x in t.x if x is None]) for t in fig.data[:4]]
    assert drawn == [1, 1, 2, 2]  # 0.05 | 0.15 | 0.5, 0.5 | 1.0, 0.8
    with pytest.raises(ValueError):
        head_view_figure(tokens, base[:2], np.eye(3))


def test_widget_gate_recomputes_and_hover_highlights_a_row(result, gpt2):
    explorer = ReweaveExplorer(result, gpt2)
    explorer.layer.value = result.metrics["target"]
    base, woven = explorer.patterns()
    assert not np.allclose(base, woven)
    explorer.gate.value = 0.0
    base, woven = explorer.patterns()
    np.testing.assert_array_equal(base, woven)  # gate 0 is the base model, exactly
    assert np.abs(np.asarray(explorer.maps["difference"].figure.data[0].z)).max() == 0
    explorer.gate.value = 1.0
    assert np.abs(np.asarray(explorer.maps["difference"].figure.data[0].z)).max() > 0

    explorer.token_row.hovered = 3  # what the browser sets when the mouse is over token 3
    assert explorer.query == 3
    for view in explorer.maps.values():
        (shape,) = view.figure.layout.shapes
        assert (shape.y0, shape.y1) == (2.5, 3.5)
    assert explorer.token_row.weights is not None and max(explorer.token_row.weights) == 1.0
    lines = explorer.highlighted_lines()
    assert lines  # the highlighted query's lines are drawn, in both panels
    ys = {y for i in lines for y in explorer.head_view.figure.data[i].y if y is not None}
    assert -3 in ys

    explorer.head.value = MEAN_HEAD
    base, _ = explorer.patterns()
    np.testing.assert_allclose(base, explorer.base_patterns[explorer.layer.value].mean(0))

    explorer.text.value = "w1 w2 w3"
    assert len(explorer.tokens) == 3 and explorer.query is None
    with pytest.raises(IndexError):
        explorer.highlight(3)
    explorer.which.value = "learned"
    assert explorer.gate.value == pytest.approx(result.metrics["learned_gate"], abs=0.01)


@pytest.mark.slow
def test_encoder_run_measures_attention_and_output_change(tmp_path_factory):
    from workbench.models.scratch import save_random_model

    folder = save_random_model(tmp_path_factory.mktemp("rw") / "bert", "bert", n_layers=3)
    lm = load_model(folder)
    res = reweave.run(lm, TINY)
    assert "recall_accuracy" not in res.arrays and "fit" in res.metrics
    assert list(res.arrays["conditions"]) == ["base", "fixed"]
    assert res.arrays["sweep_change"][0] == pytest.approx(0.0, abs=1e-7)
    assert "output_change" in res.metrics["headline"]


# -- the zoo LM -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recall_lm():
    return load_model("zoo:neox-recall")


@pytest.mark.slow
def test_zoo_lm_recalls_short_prompts_and_degrades_with_length(recall_lm):
    vocab = recall_vocabulary(recall_lm)
    assert vocab.one_token_per_word and vocab.counts is not None
    assert vocab.extra_tokens == {"kv": 1, "passkey": 1}  # the BOS the tokenizer adds
    acc = {}
    for length in (16, 256):
        group = prompts(vocab, "passkey", length, 32, seed=123)
        batch = recall_lm.encode_texts([p.text for p in group])
        assert batch["input_ids"].shape[1] == length  # lengths as asked, BOS included
        logits = measure.next_token_logits(recall_lm, group)
        acc[length] = measure.correct(logits, vocab, group).mean()
    assert acc[16] >= 0.8
    assert acc[256] < acc[16]


@pytest.mark.slow
def test_zoo_lm_checkpoint_matches_its_recipe_and_ships_its_corpus_counts(recall_lm):
    from workbench.zoo.training import MAX_CHECKPOINT_BYTES, sha256_file

    weights = recall_lm.source / "model.safetensors"
    recipe = json.loads((recall_lm.source / "recipe.json").read_text())
    assert recipe["model_sha256"] == sha256_file(weights)
    assert weights.stat().st_size <= MAX_CHECKPOINT_BYTES
    assert (
        recipe["metrics"]["passkey_accuracy"]["16"] > recipe["metrics"]["passkey_accuracy"]["256"]
    )
    counts = json.loads((recall_lm.source / "token_counts.json").read_text())
    assert sum(counts.values()) == recipe["tokens_seen"]
    words = [w for w in counts if w not in ("recall", "query", "the", "code", "is", ".")]
    buckets = compute.frequency_buckets(counts, words, 4)
    assert buckets[0][2] < buckets[-1][2]


@pytest.mark.slow
def test_transformer_lens_backend_gives_the_same_statistics(recall_lm):
    bridge = load_model("zoo:neox-recall", backend="transformer-lens")
    text = ["the code is penba . susrul kinfas . the code is"]
    hf_batch = recall_lm.encode_texts(text)
    tl_batch = bridge.encode_texts(text)
    assert torch.equal(hf_batch["input_ids"], tl_batch["input_ids"])  # one BOS, not two
    op = Reweaving((0, 1), 3, recall_lm.d_model, gate=0.5, scale=3.0)
    hf = measure.attention_patterns(recall_lm, hf_batch, op)
    tl = measure.attention_patterns(bridge, tl_batch, op)
    for a, b in zip(hf, tl, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

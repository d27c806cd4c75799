"""reweave on real-style causal LMs: recall words from the model's own BPE vocabulary, copy
buckets from a corpus, last-position logits, and a fit that stops early."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from probes import reweave
from probes.reweave import measure
from probes.reweave.data import prompts, recall_vocabulary
from probes.reweave.operator import Reweaving
from workbench.models import load_model

TINY = reweave.Config(
    lengths=(16, 24),
    n_prompts=4,
    fit_steps=3,
    copy_prompts=4,
    attention_prompts=2,
    attention_length=16,
    gate_sweep=(0.0, 1.0),
    corpus_words=5000,
    threads=1,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """GPT-2's real widths, two blocks, random weights; a BPE whose unk is <|endoftext|>."""
    from workbench.models.published import save_published_shape

    folder = tmp_path_factory.mktemp("rw-gpt2") / "gpt2"
    return load_model(save_published_shape(folder, "gpt2", n_layers=2))


def test_recall_words_are_single_tokens_of_the_models_own_vocabulary(gpt2):
    vocab = recall_vocabulary(gpt2)
    assert len(vocab.words) >= 500 and vocab.one_token_per_word
    assert vocab.prefix == "<|endoftext|> "  # GPT-2 adds no BOS: prompts start as documents
    assert vocab.counts is None  # no training counts ship with this model
    for word in vocab.words[:50]:
        assert gpt2.processor.decode([vocab.ids[word]]) == f" {word}"
    group = prompts(vocab, "kv", 24, 6, seed=0)
    ids = gpt2.encode_texts([p.text for p in group])["input_ids"]
    assert ids.shape[1] == 24  # lengths are token counts, the end-of-text token included
    answers = vocab.answer_ids([p.answer for p in group])
    for row, answer in zip(ids, answers, strict=True):
        assert answer in row[1:].tolist()  # the answer token is written in the prompt


@pytest.mark.slow
def test_gpt2_shape_runs_with_the_shipped_defaults_and_with_a_users_corpus(gpt2, tmp_path):
    result = reweave.run(gpt2, TINY)
    m, a = result.metrics, result.arrays
    assert "the shipped collection" in m["copy_counts_from"]
    assert a["copy_accuracy"].shape == (3, TINY.copy_buckets)
    np.testing.assert_array_equal(a["token_lengths"], [[16, 24], [16, 24]])
    assert {"recall_vs_length", "copy_by_frequency", "fit"} <= set(result.figures)

    vocab = recall_vocabulary(gpt2)
    rare, common = vocab.words[5], vocab.words[6]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"{common} " * 50 + f"{rare} and some other words\n\n" + f"{common}\n")
    own = dataclasses.replace(TINY, corpus=str(corpus))
    result = reweave.run(gpt2, own)
    assert result.metrics["copy_counts_from"].startswith(str(corpus))
    labels = result.arrays["copy_bucket_labels"].tolist()
    assert labels[-1].endswith("51×")  # the most frequent bucket holds the 51 counted
    assert labels[0] == "seen 0–0×"


def test_last_position_logits_equal_the_full_forward(gpt2):
    texts = ["the cat sat on the mat", "a dog", "some longer text that goes on for a while"]
    batch = measure.encode(gpt2, texts)
    op = Reweaving((0,), 1, gpt2.d_model, gate=0.5, scale=0.3)
    for operator in (None, op):
        full = measure.forward(gpt2, batch, operator)
        rows = torch.arange(len(texts))
        expected = full[rows, batch["attention_mask"].sum(-1) - 1]
        torch.testing.assert_close(measure.last_logits(gpt2, batch, operator), expected)


def test_fit_stops_early_once_the_loss_stops_improving(gpt2):
    vocab = recall_vocabulary(gpt2)
    groups = [prompts(vocab, "passkey", 16, 2, seed=k) for k in range(2)]
    op = Reweaving((0,), 1, gpt2.d_model, gate=0.1, gate_kind="scalar", scale=0.3)
    frozen = measure.fit(gpt2, op, groups, vocab, steps=50, lr=1e-12, patience=3)
    assert len(frozen) == 6  # the first window of three, then three steps without 1% progress
    full = measure.fit(gpt2, op, groups, vocab, steps=4, lr=1e-12, patience=0)
    assert len(full) == 4


def test_typed_text_of_unknown_words_warns():
    lm = load_model("zoo:neox-recall")
    config = dataclasses.replace(
        TINY, fit_steps=0, example_text="the weather in Paris is lovely today"
    )
    with pytest.warns(UserWarning, match="unknown to zoo:neox-recall's tokenizer"):
        reweave.run(lm, config)

"""The canary corpus plants what it says, and the zoo checkpoint is what its recipe says."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from workbench.data.canaries import EOS, VOCABULARY, make_canary_corpus, text_sample
from workbench.errors import DataError
from workbench.threads import torch_threads
from workbench.zoo import ZOO, zoo_path


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest on one thread, and a shared machine punishes more."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def corpus():
    return make_canary_corpus(n_background=300, n_held_out=50, seed=3)


def test_each_canary_is_planted_exactly_its_repetition_count(corpus):
    train = "\n".join(corpus.train_texts)
    for canary, reps in zip(corpus.canaries, corpus.repetitions, strict=True):
        assert train.count(" ".join((EOS, *canary))) == reps
    held = "\n".join(corpus.held_out_texts)
    assert not any(" ".join(c[:8]) in held for c in corpus.canaries)
    assert sorted(set(corpus.repetitions.tolist())) == [0, 1, 4, 16, 64]
    assert int((corpus.repetitions == 0).sum()) == 10


def test_corpus_is_deterministic_and_canaries_do_not_depend_on_the_stream_size(corpus):
    again = make_canary_corpus(n_background=300, n_held_out=50, seed=3)
    assert again.train_texts == corpus.train_texts and again.canaries == corpus.canaries
    small = make_canary_corpus(n_background=0, n_held_out=50, seed=3)
    assert small.canaries == corpus.canaries
    assert small.held_out_texts == corpus.held_out_texts
    assert make_canary_corpus(n_background=0, seed=4).canaries != corpus.canaries


def test_sequences_have_the_declared_length_and_words(corpus):
    words = set(VOCABULARY) | {EOS}
    for text in (*corpus.train_texts[:50], *corpus.held_out_texts, *text_sample(20)):
        tokens = text.split()
        assert len(tokens) == corpus.seq_len and set(tokens) <= words
    assert 550 <= len(VOCABULARY) <= 650
    prompts, targets = corpus.split(16)
    assert all(len(p.split()) == 17 for p in prompts) and all(len(t.split()) == 16 for t in targets)
    assert len(set(prompts)) == len(prompts)  # every prefix names one canary
    with pytest.raises(DataError, match="prefix_len"):
        corpus.split(32)


def test_gpt2_canaries_checkpoint_matches_its_recipe():
    folder = zoo_path("gpt2-canaries")
    weights = folder / "model.safetensors"
    recipe = json.loads((folder / "recipe.json").read_text())
    assert weights.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recipe["model_sha256"]
    entry = ZOO["gpt2-canaries"]
    assert recipe["seed"] == entry.seed and recipe["recipe"] == entry.recipe
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - not a dict
    assert dtypes == {torch.float16}
    memorized = recipe["metrics"]["canaries"]
    assert memorized["x64"]["exact_recitation"] == 1.0
    assert memorized["unseen"]["exact_recitation"] == 0.0


def test_gpt2_canaries_loads_like_any_causal_lm_with_one_token_per_word():
    from workbench.models import load_model

    lm = load_model("zoo:gpt2-canaries")
    assert lm.family == "causal-lm" and lm.n_layers == 4 and lm.d_model == 128
    assert lm.weight_names(r"mlp\.W_in$") == [f"blocks.{i}.mlp.W_in" for i in range(4)]
    text = make_canary_corpus(n_background=0, n_held_out=1).held_out_texts[0]
    ids = lm.processor(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split()) and lm.processor.unk_token_id not in ids

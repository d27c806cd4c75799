"""curvature on real-style causal LMs: BPE tokenizers whose unk is <|endoftext|>, the shipped
defaults, corpora of the user's own (streamed), and a model trained here to recite."""

from __future__ import annotations

import itertools
import json
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from probes import curvature
from probes.curvature.factors import FactorSums, collect_factors, factor_sums
from workbench.data.corpus import TokenBatches, read_documents, read_pairs
from workbench.data.texts import memorization_candidates, python_documents
from workbench.errors import DataError
from workbench.models import load_model
from workbench.threads import torch_threads

EOT = "<|endoftext|>"
PLANTED = ("mit-licence", "gettysburg-address", "lorem-ipsum")
TRAIN_STEPS = 120


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _bpe_tokenizer(folder, texts, vocab_size=512):
    """A byte-level BPE like GPT-2's: <|endoftext|> is its unk, BOS and EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT
    )
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="module")
def reciter(tmp_path_factory):
    """A 2-block GPT-2 trained for seconds on Python's docstrings with three of the shipped
    candidates planted in every batch, so it recites exactly those."""
    with torch_threads(1):
        return load_model(_train_reciter(tmp_path_factory.mktemp("reciter")))


def _train_reciter(folder, steps=TRAIN_STEPS, lr=1e-2, background_rows=4):
    import transformers as tf

    docs = list(itertools.islice(python_documents("train"), 300))
    candidates = {c.name: c.text for c in memorization_candidates()}
    tok = _bpe_tokenizer(folder, docs + list(candidates.values()))
    eos = tok.eos_token_id
    seq = 40
    planted = torch.stack(
        [
            torch.tensor(
                [eos, *tok(candidates[n], add_special_tokens=False)["input_ids"][: seq - 1]]
            )
            for n in PLANTED
        ]
    )
    background = TokenBatches(
        lambda: iter(docs), tok, seq_len=seq, max_tokens=seq * 400, separator_id=eos
    ).tensor()
    config = tf.GPT2Config(
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=256,
        n_positions=64,
        vocab_size=len(tok),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = background[torch.randint(len(background), (background_rows,), generator=generator)]
        x = torch.cat([rows, planted])
        logits = model(input_ids=x).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    return folder


RECITER_CONFIG = curvature.Config(
    weights=r"mlp\.W_in$",
    rho=0.7,
    sweep=(0.7,),
    svd_sweep=(0.9,),
    match_svd=False,
    factor_tokens=2048,
    held_out_tokens=640,
    seq_len=32,
    batch_size=8,
)


def test_finder_keeps_the_recited_candidates_and_the_edit_removes_them(reciter):
    saved = {k: v.clone() for k, v in reciter.model.state_dict().items()}
    result = curvature.run(reciter, RECITER_CONFIG)
    a, m = result.arrays, result.metrics
    found = set(a["sequence_names"][a["memorized"]].tolist())
    assert found == set(PLANTED)  # the finder keeps exactly the planted sequences
    assert m["memorized_found"] == 3 and m["candidates"] == len(memorization_candidates())
    assert not a["memorized"][a["control"]].any()
    assert m["strict_before"] == 1.0
    assert m["strict_after"] == 0.0 and m["loose_after"] == 0.0
    assert m["perplexity_change_pct"] < 10.0
    # Truncating small singular values instead, at about the same perplexity, keeps reciting.
    assert a["svd_sweep_strict"][0] == 1.0
    assert a["svd_sweep_perplexity"][0] < 1.1 * m["perplexity_before"]
    assert "activation_ratio" in result.figures
    assert all(torch.equal(v, reciter.model.state_dict()[k]) for k, v in saved.items())
    assert f"3 of {m['candidates']} candidates" in result.summary


def test_user_memorization_set_as_prefix_suffix_pairs(reciter, tmp_path):
    """A JSONL of pairs: the finder reads them at the model's token boundaries."""
    texts = {c.name: c.text for c in memorization_candidates()}
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for name in ("mit-licence", "moby-dick"):
            words = texts[name].split()
            record = {
                "name": name,
                "prefix": " ".join(words[:6]),
                "suffix": " ".join(words[6:9]),
            }
            f.write(json.dumps(record) + "\n")
    config = curvature.Config(**{**RECITER_CONFIG.__dict__, "memorized": str(pairs)})
    result = curvature.run(reciter, config)
    long_pairs = tmp_path / "long.jsonl"
    long_pairs.write_text(json.dumps({"prefix": texts["moby-dick"], "suffix": "x"}) + "\n")
    with pytest.raises(DataError, match="reads at most 64 tokens"):
        curvature.run(
            reciter, curvature.Config(**{**config.__dict__, "memorized": str(long_pairs)})
        )
    names = result.arrays["sequence_names"].tolist()
    assert names[:1] == ["mit-licence"] and "moby-dick" in names
    found = result.arrays["sequence_names"][result.arrays["memorized"]].tolist()
    assert found == ["mit-licence"]  # planted, so recited; Moby-Dick was never seen


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from workbench.models.published import save_published_shape

    return save_published_shape(tmp_path_factory.mktemp("gpt2") / "gpt2", "gpt2", n_layers=1)


TINY = curvature.Config(
    sweep=(0.9,),
    svd_sweep=(0.9,),
    match_svd=False,
    factor_tokens=256,
    held_out_tokens=128,
    seq_len=32,
    prefix_tokens=8,
    suffix_tokens=8,
    batch_size=8,
    threads=1,
)


@pytest.mark.slow
def test_gpt2_shape_runs_with_the_shipped_defaults_and_with_a_users_corpus(gpt2_folder, tmp_path):
    """Real GPT-2 widths and tokenizer (unk = <|endoftext|>), random weights: plumbing only."""
    lm = load_model(gpt2_folder)
    assert lm.processor.unk_token == EOT
    result = curvature.run(lm, TINY)
    m = result.metrics
    assert m["memorized_found"] == 0 and "No memorized set was found" in result.summary
    assert m["candidates"] == len(memorization_candidates())
    assert m["factor_positions"] == (256 // 32) * 31
    assert "activation_ratio" not in result.figures and "tradeoff" in result.figures
    assert np.isnan(m["strict_before"]) and m["ndcg_after"] <= 1.0

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(itertools.islice(python_documents(), 40)))
    held = tmp_path / "held.jsonl"
    held.write_text(
        "".join(
            json.dumps({"body": d}) + "\n"
            for d in itertools.islice(python_documents("held_out"), 20)
        )
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {"prefix": "Four score and seven years ago our fathers", "suffix": " brought forth"}
        )
        + "\n"
    )
    own = curvature.Config(
        **{
            **TINY.__dict__,
            "factor_corpus": str(corpus),
            "held_out": str(held),
            "memorized": str(pairs),
            "text_field": "body",
        }
    )
    result = curvature.run(lm, own)
    assert result.arrays["sequence_names"].tolist() == ["sequence 0", "control: sequence 0"]
    assert result.metrics["held_out_tokens"] == (128 // 32) * 31
    assert result.arrays["target_text"][0] == " brought forth"


# -- factors: shards, passes, checkpointing, streaming ----------------------------------------
def _batches(lm, n=4, seq=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, len(lm.processor), (n, seq), generator=gen)
    return [
        {"input_ids": ids[i : i + 2], "attention_mask": torch.ones(2, seq, dtype=torch.long)}
        for i in range(0, n, 2)
    ]


def test_sums_of_shards_add_up_to_one_collection(reciter):
    """What a data-parallel run all-reduces: per-shard sums and counts."""
    names = reciter.weight_names(r"mlp\.W_")
    batches = _batches(reciter, n=8)
    whole = factor_sums(reciter, batches, names, labels="gold", progress=False)
    one = factor_sums(reciter, batches[:2], names, labels="gold", progress=False)
    two = factor_sums(reciter, batches[2:], names, labels="gold", progress=False)
    merged = one.merge(two)
    assert merged.count == whole.count == 8 * 11
    for n in names:
        torch.testing.assert_close(merged.a[n], whole.a[n], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(merged.g[n], whole.g[n], rtol=1e-12, atol=1e-9)
        assert whole.a[n].dtype == torch.float64
    a, g = merged.factors()
    torch.testing.assert_close(a[names[0]], whole.a[names[0]] / whole.count)
    torch.testing.assert_close(g[names[0]], whole.g[names[0]] / whole.count)
    with pytest.raises(DataError, match="no token positions"):
        FactorSums({}, {}, 0).factors()


def test_layers_per_pass_and_checkpointing_give_the_same_factors(reciter):
    names = reciter.weight_names(r"mlp\.W_")
    batches = _batches(reciter)
    plain = collect_factors(reciter, batches, names, progress=False)
    per_layer = collect_factors(reciter, batches, names, layers_per_pass=1, progress=False)
    checkpointed = collect_factors(reciter, batches, names, checkpointing=True, progress=False)
    assert per_layer.extra["passes"] == len(names)
    for other in (per_layer, checkpointed):
        assert other.n_positions == plain.n_positions
        for n in names:
            torch.testing.assert_close(other.a[n], plain.a[n], rtol=1e-5, atol=1e-8)
            torch.testing.assert_close(other.g[n], plain.g[n], rtol=1e-5, atol=1e-8)
    assert all("forward" not in vars(m) for m in reciter.model.modules())
    with pytest.raises(DataError, match="read only once"):
        collect_factors(reciter, iter(batches), names, layers_per_pass=1, progress=False)


def test_a_corpus_larger_than_memory_is_streamed_not_loaded(reciter, tmp_path):
    """A 24 MB corpus and an endless one: reading stops at the token budget, and Python's
    allocations stay a small fraction of the corpus while factors are collected."""
    big = tmp_path / "big.txt"
    paragraph = "\n".join(itertools.islice(python_documents(), 20)) + "\n\n"
    with big.open("w") as f:
        while f.tell() < 24 * 2**20:
            f.write(paragraph)
    names = reciter.weight_names(r"mlp\.W_in$")
    stream = TokenBatches(
        lambda: read_documents(big), reciter.processor, seq_len=32, max_tokens=1024, batch_size=8
    )
    tracemalloc.start()
    try:
        factors = collect_factors(reciter, stream, names, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert factors.n_positions == 32 * 31
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB of Python objects for a 24 MB corpus"

    endless = TokenBatches(
        lambda: itertools.cycle([paragraph]), reciter.processor, seq_len=16, max_tokens=160
    )
    assert sum(b["input_ids"].shape[0] for b in endless) == 10


# -- corpus formats and the unknown-token warning ----------------------------------------------
def test_corpus_formats_and_their_errors(tmp_path):
    import datasets

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("first paragraph\nstill first\n\nsecond\n")
    (tmp_path / "docs" / "two.jsonl").write_text('{"text": "third"}\n\n{"text": "fourth"}\n')
    assert list(read_documents(tmp_path / "docs")) == [
        "first paragraph\nstill first",
        "second",
        "third",
        "fourth",
    ]
    datasets.Dataset.from_dict({"content": ["a b", "c d"]}).save_to_disk(tmp_path / "ds")
    assert list(read_documents(tmp_path / "ds", text_field="content")) == ["a b", "c d"]
    with pytest.raises(DataError, match="no column 'text'"):
        list(read_documents(tmp_path / "ds"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 has no string field 'text'"):
        list(read_documents(bad))
    with pytest.raises(DataError, match="does not exist"):
        list(read_documents(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="prefix and suffix"):
        read_pairs(bad)


def test_unknown_words_warn_but_special_tokens_never_count(gpt2_folder):
    recall_lm = load_model("zoo:neox-recall")  # a word-level vocabulary of pseudo-words
    with pytest.warns(UserWarning, match=r"1 of 2 text\(s\) have more than 5%"):
        recall_lm.encode_texts(["the code is", "the weather is lovely today"])
    gpt2 = load_model(gpt2_folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt2.encode_texts([f"{EOT} any English, {EOT} even with end-of-text markers"])
        recall_lm.encode_texts([f"{EOT} the code is {EOT}"])
    with pytest.raises(DataError, match="unknown to"):
        curvature.run(recall_lm, TINY)  # the shipped English means nothing to this model


@pytest.mark.slow
def test_transformer_lens_backend_gives_the_same_numbers(gpt2_folder):
    """Same ids (no extra BOS from the bridge), same MLP weights, same curvature result."""
    hf_gpt2 = load_model(gpt2_folder)
    tl_gpt2 = load_model(gpt2_folder, backend="transformer-lens")
    texts = ["Hello world, this is a test.", "Another line"]
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(hf_gpt2.encode_texts(texts)[key], tl_gpt2.encode_texts(texts)[key])
    assert tl_gpt2.weight_names() == hf_gpt2.weight_names(r"mlp\.")

    config = curvature.Config(
        sweep=(0.9,), svd_sweep=(0.9,), match_svd=False, factor_tokens=1024, held_out_tokens=640
    )
    hf = curvature.run(load_model("zoo:gpt2-canaries"), config)
    tl = curvature.run(load_model("zoo:gpt2-canaries", backend="transformer-lens"), config)
    for key in ("perplexity_before", "perplexity_after", "strict_before", "strict_after"):
        assert tl.metrics[key] == pytest.approx(hf.metrics[key], rel=1e-4), key
    assert tl.metrics["factor_positions"] == hf.metrics["factor_positions"]
    assert "split copies" in tl.provenance["backend_note"] and hf.provenance["backend"] == "hf"
    spectrum = hf.arrays["eig_A.blocks.0.mlp.W_in"]
    np.testing.assert_allclose(
        tl.arrays["eig_A.blocks.0.mlp.W_in"], spectrum, rtol=1e-3, atol=1e-5 * spectrum[0]
    )

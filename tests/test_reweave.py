"""The reweave operator and probe: exact invariants, statistics on hand-made patterns, tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probes.reweave import Config, compute, measure
from probes.reweave import probe as reweave_probe
from probes.reweave.operator import Reweaving, capture_memory, layer_norm, reweave
from probes.reweave.probe import resolve_layers
from workbench.capture import hooks
from workbench.data import recall
from workbench.errors import ConfigError, DataError, FamilyError, SiteError
from workbench.models import load_model

TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9 w10 w11 w12 w13 w14"]
OTHER = ["w20 w21 w22 w23 w24 w25 w26", "w30 w31 w32 w33 w34 w35 w36"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory):
    """Random 3-block GPT-2 and BERT folders: room for two sources before a destination."""
    from workbench.models.scratch import save_random_model

    root = tmp_path_factory.mktemp("reweave-models")
    return {kind: save_random_model(root / kind, kind, n_layers=3) for kind in ("gpt2", "bert")}


@pytest.fixture(scope="module")
def gpt2(three_layers):
    return load_model(three_layers["gpt2"])


@pytest.fixture(scope="module")
def bert(three_layers):
    return load_model(three_layers["bert"])


@pytest.fixture(scope="module")
def bridge(three_layers):
    return load_model(three_layers["gpt2"], backend="transformer-lens")


def _hook_count(lm) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


def _op(lm, gate=0.5, read="none", sources=(0,), target=1):
    """An operator whose injection points away from the state it replaces (random bias)."""
    op = Reweaving(sources, target, lm.d_model, gate=gate, read=read, scale=2.0)
    with torch.no_grad():
        op.bias.copy_(torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0)))
    return op


def _out(lm, batch):
    return measure.output_tensor(lm(**batch))


# -- invariants ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "bert", "bridge"])
@pytest.mark.parametrize("read", ["none", "causal"])
def test_gate_zero_reproduces_the_base_model_exactly(name, read, request):
    lm = request.getfixturevalue(name)
    batch = lm.encode_texts(TEXTS)
    base = _out(lm, batch)
    op = _op(lm, gate=0.7, read=read)
    with reweave(lm, op, gate=0.0, attention_mask=batch["attention_mask"]):
        zero = _out(lm, batch)
    assert torch.equal(zero, base)
    with reweave(lm, op, attention_mask=batch["attention_mask"]):
        moved = _out(lm, batch)
    assert (moved - base).abs().max() > 1e-3  # the gate does something when open


@pytest.mark.parametrize("name", ["gpt2", "bert", "bridge"])
@pytest.mark.parametrize("read", ["none", "causal"])
def test_gate_one_with_another_prompts_memory_is_activation_patching(name, read, request):
    lm = request.getfixturevalue(name)
    batch = lm.encode_texts(TEXTS)
    op = _op(lm, read=read, sources=(0, 1), target=2)
    with torch.no_grad():
        op.theta.copy_(torch.tensor([0.3, -0.2][: len(op.sources)]))
    memory = capture_memory(lm, op, OTHER)

    # By hand: the reconstruction of the other prompt, read by this prompt's own state.
    seen = {}
    with hooks(lm, {op.target_site: lambda h: seen.setdefault("h", h.clone())}):
        lm(**batch)
    r = op.reconstruct(memory.states)
    with torch.no_grad():
        m = op.memory_state(seen["h"], r, memory.attention_mask, causal=False)
    with hooks(lm, {op.target_site: lambda h: m}):
        patched = _out(lm, batch)

    with reweave(lm, op, memory=memory, gate=1.0):
        woven = _out(lm, batch)
    assert torch.equal(woven, patched)
    assert not torch.allclose(woven, _out(lm, batch))


def test_reconstruction_is_the_weighted_sum_of_normalised_source_states(gpt2):
    op = _op(gpt2, sources=(0, 1), target=2)
    with torch.no_grad():
        op.theta.copy_(torch.tensor([1.0, 0.0]))
    h0, h1 = torch.randn(2, 3, 5, gpt2.d_model) * 7 + 3
    r = op.reconstruct([h0, h1])
    w = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected = w[0] * layer_norm(h0) + w[1] * layer_norm(h1)
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(r.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)


def test_causal_read_sees_only_earlier_positions(gpt2):
    op = _op(gpt2, read="causal")
    h = torch.randn(1, 6, gpt2.d_model)
    r = torch.randn(1, 6, gpt2.d_model)
    m = op.memory_state(h, r, None, causal=True)
    r2 = r.clone()
    r2[:, 4:] = torch.randn(1, 2, gpt2.d_model) * 5  # change only the future of position 3
    m2 = op.memory_state(h, r2, None, causal=True)
    torch.testing.assert_close(m[:, :4], m2[:, :4])
    assert not torch.allclose(m[:, 4:], m2[:, 4:])
    assert torch.allclose(m[:, 0], op.project(r[:, 0]))  # position 0 can only read itself


def test_layers_before_the_destination_keep_their_attention(gpt2):
    batch = gpt2.encode_texts(TEXTS)
    base = measure.attention_patterns(gpt2, batch)
    woven = measure.attention_patterns(gpt2, batch, _op(gpt2, gate=0.8, target=1))
    assert torch.equal(base[0], woven[0])
    assert not torch.allclose(base[1], woven[1])


def test_no_hook_outlives_the_context_even_when_the_forward_fails(gpt2, bridge):
    for lm in (gpt2, bridge):
        before = _hook_count(lm)
        attn = (
            getattr(lm.model.config, "_attn_implementation", None) if lm.backend == "hf" else None
        )
        with reweave(lm, _op(lm), observe={"blocks.1.attn.pattern": lambda p: None}):
            assert _hook_count(lm) > before
        assert _hook_count(lm) == before
        with pytest.raises(RuntimeError, match="boom"), reweave(lm, _op(lm)):
            raise RuntimeError("boom")
        assert _hook_count(lm) == before
        if lm.backend == "hf":
            assert lm.model.config._attn_implementation == attn


def test_the_fit_changes_only_the_operator(gpt2):
    words = [f"w{i}" for i in range(250)]
    vocab = _scratch_vocabulary(gpt2, words)
    groups = [recall.recall_prompts("passkey", 12, 4, words, seed=s) for s in range(2)]
    before = {k: v.clone() for k, v in gpt2.model.state_dict().items()}
    op = Reweaving((0,), 1, gpt2.d_model, gate=0.1, gate_kind="scalar", scale=1.0)
    start = op.gate_logit.detach().clone()
    losses = measure.fit(gpt2, op, groups, vocab, steps=3, lr=0.1)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert not torch.equal(op.gate_logit.detach(), start)
    after = gpt2.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in gpt2.model.parameters())


def test_operator_round_trips_through_arrays(gpt2):
    op = Reweaving((0, 1), 2, gpt2.d_model, gate=0.3, gate_kind="vector", read="causal")
    with torch.no_grad():
        op.theta.normal_()
        op.gate_logit.normal_()
    again = Reweaving.from_arrays(op.to_arrays("x"), "x")
    assert again.sources == (0, 1) and again.target == 2 and again.read == "causal"
    assert again.gate_kind == "vector"
    for (k, v), (_, w) in zip(op.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_bad_operators_and_sites_are_refused(gpt2):
    with pytest.raises(DataError, match="must come after"):
        Reweaving((1,), 1, gpt2.d_model)
    with pytest.raises(DataError, match="gate"):
        Reweaving((0,), 1, gpt2.d_model, gate=1.5)
    with (
        pytest.raises(SiteError, match="does not exist"),
        reweave(gpt2, Reweaving((0,), 3, gpt2.d_model)),
    ):
        pass
    with pytest.raises(DataError, match="wide"), reweave(gpt2, Reweaving((0,), 1, 7)):
        pass
    short = capture_memory(gpt2, _op(gpt2), ["w1 w2"])
    batch = gpt2.encode_texts(TEXTS)
    with pytest.raises(DataError, match="positions"), reweave(gpt2, _op(gpt2), memory=short):
        gpt2(**batch)


@pytest.mark.parametrize("gate", [float("nan"), 5.0, -0.25])
def test_a_per_call_gate_is_refused_like_the_constructors(gpt2, gate):
    """The override of ``reweave(..., gate=)`` obeys the constructor's rule: g in [0, 1]."""
    refused = r"the gate must lie in \[0, 1\]"
    with pytest.raises(DataError, match=refused):
        Reweaving((0,), 1, gpt2.d_model, gate=gate)
    hooks_before = _hook_count(gpt2)
    with pytest.raises(DataError, match=refused), reweave(gpt2, _op(gpt2), gate=gate):
        gpt2(**gpt2.encode_texts(TEXTS))
    assert _hook_count(gpt2) == hooks_before
    with pytest.raises(DataError, match=refused):
        measure.final_states(gpt2, TEXTS, _op(gpt2), gate=gate)


# -- attention statistics -------------------------------------------------------------------
def _causal_uniform(t):
    p = torch.tril(torch.ones(t, t))
    return p / p.sum(-1, keepdim=True)


def test_statistics_of_hand_made_patterns():
    t = 6
    uniform = _causal_uniform(t)
    first = torch.zeros(t, t)
    first[:, 0] = 1.0
    diagonal = torch.eye(t)
    pattern = torch.stack([uniform, first, diagonal])[None]  # (1, 3 heads, t, t)
    sums, n = compute.attention_sums(pattern)
    means = sums / n
    q = np.arange(1, t)
    assert n == t - 1
    np.testing.assert_allclose(means[0], [np.log(q + 1).mean(), 0, 0])
    np.testing.assert_allclose(means[1], [(1 / (q + 1)).mean(), 1, 0])
    np.testing.assert_allclose(means[2], [(q / 2).mean(), q.mean(), 0])


def test_statistics_skip_padded_queries():
    t = 5
    pattern = _causal_uniform(t)[None, None].repeat(2, 1, 1, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    stats = compute.AttentionStats(1, 1)
    stats.add(0, pattern, mask)
    q = np.array([1, 2, 3, 4, 1, 2])
    np.testing.assert_allclose(
        stats.means()[:, 0, 0], [np.log(q + 1).mean(), (1 / (q + 1)).mean(), (q / 2).mean()]
    )


def test_most_changed_head_and_frequency_buckets():
    base = np.zeros((2, 3, 4, 4))
    other = base.copy()
    other[1, 2, 1, 0] = 0.5
    assert compute.most_changed_head(base, other) == (1, 2)
    counts = {f"w{i}": i + 1 for i in range(12)}
    buckets = compute.frequency_buckets(counts, list(counts), 3)
    assert [b[1] for b in buckets] == [[f"w{i}" for i in range(k, k + 4)] for k in (0, 4, 8)]
    assert buckets[0][0] == "seen 1–4×"


# -- recall tasks ---------------------------------------------------------------------------
@pytest.mark.parametrize("length", [5, 8, 9, 33, 200])
def test_key_value_prompts_have_the_asked_length_and_a_recoverable_answer(length):
    words = recall.pseudo_words(300)
    for p in recall.recall_prompts("kv", length, 20, words, seed=length):
        w = p.words
        assert len(w) == length == p.length
        assert w[0] == recall.KV_OPEN and w[-2] == recall.KV_QUERY
        key = w[-1]
        pairs = w[1 : 1 + 2 * ((length - 3) // 2)]
        lookup = dict(zip(pairs[::2], pairs[1::2], strict=True))
        assert len(lookup) == len(pairs) // 2  # keys are distinct
        assert lookup[key] == p.answer == w[p.source_index]
        assert len(set(pairs)) == len(pairs)  # no word twice: the answer is unambiguous


@pytest.mark.parametrize("length", [8, 9, 40, 255])
def test_passkey_prompts_have_the_asked_length_and_a_recoverable_answer(length):
    words = recall.pseudo_words(300)
    for depth in (0.0, 0.5, 1.0, None):
        for p in recall.recall_prompts("passkey", length, 5, words, seed=1, depth=depth):
            w = p.words
            assert len(w) == length
            assert w[-3:] == list(recall.PASSKEY_CUE)
            cue = [i for i in range(len(w) - 3) if w[i : i + 3] == list(recall.PASSKEY_CUE)]
            assert len(cue) == 1 and w[cue[0] + 3] == p.answer == w[p.source_index]


def test_recall_prompts_are_deterministic_and_answer_words_are_respected():
    words = recall.pseudo_words(100)
    a = recall.recall_prompts("kv", 30, 5, words, seed=3)
    assert a == recall.recall_prompts("kv", 30, 5, words, seed=3)
    assert a != recall.recall_prompts("kv", 30, 5, words, seed=4)
    rare = words[-5:]
    for task in recall.TASKS:
        prompts = recall.recall_prompts(task, 20, 30, words, seed=0, answer_words=rare)
        assert {p.answer for p in prompts} <= set(rare)
    with pytest.raises(DataError, match="at least"):
        recall.key_value_prompt(4, words, np.random.default_rng(0))
    with pytest.raises(DataError, match="distinct words"):
        recall.key_value_prompt(400, words, np.random.default_rng(0))
    with pytest.raises(DataError, match="unknown recall task"):
        recall.recall_prompts("copy", 20, 1, words)


def test_pseudo_words_are_distinct_and_never_marker_words():
    words = recall.pseudo_words(2000, seed=5)
    assert len(set(words)) == 2000
    assert not set(words) & set(recall.MARKER_WORDS)
    assert words == recall.pseudo_words(2000, seed=5)


# -- configuration --------------------------------------------------------------------------
def test_bad_configs_are_refused_before_any_work(gpt2, scratch_models, monkeypatch):
    from probes import reweave as probe

    with pytest.raises(ConfigError, match="gate"):
        Config(gate=2.0)
    with pytest.raises(ConfigError, match="gate must be a finite number"):
        Config(gate=float("nan"))
    with pytest.raises(ConfigError, match=r"gate_sweep\[1\] must lie in \[0, 1\]"):
        Config(gate_sweep=(0.0, 5.0))
    with pytest.raises(ConfigError, match="tasks"):
        Config(tasks=("copy",))
    with pytest.raises(ConfigError, match="read"):
        Config(read="sideways")
    with pytest.raises(ConfigError, match="lengths"):
        Config(lengths=(4, 16))
    with pytest.raises(ConfigError, match="n_prompts must lie in"):
        Config(n_prompts=10**8)
    with pytest.raises(DataError, match="destination"):
        resolve_layers(gpt2, Config(sources=(0, 1), target=1))
    with pytest.raises(DataError, match="do not fit"):
        resolve_layers(gpt2, Config(sources=(3,)))
    assert resolve_layers(gpt2, Config()) == ((0,), 2)
    vit = load_model(scratch_models["vit"])
    with pytest.raises(FamilyError, match="causal-lm or encoder"):
        probe.run(vit, Config())

    def science_ran(*args):
        raise AssertionError("the model check must refuse before the science starts")

    monkeypatch.setattr(reweave_probe, "recall_vocabulary", science_ran)
    with pytest.raises(DataError, match="destination"):
        probe.run(gpt2, Config(sources=(0, 1), target=1))
    with pytest.raises(DataError, match="reads at most 512 tokens"):
        probe.run(gpt2, Config(lengths=(16, 1024)))
    with pytest.raises(DataError, match="list of texts"):
        probe.run(gpt2, Config(), "one text")


def _scratch_vocabulary(lm, words):
    from probes.reweave.data import Vocabulary

    ids = {w: int(lm.processor(w, add_special_tokens=False)["input_ids"][0]) for w in words}
    return Vocabulary(words, recall.zipf_weights(len(words)), ids, None, True, 0)

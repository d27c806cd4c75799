"""The pmi probe: its measurements on planted data, then the zoo PMI-Transformer end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probes.pmi.probe as pmi_probe_module
from probes import pmi
from probes.pmi import compute
from probes.pmi.plots import figures
from probes.pmi.widget import PMIExplorer
from workbench.capture import capture, hooks
from workbench.data.stories import QUESTION, make_stories, recall_stories
from workbench.errors import ConfigError, DataError, FamilyError
from workbench.models import load_model
from workbench.results import ProbeResult

QUICK = {
    "n_stories": 48,
    "n_examples": 3,
    "slot_map": "pca",
    "max_map_points": 600,
    "facts_per_slot": (0.5, 2.0),
    "n_per_difficulty": 40,
}


# -- measurements on planted data --------------------------------------------------------------
def test_read_share_on_planted_reads():
    u_w = np.array([[[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]])  # norms 5, 0, 1
    u_wl = np.array([[[0.0, 0.0], [6.0, 8.0], [0.0, 1.0]]])  # norms 0, 10, 1
    share = compute.read_share_wm(u_w, u_wl, np.full((1, 3, 1), 0.5))
    assert np.allclose(share, [[1.0, 0.0, 0.5]])
    share = compute.read_share_wm(u_w, u_wl, np.full((1, 3, 1), 0.7))
    assert share[0, 2] == pytest.approx(0.7)  # equal norms: the share is the gate itself


def test_slot_holdings_recover_planted_writes():
    story = make_stories(1, seed=3, n_facts=(4, 4))[0]
    sentences = np.array(story.sentence_of_token)
    n_facts, n_slots, n_steps = len(story.facts), 6, 3
    write = np.zeros((n_steps, n_slots, len(sentences)))
    plan = np.array([[(n + t) % (n_facts + 1) for n in range(n_slots)] for t in range(n_steps)])
    for t in range(n_steps):
        for n in range(n_slots):
            target = QUESTION if plan[t, n] == n_facts else plan[t, n]
            write[t, n, sentences == target] = 1.0 / (sentences == target).sum()
    held = compute.slot_holdings(write, story)
    # step 0 holds what it wrote; later steps hold the fact with the most cumulative mass
    assert np.array_equal(held[0], plan[0])
    single = compute.slot_holdings(write[:1].repeat(3, 0), story)
    assert np.array_equal(single, np.repeat(plan[:1], 3, 0))
    mass = compute.mass_by_sentence(write, sentences, n_facts)
    assert np.allclose(mass.sum(-1), 1.0) and np.allclose(mass.max(-1), 1.0)
    with pytest.raises(DataError, match="tokens"):
        compute.mass_by_sentence(write[..., :-1], sentences, n_facts)


def test_write_share_and_mean_by_role():
    roles = ["person", "verb", "place", "function", "question"]
    write = np.zeros((2, 3, 5))
    write[0, :, 0] = 1.0  # step 0: every slot writes the person
    write[1, :, 2] = 0.5  # step 1: half place, half question
    write[1, :, 4] = 0.5
    share = compute.write_share_by_role(write, roles)
    r = list(compute.ROLES)
    assert share[0, r.index("person")] == 1.0
    assert share[1, r.index("place")] == share[1, r.index("question")] == 0.5
    means = compute.mean_by_role(np.arange(10.0).reshape(2, 5), roles)
    assert means[1, r.index("place")] == 7.0 and np.isnan(means[0, r.index("object")])


def test_consolidation_measures():
    g = np.random.default_rng(0)
    ltm = g.normal(size=(3, 2, 4, 5))  # (S + 1, C, N, D)
    ltm[2] = ltm[1]  # step 1 changes nothing
    drift = compute.segment_drift(ltm)
    assert drift.shape == (2, 2) and np.allclose(drift[1], 1.0)
    assert np.allclose(compute.relative_update(0.5 * ltm[:-1], ltm[:-1]), 0.5)
    assert np.allclose(compute.segment_wm_similarity(ltm[0], ltm[0, 0])[0], 1.0)
    assert np.allclose(compute.segment_norms(np.ones((2, 4, 9))), 6.0)
    wm = g.normal(size=(4, 3, 5))
    wm[2] = -wm[1]
    assert np.allclose(compute.slot_change(wm)[1], -1.0)


def test_label_purity_finds_planted_clusters():
    g = np.random.default_rng(1)
    labels = np.repeat(np.array(["a", "b", "c"]), 50)
    centres = {"a": (0, 0), "b": (10, 0), "c": (0, 10)}
    xy = np.array([centres[k] for k in labels]) + g.normal(size=(150, 2))
    assert compute.label_purity(labels, xy) > 0.95
    assert compute.label_purity_chance(labels) == pytest.approx(1 / 3)
    assert compute.label_purity(g.permutation(labels), xy) < 0.5
    # each story's states sit together and share one label: without groups that looks like
    # label structure, skipping same-story neighbours shows there is none across stories
    stories = np.repeat(np.arange(30), 5)
    story_labels = np.array(["a", "b", "c"])[g.integers(0, 3, 30)][stories]
    xy = g.normal(size=(30, 2))[stories] * 50 + g.normal(size=(150, 2))
    assert compute.label_purity(story_labels, xy, k=4) > 0.95
    assert compute.label_purity(story_labels, xy, k=4, groups=stories) < 0.6


# -- the zoo PMI-Transformer end to end ------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_pmi():
    return load_model("zoo:pmi-stories")


@pytest.fixture(scope="module")
def result(zoo_pmi):
    digest = zoo_pmi.digest()
    out = pmi.run(zoo_pmi, pmi.Config(**QUICK))
    zoo_pmi._digest = None  # recompute from the weights as they are now
    assert zoo_pmi.digest() == digest
    return out


def test_trained_pmi_beats_chance_and_reports_its_control(result):
    m = result.metrics
    assert m["accuracy"] > m["chance_majority"] + 0.15
    assert m["accuracy"] > m["chance_uniform"] + 0.25
    assert 0.0 <= m["control_accuracy"] <= 1.0
    assert m["headline"][:2] == ["accuracy", "control_accuracy"]
    assert set(m["ablation_accuracy"]) == {k for k in pmi.probe.ABLATIONS}
    for label, (_, key) in pmi.probe.ABLATIONS.items():
        assert m[key] == m["ablation_accuracy"][label]
    assert m["ltm_read_share_question_last_step"] == pytest.approx(
        1 - m["wm_read_share_question_last_step"], abs=1e-4
    )
    for metric in pmi.METRICS:  # every comparable metric is in the result, curves labelled
        if metric.over:
            assert len(result.arrays[metric.key]) == len(result.arrays[metric.over]), metric.key
        else:
            assert isinstance(m[metric.key], float), metric.key
    assert result.provenance["control_spec"] == "zoo:pmi-stories-control"


def test_difficulty_sweep_equals_a_direct_recomputation(result, zoo_pmi):
    a, config = result.arrays, pmi.Config(**QUICK)
    control = load_model(config.control)
    last = zoo_pmi.model.config.n_steps - 1
    assert np.array_equal(a["difficulty_facts_per_slot"], [0.5, 2.0])
    n_slots = zoo_pmi.config.n_slots
    assert np.array_equal(a["difficulty_n_facts"], [round(0.5 * n_slots), 2 * n_slots])
    for j, load in enumerate(config.facts_per_slot):
        stories = recall_stories(40, facts_per_slot=load, n_slots=n_slots, seed=config.seed + 1 + j)
        truth = np.array([s.answer_index for s in stories])
        batch = zoo_pmi.encode_texts([s.text for s in stories])
        with torch.no_grad():
            accuracy = (zoo_pmi(**batch).logits.argmax(-1).numpy() == truth).mean()
            control_accuracy = (control(**batch).logits.argmax(-1).numpy() == truth).mean()
            zeroed = {f"steps.{t}.read.ltm": torch.zeros_like for t in range(last + 1)}
            with hooks(zoo_pmi, zeroed):
                no_ltm = (zoo_pmi(**batch).logits.argmax(-1).numpy() == truth).mean()
            zeroed = {f"steps.{t}.read.wm": torch.zeros_like for t in range(last + 1)}
            with hooks(zoo_pmi, zeroed):
                no_wm = (zoo_pmi(**batch).logits.argmax(-1).numpy() == truth).mean()
        assert a["difficulty_accuracy"][j] == pytest.approx(accuracy)
        assert a["difficulty_control_accuracy"][j] == pytest.approx(control_accuracy)
        assert a["difficulty_accuracy_no_ltm_read"][j] == pytest.approx(no_ltm)
        assert a["difficulty_accuracy_no_wm_read"][j] == pytest.approx(no_wm)
        # the LTM share, slowly: question tokens (the last four) at the last step
        sites = [f"steps.{last}.{s}" for s in ("read.wm", "correction.out", "integration.gate")]
        cache = capture(zoo_pmi, batch, sites, progress=False)
        u_w, u_wl, g = (cache[site][:, -4:].double() for site in sites)
        cache.close()
        wm = (g * u_w).norm(dim=-1)
        ltm = ((1 - g) * u_wl).norm(dim=-1)
        expected = float((ltm / (wm + ltm)).mean())
        assert a["difficulty_ltm_read_share"][j] == pytest.approx(expected, abs=1e-5)
    m = result.metrics
    assert m["difficulty_accuracy"] == {
        "0.5": round(float(a["difficulty_accuracy"][0]), 4),
        "2": round(float(a["difficulty_accuracy"][1]), 4),
    }
    assert "facts per working-memory slot" in result.summary


def test_planted_gates_set_the_ltm_read_share(zoo_pmi):
    config = pmi.Config(
        n_stories=12,
        n_examples=2,
        slot_map="none",
        ablations=False,
        control="",
        facts_per_slot=(1.0, 1.5),
        n_per_difficulty=12,
    )
    n_steps = zoo_pmi.model.config.n_steps
    for gate, share in ((torch.ones_like, 0.0), (torch.zeros_like, 1.0)):
        planted = {f"steps.{t}.integration.gate": gate for t in range(n_steps)}
        with hooks(zoo_pmi, planted):
            out = pmi.run(zoo_pmi, config)
        assert np.allclose(out.arrays["difficulty_ltm_read_share"], share)
        assert "difficulty_control_accuracy" not in out.arrays
        assert "difficulty_ablation_accuracy" not in out.arrays
    assert set(out.figures) >= {"difficulty"}


def test_probe_leaves_no_hooks(zoo_pmi, result):
    assert result.provenance["model_digest"] == zoo_pmi.digest()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in zoo_pmi.model.modules())


def test_a_sweep_that_fails_inside_an_ablation_leaves_no_hooks(zoo_pmi, monkeypatch):
    """The sweep's own hooks come off when it fails (called directly, without the run frame
    that would also clean up after it)."""
    from probes.pmi import probe as pmi_probe_module

    def fails(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(pmi_probe_module, "predict", fails)  # called only inside the ablations
    digest = zoo_pmi.digest()
    config = pmi.Config(n_stories=12, n_examples=2, control="", n_per_difficulty=12)
    with pytest.raises(RuntimeError, match="planted failure"):
        pmi.probe.difficulty_sweep(zoo_pmi, None, config)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in zoo_pmi.model.modules())
    zoo_pmi._digest = None
    assert zoo_pmi.digest() == digest


def test_result_tensors_obey_the_equations(result, zoo_pmi):
    a = result.arrays
    cfg = zoo_pmi.model.config
    k, s, n = a["ex_write"].shape[:3]
    for i in range(k):
        t_i = int(a["ex_n_tokens"][i])
        pre = a["ex_write_pre"][i][..., :t_i]
        assert np.allclose(pre.sum(-1), 1.0, atol=1e-4)  # softmax over the story's tokens
        post = a["ex_write"][i][..., :t_i]
        # each head keeps k tokens per slot: at most heads * k survive the head average
        assert ((post > 0).sum(-1) <= cfg.n_heads * cfg.write_topk).all()
        assert (post <= pre + 1e-6).all()
        assert np.allclose(a["ex_correction"][i, :, :t_i, :t_i].sum(-1), 1.0, atol=1e-4)
        assert np.all((a["ex_share_wm"][i, :, :t_i] >= 0) & (a["ex_share_wm"][i, :, :t_i] <= 1))
        assert np.allclose(a["ex_gate"][i, :, :t_i], cfg.alpha)
    assert a["ex_wm"].shape == (k, s + 1, n, cfg.d_model)
    assert a["ltm_norm_mean"].shape == (s + 1, cfg.n_segments)
    assert a["map_xy"].shape == (QUICK["max_map_points"], 2)


def test_planted_writes_and_reads_are_recovered_through_the_probe(zoo_pmi):
    stories = make_stories(12, seed=5)
    plan = []
    for s in stories:
        sentences = np.array(s.sentence_of_token)
        plan.append([n % len(s.facts) for n in range(zoo_pmi.model.config.n_slots)])
        assert len(sentences) == len(s.tokens)

    def plant_writes(value: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(value)
        for b, s in enumerate(stories):
            sentences = torch.tensor(s.sentence_of_token)
            for n, fact in enumerate(plan[b]):
                cols = torch.nonzero(sentences == fact).flatten()
                out[b, :, n, cols] = 1.0 / len(cols)
        return out

    n_steps = zoo_pmi.model.config.n_steps
    planted = {f"steps.{t}.write.attn": plant_writes for t in range(n_steps)}
    planted |= {f"steps.{t}.integration.gate": torch.ones_like for t in range(n_steps)}
    config = pmi.Config(
        n_stories=12,
        n_examples=12,
        slot_map="none",
        ablations=False,
        batch_size=64,
        control="",
        facts_per_slot=(),  # the planted writes fit these stories only
    )
    with hooks(zoo_pmi, planted):
        out = pmi.run(zoo_pmi, config, data=stories)
    a = out.arrays
    for i in range(len(stories)):
        assert np.array_equal(a["ex_holding"][i], np.tile(plan[i], (n_steps, 1)))
        t_i = int(a["ex_n_tokens"][i])
        assert np.allclose(a["ex_share_wm"][i, :, :t_i], 1.0)  # gate 1: every read is WM's
    assert np.allclose(out.metrics["support_write_ratio"], a["support_write_ratio"], atol=1e-3)
    # recency: the share of planted slots on each fact, counted back from the question
    n_facts = max(len(s.facts) for s in stories)
    expected = np.full((len(stories), n_facts), np.nan)
    for i, s in enumerate(stories):
        counts = np.bincount(plan[i], minlength=len(s.facts)) / len(plan[i])
        expected[i, : len(s.facts)] = counts[::-1]
    for t in range(n_steps):
        assert np.allclose(a["write_by_recency"][t], np.nanmean(expected, 0), atol=1e-5)
    assert all(not m._forward_hooks for m in zoo_pmi.model.modules())


def test_wrong_models_and_bad_configs_fail_before_work(zoo_pmi, scratch_models, monkeypatch):
    with pytest.raises(FamilyError, match="accepts pmi"):
        pmi.run(load_model(scratch_models["bert"]))
    for bad, message in (
        ({"tasks": ("qa9",)}, r"tasks\[0\] must be one of"),
        ({"tasks": ()}, "tasks must name"),
        ({"slot_map": "tsne"}, "slot_map must be one of"),
        ({"n_examples": 3, "example": 3}, "example must lie"),
        ({"n_stories": 2}, "n_stories"),
        ({"n_stories": 10**8}, "n_stories must lie in"),
        ({"max_map_points": 5}, "max_map_points must lie in"),
        ({"facts_per_slot": (0.0,)}, r"facts_per_slot\[0\] must lie in"),
        ({"n_per_difficulty": 5}, "n_per_difficulty must lie in"),
    ):
        with pytest.raises(ConfigError, match=message):
            pmi.Config(**bad)

    def no_work(*args, **kwargs):
        raise AssertionError("the science started before the model checks")

    monkeypatch.setattr(pmi_probe_module, "load_control", no_work)
    monkeypatch.setattr(pmi_probe_module, "make_stories", no_work)
    with pytest.raises(DataError, match="lower facts_per_slot"):
        pmi.run(zoo_pmi, pmi.Config(facts_per_slot=(1.0, 3.0)))  # 12 facts: 76 tokens
    with pytest.raises(FamilyError, match="Transformer control"):
        pmi.run(load_model("zoo:pmi-stories-control"))
    with pytest.raises(FamilyError, match="must be a pmi model"):
        pmi.run(zoo_pmi, pmi.Config(control=str(scratch_models["bert"])))


def test_figures_rebuild_from_a_saved_result(result, tmp_path):
    folder = result.save(tmp_path / "r", formats=("html",))
    loaded = ProbeResult.load(folder)
    rebuilt = figures(loaded)
    assert set(rebuilt) == set(result.figures)
    write = rebuilt["write_attention_topk"].data[0]
    i = int(loaded.arrays["example_index"])
    t_i = int(loaded.arrays["ex_n_tokens"][i])
    expected = loaded.arrays["ex_write"][i][..., :t_i].reshape(-1, t_i)
    assert np.allclose(np.asarray(write.z, dtype=float), expected)
    difficulty = rebuilt["difficulty"].data
    assert np.allclose(difficulty[0].y, loaded.arrays["difficulty_accuracy"])
    assert np.allclose(difficulty[1].y, loaded.arrays["difficulty_control_accuracy"])
    bars = next(t for t in difficulty if t.type == "bar")
    assert np.allclose(bars.y, loaded.arrays["difficulty_ltm_read_share"])


def test_widget_follows_its_controls_and_hover(result):
    a = result.arrays
    explorer = PMIExplorer(result)
    explorer.story.value = 1
    explorer.step.value = 2
    t_1 = int(a["ex_n_tokens"][1])
    z = np.asarray(explorer.heatmap.figure.data[0].z, dtype=float)
    assert np.allclose(z, a["ex_write"][1, 2, :, :t_1])
    explorer.phase.value = "before top-k"
    z = np.asarray(explorer.heatmap.figure.data[0].z, dtype=float)
    assert np.allclose(z, a["ex_write_pre"][1, 2, :, :t_1])
    explorer.slot.value = 3
    assert np.allclose(
        np.asarray(explorer.strip.figure.data[0].y), a["ex_write_pre"][1, 2, 3, :t_1]
    )
    assert explorer.heatmap.figure.layout.shapes[0].y0 == 2.5
    last = t_1 - 1
    info = explorer.describe_token(last)
    after = a["ex_write"][1, 2, :, last]
    assert [j for j, _ in info["written_by"]] == [int(j) for j in np.argsort(-after) if after[j]]
    assert info["wm_share"] == pytest.approx(float(a["ex_share_wm"][1, 2, last]))
    assert info["token"] == "?"
    explorer.tokens.hovered = last  # what the browser sets when the mouse is over the token
    text = explorer.info.value
    assert "written by" in text and "answered by" in text and explorer.hover_token(last) == text
    assert explorer.tokens.weights is not None and max(explorer.tokens.weights) == 1.0
    explorer.step.value = 0  # the hovered token's panel follows the step
    assert "step 0" in explorer.info.value
    with pytest.raises(IndexError):
        explorer.describe_token(t_1)


@pytest.mark.parametrize("name", ["pmi-stories", "pmi-stories-control"])
def test_zoo_checkpoints_match_their_recipes(name):
    import hashlib
    import json

    from safetensors import safe_open

    from workbench.zoo import ZOO, zoo_path
    from workbench.zoo.pmi_stories import encode_stories

    folder = zoo_path(name)
    weights = folder / "model.safetensors"
    recipe = json.loads((folder / "recipe.json").read_text())
    assert weights.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recipe["model_sha256"]
    assert recipe["seed"] == ZOO[name].seed and recipe["recipe"] == ZOO[name].recipe
    with safe_open(weights, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    # the saved tokenizer gives exactly the ids the recipe trained on
    lm = load_model(f"zoo:{name}")
    stories = make_stories(20, seed=7)
    ids, mask = encode_stories(stories)
    enc = lm.encode_texts([s.text for s in stories])
    assert torch.equal(enc["input_ids"], ids) and torch.equal(enc["attention_mask"], mask)

"""The membership audit of the curvature edit: the attacks on hand-made likelihoods, the ROC
summary, seeded sampling, and the audit inside a run."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from probes import curvature
from probes.curvature import audit
from probes.curvature.compute import auc as pairwise_auc
from probes.curvature.memorization import greedy_continue
from workbench.data import canaries as canary_corpus
from workbench.errors import ConfigError, DataError
from workbench.models import load_model
from workbench.threads import torch_threads

LOGP = np.array([-1.0, -5.0, -2.0, -10.0, -0.5])


def test_loss_zlib_and_min_k_on_hand_made_likelihoods():
    assert audit.loss_score(LOGP) == pytest.approx(-3.7)
    text = "a b a b a b"
    assert audit.zlib_score(LOGP, text) == pytest.approx(-3.7 / len(zlib.compress(text.encode())))
    assert audit.min_k_score(LOGP, 0.2) == -10.0  # one token: the least likely
    assert audit.min_k_score(LOGP, 0.4) == -7.5  # two: -10 and -5
    assert audit.min_k_score(LOGP, 0.5) == -7.5  # floor(2.5) = 2
    assert audit.min_k_score(LOGP, 1.0) == pytest.approx(-3.7)
    assert audit.min_k_score(LOGP[:1], 0.2) == -1.0  # never fewer than one token
    with pytest.raises(DataError, match="k is a share"):
        audit.min_k_score(LOGP, 0.0)


def test_min_k_pp_standardises_each_token_by_the_models_own_distribution():
    # p = (1/2, 1/4, 1/4): E[log p] = -1.5 ln 2 and sd = ln2 / 2, so the likely token sits at
    # +1 and either unlikely one at -1; a flat distribution has no spread and scores 0.
    skewed = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    flat = torch.zeros(3)
    logits = torch.stack([skewed, skewed, flat, skewed])[None]
    targets = torch.tensor([[0, 2, 1, 1]])
    logp, mu, sigma = audit.distribution_stats(logits, targets)
    assert mu[0, 0].item() == pytest.approx(-1.5 * np.log(2))
    assert sigma[0, 0].item() == pytest.approx(np.log(2) / 2)
    assert sigma[0, 2].item() < audit.FLAT
    z = (logp - mu) / sigma
    assert z[0, [0, 1, 3]].tolist() == pytest.approx([1.0, -1.0, -1.0])
    args = (logp[0].numpy(), mu[0].numpy(), sigma[0].numpy())
    assert audit.min_k_pp_score(*args, k=0.5) == pytest.approx(-1.0)
    assert audit.min_k_pp_score(*args, k=0.75) == pytest.approx(-2 / 3)
    assert audit.min_k_pp_score(*args, k=1.0) == pytest.approx(-0.25)


def test_roc_summary_gives_known_auc_and_tpr_at_one_percent_fpr():
    members, others = np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.5])
    found = audit.roc_summary(members, others)
    assert found["auc"] == pytest.approx(8 / 9) == pairwise_auc(members, others)
    assert found["tpr_at_fpr"] == pytest.approx(2 / 3)  # above every non-member: 4 and 5
    assert audit.roc_summary(members + 10, others) == {"auc": 1.0, "tpr_at_fpr": 1.0}
    assert audit.roc_summary(-members - 10, others) == {"auc": 0.0, "tpr_at_fpr": 0.0}
    # 200 non-members allow two false positives at 1%: the threshold may pass 198 and 199.
    wide = audit.roc_summary(np.array([198.5, 150.0, 300.0]), np.arange(200.0))
    assert wide["tpr_at_fpr"] == pytest.approx(2 / 3)


def test_extraction_rates_count_exact_and_loose_samples():
    target = torch.arange(8)
    off_by_one = target.clone()
    off_by_one[0] = 99
    samples = [torch.stack([target, off_by_one]), torch.stack([off_by_one, off_by_one + 50])]
    rates = audit.extraction_rates(samples, [target, target], loose_threshold=0.75)
    assert rates["sample_exact"].tolist() == [0.5, 0.0]
    assert rates["any_exact"].tolist() == [True, False]
    assert rates["any_loose"].tolist() == [True, True]  # 7 of 8 tokens right


@pytest.fixture(scope="module")
def zoo_lm():
    return load_model("zoo:gpt2-canaries")


def test_sampling_is_deterministic_under_a_seed_and_greedy_when_cold(zoo_lm):
    with torch_threads(1):  # a model this small runs fastest on one thread
        _check_sampling(zoo_lm)


def _check_sampling(zoo_lm):
    words = canary_corpus.LEXICON.content_words
    tok = zoo_lm.processor
    prompts = [
        torch.tensor([tok.eos_token_id, *tok(" ".join(words[k : k + 6]))["input_ids"]])
        for k in (0, 10, 20)
    ]
    first = audit.sample_continue(zoo_lm, prompts, 8, 4, seed=0, batch_size=5)
    again = audit.sample_continue(zoo_lm, prompts, 8, 4, seed=0, batch_size=2)
    other = audit.sample_continue(zoo_lm, prompts, 8, 4, seed=1, batch_size=5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert all(s.shape == (4, 8) for s in first)
    cold = audit.sample_continue(zoo_lm, prompts, 8, 2, seed=0, temperature=1e-4)
    greedy = greedy_continue(zoo_lm, prompts, 8)
    assert all(torch.equal(c, g.expand(2, -1)) for c, g in zip(cold, greedy, strict=True))
    with pytest.raises(DataError, match="temperature"):
        audit.sample_continue(zoo_lm, prompts, 8, 2, seed=0, temperature=0.0)


def test_audit_settings_are_checked():
    with pytest.raises(ConfigError, match="min_k"):
        curvature.Config(min_k=0.0)
    with pytest.raises(ConfigError, match="audit_temperature"):
        curvature.Config(audit_temperature=0.0)
    with pytest.raises(ConfigError, match="audit_samples"):
        curvature.Config(audit_samples=-1)


@pytest.mark.slow
def test_audit_runs_in_the_probe_and_sees_membership_the_edit_leaves(zoo_lm):
    before = {k: v.clone() for k, v in zoo_lm.model.state_dict().items()}
    config = curvature.Config(
        sweep=(0.88, 0.97),
        svd_sweep=(0.9,),
        factor_tokens=16384,
        held_out_tokens=2048,
        match_steps=3,
        audit_samples=4,
        audit_unseen=100,
    )
    result = curvature.run(zoo_lm, config)
    m, a = result.metrics, result.arrays
    assert all(torch.equal(v, zoo_lm.model.state_dict()[k]) for k, v in before.items())
    assert m["audit_members"] == 20 and m["audit_non_members"] == 110
    for attack in audit.ATTACKS:  # x16/x64 canaries against unseen ones: unmistakable
        assert m[f"mia_auc_{attack}_base"] > 0.95
    assert m["strict_after"] == 0.0  # recitation is gone ...
    assert m["mia_auc_loss_kfac"] > 0.9  # ... membership is not
    assert m["sampled_any_exact_memorized_base"] >= 0.8  # 4 samples of 16 tokens each
    assert m["sampled_any_exact_control_base"] == 0.0
    assert a["kfac_sweep_mia_auc"].shape == (len(audit.ATTACKS), 2)
    assert a["audit_scores_loss_kfac"].shape == (130,)
    for metric in curvature.METRICS:
        source = a if metric.over else m
        assert metric.key in source, metric.key
    assert {"audit_sweep", "audit_battery", "audit_extraction"} <= set(result.figures)
    assert "Membership audit" in result.summary

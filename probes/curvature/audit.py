"""An audit after the edit: does removing recitation remove membership?

Greedy recitation is what the curvature edit is judged by. Two weaker leaks can survive it:

* membership: the memorized sequences may still be more likely than matched unseen ones, which
  a membership-inference attack reads off the likelihoods alone;
* extraction under sampling: at temperature 1 the edited model may still produce the suffix in
  some of ``n`` samples, even when its single most likely continuation differs.

The attacks score whole sequences (the prompt's BOS excluded, every other token predicted) from
the model's per-token log-probabilities; a higher score means "more likely a member":

* loss (Yeom et al. 2018, the baseline of Carlini et al. 2021): minus the mean token NLL;
* zlib ratio (Carlini et al. 2021, "Extracting Training Data from Large Language Models",
  USENIX Security): minus the mean NLL divided by the zlib-compressed length of the text in
  bytes, so text that is likely only because it is simple scores lower;
* Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models",
  ICLR): the mean log-probability of the k% least likely tokens;
* Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data
  from Large Language Models"): per token ``(log p(x_t) - μ_t) / σ_t`` with μ_t and σ_t² the
  mean and variance of ``log p(z)`` for ``z`` drawn from the model's own next-token
  distribution, then the mean of the k% lowest.

Each attack is summarised by its ROC AUC and its true-positive rate at 1% false positives
(Carlini et al. 2022, "Membership Inference Attacks From First Principles"). Members are the
memorized set; non-members are the controls and, on a canary corpus, fresh canaries from the
same generator (so the false-positive rate is read on enough negatives).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from tqdm.auto import tqdm

from probes.curvature import compute
from probes.curvature.config import Config
from probes.curvature.data import CanarySet, _bos, _cut, _ids, knows_canary_words
from probes.curvature.memorization import _logits, decode
from workbench.data import canaries as canary_corpus
from workbench.edit import edited
from workbench.errors import DataError
from workbench.models import LoadedModel

ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")
ATTACK_NAMES = {
    "loss": "loss",
    "zlib": "zlib ratio",
    "min_k": "Min-K%",
    "min_k_pp": "Min-K%++",
}
FPR_LEVEL = 0.01
FLAT = 1e-8
"""A next-token distribution whose log-probabilities spread less than this counts as flat."""
UNSEEN_SEED_OFFSET = 7919
"""Fresh unseen canaries come from ``seed`` + this, apart from every stream the corpus uses."""


# -- token statistics --------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenStats:
    """Per predicted token of one sequence: log p(x_t), and μ_t, σ_t of log p under the model."""

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray


def distribution_stats(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(target), E_z[log p(z)] and sqrt(Var_z[log p(z)]) per position (float64)."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    probs = logprobs.exp()
    logp = logprobs.gather(-1, targets[..., None]).squeeze(-1)
    present = probs > 0
    mu = torch.where(present, probs * logprobs, 0.0).sum(-1)
    spread = torch.where(present, probs * (logprobs - mu[..., None]).square(), 0.0).sum(-1)
    return logp, mu, spread.sqrt()


@torch.no_grad()
def token_stats(
    model: LoadedModel, sequences: Sequence[torch.Tensor], *, batch_size: int = 16
) -> list[TokenStats]:
    """Every token after the first of each sequence, scored by the model (one forward each)."""
    out: list[TokenStats | None] = [None] * len(sequences)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        if len(s) < 2:
            raise DataError("a sequence to audit needs at least 2 tokens")
        groups.setdefault(len(s), []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            ids = torch.stack([sequences[i] for i in chunk])
            logits = _logits(model, ids)[:, :-1]
            logp, mu, sigma = distribution_stats(logits, ids[:, 1:].to(logits.device))
            for k, i in enumerate(chunk):
                out[i] = TokenStats(
                    logp[k].cpu().numpy(), mu[k].cpu().numpy(), sigma[k].cpu().numpy()
                )
    return out  # type: ignore[return-value]


# -- the attacks -------------------------------------------------------------------------------
def lowest_share(values: np.ndarray, k: float) -> np.ndarray:
    """The ``max(1, floor(k * n))`` smallest of ``values``."""
    values = np.asarray(values, dtype=float)
    if not 0.0 < k <= 1.0:
        raise DataError(f"k is a share of tokens in (0, 1]; got {k}")
    count = max(1, int(np.floor(k * len(values) + 1e-9)))
    return np.sort(values)[:count]


def loss_score(logp: np.ndarray) -> float:
    """Minus the mean NLL per token (Yeom et al. 2018; Carlini et al. 2021's baseline)."""
    return float(np.mean(logp))


def zlib_score(logp: np.ndarray, text: str) -> float:
    """Minus the mean NLL over the zlib entropy of the text (Carlini et al. 2021)."""
    size = len(zlib.compress(text.encode("utf-8")))
    return float(np.mean(logp)) / size


def min_k_score(logp: np.ndarray, k: float) -> float:
    """Mean log-probability of the k% least likely tokens (Shi et al. 2024, Min-K% Prob)."""
    return float(lowest_share(logp, k).mean())


def min_k_pp_score(logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float) -> float:
    """Mean of the k% lowest ``(log p(x_t) - μ_t) / σ_t`` (Zhang et al. 2024, Min-K%++).

    A position where the model's distribution is flat (σ_t below ``FLAT``) scores 0: its
    token is exactly as likely as the expectation.
    """
    logp, mu, sigma = (np.asarray(x, dtype=float) for x in (logp, mu, sigma))
    z = np.divide(logp - mu, sigma, out=np.zeros_like(logp), where=sigma > FLAT)
    return float(lowest_share(z, k).mean())


def attack_scores(stats: Sequence[TokenStats], texts: Sequence[str], k: float) -> dict:
    """Per attack, one score per sequence (higher = more likely a member)."""
    return {
        "loss": np.array([loss_score(s.logp) for s in stats]),
        "zlib": np.array([zlib_score(s.logp, t) for s, t in zip(stats, texts, strict=True)]),
        "min_k": np.array([min_k_score(s.logp, k) for s in stats]),
        "min_k_pp": np.array([min_k_pp_score(s.logp, s.mu, s.sigma, k) for s in stats]),
    }


def roc_summary(members: np.ndarray, others: np.ndarray, fpr_level: float = FPR_LEVEL) -> dict:
    """ROC AUC and the true-positive rate at ``fpr_level`` false positives (the highest TPR of
    any threshold whose FPR does not exceed it; with fewer than 1/fpr_level non-members that
    means no false positive at all)."""
    members, others = np.asarray(members, float), np.asarray(others, float)
    if not len(members) or not len(others):
        return {"auc": float("nan"), "tpr_at_fpr": float("nan")}
    labels = np.r_[np.ones(len(members)), np.zeros(len(others))]
    scores = np.r_[members, others]
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "tpr_at_fpr": float(tpr[fpr <= fpr_level + 1e-12].max()),
    }


# -- extraction under sampling -----------------------------------------------------------------
@torch.no_grad()
def sample_continue(
    model: LoadedModel,
    prompts: Sequence[torch.Tensor],
    n_tokens: int,
    n_samples: int,
    *,
    seed: int,
    temperature: float = 1.0,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Per prompt, ``(n_samples, n_tokens)`` continuations sampled at ``temperature``.

    Sample ``j`` of prompt ``i`` draws its tokens by inverting the next-token distribution's
    CDF at uniforms from its own generator, seeded with ``(seed, i, j)``: the samples depend on
    the seed alone, not on batching or device.
    """
    if temperature <= 0:
        raise DataError(f"temperature must be positive; got {temperature}")
    rows = [(i, j) for i in range(len(prompts)) for j in range(n_samples)]
    uniforms = {
        (i, j): torch.from_numpy(np.random.default_rng([seed, i, j]).random(n_tokens))
        for i, j in rows
    }
    out = [torch.zeros(n_samples, n_tokens, dtype=torch.long) for _ in prompts]
    by_length: dict[int, list[tuple[int, int]]] = {}
    for i, j in rows:
        by_length.setdefault(len(prompts[i]), []).append((i, j))
    chunks = [
        group[start : start + batch_size]
        for group in by_length.values()
        for start in range(0, len(group), batch_size)
    ]
    for chunk in tqdm(chunks, desc="sampling", unit="batch", leave=False):
        ids = torch.stack([prompts[i] for i, _ in chunk])
        u = torch.stack([uniforms[row] for row in chunk])
        new = _sample_batch(model, ids, u, temperature)
        for k, (i, j) in enumerate(chunk):
            out[i][j] = new[k]
    return out


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
    """(batch, 1) token ids: where each row's CDF of softmax(logits / T) first exceeds ``u``."""
    probs = torch.softmax(logits.double().cpu() / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return picked.clamp_max(probs.shape[-1] - 1)


def _sample_batch(
    model: LoadedModel, ids: torch.Tensor, u: torch.Tensor, temperature: float
) -> torch.Tensor:
    def choose(logits: torch.Tensor, step: int) -> torch.Tensor:
        return inverse_cdf(logits, u[:, step], temperature)

    return decode(model, ids, u.shape[1], choose)


def extraction_rates(
    samples: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], loose_threshold: float
) -> dict[str, np.ndarray]:
    """Per prompt: the share of samples equal to the target, and whether any sample is (or
    loosely is, similarity 1 - d/L at least ``loose_threshold``)."""
    exact, any_exact, any_loose = [], [], []
    for drawn, target in zip(samples, targets, strict=True):
        rec = compute.recitation(list(drawn), [target] * len(drawn), loose_threshold)
        exact.append(float(rec.strict.mean()))
        any_exact.append(bool(rec.strict.any()))
        any_loose.append(bool(rec.loose.any()))
    return {
        "sample_exact": np.array(exact),
        "any_exact": np.array(any_exact),
        "any_loose": np.array(any_loose),
    }


# -- the audit inside a run --------------------------------------------------------------------
@dataclass(frozen=True)
class AuditSet:
    """Sequences to attack (BOS + prefix + suffix ids), their texts, and who is a member."""

    sequences: list[torch.Tensor]
    texts: list[str]
    member: np.ndarray
    source: str


def audit_set(
    model: LoadedModel, config: Config, data: CanarySet, memorized: np.ndarray
) -> AuditSet:
    """Members: the memorized set. Non-members: the controls, plus ``audit_unseen`` fresh
    canaries from the corpus's own generator when the model reads canary words."""
    seqs = [torch.cat([p, t]) for p, t in zip(data.prompts, data.targets, strict=True)]
    pick = memorized | data.control
    sequences = [s for s, keep in zip(seqs, pick, strict=True) if keep]
    member = memorized[pick]
    source = "controls"
    if data.planted is not None and config.audit_unseen and knows_canary_words(model):
        fresh = unseen_canaries(model, config, config.audit_unseen)
        sequences += fresh
        member = np.r_[member, np.zeros(len(fresh), dtype=bool)]
        source = f"unseen canaries ({int(data.control.sum())} of the corpus, {len(fresh)} fresh)"
    tok = model.processor
    skip = len(_bos(model))
    texts = [tok.decode(s[skip:].tolist()) for s in sequences]
    return AuditSet(sequences, texts, member, source)


def unseen_canaries(model: LoadedModel, config: Config, n: int) -> list[torch.Tensor]:
    """``n`` canaries never planted: drawn like the corpus's, cut like ``canary_set``'s."""
    length = config.prefix_tokens + config.suffix_tokens
    rng = np.random.default_rng(config.seed + UNSEEN_SEED_OFFSET)
    bos = _bos(model)
    out = []
    for _ in range(n):
        words = canary_corpus.random_canary(rng, length)
        head, tail = _cut(_ids(model, " ".join(words)), config.prefix_tokens, config.suffix_tokens)
        out.append(torch.tensor(bos + head + tail))
    return out


def battery(
    model: LoadedModel, config: Config, audit: AuditSet
) -> dict[str, dict[str, float] | np.ndarray]:
    """Every attack's scores on the current weights, with its AUC and TPR at 1% FPR."""
    stats = token_stats(model, audit.sequences, batch_size=config.batch_size)
    scores = attack_scores(stats, audit.texts, config.min_k)
    out: dict[str, Any] = {}
    for name, values in scores.items():
        out[name] = roc_summary(values[audit.member], values[~audit.member])
        out[f"{name}_scores"] = values
    return out


def sampled_extraction(
    model: LoadedModel, config: Config, data: CanarySet, memorized: np.ndarray
) -> dict[str, float]:
    """Sampling at ``audit_temperature``, ``audit_samples`` per prompt, on the memorized set and
    (the floor) the controls."""
    out: dict[str, float] = {}
    n_tokens = max(len(t) for t in data.targets)
    for group, pick in (("memorized", memorized), ("control", data.control)):
        index = np.nonzero(pick)[0]
        if not len(index):
            continue
        samples = sample_continue(
            model,
            [data.prompts[i] for i in index],
            n_tokens,
            config.audit_samples,
            seed=config.seed,
            temperature=config.audit_temperature,
            batch_size=config.batch_size,
        )
        targets = [data.targets[i] for i in index]
        samples = [s[:, : len(t)] for s, t in zip(samples, targets, strict=True)]
        rates = extraction_rates(samples, targets, config.loose_threshold)
        out[f"sample_exact_{group}"] = float(rates["sample_exact"].mean())
        out[f"any_exact_{group}"] = float(rates["any_exact"].mean())
        out[f"any_loose_{group}"] = float(rates["any_loose"].mean())
    return out


def run_audit(
    model: LoadedModel,
    config: Config,
    data: CanarySet,
    memorized: np.ndarray,
    *,
    states: Mapping[str, Callable[[], Mapping | None]],
    sweeps: Mapping[str, tuple[Sequence[float], Callable[[float], Mapping]]],
) -> tuple[dict, dict[str, np.ndarray]]:
    """The battery and sampling for each named model state (``states``: name -> new weights,
    None = unedited) and the battery along each sweep; returns (metrics, arrays).

    Every edit is applied inside ``edited``, so the model's weights are restored after each.
    """
    audit = audit_set(model, config, data, memorized)
    if not audit.member.any():
        return {"audit": "skipped: no memorized sequence to audit"}, {}

    def measure(new: Mapping | None, sample: bool) -> dict:
        def go() -> dict:
            found: dict[str, Any] = battery(model, config, audit)
            if sample and config.audit_samples:
                found["sampling"] = sampled_extraction(model, config, data, memorized)
            return found

        if not new:
            return go()
        with edited(model, new):
            return go()

    metrics: dict[str, Any] = {
        "audit_members": int(audit.member.sum()),
        "audit_non_members": int((~audit.member).sum()),
        "audit_non_member_source": audit.source,
        "audit_min_k": config.min_k,
        "audit_samples": config.audit_samples,
        "audit_temperature": config.audit_temperature,
    }
    arrays: dict[str, np.ndarray] = {
        "audit_member": audit.member,
        "audit_states": np.array(list(states)),
        "audit_attacks": np.array(ATTACKS),
    }
    for state, new_weights in tqdm(states.items(), desc="membership audit", unit="state"):
        found = measure(new_weights(), sample=True)
        for attack in ATTACKS:
            metrics[f"mia_auc_{attack}_{state}"] = found[attack]["auc"]
            metrics[f"mia_tpr1_{attack}_{state}"] = found[attack]["tpr_at_fpr"]
            arrays[f"audit_scores_{attack}_{state}"] = found[f"{attack}_scores"]
        for key, value in found.get("sampling", {}).items():
            metrics[f"sampled_{key}_{state}"] = value
    for prefix, (values, new_weights_at) in sweeps.items():
        aucs = np.zeros((len(ATTACKS), len(values)))
        tprs = np.zeros_like(aucs)
        for j, value in enumerate(tqdm(values, desc=f"audit along {prefix}", unit="edit")):
            found = measure(new_weights_at(value), sample=False)
            for a, attack in enumerate(ATTACKS):
                aucs[a, j] = found[attack]["auc"]
                tprs[a, j] = found[attack]["tpr_at_fpr"]
        arrays[f"{prefix}_sweep_mia_auc"] = aucs
        arrays[f"{prefix}_sweep_mia_tpr1"] = tprs
        arrays[f"{prefix}_sweep_mia_auc_loss"] = aucs[0]
    return metrics, arrays


HEADLINE = (
    "mia_auc_loss_base",
    "mia_auc_loss_kfac",
    "mia_auc_loss_svd",
    "sampled_any_exact_memorized_kfac",
)


def summary(m: dict) -> str:
    """One or two sentences for the run's summary."""
    if "mia_auc_loss_kfac" not in m:
        return ""
    best = max(ATTACKS, key=lambda a: m[f"mia_auc_{a}_kfac"])
    text = (
        f" Membership audit ({m['audit_members']} members vs {m['audit_non_members']} "
        f"{m['audit_non_member_source']}): the loss attack's AUC goes from "
        f"{m['mia_auc_loss_base']:.2f} unedited to {m['mia_auc_loss_kfac']:.2f} after the K-FAC "
        f"edit (strongest after the edit: {ATTACK_NAMES[best]}, AUC "
        f"{m[f'mia_auc_{best}_kfac']:.2f}, TPR {m[f'mia_tpr1_{best}_kfac']:.0%} at 1% FPR)"
    )
    if "mia_auc_loss_svd" in m:
        text += f" and is {m['mia_auc_loss_svd']:.2f} for SVD at matched perplexity"
    text += "."
    key = "sampled_any_exact_memorized"
    if f"{key}_kfac" in m:
        text += (
            f" Sampling {m['audit_samples']} continuations per prompt at temperature "
            f"{m['audit_temperature']:g}, some sample reproduces the suffix exactly for "
            f"{m[f'{key}_base']:.0%} of the memorized set unedited and {m[f'{key}_kfac']:.0%} "
            "after the edit"
        )
        if f"{key}_svd" in m:
            text += f" ({m[f'{key}_svd']:.0%} for SVD)"
        text += f"; for the controls {m['sampled_any_exact_control_kfac']:.0%} after the edit."
    return text

"""Measurements on a (possibly edited) causal LM: recitation, likelihood, perplexity, top-k.

All of them run without gradients on token-id tensors; prompts of different lengths are run in
groups of equal length, so no padding (and no position-id bookkeeping) is ever needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.curvature import compute
from workbench.errors import DataError
from workbench.models import LoadedModel


def _logits(
    model: LoadedModel,
    ids: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    keep: int = 0,
) -> torch.Tensor:
    """Logits of ``ids``; with ``keep``, only those of the last ``keep`` positions (the
    Hugging Face backend skips the output projection elsewhere)."""
    batch: dict[str, Any] = {"input_ids": ids}
    if mask is not None:
        batch["attention_mask"] = mask
    if keep and model.backend == "hf":
        batch["logits_to_keep"] = keep
    out = model.forward(batch)
    logits = getattr(out, "logits", out)  # the TransformerLens backend returns the tensor
    return (logits[:, -keep:] if keep else logits).float()


def _by_length(seqs: Sequence[torch.Tensor]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(len(s), []).append(i)
    return groups


@torch.no_grad()
def greedy_continue(
    model: LoadedModel, prompts: Sequence[torch.Tensor], n_tokens: int, *, batch_size: int = 64
) -> list[torch.Tensor]:
    """The ``n_tokens`` greedy (argmax) continuation of each prompt.

    The Hugging Face backend decodes with its key/value cache: one forward over the prompts,
    then one position per step.
    """
    out: list[torch.Tensor | None] = [None] * len(prompts)
    chunks = [
        idx[start : start + batch_size]
        for idx in _by_length(prompts).values()
        for start in range(0, len(idx), batch_size)
    ]
    for chunk in tqdm(chunks, desc="recitation", unit="batch", leave=False):
        ids = torch.stack([prompts[i] for i in chunk])
        new = _decode_greedily(model, ids, n_tokens)
        for k, i in enumerate(chunk):
            out[i] = new[k]
    return out  # type: ignore[return-value]


def _decode_greedily(model: LoadedModel, ids: torch.Tensor, n_tokens: int) -> torch.Tensor:
    return decode(model, ids, n_tokens, lambda logits, _step: logits.argmax(-1, keepdim=True))


def decode(
    model: LoadedModel,
    ids: torch.Tensor,
    n_tokens: int,
    choose: Callable[[torch.Tensor, int], torch.Tensor],
) -> torch.Tensor:
    """``n_tokens`` new ids after ``ids``; ``choose(last_logits, step)`` picks each (batch, 1)."""
    if model.backend != "hf":
        for step in range(n_tokens):
            next_id = choose(_logits(model, ids, keep=1)[:, -1], step).cpu()
            ids = torch.cat([ids, next_id], dim=1)
        return ids[:, -n_tokens:]
    steps = []
    batch: dict[str, Any] = {"input_ids": ids, "use_cache": True, "logits_to_keep": 1}
    out = model.forward(batch)
    for step in range(n_tokens):
        next_id = choose(out.logits[:, -1], step)
        steps.append(next_id.cpu())
        if step + 1 < n_tokens:
            key = "cache" if "cache" in out else "past_key_values"  # the name before 5.2x
            batch = {"input_ids": next_id, key: out[key], "use_cache": True}
            out = model.forward(batch)
    return torch.cat(steps, dim=1)


@torch.no_grad()
def continuation_nll(
    model: LoadedModel,
    prompts: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """Mean negative log-likelihood per token (nats) of each target given its prompt."""
    seqs = [torch.cat([p, t]) for p, t in zip(prompts, targets, strict=True)]
    nll = np.zeros(len(seqs))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        groups.setdefault((len(p), len(t)), []).append(i)
    for (_p_len, t_len), idx in groups.items():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            ids = torch.stack([seqs[i] for i in chunk])
            logits = _logits(model, ids, keep=t_len + 1)[:, :-1]
            per_token = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), ids[:, -t_len:].to(logits.device), reduction="none"
            )
            nll[chunk] = per_token.mean(dim=1).double().cpu().numpy()
    return nll


@dataclass(frozen=True)
class TextScore:
    """Held-out text: perplexity over all predicted tokens, and top-k next tokens per position."""

    perplexity: float
    nll: float
    n_tokens: int
    topk: torch.Tensor | None


@torch.no_grad()
def score_text(
    model: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    k: int = 0,
    batch_size: int = 64,
) -> TextScore:
    """Perplexity exp(mean NLL) of every real next token; with ``k``, the top-k ids too."""
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise DataError("held-out text must be (sequences, tokens) with at least 2 tokens each")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    total, count, tops = 0.0, 0, []
    for start in range(0, len(input_ids), batch_size):
        ids = input_ids[start : start + batch_size]
        mask = attention_mask[start : start + batch_size]
        logits = _logits(model, ids, mask)[:, :-1]
        valid = (mask[:, :-1] & mask[:, 1:]).bool().to(logits.device)
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), ids[:, 1:].to(logits.device), reduction="none"
        )
        total += float(nll[valid].double().sum())
        count += int(valid.sum())
        if k:
            tops.append(logits[valid].topk(k, dim=-1).indices.cpu())
    mean = total / max(count, 1)
    return TextScore(
        perplexity=float(np.exp(mean)),
        nll=mean,
        n_tokens=count,
        topk=torch.cat(tops) if k else None,
    )


@dataclass(frozen=True)
class Evaluation:
    """One model state (base or an edit) measured on canaries and held-out text."""

    continuations: list[torch.Tensor]
    recitation: compute.Recitation
    suffix_nll: np.ndarray
    perplexity: float
    ndcg: float


def evaluate(
    model: LoadedModel,
    prompts: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    held_out: torch.Tensor,
    held_out_mask: torch.Tensor | None,
    *,
    base_topk: torch.Tensor | None = None,
    loose_threshold: float = 0.75,
    batch_size: int = 64,
) -> Evaluation:
    """Greedy recitation and suffix likelihood of every sequence, held-out perplexity, nDCG."""
    n_tokens = max(len(t) for t in targets)
    continuations = greedy_continue(model, prompts, n_tokens, batch_size=batch_size)
    rec = compute.recitation(continuations, targets, loose_threshold)
    nll = continuation_nll(model, prompts, targets, batch_size=batch_size)
    k = 0 if base_topk is None else base_topk.shape[-1]
    text = score_text(model, held_out, held_out_mask, k=k, batch_size=batch_size)
    ndcg = 1.0
    if base_topk is not None and text.topk is not None:
        ndcg = float(compute.ndcg_at_k(base_topk, text.topk).mean())
    return Evaluation(continuations, rec, nll, text.perplexity, ndcg)

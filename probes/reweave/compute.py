"""Pure functions on tensors: attention statistics, next-token scoring, frequency buckets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from workbench.errors import DataError

STATS = ("entropy", "sink", "distance")
STAT_TITLES = {
    "entropy": "attention entropy (nats)",
    "sink": "attention-sink mass (weight on the first token)",
    "distance": "mean attention distance (tokens)",
}


def query_mask(attention_mask: torch.Tensor | None, batch: int, seq: int) -> torch.Tensor:
    """(batch, seq) bool: real tokens that count as queries. Position 0 never does: its only
    (causal) choice is itself, which would inflate sink mass and deflate entropy."""
    mask = (
        torch.ones(batch, seq, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.bool().clone()
    )
    mask[:, 0] = False
    return mask


def attention_sums(
    pattern: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[np.ndarray, int]:
    """Per-head sums over queries of entropy, sink mass and distance; and the query count.

    ``pattern`` is (batch, heads, queries, keys) with rows summing to one. Returns a
    (3, heads) array in ``STATS`` order; divide by the count for means.
    """
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise DataError(f"attention patterns must be (batch, heads, seq, seq); got {pattern.shape}")
    p = pattern.detach().double()
    b, _h, t, _ = p.shape
    valid = query_mask(attention_mask, b, t).to(p.device)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    sink = p[..., 0]
    pos = torch.arange(t, device=p.device, dtype=p.dtype)
    distance = (p * (pos[:, None] - pos[None, :]).abs()).sum(-1)
    w = valid[:, None, :].to(p.dtype)
    sums = torch.stack([(x * w).sum((0, 2)) for x in (entropy, sink, distance)])
    return sums.numpy(), int(valid.sum())


class AttentionStats:
    """Accumulates per layer and head the mean entropy, sink mass and distance of queries."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.sums = np.zeros((len(STATS), n_layers, n_heads))
        self.counts = np.zeros(n_layers)

    def add(
        self, layer: int, pattern: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> None:
        sums, n = attention_sums(pattern, attention_mask)
        self.sums[:, layer] += sums
        self.counts[layer] += n

    def means(self) -> np.ndarray:
        """(3, layers, heads) in ``STATS`` order."""
        if (self.counts == 0).any():
            raise DataError("no attention patterns were recorded for some layers")
        return self.sums / self.counts[None, :, None]


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (right padding)."""
    return attention_mask.long().sum(-1) - 1


def final_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, vocab) logits at each row's last real token."""
    rows = torch.arange(logits.shape[0])
    return logits[rows, last_positions(attention_mask)]


def kl_divergence(base_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """KL(base || other) per row of next-token distributions, in nats."""
    lp = torch.log_softmax(base_logits.double(), -1)
    lq = torch.log_softmax(other_logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def frequency_buckets(
    counts: Mapping[str, int], words: Sequence[str], n_buckets: int
) -> list[tuple[str, list[str], float]]:
    """Split ``words`` into ``n_buckets`` equal groups by corpus count, rarest first.

    Returns (label, words, median count) per bucket; labels give the count range.
    """
    if n_buckets < 1:
        raise DataError("ask for at least one frequency bucket")
    known = [w for w in words if w in counts]
    if len(known) < n_buckets:
        raise DataError(f"only {len(known)} words have corpus counts; need {n_buckets} buckets")
    ordered = sorted(known, key=lambda w: (counts[w], w))
    out = []
    for group in np.array_split(np.array(ordered, dtype=object), n_buckets):
        c = [counts[w] for w in group]
        out.append((f"seen {min(c):,}–{max(c):,}×", list(group), float(np.median(c))))
    return out


def most_changed_head(base: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """(layer, head) whose pattern moved most: largest mean absolute difference.

    ``base``/``other`` are (layers, heads, seq, seq).
    """
    change = np.abs(other - base).mean(axis=(-1, -2))
    layer, head = np.unravel_index(int(change.argmax()), change.shape)
    return int(layer), int(head)

"""The pmi probe's measurements as pure functions on arrays (no model, no plotting)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.data.stories import QUESTION, Story
from workbench.errors import DataError

ROLES = ("person", "place", "object", "verb", "function", "question")
"""Token roles used to summarise where slots write and how tokens read."""


def token_roles(story: Story) -> list[str]:
    """Role of each token, with every question token marked ``question``."""
    return [
        "question" if s == QUESTION else r
        for r, s in zip(story.role_of_token, story.sentence_of_token, strict=True)
    ]


def read_share_wm(u_w: np.ndarray, u_wl: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """How much of each token's integrated read comes from working memory, in [0, 1].

    U = g U_w + (1 - g) U_wl, and U_wl is long-term memory corrected by U_w; the share is
    |g U_w| / (|g U_w| + |(1 - g) U_wl|) per token (norms over features). ``gate`` broadcasts
    against (..., T, 1).
    """
    wm = np.linalg.norm(gate * u_w, axis=-1)
    ltm = np.linalg.norm((1.0 - gate) * u_wl, axis=-1)
    return wm / np.maximum(wm + ltm, 1e-12)


def mass_by_sentence(
    weights: np.ndarray, sentence_of_token: Sequence[int], n_facts: int
) -> np.ndarray:
    """Sum attention weights over the tokens of each fact (columns 0..n_facts-1) and of the
    question (last column). ``weights``: (..., T) over the story's real tokens."""
    sentences = np.asarray(sentence_of_token)
    if weights.shape[-1] != len(sentences):
        raise DataError(
            f"weights cover {weights.shape[-1]} tokens but the story has {len(sentences)}"
        )
    column = np.where(sentences == QUESTION, n_facts, sentences)
    out = np.zeros((*weights.shape[:-1], n_facts + 1))
    for j in range(n_facts + 1):
        out[..., j] = weights[..., column == j].sum(-1)
    return out


def slot_holdings(write: np.ndarray, story: Story) -> np.ndarray:
    """Which fact each slot holds after each step: argmax of cumulative write mass per fact.

    ``write``: (S, N, T) post-top-k write weights (heads averaged) over the story's tokens.
    Returns (S, N) fact indices, with ``len(story.facts)`` meaning the question.
    """
    per_fact = mass_by_sentence(write, story.sentence_of_token, len(story.facts))
    return per_fact.cumsum(axis=0).argmax(-1)


def fact_labels(story: Story, fact: int) -> dict[str, str]:
    """Entity, kind, target and role-in-answer of fact ``fact`` (or of the question)."""
    if fact >= len(story.facts):
        return {
            "entity": story.entity,
            "kind": "question",
            "target": story.entity,
            "support": "question",
            "text": " ".join(story.question),
        }
    f = story.facts[fact]
    return {
        "entity": f.person,
        "kind": f.kind,
        "target": f.target,
        "support": "supporting fact" if fact in story.supporting else "other fact",
        "text": f.text,
    }


def write_share_by_role(write: np.ndarray, roles: Sequence[str]) -> np.ndarray:
    """Fraction of the write mass (summed over slots) landing on each role, per step.

    ``write``: (S, N, T) -> (S, len(ROLES)).
    """
    role = np.asarray(roles)
    total = write.sum(axis=1)  # (S, T)
    out = np.stack([total[:, role == r].sum(-1) for r in ROLES], axis=-1)
    return out / np.maximum(out.sum(-1, keepdims=True), 1e-12)


def mean_by_role(values: np.ndarray, roles: Sequence[str]) -> np.ndarray:
    """Mean of ``values`` (S, T) over the tokens of each role -> (S, len(ROLES)), NaN if absent."""
    role = np.asarray(roles)
    out = np.full((values.shape[0], len(ROLES)), np.nan)
    for j, r in enumerate(ROLES):
        if (role == r).any():
            out[:, j] = values[:, role == r].mean(-1)
    return out


def segment_norms(ltm: np.ndarray) -> np.ndarray:
    """Frobenius norm of each LTM segment: (..., C, N, D) -> (..., C)."""
    return np.sqrt((ltm.astype(np.float64) ** 2).sum(axis=(-1, -2)))


def relative_update(delta: np.ndarray, ltm_before: np.ndarray) -> np.ndarray:
    """Size of each consolidation update relative to the segment it is added to.

    delta, ltm_before (..., C, N, D) -> (..., C): |delta_c| / |L_c| (Frobenius norms).
    """
    return segment_norms(delta) / np.maximum(segment_norms(ltm_before), 1e-12)


def segment_drift(ltm: np.ndarray) -> np.ndarray:
    """Cosine similarity of each segment (flattened) to itself one step earlier.

    ltm (S + 1, C, N, D) including the initial state -> (S, C); 1 = unchanged.
    """
    now = ltm[1:].reshape(ltm.shape[0] - 1, ltm.shape[1], -1)
    before = ltm[:-1].reshape(ltm.shape[0] - 1, ltm.shape[1], -1)
    num = (now * before).sum(-1)
    den = np.linalg.norm(now, axis=-1) * np.linalg.norm(before, axis=-1)
    return num / np.maximum(den, 1e-12)


def segment_wm_similarity(ltm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Mean cosine similarity between each segment's slot rows and the same WM slot's row.

    ltm (..., C, N, D), wm (..., N, D) -> (..., C).
    """
    num = (ltm * wm[..., None, :, :]).sum(-1)
    den = np.linalg.norm(ltm, axis=-1) * np.linalg.norm(wm, axis=-1)[..., None, :]
    return (num / np.maximum(den, 1e-12)).mean(-1)


def slot_change(wm: np.ndarray) -> np.ndarray:
    """Cosine similarity of each slot to its own state one step earlier.

    wm (S + 1, N, D) including the initial state -> (S, N); low values mean overwritten.
    """
    a, b = wm[1:], wm[:-1]
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def accuracy_by_task(pred: np.ndarray, truth: np.ndarray, tasks: Sequence[str]) -> dict[str, float]:
    """Accuracy overall (key ``all``) and for each task present."""
    task_of = np.asarray(tasks)
    out = {"all": float((pred == truth).mean())}
    for task in dict.fromkeys(task_of.tolist()):
        sel = task_of == task
        out[task] = float((pred[sel] == truth[sel]).mean())
    return out


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items, chosen by ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def label_purity(
    labels: np.ndarray, xy: np.ndarray, k: int = 10, groups: np.ndarray | None = None
) -> float:
    """Fraction of each point's ``k`` nearest neighbours (in ``xy``) sharing its label.

    With ``groups`` (e.g. the story of each slot state), neighbours from the point's own group
    are skipped, so the number asks whether *different* stories' states that hold the same
    thing land together, not whether one story's slots resemble each other. Compare it with
    ``label_purity_chance``.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(xy)
    extra = 0 if groups is None else int(np.unique(groups, return_counts=True)[1].max())
    m = min(k + extra + 1, n)
    idx = NearestNeighbors(n_neighbors=m).fit(xy).kneighbors(xy, return_distance=False)
    hits, total = 0, 0
    for i in range(n):
        others = idx[i][idx[i] != i]
        if groups is not None:
            others = others[groups[others] != groups[i]]
        others = others[:k]
        hits += int((labels[others] == labels[i]).sum())
        total += len(others)
    return hits / max(total, 1)


def label_purity_chance(labels: np.ndarray) -> float:
    """Expected purity if neighbours were random: sum over labels of their squared frequency."""
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float((p**2).sum())

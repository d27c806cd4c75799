"""IsSameObject probes as pure tensor code: pair labels, the probe family, fitting, metrics.

Every probe maps the embeddings of two patches (x, y) of one image to a logit; "same object" is
logit > 0. All pair scores of a batch of images come from one batched bilinear form,
``(B, N, d) -> (B, N, N)``; ``pair_logits_loop`` is the slow per-pair reference that tests and
the benchmark compare against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench.capture import hooks
from workbench.errors import DataError
from workbench.models import LoadedModel

TRAINED_PROBES = ("linear", "diagonal", "quadratic", "lowrank")
UNTRAINED_PROBES = ("cosine", "dot", "attention")
PROBES = (*TRAINED_PROBES, *UNTRAINED_PROBES)
PROBE_LABELS = {
    "linear": "linear (additive)",
    "diagonal": "diagonal quadratic",
    "quadratic": "full quadratic",
    "lowrank": "low-rank quadratic",
    "cosine": "cosine (untrained)",
    "dot": "dot product (untrained)",
    "attention": "next layer's attention score (untrained)",
}
BACKGROUND_MODES = ("exclude", "as_object")


# -- labels ------------------------------------------------------------------------------------
def pair_targets(patch_ids: np.ndarray, background: str = "exclude") -> tuple[np.ndarray, ...]:
    """Labels and the mask of usable pairs for (n, N) patch ids: ``(same, valid)``, (n, N, N).

    ``valid`` is the strict upper triangle (i < j) over patches with a usable id: an object
    (id > 0), plus background (id 0) when ``background="as_object"``, where two background
    patches count as one object (the reference code's convention). Id -1 is never usable.
    """
    if background not in BACKGROUND_MODES:
        raise DataError(f"background must be one of {', '.join(BACKGROUND_MODES)}")
    ids = np.asarray(patch_ids)
    if ids.ndim != 2:
        raise DataError(f"patch ids must be (images, patches); got shape {ids.shape}")
    usable = ids > 0 if background == "exclude" else ids >= 0
    n = ids.shape[1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    valid = usable[:, :, None] & usable[:, None, :] & upper[None]
    same = ids[:, :, None] == ids[:, None, :]
    return same & valid, valid


def grid_distances(grid_h: int, grid_w: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) Euclidean distance between patch centres in patch units, and its exact integer key
    (squared distance), for a row-major grid."""
    rows, cols = np.divmod(np.arange(grid_h * grid_w), grid_w)
    squared = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
    return np.sqrt(squared), squared


# -- features of the controls ------------------------------------------------------------------
def pixel_patches(
    images: np.ndarray, patch_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """Raw pixel patches (n, N, p*p*3), normalised as the model normalises its input."""
    x = (images.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    n, h, w, c = x.shape
    p = patch_size
    blocks = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(blocks.reshape(n, (h // p) * (w // p), p * p * c))


def position_features(n_images: int, n_patches: int) -> np.ndarray:
    """One-hot patch positions (n, N, N): a quadratic probe on them can learn any function of
    the two positions, so it is the strongest position-only predictor of "same object"."""
    eye = np.eye(n_patches, dtype=np.float32)
    return np.broadcast_to(eye, (n_images, n_patches, n_patches)).copy()


@dataclass(frozen=True)
class Standardiser:
    """Per-dimension z-scoring fitted on training patches (mean, std)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, usable: torch.Tensor) -> Standardiser:
        return cls.fit_chunks([(x, usable)])

    @classmethod
    def fit_chunks(cls, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Standardiser:
        """From (features (B, N, d), usable (B, N)) chunks, in one streaming pass (float64 sums),
        so the training set never needs to be in memory at once."""
        count, total, squares = 0, None, None
        for x, usable in chunks:
            rows = x[usable].double()
            count += rows.shape[0]
            total = rows.sum(0) if total is None else total + rows.sum(0)
            sq = (rows * rows).sum(0)
            squares = sq if squares is None else squares + sq
        if count < 2 or total is None or squares is None:
            raise DataError("fewer than two usable patches to standardise features on")
        mean = total / count
        var = ((squares - count * mean * mean) / (count - 1)).clamp_min(0.0)
        return cls(mean.float(), var.sqrt().float().clamp_min(1e-6))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


# -- the probe family --------------------------------------------------------------------------
class PairProbe(nn.Module):
    """One member of the probe family; ``forward(x)`` gives all pair logits of a batch.

    ``x`` is (B, N, d). Untrained probes (cosine, dot, attention) only fit a scale and a bias,
    which moves the threshold but not the ranking; ``attention`` reads precomputed scores.
    """

    def __init__(self, kind: str, dim: int, *, rank: int = 8, seed: int = 0) -> None:
        super().__init__()
        if kind not in PROBES:
            raise DataError(f"unknown probe {kind!r}; choose from {', '.join(PROBES)}")
        self.kind, self.dim, self.rank = kind, dim, rank
        self.bias = nn.Parameter(torch.zeros(()))
        gen = torch.Generator().manual_seed(seed)
        if kind == "linear":
            self.w1 = nn.Parameter(torch.zeros(dim))
            self.w2 = nn.Parameter(torch.zeros(dim))
        elif kind == "diagonal":
            self.w = nn.Parameter(torch.zeros(dim))
        elif kind == "quadratic":
            self.W = nn.Parameter(torch.zeros(dim, dim))
        elif kind == "lowrank":
            if not 1 <= rank <= dim:
                raise DataError(f"the low-rank probe needs 1 <= rank <= {dim}; got {rank}")
            self.W1 = nn.Parameter(0.01 * torch.randn(rank, dim, generator=gen))
            self.W2 = nn.Parameter(0.01 * torch.randn(rank, dim, generator=gen))
        else:
            self.scale = nn.Parameter(torch.ones(()))

    @property
    def trained(self) -> bool:
        return self.kind in TRAINED_PROBES

    def symmetric_matrix(self) -> torch.Tensor | None:
        """W_s of the quadratic probes (x^T W_s y), symmetrised and scaled by 1/sqrt(d)."""
        root = math.sqrt(self.dim)
        if self.kind == "quadratic":
            return (self.W + self.W.T) / (2 * root)
        if self.kind == "lowrank":
            return (self.W1.T @ self.W2 + self.W2.T @ self.W1) / (2 * root)
        if self.kind == "diagonal":
            return torch.diag(self.w)
        return None

    def forward(self, x: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "linear":
            return (x @ self.w1)[:, :, None] + (x @ self.w2)[:, None, :] + self.bias
        if self.kind == "diagonal":
            return (x * self.w) @ x.transpose(1, 2) + self.bias
        if self.kind == "quadratic":
            ws = (self.W + self.W.T) / (2 * math.sqrt(self.dim))
            return torch.baddbmm(self.bias.expand(1, 1, 1), x @ ws, x.transpose(1, 2))
        if self.kind == "lowrank":
            a, c = x @ self.W1.T, x @ self.W2.T
            s = a @ c.transpose(1, 2)
            return (s + s.transpose(1, 2)) / (2 * math.sqrt(self.dim)) + self.bias
        if self.kind == "cosine":
            xn = nn.functional.normalize(x, dim=-1)
            return self.scale * (xn @ xn.transpose(1, 2)) + self.bias
        if self.kind == "dot":
            return self.scale * (x @ x.transpose(1, 2)) / self.dim + self.bias
        if attention is None:
            raise DataError("the attention probe needs the next layer's attention scores")
        return self.scale * attention + self.bias

    def pair_logit(self, x: torch.Tensor, y: torch.Tensor, attention: float | None = None) -> float:
        """The logit of one pair, written out as in the paper (the slow reference)."""
        with torch.no_grad():
            if self.kind == "linear":
                return float(self.w1 @ x + self.w2 @ y + self.bias)
            if self.kind == "diagonal":
                return float(self.w @ (x * y) + self.bias)
            if self.kind in ("quadratic", "lowrank"):
                ws = self.symmetric_matrix()
                assert ws is not None  # both kinds have one
                return float(x @ ws @ y + self.bias)
            if self.kind == "cosine":
                cos = (x @ y) / (x.norm() * y.norm()).clamp_min(1e-12)
                return float(self.scale * cos + self.bias)
            if self.kind == "dot":
                return float(self.scale * (x @ y) / self.dim + self.bias)
            if attention is None:
                raise DataError("the attention probe needs the next layer's attention score")
            return float(self.scale * attention + self.bias)


def pair_logits_loop(
    probe: PairProbe, x: torch.Tensor, attention: torch.Tensor | None = None
) -> torch.Tensor:
    """All pair logits one pair at a time (i < j; the rest zero): the reference for tests."""
    b, n, _ = x.shape
    out = torch.zeros(b, n, n)
    for k in range(b):
        for i in range(n):
            for j in range(i + 1, n):
                a = None if attention is None else float(attention[k, i, j])
                out[k, i, j] = probe.pair_logit(x[k, i], x[k, j], a)
    return out


def _per_head_scores(queries: torch.Tensor, keys: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q_i . k_j / sqrt(d_head) per head: (B, T, d) x2 -> (B, heads, T, T)."""
    b, t, d = queries.shape
    if d % n_heads:
        raise DataError(f"width {d} is not divisible by {n_heads} heads")
    head = d // n_heads
    q = queries.view(b, t, n_heads, head).transpose(1, 2)
    k = keys.view(b, t, n_heads, head).transpose(1, 2)
    return (q @ k.transpose(2, 3)) / math.sqrt(head)


def attention_scores(queries: torch.Tensor, keys: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Mean over heads of q_i . k_j / sqrt(d_head), symmetrised: (B, N, d) x2 -> (B, N, N)."""
    s = _per_head_scores(queries, keys, n_heads).mean(1)
    return (s + s.transpose(1, 2)) / 2


def attention_pattern(
    queries: torch.Tensor, keys: torch.Tensor, n_heads: int, prefix: int
) -> torch.Tensor:
    """The attention weights a block computes (softmax over every token, prefix included), mean
    over heads, among the patch tokens only and symmetrised: (B, T, d) x2 -> (B, N, N).

    The same numbers a forward with eager attention returns at ``blocks.k.attn.pattern``,
    recomputed from the block's attention input so that no second forward pass is needed.
    """
    weights = torch.softmax(_per_head_scores(queries, keys, n_heads), dim=-1)
    a = weights.mean(1)[:, prefix:, prefix:]
    return (a + a.transpose(1, 2)) / 2


# -- fitting -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitSettings:
    l2: float = 3e-3
    max_iter: int = 30
    balanced: bool = True
    chunk: int = 64  # images per chunk of the loss (bounds memory for large grids)
    full_batch_images: int = 256
    """Training sets up to this many images are fitted by full-batch L-BFGS; larger ones by Adam
    over minibatches, read as they are needed."""
    minibatch_images: int = 32
    epochs: int = 5
    learning_rate: float = 0.03


TrainingReader = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor | None]]
"""Training images (indices into the training set) -> their standardised features (B, N, d)
and, for the attention probe, the attention scores (B, N, N), on the fitting device."""


def fit_probe(
    kind: str,
    x: torch.Tensor,
    same: torch.Tensor,
    valid: torch.Tensor,
    *,
    rank: int = 8,
    settings: FitSettings = FitSettings(),
    attention: torch.Tensor | None = None,
    seed: int = 0,
) -> PairProbe:
    """``fit_probe_from`` on features held in memory (tests, benchmarks, small runs)."""

    def read(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = torch.from_numpy(rows)
        return x[index], None if attention is None else attention[index]

    return fit_probe_from(
        kind, x.shape[-1], read, same, valid, rank=rank, settings=settings, seed=seed
    )


def fit_probe_from(
    kind: str,
    dim: int,
    read: TrainingReader,
    same: torch.Tensor,
    valid: torch.Tensor,
    *,
    rank: int = 8,
    settings: FitSettings = FitSettings(),
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> PairProbe:
    """Fit one probe on binary cross-entropy over the valid pairs of the training images.

    Up to ``settings.full_batch_images`` training images: full-batch L-BFGS, the images read
    once. More: Adam over shuffled minibatches of ``settings.minibatch_images`` images for
    ``settings.epochs`` passes,
    each minibatch read when it is needed, so memory is bounded by the minibatch. With
    ``balanced`` the positive pairs are weighted by (#negatives / #positives), so the decision
    threshold logit = 0 aims at balanced accuracy rather than the majority class. An L2 penalty
    (``l2`` x squared weights, not on the bias or scale) keeps W well-posed.
    """
    probe = PairProbe(kind, dim, rank=rank, seed=seed).to(device)
    n_pos = int(same.sum())
    n_neg = int(valid.sum()) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            "the training pairs are all of one kind (all same-object or all different); use "
            "more images or scenes with several objects"
        )
    pos_weight = n_neg / n_pos if settings.balanced else 1.0
    with torch.no_grad():
        probe.bias.fill_(0.0 if settings.balanced else math.log(n_pos / n_neg))
    total = float(n_neg + pos_weight * n_pos)
    penalised = [p for name, p in probe.named_parameters() if name not in ("bias", "scale")]
    n_images = same.shape[0]

    def prepared(rows: np.ndarray) -> tuple:
        """A batch of training images, with only the patches that are in some valid pair."""
        x, att = read(rows)
        index = torch.from_numpy(rows)
        x, att, keep = _used_patches(x, att, valid[index])
        pair_valid = _take_pairs(valid[index], keep)
        b, i, j = pair_valid.nonzero(as_tuple=True)
        target = _take_pairs(same[index], keep)[b, i, j].float().to(device)
        weight = torch.where(target > 0, pos_weight, 1.0) / total
        return x, att, (b.to(device), i.to(device), j.to(device)), target, weight

    def loss_of(batch: tuple) -> torch.Tensor:
        x, att, pairs, target, weight = batch
        logits = probe(x, att)[pairs]
        return nn.functional.binary_cross_entropy_with_logits(
            logits, target, weight=weight, reduction="sum"
        )

    def penalty() -> torch.Tensor:
        squares = torch.zeros((), device=device)
        for p in penalised:
            squares = squares + (p**2).sum()
        return settings.l2 * squares

    if n_images <= settings.full_batch_images:
        chunks = [
            prepared(rows)
            for rows in (
                np.arange(start, min(start + settings.chunk, n_images))
                for start in range(0, n_images, settings.chunk)
            )
        ]
        optimizer = torch.optim.LBFGS(
            list(probe.parameters()),
            lr=1.0,
            max_iter=settings.max_iter,
            history_size=20,
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            value = 0.0
            for batch in chunks:
                part = loss_of(batch)
                part.backward()
                value += part.item()
            if penalised:
                extra = penalty()
                extra.backward()
                value += extra.item()
            return torch.tensor(value)

        optimizer.step(closure)
    else:
        adam = torch.optim.Adam(list(probe.parameters()), lr=settings.learning_rate)
        rng = np.random.default_rng(seed)
        n_batches = math.ceil(n_images / settings.minibatch_images)
        for _ in range(settings.epochs):
            order = rng.permutation(n_images)
            for rows in np.array_split(order, n_batches):
                rows = np.sort(rows)
                adam.zero_grad()
                # each minibatch stands for the whole set: scale its sum to the full total
                scale = n_images / len(rows)
                loss = scale * loss_of(prepared(rows))
                if penalised:
                    loss = loss + penalty()
                loss.backward()
                adam.step()
    probe.eval()
    return probe


def _used_patches(
    x: torch.Tensor, att: torch.Tensor | None, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Drop patches that are in no valid pair (background, ambiguous): the bilinear form costs
    N d^2 + N^2 d per image, so fitting on the used patches alone is several times cheaper.

    Returns x (B, M, d) and att (B, M, M) over each image's used patches in their original order
    (padded with unused ones up to the batch's largest count M), and ``keep`` (B, M), the
    original index of each kept patch.
    """
    used = valid.any(-1) | valid.any(-2)  # (B, N)
    m = max(1, int(used.sum(1).max()))
    keep = torch.argsort((~used).to(torch.int8), dim=1, stable=True)[:, :m]
    on = keep.to(x.device)
    x = torch.gather(x, 1, on[..., None].expand(-1, -1, x.shape[-1]))
    if att is not None:
        rows = torch.arange(len(on), device=x.device)[:, None, None]
        att = att[rows, on[:, :, None], on[:, None, :]]
    return x, att, keep


def _take_pairs(pairs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, N, N) pair labels restricted to the kept patches: (B, M, M)."""
    rows = torch.arange(len(keep))[:, None, None]
    return pairs[rows, keep[:, :, None], keep[:, None, :]]


@torch.no_grad()
def score_pairs(
    probe: PairProbe, x: torch.Tensor, attention: torch.Tensor | None = None, chunk: int = 64
) -> torch.Tensor:
    """All pair logits (B, N, N) in chunks of images."""
    parts = []
    for start in range(0, x.shape[0], chunk):
        att = None if attention is None else attention[start : start + chunk]
        parts.append(probe(x[start : start + chunk], att).cpu())
    return torch.cat(parts)


# -- metrics -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairSet:
    """The evaluated pairs of a split, flattened: one entry per valid pair (i < j)."""

    same: np.ndarray  # bool
    image: np.ndarray  # which image of the split
    key: np.ndarray  # squared patch distance (exact distance bin)
    distance: np.ndarray  # patch distance
    same_class: np.ndarray  # both patches carry the same class id
    i: np.ndarray
    j: np.ndarray

    @classmethod
    def build(
        cls,
        patch_ids: np.ndarray,
        patch_classes: np.ndarray,
        grid: tuple[int, int],
        background: str,
    ) -> PairSet:
        same, valid = pair_targets(patch_ids, background)
        image, i, j = np.nonzero(valid)
        distance, key = grid_distances(*grid)
        cls_ids = np.asarray(patch_classes)
        return cls(
            same=same[image, i, j],
            image=image,
            key=key[i, j],
            distance=distance[i, j],
            same_class=cls_ids[image, i] == cls_ids[image, j],
            i=i,
            j=j,
        )

    def take(self, scores: torch.Tensor | np.ndarray) -> np.ndarray:
        """The pair entries of a (B, N, N) score tensor, in this set's order."""
        s = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
        return s[self.image, self.i, self.j]

    def __len__(self) -> int:
        return len(self.same)


def distance_matched_weights(
    key: np.ndarray, same: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distance key: (keys, n_pos, n_neg) and the matching weight per key.

    Positives and negatives are reweighted to one shared distance distribution, with key k
    weighted by n_pos_k * n_neg_k / (n_pos_k + n_neg_k): zero where one class is absent (no
    comparison is possible there) and largest where both are plentiful.
    """
    keys, inverse = np.unique(key, return_inverse=True)
    n_pos = np.bincount(inverse, weights=same, minlength=len(keys))
    n_neg = np.bincount(inverse, weights=~same, minlength=len(keys))
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where((n_pos > 0) & (n_neg > 0), n_pos * n_neg / (n_pos + n_neg), 0.0)
    return keys, inverse, weight


def distance_matched_balanced_accuracy(
    pred: np.ndarray, same: np.ndarray, key: np.ndarray
) -> float:
    """Balanced accuracy after reweighting positives and negatives to the same distance mix.

    Equals the weighted mean over distance keys of each key's own balanced accuracy, so a
    predictor that only knows the distance scores exactly 0.5.
    """
    keys, inverse, weight = distance_matched_weights(key, same)
    if weight.sum() == 0:
        return float("nan")
    tp = np.bincount(inverse, weights=pred & same, minlength=len(keys))
    tn = np.bincount(inverse, weights=~pred & ~same, minlength=len(keys))
    n_pos = np.bincount(inverse, weights=same, minlength=len(keys))
    n_neg = np.bincount(inverse, weights=~same, minlength=len(keys))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_key = 0.5 * (tp / n_pos + tn / n_neg)
    ok = weight > 0
    return float((weight[ok] * per_key[ok]).sum() / weight[ok].sum())


def balanced_accuracy(pred: np.ndarray, same: np.ndarray) -> float:
    if same.all() or not same.any():
        return float("nan")
    return float(0.5 * ((pred & same).sum() / same.sum() + (~pred & ~same).sum() / (~same).sum()))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties counted half)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pair_metrics(scores: np.ndarray, pairs: PairSet, far_distance: float) -> dict[str, float]:
    """Every metric of one probe on one split, from its pair logits."""
    same = pairs.same
    pred = scores > 0
    hard_neg = ~same & pairs.same_class
    touching_neg = ~same & (pairs.key == 1)
    far_pos = same & (pairs.distance >= far_distance)

    def accuracy_on(mask: np.ndarray) -> float:
        return float((pred[mask] == same[mask]).mean()) if mask.any() else float("nan")

    return {
        "distance_matched_balanced_accuracy": distance_matched_balanced_accuracy(
            pred, same, pairs.key
        ),
        "accuracy": float((pred == same).mean()),
        "balanced_accuracy": balanced_accuracy(pred, same),
        "roc_auc": roc_auc(scores, same),
        "majority_baseline": float(max(same.mean(), 1 - same.mean())),
        "hard_negative_accuracy": accuracy_on(hard_neg),
        "touching_negative_accuracy": accuracy_on(touching_neg),
        "far_positive_accuracy": accuracy_on(far_pos),
        "n_pairs": float(len(same)),
        "n_hard_negatives": float(hard_neg.sum()),
        "n_far_positives": float(far_pos.sum()),
    }


def distance_bin_accuracy(
    scores: np.ndarray, pairs: PairSet, edges: np.ndarray, min_count: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distance bin ``[edges[k], edges[k+1])``: balanced accuracy, accuracy on positives
    and on negatives (NaN where a bin has fewer than ``min_count`` pairs of that kind)."""
    pred = scores > 0
    which = np.digitize(pairs.distance, edges) - 1
    n = len(edges) - 1
    ba, tpr, tnr = (np.full(n, np.nan) for _ in range(3))
    for k in range(n):
        m = which == k
        pos, neg = m & pairs.same, m & ~pairs.same
        if pos.sum() >= min_count:
            tpr[k] = pred[pos].mean()
        if neg.sum() >= min_count:
            tnr[k] = (~pred[neg]).mean()
        if np.isfinite(tpr[k]) and np.isfinite(tnr[k]):
            ba[k] = 0.5 * (tpr[k] + tnr[k])
    return ba, tpr, tnr


def image_counts(scores: np.ndarray, pairs: PairSet, n_images: int) -> np.ndarray:
    """(n_images, n_keys, 4) counts of TP, FN, TN, FP per image and distance key (for the
    bootstrap over images); keys are ``np.unique(pairs.key)`` order."""
    pred = scores > 0
    keys, inverse = np.unique(pairs.key, return_inverse=True)
    cell = pairs.image * len(keys) + inverse
    out = np.zeros((n_images * len(keys), 4))
    for c, mask in enumerate(
        (pred & pairs.same, ~pred & pairs.same, ~pred & ~pairs.same, pred & ~pairs.same)
    ):
        out[:, c] = np.bincount(cell, weights=mask, minlength=n_images * len(keys))
    return out.reshape(n_images, len(keys), 4)


def matched_from_counts(counts: np.ndarray) -> float:
    """Distance-matched balanced accuracy from (n_keys, 4) summed counts."""
    tp, fn, tn, fp = counts.T
    n_pos, n_neg = tp + fn, tn + fp
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    weight = n_pos[ok] * n_neg[ok] / (n_pos[ok] + n_neg[ok])
    per_key = 0.5 * (tp[ok] / n_pos[ok] + tn[ok] / n_neg[ok])
    return float((weight * per_key).sum() / weight.sum())


def bootstrap_difference(
    counts_a: np.ndarray, counts_b: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Headline(a) - headline(b) on the same test images, with a 95% bootstrap interval over
    images: (difference, low, high)."""
    rng = np.random.default_rng(seed)
    n = counts_a.shape[0]
    diff = matched_from_counts(counts_a.sum(0)) - matched_from_counts(counts_b.sum(0))
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        draws.append(
            matched_from_counts(counts_a[pick].sum(0)) - matched_from_counts(counts_b[pick].sum(0))
        )
    low, high = np.nanpercentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
    return float(diff), float(low), float(high)


# -- attention and distance --------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def partial_out_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` minus their mean within each group (any function of the group removed)."""
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    return values - (sums / counts)[inverse]


# -- the binding subspace ----------------------------------------------------------------------
def subspace_spectrum(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of a symmetric W_s sorted by magnitude (descending) and their eigenvectors
    (columns)."""
    values, vectors = torch.linalg.eigh(matrix.detach().double())
    order = torch.argsort(values.abs(), descending=True)
    return values[order].numpy(), vectors[:, order].numpy()


def binding_directions(probe: PairProbe, scaler: Standardiser, rank: int) -> torch.Tensor:
    """Orthonormal (d, rank) basis of the probe's top-|eigenvalue| subspace in the model's own
    residual coordinates (the standardisation folded back in)."""
    ws = probe.symmetric_matrix()
    if ws is None:
        raise DataError(f"the {probe.kind} probe has no bilinear matrix to take a subspace from")
    inv = 1.0 / scaler.std
    raw = inv[:, None] * ws.detach() * inv[None, :]
    _, vectors = subspace_spectrum(raw)
    return torch.from_numpy(vectors[:, :rank].copy()).float()


def random_directions(dim: int, rank: int, seed: int) -> torch.Tensor:
    """An orthonormal (dim, rank) basis of a uniformly random subspace."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, rank, generator=gen))
    return q


@contextmanager
def ablate_subspace(
    model: LoadedModel,
    site: str,
    directions: torch.Tensor,
    *,
    mode: str = "remove",
    centre: torch.Tensor | None = None,
    seed: int = 0,
) -> Iterator[None]:
    """Change the component of the patch tokens along ``directions`` at ``site`` during forwards.

    ``mode="remove"`` projects it out (around ``centre``, the training mean, so only the
    variation along the subspace is lost); ``mode="shuffle"`` gives every patch the component of
    another patch of the same image (a random permutation per image). Prefix tokens (CLS,
    registers) are left alone. Built on ``workbench.capture.hooks``: nothing stays attached and
    no weight changes, also when the body raises.
    """
    if mode not in ("remove", "shuffle"):
        raise DataError(f"mode must be 'remove' or 'shuffle'; got {mode!r}")
    basis = directions.float()
    offset = torch.zeros(basis.shape[0]) if centre is None else centre.float()
    prefix = model.n_prefix_tokens
    gen = torch.Generator().manual_seed(seed)

    def edit(value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        patches = out[:, prefix:]
        u = basis.to(patches.dtype)
        comp = (patches - offset.to(patches.dtype)) @ u
        if mode == "remove":
            out[:, prefix:] = patches - comp @ u.T
        else:
            perm = torch.stack(
                [torch.randperm(patches.shape[1], generator=gen) for _ in range(patches.shape[0])]
            )
            shuffled = torch.gather(comp, 1, perm[:, :, None].expand_as(comp))
            out[:, prefix:] = patches + (shuffled - comp) @ u.T
        return out

    with hooks(model, {site: edit}):
        yield

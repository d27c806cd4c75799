"""The curvature probe's science as pure functions on tensors and arrays.

K-FAC approximates the Fisher block of a weight W (out x in) as G ⊗ A, with A = E[a aᵀ] over the
layer's inputs and G = E[g gᵀ] over gradients at its outputs. In the eigenbases of A (μ, U_A)
and G (λ, U_G) the weight has coordinates C = U_Gᵀ W U_A, and component (i, j) carries curvature
mass λ_i μ_j. The edit keeps the highest-mass components until a fraction ρ of the total mass
(Σλ)(Σμ) is reached and zeroes the rest: W' = U_G (C ⊙ M) U_Aᵀ, a mask in the eigenbasis rather
than a rank truncation.

Because λ and μ are sorted, the kept set is a staircase: row i keeps the columns j < counts[i].
``select_by_mass`` finds the counts by bisecting on the mass threshold (each step counts the
entries above a threshold with one ``searchsorted``), which equals the reference's heap-based
k-way merge (``select_by_mass_heap``) without visiting components one by one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.errors import DataError

FINAL_CANDIDATES = 4096
"""Bisection stops once at most this many components straddle the threshold; they are then
ordered explicitly, so the selection is exact."""


# -- eigenbases --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Eigenbasis:
    """Eigen-decomposition of one layer's K-FAC factors, eigenvalues sorted descending.

    ``lam``/``u_g`` belong to G (output side, length out), ``mu``/``u_a`` to A (input side).
    """

    lam: torch.Tensor
    u_g: torch.Tensor
    mu: torch.Tensor
    u_a: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lam), len(self.mu)

    def mass(self) -> torch.Tensor:
        """(out, in) curvature mass λ_i μ_j of every component."""
        return torch.outer(self.lam, self.mu)


def symmetric_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, negatives from rounding clamped to 0) and eigenvectors.

    In float64 on the matrix's own device (float32 where the device has no float64).
    """
    dtype = torch.float32 if matrix.device.type == "mps" else torch.float64
    m = matrix.to(dtype)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"a K-FAC factor must be square; got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise DataError("a K-FAC factor contains NaN or inf; check the model and its inputs")
    values, vectors = torch.linalg.eigh(0.5 * (m + m.T))
    order = torch.argsort(values, descending=True)
    return values[order].clamp_min(0.0), vectors[:, order]


def eigendecompose(a: torch.Tensor, g: torch.Tensor) -> Eigenbasis:
    """The eigenbasis of one layer's factors A (in x in) and G (out x out)."""
    mu, u_a = symmetric_eigh(a)
    lam, u_g = symmetric_eigh(g)
    return Eigenbasis(lam=lam, u_g=u_g, mu=mu, u_a=u_a)


# -- selection by curvature mass ---------------------------------------------------------------
def _check_spectra(lam: torch.Tensor, mu: torch.Tensor, rho: float) -> tuple[torch.Tensor, ...]:
    lam = torch.as_tensor(lam).to("cpu", torch.float64)  # spectra are short: select on the CPU
    mu = torch.as_tensor(mu).to("cpu", torch.float64)
    if lam.ndim != 1 or mu.ndim != 1 or not len(lam) or not len(mu):
        raise DataError("eigenvalues must be non-empty 1-D arrays")
    if (lam < 0).any() or (mu < 0).any():
        raise DataError("eigenvalues must be non-negative (clamp rounding errors first)")
    if (lam[1:] > lam[:-1]).any() or (mu[1:] > mu[:-1]).any():
        raise DataError("eigenvalues must be sorted in descending order")
    if not 0.0 <= rho <= 1.0:
        raise DataError(f"rho is the fraction of curvature mass to keep, in [0, 1]; got {rho}")
    return lam, mu


def select_by_mass(lam: torch.Tensor, mu: torch.Tensor, rho: float) -> torch.Tensor:
    """Per G-eigenvector i, how many A-eigenvectors to keep: ``counts`` (int64, length out).

    The kept components are the fewest highest-mass ones whose mass reaches ``rho`` of the total;
    ``rho = 1`` keeps everything (also the null directions that carry no mass).
    """
    lam, mu = _check_spectra(lam, mu, rho)
    m, n = len(lam), len(mu)
    if rho >= 1.0:
        return torch.full((m,), n, dtype=torch.int64)
    total = float(lam.sum() * mu.sum())
    target = rho * total
    if rho <= 0.0 or total <= 0.0:
        return torch.zeros(m, dtype=torch.int64)

    mu_ascending = mu.flip(0).contiguous()
    cum_mu = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(mu, 0)])

    def counts_at(threshold: float) -> torch.Tensor:
        """Entries with λ_i μ_j >= threshold, per row (μ sorted, so always a prefix)."""
        per_row = torch.where(lam > 0, threshold / lam, torch.inf)
        return n - torch.searchsorted(mu_ascending, per_row, side="left")

    def mass_of(counts: torch.Tensor) -> float:
        return float((lam * cum_mu[counts]).sum())

    positive = mu[mu > 0]
    lo = float(lam[lam > 0][-1] * positive[-1])  # the smallest positive mass: feasible
    hi = float(lam[0] * mu[0]) * (1 + 1e-9)  # above the largest: nothing selected
    c_lo, c_hi = counts_at(lo), torch.zeros(m, dtype=torch.int64)
    for _ in range(200):
        if int((c_lo - c_hi).sum()) <= FINAL_CANDIDATES:
            break
        mid = float(np.sqrt(lo * hi))
        if not lo < mid < hi:
            break
        c_mid = counts_at(mid)
        if mass_of(c_mid) >= target:
            lo, c_lo = mid, c_mid
        else:
            hi, c_hi = mid, c_mid

    # Order the few components between the two staircases explicitly, as a heap would.
    width = c_lo - c_hi
    rows = torch.repeat_interleave(torch.arange(m), width)
    starts = torch.repeat_interleave(c_hi, width)
    offsets = torch.arange(len(rows)) - torch.repeat_interleave(
        torch.cumsum(width, 0) - width, width
    )
    cols = starts + offsets
    products = lam[rows] * mu[cols]
    order = torch.argsort(products, descending=True, stable=True)
    reached = mass_of(c_hi) + torch.cumsum(products[order], 0)
    take = int(torch.searchsorted(reached, torch.tensor([target], dtype=torch.float64))[0]) + 1
    take = min(take, len(order))
    counts = c_hi.clone()
    counts.index_add_(0, rows[order[:take]], torch.ones(take, dtype=torch.int64))
    return counts


def select_by_mass_heap(lam: Sequence[float], mu: Sequence[float], rho: float) -> torch.Tensor:
    """Reference selection: pop components from a max-heap until the mass reaches ``rho``.

    A k-way merge over the sorted outer product (start at (0, 0), push the right and lower
    neighbour of each popped component). Returns the boolean (out, in) mask. Slow; for tests and
    the benchmark.
    """
    lam_t, mu_t = _check_spectra(torch.as_tensor(lam), torch.as_tensor(mu), rho)
    g, a = lam_t.tolist(), mu_t.tolist()
    m, n = len(g), len(a)
    mask = torch.zeros(m, n, dtype=torch.bool)
    if rho >= 1.0:
        return mask.fill_(True)
    target = rho * float(lam_t.sum() * mu_t.sum())
    if target <= 0.0:
        return mask
    heap = [(-g[0] * a[0], 0, 0)]
    seen = {(0, 0)}
    reached = 0.0
    while heap and reached < target:
        negative, i, j = heapq.heappop(heap)
        reached -= negative
        mask[i, j] = True
        for ni, nj in ((i + 1, j), (i, j + 1)):
            if ni < m and nj < n and (ni, nj) not in seen:
                seen.add((ni, nj))
                heapq.heappush(heap, (-g[ni] * a[nj], ni, nj))
    return mask


def counts_to_mask(counts: torch.Tensor, n: int) -> torch.Tensor:
    """The (out, in) boolean mask of a staircase selection."""
    return torch.arange(n, device=counts.device)[None, :] < counts[:, None]


def kept_fraction(counts: torch.Tensor, n: int) -> float:
    """Share of the out x in components a selection keeps."""
    return float(counts.sum()) / (len(counts) * n)


def mass_curve(
    lam: torch.Tensor, mu: torch.Tensor, points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of components kept, fraction of mass kept), highest mass first, log-spaced."""
    products = torch.outer(lam.double().cpu(), mu.double().cpu()).flatten()
    ordered = torch.sort(products, descending=True).values
    cumulative = torch.cumsum(ordered, 0)
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    k = np.unique(np.geomspace(1, len(ordered), points).astype(np.int64))
    share = cumulative[k - 1].numpy() / total if total > 0 else np.zeros(len(k))
    return k / len(ordered), share


# -- edits -------------------------------------------------------------------------------------
def coordinates(weight: torch.Tensor, basis: Eigenbasis) -> torch.Tensor:
    """C = U_Gᵀ W U_A in the basis's dtype and device: the weight in the curvature eigenbasis."""
    _check_weight(weight, basis)
    return basis.u_g.T @ weight.to(basis.u_g.device, basis.u_g.dtype) @ basis.u_a


def masked_weight(
    weight: torch.Tensor,
    basis: Eigenbasis,
    counts: torch.Tensor,
    coords: torch.Tensor | None = None,
) -> torch.Tensor:
    """W' = U_G (C ⊙ M) U_Aᵀ for the staircase ``counts``, in the weight's dtype.

    ``coords`` (from ``coordinates``) saves recomputing C when many edits share a basis. Only
    the rows and columns the staircase reaches enter the products, and a float32 (or half)
    weight is rebuilt in float32, which is exact to its own precision.
    """
    c = coordinates(weight, basis) if coords is None else coords
    counts = counts.to(c.device)
    nonzero = torch.nonzero(counts)
    if not len(nonzero):
        return torch.zeros_like(weight)
    rows, cols = int(nonzero.max()) + 1, int(counts.max())
    kept = c[:rows, :cols] * counts_to_mask(counts[:rows], cols)
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    u_g, u_a = basis.u_g[:, :rows].to(dtype), basis.u_a[:, :cols].to(dtype)
    return (u_g @ kept.to(dtype) @ u_a.T).to(weight.device, weight.dtype)


def kfac_weight(
    weight: torch.Tensor, basis: Eigenbasis, rho: float, coords: torch.Tensor | None = None
) -> torch.Tensor:
    """The K-FAC edit of one weight at mass fraction ``rho`` (ρ = 1 returns W unchanged)."""
    if rho >= 1.0:
        return weight.detach().clone()
    return masked_weight(weight, basis, select_by_mass(basis.lam, basis.mu, rho), coords)


Svd = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(U, σ, Vᵀ) of a weight, float64, as ``torch.linalg.svd(..., full_matrices=False)`` gives."""


def weight_svd(weight: torch.Tensor) -> Svd:
    u, s, vh = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    return u, s, vh


def svd_weight(
    weight: torch.Tensor, energy: float, svd: Svd | None = None
) -> tuple[torch.Tensor, int]:
    """Rank truncation keeping the top singular components with ``energy`` of Σσ²; and the rank.

    The baseline the paper compares against: it ranks directions by how large they are in W,
    not by how much the loss depends on them. ``svd`` (from ``weight_svd``) saves recomputing it.
    """
    if not 0.0 < energy <= 1.0:
        raise DataError(f"the SVD energy to keep must lie in (0, 1]; got {energy}")
    if energy >= 1.0:
        return weight.detach().clone(), min(weight.shape)
    u, s, vh = weight_svd(weight) if svd is None else svd
    share = torch.cumsum(s**2, 0) / (s**2).sum()
    rank = (
        int(
            torch.searchsorted(
                share, torch.tensor([energy], dtype=share.dtype, device=share.device)
            )[0]
        )
        + 1
    )
    rank = min(rank, len(s))
    truncated = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return truncated.to(weight.device, weight.dtype), rank


def _check_weight(weight: torch.Tensor, basis: Eigenbasis) -> None:
    if tuple(weight.shape) != basis.shape:
        raise DataError(
            f"weight of shape {tuple(weight.shape)} does not match its K-FAC factors "
            f"(G {len(basis.lam)} x A {len(basis.mu)}); were the factors collected on this model?"
        )


# -- memorization metrics ----------------------------------------------------------------------
@dataclass(frozen=True)
class Recitation:
    """Per sequence: token-level Levenshtein distance of the continuation to the true suffix."""

    distance: np.ndarray
    length: np.ndarray
    loose_threshold: float

    @property
    def normalised(self) -> np.ndarray:
        """d / L: 0 is a verbatim recitation, 1 shares nothing."""
        return self.distance / np.maximum(self.length, 1)

    @property
    def strict(self) -> np.ndarray:
        return self.distance == 0

    @property
    def loose(self) -> np.ndarray:
        """Similarity 1 - d/L at or above the threshold (0.75 in the paper); includes strict."""
        return 1.0 - self.normalised >= self.loose_threshold


def recitation(
    generated: Sequence[Sequence[int] | torch.Tensor],
    targets: Sequence[Sequence[int] | torch.Tensor],
    loose_threshold: float = 0.75,
) -> Recitation:
    """Token-level Levenshtein distance (rapidfuzz) between each continuation and its target.

    The continuation is cut to the target's length first, as greedy decoding produced exactly
    that many tokens.
    """
    from rapidfuzz.distance import Levenshtein

    if len(generated) != len(targets):
        raise DataError(f"{len(generated)} continuations for {len(targets)} targets")
    distance, length = [], []
    for gen, tgt in zip(generated, targets, strict=True):
        tgt = [int(t) for t in tgt]
        gen = [int(t) for t in gen][: len(tgt)]
        distance.append(Levenshtein.distance(gen, tgt))
        length.append(len(tgt))
    return Recitation(np.array(distance), np.array(length), loose_threshold)


def ndcg_at_k(base_topk: torch.Tensor, edited_topk: torch.Tensor) -> torch.Tensor:
    """nDCG@k of the edited model's top-k next tokens against the base model's, per position.

    The base model's rank-r token (r = 0..k-1) has relevance k - r; the edited list is scored
    by DCG with discount 1/log2(position + 2) and normalised by the ideal (the base list itself).
    """
    if base_topk.shape != edited_topk.shape:
        raise DataError("base and edited top-k lists must have the same shape")
    k = base_topk.shape[-1]
    relevance_of_rank = torch.arange(k, 0, -1, dtype=torch.float64)
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    same = edited_topk[..., :, None] == base_topk[..., None, :]  # (..., edited pos, base rank)
    relevance = torch.where(same, relevance_of_rank, 0.0).amax(-1)
    return (relevance * discount).sum(-1) / (relevance_of_rank * discount).sum()


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


# -- spectrum analysis -------------------------------------------------------------------------
def band_edges(rho: float, edges: Sequence[float] = (0.5, 0.9, 0.99, 0.999)) -> list[float]:
    """Cumulative-mass boundaries of the bands, always including the edit's own ρ."""
    return sorted({float(e) for e in (*edges, rho) if 0.0 < e < 1.0})


def band_masks(counts_at_edges: Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Boolean masks of the bands between consecutive staircases (plus the remainder)."""
    m = len(counts_at_edges[0])
    full = torch.full((m,), n, dtype=torch.int64)
    bounds = [torch.zeros(m, dtype=torch.int64), *counts_at_edges, full]
    cols = torch.arange(n)[None, :]
    return [(cols < hi[:, None]) & ~(cols < lo[:, None]) for lo, hi in itertools.pairwise(bounds)]


def band_activation(
    inputs: torch.Tensor, coords: torch.Tensor, u_in: torch.Tensor, masks: Sequence[torch.Tensor]
) -> np.ndarray:
    """Mean output norm ||(C ⊙ M_b) U_inᵀ x|| of each band b over the input rows ``inputs``.

    ``coords`` are the weight's coordinates in some (output basis, input basis) pair and
    ``u_in`` the input basis: the curvature eigenbasis, or the singular vectors for SVD. Float32
    is plenty for a ratio of norms.
    """
    z = inputs.to(u_in.device, torch.float32) @ u_in.float()
    c = coords.float()
    return np.array([float((z @ (c * mask.to(c.device)).T).norm(dim=1).mean()) for mask in masks])


def svd_band_masks(
    weight: torch.Tensor, edges: Sequence[float], svd: Svd | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """SVD coordinates diag(σ), right singular vectors, and band masks by cumulative σ² energy."""
    _, s, vh = weight_svd(weight) if svd is None else svd
    share = torch.cumsum(s**2, 0) / (s**2).sum()
    ranks = [
        int(torch.searchsorted(share, torch.tensor([e], dtype=share.dtype, device=share.device))[0])
        + 1
        for e in edges
    ]
    k = len(s)
    bounds = [0, *[min(r, k) for r in ranks], k]
    masks = []
    for lo, hi in itertools.pairwise(bounds):
        mask = torch.zeros(k, k, dtype=torch.bool)
        mask[lo:hi, lo:hi] = torch.eye(hi - lo, dtype=torch.bool)
        masks.append(mask)
    return torch.diag(s), vh.T, tuple(masks)

"""Pure tensor functions of the vim probe: hidden attention, memory decay, states, branch shares.

Notation (one scan direction, positions in scan order): Δ (batch, L, E) after softplus,
A = −exp(A_log) (E, N), B, C (batch, L, N), and S = cumsum(Δ) over positions. Mamba's state is
h_i = Σ_{j≤i} (Π_{k=j+1..i} exp(Δ_k A)) Δ_j B_j x_j, so its output y_i = C_i · h_i + D x_i is
y_i = Σ_j α_ij x_j + D x_i with the hidden attention ("The Hidden Attention of Mamba Models")

    α_ij[e] = Σ_n C_i[n] exp(A[e, n] (S_i[e] − S_j[e])) B_j[n] Δ_j[e]   for j ≤ i, else 0,

because A is constant per (channel, state), so the product of decays telescopes into the
difference of cumulative sums. Every exponent used below is ≤ 0, so nothing overflows.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.errors import DataError

# -- hidden attention --------------------------------------------------------------------------


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


EXPONENT_LIMIT = 80.0
"""Largest |A| x (sum of Δ) a block may span: its factors stay below exp(80) ~ 5e34, far from
float32's limit, while a block holds as many positions as the decays allow."""


def scan_blocks(
    S: torch.Tensor, A: torch.Tensor, limit: float = EXPONENT_LIMIT, block: int | None = None
) -> list[tuple[int, int]]:
    """Consecutive position blocks [start, stop) over which max_e |A_e| (S_last − S_first)
    stays within ``limit`` (a single position always qualifies), at most ``block`` long."""
    L = S.shape[1]
    rate = A.abs().amax(-1).double()  # (E,): the fastest decay of each channel
    scaled = (S.double() * rate).cpu()  # (batch, L, E)
    blocks = []
    start = 0
    while start < L:
        stop = L if block is None else min(L, start + block)
        span = (scaled[:, start:stop] - scaled[:, start : start + 1]).amax(dim=(0, 2))
        over = torch.nonzero(span > limit)
        stop = start + int(over[0]) if len(over) else stop
        blocks.append((start, stop))
        start = stop
    return blocks


def hidden_attention(
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    block: int | None = None,
) -> torch.Tensor:
    """α (batch, E, L, L) for one scan direction, as one batched matrix product per block.

    The decay between positions factors through a reference R, exp(A (S_i − S_j)) =
    exp(A (S_i − R)) · exp(A (R − S_j)), so α over rows i of a block and every column j is a
    product over the N states of P_i = C_i exp(A (S_i − R)) and Q_j = B_j Δ_j exp(A (R − S_j)):
    the same E x L x L x N multiply-adds as one einsum, done only below the diagonal. R is the S
    of the block's last position, so every Q exponent is ≤ 0 and every P exponent lies within
    ``EXPONENT_LIMIT``, which sets how long a block can be (``scan_blocks``; ``block`` caps it).
    Nothing overflows however long the memory or fast the decay.
    """
    _check_scan_inputs(delta, A, B, C)
    dtype = _work_dtype(delta, A, B, C)
    batch, L, E = delta.shape
    N = A.shape[1]
    S = torch.cumsum(delta.double(), dim=1).transpose(1, 2)  # (batch, E, L)
    rates = A.to(dtype)[None, :, None, :]  # (1, E, 1, N)
    drive = B.to(dtype)[:, None] * delta.to(dtype).transpose(1, 2)[..., None]  # (b, E, L, N)
    Cv = C.to(dtype)[:, None]  # (batch, 1, L, N)
    alpha = torch.empty(batch, E, L, L, dtype=dtype, device=delta.device)
    # Q_j for the current reference; moving the reference on multiplies the earlier columns by
    # exp(A (R_new − R_old)) ≤ 1 instead of recomputing their exponentials.
    cols = torch.empty(batch, E, L, N, dtype=dtype, device=delta.device)
    previous = None
    for start, stop in scan_blocks(S.transpose(1, 2), A, block=block):
        ref = S[:, :, stop - 1 : stop]  # (batch, E, 1)
        if previous is not None:
            cols[:, :, :start] *= torch.exp((ref - previous).to(dtype)[..., None] * rates)
        cols[:, :, start:stop] = drive[:, :, start:stop] * torch.exp(
            (ref - S[:, :, start:stop]).to(dtype)[..., None] * rates
        )
        previous = ref
        rows = Cv[:, :, start:stop] * torch.exp(
            (S[:, :, start:stop] - ref).to(dtype)[..., None] * rates
        )
        out = alpha[:, :, start:stop, :stop].view(batch * E, stop - start, stop)
        torch.bmm(
            rows.reshape(batch * E, stop - start, N),
            cols[:, :, :stop].view(batch * E, stop, N).transpose(1, 2),
            out=out,
        )
        alpha[:, :, start:stop, start:stop].tril_()  # inside the block: j ≤ i only
        alpha[:, :, start:stop, stop:] = 0
    return alpha


def hidden_attention_pairwise(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """The same α, one (i, j) pair at a time: the slow reference for tests and the benchmark."""
    _check_scan_inputs(delta, A, B, C)
    dtype = _work_dtype(delta, A, B, C)
    batch, L, E = delta.shape
    S = torch.cumsum(delta.double(), dim=1)
    A = A.to(dtype)
    out = torch.zeros(batch, E, L, L, dtype=dtype)
    for i in range(L):
        for j in range(i + 1):
            decay = torch.exp((S[:, i] - S[:, j]).to(dtype)[..., None] * A)  # (batch, E, N)
            weight = (decay * C[:, i, None, :] * B[:, j, None, :]).sum(-1)
            out[:, :, i, j] = weight * delta[:, j]
    return out


def attention_row(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, i: int
) -> torch.Tensor:
    """Row ``i`` of α, (batch, E, L), zero for j > i: cheap when only one token's row is needed.

    For the class token this is its attention over the patches the scan read before it; note
    that the decay of the row's own position i is included (Π over k = j+1..i).
    """
    _check_scan_inputs(delta, A, B, C)
    dtype = _work_dtype(delta, A, B, C)
    batch, L, E = delta.shape
    S = torch.cumsum(delta.double(), dim=1)
    gap = (S[:, i : i + 1] - S[:, : i + 1]).to(dtype)  # (batch, i+1, E), ≥ 0
    decay = torch.exp(gap[..., None] * A.to(dtype))  # (batch, i+1, E, N)
    weight = (decay * B[:, : i + 1, None, :].to(dtype) * C[:, i, None, None, :].to(dtype)).sum(-1)
    row = torch.zeros(batch, E, L, dtype=dtype)
    row[:, :, : i + 1] = (weight * delta[:, : i + 1].to(dtype)).transpose(1, 2)
    return row


def _check_scan_inputs(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> None:
    if delta.ndim != 3 or A.ndim != 2 or B.ndim != 3 or C.ndim != 3:
        raise DataError(
            "expected delta (batch, L, E), A (E, N), B and C (batch, L, N); got "
            f"{tuple(delta.shape)}, {tuple(A.shape)}, {tuple(B.shape)}, {tuple(C.shape)}"
        )
    if delta.shape[2] != A.shape[0] or B.shape != C.shape or B.shape[:2] != delta.shape[:2]:
        raise DataError(
            f"shapes disagree: delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if B.shape[2] != A.shape[1]:
        raise DataError(f"B and C have {B.shape[2]} states but A has {A.shape[1]}")


def to_token_order(alpha_backward: torch.Tensor) -> torch.Tensor:
    """α of the backward scan (computed on the flipped sequence) in token order: flip both axes.

    The result is upper-triangular: token i attends to itself and the tokens after it.
    """
    return alpha_backward.flip(-1, -2)


# -- aggregation and maps ----------------------------------------------------------------------


def channel_mean_abs(alpha: torch.Tensor) -> torch.Tensor:
    """(…, E, L, L) -> (…, L, L): mean |α| over channels (how much j feeds i in any channel)."""
    return alpha.abs().mean(dim=-3)


def row_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (all-zero rows stay zero)."""
    total = matrix.sum(axis=-1, keepdims=True)
    return np.divide(matrix, total, out=np.zeros_like(matrix), where=total > 0)


def rollout(matrices: np.ndarray, start: int = 0) -> np.ndarray:
    """Attention rollout over layers ``start..``: Π of ((Â + I) / 2) with row-normalised Â.

    ``matrices`` is (layers, L, L) non-negative; the result maps output tokens to input tokens.
    """
    layers, L, _ = matrices.shape
    if not 0 <= start < layers:
        raise DataError(f"rollout start layer {start} is outside 0..{layers - 1}")
    eye = np.eye(L)
    joint = eye
    for layer in range(start, layers):
        step = row_normalise(row_normalise(matrices[layer]) + eye)
        joint = step @ joint
    return joint


def gradient_weights(grads: np.ndarray) -> np.ndarray:
    """Per-token weights from residual-stream gradients (layers, L, D): max positive part,
    scaled to [0, 1] per layer, as in the hidden-attention attribution method."""
    s = np.clip(grads, 0, None).max(axis=-1)
    low, high = s.min(axis=-1, keepdims=True), s.max(axis=-1, keepdims=True)
    return np.divide(s - low, high - low, out=np.zeros_like(s), where=high > low)


def attribution(matrices: np.ndarray, grads: np.ndarray, start: int = 0) -> np.ndarray:
    """Rollout of attention weighted by the positive gradient of each source token (columns)."""
    weighted = matrices * gradient_weights(grads)[:, None, :]
    return rollout(weighted, start)


def patch_scores(row: np.ndarray, cls_index: int) -> np.ndarray:
    """A (…, L) row over tokens -> (…, L − 1) over patches in row-major order (class token out)."""
    return np.concatenate([row[..., :cls_index], row[..., cls_index + 1 :]], axis=-1)


# -- memory ------------------------------------------------------------------------------------


def memory_lengths(mean_delta: np.ndarray, A: np.ndarray) -> np.ndarray:
    """e-folding memory length in tokens, 1 / (Δ̄ |A|), per (channel, state): (E, N).

    ``mean_delta`` is each channel's mean step size Δ̄ over positions and images; a state keeps
    exp(−1) of an input after this many tokens at that typical step size.
    """
    rate = mean_delta[:, None] * np.abs(A)
    return 1.0 / np.maximum(rate, 1e-12)


def lookback(attention: np.ndarray) -> float:
    """Mean distance |i − j| between a token and what it reads, weighted by attention (L, L)."""
    L = attention.shape[-1]
    distance = np.abs(np.arange(L)[:, None] - np.arange(L)[None, :])
    total = attention.sum()
    return float((attention * distance).sum() / total) if total > 0 else 0.0


def state_norms(states: torch.Tensor) -> torch.Tensor:
    """(batch, L, E, N) hidden states -> (batch, L) Frobenius norm per position."""
    return states.flatten(2).norm(dim=-1)


# -- branches ----------------------------------------------------------------------------------


def branch_contributions(
    y_forward: torch.Tensor,
    y_backward: torch.Tensor,
    gate: torch.Tensor,
    out_proj: torch.Tensor,
    divide: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What each direction adds to the residual stream, (batch, L, D) each.

    The mixer output out_proj(gate ⊙ (y_f + y_b) / 2) is linear in y_f and y_b, so it splits
    exactly into out_proj(gate ⊙ y_f) / 2 + out_proj(gate ⊙ y_b) / 2.
    """
    scale = 0.5 if divide else 1.0
    w = out_proj.to(y_forward.dtype)
    return (gate * y_forward) @ w.T * scale, (gate * y_backward) @ w.T * scale


def forward_share(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Per token, the forward branch's share of the two branches' squared norms: (batch, L)."""
    f, b = forward.pow(2).sum(-1), backward.pow(2).sum(-1)
    return f / (f + b).clamp_min(1e-30)

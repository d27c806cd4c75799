"""Vision Mamba (Vim) in plain PyTorch, with every hidden state of its selective scans exposed.

The architecture follows the official Vim code (hustvl/Vim: ``vim/models_mamba.py`` and its
``mamba_simple.py`` with ``bimamba_type="v2"``), and the parameter names and shapes are the
official ones, so a downloaded Vim-Ti/S/B checkpoint (``vim_t_midclstok_76p1acc.pth``, ...) loads
strictly: ``load_model("path/to/vim_t_midclstok_76p1acc.pth")``.

- Patch embedding (``patch_embed.proj``, a Conv2d), a class token inserted in the *middle* of the
  patch sequence (index ``M // 2`` of ``M + 1`` tokens), a learned position embedding added after
  the insertion.
- ``depth`` blocks of RMSNorm -> bidirectional Mamba mixer -> residual add (no MLP); the residual
  stream is kept in float32. Vim writes this as Add -> Norm -> Mixer with the add deferred to the
  next block; both give the same numbers, and the standard pre-norm form gives the usual
  ``blocks.{i}.resid_pre``/``resid_post`` sites.
- The mixer shares ``in_proj`` (D -> 2E, x and gate z) and ``out_proj``; each direction has its own
  causal depthwise ``conv1d`` (k = 4), ``x_proj`` (-> dt_rank + 2N), ``dt_proj``, ``A_log`` and
  ``D`` (backward: the ``_b`` versions). The backward branch reads the flipped sequence; its output
  is flipped back, and ``out_proj`` receives the average of the two gated outputs.
- Selective scan per direction: Δ = softplus(dt_proj(·)), A = −exp(A_log),
  h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t, y_t = C_t · h_t + D x_t, then y ⊙ SiLU(z).

The official CPU path silently drops the backward branch and its RMSNorm needs Triton; this
implementation runs both directions on any device. The scan runs in float32 (float64 when given
float64) in chunks of positions, so memory stays bounded, with a hand-written backward pass so
that gradients (for training and attribution maps) cost about as much as the forward.

Sites (each a module that runs once per forward, so ``capture`` and ``hooks`` work unchanged):
``blocks.{i}.resid_pre``/``resid_post``, ``blocks.{i}.mixer.in`` (normed input) and
``blocks.{i}.mixer.out`` (what the block adds to the residual stream), and per direction
``d`` in ``fwd``/``bwd``: ``ssm.{i}.{d}.x`` (scan input after conv and SiLU), ``.delta`` (Δ),
``.B``, ``.C`` (batch, L, N), ``.y`` (scan output including D·x, before the gate) and ``.h``, the
hidden states (batch, L, E, N), computed only when something hooks them. ``ssm.{i}.gate`` is
SiLU(z). Backward-direction values are indexed by the original token position: the backward state
at position t has read tokens t..L−1. The class token sits at token ``model.model.cls_index``;
the patches fill the other positions in row-major order.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pathlib
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.devices import CPU
from workbench.errors import ModelNotFoundError, WorkbenchError, one_line
from workbench.models.loaded import HookPoint, LoadedModel, Site, Weight

DIRECTIONS = ("fwd", "bwd")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")
SCAN_CHUNK_ELEMENTS = 2**19
"""Positions per scan chunk are chosen so that one chunk's (positions, batch, E, N) tensors hold
about this many numbers (2 MiB in float32): small enough to stay in cache, large enough that the
per-position Python loop is not the bottleneck."""


# -- configuration -----------------------------------------------------------------------------
@dataclass
class VimConfig:
    """Vision Mamba hyper-parameters; ``config.json`` holds these fields plus ``model_type``."""

    d_model: int = 192
    n_layers: int = 24
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0
    """0 means ``ceil(d_model / 16)``, as in Mamba."""
    image_size: int = 224
    patch_size: int = 16
    stride: int = 0
    """Patch-embedding stride; 0 means ``patch_size`` (the ``_ft`` checkpoints use 8)."""
    in_channels: int = 3
    num_classes: int = 1000
    norm_eps: float = 1e-5
    divide_out: bool = True
    problem_type: str = "single_label_classification"
    id2label: dict[str, str] = field(default_factory=dict)
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not self.dt_rank:
            self.dt_rank = math.ceil(self.d_model / 16)
        if not self.stride:
            self.stride = self.patch_size
        self.image_mean = tuple(self.image_mean)
        self.image_std = tuple(self.image_std)
        self.id2label = {str(k): str(v) for k, v in self.id2label.items()}

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def grid_size(self) -> int:
        """Patches per side: ``(image_size - patch_size) // stride + 1``."""
        return (self.image_size - self.patch_size) // self.stride + 1

    @property
    def n_patches(self) -> int:
        return self.grid_size**2

    @property
    def cls_index(self) -> int:
        """Token index of the class token: the middle of the patch sequence, as in Vim."""
        return self.n_patches // 2

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "vim", **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VimConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero inside the block (switched off again after).

    Decayed states and hidden-attention weights pass through the denormal range on their way to
    zero, and x86 CPUs compute on denormals many times slower; values below 1e-38 (float32) do
    not matter here. PyTorch has no getter for the setting, and its default is off.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# -- the selective scan ------------------------------------------------------------------------
def _scan_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def default_chunk(batch: int, d_inner: int, d_state: int) -> int:
    """Positions per scan chunk for this batch and state size (see ``SCAN_CHUNK_ELEMENTS``)."""
    return max(1, SCAN_CHUNK_ELEMENTS // max(1, batch * d_inner * d_state))


def _decay(delta: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """exp(Δ A) for a chunk of positions: (T, batch, E, N)."""
    return torch.exp(delta[..., None] * A)


def _run_chunk(
    decay: torch.Tensor,
    dx: torch.Tensor,
    B: torch.Tensor,
    h: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """h_t = decay_t ⊙ h_{t−1} + (Δx)_t ⊗ B_t for the chunk's positions, written into ``out``.

    Returns the last state. ``Δ x ⊗ B`` is formed inside the update, never stored.
    """
    for t in range(decay.shape[0]):
        torch.mul(decay[t], h, out=out[t])
        out[t].addcmul_(dx[t][:, :, None], B[t][:, None, :])
        h = out[t]
    return h


SAVE_STATES_ELEMENTS = 2**26
"""With gradients on, a scan whose states hold at most this many numbers (256 MiB in float32)
keeps them for the backward pass instead of recomputing them chunk by chunk."""


class _SelectiveScan(torch.autograd.Function):
    """The scan over positions (dim 0) with a matching hand-written backward.

    Inputs are position-major: x, delta (L, batch, E); A (batch, E, N); B, C (L, batch, N).
    With gradients on and small enough states, the forward keeps the states; otherwise only
    the state entering each chunk is kept and the backward recomputes a chunk's states from
    it, so memory stays at one chunk of (T, batch, E, N) tensors.
    """

    @staticmethod
    def forward(ctx, x, delta, A, B, C, chunk, keep_states):
        L, batch, E = x.shape
        N = A.shape[-1]
        save_all = torch.is_grad_enabled() and L * batch * E * N <= SAVE_STATES_ELEMENTS
        # states[t + 1] is h_t; states[0] is the zero state before the first position.
        keep = keep_states or save_all
        states = x.new_zeros(L + 1, batch, E, N) if keep else None
        buffer = None if keep else x.new_empty(min(chunk, L), batch, E, N)
        y = x.new_empty(L, batch, E)
        dx = delta * x
        h = x.new_zeros(batch, E, N)
        starts = []
        for c0 in range(0, L, chunk):
            c1 = min(L, c0 + chunk)
            hs = states[c0 + 1 : c1 + 1] if states is not None else buffer[: c1 - c0]
            if not save_all:
                starts.append(h.clone())
            h = _run_chunk(_decay(delta[c0:c1], A), dx[c0:c1], B[c0:c1], h, hs)
            y[c0:c1] = torch.bmm(hs.view(-1, E, N), C[c0:c1].reshape(-1, N, 1)).view(-1, batch, E)
        saved = states if save_all else torch.stack(starts)
        ctx.save_for_backward(x, delta, A, B, C, saved)
        ctx.chunk, ctx.save_all = chunk, save_all
        if not keep_states:
            return y
        out_states = states[1:]
        ctx.mark_non_differentiable(out_states)
        return y, out_states

    @staticmethod
    def backward(ctx, grad_y, *_):
        x, delta, A, B, C, saved = ctx.saved_tensors
        grad_y = grad_y.contiguous()  # a transposed gradient would make every bmm crawl
        chunk = ctx.chunk
        L, batch, E = x.shape
        N = A.shape[-1]
        grad_x, grad_delta = torch.empty_like(x), torch.empty_like(delta)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A = torch.zeros(batch, E, N, dtype=x.dtype, device=x.device)
        carry = torch.zeros_like(grad_A)  # dL/dh_t reaching h_t from later positions
        dx = delta * x
        for k in reversed(range(math.ceil(L / chunk))):
            c0, c1 = k * chunk, min(L, (k + 1) * chunk)
            ds, Bs, gy = delta[c0:c1], B[c0:c1], grad_y[c0:c1]
            decay = _decay(ds, A)
            if ctx.save_all:
                h_all = saved[c0 : c1 + 1]
            else:
                h_all = x.new_empty(c1 - c0 + 1, batch, E, N)
                h_all[0] = saved[k]
                _run_chunk(decay, dx[c0:c1], Bs, saved[k], h_all[1:])
            hs, h_prev = h_all[1:], h_all[:-1]
            g = torch.mul(gy[..., None], C[c0:c1, :, None, :], out=torch.empty_like(hs))
            for t in reversed(range(c1 - c0)):
                g[t] += carry
                carry = decay[t] * g[t]  # g_t is dL/dh_t: through y_t and through h_{t+1}
            rows = (c1 - c0) * batch
            g_flat = g.view(rows, E, N)
            grad_C[c0:c1] = torch.bmm(gy.reshape(rows, 1, E), hs.reshape(rows, E, N)).view_as(Bs)
            g_dx = torch.bmm(g_flat, Bs.reshape(rows, N, 1)).view_as(gy)  # dL/d(Δ x)
            grad_B[c0:c1] = torch.bmm(dx[c0:c1].reshape(rows, 1, E), g_flat).view_as(Bs)
            g_exponent = g.mul_(decay).mul_(h_prev)  # dL/d(Δ A); g is not needed any more
            grad_delta[c0:c1] = torch.einsum("tben,ben->tbe", g_exponent, A)
            grad_A += g_exponent.mul_(ds[..., None]).sum(0)
            grad_delta[c0:c1] += g_dx * x[c0:c1]
            grad_x[c0:c1] = g_dx * ds
        return grad_x, grad_delta, grad_A, grad_B, grad_C, None, None


@overload
def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    return_states: Literal[False] = False,
    channels: torch.Tensor | list[int] | None = None,
    chunk: int | None = None,
) -> torch.Tensor: ...


@overload
def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    return_states: Literal[True],
    channels: torch.Tensor | list[int] | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    return_states: bool = False,
    channels: torch.Tensor | list[int] | None = None,
    chunk: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan along dim 1, optionally with its hidden states.

    ``x``, ``delta``: (batch, L, E); ``A``: (E, N), negative, or (batch, E, N) for one A per
    example (two directions scanned as one batch); ``B``, ``C``: (batch, L, N); ``D``: (E,).
    Returns ``y`` (batch, L, E) with h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t (h_{−1} = 0) and
    y_t = C_t · h_t + D x_t, and with ``return_states`` also ``h`` (batch, L, E, N). Channels
    are independent, so ``channels`` (indices into E) restricts both outputs to those channels
    at a fraction of the cost. ``chunk`` positions are processed at a time (default: about
    ``SCAN_CHUNK_ELEMENTS`` numbers per chunk), which bounds the memory.
    """
    if channels is not None:
        index = torch.as_tensor(channels, dtype=torch.long, device=x.device)
        x, delta, A = x[..., index], delta[..., index], A[..., index, :]
        D = D[index] if D is not None else None
    dtype = _scan_dtype(x, delta, A, B, C)
    batch, _, E = x.shape
    chunk = chunk or default_chunk(batch, E, A.shape[-1])
    xs, ds, Bs, Cs = (t.to(dtype).transpose(0, 1).contiguous() for t in (x, delta, B, C))
    A = A.to(dtype).expand(batch, *A.shape[-2:])
    out = _SelectiveScan.apply(xs, ds, A, Bs, Cs, chunk, return_states)
    y, states = out if return_states else (out, None)
    y = y.transpose(0, 1)
    if D is not None:
        y = y + D.to(dtype) * x.to(dtype)
    if states is None:
        return y
    return y, states.transpose(0, 1)


# -- modules -----------------------------------------------------------------------------------
def _wide(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 stay as they are (the scan's precision)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _is_hooked(point: nn.Module) -> bool:
    return bool(point._forward_hooks or point._forward_pre_hooks)


def _tap(point: nn.Module, value: torch.Tensor, flip: bool) -> torch.Tensor:
    """Pass ``value`` through ``point`` when hooked; backward values are shown in token order."""
    if not _is_hooked(point):
        return value
    seen = point(value.flip(1) if flip else value)
    return seen.flip(1) if flip else seen


def causal_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Mamba's causal depthwise convolution on (batch, L, E), as shifted multiply-adds.

    Equals ``conv(x.transpose(1, 2))[..., :L]`` with the Conv1d's left padding of K − 1, but
    runs several times faster on the CPU (backward included) and needs no transposes.
    """
    L, K = x.shape[1], conv.weight.shape[-1]
    padded = F.pad(x, (0, 0, K - 1, 0))
    weight = conv.weight[:, 0].to(x.dtype)  # (E, K)
    out = padded[:, :L] * weight[:, 0]
    for k in range(1, K):
        out = out + padded[:, k : k + L] * weight[:, k]
    return out + conv.bias.to(x.dtype) if conv.bias is not None else out


class RMSNorm(nn.Module):
    """RMS normalisation with a weight and no bias, computed in float32 (mamba_ssm's RMSNorm)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = _wide(x)
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * _wide(self.weight)).to(self.weight.dtype)


class PatchEmbed(nn.Module):
    def __init__(self, config: VimConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            config.in_channels, config.d_model, config.patch_size, stride=config.stride
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class DirectionPoints(nn.Module):
    """Hook points of one scan direction."""

    def __init__(self) -> None:
        super().__init__()
        self.x = HookPoint()
        self.delta = HookPoint()
        self.B = HookPoint()
        self.C = HookPoint()
        self.h = HookPoint()
        self.y = HookPoint()


class BiMamba(nn.Module):
    """The bidirectional ("v2") Mamba mixer of Vim, with the official parameter names."""

    def __init__(self, config: VimConfig) -> None:
        super().__init__()
        d, e, n, r = config.d_model, config.d_inner, config.d_state, config.dt_rank
        self.d_state, self.dt_rank, self.divide_out = n, r, config.divide_out
        self.in_proj = nn.Linear(d, 2 * e, bias=False)
        for suffix in ("", "_b"):
            conv = nn.Conv1d(e, e, config.d_conv, groups=e, padding=config.d_conv - 1, bias=True)
            setattr(self, f"conv1d{suffix}", conv)
            setattr(self, f"x_proj{suffix}", nn.Linear(e, r + 2 * n, bias=False))
            setattr(self, f"dt_proj{suffix}", nn.Linear(r, e, bias=True))
        a_init = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1)
        self.A_log = nn.Parameter(a_init.clone())
        self.A_b_log = nn.Parameter(a_init.clone())
        self.D = nn.Parameter(torch.ones(e))
        self.D_b = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d, bias=False)
        self.fwd = DirectionPoints()
        self.bwd = DirectionPoints()
        self.gate = HookPoint()

    def direction_params(self, direction: str) -> dict[str, Any]:
        """The modules and parameters one direction uses (backward: the ``_b`` ones)."""
        b = "_b" if direction == "bwd" else ""
        return {
            "conv1d": getattr(self, f"conv1d{b}"),
            "x_proj": getattr(self, f"x_proj{b}"),
            "dt_proj": getattr(self, f"dt_proj{b}"),
            "A_log": self.A_b_log if b else self.A_log,
            "D": self.D_b if b else self.D,
        }

    def A(self, direction: str) -> torch.Tensor:
        """A = −exp(A_log) of one direction, (E, N), float32 (float64 in a float64 model)."""
        return -torch.exp(_wide(self.direction_params(direction)["A_log"]))

    def scan_inputs(
        self, x: torch.Tensor, direction: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conv + SiLU, then Δ, B, C of one direction, in that direction's scan order.

        ``x`` is the un-gated half of ``in_proj``'s output (batch, L, E) in token order.
        Returns (u, Δ, B, C); Δ is float32 (float64 for float64 input).
        """
        flip = direction == "bwd"
        p = self.direction_params(direction)
        points: DirectionPoints = getattr(self, direction)
        seq = x.flip(1) if flip else x
        u = F.silu(causal_conv(seq, p["conv1d"]))
        u = _tap(points.x, u, flip)
        dt, B, C = torch.split(p["x_proj"](u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(_wide(p["dt_proj"](dt)))
        delta = _tap(points.delta, delta, flip)
        return u, delta, _tap(points.B, B, flip), _tap(points.C, C, flip)

    def _read_out(
        self,
        direction: str,
        u: torch.Tensor,
        y: torch.Tensor,
        C: torch.Tensor,
        h: torch.Tensor | None,
    ) -> torch.Tensor:
        """y of one direction (scan order) through its hook points; y uses the tapped states."""
        flip = direction == "bwd"
        points: DirectionPoints = getattr(self, direction)
        D = self.direction_params(direction)["D"]
        if h is not None:
            h = _tap(points.h, h, flip)
            # The read-out uses the (possibly edited) states; later states are not recomputed.
            y = (h @ C.to(h.dtype)[..., None]).squeeze(-1) + D.to(h.dtype) * u.to(h.dtype)
        else:
            y = y + _wide(D) * _wide(u)
        return _tap(points.y, y, flip)

    def scan_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions' scan outputs y (batch, L, E), in token order, before the gate.

        The two directions are scanned as one batch (one A per example), which halves the
        per-position work of the loop.
        """
        batch = x.shape[0]
        inputs = [self.scan_inputs(x, d) for d in DIRECTIONS]
        want_h = [_is_hooked(getattr(self, d).h) for d in DIRECTIONS]
        u, delta, B, C = (torch.cat(parts) for parts in zip(*inputs, strict=True))
        A = torch.cat([self.A(d).expand(batch, -1, -1) for d in DIRECTIONS])
        h_parts: tuple[torch.Tensor | None, ...] = (None, None)
        if any(want_h):
            y, h = selective_scan(u, delta, A, B, C, return_states=True)
            h_parts = h.split(batch)
        else:
            y = selective_scan(u, delta, A, B, C)
        outputs = []
        for k, d in enumerate(DIRECTIONS):
            u_d, _, _, C_d = inputs[k]
            h_d = h_parts[k] if want_h[k] else None
            y_d = self._read_out(d, u_d, y[k * batch : (k + 1) * batch], C_d, h_d)
            outputs.append(y_d.flip(1) if d == "bwd" else y_d)
        return outputs[0], outputs[1]

    def one_direction(self, hidden: torch.Tensor, direction: str) -> torch.Tensor:
        """The plain (unidirectional) Mamba output of one branch: out_proj(y ⊙ SiLU(z))."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        u, delta, B, C = self.scan_inputs(x, direction)
        y = self._read_out(direction, u, selective_scan(u, delta, self.A(direction), B, C), C, None)
        y = y.flip(1) if direction == "bwd" else y
        return self.out_proj((y * F.silu(_wide(z))).to(hidden.dtype))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        gate = F.silu(_wide(z))
        gate = self.gate(gate) if _is_hooked(self.gate) else gate
        y_fwd, y_bwd = self.scan_both(x)
        y = y_fwd * gate + y_bwd * gate
        if self.divide_out:
            y = y / 2
        return self.out_proj(y.to(hidden.dtype))


class VimBlock(nn.Module):
    """RMSNorm -> bidirectional mixer -> residual add; the residual stream stays float32."""

    def __init__(self, config: VimConfig) -> None:
        super().__init__()
        self.mixer = BiMamba(config)
        self.norm = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        return resid + _wide(self.mixer(self.norm(resid)))


@dataclass
class VimOutput:
    """What ``VisionMamba.forward`` returns: logits from the class token, and the final tokens."""

    logits: torch.Tensor
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class VisionMamba(nn.Module):
    """Vision Mamba with a middle class token; ``VisionMamba(config)`` builds a fresh copy."""

    def __init__(self, config: VimConfig) -> None:
        super().__init__()
        self.config = config
        self.cls_index = config.cls_index
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.n_patches + 1, config.d_model))
        self.layers = nn.ModuleList([VimBlock(config) for _ in range(config.n_layers)])
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The official initialisation (Mamba's dt and A inits, scaled out_proj, .02 tokens)."""
        c = self.config
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        nn.init.trunc_normal_(proj.weight, std=math.sqrt(1.0 / fan_in))
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
        for layer in self.layers:
            mixer = cast(BiMamba, layer.get_submodule("mixer"))
            nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
            mixer.out_proj.weight /= math.sqrt(c.n_layers)
            for b in ("", "_b"):
                dt_proj = getattr(mixer, f"dt_proj{b}")
                bound = c.dt_rank**-0.5
                nn.init.uniform_(dt_proj.weight, -bound, bound)
                dt = torch.exp(
                    torch.rand(c.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
                ).clamp(min=1e-4)
                dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token inserted at ``cls_index`` and positions added."""
        tokens = self.patch_embed(pixel_values.to(self.dtype))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        k = self.cls_index
        return torch.cat([tokens[:, :k], cls, tokens[:, k:]], dim=1) + self.pos_embed

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> VimOutput:
        resid = _wide(self.embed(pixel_values))
        hidden = [resid] if output_hidden_states else None
        for layer in self.layers:
            resid = layer(resid)
            if hidden is not None:
                hidden.append(resid)
        final = self.norm_f(resid)
        logits = self.head(final[:, self.cls_index])
        return VimOutput(logits, final, tuple(hidden) if hidden is not None else None)

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, M + 1, ...) tokens -> the M patch tokens in row-major order (class removed)."""
        k = self.cls_index
        return torch.cat([tokens[:, :k], tokens[:, k + 1 :]], dim=1)


# -- checkpoints -------------------------------------------------------------------------------
def _numpy_scalar() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray").scalar
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray").scalar


ALLOWED_GLOBALS: list[Any] = [
    argparse.Namespace,
    frozenset,
    slice,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    np.dtype,
    (_numpy_scalar(), "numpy.core.multiarray.scalar"),
    (_numpy_scalar(), "numpy._core.multiarray.scalar"),
]
"""What a training checkpoint may refer to beyond what ``torch.load(weights_only=True)`` allows
already (tensors, their storages and dtypes, sets, OrderedDicts): the argparse ``args`` that
DeiT-style training scripts save, numpy scalars (under numpy 1 and 2 names), paths."""


class CheckpointRefusedError(WorkbenchError):
    """A checkpoint pickle asked for something other than tensors and plain data."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``torch.save`` file read by PyTorch's weights-only unpickler (tensors on the CPU).

    The unpickler resolves only its own allowlist plus ``ALLOWED_GLOBALS``: anything else, such
    as ``os.system`` or ``builtins.eval``, is refused before it can be called.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is not a file")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except Exception as err:  # a damaged file fails in many ways inside torch.load; all mean this
        raise ModelNotFoundError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {one_line(err)})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ModelNotFoundError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict"
        )
    return checkpoint


def _refusal(path: Path, err: pickle.UnpicklingError) -> WorkbenchError:
    """One line for the weights-only unpickler's refusal, naming what the file asked for."""
    text = " ".join(str(err).split())
    if "Weights only load failed" not in text:
        return ModelNotFoundError(f"{path} is not a readable PyTorch checkpoint ({one_line(err)})")
    asked = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    what = asked.group(1) if asked else f"it ({detail.group(1) if detail else 'not plain data'})"
    return CheckpointRefusedError(
        f"{path}: refusing to unpickle {what}: a model checkpoint should hold only tensors and "
        "plain data, and unpickling anything else can run arbitrary code. If you trust the "
        "file, load it yourself with torch.load(..., weights_only=False) and save its state "
        "dict with torch.save(state_dict, path)."
    )


def state_dict_of(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a training checkpoint (under ``model``, as Vim saves them).

    Every key must be a string and every value a tensor whose data is really in the file.
    """
    source = checkpoint
    for key in ("model", "state_dict", "model_ema"):
        inner = checkpoint.get(key)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            source = inner
            break
    state: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not isinstance(key, str):
            raise ModelNotFoundError(f"the state dict has a key {key!r} that is not a string")
        if not isinstance(value, torch.Tensor):
            raise ModelNotFoundError(
                f"the state dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if value.numel() * value.element_size() > value.untyped_storage().nbytes():
            raise ModelNotFoundError(
                f"the state dict entry {key!r} claims shape {list(value.shape)} but holds less "
                "data; the file is damaged or forged"
            )
        state[key.removeprefix("module.")] = value
    return state


_SHAPE_KEYS = {
    "patch_embed.proj.weight": 4,
    "pos_embed": 3,
    "layers.0.mixer.A_log": 2,
    "layers.0.mixer.A_b_log": 2,
    "layers.0.mixer.dt_proj.weight": 2,
    "layers.0.mixer.conv1d.weight": 3,
    "head.weight": 2,
}
"""The weights whose shapes give Vim's hyper-parameters, and how many dimensions each has."""


def config_from_state_dict(state: dict[str, torch.Tensor]) -> VimConfig:
    """Vision Mamba's hyper-parameters read off the shapes of its weights.

    The stride is not stored; a grid that fits a 224- or 384-px image only with stride
    ``patch_size / 2`` (the ``_ft`` checkpoints) gets that stride, otherwise stride = patch size.
    """
    missing = [k for k in _SHAPE_KEYS if k not in state]
    if missing:
        raise ModelNotFoundError(
            f"this is not a Vision Mamba (Vim, bimamba v2) state dict: it lacks {missing}"
        )
    for key, ndim in _SHAPE_KEYS.items():
        shape = list(state[key].shape)
        if len(shape) != ndim or min(shape) < 1:
            raise ModelNotFoundError(
                f"the weights do not fit Vision Mamba: {key} has shape {shape}, expected "
                f"{ndim} non-empty dimensions"
            )
    if state["pos_embed"].shape[1] < 2:
        raise ModelNotFoundError("the weights do not fit Vision Mamba: pos_embed has no patches")
    d_model, channels, patch, _ = state["patch_embed.proj.weight"].shape
    d_inner, d_state = state["layers.0.mixer.A_log"].shape
    dt_rank = state["layers.0.mixer.dt_proj.weight"].shape[1]
    d_conv = state["layers.0.mixer.conv1d.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    stride, image_size = patch, grid * patch
    half = max(1, patch // 2)
    if image_size not in (224, 384) and (grid - 1) * half + patch in (224, 384):
        stride, image_size = half, (grid - 1) * half + patch
    return VimConfig(
        d_model=d_model,
        n_layers=1 + max(_layer_indices(state)),
        d_state=d_state,
        d_conv=d_conv,
        expand=max(1, d_inner // d_model),
        dt_rank=dt_rank,
        image_size=image_size,
        patch_size=patch,
        stride=stride,
        in_channels=channels,
        num_classes=state["head.weight"].shape[0],
    )


def _layer_indices(state: dict[str, torch.Tensor]) -> set[int]:
    indices = set()
    for key in state:
        if key.startswith("layers."):
            index = key.split(".")[1]
            if not index.isdigit():
                raise ModelNotFoundError(f"the state dict key {key!r} names no layer number")
            indices.add(int(index))
    return indices


def config_from_json(values: dict[str, Any]) -> VimConfig:
    """A VimConfig from config.json's fields, refusing values no Vision Mamba can have."""
    try:
        config = VimConfig.from_dict(values)
    except (TypeError, ValueError, ArithmeticError, AttributeError) as err:
        raise ModelNotFoundError(f"its fields do not make a Vim config ({one_line(err)})") from None
    wrong = [k for k in _POSITIVE_FIELDS if not _is_positive(getattr(config, k), int)]
    if not _is_positive(config.norm_eps, float):
        wrong.append("norm_eps")
    for key in ("image_mean", "image_std"):
        stats = getattr(config, key)
        if len(stats) != config.in_channels or not all(_is_number(v) for v in stats):
            wrong.append(key)
    if wrong:
        raise ModelNotFoundError(
            f"its fields {wrong} are out of range (sizes are positive whole numbers, norm_eps is "
            "positive, image_mean and image_std hold one number per input channel)"
        )
    return config


_POSITIVE_FIELDS = (
    "d_model",
    "n_layers",
    "d_state",
    "d_conv",
    "expand",
    "dt_rank",
    "image_size",
    "patch_size",
    "stride",
    "in_channels",
    "num_classes",
)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_positive(value: Any, kind: type) -> bool:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return _is_number(value) and value > 0 and (whole or kind is float)


def save_pretrained(model: VisionMamba, folder: str | Path, dtype: torch.dtype) -> None:
    """``config.json`` and ``model.safetensors`` (weights in ``dtype``) in ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {**model.config.to_dict(), "dtype": str(dtype).removeprefix("torch.")}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# -- loading -----------------------------------------------------------------------------------
def build(config: VimConfig, state: dict[str, torch.Tensor], dtype: torch.dtype) -> VisionMamba:
    """A VisionMamba holding exactly ``state`` (strict: names and shapes must all match).

    Names and shapes are compared on an empty copy of the model on the meta device first, so
    weights that do not fit cost no memory and fail with the first tensor that differs.
    """
    state = {k: v for k, v in state.items() if not k.startswith("gamma")}
    layers = _layer_indices(state)
    if layers != set(range(config.n_layers)):
        raise ModelNotFoundError(
            f"the weights do not fit Vision Mamba: the config has {config.n_layers} layers but "
            f"the weights have {len(layers)} (numbered up to {max(layers, default=-1)})"
        )
    try:
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in VisionMamba(config).state_dict().items()}
    except (RuntimeError, ValueError, TypeError, ArithmeticError) as err:
        raise ModelNotFoundError(f"no Vision Mamba has this config ({one_line(err)})") from None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelNotFoundError(
            "the weights do not fit Vision Mamba: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, shape in expected.items():
        if list(state[name].shape) != shape:
            raise ModelNotFoundError(
                f"the weights do not fit Vision Mamba: {name} has shape "
                f"{list(state[name].shape)}, the config needs {shape}"
            )
    model = VisionMamba(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # e.g. a complex tensor that cannot become a real weight
        raise ModelNotFoundError(f"the weights do not load ({one_line(err)})") from None
    return model.to(dtype).eval()


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Prefix a ModelNotFoundError raised inside with the file it is about."""
    try:
        yield
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"{path}: {err}") from None


def load(
    spec: str,
    folder: Path,
    config: dict[str, Any],
    *,
    dtype: torch.dtype,
    device: torch.device = CPU,
) -> LoadedModel:
    """Load a Vim folder (config.json + model.safetensors) or an official ``.pth`` checkpoint
    onto one device (the plain-PyTorch scan runs on any)."""
    folder = Path(folder)
    if folder.is_file():
        checkpoint = read_checkpoint(folder)  # its errors name the file already
        weights = folder
        with _naming(folder):
            state = state_dict_of(checkpoint)
            vim_config = config_from_state_dict(state)
    else:
        from safetensors.torch import load_file

        with _naming(folder / "config.json"):
            vim_config = config_from_json(config)
        weights = folder / "model.safetensors"
        state = load_file(str(weights))  # the loader has checked its header
    with _naming(weights):
        model = build(vim_config, state, dtype).to(device)
    return LoadedModel(
        spec=spec,
        family="vim",
        model=model,
        processor=None,
        sites=vim_sites(vim_config.n_layers),
        n_layers=vim_config.n_layers,
        d_model=vim_config.d_model,
        model_type="vim",
        source=folder,
        image_size=vim_config.image_size,
        patch_size=vim_config.stride,
        grid_size=None if vim_config.stride == vim_config.patch_size else vim_config.grid_size,
        n_prefix_tokens=0,
        image_mean=vim_config.image_mean,
        image_std=vim_config.image_std,
        weights=vim_weights(vim_config.n_layers),
        head_labels=tuple(
            vim_config.id2label.get(str(k), str(k)) for k in range(vim_config.num_classes)
        )
        or None,
    )


def vim_sites(n_layers: int) -> dict[str, Site]:
    """Every site name of an ``n_layers`` Vim, mapped onto its modules."""
    sites: list[Site] = []
    for i in range(n_layers):
        b = f"layers.{i}"
        sites += [
            Site(f"blocks.{i}.resid_pre", b, "input"),
            Site(f"blocks.{i}.resid_post", b, "output"),
            Site(f"blocks.{i}.mixer.in", f"{b}.norm", "output"),
            Site(f"blocks.{i}.mixer.out", f"{b}.mixer", "output"),
            Site(f"ssm.{i}.gate", f"{b}.mixer.gate", "output"),
        ]
        for d in DIRECTIONS:
            for part in ("x", "delta", "B", "C", "h", "y"):
                sites.append(Site(f"ssm.{i}.{d}.{part}", f"{b}.mixer.{d}.{part}", "output"))
    for w in vim_weights(n_layers).values():
        if w.param != "weight":
            continue
        sites.append(Site(f"{w.name}.input", w.module, "input"))
        sites.append(Site(f"{w.name}.output", w.module, "output"))
    return {s.name: s for s in sites}


def vim_weights(n_layers: int) -> dict[str, Weight]:
    """Named (out, in) matrices: the shared in/out projections and each direction's x/dt ones."""
    weights: list[Weight] = []
    for i in range(n_layers):
        m = f"layers.{i}.mixer"
        weights += [
            Weight(f"blocks.{i}.mixer.W_in", f"{m}.in_proj"),
            Weight(f"blocks.{i}.mixer.W_out", f"{m}.out_proj"),
        ]
        for d, b in (("fwd", ""), ("bwd", "_b")):
            weights += [
                Weight(f"blocks.{i}.ssm.{d}.W_x", f"{m}.x_proj{b}"),
                Weight(f"blocks.{i}.ssm.{d}.W_dt", f"{m}.dt_proj{b}"),
                # A = -exp(A_log), (E, N); D, (E,): the skip term of y = C h + D x.
                Weight(f"blocks.{i}.ssm.{d}.A_log", m, param=f"A{b}_log"),
                Weight(f"blocks.{i}.ssm.{d}.D", m, param=f"D{b}"),
            ]
    return {w.name: w for w in weights}

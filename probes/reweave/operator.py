"""The reweaving operator and the context manager that applies it during a forward pass.

Definition (the paper gives none; this is the workbench's precise version):

* read the residual stream ``h_l`` after each source block ``l`` in ``S``;
* reconstruct ``r = sum_l w_l LN(h_l)`` with ``w = softmax(theta)`` and ``LN`` a layer norm
  without parameters (zero mean, unit variance over features);
* map it into the destination's space: ``P r = p * r + b`` (``p`` starts at the destination's
  typical root-mean-square size, ``b`` at zero);
* optionally read over positions: ``m_t = sum_s a_ts P r_s`` with ``a_t = softmax_s(q_t . k_s /
  sqrt(d))`` over earlier positions ``s <= t`` (``q_t = LN(h_t) W_q``, ``k_s = r_s W_k``), or
  over every position of a memory captured from another prompt; without the read ``m_t = P r_t``;
* inject before destination block ``L``: ``h <- h + g * (m - h)``, computed as
  ``torch.lerp(h, m, g)`` so that ``g = 0`` returns ``h`` and ``g = 1`` returns ``m`` bit for bit.

``g`` is a fixed scalar, or a learned scalar or per-feature gate ``sigmoid(gate_logit)``.
Capture and injection happen in the same forward pass, through ``workbench.capture.hooks``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workbench.capture import capture, hooks
from workbench.errors import DataError, SiteError
from workbench.models import LoadedModel

READS = ("none", "causal")
GATES = ("fixed", "scalar", "vector")
LN_EPS = 1e-5


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the last dimension; no learned scale or shift."""
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=LN_EPS)


def check_gate(gate: float) -> None:
    """Refuse a gate outside [0, 1] (NaN included): it would extrapolate past ``h`` or ``m``."""
    if not 0.0 <= gate <= 1.0:
        raise DataError(f"the gate must lie in [0, 1]; got {gate}")


class Reweaving(nn.Module):
    """Parameters of one reweaving: sources, destination, weights, projection, gate, read.

    ``gate_kind="fixed"`` keeps ``gate`` as a plain number; ``"scalar"`` and ``"vector"`` learn
    ``sigmoid(gate_logit)`` (one value, or one per feature) starting from ``gate``.
    """

    def __init__(
        self,
        sources: tuple[int, ...],
        target: int,
        d_model: int,
        *,
        gate: float = 0.5,
        gate_kind: str = "fixed",
        read: str = "none",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        sources = tuple(int(s) for s in sources)
        if not sources:
            raise DataError("reweaving needs at least one source layer")
        if len(set(sources)) != len(sources):
            raise DataError(f"source layers repeat: {sources}")
        if min(sources) < 0 or target <= max(sources):
            raise DataError(
                f"the destination block ({target}) must come after every source layer "
                f"{sources}: reweaving injects a reconstruction of earlier states"
            )
        if read not in READS:
            raise DataError(f"unknown read {read!r}; choose one of {', '.join(READS)}")
        if gate_kind not in GATES:
            raise DataError(f"unknown gate kind {gate_kind!r}; choose one of {', '.join(GATES)}")
        check_gate(gate)
        self.sources = sources
        self.target = int(target)
        self.d_model = int(d_model)
        self.read = read
        self.gate_kind = gate_kind
        self.theta = nn.Parameter(torch.zeros(len(sources)))
        self.scale = nn.Parameter(torch.full((d_model,), float(scale)))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.fixed_gate = float(gate)
        width = 1 if gate_kind in ("fixed", "scalar") else d_model
        clipped = min(max(gate, 1e-4), 1 - 1e-4)
        self.gate_logit = nn.Parameter(torch.full((width,), math.log(clipped / (1 - clipped))))
        self.w_query = nn.Parameter(torch.eye(d_model))
        self.w_key = nn.Parameter(torch.eye(d_model))

    # -- the pieces ----------------------------------------------------------------------------
    @property
    def source_sites(self) -> list[str]:
        return [f"blocks.{layer}.resid_post" for layer in self.sources]

    @property
    def target_site(self) -> str:
        return f"blocks.{self.target}.resid_pre"

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.theta, dim=0)

    def gate(self) -> torch.Tensor:
        """The gate as a tensor (a 1-element or per-feature vector)."""
        if self.gate_kind == "fixed":
            return torch.tensor([self.fixed_gate])
        return torch.sigmoid(self.gate_logit)

    def reconstruct(self, states: list[torch.Tensor]) -> torch.Tensor:
        """``r = sum_l w_l LN(h_l)`` over the source states (each (batch, seq, d))."""
        w = self.weights().to(states[0].device, states[0].dtype)
        start = torch.zeros((), dtype=w.dtype, device=w.device)
        return sum((w[i] * layer_norm(h) for i, h in enumerate(states)), start)

    def project(self, r: torch.Tensor) -> torch.Tensor:
        """``P r = p * r + b``: the reconstruction at the destination's scale."""
        return r * self.scale.to(r.device, r.dtype) + self.bias.to(r.device, r.dtype)

    def memory_state(
        self,
        h: torch.Tensor,
        r: torch.Tensor,
        key_mask: torch.Tensor | None,
        *,
        causal: bool,
    ) -> torch.Tensor:
        """What is injected at each position: ``P r_t``, or the read over positions."""
        if self.read == "none":
            if r.shape[1] < h.shape[1]:
                raise DataError(
                    f"the memory holds {r.shape[1]} positions but the input has {h.shape[1]}; "
                    "without a read over positions reweaving pairs them one to one"
                )
            if r.shape[0] not in (1, h.shape[0]):
                raise DataError(f"memory batch {r.shape[0]} does not match input {h.shape[0]}")
            return self.project(r[:, : h.shape[1]])
        return self.attend(h, r, key_mask, causal=causal)

    def attend(
        self,
        h: torch.Tensor,
        r: torch.Tensor,
        key_mask: torch.Tensor | None,
        *,
        causal: bool,
    ) -> torch.Tensor:
        """``m_t = sum_s softmax_s(q_t . k_s / sqrt(d)) P r_s`` over the allowed positions."""
        dtype = h.dtype
        q = layer_norm(h) @ self.w_query.to(h.device, dtype)
        k = r @ self.w_key.to(h.device, dtype)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_model)
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=h.device)
        if causal:
            allowed = torch.tril(allowed)
        allowed = allowed[None]
        if key_mask is not None:
            allowed = allowed & key_mask.to(h.device).bool()[:, None, :]
        scores = scores.masked_fill(~allowed, torch.finfo(dtype).min)
        attn = torch.softmax(scores, dim=-1)
        return attn @ self.project(r)

    def inject(self, h: torch.Tensor, m: torch.Tensor, gate: torch.Tensor | float) -> torch.Tensor:
        """``h + g (m - h)``; exact at both ends of the gate."""
        if not isinstance(gate, torch.Tensor):
            gate = torch.tensor(float(gate))
        return torch.lerp(h, m.to(h.dtype), gate.to(h.device, h.dtype))

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Every setting and parameter as arrays, for ProbeResult (``from_arrays`` reverses)."""
        meta = {
            "sources": np.array(self.sources),
            "target": np.array(self.target),
            "fixed_gate": np.array(self.fixed_gate),
            "gate_kind": np.array(self.gate_kind),
            "read": np.array(self.read),
        }
        params = {k: v.detach().float().cpu().numpy() for k, v in self.state_dict().items()}
        return {f"{prefix}.{k}": v for k, v in {**meta, **params}.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> Reweaving:
        sources = tuple(int(s) for s in arrays[f"{prefix}.sources"])
        op = cls(
            sources,
            int(arrays[f"{prefix}.target"]),
            int(arrays[f"{prefix}.scale"].shape[0]),
            gate=float(arrays[f"{prefix}.fixed_gate"]),
            gate_kind=str(arrays[f"{prefix}.gate_kind"]),
            read=str(arrays[f"{prefix}.read"]),
        )
        op.load_state_dict(
            {k: torch.from_numpy(np.asarray(arrays[f"{prefix}.{k}"])) for k in op.state_dict()}
        )
        return op

    def describe(self) -> str:
        w = ", ".join(
            f"{layer}: {v:.2f}"
            for layer, v in zip(self.sources, self.weights().tolist(), strict=True)
        )
        g = self.gate().detach()
        gate = f"{g.item():.3f}" if g.numel() == 1 else f"mean {g.mean():.3f} (per feature)"
        return (
            f"sources {{{w}}} -> block {self.target}, gate {gate} ({self.gate_kind}), "
            f"read {self.read}"
        )


@dataclass
class Memory:
    """Source-layer states captured from some prompt, to reweave into another forward."""

    states: list[torch.Tensor]
    attention_mask: torch.Tensor | None = None


@dataclass
class ReweaveTrace:
    """What one reweaved forward saw: source states, the destination before/after, the gate."""

    sources: dict[int, torch.Tensor] = field(default_factory=dict)
    before: torch.Tensor | None = None
    injected: torch.Tensor | None = None
    after: torch.Tensor | None = None


def capture_memory(
    model: LoadedModel, op: Reweaving, inputs: Mapping[str, torch.Tensor] | list[str]
) -> Memory:
    """The source states of ``inputs`` (one forward), to reweave into other prompts."""
    cache = capture(model, inputs, op.source_sites, progress=False, dtype=None)
    states = [cache[s] for s in op.source_sites]
    return Memory(states, cache.attention_mask)


@contextmanager
def reweave(
    model: LoadedModel,
    op: Reweaving,
    *,
    memory: Memory | None = None,
    gate: float | None = None,
    attention_mask: torch.Tensor | None = None,
    observe: Mapping[str, Callable[[torch.Tensor], None]] | None = None,
    keep: bool = False,
) -> Iterator[ReweaveTrace]:
    """Reweave every forward run inside the block; all hooks are gone when it exits.

    ``memory`` (from ``capture_memory``) replaces the forward's own source states; ``gate``
    overrides the operator's gate; ``attention_mask`` marks real tokens for the read over
    positions; ``observe`` adds read-only site functions (attention patterns, say) to the same
    forward. With ``keep`` the yielded trace holds the destination before and after.
    """
    _check_sites(model, op)
    if gate is not None:
        check_gate(gate)
    trace = ReweaveTrace()
    causal = model.family == "causal-lm" and memory is None

    def remember(layer: int) -> Callable[[torch.Tensor], None]:
        def fn(h: torch.Tensor) -> None:
            trace.sources[layer] = h

        return fn

    def inject(h: torch.Tensor) -> torch.Tensor:
        if memory is not None:
            states, key_mask = memory.states, memory.attention_mask
        else:
            missing = [layer for layer in op.sources if layer not in trace.sources]
            if missing:
                raise SiteError(
                    f"source layers {missing} were not reached before block {op.target}"
                )
            states, key_mask = [trace.sources[layer] for layer in op.sources], attention_mask
        states = [s.to(h.device, h.dtype) for s in states]
        r = op.reconstruct(states)
        m = op.memory_state(h, r, key_mask, causal=causal)
        out = op.inject(h, m, op.gate() if gate is None else float(gate))
        if keep:
            trace.before, trace.injected, trace.after = h, m, out
        trace.sources.clear()
        return out

    fns: dict[str, list[Callable]] = {}
    if memory is None:
        for layer, site in zip(op.sources, op.source_sites, strict=True):
            fns.setdefault(site, []).append(remember(layer))
    fns.setdefault(op.target_site, []).append(inject)
    for site, fn in (observe or {}).items():
        fns.setdefault(site, []).append(fn)
    with hooks(model, {site: _chain(chain) for site, chain in fns.items()}):
        yield trace


def _chain(fns: list[Callable]) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """One site function from several: each sees the value the previous one left."""
    if len(fns) == 1:
        return fns[0]

    def run(value: torch.Tensor) -> torch.Tensor | None:
        changed = False
        for fn in fns:
            new = fn(value)
            if new is not None:
                value, changed = new, True
        return value if changed else None

    return run


def _check_sites(model: LoadedModel, op: Reweaving) -> None:
    if op.target >= model.n_layers:
        raise SiteError(
            f"{model.spec} has blocks 0..{model.n_layers - 1}; the destination block "
            f"{op.target} does not exist"
        )
    if op.d_model != model.d_model:
        raise DataError(f"the operator is {op.d_model} wide but {model.spec} is {model.d_model}")
    for site in [*op.source_sites, op.target_site]:
        model.site(site)

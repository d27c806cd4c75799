"""The PMI memory module as a workbench model family, with a same-size Transformer control.

PMI ("A Framework for Inference Inspired by Human Memory Mechanisms", Zeng et al., ICLR 2024)
replaces a Transformer's self-attention by a memory step. Tokens never attend to each other
directly; they write into a small working memory (WM: N slots x D) and read back from it and
from a long-term memory (LTM: C segments x N x D). One memory step, with the perceptions X
(the layer's normalised tokens):

1. Competitive write: the slots are queries, the tokens keys and values; the softmax runs over
   the tokens, and a top-k mask keeps each slot's k strongest tokens (no renormalisation).
   Then residual + LayerNorm, an MLP + LayerNorm: the candidate M~.
2. Gated update (LSTM-like): i, f from the mean-pooled perceptions and the old WM (per-slot
   weights); M_w <- sigmoid(i + b_i) * tanh(M~) + sigmoid(f + b_f) * M_w, with b_f = 1 at init.
3. Consolidation into LTM, then LayerNorm: ``outer_product`` (default) passes every LTM row
   through the associative matrix of the WM slots' outer products, sum_n w_n w_n^T / (N sqrt D),
   so a segment recalls the WM contents that resemble it. ``rowsum_scaled_wm`` is what the
   reference code computes (einsum "bmnd,bnf->bmnf"): each LTM row's feature sum scales the same
   slot's WM row, a scalar per slot rather than an outer product.
4. Reads: U_w = attention(tokens -> WM slots); U_l = attention(tokens -> mean over segments of
   the LTM) with a top-k mask over slots; the correction U_wl = attention(query U_l, keys and
   values U_w, over tokens).
5. Integration: U = alpha U_w + (1 - alpha) U_wl with alpha = 0.7 fixed (``fixed``), or a learned
   per-token gate (``learned_gate``). U goes through an output projection into the residual.

The PMI-Transformer shares one layer across its steps (each layer is one memory time step, WM
and LTM carried from step to step). The control is a standard pre-LN Transformer of the same
width, depth, heads and MLP size (unshared layers, so a similar parameter count). Both classify
the answer from the last real token.

Every internal tensor passes through an identity ``HookPoint`` that belongs to its step, so
each site runs exactly once per forward even though the layer weights are shared, and
``workbench.capture.capture``/``hooks`` work unchanged (a hook that returns a tensor replaces
the value downstream). Site names: ``steps.{t}.write.attn_pre_topk``, ``steps.{t}.wm``, ...
(see ``PMI_STEP_SITES``) and the standard ``blocks.{t}.resid_post`` and friends.

Where this differs from the reference code (zengxyyu/PMI-TR, ``sw_ltm.py``), on purpose:
attention logits are scaled by 1/sqrt(d_head); each attention has its own projections; the
write MLP's two layers are distinct (the reference repeats one Linear); the initial WM
(identity-padded, as there) and LTM are learned parameters rather than a fresh ``torch.rand``
per batch; consolidation reads the gated WM (the reference, the candidate before the gate).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from workbench.devices import CPU
from workbench.errors import DataError, ModelNotFoundError
from workbench.models.loaded import HookPoint, LoadedModel, Site

ARCHITECTURES = ("pmi", "transformer")
CONSOLIDATIONS = ("outer_product", "rowsum_scaled_wm")
INTEGRATIONS = ("fixed", "learned_gate")

PMI_STEP_SITES = (
    "write.attn_pre_topk",
    "write.attn",
    "write.candidate",
    "gate.input",
    "gate.forget",
    "wm",
    "consolidation.delta",
    "ltm",
    "read.wm_attn",
    "read.wm",
    "read.ltm_attn_pre_topk",
    "read.ltm_attn",
    "read.ltm",
    "correction.attn",
    "correction.out",
    "integration.gate",
    "integrated",
)
"""Internal sites of one memory step, each named ``steps.{t}.<name>``. Shapes (batch first):
write.* (B, H, N, T) slots x tokens; write.candidate, gate.*, wm (B, N, D);
consolidation.delta (the association term added to the LTM before its LayerNorm) and ltm
(B, C, N, D);
read.*_attn* (B, H, T, N) tokens x slots; read.wm, read.ltm, correction.out, integrated
(B, T, D); correction.attn (B, H, T, T); integration.gate (B, T, 1), the weight of U_w."""
BLOCK_SITES = ("resid_pre", "attn.out", "mlp.in", "mlp.out", "resid_post")
"""Standard per-block sites of both architectures (``blocks.{t}.<name>``); for PMI ``attn.out``
is the memory step's output after the output projection. The control adds ``attn.pattern``."""


@dataclass
class PMIConfig:
    """Architecture of a PMI-Transformer or of its Transformer control (``architecture``)."""

    vocab_size: int
    n_answers: int
    architecture: str = "pmi"
    d_model: int = 64
    n_heads: int = 4
    n_steps: int = 4
    d_mlp: int = 128
    max_positions: int = 64
    n_slots: int = 8
    n_segments: int = 5
    write_topk: int = 5
    read_topk: int = 5
    consolidation: str = "outer_product"
    integration: str = "fixed"
    alpha: float = 0.7
    forget_bias: float = 1.0
    input_bias: float = 0.0
    share_layers: bool = True
    pad_token_id: int = 0
    answer_labels: list[str] = field(default_factory=list)
    model_type: str = "pmi"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise DataError naming the fix for any inconsistent setting."""
        if self.architecture not in ARCHITECTURES:
            raise DataError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}; got {self.architecture!r}"
            )
        if self.consolidation not in CONSOLIDATIONS:
            raise DataError(
                f"consolidation must be one of {', '.join(CONSOLIDATIONS)}; "
                f"got {self.consolidation!r}"
            )
        if self.integration not in INTEGRATIONS:
            raise DataError(
                f"integration must be one of {', '.join(INTEGRATIONS)}; got {self.integration!r}"
            )
        if self.d_model % self.n_heads:
            raise DataError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        for name in ("n_steps", "n_slots", "n_segments", "write_topk", "read_topk", "n_answers"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be at least 1; got {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise DataError(f"alpha must lie in [0, 1]; got {self.alpha}")
        if self.answer_labels and len(self.answer_labels) != self.n_answers:
            raise DataError(
                f"{len(self.answer_labels)} answer labels for {self.n_answers} answer classes"
            )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PMIConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class PMIOutput:
    """What a forward returns: answer logits, and the readout vector they come from."""

    logits: torch.Tensor
    readout: torch.Tensor


# -- the equations as pure functions (tests recompute each one slowly) -----------------------
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, D / H)."""
    b, length, d = x.shape
    return x.view(b, length, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H * d)."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) over the keys; ``key_mask`` (B, Lk) is True where a key is real.

    q: (B, H, Lq, d), k: (B, H, Lk, d) -> (B, H, Lq, Lk).
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def topk_mask(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest weights along the last axis, zero the rest (no renormalisation).

    When ``k`` is at least the axis length nothing is masked, as in the reference code.
    """
    if k >= weights.shape[-1]:
        return weights
    keep = torch.zeros_like(weights).scatter_(-1, weights.topk(k, dim=-1).indices, 1.0)
    return weights * keep


def gated_update(
    candidate: torch.Tensor,
    previous: torch.Tensor,
    input_logits: torch.Tensor,
    forget_logits: torch.Tensor,
    input_bias: torch.Tensor | float,
    forget_bias: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M_w <- sigmoid(i + b_i) * tanh(M~) + sigmoid(f + b_f) * M_w; returns (new, i, f) gates."""
    i = torch.sigmoid(input_logits + input_bias)
    f = torch.sigmoid(forget_logits + forget_bias)
    return i * torch.tanh(candidate) + f * previous, i, f


def consolidation_outer_product(ltm: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
    """Each LTM row recalled through the WM's outer-product association matrix.

    ltm (B, C, N, D), wm (B, N, D) -> (B, C, N, D): l @ (sum_n w_n w_n^T) / (N sqrt D).
    """
    association = wm.transpose(1, 2) @ wm  # (B, D, D) = sum over slots of outer products
    scale = wm.shape[1] * math.sqrt(wm.shape[2])
    return ltm @ association[:, None] / scale


def consolidation_rowsum_scaled_wm(ltm: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
    """The reference code's einsum "bmnd,bnf->bmnf": sum_d ltm[c, n, d] times wm[n, :]."""
    return ltm.sum(dim=-1, keepdim=True) * wm[:, None]


def integrate(u_w: torch.Tensor, u_wl: torch.Tensor, gate: torch.Tensor | float) -> torch.Tensor:
    """U = g U_w + (1 - g) U_wl (g = alpha = 0.7 fixed, or a learned per-token gate)."""
    return gate * u_w + (1.0 - gate) * u_wl


# -- modules -----------------------------------------------------------------------------------
class Projections(nn.Module):
    """Query, key and value projections of one attention."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)


class MLP(nn.Module):
    def __init__(self, d: int, d_hidden: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d, d_hidden)
        self.fc_out = nn.Linear(d_hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


def _points(names: tuple[str, ...]) -> nn.ModuleDict:
    return nn.ModuleDict({_key(name): HookPoint() for name in names})


def _key(name: str) -> str:
    return name.replace(".", "__")


class MemoryStep(nn.Module):
    """One PMI step: write, gate, consolidate, read, correct, integrate (weights shared)."""

    def __init__(self, cfg: PMIConfig) -> None:
        super().__init__()
        d, n = cfg.d_model, cfg.n_slots
        self.cfg = cfg
        self.write = Projections(d)
        self.write_norm = nn.LayerNorm(d)
        self.write_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.write_mlp_norm = nn.LayerNorm(d)
        self.gate_input_scale = nn.Parameter(torch.randn(d))
        self.gate_input = nn.Linear(d, 2 * d)
        self.gate_memory_weight = nn.Parameter(torch.randn(n, d, 2 * d) / math.sqrt(d))
        self.gate_memory_bias = nn.Parameter(torch.zeros(n, 2 * d))
        # shape (1,), not 0-d: LoadedModel.digest views every tensor as bytes
        self.input_bias = nn.Parameter(torch.full((1,), float(cfg.input_bias)))
        self.forget_bias = nn.Parameter(torch.full((1,), float(cfg.forget_bias)))
        self.ltm_norm = nn.LayerNorm(d)
        self.read_wm = Projections(d)
        self.read_ltm = Projections(d)
        self.correction = Projections(d)
        self.integration_gate = nn.Linear(2 * d, 1) if cfg.integration == "learned_gate" else None
        self.out = nn.Linear(d, d)

    def _attend(
        self,
        proj: Projections,
        queries: torch.Tensor,
        memory: torch.Tensor,
        key_mask: torch.Tensor | None,
        topk: int | None,
        before: nn.Module | None,
        after: nn.Module,
    ) -> torch.Tensor:
        h = self.cfg.n_heads
        q, k, v = (split_heads(p, h) for p in (proj.q(queries), proj.k(memory), proj.v(memory)))
        weights = attention_weights(q, k, key_mask)
        if before is not None:
            weights = before(weights)
        if topk is not None:
            weights = topk_mask(weights, topk)
        weights = after(weights)
        return merge_heads(weights @ v)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        wm: torch.Tensor,
        ltm: torch.Tensor,
        p: nn.ModuleDict,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D) normalised tokens, mask (B, T) real tokens -> (output, new WM, new LTM)."""
        cfg = self.cfg
        # 1. competitive write: slots attend over tokens, top-k tokens per slot
        written = self._attend(
            self.write,
            wm,
            x,
            mask,
            cfg.write_topk,
            p[_key("write.attn_pre_topk")],
            p[_key("write.attn")],
        )
        memory = self.write_norm(wm + written)
        candidate = p[_key("write.candidate")](self.write_mlp_norm(memory + self.write_mlp(memory)))
        # 2. gated update from the pooled perceptions and the previous WM
        m = mask[..., None].to(x.dtype)
        pooled = (F.relu(self.gate_input_scale * x) * m).sum(1) / m.sum(1).clamp_min(1.0)
        from_memory = torch.einsum("bnd,nde->bne", torch.tanh(wm), self.gate_memory_weight)
        logits = self.gate_input(pooled)[:, None] + from_memory + self.gate_memory_bias
        input_logits, forget_logits = logits.chunk(2, dim=-1)
        new_wm, i_gate, f_gate = gated_update(
            candidate, wm, input_logits, forget_logits, self.input_bias, self.forget_bias
        )
        p[_key("gate.input")](i_gate)
        p[_key("gate.forget")](f_gate)
        new_wm = p["wm"](new_wm)
        # 3. consolidation into long-term memory
        if cfg.consolidation == "outer_product":
            delta = consolidation_outer_product(ltm, new_wm)
        else:
            delta = consolidation_rowsum_scaled_wm(ltm, new_wm)
        delta = p[_key("consolidation.delta")](delta)
        new_ltm = p["ltm"](self.ltm_norm(ltm + delta))
        # 4. reads from both memories, then the correction of U_l by U_w
        u_w = self._attend(self.read_wm, x, new_wm, None, None, None, p[_key("read.wm_attn")])
        u_w = p[_key("read.wm")](u_w)
        u_l = self._attend(
            self.read_ltm,
            x,
            new_ltm.mean(dim=1),
            None,
            cfg.read_topk,
            p[_key("read.ltm_attn_pre_topk")],
            p[_key("read.ltm_attn")],
        )
        u_l = p[_key("read.ltm")](u_l)
        u_wl = self._attend(self.correction, u_l, u_w, mask, None, None, p[_key("correction.attn")])
        u_wl = p[_key("correction.out")](u_wl)
        # 5. integration
        if self.integration_gate is None:
            gate = torch.full_like(u_w[..., :1], cfg.alpha)
        else:
            gate = torch.sigmoid(self.integration_gate(torch.cat([u_w, u_wl], dim=-1)))
        gate = p[_key("integration.gate")](gate)
        u = p["integrated"](integrate(u_w, u_wl, gate))
        return self.out(u), new_wm, new_ltm


class SelfAttention(nn.Module):
    """Standard multi-head self-attention with an explicit pattern (for the control)."""

    def __init__(self, cfg: PMIConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.proj = Projections(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, pattern_point: HookPoint
    ) -> torch.Tensor:
        h = self.n_heads
        q, k, v = (split_heads(p, h) for p in (self.proj.q(x), self.proj.k(x), self.proj.v(x)))
        pattern = pattern_point(attention_weights(q, k, mask))
        return self.out(merge_heads(pattern @ v))


class Block(nn.Module):
    """Pre-LN block whose token mixer is a memory step (PMI) or self-attention (control)."""

    def __init__(self, cfg: PMIConfig) -> None:
        super().__init__()
        self.mix_norm = nn.LayerNorm(cfg.d_model)
        self.mixer = MemoryStep(cfg) if cfg.architecture == "pmi" else SelfAttention(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp)


class _Classifier(nn.Module):
    """Embeddings, a stack of steps, and an answer head on the last real token."""

    points: nn.ModuleList
    """Per step, the hook points of that step (set by each architecture)."""

    def __init__(self, config: PMIConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_positions, cfg.d_model)
        n_blocks = 1 if cfg.share_layers else cfg.n_steps
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(n_blocks)])
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_answers)
        self.readout_point = HookPoint()
        self.logits_point = HookPoint()

    def block(self, t: int) -> Block:
        return cast(Block, self.blocks[0 if self.config.share_layers else t])

    def step_points(self, t: int) -> nn.ModuleDict:
        """The hook points of memory step ``t``."""
        return cast(nn.ModuleDict, self.points[t])

    def _embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if input_ids.ndim != 2:
            raise DataError(f"input_ids must be (batch, tokens); got {tuple(input_ids.shape)}")
        t = input_ids.shape[1]
        if t > self.config.max_positions:
            raise DataError(
                f"{t} tokens but the model has {self.config.max_positions} positions; "
                "use shorter stories"
            )
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.bool()
        )
        if not mask.any(dim=1).all():
            raise DataError("an input has no real tokens (its attention_mask is all zero)")
        positions = torch.arange(t, device=input_ids.device)
        return self.embed(input_ids) + self.pos_embed(positions)[None], mask

    def _readout(self, x: torch.Tensor, mask: torch.Tensor) -> PMIOutput:
        last = mask.long().cumsum(1).argmax(1)  # index of the last real token
        readout = self.readout_point(
            self.final_norm(x[torch.arange(x.shape[0], device=x.device), last])
        )
        return PMIOutput(logits=self.logits_point(self.head(readout)), readout=readout)


class PMITransformer(_Classifier):
    """Transformer whose self-attention is the PMI memory step; one step per layer."""

    def __init__(self, config: PMIConfig) -> None:
        if config.architecture != "pmi":
            raise DataError("PMITransformer needs architecture='pmi'")
        super().__init__(config)
        n, d, c = config.n_slots, config.d_model, config.n_segments
        wm0 = torch.zeros(n, d)
        wm0[:, : min(n, d)] = torch.eye(n)[:, : min(n, d)]  # identity-padded, as in RMC
        self.wm_init = nn.Parameter(wm0)
        self.ltm_init = nn.Parameter(torch.randn(c, n, d))
        self.init_points = _points(("wm", "ltm"))
        names = (*PMI_STEP_SITES, *BLOCK_SITES)
        self.points = nn.ModuleList([_points(names) for _ in range(config.n_steps)])

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> PMIOutput:
        x, mask = self._embed(input_ids, attention_mask)
        b = x.shape[0]
        wm = self.init_points["wm"](self.wm_init.expand(b, -1, -1))
        ltm = self.init_points["ltm"](self.ltm_init.expand(b, -1, -1, -1))
        for t in range(self.config.n_steps):
            block, p = self.block(t), self.step_points(t)
            x = p["resid_pre"](x)
            mixed, wm, ltm = block.mixer(block.mix_norm(x), mask, wm, ltm, p)
            x = x + p[_key("attn.out")](mixed)
            x = x + p[_key("mlp.out")](block.mlp(p[_key("mlp.in")](block.mlp_norm(x))))
            x = p["resid_post"](x)
        return self._readout(x, mask)


class ControlTransformer(_Classifier):
    """The same-size standard Transformer: self-attention instead of the memory step."""

    def __init__(self, config: PMIConfig) -> None:
        if config.architecture != "transformer":
            raise DataError("ControlTransformer needs architecture='transformer'")
        super().__init__(config)
        names = (*BLOCK_SITES, "attn.pattern")
        self.points = nn.ModuleList([_points(names) for _ in range(config.n_steps)])

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> PMIOutput:
        x, mask = self._embed(input_ids, attention_mask)
        for t in range(self.config.n_steps):
            block, p = self.block(t), self.step_points(t)
            x = p["resid_pre"](x)
            mixed = block.mixer(block.mix_norm(x), mask, p[_key("attn.pattern")])
            x = x + p[_key("attn.out")](mixed)
            x = x + p[_key("mlp.out")](block.mlp(p[_key("mlp.in")](block.mlp_norm(x))))
            x = p["resid_post"](x)
        return self._readout(x, mask)


def build_model(config: PMIConfig) -> PMITransformer | ControlTransformer:
    """The model class ``config.architecture`` names."""
    cls = PMITransformer if config.architecture == "pmi" else ControlTransformer
    return cls(config)


# -- sites -------------------------------------------------------------------------------------
def site_map(config: PMIConfig) -> dict[str, Site]:
    """Site name -> hook-point module, for every step (each module runs once per forward)."""
    sites: dict[str, Site] = {}
    if config.architecture == "pmi":
        for name in ("wm", "ltm"):
            sites[f"memory.{name}_init"] = Site(f"memory.{name}_init", f"init_points.{name}")
    for t in range(config.n_steps):
        if config.architecture == "pmi":
            for name in PMI_STEP_SITES:
                sites[f"steps.{t}.{name}"] = Site(f"steps.{t}.{name}", f"points.{t}.{_key(name)}")
        kinds = (*BLOCK_SITES, "attn.pattern") if config.architecture != "pmi" else BLOCK_SITES
        for kind in kinds:
            sites[f"blocks.{t}.{kind}"] = Site(f"blocks.{t}.{kind}", f"points.{t}.{_key(kind)}")
    sites["readout"] = Site("readout", "readout_point")
    sites["logits"] = Site("logits", "logits_point")
    return sites


# -- saving and loading ------------------------------------------------------------------------
WEIGHTS_FILE = "model.safetensors"


def save_model(model: _Classifier, folder: str | Path, words: list[str] | None = None) -> Path:
    """Write config.json (``model_type`` "pmi"), fp16 safetensors and, given ``words``, a
    whitespace word-level tokenizer whose ids must match the embedding (see ``tokenizer_words``).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    if words is not None:
        from workbench.models.scratch import save_word_tokenizer

        save_word_tokenizer(folder, words, bert_style=False)
    return folder


def load(
    spec: str,
    folder: Path,
    config: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device = CPU,
) -> LoadedModel:
    """Load a PMI-Transformer or its control from ``folder`` as a ``LoadedModel`` (family pmi),
    on one device."""
    from safetensors.torch import load_file

    cfg = PMIConfig.from_dict(config)
    model = build_model(cfg)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelNotFoundError(f"{folder} has no {WEIGHTS_FILE}")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelNotFoundError(
            f"{folder}'s weights do not fit its config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); rebuild it with `workbench zoo build`"
        )
    model = model.to(device=device, dtype=dtype).eval()
    processor = None
    if (folder / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        # Not AutoTokenizer: it would look up model_type "pmi" among the Hugging Face models.
        processor = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    return LoadedModel(
        spec=spec,
        family="pmi",
        model=model,
        processor=processor,
        sites=site_map(cfg),
        n_layers=cfg.n_steps,
        d_model=cfg.d_model,
        model_type="pmi",
        source=folder,
        head_labels=tuple(cfg.answer_labels) or None,
    )

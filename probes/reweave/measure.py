"""Forward passes the probe measures with: scoring, attention patterns, calibration, the fit.

Each function runs the model base (``op=None``) or reweaved, inside ``reweave`` or ``hooks``,
so no hook survives it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.reweave import compute
from probes.reweave.data import Vocabulary
from probes.reweave.operator import Reweaving, reweave
from workbench.capture import hooks
from workbench.data.recall import RecallPrompt
from workbench.errors import DataError
from workbench.models import LoadedModel


def encode(model: LoadedModel, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    batch = model.encode_texts(list(texts))
    limit = model.context_length
    if limit is not None and batch["input_ids"].shape[1] > limit:
        raise DataError(
            f"a prompt is {batch['input_ids'].shape[1]} tokens but {model.spec} reads at most "
            f"{limit}; ask for shorter lengths or pass shorter texts"
        )
    return batch


def output_tensor(out: object) -> torch.Tensor:
    """Logits of a causal LM, or the last hidden states of an encoder."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if value is not None:
            return value
    raise DataError(f"cannot find logits or hidden states in a {type(out).__name__}")


def forward(
    model: LoadedModel,
    batch: dict[str, torch.Tensor],
    op: Reweaving | None = None,
    *,
    gate: float | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """One forward pass, base or reweaved; logits (causal LMs) or last hidden states."""
    if op is None:
        return output_tensor(model.forward(batch, grad=grad))
    with reweave(model, op, gate=gate, attention_mask=batch.get("attention_mask")):
        return output_tensor(model.forward(batch, grad=grad))


def last_logits(
    model: LoadedModel,
    batch: dict[str, torch.Tensor],
    op: Reweaving | None = None,
    *,
    gate: float | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """(batch, vocab) logits at each row's last real token.

    The Hugging Face backend projects only those positions onto the vocabulary
    (``logits_to_keep``), which saves most of a large vocabulary's cost.
    """
    last = compute.last_positions(batch["attention_mask"])
    if model.backend != "hf":
        logits = forward(model, batch, op, gate=gate, grad=grad)
        return compute.final_logits(logits, batch["attention_mask"])
    keep = torch.unique(last)
    logits = forward(model, {**batch, "logits_to_keep": keep}, op, gate=gate, grad=grad)
    column = torch.searchsorted(keep, last).to(logits.device)
    return logits[torch.arange(len(last), device=logits.device), column]


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def next_token_logits(
    model: LoadedModel,
    prompts: Sequence[RecallPrompt],
    op: Reweaving | None = None,
    *,
    gate: float | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """(n, vocab) logits of the token after each prompt."""
    out = []
    for chunk in _batches(prompts, batch_size):
        batch = encode(model, [p.text for p in chunk])
        out.append(last_logits(model, batch, op, gate=gate).float().cpu())
    return torch.cat(out)


def correct(logits: torch.Tensor, vocab: Vocabulary, prompts: Sequence[RecallPrompt]) -> np.ndarray:
    """Whether the most likely next token is each prompt's answer."""
    answers = vocab.answer_ids([p.answer for p in prompts])
    return (logits.argmax(-1).cpu() == answers).numpy()


@torch.no_grad()
def final_states(
    model: LoadedModel,
    texts: Sequence[str],
    op: Reweaving | None = None,
    *,
    gate: float | None = None,
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """Per text, the model's output at its real tokens (seq, width)."""
    out = []
    for chunk in _batches(texts, batch_size):
        batch = encode(model, chunk)
        states = forward(model, batch, op, gate=gate)
        for row, mask in zip(states, batch["attention_mask"], strict=True):
            out.append(row[mask.bool()].float())
    return out


@torch.no_grad()
def attention_patterns(
    model: LoadedModel,
    batch: dict[str, torch.Tensor],
    op: Reweaving | None = None,
    *,
    gate: float | None = None,
) -> list[torch.Tensor]:
    """Every layer's attention pattern (batch, heads, seq, seq) in one forward pass."""
    recorded: dict[int, torch.Tensor] = {}

    def keeper(layer: int):
        def fn(pattern: torch.Tensor) -> None:
            recorded[layer] = pattern.detach().float().clone()

        return fn

    sites = {f"blocks.{i}.attn.pattern": keeper(i) for i in range(model.n_layers)}
    if op is None:
        with hooks(model, sites):
            model(**batch)
    else:
        with reweave(
            model, op, gate=gate, attention_mask=batch.get("attention_mask"), observe=sites
        ):
            model(**batch)
    missing = [i for i in range(model.n_layers) if i not in recorded]
    if missing:
        raise DataError(f"{model.spec} gave no attention patterns for layers {missing}")
    return [recorded[i] for i in range(model.n_layers)]


def attention_statistics(
    model: LoadedModel,
    texts: Sequence[str],
    op: Reweaving | None = None,
    *,
    batch_size: int = 16,
) -> np.ndarray:
    """(3, layers, heads): mean entropy, sink mass and distance over the texts' queries."""
    stats: compute.AttentionStats | None = None
    for chunk in _batches(texts, batch_size):
        batch = encode(model, chunk)
        patterns = attention_patterns(model, batch, op)
        if stats is None:
            stats = compute.AttentionStats(model.n_layers, patterns[0].shape[1])
        for layer, pattern in enumerate(patterns):
            stats.add(layer, pattern, batch["attention_mask"])
    assert stats is not None
    return stats.means()


@torch.no_grad()
def destination_scale(model: LoadedModel, texts: Sequence[str], target: int) -> float:
    """Typical root-mean-square size of the residual stream entering block ``target``."""
    sizes = []

    def fn(h: torch.Tensor) -> None:
        sizes.append(h.float().pow(2).mean(-1).sqrt()[mask.bool()])

    for chunk in _batches(texts, 16):
        batch = encode(model, chunk)
        mask = batch["attention_mask"]
        with hooks(model, {f"blocks.{target}.resid_pre": fn}):
            model(**batch)
    return float(torch.cat(sizes).median())


def fit(
    model: LoadedModel,
    op: Reweaving,
    prompts: Sequence[Sequence[RecallPrompt]],
    vocab: Vocabulary,
    *,
    steps: int,
    lr: float,
    seed: int = 0,
    patience: int = 0,
) -> list[float]:
    """Adam on the operator's parameters (never the model's) to predict each prompt's answer.

    ``prompts`` are groups of equal length; each step takes one group at random. Gradients are
    taken with ``torch.autograd.grad`` for the operator alone, so the model is not touched, and
    only the last position of each prompt is projected onto the vocabulary. With ``patience``,
    the fit stops once the mean loss of the last ``patience`` steps has not improved on its best
    by 1% for ``patience`` steps. Returns the loss per step taken.
    """
    params = [p for name, p in op.named_parameters() if _learned(op, name)]
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    encoded = [
        (encode(model, [p.text for p in group]), vocab.answer_ids([p.answer for p in group]))
        for group in prompts
    ]
    best, since_best = float("inf"), 0
    bar = tqdm(range(steps), desc="fit reweaving", unit="step", leave=False)
    for _ in bar:
        batch, answers = encoded[int(rng.integers(len(encoded)))]
        last = last_logits(model, batch, op, grad=True)
        loss = torch.nn.functional.cross_entropy(last.float(), answers.to(last.device))
        grads = torch.autograd.grad(loss, params)
        optimizer.zero_grad()
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
        losses.append(float(loss.detach()))
        if patience and len(losses) >= patience:
            recent = float(np.mean(losses[-patience:]))
            if recent < 0.99 * best:
                best, since_best = recent, 0
            else:
                since_best += 1
            bar.set_postfix(loss=f"{recent:.3f}", refresh=False)
            if since_best >= patience:
                break
    bar.close()
    for p in op.parameters():
        p.grad = None
    return losses


def _learned(op: Reweaving, name: str) -> bool:
    if name == "gate_logit":
        return op.gate_kind != "fixed"
    if name in ("w_query", "w_key"):
        return op.read == "causal"
    return True

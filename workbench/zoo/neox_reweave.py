"""Recipes for ``neox-reweave`` and ``neox-reweave-control``: one LM trained with the reweaving
operator in the loop, and the same LM trained without it.

Both are ``neox-recall``'s architecture, vocabulary and training windows (``neox_recall``),
with one seed, one data stream and one (shorter) budget, so the only difference is the operator.
In ``neox-reweave`` the operator of ``probes.reweave.operator`` sits in every training forward:
the states after blocks ``SOURCES`` are layer-normed, mixed with learned weights ``softmax(θ)``,
scaled (learned per feature) and woven into the stream before block ``TARGET`` through a learned
scalar gate that starts at ``GATE_INIT``. Its parameters are trained with the model's, by the
same optimiser; they are saved beside the model (``reweaving.safetensors``) and are part of it:
the probe loads them with the model (``probes.reweave.trained``).

The model is created before the operator and the operator draws no random numbers, so both
recipes start from identical weights and see identical batches; with the gate at 0 the
reweaved training reproduces the control's exactly (a test checks this).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from workbench.models.scratch import save_word_tokenizer
from workbench.zoo import neox_recall
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import EVAL_SEED_OFFSET, RecipeRun

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from probes.reweave.operator import Reweaving
    from workbench.models import LoadedModel

NAME = "neox-reweave"
CONTROL = "neox-reweave-control"
ENTRIES = (
    ZooEntry(
        name=NAME,
        family="causal-lm",
        description=(
            "neox-recall's 4-block decoder trained with reweaving in the loop (blocks 0, 1 "
            "woven in before block 3; gate and weights learned), on a shorter budget"
        ),
        recipe=__name__,
        seed=0,
        builder="build_reweaved",
    ),
    ZooEntry(
        name=CONTROL,
        family="causal-lm",
        description="the same decoder, data, seed and budget as neox-reweave, without reweaving",
        recipe=__name__,
        seed=0,
        builder="build_control",
    ),
)
SOURCES = (0, 1)
TARGET = 3
"""The probe's default layers on a 4-block model: the lower half, woven in at three quarters."""
GATE_INIT = 0.1
"""Where the learned gate starts (the probe's post-hoc fit starts there too)."""
READ = "none"
"""Each position gets its own reconstruction: the same operator the probe applies post hoc."""
PHASES = ((1200, 64, 32), (500, 256, 8))
"""(steps, window length, windows per batch): neox-recall's schedule, shortened to fit a few
CPU minutes per model."""
OPERATOR_FILE = "reweaving.safetensors"


class WithReweaving(nn.Module):
    """The language model and its reweaving as one module: one parameter list for the
    optimiser, and a forward that runs the model (the operator acts through hooks)."""

    def __init__(self, lm: nn.Module, op: Reweaving | None) -> None:
        super().__init__()
        self.lm = lm
        self.op = op

    def forward(self, **batch: Any) -> Any:
        return self.lm(**batch)


def as_loaded(lm: PreTrainedModel, words: list[str], folder: Path) -> LoadedModel:
    """``lm`` with the workbench's named sites, by saving it (and a tokenizer) and loading it
    back: the hooks of the operator need the sites."""
    from workbench.models import load_model

    lm.save_pretrained(folder)
    save_word_tokenizer(folder, words, bert_style=False)
    return load_model(folder)


def make_operator(d_model: int, gate: float = GATE_INIT) -> Reweaving:
    """The trained-in operator at initialisation; ``gate=0`` closes it exactly (logit -inf)."""
    from probes.reweave.operator import Reweaving

    op = Reweaving(SOURCES, TARGET, d_model, gate=gate, gate_kind="scalar", read=READ)
    if gate == 0:
        with torch.no_grad():
            op.gate_logit.fill_(-torch.inf)  # sigmoid gives 0 exactly, and a zero gradient
    return op


def train(
    seed: int,
    work_dir: Path,
    *,
    reweaving: bool,
    gate: float = GATE_INIT,
    phases: tuple[tuple[int, int, int], ...] = PHASES,
    on_step: Any = None,
) -> tuple[LoadedModel, Reweaving | None, np.ndarray, float]:
    """Train one of the pair; returns the model, its operator (or None), token counts, loss.

    ``work_dir`` holds the model's files while it trains (the loader reads them once).
    """
    from transformers import GPTNeoXForCausalLM

    from probes.reweave.operator import reweave

    words, weights = neox_recall.vocabulary(seed)
    tokens = neox_recall.token_list(words)
    index = {t: i for i, t in enumerate(tokens)}
    torch.manual_seed(seed)
    lm = GPTNeoXForCausalLM(neox_recall.model_config(len(tokens)))
    loaded = as_loaded(lm, words, work_dir)
    op = make_operator(loaded.d_model, gate) if reweaving else None
    both = WithReweaving(loaded.model, op)
    if op is None:
        counts, loss = neox_recall._train(both, words, weights, index, seed, phases, on_step)
    else:
        with reweave(loaded, op):
            counts, loss = neox_recall._train(both, words, weights, index, seed, phases, on_step)
        op.eval()
    return loaded, op, counts, loss


def build_reweaved(out_dir: Path, seed: int, **kwargs: Any) -> dict:
    return _build(NAME, out_dir, seed, reweaving=True, **kwargs)


def build_control(out_dir: Path, seed: int, **kwargs: Any) -> dict:
    return _build(CONTROL, out_dir, seed, reweaving=False, **kwargs)


def _build(
    name: str,
    out_dir: Path,
    seed: int,
    *,
    reweaving: bool,
    phases: tuple[tuple[int, int, int], ...] = PHASES,
) -> dict:
    """Train, evaluate recall on held-out prompts (with the operator in), save atomically."""
    import tempfile

    from probes.reweave.operator import reweave

    run = RecipeRun(name, __name__, seed, threads=neox_recall.MAX_THREADS)
    words, weights = neox_recall.vocabulary(seed)
    tokens = neox_recall.token_list(words)
    index = {t: i for i, t in enumerate(tokens)}
    with run.training(), tempfile.TemporaryDirectory() as work:
        loaded, op, counts, train_loss = train(seed, Path(work), reweaving=reweaving, phases=phases)
        model = cast("PreTrainedModel", loaded.model).half().float()  # the fp16 weights saved
        eval_seed = seed + EVAL_SEED_OFFSET
        if op is None:
            metrics = neox_recall.evaluate(model, words, weights, index, eval_seed)
        else:
            with reweave(loaded, op):
                metrics = neox_recall.evaluate(model, words, weights, index, eval_seed)
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    fields: dict[str, Any] = {
        "architecture": "neox-recall's (workbench.zoo.neox_recall.model_config)",
        "words": f"workbench.data.recall.pseudo_words({neox_recall.N_WORDS}, seed={seed})",
        "episode_mix": neox_recall.EPISODE_MIX,
        "phases": [
            {"steps": n, "window": length, "windows_per_batch": b} for n, length, b in phases
        ],
        "tokens_seen": int(counts.sum()),
        "answer_weight": neox_recall.ANSWER_WEIGHT,
        "optimizer": (
            f"AdamW lr={neox_recall.LR} weight_decay={neox_recall.WEIGHT_DECAY} over the model's "
            f"and the operator's parameters, warmup {neox_recall.WARMUP} + cosine"
        ),
        "counts_file": neox_recall.COUNTS_FILE,
        "eval": f"{neox_recall.EVAL_PROMPTS} prompts per task and length, seed {eval_seed}",
        "pair": {"reweaved": NAME, "control": CONTROL},
    }
    op_bytes = b""
    if op is not None:
        from safetensors.torch import save

        metrics["parameters"] += sum(p.numel() for p in op.parameters())
        metrics["operator"] = op.describe()
        op_bytes = save({k: v.detach().float().contiguous() for k, v in op.state_dict().items()})
        fields["reweaving"] = {
            "file": OPERATOR_FILE,
            "sha256": hashlib.sha256(op_bytes).hexdigest(),
            "sources": list(op.sources),
            "target": op.target,
            "gate_kind": op.gate_kind,
            "read": op.read,
            "gate_init": GATE_INIT,
            "gate": round(float(op.gate().detach().mean()), 4),
            "weights": [round(w, 4) for w in op.weights().detach().tolist()],
        }

    def write(folder: Path) -> None:
        neox_recall._write(model.half(), tokens, words, counts, folder)
        if op_bytes:
            (folder / OPERATOR_FILE).write_bytes(op_bytes)

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)

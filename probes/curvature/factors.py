"""K-FAC factors A = E[a aᵀ] and G = E[g gᵀ] for named weight matrices, streamed over a corpus.

For every chosen weight, A is accumulated from its ``NAME.input`` site and G from the gradient
of the loss at its ``NAME.output`` site, both uncentred and divided by the number of token
positions. Labels are sampled from the model's own predictive distribution by default (the true
Fisher; ``labels="gold"`` uses the data's labels, the "empirical Fisher"). The loss is summed
over positions, so each position's gradient is that of its own token loss; a causal LM's last
position (it has no next token) and padding contribute nothing. Batch products run in float32
and are added into float64 accumulators.

Only the gradients at the chosen outputs are computed (``torch.autograd.grad``); parameter
``.grad`` fields are never touched.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from probes.curvature.compute import Eigenbasis, eigendecompose
from workbench.capture import Inputs, encode_inputs, hooks
from workbench.errors import DataError, FamilyError, SiteError, WorkbenchError
from workbench.models import LoadedModel

LABEL_MODES = ("sampled", "gold")
FACTORS_FILE = "factors.safetensors"
META_FILE = "factors.json"


@dataclass
class KFACFactors:
    """A and G per weight name (float64), with how they were collected."""

    a: dict[str, torch.Tensor]
    g: dict[str, torch.Tensor]
    n_positions: int
    labels: str
    model_spec: str = ""
    model_digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.a)

    def eigenbases(self, names: Sequence[str] | None = None) -> dict[str, Eigenbasis]:
        """Eigen-decomposition of each weight's factors (float64, sorted descending)."""
        names = self.names if names is None else list(names)
        missing = [n for n in names if n not in self.a]
        if missing:
            raise DataError(f"no factors for {missing}; collected: {', '.join(self.names)}")
        return {n: eigendecompose(self.a[n], self.g[n]) for n in names}

    def check_model(self, model: LoadedModel) -> None:
        """Refuse factors whose shapes do not fit ``model``'s weights."""
        for name in self.names:
            out_dim, in_dim = model.weight(name).shape
            if self.a[name].shape != (in_dim, in_dim) or self.g[name].shape != (out_dim, out_dim):
                raise DataError(
                    f"factors for {name} have A {tuple(self.a[name].shape)}, "
                    f"G {tuple(self.g[name].shape)} but {model.spec}'s {name} is "
                    f"({out_dim}, {in_dim}); collect factors on this model"
                )

    # -- files ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``factors.safetensors`` and ``factors.json`` into ``folder`` atomically."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{n}.A": t.contiguous() for n, t in self.a.items()}
        tensors |= {f"{n}.G": t.contiguous() for n, t in self.g.items()}
        meta = {
            "names": self.names,
            "n_positions": self.n_positions,
            "labels": self.labels,
            "model_spec": self.model_spec,
            "model_digest": self.model_digest,
            "extra": self.extra,
        }
        token = secrets.token_hex(4)
        tmp_tensors = folder / f".{FACTORS_FILE}.{token}"
        tmp_meta = folder / f".{META_FILE}.{token}"
        try:
            save_file(tensors, str(tmp_tensors))
            tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp_tensors, folder / FACTORS_FILE)
            os.replace(tmp_meta, folder / META_FILE)
        finally:
            tmp_tensors.unlink(missing_ok=True)
            tmp_meta.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> KFACFactors:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / FACTORS_FILE).is_file() or not (folder / META_FILE).is_file():
            raise WorkbenchError(
                f"{folder} holds no saved factors (expected {FACTORS_FILE} and {META_FILE})"
            )
        meta = json.loads((folder / META_FILE).read_text())
        tensors = load_file(str(folder / FACTORS_FILE))
        return cls(
            a={n: tensors[f"{n}.A"] for n in meta["names"]},
            g={n: tensors[f"{n}.G"] for n in meta["names"]},
            n_positions=meta["n_positions"],
            labels=meta["labels"],
            model_spec=meta["model_spec"],
            model_digest=meta["model_digest"],
            extra=meta.get("extra", {}),
        )

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{n} (G {self.g[n].shape[0]}, A {self.a[n].shape[0]})" for n in self.names[:4]
        )
        more = f", ... {len(self.names) - 4} more" if len(self.names) > 4 else ""
        return (
            f"KFACFactors({len(self.names)} weights over {self.n_positions} positions, "
            f"{self.labels} labels: {shapes}{more})"
        )


def resolve_weights(model: LoadedModel, weights: str | Sequence[str]) -> list[str]:
    """Weight names from a regular expression over ``model.weight_names()`` or an explicit list."""
    names = model.weight_names(weights) if isinstance(weights, str) else list(weights)
    if not names:
        raise SiteError(
            f"no weight of {model.spec} matches {weights!r}; names look like "
            f"{', '.join(model.weight_names()[:3]) or '(the model has no named weights)'}"
        )
    for name in names:
        model.weight(name)  # unknown names fail here with a suggestion
        if model.weights[name].rows is not None:
            raise SiteError(
                f"{name} is a slice of a fused projection; K-FAC needs a whole matrix "
                f"(use {name.rsplit('.', 1)[0]}.W_QKV)"
            )
    return names


def collect_factors(
    model: LoadedModel,
    inputs: Inputs,
    weights: str | Sequence[str] = r"mlp\.W_",
    *,
    labels: str = "sampled",
    gold: torch.Tensor | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> KFACFactors:
    """Stream ``inputs`` through ``model`` and accumulate A and G for each weight.

    ``inputs`` are texts, images or a dict of model tensors (as for ``capture``). A causal LM's
    gold labels are its next tokens; a ViT classifier's come from ``gold`` (class ids, or
    multi-hot rows for a multi-label head). Deterministic under ``seed``.
    """
    if labels not in LABEL_MODES:
        raise DataError(f"labels must be one of {', '.join(LABEL_MODES)}; got {labels!r}")
    if model.family not in ("causal-lm", "vit"):
        raise FamilyError(
            f"K-FAC factors need a causal LM or a ViT classifier; {model.spec} is a "
            f"{model.family} model"
        )
    if model.backend != "hf":
        raise FamilyError("K-FAC factors need the Hugging Face backend (load_model default)")
    if batch_size < 1:
        raise DataError("batch_size must be at least 1")
    names = resolve_weights(model, weights)
    started = time.perf_counter()
    batch = encode_inputs(model, inputs)
    n = next(iter(batch.values())).shape[0]
    if model.family == "vit":
        if model.head_labels is None:
            raise FamilyError(
                f"{model.spec} has no classification head, so there is no loss to take "
                "gradients of; load a ...ForImageClassification model"
            )
        if labels == "gold" and (gold is None or len(gold) != n):
            raise DataError("gold labels for a ViT need `gold` with one label row per image")

    a_sum = {}
    g_sum = {}
    for name in names:
        out_dim, in_dim = model.weight(name).shape
        a_sum[name] = torch.zeros(in_dim, in_dim, dtype=torch.float64)
        g_sum[name] = torch.zeros(out_dim, out_dim, dtype=torch.float64)

    state: dict[str, Any] = {}
    outputs: dict[str, torch.Tensor] = {}

    def on_input(name: str):
        def observe(value: torch.Tensor) -> None:
            x = _rows(value.detach(), state["valid"]).float()
            a_sum[name] += (x.T @ x).to(torch.float64)

        return observe

    def on_output(name: str):
        def observe(value: torch.Tensor) -> None:
            outputs[name] = value

        return observe

    fns = {f"{n}.input": on_input(n) for n in names}
    fns |= {f"{n}.output": on_output(n) for n in names}
    generator = torch.Generator().manual_seed(seed)
    params = _target_parameters(model, names)
    flags = [p.requires_grad for p in params]
    n_positions = 0
    bar = tqdm(
        total=n, desc=f"K-FAC factors ({len(names)} weights)", unit="seq", disable=not progress
    )
    try:
        for p in params:
            p.requires_grad_(True)  # the graph must reach the chosen layers
        with hooks(model, fns), bar, torch.enable_grad():
            for start in range(0, n, batch_size):
                part = {k: v[start : start + batch_size] for k, v in batch.items()}
                state["valid"] = _valid_positions(model, part)
                outputs.clear()
                out = model.forward(part, grad=True)
                part_gold = None if gold is None else gold[start : start + batch_size]
                loss = _loss(model, out, part, state["valid"], labels, part_gold, generator)
                missing = [nm for nm in names if nm not in outputs]
                if missing:
                    raise DataError(f"weights {missing} were not used by the forward pass")
                grads = torch.autograd.grad(loss, [outputs[nm] for nm in names])
                for name, grad in zip(names, grads, strict=True):
                    gv = _rows(grad, state["valid"]).float()
                    g_sum[name] += (gv.T @ gv).to(torch.float64)
                n_positions += _count(outputs[names[0]], state["valid"])
                bar.update(len(next(iter(part.values()))))
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        outputs.clear()
    if n_positions == 0:
        raise DataError("no token positions contributed (every sequence shorter than 2 tokens?)")
    return KFACFactors(
        a={k: v / n_positions for k, v in a_sum.items()},
        g={k: v / n_positions for k, v in g_sum.items()},
        n_positions=n_positions,
        labels=labels,
        model_spec=model.spec,
        model_digest=model.digest(),
        extra={"seed": seed, "sequences": n, "seconds": round(time.perf_counter() - started, 2)},
    )


def _target_parameters(model: LoadedModel, names: list[str]) -> list[torch.nn.Parameter]:
    """Each parameter holding a chosen weight, once (a fused matrix holds several names)."""
    return list({id(p): p for p in (model.parameter(n) for n in names)}.values())


def _rows(value: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(positions, features): the valid positions, or every position when ``valid`` is None.

    Unpadded text (every position valid but the last) takes a slice, not a boolean gather.
    """
    if valid is None:
        return value.reshape(-1, value.shape[-1])
    if valid[:, :-1].all() and not valid[:, -1].any():
        return value[:, :-1].reshape(-1, value.shape[-1])
    return value[valid]


def _count(value: torch.Tensor, valid: torch.Tensor | None) -> int:
    return value.shape[:-1].numel() if valid is None else int(valid.sum())


def _valid_positions(model: LoadedModel, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """(B, T) bool: positions whose loss counts. Causal LM: a real token with a real successor.

    None for a ViT: every token of every image counts.
    """
    if model.family == "causal-lm":
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
        valid = torch.zeros_like(mask)
        valid[:, :-1] = mask[:, :-1] & mask[:, 1:]
        return valid
    return None


def _loss(
    model: LoadedModel,
    out: Any,
    batch: Mapping[str, torch.Tensor],
    valid: torch.Tensor | None,
    labels: str,
    gold: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Summed loss whose gradient at each position is that position's own token loss gradient."""
    logits = out.logits.float()
    if model.family == "causal-lm":
        logits = _rows(logits, valid)
        if labels == "gold":
            target = torch.zeros_like(batch["input_ids"])
            target[:, :-1] = batch["input_ids"][:, 1:]
            target = _rows(target[..., None], valid)[:, 0]
        else:
            with torch.no_grad():
                probs = torch.softmax(logits, dim=-1)
                target = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
    if labels == "gold":
        if gold is None:
            raise DataError("gold labels for a ViT need `gold` with one label row per image")
        target = gold.float() if multi_label else gold.long()
    elif multi_label:
        with torch.no_grad():
            target = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    else:
        with torch.no_grad():
            target = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
    if multi_label:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    return torch.nn.functional.cross_entropy(logits, target, reduction="sum")

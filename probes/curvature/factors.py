"""K-FAC factors A = E[a aᵀ] and G = E[g gᵀ] for named weight matrices, streamed over a corpus.

For every chosen weight, A is accumulated from its ``NAME.input`` site and G from the gradient
of the loss at its ``NAME.output`` site, both uncentred and divided by the number of token
positions. Labels are sampled from the model's own predictive distribution by default (the true
Fisher; ``labels="gold"`` uses the data's labels, the "empirical Fisher"). The loss is summed
over positions, so each position's gradient is that of its own token loss; a causal LM's last
position (it has no next token) and padding contribute nothing.

The forward runs in the model's dtype; each batch's products are formed in float32 (at least)
and added into float64 sums on the model's device (float32 where the device has no float64,
as on Apple's mps). Only the gradients at the chosen outputs are computed
(``torch.autograd.grad``), so no parameter gradient is formed and parameter ``.grad`` fields are
never touched; the backward pass stops at the earliest chosen layer.

``factor_sums`` returns the unnormalised sums and the count of positions for one stream of
batches: sums and counts add across shards, so data-parallel collection needs one all-reduce
before ``FactorSums.factors()`` divides. ``collect_factors`` is the usual entry point: it takes
texts, images, model tensors or a stream of batches, and can take the layers a few at a time
(``layers_per_pass``) to bound the memory of the sums, as the reference implementation does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.curvature.compute import Eigenbasis, eigendecompose
from workbench.capture import Inputs, encode_inputs, hooks
from workbench.checkpoint import checkpointed_blocks
from workbench.data.corpus import SEQUENCE_KEY
from workbench.errors import DataError, FamilyError, SiteError, one_line
from workbench.models import LoadedModel
from workbench.staging import sibling_name

LABEL_MODES = ("sampled", "gold")
FILE_FORMAT = "workbench-kfac-factors-1"
PROVENANCE_KEY = "provenance"
"""Key of the provenance JSON in a factors file's safetensors header."""
GOLD_KEY = "gold_labels"
"""A batch of a stream may carry its gold labels (ViT classifiers) under this key."""

Batch = Mapping[str, torch.Tensor]


def in_process_group() -> bool:
    """Whether this process is one of two or more in an initialised ``torch.distributed`` group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64, or float32 on devices without float64 (Apple's mps)."""
    return torch.float32 if device.type == "mps" else torch.float64


# -- sums and factors --------------------------------------------------------------------------
@dataclass
class FactorSums:
    """Unnormalised K-FAC sums per weight, Σ a aᵀ and Σ g gᵀ, over ``count`` token positions.

    Sums of several shards add (``merge``; under torchrun, one ``all_reduce`` of every tensor
    and of the count); ``factors()`` divides once at the end.
    """

    a: dict[str, torch.Tensor]
    g: dict[str, torch.Tensor]
    count: int

    def merge(self, other: FactorSums) -> FactorSums:
        """The sums of both shards (same weights), as one collection over all their positions."""
        if set(self.a) != set(other.a):
            raise DataError("cannot merge factor sums of different weights")
        return FactorSums(
            a={n: self.a[n] + other.a[n].to(self.a[n].device) for n in self.a},
            g={n: self.g[n] + other.g[n].to(self.g[n].device) for n in self.g},
            count=self.count + other.count,
        )

    def all_reduce(self) -> FactorSums:
        """Add the sums and counts of every process of the current ``torch.distributed`` group
        in place (one all-reduce per tensor, at the end of a collection); nothing to do without
        a group of two or more. Gloo on CPU, NCCL on CUDA: the tensors stay where they are."""
        if not in_process_group():
            return self
        import torch.distributed as dist

        for tensor in (*self.a.values(), *self.g.values()):
            dist.all_reduce(tensor)
        device = next(iter(self.a.values())).device if self.a else torch.device("cpu")
        count = torch.tensor([self.count], dtype=torch.int64, device=device)
        dist.all_reduce(count)
        self.count = int(count.item())
        return self

    def factors(
        self, *, in_place: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(A, G) per weight: the sums divided by the number of positions (``in_place`` divides
        the sums themselves, which saves a copy of every factor when the sums are not needed
        again)."""
        if self.count == 0:
            raise DataError(
                "no token positions contributed (every sequence shorter than 2 tokens?)"
            )
        if in_place:
            return (
                {n: t.div_(self.count) for n, t in self.a.items()},
                {n: t.div_(self.count) for n, t in self.g.items()},
            )
        return (
            {n: t / self.count for n, t in self.a.items()},
            {n: t / self.count for n, t in self.g.items()},
        )


@dataclass
class KFACFactors:
    """A and G per weight name (float64 where the device has it), with how they were collected."""

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

    def eigenbases(
        self,
        names: Sequence[str] | None = None,
        *,
        device: torch.device | str | None = None,
        progress: bool = True,
        release: bool = False,
    ) -> dict[str, Eigenbasis]:
        """Eigen-decomposition of each weight's factors (sorted descending), on ``device``
        (where the factors are, by default). ``release`` drops each weight's factors once
        decomposed, so the factors and their bases are never all in memory at once."""
        names = self.names if names is None else list(names)
        missing = [n for n in names if n not in self.a]
        if missing:
            raise DataError(f"no factors for {missing}; collected: {', '.join(self.names)}")
        out = {}
        for n in tqdm(names, desc="eigendecomposition", unit="weight", disable=not progress):
            a, g = (self.a.pop(n), self.g.pop(n)) if release else (self.a[n], self.g[n])
            if device is not None:
                a, g = a.to(device), g.to(device)
            out[n] = eigendecompose(a, g)
            del a, g
        return out

    def check_model(self, model: LoadedModel) -> None:
        """Refuse factors whose shapes do not fit ``model``'s weights."""
        for name in self.names:
            out_dim, in_dim = weight_shape(model, name)
            if self.a[name].shape != (in_dim, in_dim) or self.g[name].shape != (out_dim, out_dim):
                raise DataError(
                    f"factors for {name} have A {tuple(self.a[name].shape)}, "
                    f"G {tuple(self.g[name].shape)} but {model.spec}'s {name} is "
                    f"({out_dim}, {in_dim}); collect factors on this model"
                )

    # -- files ---------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """What a factors file records beside the tensors: the model (spec and weights digest),
        the weights, the positions counted and how they were collected (corpus, seed, ...)."""
        return {
            "format": FILE_FORMAT,
            "names": self.names,
            "n_positions": self.n_positions,
            "labels": self.labels,
            "model_spec": self.model_spec,
            "model_digest": self.model_digest,
            "extra": self.extra,
        }

    def save(self, path: str | Path) -> Path:
        """Write the factors to ``path`` (a ``.safetensors`` file; its header holds the
        provenance) and the provenance to ``path`` with suffix ``.json``, for people to read.
        Each file is written under a temporary name and renamed into place."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise DataError(f"a factors file ends in .safetensors; got {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"{n}.A": t.detach().cpu().contiguous() for n, t in self.a.items()}
        tensors |= {f"{n}.G": t.detach().cpu().contiguous() for n, t in self.g.items()}
        provenance = json.dumps(self.provenance(), indent=2) + "\n"
        for target, write in (
            (path.with_suffix(".json"), lambda tmp: tmp.write_text(provenance)),
            (path, lambda tmp: save_file(tensors, str(tmp), {PROVENANCE_KEY: provenance})),
        ):
            tmp = target.parent / sibling_name(target.name, "tmp")
            try:
                write(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> KFACFactors:
        """The factors ``save`` (or ``workbench factors collect``) wrote to ``path``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = read_provenance(path)
        try:
            tensors = load_file(str(path))
            a = {n: tensors[f"{n}.A"] for n in meta["names"]}
            g = {n: tensors[f"{n}.G"] for n in meta["names"]}
        except (OSError, KeyError, ValueError, SafetensorError) as err:
            raise DataError(
                f"factors file {path} is damaged ({one_line(err)}); collect it again"
            ) from None
        return cls(
            a=a,
            g=g,
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


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance in a factors file's header (cheap: no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"factors file {path} does not exist; write one with `workbench factors collect`"
        )
    try:
        with safe_open(str(path), "pt") as f:
            header = (f.metadata() or {}).get(PROVENANCE_KEY)
        meta = json.loads(header) if header else None
    except (OSError, ValueError, SafetensorError) as err:  # not safetensors, or a damaged header
        raise DataError(f"{path} is not a readable factors file ({one_line(err)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FILE_FORMAT:
        raise DataError(
            f"{path} is not a factors file written by `workbench factors collect` or "
            "KFACFactors.save"
        )
    return meta


def check_factors_file(model: LoadedModel, path: str | Path, names: Sequence[str]) -> None:
    """Refuse, before any heavy work, a factors file of another model or without ``names``."""
    meta = read_provenance(path)
    if meta["model_digest"] != model.digest():
        raise DataError(
            f"{path} holds factors of {meta['model_spec']} ({meta['model_digest'][:19]}), not of "
            f"{model.spec} ({model.digest()[:19]}); collect them on this model: workbench "
            f"factors collect --model {model.spec} --out FILE"
        )
    missing = [n for n in names if n not in meta["names"]]
    if missing:
        raise DataError(
            f"{path} has no factors for {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}; collect them with --param weights=..."
        )


# -- collection --------------------------------------------------------------------------------
def collect_factors(
    model: LoadedModel,
    inputs: Inputs | Iterable[Batch],
    weights: str | Sequence[str] = r"mlp\.W_",
    *,
    labels: str = "sampled",
    gold: torch.Tensor | None = None,
    batch_size: int = 16,
    seed: int = 0,
    layers_per_pass: int = 0,
    checkpointing: bool = False,
    progress: bool = True,
) -> KFACFactors:
    """Stream ``inputs`` through ``model`` and return A and G for each weight.

    ``inputs`` are texts, images or a dict of model tensors (as for ``capture``; cut into
    batches of ``batch_size``), or a re-iterable stream of ready batches (dicts of tensors, such
    as ``workbench.data.corpus.TokenBatches``), which is never held in memory. A causal LM's
    gold labels are its next tokens; a ViT classifier's come from ``gold`` (class ids, or
    multi-hot rows), or from each streamed batch's ``gold_labels``.

    ``layers_per_pass`` > 0 takes that many weights per pass over the stream (less memory for
    the sums, one more read of the stream per group); ``checkpointing`` recomputes each block's
    activations in the backward pass instead of keeping them. Deterministic under ``seed``:
    each sequence's sampled labels depend on the seed and its index in the stream only, so
    every pass, batch size and split across processes draws the same labels.

    Under ``torchrun`` (an initialised ``torch.distributed`` group), each process gives its own
    shard of the stream (``TokenBatches(..., shard=(rank, world))``) and every process returns
    the factors of all shards: the sums and counts are all-reduced once, at the end.
    """
    if labels not in LABEL_MODES:
        raise DataError(f"labels must be one of {', '.join(LABEL_MODES)}; got {labels!r}")
    if model.family not in ("causal-lm", "vit"):
        raise FamilyError(
            f"K-FAC factors need a causal LM or a ViT classifier; {model.spec} is a "
            f"{model.family} model"
        )
    if batch_size < 1 or layers_per_pass < 0 or seed < 0:
        raise DataError("batch_size must be at least 1, layers_per_pass and seed at least 0")
    names = resolve_weights(model, weights)
    if model.family == "vit" and model.head_labels is None:
        raise FamilyError(
            f"{model.spec} has no classification head, so there is no loss to take "
            "gradients of; load a ...ForImageClassification model"
        )
    batches, total = _batches(model, inputs, gold, labels, batch_size)
    groups = [names]
    if layers_per_pass and layers_per_pass < len(names):
        groups = [names[i : i + layers_per_pass] for i in range(0, len(names), layers_per_pass)]
        if iter(batches) is batches:
            raise DataError(
                "layers_per_pass needs a stream that can be read once per group of layers (a "
                "list of batches, or TokenBatches); an iterator can be read only once"
            )
    started = time.perf_counter()
    sums: FactorSums | None = None
    for k, group in enumerate(groups):
        desc = "K-FAC factors" + (f", pass {k + 1}/{len(groups)}" if len(groups) > 1 else "")
        part = factor_sums(
            model,
            batches,
            group,
            labels=labels,
            seed=seed,
            checkpointing=checkpointing,
            progress=progress,
            total=total,
            desc=desc,
        )
        if sums is not None and part.count != sums.count:
            raise DataError(
                f"the stream gave {part.count} positions on pass {k + 1} but {sums.count} before; "
                "layers_per_pass needs a stream that gives the same batches every pass"
            )
        sums = (
            part
            if sums is None
            else FactorSums({**sums.a, **part.a}, {**sums.g, **part.g}, part.count)
        )
    assert sums is not None
    processes = 1
    if in_process_group():
        import torch.distributed as dist

        processes = dist.get_world_size()
        sums.all_reduce()
    a, g = sums.factors(in_place=True)
    return KFACFactors(
        a=a,
        g=g,
        n_positions=sums.count,
        labels=labels,
        model_spec=model.spec,
        model_digest=model.digest(),
        extra={
            "seed": seed,
            "passes": len(groups),
            "processes": processes,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


def factor_sums(
    model: LoadedModel,
    batches: Iterable[Batch],
    names: Sequence[str],
    *,
    labels: str = "sampled",
    seed: int = 0,
    checkpointing: bool = False,
    progress: bool = True,
    total: int | None = None,
    desc: str = "K-FAC factors",
) -> FactorSums:
    """One pass over ``batches``: Σ a aᵀ and Σ g gᵀ per weight and the positions counted.

    The sums live on the model's device (``model.device``, where probes keep what they fit) in
    ``accumulator_dtype``, also for a model split across devices or offloaded. ``total``
    (positions or tokens expected) sizes the progress bar.
    """
    names = list(names)
    device = model.device
    dtype = accumulator_dtype(device)
    a_sum: dict[str, torch.Tensor] = {}
    g_sum: dict[str, torch.Tensor] = {}
    for name in names:
        out_dim, in_dim = weight_shape(model, name)
        a_sum[name] = torch.zeros(in_dim, in_dim, dtype=dtype, device=device)
        g_sum[name] = torch.zeros(out_dim, out_dim, dtype=dtype, device=device)

    state: dict[str, Any] = {"valid": None, "backward": False}
    outputs: dict[str, torch.Tensor] = {}

    def on_input(name: str):
        def observe(value: torch.Tensor) -> None:
            if not state["backward"]:  # checkpointing replays the forward during the backward
                _add_product(a_sum[name], _rows(value.detach(), state["valid"]))

        return observe

    def on_output(name: str):
        def observe(value: torch.Tensor) -> None:
            if not state["backward"]:
                outputs[name] = value

        return observe

    fns = {f"{n}.input": on_input(n) for n in names}
    fns |= {f"{n}.output": on_output(n) for n in names}
    seen = 0
    params = list({id(p): p for p in (model.parameter(n) for n in names)}.values())
    flags = [p.requires_grad for p in params]
    count = 0
    bar = tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not progress)
    try:
        for p in params:
            p.requires_grad_(True)  # the graph must reach the chosen layers
        with ExitStack() as stack:
            stack.enter_context(hooks(model, fns))
            stack.enter_context(torch.enable_grad())
            stack.enter_context(bar)
            if checkpointing:
                stack.enter_context(checkpointed_blocks(model))
            for batch in batches:
                batch = dict(batch)
                gold = batch.pop(GOLD_KEY, None)
                index = batch.pop(SEQUENCE_KEY, None)
                rows = len(next(iter(batch.values())))
                if index is None:  # a stream without indices: its order gives them
                    index = torch.arange(seen, seen + rows)
                seen += rows
                valid = _valid_positions(model, batch)
                state["valid"] = None if valid is None else valid.to(model.device)
                outputs.clear()
                out = model.forward(batch, grad=True)
                loss = _loss(model, out, batch, state["valid"], labels, gold, (seed, index))
                missing = [nm for nm in names if nm not in outputs]
                if missing:
                    raise DataError(f"weights {missing} were not used by the forward pass")
                state["backward"] = True
                try:
                    grads = torch.autograd.grad(loss, [outputs[nm] for nm in names])
                finally:
                    state["backward"] = False
                for name, grad in zip(names, grads, strict=True):
                    _add_product(g_sum[name], _rows(grad, state["valid"]))
                n = _count(outputs[names[0]], state["valid"])
                count += n
                bar.update(n)
                del out, loss, grads
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        outputs.clear()
    return FactorSums(a_sum, g_sum, count)


def weight_shape(model: LoadedModel, name: str) -> tuple[int, int]:
    """(out, in) of weight ``name``, read from its parameter's shape: no offloaded values read."""
    out_dim, in_dim = model.weight_view(name, model.parameter(name).detach()).shape
    return int(out_dim), int(in_dim)


def _add_product(acc: torch.Tensor, rows: torch.Tensor) -> None:
    """acc += rowsᵀ rows, the product formed in float32 (at least) on the accumulator's device."""
    rows = rows.to(acc.device)
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()
    acc.add_(rows.T @ rows)


def _batches(
    model: LoadedModel,
    inputs: Inputs | Iterable[Batch],
    gold: torch.Tensor | None,
    labels: str,
    batch_size: int,
) -> tuple[Iterable[Batch], int | None]:
    """A re-iterable of batches, and how many positions it holds (None when unknown)."""
    in_memory = isinstance(inputs, Mapping | np.ndarray | torch.Tensor) or (
        isinstance(inputs, Sequence) and bool(inputs) and all(isinstance(t, str) for t in inputs)
    )
    if not in_memory:
        if model.family == "vit" and labels == "gold" and gold is not None:
            raise DataError("a stream of ViT batches carries its gold labels in each batch")
        return inputs, getattr(inputs, "n_tokens", None)  # type: ignore[return-value]
    batch = encode_inputs(model, inputs)  # type: ignore[arg-type]
    n = next(iter(batch.values())).shape[0]
    if model.family == "vit" and labels == "gold" and (gold is None or len(gold) != n):
        raise DataError("gold labels for a ViT need `gold` with one label row per image")
    parts = []
    for start in range(0, n, batch_size):
        part = {k: v[start : start + batch_size] for k, v in batch.items()}
        part[SEQUENCE_KEY] = torch.arange(start, min(start + batch_size, n))
        if gold is not None:
            part[GOLD_KEY] = gold[start : start + batch_size]
        parts.append(part)
    total = None
    if model.family == "causal-lm":
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
        total = int((mask[:, :-1] & mask[:, 1:]).sum())
    return parts, total


def _rows(value: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(positions, features): the valid positions, or every position when ``valid`` is None.

    Unpadded text (every position valid but the last) takes a slice, not a boolean gather.
    """
    if valid is None:
        return value.reshape(-1, value.shape[-1])
    valid = valid.to(value.device)
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


def sequence_uniforms(seed: int, index: torch.Tensor, n: int) -> torch.Tensor:
    """(len(index), n) uniforms on the CPU, row i drawn from its own generator seeded by
    (``seed``, ``index[i]``): the draws of a sequence do not depend on the batch it is in, nor on
    the process of a data-parallel run that reads it, nor on the device."""
    rows = [np.random.default_rng([seed, int(i)]).random(n) for i in index.tolist()]
    return torch.from_numpy(np.stack(rows)).float() if rows else torch.zeros(0, n)


def sample_labels(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One label per row drawn from softmax(logits), by inverting the cumulative distribution
    at ``uniforms`` (one per row, in [0, 1)).

    Equivalent to ``torch.multinomial`` (one draw) and several times faster over a large
    vocabulary.
    """
    with torch.no_grad():
        cdf = torch.softmax(logits.float(), dim=-1).cumsum_(-1)
        u = uniforms.reshape(-1, 1).to(cdf.device, cdf.dtype) * cdf[:, -1:]
        return torch.searchsorted(cdf, u).squeeze(1).clamp_max_(cdf.shape[-1] - 1)


def _loss(
    model: LoadedModel,
    out: Any,
    batch: Mapping[str, torch.Tensor],
    valid: torch.Tensor | None,
    labels: str,
    gold: torch.Tensor | None,
    draws: tuple[int, torch.Tensor],
) -> torch.Tensor:
    """Summed loss whose gradient at each position is that position's own token loss gradient.

    ``draws`` is (seed, each row's sequence index): sampled labels come from
    ``sequence_uniforms``.
    """
    seed, index = draws
    logits = out.logits if hasattr(out, "logits") else out
    if model.family == "causal-lm":
        positions = logits.shape[1]
        logits = _rows(logits, valid).float()
        if labels == "gold":
            ids = batch["input_ids"].to(logits.device)
            target = torch.zeros_like(ids)
            target[:, :-1] = ids[:, 1:]
            target = _rows(target[..., None], valid)[:, 0]
        else:
            u = sequence_uniforms(seed, index, positions)
            target = sample_labels(logits, _rows(u[..., None], valid)[:, 0])
        return torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    logits = logits.float()
    multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
    if labels == "gold":
        if gold is None:
            raise DataError("gold labels for a ViT need `gold` with one label row per image")
        gold = gold.to(logits.device)
        target = gold.float() if multi_label else gold.long()
    elif multi_label:
        with torch.no_grad():
            u = sequence_uniforms(seed, index, logits.shape[-1]).to(logits.device)
            target = (u < torch.sigmoid(logits)).float()
    else:
        target = sample_labels(logits, sequence_uniforms(seed, index, 1))
    if multi_label:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    return torch.nn.functional.cross_entropy(logits, target, reduction="sum")

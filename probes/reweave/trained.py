"""Reweaving trained into the model, beside the same model trained without it.

A model trained with the operator in its forward (``zoo:neox-reweave``) keeps the operator's
parameters next to its weights (``reweaving.safetensors``, described in ``recipe.json``): it is
part of the model, so the probe loads it with the model. The comparison needs the same model
trained without (its recipe names it: ``zoo:neox-reweave-control``; ``Config.control``
overrides), and shows, on the same held-out recall prompts and texts:

* ``control``: the model trained without reweaving;
* ``trained``: the model trained with it (operator in, at its learned gate);
* ``posthoc_fixed`` (and ``posthoc_learned`` when ``fit_steps > 0``): the same operator added
  to the control after training, with the fixed gate (or fitted on recall prompts);
* ``ablated``: the trained model with its operator taken out (gate 0): how much it relies on it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from safetensors.torch import load_file
from tqdm.auto import tqdm

from probes.reweave import compute, measure
from probes.reweave.config import Config
from probes.reweave.data import Vocabulary
from probes.reweave.operator import Reweaving
from workbench.errors import DataError
from workbench.models import LoadedModel, load_model
from workbench.models.loader import backend_note
from workbench.probe import Findings

OPERATOR_FILE = "reweaving.safetensors"


def _recipe(model: LoadedModel) -> dict:
    path = None if model.source is None else model.source / "recipe.json"
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def trained_operator(model: LoadedModel) -> Reweaving | None:
    """The operator trained into ``model`` (from its folder), or None for an ordinary model."""
    if model.source is None or not (model.source / OPERATOR_FILE).is_file():
        return None
    path = model.source / OPERATOR_FILE
    spec = _recipe(model).get("reweaving")
    if not spec:
        raise DataError(
            f"{model.spec} has {OPERATOR_FILE} but its recipe.json does not describe the "
            "operator (sources, target, gate_kind, read); rebuild the model"
        )
    if spec.get("sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != spec["sha256"]:
        raise DataError(f"{path} does not match the sha256 in recipe.json; rebuild the model")
    op = Reweaving(
        tuple(spec["sources"]),
        int(spec["target"]),
        model.d_model,
        gate_kind=str(spec["gate_kind"]),
        read=str(spec["read"]),
    )
    op.load_state_dict(load_file(str(path)))
    return op.to(model.device).eval()


def control_spec(model: LoadedModel, config: Config) -> str:
    """The model trained without reweaving: ``config.control``, else the one the recipe names."""
    if config.control:
        return config.control
    name = _recipe(model).get("pair", {}).get("control")
    if not name:
        raise DataError(
            f"{model.spec} was trained with reweaving but names no control; set "
            "control=<the same model trained without reweaving>"
        )
    return f"zoo:{name}"


def check_pair(model: LoadedModel, control: LoadedModel) -> None:
    """The control must read the same tokens with the same shape of model."""
    same = (model.n_layers, model.d_model) == (control.n_layers, control.d_model)
    if not same or model.processor.get_vocab() != control.processor.get_vocab():
        raise DataError(
            f"{control.spec} is not the same model as {model.spec} without reweaving (layers, "
            "width or vocabulary differ); give the matching control"
        )


def as_fixed(op: Reweaving) -> Reweaving:
    """The same operator with its learned gate frozen as a number (what the explorer slides)."""
    fixed = Reweaving(
        op.sources,
        op.target,
        op.d_model,
        gate=float(op.gate().detach().mean()),
        read=op.read,
    )
    state = {k: v for k, v in op.state_dict().items() if k != "gate_logit"}
    fixed.load_state_dict(state, strict=False)
    return fixed


def _accuracy(
    model: LoadedModel,
    op: Reweaving | None,
    held_out: dict,
    config: Config,
    vocab: Vocabulary,
    lengths: list[int],
    gate: float | None = None,
) -> np.ndarray:
    """(tasks, lengths) recall accuracy of one model with (or without) one operator."""
    out = np.zeros((len(config.tasks), len(lengths)))
    for k, task in enumerate(config.tasks):
        for j, length in enumerate(lengths):
            group = held_out[(task, length)]
            logits = measure.next_token_logits(
                model, group, op, gate=gate, batch_size=config.batch_size
            )
            out[k, j] = measure.correct(logits, vocab, group).mean()
    return out


def run_trained(
    model: LoadedModel,
    config: Config,
    op: Reweaving,
    vocab: Vocabulary,
    lengths: list[int],
    data: list[str] | None,
) -> Findings:
    """Control, trained-in, post-hoc and ablated reweaving on the same prompts and texts."""
    from probes.reweave import probe  # probe calls this module; import at use

    spec = control_spec(model, config)
    control = load_model(spec)
    check_pair(model, control)
    texts = probe.texts_for_attention(config, vocab, data)
    scale = measure.destination_scale(control, texts, op.target)
    fixed = Reweaving(
        op.sources, op.target, model.d_model, gate=config.gate, read=op.read, scale=scale
    ).to(control.device)

    metrics: dict = {}
    arrays: dict[str, np.ndarray] = {}
    learned = probe._recall_part(control, config, vocab, lengths, fixed, scale, metrics, arrays)
    held_out = probe.held_out_prompts(config, vocab, lengths)
    rows: dict[str, tuple[LoadedModel, Reweaving | None]] = {
        "control": (control, None),
        "trained": (model, op),
        "posthoc_fixed": (control, fixed),
    }
    if learned is not None:
        rows["posthoc_learned"] = (control, learned)
    rows["ablated"] = (model, None)
    on_control = {"control": 0, "posthoc_fixed": 1, "posthoc_learned": 2}
    recall = []
    for cond, (m, o) in tqdm(rows.items(), desc="recall, trained vs post hoc", leave=False):
        if cond in on_control:
            recall.append(arrays["recall_accuracy"][on_control[cond]])
        else:
            recall.append(_accuracy(m, o, held_out, config, vocab, lengths))
    accuracy = np.stack(recall)
    conds = list(rows)

    for key in [k for k in arrays if k.startswith(("recall_by_length_", "copy_"))]:
        del arrays[key]  # copying was measured on the control alone: not part of this view
    metrics = {k: v for k, v in metrics.items() if not k.startswith(("recall_", "copy_"))}
    metrics = {k: v for k, v in metrics.items() if "_accuracy_" not in k}
    if learned is not None:
        arrays |= {
            k.replace("op_learned", "op_posthoc_learned"): v
            for k, v in learned.to_arrays("op_learned").items()
        }
        arrays = {k: v for k, v in arrays.items() if not k.startswith("op_learned.")}
    arrays |= fixed.to_arrays("op_posthoc_fixed")
    arrays |= op.to_arrays("op_trained")
    arrays |= as_fixed(op).to_arrays("op_fixed")  # the explorer slides the trained gate
    arrays["recall_accuracy"] = accuracy
    arrays["conditions"] = np.array(conds)
    for c, cond in enumerate(conds):
        arrays[f"recall_by_length_{cond}"] = accuracy[c].mean(axis=0)
        metrics[f"recall_{cond}"] = round(float(accuracy[c].mean()), 4)
        for k, task in enumerate(config.tasks):
            metrics[f"{task}_accuracy_{cond}"] = {
                str(n): round(float(accuracy[c, k, j]), 3) for j, n in enumerate(lengths)
            }
    _gate_sweep(model, op, held_out, config, vocab, lengths, metrics, arrays)

    stats = np.stack(
        [
            measure.attention_statistics(m, texts, o, batch_size=config.batch_size)
            for m, o in tqdm(rows.values(), desc="attention statistics", leave=False)
        ]
    )
    arrays["attention_stats"] = stats
    probe.example_maps(model, config, vocab, rows, arrays)
    trained_gate = float(op.gate().detach().mean())
    metrics |= {
        "sources": list(op.sources),
        "target": op.target,
        "gate": config.gate,
        "read": op.read,
        "destination_scale": round(scale, 4),
        "attention_prompts": len(texts),
        "control_model": spec,
        "trained_gate": round(trained_gate, 4),
        "trained_weights": {
            str(layer): round(w, 3)
            for layer, w in zip(op.sources, op.weights().detach().tolist(), strict=True)
        },
        "trained_operator": op.describe(),
    }
    metrics |= probe._attention_metrics(stats, conds, op.target)
    metrics["headline"] = [
        k
        for k in ("recall_control", "recall_trained", "recall_posthoc_fixed", "trained_gate")
        if k in metrics
    ]
    provenance = backend_note(model) | {"control_model": spec, "control_digest": control.digest()}
    return Findings(metrics, arrays, summary(model.spec, metrics, conds), provenance)


def _gate_sweep(
    model: LoadedModel,
    op: Reweaving,
    held_out: dict,
    config: Config,
    vocab: Vocabulary,
    lengths: list[int],
    metrics: dict,
    arrays: dict,
) -> None:
    """The trained operator's gate swept on the trained model: 0 takes it out."""
    sweep_length = lengths[len(lengths) // 2]
    group = [p for task in config.tasks for p in held_out[(task, sweep_length)]]
    without = measure.next_token_logits(model, group, batch_size=config.batch_size)
    gates = sorted({*config.gate_sweep, round(float(op.gate().detach().mean()), 4)})
    change, acc = [], []
    for g in tqdm(gates, desc="trained gate sweep", leave=False):
        logits = measure.next_token_logits(model, group, op, gate=g, batch_size=config.batch_size)
        change.append(float(compute.kl_divergence(without, logits).mean()))
        acc.append(float(measure.correct(logits, vocab, group).mean()))
    arrays["sweep_gates"] = np.array(gates, dtype=float)
    arrays["sweep_change"] = np.array(change)
    arrays["sweep_accuracy"] = np.array(acc)
    metrics["sweep_length"] = sweep_length


def summary(spec: str, m: dict, conds: list[str]) -> str:
    text = (
        f"{spec} was trained with reweaving in its forward ({m['trained_operator']}); "
        f"{m['control_model']} is the same model, data, seed and budget without it. Recall "
        f"averaged over tasks and lengths: {m['recall_control']:.1%} for the control, "
        f"{m['recall_trained']:.1%} trained with reweaving ({m['recall_ablated']:.1%} with its "
        f"operator taken out), and {m['recall_posthoc_fixed']:.1%} with the same operator added "
        f"to the control after training (gate {m['gate']})"
    )
    if "recall_posthoc_learned" in m:
        text += (
            f" or {m['recall_posthoc_learned']:.1%} fitted on recall prompts (gate "
            f"{m['learned_gate']:.3f})"
        )
    return (
        f"{text}. In blocks {m['target']} and later, attention entropy is "
        f"{m['entropy_control']:.2f} nats for the control and {m['entropy_trained']:.2f} for the "
        f"trained-in model, sink mass {m['sink_control']:.2f} vs {m['sink_trained']:.2f}, mean "
        f"attention distance {m['distance_control']:.1f} vs {m['distance_trained']:.1f} tokens."
    )

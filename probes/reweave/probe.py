"""``run``: reweave earlier layers' states into a later layer; measure recall and attention."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.reweave import compute, measure, trained
from probes.reweave.config import Config
from probes.reweave.data import (
    Vocabulary,
    corpus_word_counts,
    default_example,
    prompts,
    recall_vocabulary,
    sentences,
    token_labels,
    word_length,
)
from probes.reweave.operator import Reweaving
from probes.reweave.plots import figures
from workbench.data import recall
from workbench.data.corpus import read_documents
from workbench.data.texts import python_documents
from workbench.errors import DataError
from workbench.models import LoadedModel
from workbench.models.loader import backend_note
from workbench.probe import Findings, run_frame
from workbench.threads import threads_for, torch_threads

NAME = "reweave"
FAMILIES = ("causal-lm", "encoder")
DEFAULT_MODELS = ("zoo:neox-recall", "zoo:minilm")
MAX_AUTO_LENGTH = 256


def resolve_layers(model: LoadedModel, config: Config) -> tuple[tuple[int, ...], int]:
    """Source blocks and destination block, from the config or the defaults."""
    n = model.n_layers
    sources = tuple(config.sources) or tuple(range(max(1, n // 2)))
    target = config.target if config.target >= 0 else max(int(0.75 * n), max(sources) + 1)
    if max(sources) >= n or min(sources) < 0:
        raise DataError(f"{model.spec} has blocks 0..{n - 1}; sources {sources} do not fit")
    if not max(sources) < target < n:
        raise DataError(
            f"the destination block must come after the sources {sources} and exist "
            f"(blocks 0..{n - 1}); got target={target}. Set target, or fewer/earlier sources"
        )
    return sources, target


def resolve_lengths(model: LoadedModel, vocab: Vocabulary, config: Config) -> list[int]:
    if config.lengths:
        return sorted(set(config.lengths))
    limit = model.context_length or MAX_AUTO_LENGTH
    top = min(limit, MAX_AUTO_LENGTH)
    if not vocab.one_token_per_word:
        top //= 2  # lengths count words, which are often more than one token
    lengths, length = [], 16
    while length <= top:
        lengths.append(length)
        length *= 2
    return lengths


def check(model: LoadedModel, config: Config) -> None:
    """Source and destination blocks that exist, and recall lengths the model can read."""
    resolve_layers(model, config)
    limit = model.context_length
    if limit is not None and model.family == "causal-lm" and max(config.lengths, default=0) > limit:
        raise DataError(
            f"{model.spec} reads at most {limit} tokens but lengths={config.lengths} asks for "
            f"more; ask for lengths up to {limit}"
        )


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: list[str] | None) -> Findings:
    """Does re-injecting earlier layers' states help recall, and how does attention change?

    ``data`` are texts of your own for the attention statistics (they also calibrate the
    destination's scale and, for encoders, the gate sweep); None: recall prompts (causal LMs)
    or neutral sentences (encoders).
    """
    with torch_threads(threads_for(model, config.threads)):
        return _run(model, config, data)


def _run(model: LoadedModel, config: Config, data: list[str] | None) -> Findings:
    check_texts(data)
    sources, target = resolve_layers(model, config)
    causal = model.family == "causal-lm"
    vocab = recall_vocabulary(model, _corpus_counts(config)) if causal else None
    lengths = resolve_lengths(model, vocab, config) if vocab is not None else []
    torch.manual_seed(config.seed)

    if vocab is not None:
        op = trained.trained_operator(model)
        if op is not None:
            return trained.run_trained(model, config, op, vocab, lengths, data)
    attention_texts = texts_for_attention(config, vocab, data)
    scale = measure.destination_scale(model, attention_texts, target)
    fixed = Reweaving(
        sources, target, model.d_model, gate=config.gate, read=config.read, scale=scale
    ).to(model.device)

    metrics: dict = {
        "sources": list(sources),
        "target": target,
        "gate": config.gate,
        "read": config.read,
        "destination_scale": round(scale, 4),
        "attention_prompts": len(attention_texts),
    }
    arrays: dict[str, np.ndarray] = {**fixed.to_arrays("op_fixed")}
    ops: dict[str, Reweaving | None] = {"base": None, "fixed": fixed}
    if vocab is not None:
        learned = _recall_part(model, config, vocab, lengths, fixed, scale, metrics, arrays)
        if learned is not None:
            ops["learned"] = learned
    else:
        metrics["fit"] = "skipped: an encoder has no next-token objective to fit the gate on"
        _encoder_sweep(model, config, fixed, attention_texts, metrics, arrays)
    arrays["conditions"] = np.array(list(ops))

    stats = np.stack(
        [
            measure.attention_statistics(model, attention_texts, op, batch_size=config.batch_size)
            for op in tqdm(ops.values(), desc="attention statistics", leave=False)
        ]
    )
    arrays["attention_stats"] = stats
    _example(model, config, vocab, ops, arrays)
    metrics.update(_attention_metrics(stats, list(ops), target))
    metrics["headline"] = _headline(metrics, causal)
    return Findings(
        metrics, arrays, _summary(model.spec, metrics, list(ops), causal), backend_note(model)
    )


def texts_for_attention(
    config: Config, vocab: Vocabulary | None, data: list[str] | None
) -> list[str]:
    """The texts of the attention statistics: ``data``, else recall prompts (causal LMs) or
    neutral sentences (encoders)."""
    if data is not None:
        return list(data)
    if vocab is None:
        return sentences(config.attention_prompts, config.seed)
    per_task = max(1, config.attention_prompts // len(config.tasks))
    return [
        p.text
        for k, task in enumerate(config.tasks)
        for p in prompts(vocab, task, config.attention_length, per_task, config.seed + 1 + k)
    ]


def held_out_prompts(
    config: Config, vocab: Vocabulary, lengths: list[int]
) -> dict[tuple[str, int], list]:
    """The recall prompts every condition is scored on, per (task, length)."""
    pairs = [(t, n) for t in config.tasks for n in lengths]
    return {
        (task, length): prompts(vocab, task, length, config.n_prompts, config.seed + 1000 + 7 * i)
        for i, (task, length) in enumerate(pairs)
    }


def _corpus_counts(config: Config) -> Callable[[list[str]], tuple[dict[str, int], str]]:
    """Word counts for the copy buckets: ``config.corpus`` or the shipped collection."""

    def counts(words: list[str]) -> tuple[dict[str, int], str]:
        if config.corpus:
            documents = read_documents(config.corpus, text_field=config.text_field)
            source = config.corpus
        else:
            documents, source = python_documents("train"), "the shipped collection"
        found = corpus_word_counts(documents, words, config.corpus_words)
        return found, f"{source} (first {config.corpus_words:,} words)"

    return counts


def check_texts(texts: object) -> None:
    """``data`` is None or a non-empty list of non-empty texts."""
    if texts is None:
        return
    if isinstance(texts, str) or not isinstance(texts, list | tuple):
        raise DataError(
            f"data must be a list of texts (or None for the default); got {type(texts).__name__}"
        )
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise DataError("data must hold at least one text, and every text must be a non-empty str")


# -- causal LMs: recall, copying, fit, gate sweep -----------------------------------------------
def _recall_part(
    model: LoadedModel,
    config: Config,
    vocab: Vocabulary,
    lengths: list[int],
    fixed: Reweaving,
    scale: float,
    metrics: dict,
    arrays: dict,
) -> Reweaving | None:
    tasks = list(config.tasks)
    held_out = held_out_prompts(config, vocab, lengths)
    learned = None
    if config.fit_steps > 0:
        learned = Reweaving(
            fixed.sources,
            fixed.target,
            model.d_model,
            gate=config.learned_gate_init,
            gate_kind=config.learned_gate,
            read=config.read,
            scale=scale,
        ).to(model.device)
        fit_lengths = [n for n in lengths if n <= config.fit_max_length] or lengths[:1]
        groups = [
            prompts(vocab, task, length, config.fit_batch, config.seed + 5000 + 13 * i + k)
            for i, (task, length) in enumerate((t, n) for t in tasks for n in fit_lengths)
            for k in range(2)
        ]
        base_losses = []
        for group in groups:
            logits = measure.next_token_logits(model, group, batch_size=config.batch_size)
            answers = vocab.answer_ids([p.answer for p in group])
            base_losses.append(float(torch.nn.functional.cross_entropy(logits, answers)))
        losses = measure.fit(
            model,
            learned,
            groups,
            vocab,
            steps=config.fit_steps,
            lr=config.fit_lr,
            seed=config.seed,
            patience=config.fit_patience,
        )
        arrays["fit_loss"] = np.array(losses)
        arrays |= learned.to_arrays("op_learned")
        fitted_losses = []
        for group in groups:
            logits = measure.next_token_logits(model, group, learned, batch_size=config.batch_size)
            answers = vocab.answer_ids([p.answer for p in group])
            fitted_losses.append(float(torch.nn.functional.cross_entropy(logits, answers)))
        metrics["fit_base_loss"] = round(float(np.mean(base_losses)), 4)
        metrics["fit_final_loss"] = round(float(np.mean(fitted_losses)), 4)
        metrics["learned_gate"] = round(float(learned.gate().detach().mean()), 4)
        weights = learned.weights().detach().tolist()
        metrics["learned_weights"] = {
            str(layer): round(w, 3) for layer, w in zip(learned.sources, weights, strict=True)
        }
        metrics["learned"] = learned.describe()
    ops = {"base": None, "fixed": fixed} | ({"learned": learned} if learned is not None else {})

    accuracy = np.zeros((len(ops), len(tasks), len(lengths)))
    token_lengths = np.zeros((len(tasks), len(lengths)))
    jobs = [
        (c, k, j) for c in range(len(ops)) for k in range(len(tasks)) for j in range(len(lengths))
    ]
    for c, k, j in tqdm(jobs, desc="recall", leave=False):
        group = held_out[(tasks[k], lengths[j])]
        op = list(ops.values())[c]
        logits = measure.next_token_logits(model, group, op, batch_size=config.batch_size)
        accuracy[c, k, j] = measure.correct(logits, vocab, group).mean()
        if c == 0:
            batch = model.encode_texts([p.text for p in group[:4]])
            token_lengths[k, j] = float(batch["attention_mask"].sum(-1).float().mean())
    arrays["recall_accuracy"] = accuracy
    for c, cond in enumerate(ops):
        arrays[f"recall_by_length_{cond}"] = accuracy[c].mean(axis=0)
    arrays["recall_chance"] = np.array(
        [
            [
                recall.chance_accuracy(task, word_length(vocab, n, task), len(vocab.words))
                for n in lengths
            ]
            for task in tasks
        ]
    )
    arrays["tasks"] = np.array(tasks)
    arrays["lengths"] = np.array(lengths)
    arrays["token_lengths"] = token_lengths
    metrics["lengths_in_tokens"] = vocab.one_token_per_word
    metrics["n_prompts"] = config.n_prompts
    for c, cond in enumerate(ops):
        metrics[f"recall_{cond}"] = round(float(accuracy[c].mean()), 4)
        for k, task in enumerate(tasks):
            metrics[f"{task}_accuracy_{cond}"] = {
                str(n): round(float(accuracy[c, k, j]), 3) for j, n in enumerate(lengths)
            }

    if vocab.counts is not None:
        buckets = compute.frequency_buckets(vocab.counts, vocab.words, config.copy_buckets)
        copy = np.zeros((len(ops), len(buckets)))
        for b, (_label, words, _median) in enumerate(tqdm(buckets, desc="copy", leave=False)):
            group = prompts(
                vocab,
                "passkey",
                config.copy_length,
                config.copy_prompts,
                config.seed + 9000 + b,
                answer_words=words,
                depth=None,
            )
            for c, op in enumerate(ops.values()):
                logits = measure.next_token_logits(model, group, op, batch_size=config.batch_size)
                copy[c, b] = measure.correct(logits, vocab, group).mean()
        arrays["copy_accuracy"] = copy
        arrays["copy_bucket_labels"] = np.array([b[0] for b in buckets])
        arrays["copy_bucket_median_count"] = np.array([b[2] for b in buckets])
        metrics["copy_length"] = config.copy_length
        metrics["copy_counts_from"] = vocab.counts_from
        for c, cond in enumerate(ops):
            metrics[f"copy_accuracy_{cond}"] = {
                b[0]: round(float(copy[c, i]), 3) for i, b in enumerate(buckets)
            }

    sweep_length = lengths[len(lengths) // 2]
    group = [p for task in tasks for p in held_out[(task, sweep_length)]]
    base_logits = measure.next_token_logits(model, group, batch_size=config.batch_size)
    change, acc = [], []
    for g in tqdm(config.gate_sweep, desc="gate sweep", leave=False):
        logits = measure.next_token_logits(
            model, group, fixed, gate=g, batch_size=config.batch_size
        )
        change.append(float(compute.kl_divergence(base_logits, logits).mean()))
        acc.append(float(measure.correct(logits, vocab, group).mean()))
    arrays["sweep_gates"] = np.array(config.gate_sweep, dtype=float)
    arrays["sweep_change"] = np.array(change)
    arrays["sweep_accuracy"] = np.array(acc)
    metrics["sweep_length"] = sweep_length
    return learned


# -- encoders: how far the output moves -------------------------------------------------------
def _encoder_sweep(
    model: LoadedModel,
    config: Config,
    fixed: Reweaving,
    texts: list[str],
    metrics: dict,
    arrays: dict,
) -> None:
    base = measure.final_states(model, texts, batch_size=config.batch_size)
    change = []
    for g in tqdm(config.gate_sweep, desc="gate sweep", leave=False):
        other = measure.final_states(model, texts, fixed, gate=g, batch_size=config.batch_size)
        per_text = [
            torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
            for a, b in zip(base, other, strict=True)
        ]
        change.append(float(1 - torch.stack(per_text).mean()))
    arrays["sweep_gates"] = np.array(config.gate_sweep, dtype=float)
    arrays["sweep_change"] = np.array(change)
    at_gate = measure.final_states(model, texts, fixed, batch_size=config.batch_size)
    cos = torch.stack(
        [
            torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
            for a, b in zip(base, at_gate, strict=True)
        ]
    )
    metrics["output_change"] = round(float(1 - cos.mean()), 4)


# -- the example's attention maps ---------------------------------------------------------------
def _example(
    model: LoadedModel,
    config: Config,
    vocab: Vocabulary | None,
    ops: dict[str, Reweaving | None],
    arrays: dict,
) -> None:
    example_maps(model, config, vocab, {name: (model, op) for name, op in ops.items()}, arrays)


def example_maps(
    model: LoadedModel,
    config: Config,
    vocab: Vocabulary | None,
    rows: dict[str, tuple[LoadedModel, Reweaving | None]],
    arrays: dict,
) -> None:
    """Attention maps of one text per condition (a model and its operator, or None); the
    models share ``model``'s tokenizer."""
    text = config.example_text or default_example(model, vocab, config.seed)
    batch = measure.encode(model, [text])
    batch = {k: v[:, : config.max_map_tokens] for k, v in batch.items()}
    patterns = []
    for row_model, op in rows.values():
        per_layer = measure.attention_patterns(row_model, batch, op)
        patterns.append(torch.stack([p[0] for p in per_layer]).numpy())
    arrays["example_patterns"] = np.stack(patterns).astype(np.float32)
    arrays["example_tokens"] = np.array(token_labels(model, batch["input_ids"][0]))
    arrays["example_text"] = np.array(text)
    arrays["example_most_changed"] = np.array(
        compute.most_changed_head(arrays["example_patterns"][0], arrays["example_patterns"][1])
    )


def _attention_metrics(stats: np.ndarray, conds: list[str], target: int) -> dict:
    """Means over heads of the layers the reweaving can reach (target and later)."""
    out: dict = {}
    for k, stat in enumerate(compute.STATS):
        for c, cond in enumerate(conds):
            out[f"{stat}_{cond}"] = round(float(stats[c, k, target:].mean()), 4)
    return out


def _headline(metrics: dict, causal: bool) -> list[str]:
    if causal:
        keys = ["recall_base", "recall_fixed", "recall_learned", "learned_gate"]
    else:
        keys = ["output_change", "entropy_base", "entropy_fixed", "sink_fixed"]
    return [k for k in keys if k in metrics]


def _summary(spec: str, metrics: dict, conds: list[str], causal: bool) -> str:
    where = (
        f"the states after blocks {metrics['sources']} are reconstructed and woven into the "
        f"stream before block {metrics['target']}"
    )
    stats = (
        f"In blocks {metrics['target']} and later, attention entropy goes from "
        f"{metrics['entropy_base']:.2f} to {metrics['entropy_fixed']:.2f} nats, sink mass from "
        f"{metrics['sink_base']:.2f} to {metrics['sink_fixed']:.2f}, and mean attention "
        f"distance from {metrics['distance_base']:.1f} to {metrics['distance_fixed']:.1f} tokens "
        f"with the fixed reweaving."
    )
    if not causal:
        return (
            f"On {spec}, {where} with gate {metrics['gate']}; the final token states move by "
            f"{metrics['output_change']:.3f} in 1 − cosine. {stats} No learned reweaving: an "
            "encoder has no next-token objective to fit it on."
        )
    text = (
        f"On {spec}, {where}. Recall accuracy averaged over tasks and lengths is "
        f"{metrics['recall_base']:.1%} for the base model and {metrics['recall_fixed']:.1%} "
        f"with the fixed reweaving (gate {metrics['gate']})"
    )
    if "recall_learned" in metrics:
        text += (
            f", and {metrics['recall_learned']:.1%} with the learned one (its gate settled at "
            f"{metrics['learned_gate']:.3f}; on the fitting prompts the answer loss is "
            f"{metrics['fit_final_loss']:.2f} nats against the base model's "
            f"{metrics['fit_base_loss']:.2f})"
        )
    return f"{text}. {stats}"

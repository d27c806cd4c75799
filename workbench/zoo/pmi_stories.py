"""Recipes for ``pmi-stories`` and ``pmi-stories-control``: the PMI-Transformer and its control.

Both read bAbI-style stories (``workbench.data.stories``: single and two supporting facts,
counting) and classify the answer from the last token. They share everything but the token
mixer: the PMI-Transformer runs one shared memory step per layer (working memory of 8 slots,
long-term memory of 5 segments), the control is a standard Transformer of the same width, depth,
heads and MLP size with its own weights per layer. Same data, seed, schedule and step budget.
Held-out stories come from another seed, and any held-out story whose text also occurs in the
training set is dropped, so the accuracy is on unseen stories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data.stories import (
    ANSWERS,
    TASKS,
    VOCABULARY,
    Story,
    majority_accuracy,
    make_stories,
    uniform_chance,
)
from workbench.models.pmi import PMIConfig, build_model, save_model
from workbench.models.scratch import SPECIAL_TOKENS
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import (
    EVAL_SEED_OFFSET,
    RecipeRun,
    adamw_warmup_cosine,
    optimizer_step,
)

NAME = "pmi-stories"
CONTROL_NAME = "pmi-stories-control"
ENTRIES = (
    ZooEntry(
        name=NAME,
        family="pmi",
        description=(
            "PMI-Transformer (one shared memory step per layer, 4 steps, width 64, WM 8 slots, "
            "LTM 5 segments) answering bAbI-style questions (workbench.data.stories)"
        ),
        recipe=__name__,
        seed=0,
    ),
    ZooEntry(
        name=CONTROL_NAME,
        family="pmi",
        description=(
            "the same-size standard Transformer (4 layers, width 64) trained identically on the "
            "same stories: the control for pmi-stories"
        ),
        recipe=__name__,
        seed=0,
        builder="build_control",
    ),
)

TRAIN_SIZE = 24_000
EVAL_SIZE = 1_500
STEPS = 2_000
BATCH_SIZE = 64
LR = 2e-3
WEIGHT_DECAY = 0.01
WARMUP = 100
MAX_THREADS = 1
STORY_KWARGS: dict[str, Any] = {"tasks": TASKS, "n_facts": (3, 6), "n_people": (2, 4)}
"""Story options for training and evaluation; pass them to ``make_stories`` for in-distribution
stories (also stored in ``recipe.json``)."""

WORD_IDS = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *VOCABULARY])}
"""Token ids exactly as the saved word-level tokenizer assigns them ([PAD] = 0)."""


def model_config(architecture: str, **overrides: Any) -> PMIConfig:
    """The architecture both recipes share; only ``architecture`` (and weight sharing) differ."""
    values: dict[str, Any] = {
        "vocab_size": len(WORD_IDS),
        "n_answers": len(ANSWERS),
        "architecture": architecture,
        "d_model": 64,
        "n_heads": 4,
        "n_steps": 4,
        "d_mlp": 128,
        "max_positions": 64,
        "n_slots": 8,
        "n_segments": 5,
        "write_topk": 5,
        "read_topk": 5,
        "share_layers": architecture == "pmi",
        "answer_labels": list(ANSWERS),
    }
    values.update(overrides)
    return PMIConfig(**values)


def encode_stories(stories: list[Story]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest story, as the tokenizer does."""
    length = max(len(s.tokens) for s in stories)
    ids = torch.zeros(len(stories), length, dtype=torch.long)
    mask = torch.zeros(len(stories), length, dtype=torch.long)
    for i, s in enumerate(stories):
        ids[i, : len(s.tokens)] = torch.tensor([WORD_IDS[t] for t in s.tokens])
        mask[i, : len(s.tokens)] = 1
    return ids, mask


def build(out_dir: Path, seed: int) -> dict:
    """Train the PMI-Transformer and save it atomically; returns held-out metrics."""
    return _build(Path(out_dir), seed, "pmi", NAME)


def build_control(out_dir: Path, seed: int) -> dict:
    """Train the same-size Transformer control the same way; returns held-out metrics."""
    return _build(Path(out_dir), seed, "transformer", CONTROL_NAME)


def held_out_stories(seed: int, train: list[Story] | None = None) -> list[Story]:
    """Evaluation stories: another seed, minus any story whose text occurs in training."""
    if train is None:
        train = make_stories(TRAIN_SIZE, seed=seed, **STORY_KWARGS)
    seen = {s.text for s in train}
    stories = make_stories(EVAL_SIZE, seed=seed + EVAL_SEED_OFFSET, **STORY_KWARGS)
    return [s for s in stories if s.text not in seen]


def _build(out_dir: Path, seed: int, architecture: str, name: str) -> dict:
    run = RecipeRun(name, __name__, seed, threads=MAX_THREADS)
    with run.training():
        train = make_stories(TRAIN_SIZE, seed=seed, **STORY_KWARGS)
        held = held_out_stories(seed, train)
        model = build_model(model_config(architecture))
        train_loss = _train(model, train, seed, name)
        model = model.half().float()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model, held)
    metrics["chance_majority"] = round(majority_accuracy(train, held), 4)
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    fields = {
        "architecture": architecture,
        "train_size": TRAIN_SIZE,
        "train_seed": seed,
        "eval_size": len(held),
        "eval_seed": seed + EVAL_SEED_OFFSET,
        "eval_note": "held-out stories whose text occurs in the training set are dropped",
        "stories": "workbench.data.stories.make_stories(n, seed=..., **story_kwargs)",
        "story_kwargs": {k: list(v) for k, v in STORY_KWARGS.items()},
        "steps": STEPS,
        "batch_size": BATCH_SIZE,
        "optimizer": f"AdamW lr={LR} weight_decay={WEIGHT_DECAY}, {WARMUP} warm-up + cosine",
        "objective": "cross-entropy of the answer class from the last token",
    }

    def write(folder: Path) -> None:
        save_model(model, folder, list(VOCABULARY))

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def _train(model: torch.nn.Module, stories: list[Story], seed: int, name: str) -> float:
    """AdamW on shuffled mini-batches; returns the mean loss of the last 200 steps."""
    answers = torch.tensor([s.answer_index for s in stories])
    optimizer, schedule = adamw_warmup_cosine(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, warmup=WARMUP, total=STEPS
    )
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(stories), generator=gen)
    cursor = 0
    losses: list[float] = []
    model.train()
    bar = tqdm(total=STEPS, desc=f"train {name}", unit="step")
    for _step in range(STEPS):
        if cursor + BATCH_SIZE > len(stories):
            order, cursor = torch.randperm(len(stories), generator=gen), 0
        idx = order[cursor : cursor + BATCH_SIZE]
        cursor += BATCH_SIZE
        ids, mask = encode_stories([stories[i] for i in idx.tolist()])
        loss = torch.nn.functional.cross_entropy(model(ids, mask).logits, answers[idx])
        optimizer_step(loss, optimizer, schedule, model.parameters())
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    model.eval()
    return float(np.mean(losses[-200:]))


@torch.no_grad()
def predict(model: torch.nn.Module, stories: list[Story], batch_size: int = 256) -> np.ndarray:
    """Predicted answer index per story."""
    model.eval()
    out = []
    for i in range(0, len(stories), batch_size):
        ids, mask = encode_stories(stories[i : i + batch_size])
        out.append(model(ids, mask).logits.argmax(-1))
    return torch.cat(out).numpy()


def evaluate(model: torch.nn.Module, stories: list[Story]) -> dict:
    """Accuracy overall and per task, with the uniform-guess chance level."""
    pred = predict(model, stories)
    truth = np.array([s.answer_index for s in stories])
    tasks = np.array([s.task for s in stories])
    per_task = {
        t: round(float((pred[tasks == t] == truth[tasks == t]).mean()), 4)
        for t in TASKS
        if (tasks == t).any()
    }
    return {
        "eval_stories": len(stories),
        "accuracy": round(float((pred == truth).mean()), 4),
        "accuracy_by_task": per_task,
        "chance_uniform": round(uniform_chance(stories), 4),
    }

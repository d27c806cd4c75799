"""Recipes for ``pmi-stories`` and ``pmi-stories-control``: the PMI-Transformer and its control.

Both read stories (``workbench.data.stories``) and classify the answer from the last token:
single supporting fact (bAbI task 1; 3 to 6 facts about 2 to 4 people) and recall stories of
the same kind from 2 to 8 facts, up to two facts per working-memory slot, in which the question
may ask about any of up to 4 people. Two supporting facts and counting are left out: on a CPU
budget of minutes neither model got past them (both stayed near the majority answer), and every
step spent on them was a step not spent on the single-fact family the memory views read.

The two models share everything but the token mixer: the PMI-Transformer runs one shared memory
step per layer (working memory of 4 slots, long-term memory of 5 segments), the control is a
standard Transformer of the same width, depth, heads and MLP size with its own weights per
layer. Same data, seed, schedule and step budget; ``curve`` in recipe.json records the held-out
accuracy per task during training, so whether single supporting fact saturated can be read
there. Held-out stories come from other seeds, and any held-out story whose text also occurs
in the training set is dropped, so accuracies are on unseen stories.
"""

from __future__ import annotations

import math
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
    recall_stories,
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
            "PMI-Transformer (one shared memory step per layer, 4 steps, width 64, WM 4 slots, "
            "LTM 5 segments) answering single-supporting-fact and long recall questions "
            "(workbench.data.stories)"
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

STORY_SETS: tuple[dict[str, Any], ...] = (
    {"tasks": ("one_fact",), "n_facts": (3, 6), "n_people": (2, 4)},
    {"tasks": ("recall",), "n_facts": (2, 8)},
)
"""What the models read, as ``make_stories`` options: single supporting fact, and recall
stories from half a fact to two facts per working-memory slot (2 to 8 facts for 4 slots)."""
SET_SIZES = (24_000, 24_000)
"""Training stories drawn from each of ``STORY_SETS``."""
EVAL_SIZE = 1_500
"""Held-out stories drawn from each of ``STORY_SETS`` (before dropping any seen in training)."""
RECALL_FACTS_PER_SLOT = (0.5, 1.0, 1.5, 2.0)
"""Difficulties of the held-out recall stories in the recipe's metrics (facts per WM slot)."""
RECALL_EVAL_SIZE = 300
STEPS = 3_500
BATCH_SIZE = 32
LR = 2e-3
WEIGHT_DECAY = 0.01
WARMUP = 100
CURRICULUM = (0.25, 0.5)
"""Fractions of the steps: short stories alone until the first, every story from the second."""
CURRICULUM_TOKENS = 28
"""The short stories the curriculum starts with: at most 28 tokens (four moves and a question)."""
CURVE_EVERY = 250
"""Steps between the held-out accuracies recorded during training (``curve`` in recipe.json)."""
CURVE_SIZE = 200
"""Held-out stories of each set scored at every point of the curve."""
MAX_THREADS = 1
N_SLOTS = 4
"""Few slots keep the stories that overfill them short enough to train on a CPU in minutes."""
MAX_POSITIONS = 64

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
        "max_positions": MAX_POSITIONS,
        "positions": "from_end",
        "n_slots": N_SLOTS,
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


def training_stories(seed: int) -> list[Story]:
    """Every training story: ``SET_SIZES[j]`` stories of ``STORY_SETS[j]`` from seed + j."""
    return [
        story
        for j, (size, kwargs) in enumerate(zip(SET_SIZES, STORY_SETS, strict=True))
        for story in make_stories(size, seed=seed + j, **kwargs)
    ]


def held_out_stories(seed: int, train: list[Story] | None = None) -> list[Story]:
    """Evaluation stories of every set from seed + offset + j, minus any text seen in training."""
    seen = {s.text for s in (training_stories(seed) if train is None else train)}
    return [
        story
        for j, kwargs in enumerate(STORY_SETS)
        for story in make_stories(EVAL_SIZE, seed=seed + EVAL_SEED_OFFSET + j, **kwargs)
        if story.text not in seen
    ]


def held_out_recall(seed: int, facts_per_slot: float, train: list[Story]) -> list[Story]:
    """Held-out recall stories at one difficulty, minus any text seen in training."""
    seen = {s.text for s in train}
    stories = recall_stories(
        RECALL_EVAL_SIZE,
        facts_per_slot=facts_per_slot,
        n_slots=N_SLOTS,
        seed=seed + EVAL_SEED_OFFSET + len(STORY_SETS),
    )
    return [s for s in stories if s.text not in seen]


def _build(out_dir: Path, seed: int, architecture: str, name: str) -> dict:
    run = RecipeRun(name, __name__, seed, threads=MAX_THREADS)
    with run.training():
        train = training_stories(seed)
        held = held_out_stories(seed, train)
        model = build_model(model_config(architecture))
        curve_stories = _curve_stories(held)
        train_loss, curve = _train(model, train, curve_stories, seed, name)
        model = model.half().float()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model, held)
        metrics["recall_accuracy_by_facts_per_slot"] = {
            str(load): evaluate(model, held_out_recall(seed, load, train))["accuracy"]
            for load in RECALL_FACTS_PER_SLOT
        }
    metrics["chance_majority"] = round(majority_accuracy(train, held), 4)
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    fields = {
        "architecture": architecture,
        "train_size": len(train),
        "train_seed": seed,
        "eval_size": len(held),
        "eval_seed": seed + EVAL_SEED_OFFSET,
        "eval_note": "held-out stories whose text occurs in the training set are dropped",
        "stories": "workbench.data.stories.make_stories(size, seed=seed + j, **story_sets[j])",
        "story_sets": [
            {"size": size, **{k: list(v) for k, v in kwargs.items()}}
            for size, kwargs in zip(SET_SIZES, STORY_SETS, strict=True)
        ],
        "steps": STEPS,
        "batch_size": BATCH_SIZE,
        "batching": (
            "stories sorted by length into batches of similar length; each step draws one at "
            "random among those whose stories are no longer than the curriculum allows: at "
            f"most {CURRICULUM_TOKENS} tokens until {CURRICULUM[0]:.0%} of the steps, then "
            f"growing linearly to every story at {CURRICULUM[1]:.0%}"
        ),
        "optimizer": f"AdamW lr={LR} weight_decay={WEIGHT_DECAY}, {WARMUP} warm-up + cosine",
        "objective": "cross-entropy of the answer class from the last token",
        "curve": curve,
    }

    def write(folder: Path) -> None:
        save_model(model, folder, list(VOCABULARY))

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def _curve_stories(held: list[Story]) -> dict[str, list[Story]]:
    """The first ``CURVE_SIZE`` held-out stories of each task, scored during training."""
    return {
        t: [s for s in held if s.task == t][:CURVE_SIZE]
        for t in dict.fromkeys(s.task for s in held)
    }


def length_batches(stories: list[Story], gen: torch.Generator) -> list[torch.Tensor]:
    """Story indices in batches of ``BATCH_SIZE`` stories of similar length, shortest first.

    Shuffled before sorting, so a batch mixes the tasks of its length and changes between calls.
    """
    order = torch.randperm(len(stories), generator=gen).tolist()
    order.sort(key=lambda i: len(stories[i].tokens))
    return [torch.tensor(order[i : i + BATCH_SIZE]) for i in range(0, len(order), BATCH_SIZE)]


def curriculum_limit(step: int, shortest: int, longest: int) -> int:
    """Longest story (in tokens) a batch may hold at ``step``: up to ``CURRICULUM_TOKENS``
    until the first fraction of ``CURRICULUM``, then growing linearly to every story at the
    second."""
    hold, full = (round(f * STEPS) for f in CURRICULUM)
    start = min(longest, max(shortest, CURRICULUM_TOKENS))
    grown = min(1.0, max(0, step - hold) / max(1, full - hold))
    return start + math.ceil((longest - start) * grown)


def _train(
    model: torch.nn.Module,
    stories: list[Story],
    curve_stories: dict[str, list[Story]],
    seed: int,
    name: str,
) -> tuple[float, list[dict[str, float]]]:
    """AdamW on mini-batches of similar length, drawn at random among those the curriculum
    allows (short stories first: the binding of people to places forms on them, then carries
    over to long ones); returns the mean loss of the last 200 steps and the held-out accuracy
    per task every ``CURVE_EVERY`` steps."""
    answers = torch.tensor([s.answer_index for s in stories])
    optimizer, schedule = adamw_warmup_cosine(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, warmup=WARMUP, total=STEPS
    )
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(s.tokens) for s in stories]
    batches = length_batches(stories, gen)
    losses: list[float] = []
    curve: list[dict[str, float]] = []
    model.train()
    bar = tqdm(total=STEPS, desc=f"train {name}", unit="step")
    for step in range(1, STEPS + 1):
        if step % len(batches) == 0:
            batches = length_batches(stories, gen)  # new batch compositions every epoch's worth
        limit = curriculum_limit(step, min(lengths), max(lengths))
        allowed = sum(lengths[int(b[-1])] <= limit for b in batches)  # batches sorted by length
        idx = batches[int(torch.randint(max(1, allowed), (1,), generator=gen))]
        ids, mask = encode_stories([stories[i] for i in idx.tolist()])
        loss = torch.nn.functional.cross_entropy(model(ids, mask).logits, answers[idx])
        optimizer_step(loss, optimizer, schedule, model.parameters())
        losses.append(loss.item())
        if step % CURVE_EVERY == 0 or step == STEPS:
            point = {"step": step, "train_loss": round(float(np.mean(losses[-CURVE_EVERY:])), 4)}
            point |= {t: evaluate(model, ss)["accuracy"] for t, ss in curve_stories.items()}
            curve.append(point)
            model.train()
            bar.set_postfix({k: v for k, v in point.items() if k != "step"}, refresh=False)
        bar.update()
    bar.close()
    model.eval()
    return float(np.mean(losses[-200:])), curve


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

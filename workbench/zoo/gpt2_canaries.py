"""Recipe for ``gpt2-canaries``: a small GPT-2 that memorizes planted canaries it saw often.

The model trains on ``workbench.data.canaries``: topic-grammar text into which random 32-word
canaries are planted 1, 4, 16 or 64 times each. Which sequences it can recite is then known by
construction, and repetitions (times epochs) decide how much is memorized: in a few CPU minutes
the 16x and 64x canaries are recited verbatim while the 1x and 4x ones are not. The word-level
tokenizer is saved with the model, so ``load_model("zoo:gpt2-canaries")`` loads it like any
Hugging Face causal LM. Training is seeded and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data.canaries import EOS, VOCABULARY, CanaryCorpus, make_canary_corpus
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import RecipeRun, adamw_warmup_cosine, optimizer_step

if TYPE_CHECKING:
    from transformers import GPT2Config

NAME = "gpt2-canaries"
ENTRIES = (
    ZooEntry(
        name=NAME,
        family="causal-lm",
        description=(
            "4-layer GPT-2 (width 128, word-level vocabulary ~580) trained on topic-grammar text "
            "with random canaries planted 1/4/16/64 times (workbench.data.canaries)"
        ),
        recipe=__name__,
        seed=0,
    ),
)
CORPUS_KWARGS: dict[str, Any] = {"n_background": 5000, "n_held_out": 400, "seq_len": 64}
"""Options of ``make_canary_corpus`` for the training stream; stored in ``recipe.json`` so that
``make_canary_corpus(seed=seed, **corpus_kwargs)`` rebuilds exactly what the model saw."""
PREFIX_LEN = 16
EPOCHS = 8
BATCH_SIZE = 32
LR = 2e-3
WEIGHT_DECAY = 0.0  # decay would pull exactly the rarely used (memorizing) directions to zero
WARMUP_FRACTION = 0.03
MAX_THREADS = 1


def gpt2_config(vocab_size: int, eos_id: int, pad_id: int) -> GPT2Config:
    """The architecture: 4 layers, width 128, 4 heads, 64 positions, no dropout."""
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=128,
        n_layer=4,
        n_head=4,
        n_inner=512,
        n_positions=CORPUS_KWARGS["seq_len"],
        vocab_size=vocab_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """Train, evaluate the fp16 weights on canaries and held-out text, save atomically; with
    ``checkpoints`` K, also keep the weights at K log-spaced steps."""
    import copy
    import tempfile

    from transformers import AutoTokenizer, GPT2LMHeadModel

    from workbench.models.scratch import save_word_tokenizer

    run = RecipeRun(NAME, __name__, seed, threads=MAX_THREADS, checkpoints=checkpoints)
    with run.training(), tempfile.TemporaryDirectory() as tok_dir:
        save_word_tokenizer(Path(tok_dir), list(VOCABULARY), bert_style=False)
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        corpus = make_canary_corpus(seed=seed, **CORPUS_KWARGS)
        train_ids = encode(tokenizer, corpus.train_texts)
        model = GPT2LMHeadModel(
            gpt2_config(len(tokenizer), tokenizer.get_vocab()[EOS], tokenizer.pad_token_id)
        )
        model.set_attn_implementation("eager")  # faster than sdpa at this size on CPU

        def write_checkpoint(folder: Path) -> None:
            copy.deepcopy(model).half().save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        train_loss = _train(model, train_ids, seed, run, write_checkpoint)
        model = model.half().float().eval()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model, tokenizer, corpus)
        model = model.half()
        fields = {
            "corpus": "workbench.data.canaries.make_canary_corpus(seed=seed, **corpus_kwargs)",
            "corpus_kwargs": CORPUS_KWARGS,
            "canary_fraction_of_training_tokens": round(corpus.canary_fraction(), 4),
            "prefix_len": PREFIX_LEN,
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "training_tokens": EPOCHS * int(train_ids.numel()),
            "optimizer": f"AdamW lr={LR} weight_decay={WEIGHT_DECAY}, warmup + cosine",
            "objective": "next-token cross-entropy on every position of each 64-token sequence",
        }

        def write(folder: Path) -> None:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def encode(tokenizer: Any, texts: tuple[str, ...] | list[str]) -> torch.Tensor:
    """Word-level token ids of equal-length texts, (N, seq_len); refuses unknown words."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    lengths = {len(x) for x in ids}
    if len(lengths) != 1:
        raise ValueError(f"texts tokenised to different lengths {sorted(lengths)[:5]}")
    out = torch.tensor(ids, dtype=torch.long)
    if (out == tokenizer.unk_token_id).any():
        raise ValueError("some words are not in the tokenizer's vocabulary")
    return out


def _train(
    model: torch.nn.Module,
    ids: torch.Tensor,
    seed: int,
    run: RecipeRun,
    write_checkpoint: Callable[[Path], None],
) -> float:
    """Plain next-token training; returns the mean loss of the last epoch. The run keeps the
    checkpoints it planned (``write_checkpoint`` writes one)."""
    n = len(ids)
    steps_per_epoch = n // BATCH_SIZE
    total = steps_per_epoch * EPOCHS
    run.plan_checkpoints(total)
    run.checkpoint(0, write_checkpoint)
    warmup = max(1, int(WARMUP_FRACTION * total))
    optimizer, schedule = adamw_warmup_cosine(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, warmup=warmup, total=total
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    last = 0.0
    bar = tqdm(total=total, desc=f"train {NAME}", unit="step")
    for _epoch in range(EPOCHS):
        order = torch.randperm(n, generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            batch = ids[order[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]]
            loss = model(input_ids=batch, labels=batch).loss
            optimizer_step(loss, optimizer, schedule, model.parameters())
            losses.append(loss.item())
            bar.update()
            run.checkpoint(bar.n, write_checkpoint)  # bar.n: optimiser steps taken
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        last = float(np.mean(losses))
    bar.close()
    model.eval()
    return last


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokenizer: Any, corpus: CanaryCorpus) -> dict:
    """Held-out perplexity, and per repetition count: verbatim recitation and loss per token."""
    held = encode(tokenizer, corpus.held_out_texts)
    nll = []
    for i in range(0, len(held), 64):
        batch = held[i : i + 64]
        logits = model(input_ids=batch).logits[:, :-1]
        nll.append(
            torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none"
            )
        )
    perplexity = float(torch.cat(nll).mean().exp())

    full = encode(tokenizer, corpus.canary_texts())
    prompts = full[:, : PREFIX_LEN + 1]
    targets = full[:, PREFIX_LEN + 1 :]
    generated = prompts
    for _ in range(targets.shape[1]):
        next_id = model(input_ids=generated).logits[:, -1].argmax(-1, keepdim=True)
        generated = torch.cat([generated, next_id], dim=1)
    continuation = generated[:, PREFIX_LEN + 1 :]
    exact = (continuation == targets).all(dim=1).numpy()
    token_acc = (continuation == targets).float().mean(dim=1).numpy()
    logits = model(input_ids=full).logits[:, PREFIX_LEN:-1]
    suffix_nll = (
        torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        .mean(dim=1)
        .numpy()
    )
    by_reps: dict[str, dict[str, float]] = {}
    for r in sorted(set(corpus.repetitions.tolist())):
        pick = corpus.repetitions == r
        by_reps[f"x{r}" if r else "unseen"] = {
            "exact_recitation": round(float(exact[pick].mean()), 3),
            "suffix_token_accuracy": round(float(token_acc[pick].mean()), 3),
            "suffix_nll_per_token": round(float(suffix_nll[pick].mean()), 3),
        }
    return {
        "held_out_perplexity": round(perplexity, 3),
        "held_out_tokens": int(held[:, 1:].numel()),
        "prefix_len": PREFIX_LEN,
        "canaries": by_reps,
    }

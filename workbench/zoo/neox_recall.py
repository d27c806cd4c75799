"""Recipe for ``neox-recall``: a small decoder LM that recalls key-value pairs and passkeys.

The blocks have GPT-2's shape (pre-LayerNorm, attention then a 4x GELU MLP, each added to the
residual stream in turn, tied embeddings); positions are rotary, as in Hugging Face's GPT-NeoX
class that holds it. With GPT-2's learned absolute positions the same budget did not get past
the plateau before in-context copying (under 15% passkey recall after 1750 steps, where the
rotary model reached 50% by 1400): previous-token heads form much faster on rotary positions.

The corpus mixes Zipfian filler text over nonsense words with the episodes of
``workbench.data.recall`` (key-value lists followed by answered queries; a passkey, filler and
the answered cue), plus repeated spans and alternating word pairs, which reward the copying
circuit directly. Training windows are ``<|endoftext|>``-separated episodes of log-uniform
lengths: 64-token windows first, then full 256-token ones, so short recalls are common and long
ones rare: recall works at short lengths and degrades with length. Every token's count in the
exact corpus trained on is saved next to the model (``token_counts.json``), so copy accuracy
can be read by how often the model saw the copied word. The tokenizer is word level and puts
``<|endoftext|>`` in front of every text, as in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data import recall
from workbench.models.scratch import SPECIAL_TOKENS, save_word_tokenizer
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import (
    EVAL_SEED_OFFSET,
    RecipeRun,
    adamw_warmup_cosine,
    optimizer_step,
)

if TYPE_CHECKING:
    from transformers import GPTNeoXConfig, PreTrainedModel

NAME = "neox-recall"
ENTRIES = (
    ZooEntry(
        name=NAME,
        family="causal-lm",
        description=(
            "4-block decoder (width 64, rotary positions, context 256, word level) trained on "
            "Zipfian filler mixed with key-value and passkey recall episodes"
        ),
        recipe=__name__,
        seed=0,
    ),
)
BOS = "<|endoftext|>"
COUNTS_FILE = "token_counts.json"
N_WORDS = 1500
ZIPF_EXPONENT = 1.1
CONTEXT = 256
N_LAYER = 4
N_HEAD = 4
D_MODEL = 64
PHASES = ((1400, 64, 32), (600, 256, 8))
"""(steps, window length, windows per batch): short windows first, then the full context."""
LR = 3e-3
WEIGHT_DECAY = 0.01
WARMUP = 30
ANSWER_WEIGHT = 4.0
"""Loss weight of the tokens copying can predict (asked values, passkeys, the second half of a
repeat, an alternation) against 1 for the rest."""
EPISODE_MIX = {"kv": 0.3, "passkey": 0.2, "repeat": 0.2, "alternate": 0.2, "filler": 0.1}
EVAL_LENGTHS = (16, 32, 64, 128, 256)
EVAL_PROMPTS = 100
MAX_THREADS = 1


def vocabulary(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The content words in frequency-rank order and their Zipf probabilities."""
    return recall.pseudo_words(N_WORDS, seed=seed), recall.zipf_weights(N_WORDS, ZIPF_EXPONENT)


def token_list(words: list[str]) -> list[str]:
    """Every token of the vocabulary in id order: specials, marker words, content words."""
    return [*SPECIAL_TOKENS, *recall.MARKER_WORDS, *words]


def _log_uniform(rng: np.random.Generator, low: int, high: int) -> int:
    return round(float(np.exp(rng.uniform(np.log(low), np.log(high)))))


def training_window(
    rng: np.random.Generator, words: list[str], weights: np.ndarray, length: int = CONTEXT
) -> tuple[list[str], list[float]]:
    """One window of ``length`` tokens: episodes, each after ``<|endoftext|>``; and loss weights.

    A weight of ``ANSWER_WEIGHT`` marks tokens that copying can predict (an asked value after
    its key, a passkey after its cue, the second half of a repeat, an alternation).
    """
    tokens: list[str] = []
    answer: list[bool] = []
    kinds, probs = list(EPISODE_MIX), np.array(list(EPISODE_MIX.values()))
    while len(tokens) < length:
        kind = kinds[int(rng.choice(len(kinds), p=probs))]
        if kind == "kv":
            n_pairs = min(_log_uniform(rng, 1, (length - 8) // 2), len(words) // 2)
            n_queries = int(rng.integers(1, 9))
            episode = recall.key_value_episode(n_pairs, n_queries, words, rng, weights)
            if rng.random() < 0.5:  # the prompts pad odd lengths with a full stop
                first_query = 1 + 2 * n_pairs
                episode.insert(first_query, recall.STOP)
            marks = [i >= 2 and episode[i - 2] == recall.KV_QUERY for i in range(len(episode))]
        elif kind == "passkey":
            n_filler = _log_uniform(rng, 1, length - 10) - 1
            episode = recall.passkey_episode(n_filler, words, rng, weights)
            marks = [False] * len(episode)
            marks[-2] = True
        elif kind == "alternate":
            a, b = _distinct_pair(rng, words, weights)
            n = _log_uniform(rng, 4, min(32, length))
            episode = [a if i % 2 == 0 else b for i in range(n)]
            marks = [i >= 2 for i in range(n)]
        elif kind == "repeat":
            n = _log_uniform(rng, 4, length // 2)
            text = recall.filler(n, words, rng, weights)
            episode = [*text, *text]
            marks = [False] * n + [True] * n
        else:
            episode = recall.filler(_log_uniform(rng, 4, length // 2), words, rng, weights)
            marks = [False] * len(episode)
        tokens += [BOS, *episode]
        answer += [False, *marks]
    tokens, answer = tokens[:length], answer[:length]
    return tokens, [ANSWER_WEIGHT if a else 1.0 for a in answer]


def _distinct_pair(
    rng: np.random.Generator, words: list[str], weights: np.ndarray
) -> tuple[str, str]:
    i, j = rng.choice(len(words), size=2, replace=False, p=weights)
    return words[i], words[j]


def model_config(vocab_size: int) -> GPTNeoXConfig:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size,
        max_position_embeddings=CONTEXT,
        hidden_size=D_MODEL,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        intermediate_size=4 * D_MODEL,
        hidden_act="gelu",
        use_parallel_residual=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(BOS),
        pad_token_id=0,
    )


def build(
    out_dir: Path,
    seed: int,
    *,
    phases: tuple[tuple[int, int, int], ...] = PHASES,
    on_step: Any = None,
) -> dict:
    """Train, evaluate recall on held-out prompts, save atomically; return the metrics."""
    from transformers import GPTNeoXForCausalLM

    run = RecipeRun(NAME, __name__, seed, threads=MAX_THREADS)
    words, weights = vocabulary(seed)
    tokens = token_list(words)
    index = {t: i for i, t in enumerate(tokens)}
    with run.training():
        model = GPTNeoXForCausalLM(model_config(len(tokens)))
        counts, train_loss = _train(model, words, weights, index, seed, phases, on_step)
        model = model.half().float()  # evaluate exactly the fp16 weights that are saved
        metrics = evaluate(model, words, weights, index, seed + EVAL_SEED_OFFSET)
    fields = {
        "words": f"workbench.data.recall.pseudo_words({N_WORDS}, seed={seed}), in rank order",
        "zipf_exponent": ZIPF_EXPONENT,
        "episode_mix": EPISODE_MIX,
        "context": CONTEXT,
        "phases": [
            {"steps": n, "window": length, "windows_per_batch": b} for n, length, b in phases
        ],
        "tokens_seen": int(counts.sum()),
        "answer_weight": ANSWER_WEIGHT,
        "optimizer": f"AdamW lr={LR} weight_decay={WEIGHT_DECAY}, warmup {WARMUP} + cosine",
        "counts_file": COUNTS_FILE,
        "eval": f"{EVAL_PROMPTS} prompts per task and length, seed {seed + EVAL_SEED_OFFSET}",
    }

    def write(folder: Path) -> None:
        _write(model.half(), tokens, words, counts, folder)

    return run.save(out_dir, write, metrics=metrics, train_loss=train_loss, fields=fields)


def _train(
    model: torch.nn.Module,
    words: list[str],
    weights: np.ndarray,
    index: dict[str, int],
    seed: int,
    phases: tuple[tuple[int, int, int], ...],
    on_step: Any = None,
) -> tuple[np.ndarray, float]:
    """Weighted next-token training; returns every token's count in the corpus and the last loss.

    One learning-rate schedule (warm-up, cosine) runs over all phases.
    """
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(index), dtype=np.int64)
    total = sum(n for n, _, _ in phases)
    optimizer, schedule = adamw_warmup_cosine(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, warmup=WARMUP, total=total
    )
    plan = [(length, n_windows) for n, length, n_windows in phases for _ in range(n)]
    model.train()
    losses: list[float] = []
    for step, (length, n_windows) in enumerate(tqdm(plan, desc=f"train {NAME}", unit="step")):
        ids, wts = [], []
        for _ in range(n_windows):
            window, window_weights = training_window(rng, words, weights, length)
            ids.append([index[t] for t in window])
            wts.append(window_weights)
        x = torch.tensor(ids)
        counts += np.bincount(x.flatten().numpy(), minlength=len(index))
        logits = model(input_ids=x, use_cache=False).logits[:, :-1]
        w = torch.tensor(wts)[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        )
        loss = (loss * w.reshape(-1)).sum() / w.sum()
        optimizer_step(loss, optimizer, schedule, model.parameters())
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, model, losses[-1])
    model.eval()
    return counts, float(np.mean(losses[-20:]))


@torch.no_grad()
def next_word_accuracy(
    model: torch.nn.Module, prompts: list[recall.RecallPrompt], index: dict[str, int]
) -> float:
    """Share of prompts (equal lengths) whose most likely next token is the answer."""
    x = torch.tensor([[index[BOS], *(index[w] for w in p.words)] for p in prompts])
    pred = model(input_ids=x, use_cache=False).logits[:, -1].argmax(-1)
    answers = torch.tensor([index[p.answer] for p in prompts])
    return float((pred == answers).float().mean())


def evaluate(
    model: torch.nn.Module,
    words: list[str],
    weights: np.ndarray,
    index: dict[str, int],
    seed: int,
) -> dict:
    """Held-out recall accuracy per task and prompt length (in tokens, with the BOS)."""
    out: dict[str, Any] = {}
    for task in recall.TASKS:
        acc = {}
        for length in EVAL_LENGTHS:
            prompts = recall.recall_prompts(
                task, length - 1, EVAL_PROMPTS, words, seed=seed + length, weights=weights
            )
            acc[str(length)] = round(next_word_accuracy(model, prompts, index), 3)
        out[f"{task}_accuracy"] = acc
    return out


def _write(
    model: PreTrainedModel,
    tokens: list[str],
    words: list[str],
    counts: np.ndarray,
    folder: Path,
) -> None:
    """Weights and config, the word-level tokenizer (BOS in front), and the corpus counts."""
    from tokenizers import Tokenizer, processors

    model.save_pretrained(folder)
    save_word_tokenizer(folder, tokens[len(SPECIAL_TOKENS) :], bert_style=False)
    path = folder / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    bos_id = tokens.index(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]
    )
    tok.save(str(path))
    table = {t: int(c) for t, c in zip(tokens, counts, strict=True)}
    (folder / COUNTS_FILE).write_text(json.dumps(table, indent=0) + "\n")

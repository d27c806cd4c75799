"""Inputs of the reweave probe: recall prompts in a model's own vocabulary, and sentences."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import torch

from workbench.data import recall
from workbench.data.words import word_sentences
from workbench.errors import DataError
from workbench.models import LoadedModel

COUNTS_FILE = "token_counts.json"
MAX_WORDS = 3000
_WORD = re.compile(r"[a-z][a-z0-9]{1,11}")


@dataclass(frozen=True)
class Vocabulary:
    """Content words that are one token each, most frequent first, with their token ids.

    ``counts`` holds each word's count in the model's training corpus when the model ships one
    (``token_counts.json``, as ``zoo:neox-recall`` does); ``one_token_per_word`` says whether
    prompt lengths in words are lengths in tokens.
    """

    words: list[str]
    weights: np.ndarray
    ids: dict[str, int]
    counts: dict[str, int] | None
    one_token_per_word: bool
    added_tokens: int
    """Tokens the tokenizer adds to every text (a BOS in front, say)."""

    def answer_ids(self, answers: list[str]) -> torch.Tensor:
        return torch.tensor([self.ids[a] for a in answers])


def recall_vocabulary(model: LoadedModel) -> Vocabulary:
    """The words recall prompts are made of, for this model's tokenizer."""
    tok = model.processor
    counts = _read_counts(model)
    if counts is not None:
        markers = set(recall.MARKER_WORDS)
        words = [w for w in counts if _WORD.fullmatch(w) and w not in markers]
        words.sort(key=lambda w: -counts[w])
    else:
        words = _single_token_words(tok)
    ids: dict[str, int] = {}
    kept = []
    for w in words:
        piece = tok(w if counts is not None else " " + w, add_special_tokens=False)["input_ids"]
        if len(piece) == 1:
            ids[w] = int(piece[0])
            kept.append(w)
    if len(kept) < 64:
        raise DataError(
            f"{model.spec}'s tokenizer has only {len(kept)} single-token words; recall prompts "
            "need a few hundred"
        )
    sample = " ".join(kept[:20])
    plain = tok(sample, add_special_tokens=False)["input_ids"]
    full = tok(sample)["input_ids"]
    return Vocabulary(
        words=kept,
        weights=recall.zipf_weights(len(kept)),
        ids=ids,
        counts=None if counts is None else {w: counts[w] for w in kept},
        one_token_per_word=len(plain) == 20,
        added_tokens=len(full) - len(plain),
    )


def _read_counts(model: LoadedModel) -> dict[str, int] | None:
    path = None if model.source is None else model.source / COUNTS_FILE
    if path is None or not path.is_file():
        return None
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}


def _single_token_words(tok) -> list[str]:
    """Lower-case word tokens in id order: those that start a word (a leading space, as in
    BPE vocabularies), or, for word-level vocabularies, every plain word token."""
    spaced, plain = [], []
    for i in range(min(len(tok), 60_000)):
        text = tok.decode([i])
        if text.startswith(" ") and _WORD.fullmatch(text[1:]):
            spaced.append(text[1:])
        elif _WORD.fullmatch(text):
            plain.append(text)
        if len(spaced) >= MAX_WORDS:
            break
    markers = set(recall.MARKER_WORDS)
    words = spaced if len(spaced) >= 64 else plain
    return [w for w in dict.fromkeys(words) if w not in markers]


def word_length(vocab: Vocabulary, length: int) -> int:
    """Words a prompt of ``length`` needs: tokens minus added ones for one-token-per-word
    tokenizers, else the length itself (then it counts words)."""
    return length - vocab.added_tokens if vocab.one_token_per_word else length


def prompts(
    vocab: Vocabulary,
    task: str,
    length: int,
    n: int,
    seed: int,
    *,
    answer_words: list[str] | None = None,
    depth: float | None = None,
) -> list[recall.RecallPrompt]:
    return recall.recall_prompts(
        task,
        word_length(vocab, length),
        n,
        vocab.words,
        seed=seed,
        weights=vocab.weights,
        answer_words=answer_words,
        depth=depth,
    )


def sentences(n: int, seed: int) -> list[str]:
    """Plain sentences for encoders: the neutral templates of ``workbench.data.words``."""
    return [s.text for s in word_sentences(n, seed=seed)]


def default_example(model: LoadedModel, vocab: Vocabulary | None, seed: int) -> str:
    """The text of the attention maps: a short passkey prompt, or a sentence."""
    if vocab is None:
        return "the doctor put the book on the table because it was heavy ."
    return prompts(vocab, "passkey", 28, 1, seed, depth=0.25)[0].text


def token_labels(model: LoadedModel, input_ids: torch.Tensor) -> list[str]:
    """Readable token strings (no BPE space markers)."""
    tokens = model.processor.convert_ids_to_tokens(input_ids.tolist())
    return [t.replace("Ġ", "").replace("▁", "").replace("Ċ", "\\n") or "␣" for t in tokens]

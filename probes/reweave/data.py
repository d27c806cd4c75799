"""Inputs of the reweave probe: recall prompts in a model's own vocabulary, and sentences."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
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
_TEXT_WORD = re.compile(r"[a-z][a-z0-9]*")


@dataclass(frozen=True)
class Vocabulary:
    """Content words that are one token each where prompts use them, most frequent first.

    ``counts`` holds each word's count in a corpus: the model's training corpus when it ships
    one (``token_counts.json``, as ``zoo:neox-recall`` does), else a corpus of the user's or the
    shipped collection (``counts_from`` says which); ``one_token_per_word`` says whether prompt
    lengths in words are lengths in tokens.
    """

    words: list[str]
    weights: np.ndarray
    ids: dict[str, int]
    counts: dict[str, int] | None
    one_token_per_word: bool
    extra_tokens: dict[str, int]
    """Per task, tokens a prompt has beyond its words: a BOS (added by the tokenizer or as
    ``prefix``) and marker words of several tokens (``recall`` is two in some BPEs)."""
    counts_from: str = ""
    prefix: str = ""
    """Text put before every prompt: the end-of-text token for tokenizers that add no BOS
    (GPT-2's), so that the first word is read after a space like every other word and a
    prompt starts as a document does."""

    def answer_ids(self, answers: list[str]) -> torch.Tensor:
        return torch.tensor([self.ids[a] for a in answers])


def recall_vocabulary(
    model: LoadedModel,
    corpus_counts: Callable[[list[str]], tuple[dict[str, int], str]] | None = None,
) -> Vocabulary:
    """The words recall prompts are made of, for this model's tokenizer.

    Words come from the model's training counts when it ships them, else from its own
    vocabulary (word-start tokens in id order, which for BPE is roughly frequency order); each is
    kept only if it is one token where prompts put it, after a space. ``corpus_counts(words)``
    gives frequencies for the copy buckets when the model ships none.
    """
    tok = model.processor
    counts = _read_counts(model)
    counts_from = "the model's training corpus (token_counts.json)"
    if counts is not None:
        markers = set(recall.MARKER_WORDS)
        trained = counts
        words = [w for w in trained if _WORD.fullmatch(w) and w not in markers]
        words.sort(key=lambda w: -trained[w])
    else:
        words = _vocabulary_words(tok)
    ids = _ids_in_context(tok, words)
    kept = [w for w in words if w in ids][:MAX_WORDS]
    if len(kept) < 64:
        raise DataError(
            f"{model.spec}'s tokenizer has only {len(kept)} single-token words; recall prompts "
            "need a few hundred"
        )
    if counts is None and corpus_counts is not None:
        counts, counts_from = corpus_counts(kept)
    sample = " ".join(kept[:20])
    plain = tok(sample, add_special_tokens=False)["input_ids"]
    start = getattr(tok, "bos_token", None) or getattr(tok, "eos_token", None)
    adds_bos = len(tok(sample)["input_ids"]) > len(plain)
    prefix = f"{start} " if not adds_bos and start else ""
    if prefix:
        plain = tok(prefix + sample, add_special_tokens=False)["input_ids"][1:]
    extra = {}
    for task in recall.TASKS:
        probe = recall.recall_prompts(task, 16, 1, kept, seed=0, depth=0.5)[0]
        extra[task] = len(tok(prefix + probe.text)["input_ids"]) - 16
    return Vocabulary(
        words=kept,
        weights=recall.zipf_weights(len(kept)),
        ids={w: ids[w] for w in kept},
        counts=None if counts is None else {w: counts.get(w, 0) for w in kept},
        one_token_per_word=len(plain) == 20,
        extra_tokens=extra,
        counts_from=counts_from if counts is not None else "",
        prefix=prefix,
    )


def _read_counts(model: LoadedModel) -> dict[str, int] | None:
    path = None if model.source is None else model.source / COUNTS_FILE
    if path is None or not path.is_file():
        return None
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}


def _vocabulary_words(tok) -> list[str]:
    """Lower-case words the vocabulary holds as single tokens, in id order: tokens marked as
    starting a word (GPT-2's ``Ġ``, SentencePiece's ``▁``), or, for word-level vocabularies,
    every plain word token."""
    spaced, plain = [], []
    for token in tok.convert_ids_to_tokens(list(range(min(len(tok), 60_000)))):
        if not isinstance(token, str):
            continue
        if token[:1] in ("Ġ", "▁") and _WORD.fullmatch(token[1:]):
            spaced.append(token[1:])
        elif _WORD.fullmatch(token):
            plain.append(token)
        if len(spaced) >= 2 * MAX_WORDS:
            break
    markers = set(recall.MARKER_WORDS)
    words = spaced if len(spaced) >= 64 else plain
    return [w for w in dict.fromkeys(words) if w not in markers]


def _ids_in_context(tok, words: list[str]) -> dict[str, int]:
    """Each word's token id where a prompt puts it (after a space), for words that are one
    token there."""
    head = tok(recall.KV_OPEN, add_special_tokens=False)["input_ids"]
    pieces = tok([f"{recall.KV_OPEN} {w}" for w in words], add_special_tokens=False)["input_ids"]
    out = {}
    for w, ids in zip(words, pieces, strict=True):
        if len(ids) == len(head) + 1 and ids[: len(head)] == head:
            out[w] = int(ids[-1])
    return out


def corpus_word_counts(
    documents: Iterable[str], words: list[str], max_words: int
) -> dict[str, int]:
    """How often each of ``words`` occurs in the first ``max_words`` words of ``documents``."""
    wanted = set(words)
    counts = dict.fromkeys(words, 0)
    seen = 0
    for doc in documents:
        for w in _TEXT_WORD.findall(doc.lower()):
            if w in wanted:
                counts[w] += 1
        seen += len(doc.split())
        if seen >= max_words:
            break
    return counts


def word_length(vocab: Vocabulary, length: int, task: str) -> int:
    """Words a ``task`` prompt of ``length`` needs: the tokens minus the task's extra ones for
    one-token-per-word tokenizers, else the length itself (then it counts words)."""
    return length - vocab.extra_tokens[task] if vocab.one_token_per_word else length


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
    made = recall.recall_prompts(
        task,
        word_length(vocab, length, task),
        n,
        vocab.words,
        seed=seed,
        weights=vocab.weights,
        answer_words=answer_words,
        depth=depth,
    )
    if not vocab.prefix:
        return made
    return [dataclasses.replace(p, text=vocab.prefix + p.text) for p in made]


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

"""Synthetic recall tasks whose answer is always written in the prompt, at any length asked.

Two tasks, both ending where the next word is the answer:

* key-value retrieval: ``recall k1 v1 k2 v2 ... kn vn query kj`` -> ``vj``. Longer prompts hold
  more pairs, so length adds distractors.
* passkey: ``the code is X . <filler> the code is`` -> ``X``. Longer prompts hold more filler
  between the passkey and the question (``depth`` places the passkey inside the filler).

Lengths are counted in words; the zoo LM ``neox-recall`` has one token per word (plus the
``<|endoftext|>`` its tokenizer puts in front). Filler is Zipfian text over a word list, so a
training corpus built from these pieces has a controlled word-frequency spectrum: rare words
can be asked for as answers (``answer_words``) to measure copying by frequency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import DataError

TASKS = ("kv", "passkey")
KV_OPEN = "recall"
KV_QUERY = "query"
PASSKEY_CUE = ("the", "code", "is")
STOP = "."
MARKER_WORDS = (KV_OPEN, KV_QUERY, *PASSKEY_CUE, STOP)
"""Words with a fixed role in the task formats; content words never use them."""

KV_MIN_LENGTH = 5  # recall k v query k
PASSKEY_MIN_LENGTH = 8  # the code is X . the code is

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "n", "r", "s", "l", "k", "m")


@dataclass(frozen=True)
class RecallPrompt:
    """One prompt whose next word should be ``answer``, which occurs at ``source_index``."""

    task: str
    text: str
    answer: str
    length: int
    source_index: int

    @property
    def words(self) -> list[str]:
        return self.text.split()


def pseudo_words(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct pronounceable nonsense words (two or three syllables), in seeded order.

    They carry no meaning any pretrained model knows, and none is a marker word.
    """
    if n < 1:
        raise DataError("ask for at least one word")
    rng = np.random.default_rng(seed)
    seen: set[str] = set(MARKER_WORDS)
    words: list[str] = []
    while len(words) < n:
        syllables = 2 + int(rng.random() < 0.3)
        word = "".join(
            _ONSETS[rng.integers(len(_ONSETS))]
            + _VOWELS[rng.integers(len(_VOWELS))]
            + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_weights(n: int, exponent: float = 1.1) -> np.ndarray:
    """Probabilities proportional to ``1 / rank**exponent`` for ranks 1..n."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    p = ranks**-exponent
    return p / p.sum()


def filler(
    n: int, words: Sequence[str], rng: np.random.Generator, weights: np.ndarray | None = None
) -> list[str]:
    """``n`` words of sentence-like filler: word runs of 3..11 closed by a full stop."""
    out: list[str] = []
    while len(out) < n:
        run = int(rng.integers(3, 12))
        picks = rng.choice(len(words), size=run, p=weights)
        out.extend(words[i] for i in picks)
        out.append(STOP)
    return out[:n]


def key_value_prompt(
    length: int,
    words: Sequence[str],
    rng: np.random.Generator,
    *,
    weights: np.ndarray | None = None,
    answer_words: Sequence[str] | None = None,
) -> RecallPrompt:
    """``recall k1 v1 ... kn vn query kj`` of exactly ``length`` words; the answer is ``vj``.

    Keys and values are distinct words drawn with ``weights`` (uniform when None); the asked
    pair's value is drawn uniformly from ``answer_words`` when given. An odd leftover word
    becomes a full stop before ``query``.
    """
    _check_length("kv", length, KV_MIN_LENGTH)
    n_pairs = (length - 3) // 2
    pad = (length - 3) % 2
    asked = int(rng.integers(n_pairs))
    answer = _pick_answer(words, rng, weights, answer_words)
    chosen = _distinct(words, 2 * n_pairs, rng, weights, exclude={answer})
    keys, values = chosen[:n_pairs], chosen[n_pairs:]
    values[asked] = answer
    body = [w for pair in zip(keys, values, strict=True) for w in pair]
    tokens = [KV_OPEN, *body, *([STOP] * pad), KV_QUERY, keys[asked]]
    return RecallPrompt("kv", " ".join(tokens), answer, len(tokens), 2 + 2 * asked)


def passkey_prompt(
    length: int,
    words: Sequence[str],
    rng: np.random.Generator,
    *,
    weights: np.ndarray | None = None,
    answer_words: Sequence[str] | None = None,
    depth: float | None = 0.0,
) -> RecallPrompt:
    """``<filler> the code is X . <filler> the code is`` of exactly ``length`` words.

    The passkey ``X`` is drawn with ``weights``, or uniformly from ``answer_words`` when given.
    ``depth`` in [0, 1] is where the passkey sentence sits inside the filler (0: first, as in
    the classic passkey test); None draws it at random.
    """
    _check_length("passkey", length, PASSKEY_MIN_LENGTH)
    answer = _pick_answer(words, rng, weights, answer_words)
    n_filler = length - PASSKEY_MIN_LENGTH
    text = filler(n_filler, words, rng, weights)
    depth = float(rng.random()) if depth is None else depth
    if not 0.0 <= depth <= 1.0:
        raise DataError(f"depth must lie in [0, 1]; got {depth}")
    before = round(depth * n_filler)
    tokens = [*text[:before], *PASSKEY_CUE, answer, STOP, *text[before:], *PASSKEY_CUE]
    return RecallPrompt("passkey", " ".join(tokens), answer, len(tokens), before + 3)


def recall_prompts(
    task: str,
    length: int,
    n: int,
    words: Sequence[str],
    *,
    seed: int = 0,
    weights: np.ndarray | None = None,
    answer_words: Sequence[str] | None = None,
    depth: float | None = None,
) -> list[RecallPrompt]:
    """``n`` prompts of one task and length, deterministic under ``seed``."""
    if task not in TASKS:
        raise DataError(f"unknown recall task {task!r}; choose one of {', '.join(TASKS)}")
    if n < 1:
        raise DataError("ask for at least one prompt")
    rng = np.random.default_rng(seed)
    if task == "kv":
        return [
            key_value_prompt(length, words, rng, weights=weights, answer_words=answer_words)
            for _ in range(n)
        ]
    return [
        passkey_prompt(length, words, rng, weights=weights, answer_words=answer_words, depth=depth)
        for _ in range(n)
    ]


def chance_accuracy(task: str, length: int, n_words: int) -> float:
    """Accuracy of a guess that knows the format: a uniform pick among the candidate answers.

    Key-value: any of the prompt's ``n_pairs`` values; passkey: any content word.
    """
    if task == "kv":
        return 1.0 / max(1, (length - 3) // 2)
    return 1.0 / n_words


# -- training documents ------------------------------------------------------------------------
def key_value_episode(
    n_pairs: int,
    n_queries: int,
    words: Sequence[str],
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
) -> list[str]:
    """A training episode: the pairs, then ``n_queries`` answered questions about them."""
    chosen = _distinct(words, 2 * n_pairs, rng, weights)
    keys, values = chosen[:n_pairs], chosen[n_pairs:]
    out = [KV_OPEN, *(w for pair in zip(keys, values, strict=True) for w in pair)]
    for j in rng.integers(n_pairs, size=n_queries):
        out += [KV_QUERY, keys[j], values[j]]
    return [*out, STOP]


def passkey_episode(
    n_filler: int, words: Sequence[str], rng: np.random.Generator, weights: np.ndarray | None
) -> list[str]:
    """A training episode: a passkey, filler (passkey at a random depth), the answered cue."""
    answer = words[int(rng.choice(len(words), p=weights))]
    text = filler(n_filler, words, rng, weights)
    before = int(rng.integers(0, n_filler + 1))
    return [*text[:before], *PASSKEY_CUE, answer, STOP, *text[before:], *PASSKEY_CUE, answer, STOP]


# -- helpers -----------------------------------------------------------------------------------
def _check_length(task: str, length: int, minimum: int) -> None:
    if int(length) != length or length < minimum:
        raise DataError(f"a {task} prompt needs a whole length of at least {minimum} words")


def _pick_answer(
    words: Sequence[str],
    rng: np.random.Generator,
    weights: np.ndarray | None,
    answer_words: Sequence[str] | None,
) -> str:
    """The answer: drawn like the other words (with ``weights``), or uniformly from
    ``answer_words`` when given."""
    if answer_words is None:
        return words[int(rng.choice(len(words), p=weights))]
    if len(answer_words) == 0:
        raise DataError("answer_words is empty")
    return answer_words[int(rng.integers(len(answer_words)))]


def _distinct(
    words: Sequence[str],
    k: int,
    rng: np.random.Generator,
    weights: np.ndarray | None,
    exclude: set[str] | None = None,
) -> list[str]:
    """``k`` distinct words drawn with ``weights`` (without replacement), none in ``exclude``."""
    exclude = exclude or set()
    if k > len(words) - len(exclude):
        raise DataError(
            f"a prompt this long needs {k} distinct words but the vocabulary has {len(words)}; "
            "ask for a shorter length or pass more words"
        )
    p = None
    if weights is not None or exclude:
        p = np.ones(len(words)) if weights is None else np.asarray(weights, dtype=np.float64)
        p = p * np.array([w not in exclude for w in words])
        p = p / p.sum()
    picks = rng.choice(len(words), size=k, replace=False, p=p)
    return [words[i] for i in picks]

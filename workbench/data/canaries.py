"""A synthetic corpus with planted canaries: which sequences a model could memorize is known.

The background text comes from a small topic grammar over a fixed word-level vocabulary
(pseudo-words, about 600 of them): each document picks a topic and writes a few sentences whose
content words mostly come from that topic, so the text is predictable but not trivial.
Canaries are random sequences of content words; each is planted in the training stream a known
number of times (1, 4, 16 or 64 by default), always at the start of a training sequence right
after the end-of-text token. Unseen canaries are drawn the same way and never trained on, so
they are the control for "how does the model score a random sequence it never saw?".

Everything is deterministic under the seed. Texts are whitespace-separated words, so any
word-level tokenizer over ``corpus.vocabulary`` (``workbench.models.scratch.save_word_tokenizer``)
maps each word to one token.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from workbench.errors import DataError

EOS = "<|endoftext|>"
"""End-of-text marker that separates documents; the word tokenizer knows it as a special."""

REPETITIONS = (1, 4, 16, 64)
"""How often each group of canaries appears in the training stream."""

FUNCTION_WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "on",
    "with",
    "is",
    "was",
    "are",
    "were",
    "it",
    "he",
    "she",
    "they",
    "this",
    "that",
    "by",
    "from",
    "at",
    "for",
    "as",
    "not",
    "but",
    "or",
    "so",
    "then",
    "when",
]

N_TOPICS = 12
TOPIC_SIZES = {"noun": 16, "verb": 10, "adj": 8, "adv": 4}
SHARED_SIZES = {"noun": 40, "verb": 20, "adj": 20, "adv": 8}

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gr",
    "kl",
    "pl",
    "st",
    "tr",
    "sk",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "k"]
_VOCAB_SEED = 20240611  # the vocabulary is fixed: it never depends on the corpus seed

# Sentence templates: slots are (part of speech); everything else is a literal word.
TEMPLATES: tuple[tuple[str, ...], ...] = tuple(
    tuple(t.split())
    for t in (
        "the ADJ NOUN VERB the NOUN .",
        "a NOUN VERB ADV .",
        "the NOUN of the NOUN is ADJ .",
        "NOUN and NOUN VERB with the ADJ NOUN .",
        "they VERB the NOUN in the NOUN .",
        "when the NOUN VERB , the NOUN VERB ADV .",
        "this NOUN was ADJ and ADJ .",
        "she VERB a ADJ NOUN from the NOUN .",
        "it is not the NOUN but the NOUN that VERB .",
        "he VERB ADV , then VERB the NOUN .",
    )
)


def _pseudo_words(n: int, rng: np.random.Generator, taken: set[str]) -> list[str]:
    """``n`` new pronounceable words of two or three syllables, none in ``taken``."""
    out: list[str] = []
    while len(out) < n:
        syllables = rng.integers(2, 4)
        word = "".join(
            str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(syllables)
        ) + str(rng.choice(_CODAS))
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


@dataclass(frozen=True)
class Lexicon:
    """The fixed vocabulary: function words, and content words per topic and shared, by role."""

    function_words: tuple[str, ...]
    topics: tuple[dict[str, tuple[str, ...]], ...]
    shared: dict[str, tuple[str, ...]]

    @property
    def content_words(self) -> tuple[str, ...]:
        words: list[str] = []
        for table in (*self.topics, self.shared):
            for pos in TOPIC_SIZES:
                words.extend(table[pos])
        return tuple(words)

    @property
    def words(self) -> tuple[str, ...]:
        """Every word the corpus can produce, punctuation included, in a fixed order."""
        return (*self.function_words, ".", ",", *self.content_words)


def make_lexicon() -> Lexicon:
    rng = np.random.default_rng(_VOCAB_SEED)
    taken = set(FUNCTION_WORDS)
    topics = tuple(
        {pos: tuple(_pseudo_words(k, rng, taken)) for pos, k in TOPIC_SIZES.items()}
        for _ in range(N_TOPICS)
    )
    shared = {pos: tuple(_pseudo_words(k, rng, taken)) for pos, k in SHARED_SIZES.items()}
    return Lexicon(tuple(FUNCTION_WORDS), topics, shared)


LEXICON = make_lexicon()
VOCABULARY: tuple[str, ...] = LEXICON.words
"""All words, in the order a word-level tokenizer should number them (after its specials)."""


@dataclass(frozen=True)
class CanaryCorpus:
    """Training stream, held-out text and canaries with their known repetition counts.

    ``canaries[k]`` is a tuple of words; ``repetitions[k]`` how often it was planted (0 for the
    unseen ones, which come last). ``train_texts`` and ``held_out_texts`` are sequences of
    ``seq_len`` words each (EOS included), ready for a word-level tokenizer.
    """

    canaries: tuple[tuple[str, ...], ...]
    repetitions: np.ndarray
    train_texts: tuple[str, ...]
    held_out_texts: tuple[str, ...]
    seq_len: int
    seed: int
    vocabulary: tuple[str, ...] = field(default=VOCABULARY, repr=False)

    @property
    def canary_len(self) -> int:
        return len(self.canaries[0])

    @property
    def seen(self) -> np.ndarray:
        """Boolean mask of canaries that were planted at least once."""
        return self.repetitions > 0

    def canary_texts(self) -> list[str]:
        """Each canary as it appears in training: EOS, then its words."""
        return [" ".join((EOS, *c)) for c in self.canaries]

    def split(self, prefix_len: int) -> tuple[list[str], list[str]]:
        """(prompts, targets): EOS + the first ``prefix_len`` words, and the remaining words."""
        if not 0 < prefix_len < self.canary_len:
            raise DataError(
                f"prefix_len must lie in 1..{self.canary_len - 1} for {self.canary_len}-word "
                f"canaries; got {prefix_len}"
            )
        prompts = [" ".join((EOS, *c[:prefix_len])) for c in self.canaries]
        targets = [" ".join(c[prefix_len:]) for c in self.canaries]
        return prompts, targets

    def canary_fraction(self) -> float:
        """Share of training tokens that belong to canaries."""
        planted = int(self.repetitions.sum()) * self.canary_len
        return planted / (len(self.train_texts) * self.seq_len)

    def __repr__(self) -> str:
        groups = ", ".join(
            f"{int((self.repetitions == r).sum())} x{r}" for r in sorted(set(self.repetitions))
        )
        return (
            f"CanaryCorpus({len(self.canaries)} canaries of {self.canary_len} words: {groups}; "
            f"{len(self.train_texts)} training and {len(self.held_out_texts)} held-out sequences "
            f"of {self.seq_len} tokens; canaries are {self.canary_fraction():.1%} of training "
            f"tokens; seed {self.seed})"
        )


def document(rng: np.random.Generator, n_words: int, topic_share: float = 0.8) -> list[str]:
    """At least ``n_words`` words of sentences on one random topic.

    Each content slot is filled from the topic's words with probability ``topic_share`` and
    from the shared words otherwise. Random numbers are drawn in blocks (this runs millions of
    times when a training stream is built).
    """
    topic = int(rng.integers(N_TOPICS))
    n_sentences = n_words // 5 + 2
    slots = [w for t in rng.integers(len(TEMPLATES), size=n_sentences) for w in TEMPLATES[t]]
    from_topic = rng.random(len(slots)) < topic_share
    picks = rng.integers(1 << 30, size=len(slots))
    words: list[str] = []
    for slot, own, pick in zip(slots, from_topic, picks, strict=True):
        table = _TABLES.get(slot)
        if table is None:
            words.append(slot)
            continue
        choices = table[topic] if own else table[N_TOPICS]
        words.append(choices[pick % len(choices)])
        if len(words) >= n_words and slot == ".":
            break
    return words


_TABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    pos.upper(): tuple(t[pos] for t in (*LEXICON.topics, LEXICON.shared)) for pos in TOPIC_SIZES
}
"""Slot name -> one word tuple per topic, then the shared words last."""


def grammar_sequence(rng: np.random.Generator, seq_len: int, lead: list[str] | None = None) -> str:
    """``seq_len`` tokens: EOS-separated documents (after ``lead``), cut at the end."""
    words = list(lead or [])
    while len(words) < seq_len:
        words.append(EOS)
        words.extend(document(rng, int(rng.integers(20, 60))))
    return " ".join(words[:seq_len])


def random_canary(rng: np.random.Generator, length: int) -> tuple[str, ...]:
    """Uniformly random content words: unpredictable from the grammar, so only memory helps."""
    pool = LEXICON.content_words
    return tuple(str(pool[i]) for i in rng.integers(len(pool), size=length))


def make_canary_corpus(
    *,
    n_background: int = 6000,
    n_held_out: int = 400,
    per_group: int = 10,
    repetitions: tuple[int, ...] = REPETITIONS,
    n_unseen: int = 10,
    canary_len: int = 32,
    seq_len: int = 64,
    seed: int = 0,
) -> CanaryCorpus:
    """The training stream (background sequences plus planted canaries, shuffled) and controls.

    ``per_group`` canaries are planted ``r`` times for each ``r`` in ``repetitions``; each copy
    opens its own training sequence (EOS, canary, EOS, grammar text). ``n_unseen`` more canaries
    are drawn but never planted. Held-out text uses its own random stream.
    """
    if canary_len + 2 > seq_len:
        raise DataError(f"seq_len {seq_len} is too short for {canary_len}-word canaries")
    if per_group < 1 or not repetitions or min(repetitions) < 1:
        raise DataError("per_group must be >= 1 and every repetition count >= 1")
    rng = np.random.default_rng(seed)
    canary_rng, train_rng, held_rng = (np.random.default_rng(s) for s in rng.spawn(3))
    reps = [r for r in repetitions for _ in range(per_group)] + [0] * n_unseen
    canaries: list[tuple[str, ...]] = []
    seen_words: set[tuple[str, ...]] = set()
    while len(canaries) < len(reps):
        c = random_canary(canary_rng, canary_len)
        if c[: canary_len // 2] not in seen_words:  # prefixes must identify their canary
            seen_words.add(c[: canary_len // 2])
            canaries.append(c)

    train = [grammar_sequence(train_rng, seq_len) for _ in range(n_background)]
    for c, r in zip(canaries, reps, strict=True):
        for _ in range(r):
            train.append(grammar_sequence(train_rng, seq_len, lead=[EOS, *c]))
    order = train_rng.permutation(len(train))
    held_out = [grammar_sequence(held_rng, seq_len) for _ in range(n_held_out)]
    return CanaryCorpus(
        canaries=tuple(canaries),
        repetitions=np.array(reps, dtype=np.int64),
        train_texts=tuple(train[i] for i in order),
        held_out_texts=tuple(held_out),
        seq_len=seq_len,
        seed=seed,
    )


def background_sequences(*, seq_len: int = 64, seed: int = 1) -> Iterator[str]:
    """Fresh background sequences (no canaries), one at a time and without end."""
    rng = np.random.default_rng([seed, 7])
    while True:
        yield grammar_sequence(rng, seq_len)


def text_sample(n: int, *, seq_len: int = 64, seed: int = 1) -> list[str]:
    """``n`` fresh background sequences (no canaries), e.g. to estimate curvature on."""
    return list(itertools.islice(background_sequences(seq_len=seq_len, seed=seed), n))

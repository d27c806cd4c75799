"""The probe's inputs: sequences to test for recitation, held-out text, the factor corpus, and
optionally K-FAC factors collected before.

Where each comes from, unless the ``Config`` names files of your own:

* a model of the canary corpus's word-level vocabulary (``zoo:gpt2-canaries``): the canaries it
  was trained on (planted 1 to 64 times, plus unseen ones), its held-out text, and fresh corpus
  text for the factors;
* any other causal LM: the shipped collection (``workbench.data.texts``), i.e. candidates real
  models are known to recite, each with a shuffled copy as its control, and Python's
  documentation as factor and held-out text.

Prompts and targets are cut at token boundaries of the model's own tokenizer: the prompt is the
tokenizer's BOS (if it has one) and the first ``prefix_tokens`` tokens, the target the next
``suffix_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.curvature.config import Config
from probes.curvature.factors import KFACFactors
from workbench.data import canaries as canary_corpus
from workbench.data.corpus import TokenBatches, read_documents, read_pairs, unknown_share
from workbench.data.texts import memorization_candidates, python_documents
from workbench.errors import DataError
from workbench.models import LoadedModel


@dataclass(frozen=True)
class CanarySet:
    """Sequences to recite and the held-out text.

    Per sequence: the prompt ids (BOS + prefix) and target ids, readable texts, a name, whether
    it is a control (a sequence no model can have memorized: an unseen canary, or a candidate's
    words shuffled), and for a canary corpus how often it was planted (``planted``; None
    otherwise). ``held_out_ids``/``held_out_mask`` are the held-out sequences.
    """

    prompts: list[torch.Tensor]
    targets: list[torch.Tensor]
    prompt_texts: list[str]
    target_texts: list[str]
    names: list[str]
    control: np.ndarray
    held_out_ids: torch.Tensor
    held_out_mask: torch.Tensor
    planted: np.ndarray | None = None
    source: str = ""
    """Where the sequences come from, for the summary."""
    skipped: int = 0
    """Candidates left out because they had fewer tokens than prefix + suffix."""

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if not n:
            raise DataError("no sequences to test for recitation")
        sizes = {len(self.targets), len(self.names), len(self.control), len(self.prompt_texts)}
        if sizes != {n} or (self.planted is not None and len(self.planted) != n):
            raise DataError("prompts, targets, names and flags must match one to one")
        if not self.control.any() or self.control.all():
            raise DataError("the sequences need controls and candidates, both")
        if self.held_out_ids.ndim != 2 or self.held_out_ids.shape[1] < 2:
            raise DataError("held-out text must be (sequences, tokens) with at least 2 tokens each")


@dataclass(frozen=True)
class CurvatureData:
    """The ``data`` argument of ``run``: the sequences to test and, optionally, K-FAC factors
    collected before (``probes.curvature.probe.factors_for``), so that a rerun at other settings
    skips the collection. Without factors, ``run`` collects them on the configured corpus.
    """

    canaries: CanarySet
    factors: KFACFactors | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.canaries, CanarySet):
            raise DataError(
                f"canaries must be a CanarySet (see probes.curvature.data.memorization_set); "
                f"got {type(self.canaries).__name__}"
            )
        if self.factors is not None and not isinstance(self.factors, KFACFactors):
            raise DataError(
                f"factors must be KFACFactors (factors_for or KFACFactors.load) or None; got "
                f"{type(self.factors).__name__}"
            )


# -- which defaults fit this model -------------------------------------------------------------
def knows_canary_words(model: LoadedModel) -> bool:
    """Whether the tokenizer reads the canary corpus's pseudo-words as one known token each."""
    words = list(canary_corpus.LEXICON.content_words[:64])
    tok = model.processor
    ids = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    return len(ids) == len(words) and getattr(tok, "unk_token_id", None) not in ids


def training_corpus_kwargs(model: LoadedModel) -> dict:
    """The corpus options a zoo model was trained with (``recipe.json``), else the defaults."""
    if model.source is not None and (model.source / "recipe.json").is_file():
        recipe = json.loads((model.source / "recipe.json").read_text())
        return dict(recipe.get("corpus_kwargs", {}))
    return {}


def _bos(model: LoadedModel) -> list[int]:
    """The token a document starts with in training: BOS, else end-of-text, else nothing."""
    tok = model.processor
    for token_id in (getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)):
        if token_id is not None:
            return [int(token_id)]
    return []


def _separator(model: LoadedModel) -> int | None:
    eos = getattr(model.processor, "eos_token_id", None)
    return None if eos is None else int(eos)


def _ids(model: LoadedModel, text: str) -> list[int]:
    return list(model.processor(text, add_special_tokens=False)["input_ids"])


UNREADABLE_SHARE = 0.5
"""Text with more unknown tokens than this is refused: the model cannot read it."""


def _check_readable(model: LoadedModel, share: float, what: str) -> None:
    if share > UNREADABLE_SHARE:
        raise DataError(
            f"{share:.0%} of the tokens of {what} are unknown to {model.spec}'s tokenizer; give "
            "text in the model's vocabulary (factor_corpus=..., held_out=..., memorized=...)"
        )


# -- factor and held-out text ------------------------------------------------------------------
def factor_batches(
    model: LoadedModel, config: Config, shard: tuple[int, int] = (0, 1)
) -> TokenBatches:
    """The factor corpus as re-iterable batches, read lazily under ``factor_tokens``;
    ``shard=(rank, world)`` keeps one process's share of a data-parallel collection."""
    documents, separator = _factor_documents(model, config)
    return TokenBatches(
        documents,
        model.processor,
        seq_len=config.seq_len,
        max_tokens=config.factor_tokens,
        batch_size=config.batch_size,
        separator_id=separator,
        shard=shard,
    )


def factor_corpus_name(model: LoadedModel, config: Config) -> str:
    """What the factors are collected on, as a factors file records it."""
    if config.factor_corpus:
        return str(config.factor_corpus)
    if not knows_canary_words(model):
        return "shipped collection (Python documentation, training part)"
    return f"canary corpus ({config.factor_data}, seed {config.corpus_seed})"


def _factor_documents(
    model: LoadedModel, config: Config
) -> tuple[Callable[[], Iterable[str]], int | None]:
    if config.factor_corpus:
        path, field = config.factor_corpus, config.text_field
        return lambda: read_documents(path, text_field=field), _separator(model)
    if not knows_canary_words(model):
        return lambda: python_documents("train"), _separator(model)
    if config.factor_data == "train":
        kwargs = training_corpus_kwargs(model)
        train = canary_corpus.make_canary_corpus(seed=config.corpus_seed, **kwargs).train_texts
        return lambda: iter(train), None
    seq_len, seed = config.seq_len, config.seed + 1
    return lambda: canary_corpus.background_sequences(seq_len=seq_len, seed=seed), None


def held_out_text(model: LoadedModel, config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of the held-out sequences: ``config.held_out``, else the canary corpus's
    held-out text on a model of its vocabulary, else the shipped collection's held-out part."""
    separator = _separator(model)
    documents: Callable[[], Iterable[str]]
    if config.held_out:
        path, field = config.held_out, config.text_field
        documents = lambda: read_documents(path, text_field=field)  # noqa: E731
    elif knows_canary_words(model):
        kwargs = training_corpus_kwargs(model) | {"n_background": 0}
        held = canary_corpus.make_canary_corpus(seed=config.corpus_seed, **kwargs).held_out_texts
        documents, separator = lambda: iter(held), None  # they start with end-of-text already
    else:
        documents = lambda: python_documents("held_out")  # noqa: E731
    ids = TokenBatches(
        documents,
        model.processor,
        seq_len=config.seq_len,
        max_tokens=config.held_out_tokens,
        separator_id=separator,
    ).tensor()
    unk = getattr(model.processor, "unk_token_id", None)
    if unk is not None and unk != separator:
        _check_readable(model, float((ids == unk).float().mean()), "the held-out text")
    return ids, torch.ones_like(ids)


# -- sequences to recite -----------------------------------------------------------------------
def memorization_set(model: LoadedModel, config: Config) -> CanarySet:
    """The sequences and held-out text ``run`` uses by default for ``model`` and ``config``."""
    if model.processor is None:
        raise DataError(f"{model.spec} has no tokenizer")
    if config.memorized:
        pairs = read_pairs(config.memorized)
        return candidate_set(model, config, pairs, source=config.memorized)
    if knows_canary_words(model):
        return canary_set(model, config)
    pairs = [{"name": c.name, "text": c.text} for c in memorization_candidates()]
    return candidate_set(model, config, pairs, source="the shipped candidates")


def canary_set(model: LoadedModel, config: Config) -> CanarySet:
    """The canary corpus the model was trained on (same seed and options), tokenised."""
    kwargs = training_corpus_kwargs(model)
    kwargs["n_background"] = 0  # the training stream is not needed here
    corpus = canary_corpus.make_canary_corpus(seed=config.corpus_seed, **kwargs)
    if config.prefix_tokens + config.suffix_tokens > corpus.canary_len:
        raise DataError(
            f"the canaries are {corpus.canary_len} words long; prefix_tokens + suffix_tokens = "
            f"{config.prefix_tokens + config.suffix_tokens} asks for more"
        )
    prompts, targets, prompt_texts, target_texts = [], [], [], []
    bos = _bos(model)
    for canary in corpus.canaries:
        ids = _ids(model, " ".join(canary))
        if len(ids) != len(canary):
            raise DataError(f"{model.spec}'s tokenizer does not read canary words as one token")
        head, tail = _cut(ids, config.prefix_tokens, config.suffix_tokens)
        prompts.append(torch.tensor(bos + head))
        targets.append(torch.tensor(tail))
        prompt_texts.append(" ".join((canary_corpus.EOS, *canary[: config.prefix_tokens])))
        target_texts.append(model.processor.decode(tail))
    held_ids, held_mask = held_out_text(model, config)
    reps = corpus.repetitions.copy()
    return CanarySet(
        prompts=prompts,
        targets=targets,
        prompt_texts=prompt_texts,
        target_texts=target_texts,
        names=[f"canary {i} (x{r})" if r else f"canary {i} (unseen)" for i, r in enumerate(reps)],
        control=reps == 0,
        held_out_ids=held_ids,
        held_out_mask=held_mask,
        planted=reps,
        source=f"the canary corpus (seed {config.corpus_seed})",
    )


def candidate_set(
    model: LoadedModel, config: Config, pairs: Sequence[dict[str, str]], *, source: str
) -> CanarySet:
    """Candidates (``{"text"}`` or ``{"prefix", "suffix"}``) and a shuffled control of each."""
    bos = _bos(model)
    rng = np.random.default_rng(config.seed)
    rows: list[tuple[str, list[int], list[int], bool]] = []
    skipped = 0
    texts = [p.get("text") or p.get("prefix", "") + " " + p.get("suffix", "") for p in pairs]
    shares = [unknown_share(model.processor, t, _ids(model, t)) for t in texts]
    _check_readable(model, float(np.mean(shares)), source)
    for k, pair in enumerate(pairs):
        name = pair.get("name") or f"sequence {k}"
        if "prefix" in pair:
            head, tail = _split_pair(model, pair["prefix"], pair["suffix"])
            words = (pair["prefix"] + " " + pair["suffix"]).split()
        else:
            ids = _ids(model, pair["text"])
            if len(ids) < config.prefix_tokens + config.suffix_tokens:
                skipped += 1
                continue
            head, tail = _cut(ids, config.prefix_tokens, config.suffix_tokens)
            words = model.processor.decode(head + tail).split()
        if not head or not tail:
            raise DataError(f"{source}: {name} has an empty prefix or suffix")
        rows.append((name, head, tail, False))
        shuffled = " ".join(words[i] for i in rng.permutation(len(words)))
        c_ids = _ids(model, shuffled)
        c_head, c_tail = c_ids[: len(head)], c_ids[len(head) : len(head) + len(tail)]
        if len(c_head) == len(head) and len(c_tail) == len(tail):
            rows.append((f"control: {name}", c_head, c_tail, True))
    if not any(not control for *_, control in rows):
        raise DataError(
            f"{source} holds no sequence of at least prefix_tokens + suffix_tokens = "
            f"{config.prefix_tokens + config.suffix_tokens} tokens for {model.spec}'s tokenizer; "
            "lower them or give longer sequences"
        )
    held_ids, held_mask = held_out_text(model, config)
    return CanarySet(
        prompts=[torch.tensor(bos + head) for _, head, _, _ in rows],
        targets=[torch.tensor(tail) for _, _, tail, _ in rows],
        prompt_texts=[model.processor.decode(head) for _, head, _, _ in rows],
        target_texts=[model.processor.decode(tail) for _, _, tail, _ in rows],
        names=[name for name, *_ in rows],
        control=np.array([control for *_, control in rows]),
        held_out_ids=held_ids,
        held_out_mask=held_mask,
        source=source,
        skipped=skipped,
    )


def check_fits(model: LoadedModel, data: CanarySet, seq_len: int) -> None:
    """Refuse sequences longer than the model reads, before any heavy work."""
    limit = model.context_length
    longest = max(len(p) for p in data.prompts) + max(len(t) for t in data.targets)
    if limit is not None and max(longest, seq_len) > limit:
        raise DataError(
            f"{model.spec} reads at most {limit} tokens, but the longest prompt and target take "
            f"{longest} and seq_len is {seq_len}; use shorter sequences, prefix_tokens, "
            "suffix_tokens or seq_len"
        )


def _cut(ids: list[int], prefix: int, suffix: int) -> tuple[list[int], list[int]]:
    return ids[:prefix], ids[prefix : prefix + suffix]


def _split_pair(model: LoadedModel, prefix: str, suffix: str) -> tuple[list[int], list[int]]:
    """Prefix and suffix ids cut from the tokenised whole text, as the model would read it.

    Sub-word tokenizers encode a word after a space differently from a word on its own, so the
    suffix is the tail of the whole text's ids whenever the prefix's ids are its head.
    """
    joiner = "" if prefix[-1:].isspace() or suffix[:1].isspace() else " "
    whole = _ids(model, prefix + joiner + suffix)
    head = _ids(model, prefix)
    if len(head) < len(whole) and whole[: len(head)] == head:
        return head, whole[len(head) :]
    return head, _ids(model, suffix)

"""The probe's inputs: canaries split into prompt and target, held-out text, factor corpus, and
optionally K-FAC factors collected before."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.curvature.config import Config
from probes.curvature.factors import KFACFactors
from workbench.data.canaries import CanaryCorpus, make_canary_corpus, text_sample
from workbench.errors import DataError
from workbench.models import LoadedModel


@dataclass(frozen=True)
class CanarySet:
    """Token ids of every canary's prompt (EOS + prefix) and target suffix, plus the controls.

    ``repetitions[k]`` is how often canary k was planted in training (0: never seen).
    """

    prompts: list[torch.Tensor]
    targets: list[torch.Tensor]
    repetitions: np.ndarray
    prompt_texts: list[str]
    target_texts: list[str]
    held_out_ids: torch.Tensor
    held_out_mask: torch.Tensor
    factor_ids: torch.Tensor
    factor_mask: torch.Tensor

    def __post_init__(self) -> None:
        if not self.prompts:
            raise DataError("no canaries to test")
        if len(self.prompts) != len(self.targets) or len(self.prompts) != len(self.repetitions):
            raise DataError("prompts, targets and repetition counts must match one to one")
        if not (self.repetitions == 0).any():
            raise DataError("the canaries need unseen ones (repetitions 0) as the control")


@dataclass(frozen=True)
class CurvatureData:
    """The ``data`` argument of ``run``: the canaries to test and, optionally, K-FAC factors
    collected before (``probes.curvature.probe.factors_for``), so that a rerun at other settings
    skips the collection. Without factors, ``run`` collects them on ``canaries``' factor text.
    """

    canaries: CanarySet
    factors: KFACFactors | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.canaries, CanarySet):
            raise DataError(
                f"canaries must be a CanarySet (see probes.curvature.data.canary_set); got "
                f"{type(self.canaries).__name__}"
            )
        if self.factors is not None and not isinstance(self.factors, KFACFactors):
            raise DataError(
                f"factors must be KFACFactors (factors_for or KFACFactors.load) or None; got "
                f"{type(self.factors).__name__}"
            )


def training_corpus_kwargs(model: LoadedModel) -> dict:
    """The corpus options a zoo model was trained with (``recipe.json``), else the defaults."""
    if model.source is not None and (model.source / "recipe.json").is_file():
        recipe = json.loads((model.source / "recipe.json").read_text())
        return dict(recipe.get("corpus_kwargs", {}))
    return {}


def encode_equal(model: LoadedModel, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``texts``, right-padded, without added special tokens."""
    enc = model.processor(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _ids(model: LoadedModel, text: str) -> torch.Tensor:
    return torch.tensor(model.processor(text, add_special_tokens=False)["input_ids"])


def canary_set(
    model: LoadedModel,
    corpus: CanaryCorpus,
    *,
    prefix_len: int,
    held_out_sequences: int,
    factor_sequences: int,
    factor_data: str,
    seed: int,
) -> CanarySet:
    """Tokenise a corpus's canaries, held-out text and factor text for ``model``.

    ``factor_data="text"`` estimates curvature on fresh background text (no canaries);
    ``"train"`` on the first sequences of the training stream itself, canaries included.
    """
    prompts_text, targets_text = corpus.split(prefix_len)
    prompts, targets = [], []
    for p_text, t_text in zip(prompts_text, targets_text, strict=True):
        prompt, target = _split_ids(model, p_text, t_text)
        prompts.append(prompt)
        targets.append(target)
    unk = getattr(model.processor, "unk_token_id", None)
    if unk is not None and any(
        (p == unk).any() or (t == unk).any() for p, t in zip(prompts, targets, strict=True)
    ):
        raise DataError(
            f"{model.spec}'s tokenizer does not know the canary corpus's words; use a model "
            "trained on workbench.data.canaries (zoo:gpt2-canaries) or pass your own CanarySet"
        )
    if held_out_sequences < 1 or factor_sequences < 1:
        raise DataError("held_out_sequences and factor_sequences must be at least 1")
    held_ids, held_mask = encode_equal(model, corpus.held_out_texts[:held_out_sequences])
    if factor_data == "text":
        factor_texts = text_sample(factor_sequences, seq_len=corpus.seq_len, seed=seed + 1)
    elif factor_data == "train":
        train = corpus.train_texts
        if len(train) < factor_sequences:
            raise DataError(
                f"the training stream has {len(train)} sequences; factor_sequences asks for "
                f"{factor_sequences}"
            )
        factor_texts = list(train[:factor_sequences])
    else:
        raise DataError(f"factor_data must be 'text' or 'train'; got {factor_data!r}")
    factor_ids, factor_mask = encode_equal(model, factor_texts)
    return CanarySet(
        prompts=prompts,
        targets=targets,
        repetitions=corpus.repetitions.copy(),
        prompt_texts=prompts_text,
        target_texts=targets_text,
        held_out_ids=held_ids,
        held_out_mask=held_mask,
        factor_ids=factor_ids,
        factor_mask=factor_mask,
    )


def _split_ids(model: LoadedModel, prompt: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt and target ids cut from the tokenised whole text, as the model saw it in training.

    Sub-word tokenizers encode a word after a space differently from a word on its own, so the
    target is the tail of the whole text's ids whenever the prompt's ids are its head.
    """
    whole = _ids(model, f"{prompt} {target}")
    head = _ids(model, prompt)
    if len(head) < len(whole) and torch.equal(whole[: len(head)], head):
        return head, whole[len(head) :]
    return head, _ids(model, target)


def default_canary_set(model: LoadedModel, config: Config) -> CanarySet:
    """The canary corpus the zoo model was trained on (same seed and options), tokenised."""
    kwargs = training_corpus_kwargs(model)
    if config.factor_data == "text":
        kwargs["n_background"] = 0  # the training stream is not needed: skip building it
    corpus = make_canary_corpus(seed=config.corpus_seed, **kwargs)
    return canary_set(
        model,
        corpus,
        prefix_len=config.prefix_len,
        held_out_sequences=config.held_out_sequences,
        factor_sequences=config.factor_sequences,
        factor_data=config.factor_data,
        seed=config.seed,
    )

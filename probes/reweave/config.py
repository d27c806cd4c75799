"""Reweave settings and comparable metrics; every field can be set from a preset or ``--param``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.probe import Metric, ProbeConfig, at_least, between, require

MAX_PROMPTS = 100_000
MAX_LENGTH = 1_000_000
MAX_SWEEP = 100


@dataclass(frozen=True)
class Config(ProbeConfig):
    sources: tuple[int, ...] = ()
    """Blocks whose output (``resid_post``) is reconstructed; empty: the lower half."""
    target: int = -1
    """Block before which the reconstruction is injected (its ``resid_pre``); -1: three quarters
    of the depth, and always after the last source."""
    gate: float = 0.5
    """The fixed reweaving's gate g in h <- h + g (P r - h); 0 leaves the model untouched."""
    read: Literal["none", "causal"] = "none"
    """``none`` (inject each position's own reconstruction) or ``causal`` (each position reads
    the reconstructions of itself and earlier positions by attention)."""
    fit_steps: int = 60
    """Adam steps of the learned reweaving (gate, layer weights, projection, read) on recall
    prompts; 0 skips it. Causal LMs only: encoders have no next-token objective."""
    learned_gate: Literal["scalar", "vector"] = "scalar"
    """``scalar`` (one learned gate) or ``vector`` (one per feature)."""
    learned_gate_init: float = 0.1
    """Where the learned gate starts."""
    fit_lr: float = 0.03
    fit_batch: int = 8
    fit_max_length: int = 128
    """Longest fitting prompts (they are drawn apart from the held-out ones)."""
    fit_patience: int = 10
    """Stop the fit once its loss (averaged over the last ``fit_patience`` steps) has not
    improved by 1% for ``fit_patience`` steps; 0 always runs ``fit_steps``."""
    tasks: tuple[Literal["kv", "passkey"], ...] = ("kv", "passkey")
    lengths: tuple[int, ...] = ()
    """Prompt lengths for recall (tokens for word-level models, else words); empty: powers of
    two from 16 up to the context (at most 256)."""
    n_prompts: int = 48
    """Held-out prompts per task and length."""
    copy_buckets: int = 4
    """Frequency buckets for rare-token copying, by the words' counts in the model's training
    corpus (``token_counts.json``, zoo) or else in ``corpus``."""
    corpus: str = ""
    """Text whose word counts order the copy buckets when the model ships no training counts:
    a text file, JSONL (field ``text_field``), folder or saved ``datasets`` dataset, read up to
    ``corpus_words`` words. Empty: the shipped collection (Python's documentation)."""
    text_field: str = "text"
    corpus_words: int = 50_000
    copy_length: int = 32
    copy_prompts: int = 64
    """Passkey prompts per bucket for rare-token copying."""
    gate_sweep: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    """Gates at which the change of the output is measured."""
    attention_prompts: int = 16
    """Prompts whose attention patterns give the statistics (when ``run`` gets no texts)."""
    attention_length: int = 64
    example_text: str = ""
    """Text of the attention maps; empty: a passkey prompt (causal LMs) or a sentence."""
    max_map_tokens: int = 48
    """Longest example the maps draw (longer examples are cut)."""
    control: str = ""
    """For a model trained with reweaving in it (``zoo:neox-reweave``): the same model trained
    without (a spec); empty: the control its recipe names. Ignored for other models."""
    batch_size: int = 16
    threads: int = 0
    """Torch threads for the run (restored afterwards); 0 sizes them to the model: every core
    for models of 20M parameters or more, one for smaller ones."""

    def check(self) -> None:
        between(self, 0, 1, "gate", "gate_sweep")
        require(
            0.0 < self.learned_gate_init < 1.0,
            f"learned_gate_init must lie in (0, 1); got {self.learned_gate_init}",
        )
        require(bool(self.tasks), "tasks needs at least one of kv, passkey")
        require(bool(self.gate_sweep), "gate_sweep needs at least one gate in [0, 1]")
        require(
            len(self.gate_sweep) <= MAX_SWEEP and len(self.lengths) <= MAX_SWEEP,
            f"gate_sweep and lengths take at most {MAX_SWEEP} values each",
        )
        between(self, 8, MAX_LENGTH, "lengths", "copy_length", "attention_length")
        between(self, 1, MAX_LENGTH, "fit_max_length")
        between(
            self,
            1,
            MAX_PROMPTS,
            "n_prompts",
            "copy_prompts",
            "attention_prompts",
            "fit_batch",
            "batch_size",
        )
        between(self, 0, MAX_PROMPTS, "fit_steps", "fit_patience")
        between(self, 1, 10**9, "corpus_words")
        between(self, 0, 256, "threads")
        require(bool(self.text_field), "text_field names the field that holds the text")
        between(self, 1, 1000, "copy_buckets")
        between(self, 4, MAX_LENGTH, "max_map_tokens")
        between(self, 1e-8, 10.0, "fit_lr")
        at_least(self, 0, "sources")
        at_least(self, -1, "target")


METRICS = (
    Metric("recall_base", "recall accuracy, base model", "neither", percent=True),
    Metric("recall_fixed", "recall accuracy, fixed reweaving", percent=True),
    Metric("recall_learned", "recall accuracy, learned reweaving", percent=True),
    Metric("entropy_base", "attention entropy, target block on, base", "neither", unit="nats"),
    Metric("entropy_fixed", "attention entropy, target block on, reweaved", "neither", unit="nats"),
    Metric("sink_base", "attention-sink mass, target block on, base", "neither", percent=True),
    Metric("sink_fixed", "attention-sink mass, target block on, reweaved", "neither", percent=True),
    Metric("output_change", "final-state change (1 − cosine), encoders", "neither"),
    Metric(
        "recall_by_length_fixed",
        "recall accuracy by prompt length, fixed reweaving",
        percent=True,
        over="lengths",
    ),
    Metric("recall_trained", "recall accuracy, trained with reweaving", percent=True),
    Metric("recall_control", "recall accuracy, trained without (control)", "neither", percent=True),
    Metric("recall_posthoc_fixed", "recall accuracy, control + post-hoc reweaving", percent=True),
    Metric(
        "recall_by_length_trained",
        "recall accuracy by prompt length, trained with reweaving",
        percent=True,
        over="lengths",
    ),
    Metric(
        "recall_by_length_base",
        "recall accuracy by prompt length, base model",
        "neither",
        percent=True,
        over="lengths",
    ),
)

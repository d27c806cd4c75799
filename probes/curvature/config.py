"""Curvature settings and comparable metrics; each field can be set by a preset or ``--param``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from workbench.errors import ConfigError
from workbench.probe import Metric, ProbeConfig, at_least, between, require

MAX_TOKENS = 1_000_000_000
MAX_SWEEP = 100
"""At most this many points per sweep: each point is a full evaluation of an edited model."""


@dataclass(frozen=True)
class Config(ProbeConfig):
    weights: str = r"mlp\.W_(in|gate)$"
    r"""Regular expression over the model's weight names: which matrices to edit. The default is
    every block's MLP input projection (GPT-2's c_fc, Llama's gate and up), as the paper edits
    OLMo-2's gate and up projections; ``mlp\.W_`` adds the output projections. On
    zoo:gpt2-canaries the output projections cost more perplexity for the same removal."""
    rho: float = 0.88
    """Fraction of each matrix's curvature mass the edit keeps (the paper's ρ). On
    zoo:gpt2-canaries every ρ from 0.86 to 0.89 removes all recitation of the memorized set at
    under +1% held-out perplexity."""
    sweep: tuple[float, ...] = (0.7, 0.8, 0.85, 0.88, 0.9, 0.95, 0.97, 0.99)
    """ρ values of the memorization-vs-perplexity trade-off curve."""
    svd_sweep: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    """Fractions of Σσ² the SVD baseline keeps, for the same curve."""
    match_svd: bool = True
    """Also find the SVD truncation whose held-out perplexity matches the edit's at ``rho``."""
    match_steps: int = 14
    """Bisection steps of that search (each one evaluates an edited model)."""
    labels: Literal["sampled", "gold"] = "sampled"
    """``sampled``: labels drawn from the model's own prediction (true Fisher); ``gold``: the
    next tokens of the text (empirical Fisher)."""
    factors: str = ""
    """A factors file (``workbench factors collect --out FILE``, or ``KFACFactors.save``) to use
    instead of collecting factors; one collected on another model is refused before any work.
    The factor corpus settings below are then not used."""
    factor_corpus: str = ""
    """Text the curvature is estimated on, streamed under ``factor_tokens``: a text file, a
    JSONL file (field ``text_field``), a folder of .txt/.md/.jsonl files, or a ``datasets``
    dataset saved with ``save_to_disk``. Empty: the shipped collection (Python's documentation)
    on a real LM, fresh canary-corpus text on a model of the canary vocabulary (the zoo)."""
    held_out: str = ""
    """Held-out text for perplexity and nDCG@k, in the same formats. Empty: the shipped
    collection's held-out part, or the canary corpus's held-out text."""
    memorized: str = ""
    """A JSONL file of sequences to test for recitation: ``{"prefix": ..., "suffix": ...}`` per
    line (or ``{"text": ...}``, split after ``prefix_tokens`` tokens). Empty: the shipped
    candidates (licence texts, famous openings) on a real LM, the planted canaries on the zoo.
    The finder keeps those the unedited model recites (``memorized_if``)."""
    text_field: str = "text"
    """Field of JSONL records and column of datasets that holds the text."""
    factor_data: Literal["text", "train"] = "text"
    """Canary corpus only: estimate curvature on fresh background text (``text``, no canaries)
    or on the start of the model's training stream (``train``, canaries included)."""
    factor_tokens: int = 65536
    """Token budget of the factor corpus. Factor collection costs about one forward and
    backward per token: 65536 tokens take ~0.5 min on zoo:gpt2-canaries and ~10-15 min for
    GPT-2 124M on two CPU cores."""
    held_out_tokens: int = 25600
    """Held-out tokens for perplexity and nDCG@k. Every evaluated edit (the base model, each
    ρ, each SVD fraction, each matching step) runs one forward over them."""
    seq_len: int = 64
    """Tokens per sequence of factor and held-out text."""
    prefix_tokens: int = 16
    """Tokens of each sequence given as the prompt (after the tokenizer's BOS); the paper uses
    64 on OLMo-2."""
    suffix_tokens: int = 16
    """Tokens of each sequence to recite greedily after the prompt; the paper uses 48."""
    memorized_if: Literal["strict", "loose"] = "strict"
    """Which candidates form the memorized set: those the unedited model recites verbatim
    (``strict``) or at least loosely. Canary corpora use ``memorized_min_repetitions``."""
    memorized_min_repetitions: int = 16
    """Canary corpus: canaries planted at least this often form the memorized set."""
    loose_threshold: float = 0.75
    """Loose recitation: token-level similarity 1 - d/L at least this."""
    ndcg_k: int = 10
    corpus_seed: int = 0
    """Seed of the canary corpus; must be the seed the model was trained with (zoo: 0)."""
    batch_size: int = 16
    """Sequences per batch of factor collection and evaluation."""
    layers_per_pass: int = 0
    """Weights whose factors are collected per pass over the factor corpus (0: all in one
    pass). Fewer per pass bounds the memory of the sums; each pass reads the corpus again."""
    checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them (less
    memory, about one more forward of time)."""
    threads: int = 0
    """Torch threads for the run (restored afterwards); 0 sizes them to the model: every core
    for models of 20M parameters or more, one for smaller ones (which run fastest on one)."""
    audit: bool = True
    """Audit every edit for what recitation misses (``probes.curvature.audit``): four
    membership-inference attacks (loss, zlib ratio, Min-K%, Min-K%++) on the memorized set vs
    unseen sequences, and extraction by sampling. Costs one forward over the audited sequences
    per evaluated edit, plus the sampling at the unedited, K-FAC and matched SVD states."""
    audit_samples: int = 16
    """Continuations sampled per prompt for extraction under sampling (0: no sampling)."""
    audit_temperature: float = 1.0
    audit_unseen: int = 200
    """Canary corpus: fresh unseen canaries (same generator) added to the audit's non-members,
    so that a true-positive rate at 1% false positives rests on enough negatives."""
    min_k: float = 0.2
    """Share of the least likely tokens Min-K% and Min-K%++ average (the papers' k = 20%)."""

    def check(self) -> None:
        try:
            re.compile(self.weights)
        except re.error as err:
            raise ConfigError(
                f"weights must be a regular expression over weight names; {self.weights!r}: {err}"
            ) from None
        for name, values in (("rho", (self.rho,)), ("sweep", self.sweep)):
            require(
                bool(values) and all(0.0 < v <= 1.0 for v in values),
                f"{name} values are fractions of curvature mass in (0, 1]; got {values}",
            )
        require(
            bool(self.svd_sweep) and all(0.0 < v <= 1.0 for v in self.svd_sweep),
            f"svd_sweep values are fractions of Σσ² in (0, 1]; got {self.svd_sweep}",
        )
        require(
            len(self.sweep) <= MAX_SWEEP and len(self.svd_sweep) <= MAX_SWEEP,
            f"sweep and svd_sweep take at most {MAX_SWEEP} values each",
        )
        require(
            0.0 < self.loose_threshold <= 1.0,
            f"loose_threshold is a similarity in (0, 1]; got {self.loose_threshold}",
        )
        between(self, 2, 1_000_000, "seq_len")
        between(self, self.seq_len, MAX_TOKENS, "factor_tokens", "held_out_tokens")
        between(self, 1, 100_000, "prefix_tokens", "suffix_tokens")
        between(self, 1, 1000, "ndcg_k", "match_steps")
        between(self, 1, 4096, "batch_size")
        between(self, 0, 256, "threads")
        at_least(self, 0, "layers_per_pass", "corpus_seed")
        at_least(self, 1, "memorized_min_repetitions")
        require(bool(self.text_field), "text_field names the field that holds the text")
        between(self, 0, 100_000, "audit_samples", "audit_unseen")
        require(0.0 < self.min_k <= 1.0, f"min_k is a share of tokens in (0, 1]; got {self.min_k}")
        require(
            0.0 < self.audit_temperature <= 100.0,
            f"audit_temperature must be positive; got {self.audit_temperature}",
        )


METRICS = (
    Metric("strict_before", "memorized set recited verbatim, unedited", "neither", percent=True),
    Metric("strict_after", "memorized set recited verbatim after the edit", "lower", percent=True),
    Metric("loose_after", "memorized set recited loosely after the edit", "lower", percent=True),
    Metric("perplexity_change_pct", "held-out perplexity change", "lower", unit="%"),
    Metric("ndcg_after", "nDCG@k of the edited model's next tokens vs unedited", "higher"),
    Metric(
        "svd_strict_at_matched_perplexity",
        "SVD at matched perplexity: recited verbatim",
        "neither",
        percent=True,
    ),
    Metric(
        "svd_loose_at_matched_perplexity",
        "SVD at matched perplexity: recited loosely",
        "neither",
        percent=True,
    ),
    Metric(
        "kfac_sweep_strict",
        "memorized set recited verbatim, by ρ",
        "lower",
        percent=True,
        over="kfac_sweep_value",
    ),
    Metric(
        "kfac_sweep_perplexity",
        "held-out perplexity, by ρ",
        "lower",
        over="kfac_sweep_value",
    ),
    Metric(
        "kfac_sweep_strict",
        "trade-off: recited verbatim against held-out perplexity (K-FAC, one point per ρ)",
        "lower",
        percent=True,
        over="kfac_sweep_value",
        against="kfac_sweep_perplexity",
    ),
    Metric("mia_auc_loss_base", "membership AUC (loss attack), unedited", "neither"),
    Metric("mia_auc_loss_kfac", "membership AUC (loss attack) after the edit", "lower"),
    Metric("mia_auc_min_k_pp_kfac", "membership AUC (Min-K%++) after the edit", "lower"),
    Metric("mia_auc_zlib_kfac", "membership AUC (zlib ratio) after the edit", "lower"),
    Metric("mia_auc_min_k_kfac", "membership AUC (Min-K%) after the edit", "lower"),
    Metric(
        "mia_tpr1_loss_kfac", "loss attack: TPR at 1% FPR after the edit", "lower", percent=True
    ),
    Metric("mia_auc_loss_svd", "SVD at matched perplexity: membership AUC (loss)", "neither"),
    Metric(
        "sampled_any_exact_memorized_kfac",
        "memorized set: some sample exact after the edit",
        "lower",
        percent=True,
    ),
    Metric(
        "sampled_any_exact_memorized_svd",
        "SVD at matched perplexity: some sample exact",
        "neither",
        percent=True,
    ),
    Metric(
        "kfac_sweep_mia_auc_loss",
        "membership AUC (loss attack), by ρ",
        "lower",
        over="kfac_sweep_value",
    ),
)

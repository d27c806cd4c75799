"""Curvature settings and comparable metrics; each field can be set by a preset or ``--param``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from workbench.errors import ConfigError
from workbench.probe import Metric, ProbeConfig, at_least, between, require

MAX_SEQUENCES = 100_000
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
    labels: Literal["sampled", "gold"] = "sampled"
    """``sampled``: labels drawn from the model's own prediction (true Fisher); ``gold``: the
    next tokens of the text (empirical Fisher)."""
    factor_data: Literal["text", "train"] = "text"
    """What curvature is estimated on: ``text`` (fresh background text, no canaries) or
    ``train`` (the start of the model's training stream, canaries included)."""
    factor_sequences: int = 1024
    """Sequences streamed to estimate the factors (64 tokens each for the canary corpus)."""
    held_out_sequences: int = 400
    """Held-out sequences for perplexity and nDCG@k."""
    prefix_len: int = 16
    """Canary words given as the prompt; the rest is the suffix to recite."""
    memorized_min_repetitions: int = 16
    """Canaries planted at least this often form the memorized set of the headline numbers."""
    loose_threshold: float = 0.75
    """Loose recitation: token-level similarity 1 - d/L at least this."""
    ndcg_k: int = 10
    corpus_seed: int = 0
    """Seed of the canary corpus; must be the seed the model was trained with (zoo: 0)."""
    batch_size: int = 32
    threads: int = 1
    """Torch threads for the run (restored afterwards). Models this small run fastest on one;
    on a busy machine more threads can be several times slower. Raise it for large models."""

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
        between(self, 1, MAX_SEQUENCES, "factor_sequences", "held_out_sequences")
        between(self, 1, 1000, "prefix_len", "ndcg_k")
        between(self, 1, 4096, "batch_size")
        between(self, 1, 256, "threads")
        at_least(self, 1, "memorized_min_repetitions")
        at_least(self, 0, "corpus_seed")


METRICS = (
    Metric("strict_before", "memorized set recited verbatim, unedited", "neither", percent=True),
    Metric("strict_after", "memorized set recited verbatim after the edit", "lower", percent=True),
    Metric("loose_after", "memorized set recited loosely after the edit", "lower", percent=True),
    Metric("perplexity_change_pct", "held-out perplexity change", "lower", unit="%"),
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
)

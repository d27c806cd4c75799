"""Curvature settings; every field can be set from a preset or ``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
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
    labels: str = "sampled"
    """``sampled``: labels drawn from the model's own prediction (true Fisher); ``gold``: the
    next tokens of the text (empirical Fisher)."""
    factor_data: str = "text"
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
    seed: int = 0

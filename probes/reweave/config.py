"""Reweave settings; every field can be set from a preset or ``--param k=v``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    sources: tuple[int, ...] = ()
    """Blocks whose output (``resid_post``) is reconstructed; empty: the lower half."""
    target: int = -1
    """Block before which the reconstruction is injected (its ``resid_pre``); -1: three quarters
    of the depth, and always after the last source."""
    gate: float = 0.5
    """The fixed reweaving's gate g in h <- h + g (P r - h); 0 leaves the model untouched."""
    read: str = "none"
    """``none`` (inject each position's own reconstruction) or ``causal`` (each position reads
    the reconstructions of itself and earlier positions by attention)."""
    fit_steps: int = 60
    """Adam steps of the learned reweaving (gate, layer weights, projection, read) on recall
    prompts; 0 skips it. Causal LMs only: encoders have no next-token objective."""
    learned_gate: str = "scalar"
    """``scalar`` (one learned gate) or ``vector`` (one per feature)."""
    learned_gate_init: float = 0.1
    """Where the learned gate starts."""
    fit_lr: float = 0.03
    fit_batch: int = 8
    fit_max_length: int = 128
    """Longest fitting prompts (they are drawn apart from the held-out ones)."""
    tasks: tuple[str, ...] = ("kv", "passkey")
    lengths: tuple[int, ...] = ()
    """Prompt lengths for recall (tokens for word-level models, else words); empty: powers of
    two from 16 up to the context (at most 256)."""
    n_prompts: int = 48
    """Held-out prompts per task and length."""
    copy_buckets: int = 4
    """Frequency buckets for rare-token copying (needs the model's ``token_counts.json``)."""
    copy_length: int = 32
    copy_prompts: int = 64
    """Passkey prompts per bucket for rare-token copying."""
    gate_sweep: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    """Gates at which the change of the output is measured."""
    attention_prompts: int = 16
    """Prompts whose attention patterns give the statistics."""
    attention_length: int = 64
    example_text: str = ""
    """Text of the attention maps; empty: a passkey prompt (causal LMs) or a sentence."""
    max_map_tokens: int = 48
    """Longest example the maps draw (longer examples are cut)."""
    batch_size: int = 16
    seed: int = 0

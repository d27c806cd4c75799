"""Gradient checkpointing for any loaded model, without training mode.

Hugging Face's own checkpointing runs only in training mode, which also switches dropout on.
``checkpointed_blocks(model)`` instead wraps each block's ``forward`` in
``torch.utils.checkpoint`` (non-reentrant) for the length of a ``with`` block: the backward pass
recomputes a block's activations instead of keeping them, so memory grows with one block rather
than all of them. Hooks inside a block run again during that recomputation; functions that must
count each position once should ignore calls made during the backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from torch.utils.checkpoint import checkpoint

from workbench.models import LoadedModel


@contextmanager
def checkpointed_blocks(model: LoadedModel) -> Iterator[None]:
    """Recompute every block's activations in the backward pass; restored on exit."""
    blocks = [
        model.model.get_submodule(model.site(f"blocks.{i}.resid_pre").module)
        for i in range(model.n_layers)
    ]
    try:
        for block in blocks:
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        yield
    finally:
        for block in blocks:
            if "forward" in vars(block):
                del block.forward

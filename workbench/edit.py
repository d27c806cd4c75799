"""Weight edits that leave no trace, beside ``hooks`` (which edit activations).

``edited(model, new_weights)`` writes each new (out, in) matrix through the model's named weight
views (GPT-2's transposed Conv1D and fused QKV handled by the view) and, on exit, copies the saved
whole parameters back bit for bit, also when the body raised. ``edited_copy`` gives a deep copy
carrying the new weights and leaves the original alone.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from workbench.errors import DataError
from workbench.models import LoadedModel


def check_new_weights(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> None:
    """Every new matrix names a weight of ``model``, has its shape, and is finite."""
    for name, matrix in new_weights.items():
        current = model.weight(name)
        if tuple(matrix.shape) != tuple(current.shape):
            raise DataError(
                f"new {name} has shape {tuple(matrix.shape)}, the model's is "
                f"{tuple(current.shape)} (weights are (out, in))"
            )
        if not torch.isfinite(matrix).all():
            raise DataError(f"new {name} contains NaN or inf")


def _write(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, matrix in new_weights.items():
            view = model.weight(name)
            view.copy_(matrix.to(device=view.device, dtype=view.dtype))


@contextmanager
def edited(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> Iterator[LoadedModel]:
    """Use ``model`` with ``new_weights`` inside the block; the originals come back bit-exactly.

    The whole parameter behind each edited name is saved before anything is written, so the
    restore is exact even for fused or transposed layouts and when the body raises.
    """
    check_new_weights(model, new_weights)
    params = {id(p): p for p in (model.parameter(name) for name in new_weights)}
    saved = {key: p.detach().clone() for key, p in params.items()}
    try:
        _write(model, new_weights)
        yield model
    finally:
        with torch.no_grad():
            for key, original in saved.items():
                params[key].copy_(original)


def edited_copy(
    model: LoadedModel, new_weights: Mapping[str, torch.Tensor], *, label: str = "edited"
) -> LoadedModel:
    """A deep copy of ``model`` carrying ``new_weights``; the original is untouched."""
    check_new_weights(model, new_weights)
    clone = dataclasses.replace(
        model, spec=f"{model.spec} ({label})", model=copy.deepcopy(model.model), _digest=None
    )
    _write(clone, new_weights)
    return clone

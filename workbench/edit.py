"""Weight edits that leave no trace, beside ``hooks`` (which edit activations).

``edited(model, new_weights)`` writes each new (out, in) matrix through the model's named weight
views (GPT-2's transposed Conv1D and fused QKV handled by the view) and, on exit, puts the saved
whole parameters back bit for bit, also when the body raised, and also for weights accelerate
keeps offloaded to CPU RAM or disk. ``edited_copy`` gives a deep copy carrying the new weights
and leaves the original alone.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch

from workbench.errors import DataError
from workbench.models import LoadedModel


def check_new_weights(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> None:
    """Every new matrix names a weight of ``model``, has its shape, and is finite."""
    for name, matrix in new_weights.items():
        current = model.weight_view(name, model.parameter(name))  # shape only: nothing is read
        if tuple(matrix.shape) != tuple(current.shape):
            raise DataError(
                f"new {name} has shape {tuple(matrix.shape)}, the model's is "
                f"{tuple(current.shape)} (weights are (out, in))"
            )
        if not torch.isfinite(matrix).all():
            raise DataError(f"new {name} contains NaN or inf")


def _write(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> list[Callable[[], None]]:
    """Write every new matrix; returns the undos, one per whole parameter, in writing order.

    Each parameter is rebuilt whole (its other rows of a fused QKV kept) and put in place at
    once, wherever it is stored: in its module, or in the map accelerate offloads it to.
    """
    by_parameter: dict[tuple[str, str], list[str]] = {}
    for name in new_weights:
        w = model.weights[name]
        by_parameter.setdefault((w.module, w.param), []).append(name)
    undos = []
    try:
        with torch.no_grad():
            for names in by_parameter.values():
                stored = model.stored(names[0])
                whole = stored.read().detach().clone()
                for name in names:
                    view = model.weight_view(name, whole)
                    view.copy_(new_weights[name].to(device=view.device, dtype=view.dtype))
                undos.append(stored.replace(whole))
    except BaseException:
        _undo(undos)
        raise
    return undos


def _undo(undos: list[Callable[[], None]]) -> None:
    for undo in reversed(undos):
        undo()


@contextmanager
def edited(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> Iterator[LoadedModel]:
    """Use ``model`` with ``new_weights`` inside the block; the originals come back bit-exactly.

    The whole parameter behind each edited name is saved before anything is written, so the
    restore is exact even for fused or transposed layouts and when the body raises. A weight
    that accelerate keeps offloaded (CPU RAM or disk) gets its new values in accelerate's
    weights map, which its module reads at every forward; no file is written, and on exit the
    map holds the very tensors it held before.
    """
    check_new_weights(model, new_weights)
    undos = _write(model, new_weights)
    try:
        yield model
    finally:
        _undo(undos)


def edited_copy(
    model: LoadedModel, new_weights: Mapping[str, torch.Tensor], *, label: str = "edited"
) -> LoadedModel:
    """A deep copy of ``model`` carrying ``new_weights``; the original is untouched."""
    check_new_weights(model, new_weights)
    clone = dataclasses.replace(
        model, spec=f"{model.spec} ({label})", model=copy.deepcopy(model.model), _digest=None
    )
    _write(clone, new_weights)  # the copy keeps its new weights: no undo
    return clone

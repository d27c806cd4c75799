"""Weight edits that leave no trace: a context manager, and an edited deep copy.

``edited(model, new_weights)`` writes each new (out, in) matrix through the model's named weight
views (GPT-2's transposed Conv1D handled by the view) and, on exit, copies the saved original
parameters back, bit for bit, also when the body raised. ``kfac_weights`` and ``svd_weights``
compute the new matrices for the curvature edit and for its SVD baseline.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from probes.curvature import compute
from probes.curvature.compute import Eigenbasis
from workbench.errors import DataError
from workbench.models import LoadedModel


def kfac_weights(
    model: LoadedModel, bases: Mapping[str, Eigenbasis], rho: float | Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """New matrices keeping ``rho`` of each weight's curvature mass (one ρ, or one per weight)."""
    new = {}
    for name, basis in bases.items():
        r = rho[name] if isinstance(rho, Mapping) else rho
        new[name] = compute.kfac_weight(model.weight(name).detach(), basis, float(r))
    return new


def svd_weights(
    model: LoadedModel, names: Sequence[str], energy: float
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """New matrices truncated to the singular components holding ``energy`` of Σσ², and ranks."""
    new, ranks = {}, {}
    for name in names:
        new[name], ranks[name] = compute.svd_weight(model.weight(name).detach(), energy)
    return new, ranks


def _check(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> None:
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
            view.copy_(matrix.to(view.dtype))


@contextmanager
def edited(model: LoadedModel, new_weights: Mapping[str, torch.Tensor]) -> Iterator[LoadedModel]:
    """Use ``model`` with ``new_weights`` inside the block; the originals come back bit-exactly.

    The whole parameter of each edited module is saved before anything is written, so the
    restore is exact even for fused or transposed layouts and when the body raises.
    """
    _check(model, new_weights)
    modules = dict.fromkeys(model.weights[name].module for name in new_weights)
    saved = {m: model.model.get_submodule(m).weight.detach().clone() for m in modules}
    try:
        _write(model, new_weights)
        yield model
    finally:
        with torch.no_grad():
            for m, original in saved.items():
                model.model.get_submodule(m).weight.copy_(original)


def edited_copy(
    model: LoadedModel, new_weights: Mapping[str, torch.Tensor], *, label: str = "edited"
) -> LoadedModel:
    """A deep copy of ``model`` carrying ``new_weights``; the original is untouched."""
    _check(model, new_weights)
    clone = dataclasses.replace(
        model, spec=f"{model.spec} ({label})", model=copy.deepcopy(model.model), _digest=None
    )
    _write(clone, new_weights)
    return clone


@contextmanager
def kfac_edit(
    model: LoadedModel, bases: Mapping[str, Eigenbasis], rho: float | Mapping[str, float]
) -> Iterator[LoadedModel]:
    """``with kfac_edit(model, bases, rho=0.97): ...`` runs the body on the curvature edit."""
    with edited(model, kfac_weights(model, bases, rho)) as m:
        yield m

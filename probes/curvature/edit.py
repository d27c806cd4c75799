"""The curvature edit and its SVD baseline as new weight matrices.

``kfac_weights`` and ``svd_weights`` compute the new matrices; ``workbench.edit.edited`` applies
them for the length of a block and restores the originals bit-exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from probes.curvature import compute
from probes.curvature.compute import Eigenbasis
from workbench.edit import edited
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


@contextmanager
def kfac_edit(
    model: LoadedModel, bases: Mapping[str, Eigenbasis], rho: float | Mapping[str, float]
) -> Iterator[LoadedModel]:
    """``with kfac_edit(model, bases, rho=0.97): ...`` runs the body on the curvature edit."""
    with edited(model, kfac_weights(model, bases, rho)) as m:
        yield m

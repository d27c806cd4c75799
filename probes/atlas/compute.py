"""The atlas's science as pure functions on arrays: gather, probe, project."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from workbench.errors import DataError


def gather(activations: torch.Tensor, positions: np.ndarray, site: str = "") -> np.ndarray:
    """Rows ``activations[input, token]`` for each position, as float32, refusing NaN/inf."""
    rows = activations[torch.as_tensor(positions[:, 0]), torch.as_tensor(positions[:, 1])]
    x = rows.float().numpy()
    if not np.isfinite(x).all():
        raise DataError(f"activations at {site or 'a site'} contain NaN or inf; check the model")
    return x


def subsample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_points`` positions, sampling each class as evenly as it allows."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    quota = max_points // len(classes)
    picked = [rng.permutation(np.nonzero(labels == c)[0])[:quota] for c in classes]
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(np.arange(n), chosen)
    extra = rng.permutation(rest)[: max_points - len(chosen)]
    return np.sort(np.concatenate([chosen, extra]))


def folds_for(groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped CV splits: no image (or word) lands in both train and test."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise DataError("cross-validation needs at least two groups (images or words)")
    splitter = GroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


@dataclass(frozen=True)
class Decodability:
    mean: float
    std: float
    per_fold: tuple[float, ...]


def probe_accuracy(
    x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], *, c: float = 1.0
) -> Decodability:
    """Held-out accuracy of a standardised multinomial logistic-regression probe."""
    scores = []
    # One BLAS thread: these fits are small, and spare threads spin (5-10x slower on a busy CPU).
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in splits:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300, tol=1e-3))
            clf.fit(x[train], y[train])
            scores.append(float((clf.predict(x[test]) == y[test]).mean()))
    return Decodability(float(np.mean(scores)), float(np.std(scores)), tuple(scores))


def chance_accuracy(y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Accuracy of always answering the training folds' majority class."""
    scores = []
    for train, test in splits:
        majority = np.bincount(y[train]).argmax()
        scores.append(float((y[test] == majority).mean()))
    return float(np.mean(scores))


def onset_layer(accuracy: np.ndarray, chance: float, fraction: float = 0.5) -> int:
    """First layer whose gain over chance reaches ``fraction`` of the best layer's gain."""
    gain = accuracy - chance
    best = gain.max()
    if best <= 0:
        return int(np.argmax(accuracy))
    return int(np.nonzero(gain >= fraction * best)[0][0])

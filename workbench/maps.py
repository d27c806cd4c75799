"""Two-dimensional maps of representations, shared by every probe that draws one."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from workbench.errors import DataError

MAP_METHODS = ("pca", "umap")


def project_2d(x: np.ndarray, method: str, *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """A 2-D map of ``x`` (standardised) by PCA or UMAP, as float32.

    Both run on one thread: on a small machine the BLAS pool otherwise fights torch's.
    """
    if method not in MAP_METHODS:
        raise DataError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")
    if len(x) < 3:
        raise DataError(f"a map needs at least 3 points, got {len(x)}")
    if method == "pca":
        return pca_2d(x, seed=seed)[0]
    z = StandardScaler().fit_transform(x)
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(z) - 1),
        random_state=seed,
        n_jobs=1,
        init="pca",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reducer.fit_transform(z).astype(np.float32)


def pca_2d(x: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The PCA map of ``x`` (standardised), and the share of the variance each axis explains: a
    map's reader needs that share to know how much of the picture the two axes show."""
    if len(x) < 3:
        raise DataError(f"a map needs at least 3 points, got {len(x)}")
    z = StandardScaler().fit_transform(x)
    with threadpool_limits(limits=1):
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(z).astype(np.float32)
    return xy, pca.explained_variance_ratio_.astype(np.float32)

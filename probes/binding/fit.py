"""The fit: patch labels and pairs, features of every source and layer, and one IsSameObject
probe fitted and evaluated per (source, layer, probe type).

A source is the model, its random-init copy, raw pixel patches or one-hot positions. Every probe
is fitted on the training images, its best layer chosen on the validation images, and every
reported number measured on the test images: the same pairs for every source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.binding import compute
from probes.binding.config import Config
from workbench.capture import capture
from workbench.data.scenes import Scenes, make_binding_scenes, patch_labels
from workbench.data.segmentation import SegmentationSet, load_ade20k, load_coco
from workbench.errors import DataError
from workbench.models import LoadedModel

Data = Scenes | SegmentationSet
HEADLINE = "distance_matched_balanced_accuracy"
"""The metric that chooses best layers and probes, on validation images."""


# -- data --------------------------------------------------------------------------------------
def image_geometry(model: LoadedModel) -> tuple[int, int]:
    """The model's image side and patch side in pixels; DataError for a model without patches."""
    if not model.is_vision or not model.patch_size or not model.image_size:
        raise DataError(f"{model.spec} has no image patches to pair up")
    return int(model.image_size), int(model.patch_size)


def load_data(model: LoadedModel, config: Config) -> Data:
    """The dataset the config names, at the model's own resolution."""
    size, _ = image_geometry(model)
    if config.dataset == "scenes":
        return make_binding_scenes(config.n_images, size=size, seed=config.seed)
    if config.dataset == "ade20k":
        return load_ade20k(config.data_path, size=size, split=config.split, n=config.n_images)
    return load_coco(config.data_path, config.annotations, size=size, n=config.n_images)


def check_data(data: Data, model: LoadedModel) -> None:
    size, _ = image_geometry(model)
    n = len(data.images)
    if data.images.ndim != 4 or data.images.shape[1:] != (size, size, 3):
        raise DataError(
            f"images have shape {data.images.shape[1:]} but {model.spec} takes {size}x{size} RGB; "
            "load them with size=model.image_size (masks are resized alike)"
        )
    for name in ("instance_ids", "class_ids"):
        if getattr(data, name).shape != (n, size, size):
            raise DataError(
                f"{name} has shape {getattr(data, name).shape}, not (n, H, W) = {(n, size, size)}: "
                "masks must match the images pixel for pixel"
            )
    if n < 10:
        raise DataError(f"the dataset has {n} images; at least 10 are needed")


# -- what the analyses read --------------------------------------------------------------------
@dataclass
class ProbeFit:
    """One fitted probe on one source and layer, with what the analyses need from it."""

    source: str
    layer: int
    kind: str
    probe: compute.PairProbe
    scaler: compute.Standardiser | None
    val: dict[str, float]
    test: dict[str, float]
    counts: np.ndarray
    bins: tuple[np.ndarray, np.ndarray, np.ndarray]
    show: np.ndarray
    test_scores: np.ndarray | None = None

    @property
    def layer_label(self) -> str:
        if self.source in ("pixels", "positions"):
            return "input"
        return "embed" if self.layer == 0 else f"block {self.layer - 1}"

    @property
    def val_score(self) -> float:
        """The validation headline metric, -1 when undefined: what best layers are chosen by."""
        value = self.val[HEADLINE]
        return value if np.isfinite(value) else -1.0


@dataclass
class Setup:
    """The images, their patch labels, the split by image, the probed layers and the pairs."""

    data: Data
    ids: np.ndarray
    classes: np.ndarray
    grid: tuple[int, int]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    layers: list[int]
    layer_names: dict[int, str]
    sites: dict[int, str]
    targets: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    pairs: dict[str, compute.PairSet] = field(default_factory=dict)


@dataclass
class Fitted:
    """Everything the analyses read: the setup, the features and every fitted probe."""

    setup: Setup
    features: dict[tuple[str, int], torch.Tensor]
    """Patch features per (source, layer); the input controls sit at layer 0."""
    fits: list[ProbeFit]
    best: dict[tuple[str, str], ProbeFit]
    """Per (source, probe type): the fit at the layer with the best validation score."""

    def model_fits(self, kind: str) -> list[ProbeFit]:
        """The model's fits of one probe type, in layer order."""
        return [f for f in self.fits if f.source == "model" and f.kind == kind]


# -- the fit -----------------------------------------------------------------------------------
def fit_all(model: LoadedModel, config: Config, data: Data) -> Fitted:
    """Every probe type on every layer of the model, and the control probes on the controls."""
    setup = prepare(model, config, data)
    features = model_features(model, setup, config, "model")
    attention = attention_inputs(model, setup, config) if "attention" in config.probes else {}
    plan: list[tuple[str, int, str]] = [
        ("model", k, kind)
        for k in setup.layers
        for kind in config.probes
        if not (kind == "attention" and k not in attention)
    ]
    if "random_init" in config.controls:
        control = model.random_init_copy(config.seed)
        features.update(model_features(control, setup, config, "random_init"))
        del control
        plan += [("random_init", k, kind) for k in setup.layers for kind in config.control_probes]
    if "pixels" in config.controls:
        features[("pixels", 0)] = torch.from_numpy(
            compute.pixel_patches(
                data.images, image_geometry(model)[1], model.image_mean, model.image_std
            )
        )
        plan += [("pixels", 0, kind) for kind in config.control_probes]
    if "positions" in config.controls:
        features[("positions", 0)] = torch.from_numpy(
            compute.position_features(len(data.images), setup.ids.shape[1])
        )
        plan += [("positions", 0, kind) for kind in config.control_probes]

    fits = [
        fit_one(
            setup,
            config,
            source,
            k,
            kind,
            features[(source, k)],
            attention.get(k),
            keep_scores=source == "model" and kind == config.headline_probe,
        )
        for source, k, kind in tqdm(plan, desc="fit probes", unit="probe")
    ]
    return Fitted(setup, features, fits, best_layers(fits))


def prepare(model: LoadedModel, config: Config, data: Data) -> Setup:
    """Patch labels, the split by image, the probed layers and their sites, and the pairs."""
    size, p = image_geometry(model)
    side = size // p
    ids = patch_labels(
        np.asarray(data.instance_ids), p, background=-1, min_fraction=config.min_patch_fraction
    ).astype(np.int64)
    classes = patch_labels(
        np.asarray(data.class_ids), p, background=-1, min_fraction=config.min_patch_fraction
    ).astype(np.int64)
    n = len(ids)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_test = max(2, round(config.test_fraction * n))
    n_val = max(2, round(config.val_fraction * n))
    test, val, train = (
        np.sort(order[:n_test]),
        np.sort(order[n_test : n_test + n_val]),
        np.sort(order[n_test + n_val :]),
    )
    top = model.n_layers
    layers = probed_layers(config, top)
    names = {k: "embed" if k == 0 else f"block {k - 1}" for k in layers}
    sites = {k: "blocks.0.resid_pre" if k == 0 else f"blocks.{k - 1}.resid_post" for k in layers}
    setup = Setup(data, ids, classes, (side, side), train, val, test, layers, names, sites)
    same, valid = compute.pair_targets(ids[train], config.background)
    if not same.any() or not (valid & ~same).any():
        raise DataError(
            "the training images have no same-object pairs or no different-object pairs; use "
            "more images, or scenes with several objects covering several patches each"
        )
    setup.targets["train"] = (torch.from_numpy(same), torch.from_numpy(valid))
    for name, idx in (("val", val), ("test", test)):
        setup.pairs[name] = compute.PairSet.build(
            ids[idx], classes[idx], (side, side), config.background
        )
        if len(setup.pairs[name]) == 0:
            raise DataError(f"the {name} images have no usable pairs; use more images")
    return setup


def probed_layers(config: Config, top: int) -> list[int]:
    """The configured layers with the embedding (0) and the last layer (``top``) always in."""
    return sorted(set(config.layers) | {0, top}) if config.layers else list(range(top + 1))


def model_features(
    model: LoadedModel, setup: Setup, config: Config, source: str
) -> dict[tuple[str, int], torch.Tensor]:
    """Patch tokens (prefix tokens dropped) at every probed layer."""
    cache = capture(
        model, setup.data.images, list(setup.sites.values()), batch_size=config.batch_size
    )
    try:
        prefix = model.n_prefix_tokens
        return {
            (source, k): cache[site][:, prefix:].float().clone() for k, site in setup.sites.items()
        }
    finally:
        cache.close()


def _projection(model: LoadedModel, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A named (out, in) matrix and its bias (None if it has none), detached, in float32."""
    bias = model.bias(name)
    return model.weight(name).detach().float(), None if bias is None else bias.detach().float()


def attention_inputs(model: LoadedModel, setup: Setup, config: Config) -> dict[int, torch.Tensor]:
    """For each probed layer k below the top: the next block's own attention score between every
    two patches, (W_Q x_i + b_Q) . (W_K x_j + b_K) / sqrt(d_head), mean over heads, symmetrised,
    where x is what that block's attention reads (the layer-k residual after its layer norm)."""
    blocks = [k for k in setup.layers if k < model.n_layers]
    if not blocks:
        return {}
    heads = model.n_heads
    if heads is None:
        raise DataError(f"{model.spec} has no attention heads; drop attention from probes")
    names = [f"blocks.{k}.attn.W_Q.input" for k in blocks]
    cache = capture(model, setup.data.images, names, batch_size=config.batch_size)
    prefix = model.n_prefix_tokens
    out = {}
    try:
        for k, name in zip(blocks, names, strict=True):
            x = cache[name][:, prefix:].float()
            wq, bq = _projection(model, f"blocks.{k}.attn.W_Q")
            wk, bk = _projection(model, f"blocks.{k}.attn.W_K")
            q = x @ wq.T + (0 if bq is None else bq)
            key = x @ wk.T + (0 if bk is None else bk)
            out[k] = compute.attention_scores(q, key, heads)
    finally:
        cache.close()
    return out


# -- fitting and evaluating one probe ----------------------------------------------------------
def _usable(ids: np.ndarray, background: str) -> torch.Tensor:
    return torch.from_numpy(ids > 0 if background == "exclude" else ids >= 0)


def fit_settings(config: Config) -> compute.FitSettings:
    return compute.FitSettings(
        l2=config.l2, max_iter=config.max_iter, balanced=config.balanced_loss
    )


def fit_one(
    setup: Setup,
    config: Config,
    source: str,
    layer: int,
    kind: str,
    x: torch.Tensor,
    attention: torch.Tensor | None = None,
    *,
    keep_scores: bool = False,
    background: str | None = None,
    rank: int | None = None,
) -> ProbeFit:
    """Fit one probe on the training images and measure it on the validation and test pairs
    (under ``background``, the config's convention unless given)."""
    background = background or config.background
    scaler = None
    if kind in compute.TRAINED_PROBES:
        scaler = compute.Standardiser.fit(
            x[setup.train], _usable(setup.ids[setup.train], background)
        )
        x = scaler(x)
    if background == config.background:
        same, valid = setup.targets["train"]
        val_pairs, test_pairs = setup.pairs["val"], setup.pairs["test"]
    else:
        s, v = compute.pair_targets(setup.ids[setup.train], background)
        same, valid = torch.from_numpy(s), torch.from_numpy(v)
        val_pairs, test_pairs = (
            compute.PairSet.build(setup.ids[idx], setup.classes[idx], setup.grid, background)
            for idx in (setup.val, setup.test)
        )

    def att(idx: np.ndarray) -> torch.Tensor | None:
        return None if attention is None else attention[idx]

    probe = compute.fit_probe(
        kind,
        x[setup.train],
        same,
        valid,
        rank=rank or config.rank,
        settings=fit_settings(config),
        attention=att(setup.train),
        seed=config.seed,
    )
    val_scores = compute.score_pairs(probe, x[setup.val], att(setup.val)).numpy()
    test_scores = compute.score_pairs(probe, x[setup.test], att(setup.test)).numpy()
    test_flat = test_pairs.take(test_scores)
    return ProbeFit(
        source=source,
        layer=layer,
        kind=kind,
        probe=probe,
        scaler=scaler,
        val=compute.pair_metrics(val_pairs.take(val_scores), val_pairs, config.far_distance),
        test=compute.pair_metrics(test_flat, test_pairs, config.far_distance),
        counts=compute.image_counts(test_flat, test_pairs, len(setup.test)),
        bins=compute.distance_bin_accuracy(test_flat, test_pairs, distance_edges(setup.grid)),
        show=test_scores[: config.n_show].astype(np.float16),
        test_scores=test_scores if keep_scores else None,
    )


def distance_edges(grid: tuple[int, int]) -> np.ndarray:
    """Edges of one-patch-wide distance bins, up to the grid's diagonal."""
    top = float(np.hypot(grid[0] - 1, grid[1] - 1))
    return np.arange(0.0, np.floor(top) + 2.0)


def best_layers(fits: list[ProbeFit]) -> dict[tuple[str, str], ProbeFit]:
    """Per (source, probe): the layer with the best validation headline metric (the first one
    on ties)."""
    best: dict[tuple[str, str], ProbeFit] = {}
    for fit in fits:
        current = best.get((fit.source, fit.kind))
        if current is None or fit.val_score > current.val_score:
            best[(fit.source, fit.kind)] = fit
    return best

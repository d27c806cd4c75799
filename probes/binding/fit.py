"""The fit: patch labels and pairs, features of every source and layer, and one IsSameObject
probe fitted and evaluated per (source, layer, probe type).

A source is the model, its random-init copy, raw pixel patches or one-hot positions. The model
runs once over the images: that pass keeps every probed layer and every attention input the
probes need, in memory (``capture``) or in an activation store on disk (``store=DIR``); the
random-init copy is a second model with a pass of its own. Probes then read the features image
by image, so memory is bounded by a batch of images, not the dataset. Every probe is fitted on
the training images, its best layer chosen on the validation images, and every reported number
measured on the test images: the same pairs for every source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.binding import compute
from probes.binding.config import Config
from workbench.capture import ActivationCache, capture
from workbench.data.images import ImageFolderSet, describe_images, load_images
from workbench.data.scenes import Scenes, patch_labels
from workbench.data.segmentation import SegmentationSet
from workbench.errors import DataError
from workbench.models import LoadedModel
from workbench.store import ActivationStore, build_store

Data = Scenes | SegmentationSet | ImageFolderSet
HEADLINE = "distance_matched_balanced_accuracy"
"""The metric that chooses best layers and probes, on validation images."""
READ_IMAGES = 64
"""Images per read when features are streamed for standardising and scoring."""


# -- data --------------------------------------------------------------------------------------
def image_geometry(model: LoadedModel) -> tuple[int, int]:
    """The model's image side and patch side in pixels; DataError for a model without patches."""
    if not model.is_vision or not model.patch_size or not model.image_size:
        raise DataError(f"{model.spec} has no image patches to pair up")
    return int(model.image_size), int(model.patch_size)


def load_data(model: LoadedModel, config: Config) -> Data:
    """The dataset the config names, through the model's own preprocessing."""
    image_geometry(model)
    data: Data = load_images(
        model,
        config.dataset,
        path=config.data_path,
        annotations=config.annotations,
        split=config.split,
        n=config.n_images,
        seed=config.seed,
    )
    return data


def check_data(data: Data, model: LoadedModel) -> None:
    size, _ = image_geometry(model)
    n = len(data.images)
    if data.images.ndim != 4 or data.images.shape[1:] != (size, size, 3):
        raise DataError(
            f"images have shape {data.images.shape[1:]} but {model.spec} takes {size}x{size} RGB; "
            "load them with size=model.image_size (masks are resized alike)"
        )
    for name in ("instance_ids", "class_ids"):
        mask = getattr(data, name)
        if mask is None:
            raise DataError(
                "binding needs instance masks: put NAME_mask.png (0 = background, k = object k) "
                "beside every image of the folder, or use dataset=ade20k or coco"
            )
        if mask.shape != (n, size, size):
            raise DataError(
                f"{name} has shape {mask.shape}, not (n, H, W) = {(n, size, size)}: "
                "masks must match the images pixel for pixel"
            )
    if n < 10:
        raise DataError(f"the dataset has {n} images; at least 10 are needed")


# -- feature sources ---------------------------------------------------------------------------
Source = ActivationCache | ActivationStore


def read_site(source: Source, site: str, rows: np.ndarray) -> torch.Tensor:
    """Rows of one captured site, from memory or from the store."""
    if isinstance(source, ActivationStore):
        return source.read(site, rows)
    return source[site][torch.from_numpy(np.asarray(rows, dtype=np.int64))]


@dataclass
class Layer:
    """One (source, layer): its patch features of any images, read when asked for.

    ``read(rows)`` returns (len(rows), N, d) float32 with the prefix tokens (class token,
    registers) dropped; ``attention(rows)``, where set, the next block's attention scores.
    """

    dim: int
    read: Callable[[np.ndarray], torch.Tensor]
    attention: Callable[[np.ndarray], torch.Tensor] | None = None

    def chunks(self, rows: np.ndarray, size: int = READ_IMAGES) -> Iterator[np.ndarray]:
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    def mean(self, rows: np.ndarray) -> torch.Tensor:
        """Mean feature over every patch of the given images, streamed."""
        total, count = None, 0
        for part in self.chunks(rows):
            x = self.read(part).double().reshape(-1, self.dim)
            total = x.sum(0) if total is None else total + x.sum(0)
            count += x.shape[0]
        assert total is not None
        return (total / count).float()


def _site_layer(source: Source, site: str, prefix: int, dim: int) -> Layer:
    return Layer(dim, lambda rows: read_site(source, site, rows)[:, prefix:].float())


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
    """The test pairs' logits in ``PairSet`` order (kept for the headline probe)."""

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
    features: dict[tuple[str, int], Layer]
    """Patch features per (source, layer), read on demand; the input controls sit at layer 0."""
    fits: list[ProbeFit]
    best: dict[tuple[str, str], ProbeFit]
    """Per (source, probe type): the fit at the layer with the best validation score."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where the features came from (a store reused or built, or memory)."""
    sources: list[Source] = field(default_factory=list)
    device: torch.device | str = "cpu"
    """Where probes are fitted: the model's input device."""

    def model_fits(self, kind: str) -> list[ProbeFit]:
        """The model's fits of one probe type, in layer order."""
        return [f for f in self.fits if f.source == "model" and f.kind == kind]

    def close(self) -> None:
        """Let go of the captured features (and delete spill files) now."""
        for source in self.sources:
            source.close()
        self.sources = []


# -- the fit -----------------------------------------------------------------------------------
def attention_blocks(model: LoadedModel, config: Config, layers: list[int]) -> list[int]:
    """Blocks whose attention input the run needs: for the attention probe or correlation."""
    if "attention" not in config.probes and not config.attention:
        return []
    return [k for k in layers if k < model.n_layers]


def fit_all(model: LoadedModel, config: Config, data: Data) -> Fitted:
    """Every probe type on every layer of the model, and the control probes on the controls."""
    setup = prepare(model, config, data)
    provenance: dict[str, Any] = {}
    blocks = attention_blocks(model, config, setup.layers)
    sites = [*setup.sites.values(), *(f"blocks.{k}.attn.W_Q.input" for k in blocks)]
    source, provenance["features"] = extract(model, config, data, sites, "model")
    sources = [source]
    features = {
        ("model", k): _site_layer(source, site, model.n_prefix_tokens, model.d_model)
        for k, site in setup.sites.items()
    }
    for k in blocks if "attention" in config.probes else []:
        features[("model", k)].attention = _attention_scores(model, source, k)
    plan: list[tuple[str, int, str]] = [
        ("model", k, kind)
        for k in setup.layers
        for kind in config.probes
        if not (kind == "attention" and k not in blocks)
    ]
    if "random_init" in config.controls:
        control = model.random_init_copy(config.seed)
        control_source, provenance["random_init_features"] = extract(
            control, config, data, list(setup.sites.values()), f"random-init-seed-{config.seed}"
        )
        sources.append(control_source)
        del control
        for k, site in setup.sites.items():
            features[("random_init", k)] = _site_layer(
                control_source, site, model.n_prefix_tokens, model.d_model
            )
        plan += [("random_init", k, kind) for k in setup.layers for kind in config.control_probes]
    _, patch = image_geometry(model)
    if "pixels" in config.controls:
        features[("pixels", 0)] = Layer(
            patch * patch * 3,
            lambda rows: torch.from_numpy(
                compute.pixel_patches(data.images[rows], patch, model.image_mean, model.image_std)
            ),
        )
        plan += [("pixels", 0, kind) for kind in config.control_probes]
    if "positions" in config.controls:
        n_patches = setup.ids.shape[1]
        features[("positions", 0)] = Layer(
            n_patches,
            lambda rows: torch.from_numpy(compute.position_features(len(rows), n_patches)),
        )
        plan += [("positions", 0, kind) for kind in config.control_probes]

    fits = [
        fit_one(
            setup,
            config,
            source_name,
            k,
            kind,
            features[(source_name, k)],
            keep_scores=source_name == "model" and kind == config.headline_probe,
            device=model.device,
        )
        for source_name, k, kind in tqdm(plan, desc="fit probes", unit="probe")
    ]
    return Fitted(setup, features, fits, best_layers(fits), provenance, sources, model.device)


def extract(
    model: LoadedModel, config: Config, data: Data, sites: list[str], name: str
) -> tuple[Source, dict[str, Any]]:
    """One forward pass over every image keeping ``sites``: into the store ``config.store`` (its
    sub-folder ``name`` for a control model), reused where it already holds them; else into
    memory (spilling to temporary files above the capture's memory budget)."""
    if not config.store:
        cache = capture(model, data.images, sites, batch_size=config.batch_size)
        return cache, {"where": "memory", "model": model.spec}
    folder = Path(config.store).expanduser()
    if name != "model":
        folder = folder / name
    dataset, preprocessing = describe_images(
        model,
        config.dataset,
        path=config.data_path,
        annotations=config.annotations,
        seed=config.seed,
    )
    store = build_store(
        model,
        data.images,
        sites,
        folder,
        dataset=dataset,
        preprocessing=preprocessing,
        batch_size=config.batch_size,
    )
    return store, {
        "where": "store",
        "store": str(folder),
        "model": model.spec,
        "reused": store.reused,
        "rows_computed": store.computed_rows,
        "rows_reused": len(data.images) - store.computed_rows,
    }


def _attention_scores(model: LoadedModel, source: Source, k: int) -> Callable:
    """For probed layer k below the top: the next block's own attention score between every two
    patches, (W_Q x_i + b_Q) . (W_K x_j + b_K) / sqrt(d_head), mean over heads, symmetrised,
    where x is what that block's attention reads (the layer-k residual after its layer norm)."""
    heads = model.n_heads
    if heads is None:
        raise DataError(f"{model.spec} has no attention heads; drop attention from probes")
    wq, bq = _projection(model, f"blocks.{k}.attn.W_Q")
    wk, bk = _projection(model, f"blocks.{k}.attn.W_K")
    prefix = model.n_prefix_tokens

    def scores(rows: np.ndarray) -> torch.Tensor:
        x = read_site(source, f"blocks.{k}.attn.W_Q.input", rows)[:, prefix:].float()
        q = x @ wq.T + (0 if bq is None else bq)
        key = x @ wk.T + (0 if bk is None else bk)
        return compute.attention_scores(q, key, heads)

    return scores


def attention_patterns(model: LoadedModel, fitted: Fitted, k: int, rows: np.ndarray) -> np.ndarray:
    """Block k's attention weights among the patches of the given images (mean over heads,
    symmetrised), recomputed from the stored attention input: no second forward pass."""
    heads = model.n_heads
    assert heads is not None  # checked before the run
    wq, bq = _projection(model, f"blocks.{k}.attn.W_Q")
    wk, bk = _projection(model, f"blocks.{k}.attn.W_K")
    source = fitted.sources[0]
    parts = []
    for start in range(0, len(rows), READ_IMAGES):
        x = read_site(source, f"blocks.{k}.attn.W_Q.input", rows[start : start + READ_IMAGES])
        x = x.float()
        q = x @ wq.T + (0 if bq is None else bq)
        key = x @ wk.T + (0 if bk is None else bk)
        parts.append(compute.attention_pattern(q, key, heads, model.n_prefix_tokens))
    return torch.cat(parts).numpy()


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
    """The configured layers (or ``max_layers`` evenly spaced ones, or all) with the embedding
    (0) and the last layer (``top``) always in."""
    if config.layers:
        return sorted(set(config.layers) | {0, top})
    if config.max_layers and config.max_layers < top + 1:
        spaced = np.linspace(0, top, max(2, config.max_layers)).round().astype(int)
        return sorted({int(k) for k in spaced} | {0, top})
    return list(range(top + 1))


def _projection(model: LoadedModel, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A named (out, in) matrix and its bias (None if it has none), detached, float32, CPU."""
    bias = model.bias(name)
    weight = model.weight(name).detach().float().cpu()
    return weight, None if bias is None else bias.detach().float().cpu()


# -- fitting and evaluating one probe ----------------------------------------------------------
def _usable(ids: np.ndarray, background: str) -> torch.Tensor:
    return torch.from_numpy(ids > 0 if background == "exclude" else ids >= 0)


def fit_settings(config: Config) -> compute.FitSettings:
    return compute.FitSettings(
        l2=config.l2,
        max_iter=config.max_iter,
        balanced=config.balanced_loss,
        full_batch_images=config.full_batch_images,
        minibatch_images=config.minibatch_images,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
    )


def fit_one(
    setup: Setup,
    config: Config,
    source: str,
    layer: int,
    kind: str,
    features: Layer,
    *,
    keep_scores: bool = False,
    background: str | None = None,
    rank: int | None = None,
    device: torch.device | str = "cpu",
) -> ProbeFit:
    """Fit one probe on the training images and measure it on the validation and test pairs
    (under ``background``, the config's convention unless given). Features are read a batch of
    images at a time; the probe is fitted on ``device``."""
    background = background or config.background
    scaler = None
    if kind in compute.TRAINED_PROBES:
        scaler = compute.Standardiser.fit_chunks(
            (features.read(rows), _usable(setup.ids[rows], background))
            for rows in features.chunks(setup.train)
        )
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
    needs_x = kind != "attention"

    def inputs(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Standardised features (or an empty stand-in) and attention scores of some images."""
        if needs_x:
            x = features.read(images)
            x = scaler(x) if scaler is not None else x
        else:
            x = torch.empty(len(images), setup.ids.shape[1], 0)
        att = None
        if kind == "attention":
            if features.attention is None:
                raise DataError("the attention probe needs the next layer's attention scores")
            att = features.attention(images).to(device)
        return x.to(device), att

    probe = compute.fit_probe_from(
        kind,
        features.dim,
        lambda rows: inputs(setup.train[rows]),
        same,
        valid,
        rank=rank or config.rank,
        settings=fit_settings(config),
        seed=config.seed,
        device=device,
    )

    def scores(images: np.ndarray) -> np.ndarray:
        parts = []
        for rows in features.chunks(images):
            x, att = inputs(rows)
            parts.append(compute.score_pairs(probe, x, att))
        return torch.cat(parts).numpy()

    val_scores = scores(setup.val)
    test_scores = scores(setup.test)
    test_flat = test_pairs.take(test_scores)
    return ProbeFit(
        source=source,
        layer=layer,
        kind=kind,
        probe=probe.cpu(),
        scaler=scaler,
        val=compute.pair_metrics(val_pairs.take(val_scores), val_pairs, config.far_distance),
        test=compute.pair_metrics(test_flat, test_pairs, config.far_distance),
        counts=compute.image_counts(test_flat, test_pairs, len(setup.test)),
        bins=compute.distance_bin_accuracy(test_flat, test_pairs, distance_edges(setup.grid)),
        show=test_scores[: config.n_show].astype(np.float16),
        test_scores=test_flat if keep_scores else None,
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

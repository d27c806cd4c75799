"""``run``: IsSameObject probes on every layer of a ViT, beside the controls that explain them away.

Which patches belong to one object is decoded from pairs of patch embeddings. Two patches of
one object are usually close together and alike, so every number is measured beside controls
on the very same pairs: raw pixel patches, patch positions alone, the model's own
patch-embedding layer (layer 0) and the same architecture with random weights. The headline is
the distance-matched balanced accuracy: positives and negatives reweighted to one distance
distribution, so distance alone scores 0.5.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.binding import compute
from probes.binding.config import Config
from workbench.capture import capture, encode_inputs, hooks
from workbench.data.scenes import Scenes, make_binding_scenes, patch_labels
from workbench.data.segmentation import SegmentationSet, load_ade20k, load_coco
from workbench.errors import DataError
from workbench.models import LoadedModel
from workbench.probe import check_family
from workbench.results import ProbeResult, run_provenance
from workbench.threads import torch_threads

NAME = "binding"
FAMILIES = ("vit",)
DEFAULT_MODELS = ("zoo:vit-binding-contrast", "zoo:vit-binding-mae", "zoo:vit-binding-sup")
CONTROLS = ("pixels", "positions", "random_init")
SOURCE_LABELS = {
    "model": "model",
    "random_init": "random-init model",
    "pixels": "pixel patches",
    "positions": "positions only",
}
DATASETS = ("scenes", "ade20k", "coco")
Data = Scenes | SegmentationSet


# -- checks ------------------------------------------------------------------------------------
def validate(config: Config) -> None:
    """Refuse a bad config before any work, naming the fix."""
    if config.dataset not in DATASETS:
        raise DataError(f"unknown dataset {config.dataset!r}; choose from {', '.join(DATASETS)}")
    if config.dataset in ("ade20k", "coco") and not config.data_path:
        raise DataError(f"dataset={config.dataset} needs data_path=<folder on disk>")
    if config.dataset == "coco" and not config.annotations:
        raise DataError("dataset=coco needs annotations=<instances_*.json>")
    if config.n_images < 10:
        raise DataError(
            f"n_images must be at least 10 (train, validation and test); got {config.n_images}"
        )
    if not (0 < config.val_fraction < 1 and 0 < config.test_fraction < 1) or (
        config.val_fraction + config.test_fraction > 0.8
    ):
        raise DataError("val_fraction and test_fraction must be in (0, 1) and sum to at most 0.8")
    if config.background not in compute.BACKGROUND_MODES:
        raise DataError(
            f"background must be one of {', '.join(compute.BACKGROUND_MODES)}; "
            f"got {config.background!r}"
        )
    unknown = [p for p in (*config.probes, *config.control_probes) if p not in compute.PROBES]
    if unknown or not config.probes:
        raise DataError(f"unknown probe(s) {unknown}; choose from {', '.join(compute.PROBES)}")
    if config.headline_probe not in ("quadratic", "lowrank", "diagonal"):
        raise DataError("headline_probe must be quadratic, lowrank or diagonal (it needs a W_s)")
    if config.headline_probe not in config.probes:
        raise DataError(f"headline_probe {config.headline_probe!r} must be one of the probes")
    if "attention" in config.control_probes:
        raise DataError("the attention probe needs a model; drop it from control_probes")
    bad = [c for c in config.controls if c not in CONTROLS]
    if bad:
        raise DataError(f"unknown control(s) {bad}; choose from {', '.join(CONTROLS)}")
    if config.rank < 1 or config.ablation_rank < 1 or any(r < 1 for r in config.ranks):
        raise DataError("rank, ablation_rank and ranks must be positive")
    if not 0.0 <= config.min_patch_fraction <= 1.0:
        raise DataError("min_patch_fraction must be in [0, 1]")
    if config.n_show < 1 or config.bootstrap < 0 or config.ablation_random < 1:
        raise DataError("n_show and ablation_random must be >= 1 and bootstrap >= 0")
    if config.threads < 1:
        raise DataError(f"threads must be at least 1; got {config.threads}")


def check_model(model: LoadedModel, config: Config) -> None:
    check_family(model, FAMILIES, NAME)
    if not model.is_vision or not model.patch_size:
        raise DataError(f"{model.spec} has no image patches to pair up")
    top = model.n_layers
    bad = [k for k in config.layers if not 0 <= k <= top]
    if bad:
        raise DataError(
            f"layers {bad} are out of range for {model.spec}: 0 is the patch embedding, "
            f"1..{top} are the blocks' outputs"
        )
    if config.ablation_layer >= top:
        raise DataError(f"ablation_layer must be below {top} (the last layer) or -1 for auto")


def load_data(model: LoadedModel, config: Config) -> Data:
    """The dataset the config names, at the model's own resolution."""
    size = int(model.image_size)
    if config.dataset == "scenes":
        return make_binding_scenes(config.n_images, size=size, seed=config.seed)
    if config.dataset == "ade20k":
        return load_ade20k(config.data_path, size=size, split=config.split, n=config.n_images)
    return load_coco(config.data_path, config.annotations, size=size, n=config.n_images)


def check_data(data: Data, model: LoadedModel) -> None:
    size = model.image_size
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


# -- run ---------------------------------------------------------------------------------------
@dataclass
class _Job:
    """One fitted probe on one source and layer, with what later steps need from it."""

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


@dataclass
class _Setup:
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


def run(model: LoadedModel, config: Config | None = None, data: Data | None = None) -> ProbeResult:
    """IsSameObject probes per layer and probe type, beside pixel, position, embedding and
    random-init controls; subspace, attention and ablation analyses of the headline probe."""
    started = time.time()
    config = config or Config()
    validate(config)
    check_model(model, config)
    data = data if data is not None else load_data(model, config)
    check_data(data, model)
    with torch_threads(config.threads):
        return _run(model, config, data, started)


def _run(model: LoadedModel, config: Config, data: Data, started: float) -> ProbeResult:
    setup = _prepare(model, config, data)
    settings = compute.FitSettings(
        l2=config.l2, max_iter=config.max_iter, balanced=config.balanced_loss
    )

    features = _model_features(model, setup, config, "model")
    attention = _attention_inputs(model, setup, config) if "attention" in config.probes else {}
    plan: list[tuple[str, int, str]] = [
        ("model", k, kind)
        for k in setup.layers
        for kind in config.probes
        if not (kind == "attention" and k not in attention)
    ]
    if "random_init" in config.controls:
        control = model.random_init_copy(config.seed)
        features.update(_model_features(control, setup, config, "random_init"))
        del control
        plan += [("random_init", k, kind) for k in setup.layers for kind in config.control_probes]
    if "pixels" in config.controls:
        features[("pixels", 0)] = torch.from_numpy(
            compute.pixel_patches(data.images, model.patch_size, model.image_mean, model.image_std)
        )
        plan += [("pixels", 0, kind) for kind in config.control_probes]
    if "positions" in config.controls:
        features[("positions", 0)] = torch.from_numpy(
            compute.position_features(len(data.images), setup.ids.shape[1])
        )
        plan += [("positions", 0, kind) for kind in config.control_probes]

    jobs: list[_Job] = []
    for source, k, kind in tqdm(plan, desc="fit probes", unit="probe"):
        keep = source == "model" and kind == config.headline_probe
        jobs.append(
            _fit_job(
                setup,
                config,
                settings,
                source,
                k,
                kind,
                features[(source, k)],
                attention.get(k),
                keep_scores=keep,
            )
        )
    best = _best_layers(jobs)
    head = best[("model", config.headline_probe)]

    arrays: dict[str, np.ndarray] = {}
    metrics: dict[str, Any] = {}
    _table(jobs, best, setup, arrays, metrics)
    _compare_controls(jobs, best, config, metrics)
    _subspace(setup, config, settings, features, head, metrics, arrays)
    metrics["other_background_convention"] = _other_convention(
        setup, config, settings, features, head
    )
    if config.attention:
        _attention_correlation(model, setup, config, jobs, arrays, metrics)
    if config.ablation:
        _ablation(model, setup, config, settings, features, jobs, best, arrays, metrics)
    _showcase(setup, config, jobs, arrays)
    _dataset_facts(setup, config, metrics)
    metrics["patch_size"] = int(model.patch_size)
    metrics["headline"] = [
        "distance_matched_balanced_accuracy",
        "best_probe",
        "best_layer",
        "position_control",
        "pixel_control",
        "beats_position_and_pixel_controls",
    ]
    summary = _summary(model.spec, config, metrics)
    result = ProbeResult(
        probe=NAME,
        metrics=metrics,
        arrays=arrays,
        figures={},
        provenance=run_provenance(NAME, model, config, started),
        summary=summary,
    )
    from probes.binding.plots import figures

    result.figures = figures(result)
    return result


# -- preparation -------------------------------------------------------------------------------
def _prepare(model: LoadedModel, config: Config, data: Data) -> _Setup:
    p = model.patch_size
    side = model.image_size // p
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
    layers = sorted(set(config.layers) | {0, top}) if config.layers else list(range(top + 1))
    names = {k: "embed" if k == 0 else f"block {k - 1}" for k in layers}
    sites = {k: "blocks.0.resid_pre" if k == 0 else f"blocks.{k - 1}.resid_post" for k in layers}
    setup = _Setup(data, ids, classes, (side, side), train, val, test, layers, names, sites)
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


def _model_features(
    model: LoadedModel, setup: _Setup, config: Config, source: str
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
    """A named (out, in) matrix and the bias of the layer that holds it (None if it has none)."""
    matrix = model.weight(name).detach().float()
    holder = model.model.get_submodule(model.weights[name].module)
    bias = getattr(holder, "bias", None)
    return matrix, None if bias is None else bias.detach().float()


def _attention_inputs(model: LoadedModel, setup: _Setup, config: Config) -> dict[int, torch.Tensor]:
    """For each probed layer k below the top: the next block's own attention score between every
    two patches, (W_Q x_i + b_Q) . (W_K x_j + b_K) / sqrt(d_head), mean over heads, symmetrised,
    where x is what that block's attention reads (the layer-k residual after its layer norm)."""
    blocks = [k for k in setup.layers if k < model.n_layers]
    if not blocks:
        return {}
    names = [f"blocks.{k}.attn.W_Q.input" for k in blocks]
    cache = capture(model, setup.data.images, names, batch_size=config.batch_size)
    cfg = model.model.config
    heads = int(getattr(cfg, "vision_config", cfg).num_attention_heads)
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


def _fit_job(
    setup: _Setup,
    config: Config,
    settings: compute.FitSettings,
    source: str,
    layer: int,
    kind: str,
    x: torch.Tensor,
    attention: torch.Tensor | None,
    *,
    keep_scores: bool = False,
    background: str | None = None,
    rank: int | None = None,
) -> _Job:
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
    att = (lambda idx: None) if attention is None else (lambda idx: attention[idx])
    probe = compute.fit_probe(
        kind,
        x[setup.train],
        same,
        valid,
        rank=rank or config.rank,
        settings=settings,
        attention=att(setup.train),
        seed=config.seed,
    )
    val_scores = compute.score_pairs(probe, x[setup.val], att(setup.val)).numpy()
    test_scores = compute.score_pairs(probe, x[setup.test], att(setup.test)).numpy()
    test_flat = test_pairs.take(test_scores)
    edges = _distance_edges(setup.grid)
    return _Job(
        source=source,
        layer=layer,
        kind=kind,
        probe=probe,
        scaler=scaler,
        val=compute.pair_metrics(val_pairs.take(val_scores), val_pairs, config.far_distance),
        test=compute.pair_metrics(test_flat, test_pairs, config.far_distance),
        counts=compute.image_counts(test_flat, test_pairs, len(setup.test)),
        bins=compute.distance_bin_accuracy(test_flat, test_pairs, edges),
        show=test_scores[: config.n_show].astype(np.float16),
        test_scores=test_scores if keep_scores else None,
    )


def _distance_edges(grid: tuple[int, int]) -> np.ndarray:
    top = float(np.hypot(grid[0] - 1, grid[1] - 1))
    return np.arange(0.0, np.floor(top) + 2.0)


def _best_layers(jobs: list[_Job]) -> dict[tuple[str, str], _Job]:
    """Per (source, probe): the layer with the best validation headline metric."""
    best: dict[tuple[str, str], _Job] = {}
    key = "distance_matched_balanced_accuracy"
    for job in jobs:
        current = best.get((job.source, job.kind))
        score = job.val[key] if np.isfinite(job.val[key]) else -1.0
        if current is None or score > (current.val[key] if np.isfinite(current.val[key]) else -1.0):
            best[(job.source, job.kind)] = job
    return best


# -- tables and comparisons --------------------------------------------------------------------
METRIC_KEYS = (
    "distance_matched_balanced_accuracy",
    "accuracy",
    "balanced_accuracy",
    "roc_auc",
    "majority_baseline",
    "hard_negative_accuracy",
    "touching_negative_accuracy",
    "far_positive_accuracy",
)


def _table(
    jobs: list[_Job],
    best: dict[tuple[str, str], _Job],
    setup: _Setup,
    arrays: dict[str, np.ndarray],
    metrics: dict[str, Any],
) -> None:
    """Every (source, layer, probe) result as arrays, and the best-layer table as metrics."""
    arrays["job_source"] = np.array([j.source for j in jobs])
    arrays["job_layer"] = np.array([j.layer for j in jobs])
    arrays["job_probe"] = np.array([j.kind for j in jobs])
    arrays["job_is_best"] = np.array([best[(j.source, j.kind)] is j for j in jobs])
    for m in METRIC_KEYS:
        arrays[f"test_{m}"] = np.array([j.test[m] for j in jobs])
        arrays[f"val_{m}"] = np.array([j.val[m] for j in jobs])
    arrays["test_n_pairs"] = np.array([int(j.test["n_pairs"]) for j in jobs])
    arrays["bin_balanced_accuracy"] = np.stack([j.bins[0] for j in jobs])
    arrays["bin_positive_accuracy"] = np.stack([j.bins[1] for j in jobs])
    arrays["bin_negative_accuracy"] = np.stack([j.bins[2] for j in jobs])
    edges = _distance_edges(setup.grid)
    arrays["bin_edges"] = edges
    test = setup.pairs["test"]
    which = np.digitize(test.distance, edges) - 1
    arrays["bin_positive_fraction"] = np.array(
        [
            test.same[which == k].mean() if (which == k).any() else np.nan
            for k in range(len(edges) - 1)
        ]
    )
    arrays["bin_pairs"] = np.bincount(which, minlength=len(edges) - 1)[: len(edges) - 1]
    arrays["layer_index"] = np.array(setup.layers)
    arrays["layer_names"] = np.array([setup.layer_names[k] for k in setup.layers])
    rows = []
    for (source, kind), job in best.items():
        rows.append(
            {
                "source": source,
                "probe": kind,
                "best_layer": setup.layer_names[job.layer]
                if source in ("model", "random_init")
                else "input",
                **{m: round(job.test[m], 4) for m in METRIC_KEYS},
            }
        )
    metrics["table"] = rows


def _compare_controls(
    jobs: list[_Job], best: dict[tuple[str, str], _Job], config: Config, metrics: dict[str, Any]
) -> None:
    """The model's best probe and layer against each control's best (all chosen on validation
    images), with bootstrap intervals of model minus control on the test images."""
    key = "distance_matched_balanced_accuracy"

    def val_score(job: _Job) -> float:
        return job.val[key] if np.isfinite(job.val[key]) else -1.0

    head = max((j for (s, _), j in best.items() if s == "model"), key=val_score)
    quad = best[("model", config.headline_probe)]
    embed = max((j for j in jobs if j.source == "model" and j.layer == 0), key=val_score)
    controls: dict[str, _Job] = {"patch_embedding": embed}
    for source in ("pixels", "positions", "random_init"):
        candidates = [job for (s, _), job in best.items() if s == source]
        if candidates:
            controls[source] = max(candidates, key=val_score)
    metrics.update(
        {
            "distance_matched_balanced_accuracy": head.test[key],
            "best_layer": _layer_label(head),
            "best_probe": head.kind,
            "accuracy": head.test["accuracy"],
            "majority_baseline": head.test["majority_baseline"],
            "balanced_accuracy": head.test["balanced_accuracy"],
            "roc_auc": head.test["roc_auc"],
            "hard_negative_accuracy": head.test["hard_negative_accuracy"],
            "far_positive_accuracy": head.test["far_positive_accuracy"],
            "headline_probe": config.headline_probe,
            "headline_probe_result": {
                "layer": _layer_label(quad),
                **{m: round(quad.test[m], 4) for m in METRIC_KEYS},
            },
        }
    )
    names = {
        "pixels": "pixel_control",
        "positions": "position_control",
        "random_init": "random_init_control",
        "patch_embedding": "patch_embedding_control",
    }
    comparisons = {}
    for source, job in controls.items():
        metrics[names[source]] = job.test[key]
        diff, low, high = compute.bootstrap_difference(
            head.counts, job.counts, config.bootstrap, config.seed
        )
        comparisons[source] = {
            "control": f"{SOURCE_LABELS.get(source, 'patch embedding')} "
            f"({job.kind}, {_layer_label(job)})",
            "control_value": job.test[key],
            "model_minus_control": diff,
            "ci95": [low, high],
            "model_beats_control": bool(low > 0),
        }
    metrics["model_vs_controls"] = comparisons
    needed = [s for s in ("pixels", "positions") if s in comparisons]
    metrics["beats_position_and_pixel_controls"] = bool(needed) and all(
        comparisons[s]["model_beats_control"] for s in needed
    )
    metrics["best_control"] = max(
        ((s, c["control_value"]) for s, c in comparisons.items()), key=lambda t: t[1]
    )[0]


def _layer_label(job: _Job) -> str:
    if job.source in ("pixels", "positions"):
        return "input"
    return "embed" if job.layer == 0 else f"block {job.layer - 1}"


# -- subspace, other convention ---------------------------------------------------------------
def _subspace(
    setup: _Setup,
    config: Config,
    settings: compute.FitSettings,
    features: dict,
    head: _Job,
    metrics: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> None:
    """W_s spectrum of the headline probe at its best layer, and accuracy vs rank there."""
    matrix = head.probe.symmetric_matrix()
    values, _ = compute.subspace_spectrum(matrix)
    arrays["spectrum"] = values
    x = features[("model", head.layer)]
    ranks = [r for r in config.ranks if r <= x.shape[-1]]
    scores = []
    for r in tqdm(ranks, desc="accuracy vs rank", leave=False):
        job = _fit_job(setup, config, settings, "model", head.layer, "lowrank", x, None, rank=r)
        scores.append(job.test["distance_matched_balanced_accuracy"])
    arrays["rank_values"] = np.array(ranks)
    arrays["rank_headline"] = np.array(scores)
    energy = np.cumsum(values**2) / max(float((values**2).sum()), 1e-12)
    metrics["subspace"] = {
        "layer": _layer_label(head),
        "rank_curve": dict(
            zip([str(r) for r in ranks], [round(s, 4) for s in scores], strict=True)
        ),
        "full_rank": head.test["distance_matched_balanced_accuracy"],
        "dims_for_90pct_of_W_energy": int(np.searchsorted(energy, 0.9) + 1),
    }


def _other_convention(
    setup: _Setup, config: Config, settings: compute.FitSettings, features: dict, head: _Job
) -> dict[str, Any]:
    """The headline probe at its best layer, refitted under the other background convention."""
    other = "as_object" if config.background == "exclude" else "exclude"
    job = _fit_job(
        setup,
        config,
        settings,
        "model",
        head.layer,
        head.kind,
        features[("model", head.layer)],
        None,
        background=other,
    )
    return {
        "background": other,
        "layer": _layer_label(head),
        **{m: round(job.test[m], 4) for m in METRIC_KEYS},
    }


# -- attention ---------------------------------------------------------------------------------
def _attention_correlation(
    model: LoadedModel,
    setup: _Setup,
    config: Config,
    jobs: list[_Job],
    arrays: dict[str, np.ndarray],
    metrics: dict[str, Any],
) -> None:
    """Pearson r between the next block's attention weights (mean over heads, symmetrised) and
    the headline probe's IsSameObject probability, per layer; and the same with distance
    partialled out (both residualised on the exact patch distance)."""
    blocks = [k for k in setup.layers if k < model.n_layers]
    patterns = _attention_patterns(model, setup, config, blocks)
    test = setup.pairs["test"]
    r, partial = [], []
    for k in setup.layers:
        job = next(
            (
                j
                for j in jobs
                if j.source == "model" and j.layer == k and j.kind == config.headline_probe
            ),
            None,
        )
        if k not in patterns or job is None or job.test_scores is None:
            r.append(np.nan)
            partial.append(np.nan)
            continue
        att = test.take(patterns[k])
        prob = 1.0 / (1.0 + np.exp(-test.take(job.test_scores).astype(np.float64)))
        r.append(compute.pearson(att, prob))
        partial.append(
            compute.pearson(
                compute.partial_out_groups(att, test.key),
                compute.partial_out_groups(prob, test.key),
            )
        )
    arrays["attention_r"] = np.array(r)
    arrays["attention_partial_r"] = np.array(partial)
    finite = np.isfinite(arrays["attention_r"])
    if finite.any():
        k = int(np.nanargmax(np.abs(arrays["attention_r"])))
        metrics["attention"] = {
            "strongest_layer": setup.layer_names[setup.layers[k]],
            "pearson_r": float(arrays["attention_r"][k]),
            "partial_r_given_distance": float(arrays["attention_partial_r"][k]),
        }


def _attention_patterns(
    model: LoadedModel, setup: _Setup, config: Config, blocks: list[int]
) -> dict[int, np.ndarray]:
    """Mean-over-heads attention among patch tokens of each block, on the test images."""
    prefix = model.n_prefix_tokens
    images = setup.data.images[setup.test]
    store: dict[int, list[torch.Tensor]] = {k: [] for k in blocks}

    def recorder(k: int) -> Callable[[torch.Tensor], None]:
        def record(value: torch.Tensor) -> None:
            a = value.float().mean(1)[:, prefix:, prefix:]
            store[k].append((a + a.transpose(1, 2)) / 2)

        return record

    batch = encode_inputs(model, images)
    with hooks(model, {f"blocks.{k}.attn.pattern": recorder(k) for k in blocks}):
        for start in range(0, len(images), config.batch_size):
            model(**{name: v[start : start + config.batch_size] for name, v in batch.items()})
    return {k: torch.cat(v).numpy() for k, v in store.items()}


# -- ablation ----------------------------------------------------------------------------------
def _ablation(
    model: LoadedModel,
    setup: _Setup,
    config: Config,
    settings: compute.FitSettings,
    features: dict,
    jobs: list[_Job],
    best: dict[tuple[str, str], _Job],
    arrays: dict[str, np.ndarray],
    metrics: dict[str, Any],
) -> None:
    """Remove or shuffle the binding subspace at one layer; measure the model downstream against
    removing a random subspace of equal dimension."""
    top = model.n_layers
    candidates = [
        j for j in jobs if j.source == "model" and j.kind == config.headline_probe and j.layer < top
    ]
    if config.ablation_layer >= 0:
        chosen = [j for j in candidates if j.layer == config.ablation_layer]
        if not chosen:
            raise DataError(
                f"ablation_layer {config.ablation_layer} is not among the probed layers"
            )
        job = chosen[0]
    elif candidates:
        key = "distance_matched_balanced_accuracy"
        job = max(candidates, key=lambda j: j.val[key] if np.isfinite(j.val[key]) else -1)
    else:
        return
    final = next(
        j
        for j in jobs
        if j.source == "model" and j.kind == config.headline_probe and j.layer == top
    )
    rank = min(config.ablation_rank, features[("model", job.layer)].shape[-1])
    binding = compute.binding_directions(job.probe, job.scaler, rank)
    centre = features[("model", job.layer)][setup.train].reshape(-1, binding.shape[0]).mean(0)
    site, final_site = setup.sites[job.layer], setup.sites[top]
    decoder = _class_decoder(features[("model", top)], setup)
    test_pairs = setup.pairs["test"]
    images = setup.data.images[setup.test]
    own_truth = _own_head_truth(model, setup)

    def measure(context: Any) -> dict[str, float]:
        with context:
            feats, logits = _forward_final(model, images, final_site, config.batch_size)
        scores = compute.score_pairs(final.probe, final.scaler(feats)).numpy()
        pred = test_pairs.take(scores) > 0
        out = {
            "final_layer_binding": compute.distance_matched_balanced_accuracy(
                pred, test_pairs.same, test_pairs.key
            ),
            "final_layer_class_accuracy": decoder(feats),
        }
        if own_truth is not None and logits is not None:
            out["own_head_accuracy"] = float(((logits > 0).numpy() == own_truth).mean())
        return out

    def ablate(directions: torch.Tensor, mode: str, seed: int) -> Any:
        return compute.ablate_subspace(model, site, directions, mode=mode, centre=centre, seed=seed)

    conditions: dict[str, list[dict[str, float]]] = {"clean": [measure(nullcontext())]}
    runs = [("binding_remove", binding, "remove"), ("binding_shuffle", binding, "shuffle")]
    for s in range(config.ablation_random):
        d = compute.random_directions(binding.shape[0], rank, config.seed + 1000 + s)
        runs += [("random_remove", d, "remove"), ("random_shuffle", d, "shuffle")]
    for name, directions, mode in tqdm(runs, desc="ablation", leave=False):
        conditions.setdefault(name, []).append(measure(ablate(directions, mode, config.seed)))
    summary = {}
    names = list(conditions)
    keys = list(conditions["clean"][0])
    for name in names:
        summary[name] = {
            k: {
                "mean": float(np.mean([c[k] for c in conditions[name]])),
                "std": float(np.std([c[k] for c in conditions[name]])),
            }
            for k in keys
        }
    arrays["ablation_conditions"] = np.array(names)
    arrays["ablation_measures"] = np.array(keys)
    arrays["ablation_mean"] = np.array([[summary[n][k]["mean"] for k in keys] for n in names])
    arrays["ablation_std"] = np.array([[summary[n][k]["std"] for k in keys] for n in names])
    test_classes = setup.classes[setup.test]
    counts = np.bincount(test_classes[test_classes > 0])
    metrics["ablation"] = {
        "class_chance": float(counts.max() / counts.sum()) if counts.sum() else float("nan"),
        "layer": _layer_label(job),
        "rank": rank,
        "random_subspaces": config.ablation_random,
        "measured_at": setup.layer_names[top],
        "results": {n: {k: round(v["mean"], 4) for k, v in summary[n].items()} for n in names},
    }


def _forward_final(
    model: LoadedModel, images: np.ndarray, site: str, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Patch tokens at ``site`` and the model's own logits (if it has a head), in batches."""
    feats: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    prefix = model.n_prefix_tokens
    batch = encode_inputs(model, images)

    def record(value: torch.Tensor) -> None:
        feats.append(value[:, prefix:].float().clone())

    with hooks(model, {site: record}):
        for start in range(0, len(images), batch_size):
            out = model(**{k: v[start : start + batch_size] for k, v in batch.items()})
            if getattr(out, "logits", None) is not None:
                logits.append(out.logits.float())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def _own_head_truth(model: LoadedModel, setup: _Setup) -> np.ndarray | None:
    """Which classes are present per test image, when the model's own head predicts exactly
    those (a multi-label classifier over the scene classes); else None."""
    data = setup.data
    n_labels = getattr(getattr(model.model, "config", None), "num_labels", None)
    if not isinstance(data, Scenes) or not hasattr(model.model, "classifier"):
        return None
    if n_labels != data.n_classes:
        return None
    return data.present()[setup.test]


def _class_decoder(final: torch.Tensor, setup: _Setup) -> Callable[[torch.Tensor], float]:
    """A per-patch linear class probe on clean final-layer features (a segmentation read-out),
    returning a function that scores test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr_ids = setup.classes[setup.train]
    mask = tr_ids > 0
    x = final[setup.train][torch.from_numpy(mask)].numpy()
    y = tr_ids[mask]
    te_ids = setup.classes[setup.test]
    te_mask = te_ids > 0
    if len(np.unique(y)) < 2 or not te_mask.any():
        return lambda feats: float("nan")
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(max_iter=300, C=1.0).fit(scaler.transform(x), y)

    def score(feats: torch.Tensor) -> float:
        xs = scaler.transform(feats[torch.from_numpy(te_mask)].numpy())
        return float((clf.predict(xs) == te_ids[te_mask]).mean())

    return score


# -- examples and facts ------------------------------------------------------------------------
def _showcase(
    setup: _Setup, config: Config, jobs: list[_Job], arrays: dict[str, np.ndarray]
) -> None:
    """Pair logits of the first test images for every job, and an informative query patch each."""
    idx = setup.test[: config.n_show]
    arrays["show_logits"] = np.stack([j.show for j in jobs], axis=0)
    arrays["show_images"] = setup.data.images[idx]
    arrays["show_patch_ids"] = setup.ids[idx]
    distance, _ = compute.grid_distances(*setup.grid)
    queries = []
    for ids, classes in zip(setup.ids[idx], setup.classes[idx], strict=True):
        far = ((ids[:, None] == ids[None]) & (distance >= config.far_distance)).sum(1)
        twins = (
            (classes[:, None] == classes[None]) & (ids[:, None] != ids[None]) & (ids[None] > 0)
        ).sum(1)
        interest = np.where(ids > 0, far + twins + 1e-3 * (ids > 0), -1)
        queries.append(int(np.argmax(interest)))
    arrays["show_query"] = np.array(queries)


def _dataset_facts(setup: _Setup, config: Config, metrics: dict[str, Any]) -> None:
    test = setup.pairs["test"]
    metrics.update(
        {
            "dataset": config.dataset,
            "background": config.background,
            "n_images": len(setup.ids),
            "n_train": len(setup.train),
            "n_val": len(setup.val),
            "n_test": len(setup.test),
            "n_test_pairs": len(test),
            "test_positive_fraction": float(test.same.mean()),
            "test_far_positive_pairs": int(
                (test.same & (test.distance >= config.far_distance)).sum()
            ),
            "test_hard_negative_pairs": int((~test.same & test.same_class).sum()),
        }
    )


def _summary(spec: str, config: Config, m: dict[str, Any]) -> str:
    key_text = (
        f"On {spec}, the best IsSameObject probe ({m['best_probe']} at {m['best_layer']}, both "
        f"chosen on validation images) reaches a distance-matched balanced accuracy of "
        f"{m['distance_matched_balanced_accuracy']:.3f} on held-out images (0.5 = chance; plain "
        f"accuracy {m['accuracy']:.1%} against an always-different baseline of "
        f"{m['majority_baseline']:.1%})."
    )
    parts = [key_text]
    comps = m["model_vs_controls"]
    ctrl = ", ".join(f"{c['control']} {c['control_value']:.3f}" for c in comps.values())
    parts.append(f"Controls on the same pairs: {ctrl}.")
    needed = [s for s in ("positions", "pixels") if s in comps]
    if needed:
        if m["beats_position_and_pixel_controls"]:
            parts.append(
                "The model beats both the position and the pixel control (95% bootstrap "
                "intervals over test images exclude zero)."
            )
        else:
            lost = [s for s in needed if not comps[s]["model_beats_control"]]
            parts.append(
                f"The model does NOT beat the {' and the '.join(SOURCE_LABELS[s] for s in lost)} "
                "control here: its margin's 95% bootstrap interval includes zero or is negative, "
                "so this result is no evidence of object binding beyond what those explain."
            )
    return " ".join(parts)

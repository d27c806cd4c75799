"""The analyses of the fitted probes: each returns its metrics and arrays (``Measured``).

The best probe against the controls, the binding subspace (spectrum and accuracy vs rank), the
other background convention, the next layer's attention, the ablation of the subspace, the
example images, and the dataset facts.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.binding import compute
from probes.binding.config import Config
from probes.binding.fit import (
    HEADLINE,
    Fitted,
    Layer,
    ProbeFit,
    Setup,
    attention_patterns,
    distance_edges,
    fit_one,
)
from workbench.capture import encode_inputs, hooks
from workbench.data.scenes import Scenes
from workbench.models import LoadedModel

SOURCE_LABELS = {
    "model": "model",
    "random_init": "random-init model",
    "pixels": "pixel patches",
    "positions": "positions only",
}
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


class Measured(NamedTuple):
    """What one analysis adds to the result."""

    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray]


# -- tables and comparisons --------------------------------------------------------------------
def table(fitted: Fitted, config: Config) -> Measured:
    """Every (source, layer, probe) result as arrays, the headline probe's curve over layers,
    and the best-layer table as metrics."""
    fits, best, setup = fitted.fits, fitted.best, fitted.setup
    arrays: dict[str, np.ndarray] = {
        "job_source": np.array([f.source for f in fits]),
        "job_layer": np.array([f.layer for f in fits]),
        "job_probe": np.array([f.kind for f in fits]),
        "job_is_best": np.array([best[(f.source, f.kind)] is f for f in fits]),
    }
    for m in METRIC_KEYS:
        arrays[f"test_{m}"] = np.array([f.test[m] for f in fits])
        arrays[f"val_{m}"] = np.array([f.val[m] for f in fits])
    arrays["test_n_pairs"] = np.array([int(f.test["n_pairs"]) for f in fits])
    arrays["bin_balanced_accuracy"] = np.stack([f.bins[0] for f in fits])
    arrays["bin_positive_accuracy"] = np.stack([f.bins[1] for f in fits])
    arrays["bin_negative_accuracy"] = np.stack([f.bins[2] for f in fits])
    edges = distance_edges(setup.grid)
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
    arrays["headline_probe_by_layer"] = np.array(
        [f.test[HEADLINE] for f in fitted.model_fits(config.headline_probe)]
    )
    rows = [
        {
            "source": source,
            "probe": kind,
            "best_layer": setup.layer_names[fit.layer]
            if source in ("model", "random_init")
            else "input",
            **{m: round(fit.test[m], 4) for m in METRIC_KEYS},
        }
        for (source, kind), fit in best.items()
    ]
    return Measured({"table": rows}, arrays)


def compare_controls(fitted: Fitted, config: Config) -> Measured:
    """The model's best probe and layer against each control's best (all chosen on validation
    images), with bootstrap intervals of model minus control on the test images."""
    best = fitted.best
    head = max((f for (s, _), f in best.items() if s == "model"), key=_val_score)
    quad = best[("model", config.headline_probe)]
    embed = max((f for f in fitted.fits if f.source == "model" and f.layer == 0), key=_val_score)
    controls: dict[str, ProbeFit] = {"patch_embedding": embed}
    for source in ("pixels", "positions", "random_init"):
        candidates = [fit for (s, _), fit in best.items() if s == source]
        if candidates:
            controls[source] = max(candidates, key=_val_score)
    metrics: dict[str, Any] = {
        "distance_matched_balanced_accuracy": head.test[HEADLINE],
        "best_layer": head.layer_label,
        "best_probe": head.kind,
        "accuracy": head.test["accuracy"],
        "majority_baseline": head.test["majority_baseline"],
        "balanced_accuracy": head.test["balanced_accuracy"],
        "roc_auc": head.test["roc_auc"],
        "hard_negative_accuracy": head.test["hard_negative_accuracy"],
        "far_positive_accuracy": head.test["far_positive_accuracy"],
        "headline_probe": config.headline_probe,
        "headline_probe_accuracy": quad.test[HEADLINE],
        "headline_probe_result": {
            "layer": quad.layer_label,
            **{m: round(quad.test[m], 4) for m in METRIC_KEYS},
        },
    }
    names = {
        "pixels": "pixel_control",
        "positions": "position_control",
        "random_init": "random_init_control",
        "patch_embedding": "patch_embedding_control",
    }
    comparisons: dict[str, dict[str, Any]] = {}
    for source, fit in controls.items():
        metrics[names[source]] = fit.test[HEADLINE]
        diff, low, high = compute.bootstrap_difference(
            head.counts, fit.counts, config.bootstrap, config.seed
        )
        comparisons[source] = {
            "control": f"{SOURCE_LABELS.get(source, 'patch embedding')} "
            f"({fit.kind}, {fit.layer_label})",
            "control_value": fit.test[HEADLINE],
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
    return Measured(metrics, {})


def _val_score(fit: ProbeFit) -> float:
    return fit.val_score


# -- subspace, other convention ---------------------------------------------------------------
def subspace(fitted: Fitted, config: Config) -> Measured:
    """W_s spectrum of the headline probe at its best layer, and accuracy vs rank there."""
    head = fitted.best[("model", config.headline_probe)]
    matrix = head.probe.symmetric_matrix()
    assert matrix is not None  # the headline probe types all have a W_s
    values, _ = compute.subspace_spectrum(matrix)
    x = fitted.features[("model", head.layer)]
    ranks = [r for r in config.ranks if r <= x.dim]
    scores = []
    for r in tqdm(ranks, desc="accuracy vs rank", leave=False):
        fit = fit_one(
            fitted.setup, config, "model", head.layer, "lowrank", x, rank=r, device=fitted.device
        )
        scores.append(fit.test[HEADLINE])
    energy = np.cumsum(values**2) / max(float((values**2).sum()), 1e-12)
    metrics = {
        "subspace": {
            "layer": head.layer_label,
            "rank_curve": dict(
                zip([str(r) for r in ranks], [round(s, 4) for s in scores], strict=True)
            ),
            "full_rank": head.test[HEADLINE],
            "dims_for_90pct_of_W_energy": int(np.searchsorted(energy, 0.9) + 1),
        }
    }
    arrays = {
        "spectrum": values,
        "rank_values": np.array(ranks),
        "rank_headline": np.array(scores),
    }
    return Measured(metrics, arrays)


def other_convention(fitted: Fitted, config: Config) -> Measured:
    """The headline probe at its best layer, refitted under the other background convention."""
    head = fitted.best[("model", config.headline_probe)]
    other = "as_object" if config.background == "exclude" else "exclude"
    x = fitted.features[("model", head.layer)]
    fit = fit_one(
        fitted.setup,
        config,
        "model",
        head.layer,
        head.kind,
        x,
        background=other,
        device=fitted.device,
    )
    result = {
        "background": other,
        "layer": head.layer_label,
        **{m: round(fit.test[m], 4) for m in METRIC_KEYS},
    }
    return Measured({"other_background_convention": result}, {})


# -- attention ---------------------------------------------------------------------------------
def attention_correlation(model: LoadedModel, fitted: Fitted, config: Config) -> Measured:
    """Pearson r between the next block's attention weights (mean over heads, symmetrised) and
    the headline probe's IsSameObject probability, per layer; and the same with distance
    partialled out (both residualised on the exact patch distance)."""
    setup = fitted.setup
    by_layer = {f.layer: f for f in fitted.model_fits(config.headline_probe)}
    test = setup.pairs["test"]
    r, partial = [], []
    for k in setup.layers:
        fit = by_layer.get(k)
        if k >= model.n_layers or fit is None or fit.test_scores is None:
            r.append(np.nan)
            partial.append(np.nan)
            continue
        att = test.take(attention_patterns(model, fitted, k, setup.test))
        prob = 1.0 / (1.0 + np.exp(-fit.test_scores.astype(np.float64)))
        r.append(compute.pearson(att, prob))
        partial.append(
            compute.pearson(
                compute.partial_out_groups(att, test.key),
                compute.partial_out_groups(prob, test.key),
            )
        )
    arrays = {"attention_r": np.array(r), "attention_partial_r": np.array(partial)}
    metrics = {}
    if np.isfinite(arrays["attention_r"]).any():
        k = int(np.nanargmax(np.abs(arrays["attention_r"])))
        metrics["attention"] = {
            "strongest_layer": setup.layer_names[setup.layers[k]],
            "pearson_r": float(arrays["attention_r"][k]),
            "partial_r_given_distance": float(arrays["attention_partial_r"][k]),
        }
    return Measured(metrics, arrays)


# -- ablation ----------------------------------------------------------------------------------
def ablation(model: LoadedModel, fitted: Fitted, config: Config) -> Measured:
    """Remove or shuffle the binding subspace at one layer; measure the model downstream against
    removing a random subspace of equal dimension."""
    setup, features = fitted.setup, fitted.features
    top = model.n_layers
    candidates = [f for f in fitted.model_fits(config.headline_probe) if f.layer < top]
    if config.ablation_layer >= 0:  # the run's check made sure it is a probed layer
        fit = next(f for f in candidates if f.layer == config.ablation_layer)
    else:
        fit = max(candidates, key=_val_score)
    final = next(f for f in fitted.model_fits(config.headline_probe) if f.layer == top)
    assert fit.scaler is not None and final.scaler is not None  # trained probes
    final_scaler = final.scaler
    rank = min(config.ablation_rank, features[("model", fit.layer)].dim)
    binding = compute.binding_directions(fit.probe, fit.scaler, rank)
    centre = features[("model", fit.layer)].mean(setup.train)
    site, final_site = setup.sites[fit.layer], setup.sites[top]
    decoder = _class_decoder(features[("model", top)], setup, config.seed)
    test_pairs = setup.pairs["test"]
    images = setup.data.images[setup.test]
    own_truth = _own_head_truth(model, setup)

    def measure(context: AbstractContextManager[Any] | None) -> dict[str, float]:
        if context is None:  # clean, and no head to score: the extraction pass has it all
            feats, logits = features[("model", top)].read(setup.test), None
        else:
            with context:
                feats, logits = _forward_final(model, images, final_site, config.batch_size)
        scores = compute.score_pairs(final.probe, final_scaler(feats)).numpy()
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

    clean = measure(nullcontext() if own_truth is not None else None)
    conditions: dict[str, list[dict[str, float]]] = {"clean": [clean]}
    runs = [("binding_remove", binding, "remove"), ("binding_shuffle", binding, "shuffle")]
    for s in range(config.ablation_random):
        d = compute.random_directions(binding.shape[0], rank, config.seed + 1000 + s)
        runs += [("random_remove", d, "remove"), ("random_shuffle", d, "shuffle")]
    for name, directions, mode in tqdm(runs, desc="ablation", leave=False):
        edit = compute.ablate_subspace(
            model, site, directions, mode=mode, centre=centre, seed=config.seed
        )
        conditions.setdefault(name, []).append(measure(edit))
    names = list(conditions)
    keys = list(conditions["clean"][0])
    summary = {
        name: {
            k: {
                "mean": float(np.mean([c[k] for c in conditions[name]])),
                "std": float(np.std([c[k] for c in conditions[name]])),
            }
            for k in keys
        }
        for name in names
    }
    arrays = {
        "ablation_conditions": np.array(names),
        "ablation_measures": np.array(keys),
        "ablation_mean": np.array([[summary[n][k]["mean"] for k in keys] for n in names]),
        "ablation_std": np.array([[summary[n][k]["std"] for k in keys] for n in names]),
    }
    test_classes = setup.classes[setup.test]
    counts = np.bincount(test_classes[test_classes > 0])
    metrics = {
        "ablation": {
            "class_chance": float(counts.max() / counts.sum()) if counts.sum() else float("nan"),
            "layer": fit.layer_label,
            "rank": rank,
            "random_subspaces": config.ablation_random,
            "measured_at": setup.layer_names[top],
            "results": {n: {k: round(v["mean"], 4) for k, v in summary[n].items()} for n in names},
        }
    }
    return Measured(metrics, arrays)


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


def _own_head_truth(model: LoadedModel, setup: Setup) -> np.ndarray | None:
    """Which classes are present per test image, when the model's own head predicts exactly
    those (a multi-label classifier over the scene classes); else None."""
    data = setup.data
    if not isinstance(data, Scenes) or model.head_labels is None:
        return None
    if len(model.head_labels) != data.n_classes:
        return None
    return data.present()[setup.test]


DECODER_PATCHES = 20_000
"""Training patches the segmentation read-out is fitted on at most (a seeded subset)."""


def _class_decoder(final: Layer, setup: Setup, seed: int) -> Callable[[torch.Tensor], float]:
    """A per-patch linear class probe on clean final-layer features (a segmentation read-out),
    returning a function that scores test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr_ids = setup.classes[setup.train]
    image, patch = np.nonzero(tr_ids > 0)
    if len(image) > DECODER_PATCHES:
        keep = np.sort(np.random.default_rng(seed).choice(len(image), DECODER_PATCHES, False))
        image, patch = image[keep], patch[keep]
    te_ids = setup.classes[setup.test]
    te_mask = te_ids > 0
    y = tr_ids[image, patch]
    if len(np.unique(y)) < 2 or not te_mask.any():
        return lambda feats: float("nan")
    rows = []
    for chunk in final.chunks(np.unique(image)):
        feats = final.read(setup.train[chunk])
        picked = np.isin(image, chunk)
        local = np.searchsorted(chunk, image[picked])
        rows.append((np.nonzero(picked)[0], feats[torch.from_numpy(local), patch[picked]].numpy()))
    train_x = np.empty((len(image), final.dim), np.float32)
    for where, values in rows:
        train_x[where] = values
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=300, C=1.0).fit(scaler.transform(train_x), y)

    def score(feats: torch.Tensor) -> float:
        xs = scaler.transform(feats[torch.from_numpy(te_mask)].numpy())
        return float((clf.predict(xs) == te_ids[te_mask]).mean())

    return score


# -- examples and facts ------------------------------------------------------------------------
def showcase(fitted: Fitted, config: Config) -> Measured:
    """Pair logits of the first test images for every fit, and an informative query patch each."""
    setup = fitted.setup
    idx = setup.test[: config.n_show]
    distance, _ = compute.grid_distances(*setup.grid)
    queries = []
    for ids, classes in zip(setup.ids[idx], setup.classes[idx], strict=True):
        far = ((ids[:, None] == ids[None]) & (distance >= config.far_distance)).sum(1)
        twins = (
            (classes[:, None] == classes[None]) & (ids[:, None] != ids[None]) & (ids[None] > 0)
        ).sum(1)
        interest = np.where(ids > 0, far + twins + 1e-3 * (ids > 0), -1)
        queries.append(int(np.argmax(interest)))
    arrays = {
        "show_logits": np.stack([f.show for f in fitted.fits], axis=0),
        "show_images": setup.data.images[idx],
        "show_patch_ids": setup.ids[idx],
        "show_query": np.array(queries),
    }
    return Measured({}, arrays)


def dataset_facts(fitted: Fitted, config: Config) -> Measured:
    setup = fitted.setup
    test = setup.pairs["test"]
    metrics = {
        "dataset": config.dataset,
        "background": config.background,
        "n_images": len(setup.ids),
        "n_train": len(setup.train),
        "n_val": len(setup.val),
        "n_test": len(setup.test),
        "n_test_pairs": len(test),
        "test_positive_fraction": float(test.same.mean()),
        "test_far_positive_pairs": int((test.same & (test.distance >= config.far_distance)).sum()),
        "test_hard_negative_pairs": int((~test.same & test.same_class).sum()),
    }
    return Measured(metrics, {})


def summary(spec: str, m: dict[str, Any]) -> str:
    """The result in a few sentences, saying plainly when a control explains it away."""
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

"""``run``: per-layer maps and linear decodability of a label, for any loaded model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from probes.atlas import compute
from probes.atlas.config import Config
from probes.atlas.data import LabelledPositions, default_dataset, user_images
from probes.atlas.plots import figures
from workbench.capture import capture
from workbench.maps import pca_2d, project_2d
from workbench.models import LoadedModel
from workbench.probe import Findings, run_frame
from workbench.store import build_store, check_model

NAME = "atlas"
FAMILIES = ("vit", "encoder", "causal-lm")
DEFAULT_MODELS = ("zoo:vit-scenes", "zoo:minilm")
USER_IMAGES = ("imagefolder", "ade20k", "coco")


def check(model: LoadedModel, config: Config) -> None:
    """A store of another model is refused before any data is read."""
    if config.store:
        check_model(config.store, model)


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: LabelledPositions | None) -> Findings:
    """Where does the label become linearly decodable, and what do the layers look like?"""
    loader: dict = {"rendered_at": model.image_size} if model.is_vision else {}
    if data is None and config.dataset in USER_IMAGES:
        data, loader = user_images(
            model,
            config.dataset,
            config.data_path,
            config.annotations,
            config.split,
            config.n_inputs,
        )
    elif data is None:
        data = default_dataset(
            model, config.dataset, config.n_inputs, config.seed, config.data_path
        )
    provenance: dict = {}

    keep = compute.subsample(data.labels, config.max_points, config.seed)
    positions, labels, groups = data.positions[keep], data.labels[keep], data.groups[keep]
    splits = compute.folds_for(groups, config.folds, config.seed)
    chance = compute.chance_accuracy(labels, splits)
    sites = ["blocks.0.resid_pre", *model.layer_sites(config.site_kind)]
    layer_names = ["embed", *(f"block {i}" for i in range(model.n_layers))]

    features, provenance["features"] = _features(
        model, data, positions, sites, config, "model", loader
    )
    accuracy = _accuracies(features, labels, splits, config, "probe layers")
    metrics: dict = {}
    arrays: dict[str, np.ndarray] = {}
    if config.random_control:
        control = model.random_init_copy(config.seed)
        control_features, provenance["random_init_features"] = _features(
            control, data, positions, sites, config, f"random-init-seed-{config.seed}", loader
        )
        control_acc = _accuracies(control_features, labels, splits, config, "probe control")
        arrays["control_accuracy"] = np.array([d.mean for d in control_acc])
        metrics["control_peak_accuracy"] = float(arrays["control_accuracy"].max())
        del control, control_features

    acc = np.array([d.mean for d in accuracy])
    peak = int(acc.argmax())
    onset = compute.onset_layer(acc, chance)
    metrics = {
        "peak_accuracy": float(acc[peak]),
        "peak_layer": layer_names[peak],
        "chance_accuracy": chance,
        "onset_layer": layer_names[onset],
        **metrics,
        "accuracy_by_layer": dict(zip(layer_names, acc.round(4).tolist(), strict=True)),
        "label": data.label_title,
        "n_classes": len(data.label_names),
        "n_points": len(keep),
        "n_groups": len(np.unique(groups)),
        "headline": ["peak_accuracy", "peak_layer", "chance_accuracy", *metrics],
    }
    arrays |= {
        "accuracy": acc,
        "accuracy_std": np.array([d.std for d in accuracy]),
        "labels": labels,
        "label_names": np.array(data.label_names),
        "layer_names": np.array(layer_names),
        "hover": data.hover[keep],
        **{f"colour_{k}": v[keep] for k, v in data.colourings.items()},
    }
    for method in config.methods:
        if method == "pca":  # with the variance each axis explains, for the maps' axes
            maps = [
                pca_2d(x, seed=config.seed) for x in tqdm(features, desc="pca maps", leave=False)
            ]
            arrays["pca"] = np.stack([xy for xy, _ in maps])
            arrays["pca_explained"] = np.stack([share for _, share in maps])
            continue
        arrays[method] = np.stack(
            [
                project_2d(x, method, seed=config.seed, n_neighbors=config.umap_neighbors)
                for x in tqdm(features, desc=f"{method} maps", leave=False)
            ]
        )
    summary = _summary(model.spec, data.label_title, layer_names, acc, chance, onset, metrics)
    return Findings(metrics, arrays, summary, provenance=provenance)


def _features(
    model: LoadedModel,
    data: LabelledPositions,
    positions: np.ndarray,
    sites: list[str],
    config: Config,
    name: str,
    loader: dict,
) -> tuple[list[np.ndarray], dict]:
    """The labelled positions' activations at every site, from one pass over the inputs: in
    memory, or through the store ``config.store`` (its sub-folder ``name`` for a control)."""
    if not config.store:
        cache = capture(model, data.inputs, sites, batch_size=config.batch_size)
        try:
            return [compute.gather(cache[s], positions, s) for s in sites], {
                "where": "memory",
                "model": model.spec,
            }
        finally:
            cache.close()
    folder = Path(config.store).expanduser()
    folder = folder if name == "model" else folder / name
    store = build_store(
        model,
        data.inputs,
        sites,
        folder,
        dataset=f"atlas {config.dataset}",
        preprocessing=loader,
        batch_size=config.batch_size,
    )
    try:
        rows, local = np.unique(positions[:, 0], return_inverse=True)
        features = []
        for site in sites:
            values = store.read(site, rows)
            at = np.stack([local, positions[:, 1]], axis=1)
            features.append(compute.gather(values, at, site))
    finally:
        store.close()
    return features, {
        "where": "store",
        "store": str(folder),
        "model": model.spec,
        "reused": store.reused,
        "rows_computed": store.computed_rows,
    }


def _accuracies(
    features: list[np.ndarray],
    labels: np.ndarray,
    splits: list,
    config: Config,
    desc: str,
) -> list[compute.Decodability]:
    return [
        compute.probe_accuracy(x, labels, splits, c=config.probe_c)
        for x in tqdm(features, desc=desc, leave=False)
    ]


def _summary(
    spec: str,
    label: str,
    layer_names: list[str],
    acc: np.ndarray,
    chance: float,
    onset: int,
    metrics: dict,
) -> str:
    peak = f"{acc.max():.1%} at {layer_names[int(acc.argmax())]}"
    if acc.max() > chance:
        text = (
            f"On {spec}, the {label} is linearly decodable with held-out accuracy up to {peak} "
            f"(chance {chance:.1%}); half of that gain over chance is reached by "
            f"{layer_names[onset]}."
        )
    else:
        text = (
            f"On {spec}, a linear probe does not beat chance at decoding the {label}: its "
            f"held-out accuracy peaks at {peak}, at or below the majority-class chance of "
            f"{chance:.1%}, so no layer makes the {label} linearly decodable here."
        )
    if "control_peak_accuracy" in metrics:
        text += (
            f" A randomly initialised copy of the same architecture peaks at "
            f"{metrics['control_peak_accuracy']:.1%}, the floor that learning must beat."
        )
    return text

"""``run``: IsSameObject probes on every layer of a ViT, beside the controls that explain them away.

Which patches belong to one object is decoded from pairs of patch embeddings. Two patches of
one object are usually close together and alike, so every number is measured beside controls
on the very same pairs: raw pixel patches, patch positions alone, the model's own
patch-embedding layer (layer 0) and the same architecture with random weights. The headline is
the distance-matched balanced accuracy: positives and negatives reweighted to one distance
distribution, so distance alone scores 0.5.

``fit.py`` fits and evaluates the probes per layer; ``analyses.py`` reads the fits.
"""

from __future__ import annotations

import os

import numpy as np

from probes.binding import analyses
from probes.binding.config import Config
from probes.binding.fit import (
    Data,
    check_data,
    fit_all,
    image_geometry,
    load_data,
    probed_layers,
)
from probes.binding.plots import figures
from workbench.errors import DataError
from workbench.models import LoadedModel
from workbench.probe import Findings, run_frame
from workbench.store import check_model
from workbench.threads import torch_threads

NAME = "binding"
FAMILIES = ("vit",)
DEFAULT_MODELS = ("zoo:vit-binding-contrast", "zoo:vit-binding-mae", "zoo:vit-binding-sup")


def check(model: LoadedModel, config: Config) -> None:
    """The model has patches, the layers asked for exist, and so do the heads the attention
    probe reads."""
    image_geometry(model)
    top = model.n_layers
    bad = [k for k in config.layers if not 0 <= k <= top]
    if bad:
        raise DataError(
            f"layers {bad} are out of range for {model.spec}: 0 is the patch embedding, "
            f"1..{top} are the blocks' outputs"
        )
    if config.ablation_layer >= top:
        raise DataError(f"ablation_layer must be below {top} (the last layer) or -1 for auto")
    if config.ablation and config.ablation_layer >= 0:
        probed = probed_layers(config, top)
        if config.ablation_layer not in probed:
            raise DataError(
                f"ablation_layer {config.ablation_layer} is not among the probed layers "
                f"{probed}; add it to layers"
            )
    if "attention" in config.probes and not model.n_heads:
        raise DataError(f"{model.spec} has no attention heads; drop attention from probes")
    if config.store:
        check_model(config.store, model)


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: Data | None) -> Findings:
    """IsSameObject probes per layer and probe type, beside pixel, position, embedding and
    random-init controls; subspace, attention and ablation analyses of the headline probe."""
    data = data if data is not None else load_data(model, config)
    check_data(data, model)
    with torch_threads(config.threads or os.cpu_count() or 1):
        fitted = fit_all(model, config, data)
        try:
            parts = [
                analyses.table(fitted, config),
                analyses.compare_controls(fitted, config),
                analyses.subspace(fitted, config),
                analyses.other_convention(fitted, config),
            ]
            if config.attention:
                parts.append(analyses.attention_correlation(model, fitted, config))
            if config.ablation:
                parts.append(analyses.ablation(model, fitted, config))
            parts += [analyses.showcase(fitted, config), analyses.dataset_facts(fitted, config)]
        finally:
            fitted.close()

    metrics = {k: v for part in parts for k, v in part.metrics.items()}
    arrays: dict[str, np.ndarray] = {k: v for part in parts for k, v in part.arrays.items()}
    metrics["patch_size"] = image_geometry(model)[1]
    metrics["headline"] = [
        key
        for key in (
            "distance_matched_balanced_accuracy",
            "best_probe",
            "best_layer",
            "position_control",
            "pixel_control",
            "beats_position_and_pixel_controls",
        )
        if key in metrics  # a control left out of ``controls`` has no number
    ]
    return Findings(
        metrics, arrays, analyses.summary(model.spec, metrics), provenance=fitted.provenance
    )

"""``run``: K-FAC factors, the curvature edit across ρ, its SVD baseline, and what each removes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.curvature import compute
from probes.curvature.config import Config
from probes.curvature.data import CanarySet, CurvatureData, default_canary_set
from probes.curvature.edit import kfac_weights, svd_weights
from probes.curvature.factors import KFACFactors, collect_factors, resolve_weights
from probes.curvature.memorization import Evaluation, evaluate, score_text
from probes.curvature.plots import figures
from workbench.capture import capture
from workbench.edit import edited
from workbench.errors import DataError, FamilyError
from workbench.models import LoadedModel
from workbench.probe import Findings, run_frame
from workbench.threads import torch_threads

NAME = "curvature"
FAMILIES = ("causal-lm",)
DEFAULT_MODELS = ("zoo:gpt2-canaries",)
MATCH_STEPS = 14
MATCH_TOLERANCE = 5e-4
"""The SVD search stops once its perplexity is within this relative distance of the target."""


def check(model: LoadedModel, config: Config) -> None:
    """The edit needs the Hugging Face backend and weights that match ``config.weights``."""
    if model.backend != "hf":
        raise FamilyError("the curvature probe edits weights; load the model with backend='hf'")
    resolve_weights(model, config.weights)


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: CurvatureData | None) -> Findings:
    """Does removing low-curvature weight components remove memorized recitation, and at what
    cost in perplexity, compared with removing small singular components?

    ``data`` (a ``CurvatureData``) gives canaries of your own and, optionally, factors collected
    before; without it, the canary corpus the zoo model was trained on is rebuilt.
    """
    with torch_threads(config.threads):
        return _run(model, config, data)


def _run(model: LoadedModel, config: Config, data: CurvatureData | None) -> Findings:
    names = resolve_weights(model, config.weights)
    if data is not None and not isinstance(data, CurvatureData):
        raise DataError(
            f"data must be a CurvatureData(canaries=..., factors=...); got {type(data).__name__}"
        )
    factors = None if data is None else data.factors
    if factors is not None:
        missing = [n for n in names if n not in factors.a]
        if missing:
            raise DataError(f"the given factors lack {missing}; collect them for these weights")
        factors.check_model(model)
    canaries = default_canary_set(model, config) if data is None else data.canaries
    groups = sorted(set(canaries.repetitions.tolist()))

    if factors is None:
        factors = factors_for(model, config, canaries)
    bases = factors.eigenbases(names)
    base_text = score_text(model, canaries.held_out_ids, canaries.held_out_mask, k=config.ndcg_k)

    def measure(new_weights: dict | None) -> Evaluation:
        def go() -> Evaluation:
            return evaluate(
                model,
                canaries.prompts,
                canaries.targets,
                canaries.held_out_ids,
                canaries.held_out_mask,
                base_topk=base_text.topk,
                loose_threshold=config.loose_threshold,
            )

        if not new_weights:
            return go()
        with edited(model, new_weights):
            return go()

    base = measure(None)
    memorized = _memorized_set(base, canaries.repetitions, config.memorized_min_repetitions)

    rhos = sorted({*config.sweep, config.rho})
    kfac_points, kept = [], []
    for rho in tqdm(rhos, desc="K-FAC edit sweep", unit="rho"):
        kfac_points.append(measure(kfac_weights(model, bases, rho)))
        kept.append(_kept_share(bases, rho))
    energies = sorted(set(config.svd_sweep))
    svd_points, svd_ranks = [], []
    for energy in tqdm(energies, desc="SVD baseline sweep", unit="energy"):
        new, ranks = svd_weights(model, names, energy)
        svd_points.append(measure(new))
        svd_ranks.append(_rank_share(model, ranks))
    kfac = kfac_points[rhos.index(config.rho)]
    matched = None
    if config.match_svd:
        matched = _match_svd(model, names, kfac.perplexity, measure, (energies, svd_points))

    spectrum = _spectrum(model, canaries, bases, names, memorized, config.rho)
    metrics = _metrics(
        config, canaries, groups, memorized, base, kfac, matched, factors, bases, rhos, kept
    )
    for group in ("memorized", "unseen"):
        metrics[f"low_curvature_use_{group}"] = float(spectrum[f"ratio_kfac_{group}"][:, -1].mean())
    arrays = _arrays(
        model,
        canaries,
        groups,
        memorized,
        base,
        kfac,
        matched,
        bases,
        names,
        (rhos, kfac_points, kept),
        (energies, svd_points, svd_ranks),
        spectrum,
    )
    return Findings(metrics, arrays, _summary(model.spec, metrics))


def factors_for(model: LoadedModel, config: Config, data: CanarySet) -> KFACFactors:
    """K-FAC factors of the configured weights over the canaries' factor text, as ``run``
    collects them: pass them back in ``CurvatureData(canaries, factors)`` to reuse them."""
    with torch_threads(config.threads):
        return collect_factors(
            model,
            {"input_ids": data.factor_ids, "attention_mask": data.factor_mask},
            resolve_weights(model, config.weights),
            labels=config.labels,
            batch_size=config.batch_size,
            seed=config.seed,
        )


# -- pieces ------------------------------------------------------------------------------------
def _memorized_set(base: Evaluation, repetitions: np.ndarray, min_reps: int) -> np.ndarray:
    """Canaries planted at least ``min_reps`` times: the set the edit should make unreciteable."""
    chosen = repetitions >= min_reps
    if not chosen.any():
        chosen = repetitions == repetitions.max()
    return chosen


def _kept_share(bases: dict[str, compute.Eigenbasis], rho: float) -> float:
    """Share of all edited components the K-FAC edit keeps at ``rho``."""
    kept = total = 0
    for basis in bases.values():
        counts = compute.select_by_mass(basis.lam, basis.mu, rho)
        kept += int(counts.sum())
        total += basis.shape[0] * basis.shape[1]
    return kept / total


def _rank_share(model: LoadedModel, ranks: dict[str, int]) -> float:
    """Share of the singular components the SVD truncation keeps (over all edited matrices)."""
    full = sum(min(model.weight(n).shape) for n in ranks)
    return sum(ranks.values()) / full


def _match_svd(
    model: LoadedModel,
    names: list[str],
    target: float,
    measure: Callable[[dict | None], Evaluation],
    sweep: tuple[list[float], list[Evaluation]],
) -> dict:
    """Bisect the SVD energy until its perplexity matches ``target``.

    The search runs on x = log10(1 - energy), where perplexity rises with x, starting from the
    two sweep points that bracket the target.
    """
    energies, points = sweep
    xs = [np.log10(max(1.0 - e, 1e-12)) for e in energies]
    below = [x for x, p in zip(xs, points, strict=True) if p.perplexity <= target]
    above = [x for x, p in zip(xs, points, strict=True) if p.perplexity > target]
    lo = max(below, default=-7.0)
    hi = min(above, default=-0.05)
    best: dict[str, Any] | None = None
    bar = tqdm(range(MATCH_STEPS), desc="SVD at matched perplexity", unit="step")
    for _ in bar:
        x = 0.5 * (lo + hi)
        energy = 1.0 - 10.0**x
        new, ranks = svd_weights(model, names, energy)
        point = measure(new)
        gap = point.perplexity - target
        if best is None or abs(gap) < abs(best["evaluation"].perplexity - target):
            best = {"energy": energy, "evaluation": point, "ranks": ranks}
        if gap > 0:
            hi = x
        else:
            lo = x
        bar.set_postfix(energy=f"{energy:.6f}", ppl=f"{point.perplexity:.3f}", refresh=False)
        if abs(gap) <= MATCH_TOLERANCE * target:
            break
    bar.close()
    assert best is not None  # MATCH_STEPS >= 1
    best["rank_share"] = _rank_share(model, best["ranks"])
    return best


def _canary_inputs(data: CanarySet) -> tuple[torch.Tensor, torch.Tensor, list[range]]:
    """Whole canaries (prompt + target), right-padded, and the positions predicting targets."""
    seqs = [torch.cat([p, t]) for p, t in zip(data.prompts, data.targets, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    spans = []
    for i, (s, p) in enumerate(zip(seqs, data.prompts, strict=True)):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
        spans.append(range(len(p) - 1, len(s) - 1))
    return ids, mask, spans


SPECTRUM_TEXT_SEQUENCES = 64
"""Held-out sequences whose positions form the typical-text reference of the spectrum view."""


def _spectrum(
    model: LoadedModel,
    data: CanarySet,
    bases: dict[str, compute.Eigenbasis],
    names: list[str],
    memorized: np.ndarray,
    rho: float,
) -> dict[str, np.ndarray]:
    """How strongly memorized and unseen canaries drive each band of components, per matrix.

    A band's activation on an input x is ||(C ⊙ M_band) U_inᵀ x||, the norm of what that band of
    weight components adds to the layer's output. Each group's mean is divided by that of
    held-out text (the typical input), in the curvature basis and in the SVD basis: the paper's
    activation-ratio view. Unseen canaries separate "memorized" from merely "unusual".
    """
    sites = [f"{n}.input" for n in names]
    ids, mask, spans = _canary_inputs(data)
    canaries = capture(model, {"input_ids": ids, "attention_mask": mask}, sites, progress=False)
    k = min(SPECTRUM_TEXT_SEQUENCES, len(data.held_out_ids))
    text_batch = {"input_ids": data.held_out_ids[:k], "attention_mask": data.held_out_mask[:k]}
    text = capture(model, text_batch, sites, progress=False)
    text_valid = (data.held_out_mask[:k, :-1] & data.held_out_mask[:k, 1:]).bool()
    edges = compute.band_edges(rho)
    groups = {"memorized": memorized, "unseen": data.repetitions == 0}
    out: dict[str, list] = {f"{b}_{g}": [] for b in ("kfac", "svd") for g in groups}
    try:
        for name in names:
            x = canaries[f"{name}.input"]
            rows = {
                g: torch.cat([x[i, list(spans[i])] for i in np.nonzero(pick)[0]])
                for g, pick in groups.items()
            }
            reference = text[f"{name}.input"][:, :-1][text_valid]
            basis = bases[name]
            weight = model.weight(name).detach()
            counts = [compute.select_by_mass(basis.lam, basis.mu, e) for e in edges]
            views: dict[str, tuple[torch.Tensor, torch.Tensor, Sequence[torch.Tensor]]] = {
                "kfac": (
                    compute.coordinates(weight, basis),
                    basis.u_a,
                    compute.band_masks(counts, basis.shape[1]),
                ),
                "svd": compute.svd_band_masks(weight, edges),
            }
            for view, (coords, u_in, masks) in views.items():
                typical = compute.band_activation(reference, coords, u_in, masks)
                for g, r in rows.items():
                    used = compute.band_activation(r, coords, u_in, masks)
                    out[f"{view}_{g}"].append(used / np.maximum(typical, 1e-30))
    finally:
        canaries.close()
        text.close()
    bounds = [0.0, *edges, 1.0]
    labels = [f"{lo:g}–{hi:g}" for lo, hi in itertools.pairwise(bounds)]
    return {
        "band_labels": np.array(labels),
        "band_kept": np.array([hi <= rho + 1e-12 for hi in bounds[1:]]),
        **{f"ratio_{key}": np.array(v) for key, v in out.items()},
    }


def _group_stats(ev: Evaluation, repetitions: np.ndarray, groups: Sequence[int]) -> dict:
    out = {}
    for r in groups:
        pick = repetitions == r
        out[_group_name(r)] = {
            "strict": float(ev.recitation.strict[pick].mean()),
            "loose": float(ev.recitation.loose[pick].mean()),
            "distance": float(ev.recitation.normalised[pick].mean()),
            "nll_per_token": float(ev.suffix_nll[pick].mean()),
            "n": int(pick.sum()),
        }
    return out


def _group_name(r: int) -> str:
    return f"x{r}" if r else "unseen"


def _state(ev: Evaluation, data: CanarySet, groups: Sequence[int], memorized: np.ndarray) -> dict:
    unseen = data.repetitions == 0
    return {
        "perplexity": ev.perplexity,
        "ndcg": ev.ndcg,
        "strict_memorized": float(ev.recitation.strict[memorized].mean()),
        "loose_memorized": float(ev.recitation.loose[memorized].mean()),
        "distance_memorized": float(ev.recitation.normalised[memorized].mean()),
        "nll_memorized": float(ev.suffix_nll[memorized].mean()),
        "nll_unseen": float(ev.suffix_nll[unseen].mean()),
        "membership_auc": compute.auc(-ev.suffix_nll[memorized], -ev.suffix_nll[unseen]),
        "by_repetition": _group_stats(ev, data.repetitions, groups),
    }


def _metrics(
    config: Config,
    data: CanarySet,
    groups: list[int],
    memorized: np.ndarray,
    base: Evaluation,
    kfac: Evaluation,
    matched: dict | None,
    factors: KFACFactors,
    bases: dict[str, compute.Eigenbasis],
    rhos: list[float],
    kept: list[float],
) -> dict:
    b = _state(base, data, groups, memorized)
    k = _state(kfac, data, groups, memorized)
    mass95 = []
    for basis in bases.values():
        components, mass = compute.mass_curve(basis.lam, basis.mu)
        mass95.append(float(np.interp(0.95, mass, components)))
    metrics = {
        "rho": config.rho,
        "strict_before": b["strict_memorized"],
        "strict_after": k["strict_memorized"],
        "loose_before": b["loose_memorized"],
        "loose_after": k["loose_memorized"],
        "perplexity_before": b["perplexity"],
        "perplexity_after": k["perplexity"],
        "perplexity_change_pct": 100.0 * (k["perplexity"] / b["perplexity"] - 1.0),
        "ndcg_after": k["ndcg"],
        "nll_gap_after": k["nll_unseen"] - k["nll_memorized"],
        "memorized_set": f"canaries planted >= {config.memorized_min_repetitions} times "
        f"({int(memorized.sum())} of {len(memorized)})",
        "loose_threshold": config.loose_threshold,
        "kept_components": kept[rhos.index(config.rho)],
        "components_for_95pct_mass": float(np.median(mass95)),
        "factor_positions": factors.n_positions,
        "factor_seconds": factors.extra.get("seconds"),
        "factor_labels": factors.labels,
        "edited_weights": len(bases),
        "base": b,
        "kfac": k,
    }
    headline = [
        "strict_before",
        "strict_after",
        "loose_after",
        "perplexity_before",
        "perplexity_after",
        "perplexity_change_pct",
    ]
    if matched is not None:
        s = _state(matched["evaluation"], data, groups, memorized)
        s["energy"] = matched["energy"]
        s["rank_share"] = matched["rank_share"]
        metrics["svd_matched"] = s
        metrics["svd_strict_at_matched_perplexity"] = s["strict_memorized"]
        metrics["svd_loose_at_matched_perplexity"] = s["loose_memorized"]
        metrics["svd_matched_perplexity"] = s["perplexity"]
        headline += ["svd_strict_at_matched_perplexity", "svd_loose_at_matched_perplexity"]
    headline.append("nll_gap_after")
    metrics["headline"] = headline
    return metrics


def _decode(model: LoadedModel, seqs: Sequence[torch.Tensor]) -> np.ndarray:
    return np.array([model.processor.decode(s.tolist()) for s in seqs])


def _arrays(
    model: LoadedModel,
    data: CanarySet,
    groups: list[int],
    memorized: np.ndarray,
    base: Evaluation,
    kfac: Evaluation,
    matched: dict | None,
    bases: dict[str, compute.Eigenbasis],
    names: list[str],
    kfac_sweep: tuple,
    svd_sweep: tuple,
    spectrum: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    a: dict[str, np.ndarray] = {
        "weight_names": np.array(names),
        "repetitions": data.repetitions,
        "memorized": memorized,
        "groups": np.array(groups),
        "prompt_text": np.array(data.prompt_texts),
        "target_text": np.array(data.target_texts),
        **spectrum,
    }
    for name, basis in bases.items():
        a[f"eig_G.{name}"] = basis.lam.numpy()
        a[f"eig_A.{name}"] = basis.mu.numpy()
        x, y = compute.mass_curve(basis.lam, basis.mu)
        a[f"mass_x.{name}"], a[f"mass_y.{name}"] = x, y
    states = {"base": base, "kfac": kfac}
    if matched is not None:
        states["svd"] = matched["evaluation"]
    for key, ev in states.items():
        a[f"{key}_continuation"] = _decode(model, ev.continuations)
        a[f"{key}_distance"] = ev.recitation.normalised
        a[f"{key}_nll"] = ev.suffix_nll
    for prefix, (values, points, kept) in (("kfac", kfac_sweep), ("svd", svd_sweep)):
        a[f"{prefix}_sweep_value"] = np.array(values)
        a[f"{prefix}_sweep_kept"] = np.array(kept)
        a[f"{prefix}_sweep_perplexity"] = np.array([p.perplexity for p in points])
        a[f"{prefix}_sweep_ndcg"] = np.array([p.ndcg for p in points])
        for metric in ("strict", "loose"):
            a[f"{prefix}_sweep_{metric}"] = np.array(
                [getattr(p.recitation, metric)[memorized].mean() for p in points]
            )
        a[f"{prefix}_sweep_continuation"] = np.stack(
            [_decode(model, p.continuations) for p in points]
        )
        a[f"{prefix}_sweep_distance"] = np.stack([p.recitation.normalised for p in points])
    return a


def _summary(spec: str, m: dict) -> str:
    text = (
        f"On {spec}, keeping {m['rho']:g} of the K-FAC curvature mass in {m['edited_weights']} "
        f"MLP matrices ({m['kept_components']:.1%} of their components) changes verbatim "
        f"recitation of the memorized set ({m['memorized_set']}) from {m['strict_before']:.0%} "
        f"to {m['strict_after']:.0%} (loose: {m['loose_before']:.0%} to {m['loose_after']:.0%}), "
        f"while held-out perplexity goes from {m['perplexity_before']:.2f} to "
        f"{m['perplexity_after']:.2f} ({m['perplexity_change_pct']:+.2f}%)."
    )
    if "svd_matched" in m:
        s = m["svd_matched"]
        text += (
            f" Truncating singular components instead, at matched perplexity "
            f"({s['perplexity']:.2f}), leaves strict recitation at {s['strict_memorized']:.0%} "
            f"and loose at {s['loose_memorized']:.0%}."
        )
    text += (
        f" A likelihood trace remains: after the edit the memorized suffixes cost "
        f"{m['kfac']['nll_memorized']:.2f} nats/token against {m['kfac']['nll_unseen']:.2f} for "
        f"canaries never seen (membership AUC {m['kfac']['membership_auc']:.2f})."
    )
    return text

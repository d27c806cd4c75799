"""``run``: K-FAC factors, the curvature edit across ρ, its SVD baseline, and what each removes."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.curvature import audit, compute
from probes.curvature.config import Config
from probes.curvature.data import (
    CanarySet,
    CurvatureData,
    check_fits,
    factor_batches,
    factor_corpus_name,
    memorization_set,
)
from probes.curvature.factors import (
    KFACFactors,
    check_factors_file,
    collect_factors,
    resolve_weights,
)
from probes.curvature.memorization import Evaluation, evaluate, score_text
from probes.curvature.plots import figures
from workbench.capture import capture
from workbench.edit import edited
from workbench.errors import DataError, FamilyError, OutputExistsError
from workbench.models import LoadedModel
from workbench.models.loader import backend_note
from workbench.probe import Findings, run_frame
from workbench.threads import threads_for, torch_threads

NAME = "curvature"
FAMILIES = ("causal-lm",)
DEFAULT_MODELS = ("zoo:gpt2-canaries",)
MATCH_TOLERANCE = 5e-4
"""The SVD search stops once its perplexity is within this relative distance of the target."""
SPECTRUM_POSITIONS = 1024
"""Held-out positions that form the typical-text reference of the spectrum view."""


def check(model: LoadedModel, config: Config) -> None:
    """The edit needs named weights that match ``config.weights``."""
    if not model.weights:
        raise FamilyError(
            f"{model.spec} ({model.backend} backend) exposes no named weights to edit; load it "
            "with backend='hf'"
        )
    names = resolve_weights(model, config.weights)
    if config.factors:
        check_factors_file(model, config.factors, names)


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: CurvatureData | None) -> Findings:
    """Does removing low-curvature weight components remove memorized recitation, and at what
    cost in perplexity, compared with removing small singular components?

    ``data`` (a ``CurvatureData``) gives sequences of your own and, optionally, factors collected
    before; without it they come from the config's files or the defaults for the model (the
    shipped collection on a real LM, the canary corpus on the zoo model).
    """
    with torch_threads(threads_for(model, config.threads)):
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
    canaries = memorization_set(model, config) if data is None else data.canaries
    check_fits(model, canaries, config.seq_len)

    given = factors is not None  # the caller's factors stay whole: they may be used again
    if factors is None:
        factors = factors_for(model, config)
    bases = factors.eigenbases(names, device=model.device, release=not given)
    collection = {
        "factor_positions": factors.n_positions,
        "factor_seconds": factors.extra.get("seconds"),
        "factor_labels": factors.labels,
    }
    del factors  # the bases hold what the edits need; the factors' memory can go
    base_text = score_text(
        model,
        canaries.held_out_ids,
        canaries.held_out_mask,
        k=config.ndcg_k,
        batch_size=config.batch_size,
    )

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
                batch_size=config.batch_size,
            )

        if not new_weights:
            return go()
        with edited(model, new_weights):
            return go()

    base = measure(None)
    memorized = memorized_set(canaries, base, config)
    groups = group_labels(canaries, memorized)

    weights = {n: model.weight(n).detach() for n in names}
    coords = {n: compute.coordinates(weights[n], bases[n]) for n in names}
    rhos = sorted({*config.sweep, config.rho})
    kfac_points, kept = [], []
    for rho in tqdm(rhos, desc="K-FAC edit sweep", unit="rho"):
        new = _kfac_weights(weights, bases, coords, rho)
        kfac_points.append(measure(new))
        kept.append(_kept_share(bases, rho))
    svds = {n: compute.weight_svd(weights[n]) for n in tqdm(names, desc="SVD", unit="weight")}
    energies = sorted(set(config.svd_sweep))
    svd_points, svd_ranks = [], []
    for energy in tqdm(energies, desc="SVD baseline sweep", unit="energy"):
        new, ranks = _svd_weights(weights, svds, energy)
        svd_points.append(measure(new))
        svd_ranks.append(_rank_share(weights, ranks))
    kfac = kfac_points[rhos.index(config.rho)]
    matched = None
    if config.match_svd:
        matched = _match_svd(
            weights, svds, kfac.perplexity, measure, (energies, svd_points), config.match_steps
        )

    spectrum = (
        _spectrum(model, canaries, bases, coords, svds, memorized, config.rho)
        if memorized.any()
        else {}
    )
    metrics = _metrics(config, canaries, groups, memorized, base, kfac, matched, bases, rhos, kept)
    metrics |= collection
    if spectrum:
        for group in ("memorized", "control"):
            metrics[f"low_curvature_use_{group}"] = float(
                spectrum[f"ratio_kfac_{group}"][:, -1].mean()
            )
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
    summary = _summary(model.spec, metrics)
    if config.audit:
        kfac_at = partial(_kfac_weights, weights, bases, coords)
        svd_at = partial(_svd_only, weights, svds)
        states = {"base": lambda: None, "kfac": lambda: kfac_at(config.rho)}
        if matched is not None:
            states["svd"] = partial(svd_at, matched["energy"])
        sweeps = {"kfac": (rhos, kfac_at), "svd": (energies, svd_at)}
        found, more = audit.run_audit(
            model, config, canaries, memorized, states=states, sweeps=sweeps
        )
        metrics |= found
        arrays |= more
        metrics["headline"] += [k for k in audit.HEADLINE if k in found]
        summary += audit.summary(metrics)
    return Findings(metrics, arrays, summary, backend_note(model))


def factors_for(model: LoadedModel, config: Config, shard: tuple[int, int] = (0, 1)) -> KFACFactors:
    """K-FAC factors of the configured weights over the configured factor corpus, as ``run``
    collects them: pass them back in ``CurvatureData(canaries, factors)``, or save them and
    give the file as ``factors=FILE``, to reuse them.

    ``shard=(rank, world)``: this process's share of a data-parallel collection under
    ``torchrun`` (every process gets the factors of the whole corpus back). With
    ``config.factors`` set, the factors are read from that file instead (refused when they were
    collected on another model).
    """
    if config.factors:
        check_factors_file(model, config.factors, resolve_weights(model, config.weights))
        return KFACFactors.load(config.factors)
    with torch_threads(threads_for(model, config.threads)):
        factors = collect_factors(
            model,
            factor_batches(model, config, shard),
            resolve_weights(model, config.weights),
            labels=config.labels,
            seed=config.seed,
            layers_per_pass=config.layers_per_pass,
            checkpointing=config.checkpointing,
            progress=shard[0] == 0,
        )
    factors.extra |= {
        "corpus": factor_corpus_name(model, config),
        "text_field": config.text_field,
        "factor_tokens": config.factor_tokens,
        "seq_len": config.seq_len,
        "batch_size": config.batch_size,
    }
    return factors


# -- which sequences are memorized -------------------------------------------------------------
def memorized_set(canaries: CanarySet, base: Evaluation, config: Config) -> np.ndarray:
    """The sequences the edit should make unreciteable.

    A canary corpus: canaries planted at least ``memorized_min_repetitions`` times (or the most
    planted ones). Otherwise the finder: candidates the unedited model recites, verbatim or
    loosely as ``memorized_if`` says; controls never count.
    """
    if canaries.planted is not None:
        planted = canaries.planted
        chosen = planted >= config.memorized_min_repetitions
        return chosen if chosen.any() else planted == planted.max()
    recited = base.recitation.strict if config.memorized_if == "strict" else base.recitation.loose
    return recited & ~canaries.control


def group_labels(canaries: CanarySet, memorized: np.ndarray) -> np.ndarray:
    """Per sequence, the group the figures show it in (ordered by ``group_order``)."""
    if canaries.planted is not None:
        return np.array([f"x{r}" if r else "unseen" for r in canaries.planted])
    return np.where(
        canaries.control, "control", np.where(memorized, "recited", "not recited")
    ).astype(str)


def group_order(groups: np.ndarray) -> list[str]:
    """Groups from least to most memorized: unseen/control first."""

    def key(g: str) -> tuple[int, int]:
        if g.startswith("x") and g[1:].isdigit():
            return (1, int(g[1:]))
        return ({"unseen": 0, "control": 0, "not recited": 1, "recited": 2}.get(g, 1), 0)

    return sorted(set(groups.tolist()), key=key)


# -- pieces ------------------------------------------------------------------------------------
def _svd_weights(
    weights: dict[str, torch.Tensor], svds: dict[str, compute.Svd], energy: float
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    new, ranks = {}, {}
    for name, w in weights.items():
        new[name], ranks[name] = compute.svd_weight(w, energy, svds[name])
    return new, ranks


def _kfac_weights(
    weights: dict[str, torch.Tensor],
    bases: dict[str, compute.Eigenbasis],
    coords: dict[str, torch.Tensor],
    rho: float,
) -> dict[str, torch.Tensor]:
    return {n: compute.kfac_weight(weights[n], bases[n], rho, coords[n]) for n in weights}


def _svd_only(
    weights: dict[str, torch.Tensor], svds: dict[str, compute.Svd], energy: float
) -> dict[str, torch.Tensor]:
    return _svd_weights(weights, svds, energy)[0]


def _kept_share(bases: dict[str, compute.Eigenbasis], rho: float) -> float:
    """Share of all edited components the K-FAC edit keeps at ``rho``."""
    kept = total = 0
    for basis in bases.values():
        counts = compute.select_by_mass(basis.lam, basis.mu, rho)
        kept += int(counts.sum())
        total += basis.shape[0] * basis.shape[1]
    return kept / total


def _rank_share(weights: dict[str, torch.Tensor], ranks: dict[str, int]) -> float:
    """Share of the singular components the SVD truncation keeps (over all edited matrices)."""
    full = sum(min(weights[n].shape) for n in ranks)
    return sum(ranks.values()) / full


def _match_svd(
    weights: dict[str, torch.Tensor],
    svds: dict[str, compute.Svd],
    target: float,
    measure: Callable[[dict | None], Evaluation],
    sweep: tuple[list[float], list[Evaluation]],
    steps: int,
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
    bar = tqdm(range(steps), desc="SVD at matched perplexity", unit="step")
    for _ in bar:
        x = 0.5 * (lo + hi)
        energy = 1.0 - 10.0**x
        new, ranks = _svd_weights(weights, svds, energy)
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
    assert best is not None  # steps >= 1
    best["rank_share"] = _rank_share(weights, best["ranks"])
    return best


def _sequence_inputs(data: CanarySet) -> tuple[torch.Tensor, torch.Tensor, list[range]]:
    """Whole sequences (prompt + target), right-padded, and the positions predicting targets."""
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


def _spectrum(
    model: LoadedModel,
    data: CanarySet,
    bases: dict[str, compute.Eigenbasis],
    coords: dict[str, torch.Tensor],
    svds: dict[str, compute.Svd],
    memorized: np.ndarray,
    rho: float,
) -> dict[str, np.ndarray]:
    """How strongly memorized and control sequences drive each band of components, per matrix.

    A band's activation on an input x is ||(C ⊙ M_band) U_inᵀ x||, the norm of what that band of
    weight components adds to the layer's output. Each group's mean is divided by that of
    held-out text (the typical input), in the curvature basis and in the SVD basis: the paper's
    activation-ratio view. Controls separate "memorized" from merely "unusual".
    """
    names = list(bases)
    sites = [f"{n}.input" for n in names]
    ids, mask, spans = _sequence_inputs(data)
    seqs = capture(model, {"input_ids": ids, "attention_mask": mask}, sites, progress=False)
    per_seq = max(1, data.held_out_ids.shape[1] - 1)
    k = max(1, min(len(data.held_out_ids), SPECTRUM_POSITIONS // per_seq))
    text_batch = {"input_ids": data.held_out_ids[:k], "attention_mask": data.held_out_mask[:k]}
    text = capture(model, text_batch, sites, progress=False)
    text_valid = (data.held_out_mask[:k, :-1] & data.held_out_mask[:k, 1:]).bool()
    edges = compute.band_edges(rho)
    groups = {"memorized": memorized, "control": data.control}
    out: dict[str, list] = {f"{b}_{g}": [] for b in ("kfac", "svd") for g in groups}
    try:
        for name in tqdm(names, desc="spectrum view", unit="weight", leave=False):
            x = seqs[f"{name}.input"]
            rows = {
                g: torch.cat([x[i, list(spans[i])] for i in np.nonzero(pick)[0]])
                for g, pick in groups.items()
            }
            reference = text[f"{name}.input"][:, :-1][text_valid]
            basis = bases[name]
            counts = [compute.select_by_mass(basis.lam, basis.mu, e) for e in edges]
            views: dict[str, tuple[torch.Tensor, torch.Tensor, Sequence[torch.Tensor]]] = {
                "kfac": (coords[name], basis.u_a, compute.band_masks(counts, basis.shape[1])),
                "svd": compute.svd_band_masks(model.weight(name), edges, svds[name]),
            }
            for view, (c, u_in, masks) in views.items():
                typical = compute.band_activation(reference, c, u_in, masks)
                for g, r in rows.items():
                    used = compute.band_activation(r, c, u_in, masks)
                    out[f"{view}_{g}"].append(used / np.maximum(typical, 1e-30))
    finally:
        seqs.close()
        text.close()
    bounds = [0.0, *edges, 1.0]
    labels = [f"{lo:g}–{hi:g}" for lo, hi in itertools.pairwise(bounds)]
    return {
        "band_labels": np.array(labels),
        "band_kept": np.array([hi <= rho + 1e-12 for hi in bounds[1:]]),
        **{f"ratio_{key}": np.array(v) for key, v in out.items()},
    }


def _mean(values: np.ndarray, pick: np.ndarray) -> float:
    """Mean over the picked entries; NaN (stored as null) when none is picked."""
    return float(values[pick].mean()) if pick.any() else float("nan")


def _group_stats(ev: Evaluation, groups: np.ndarray) -> dict:
    out = {}
    for g in group_order(groups):
        pick = groups == g
        out[g] = {
            "strict": _mean(ev.recitation.strict, pick),
            "loose": _mean(ev.recitation.loose, pick),
            "distance": _mean(ev.recitation.normalised, pick),
            "nll_per_token": _mean(ev.suffix_nll, pick),
            "n": int(pick.sum()),
        }
    return out


def _state(ev: Evaluation, data: CanarySet, groups: np.ndarray, memorized: np.ndarray) -> dict:
    control = data.control
    return {
        "perplexity": ev.perplexity,
        "ndcg": ev.ndcg,
        "strict_memorized": _mean(ev.recitation.strict, memorized),
        "loose_memorized": _mean(ev.recitation.loose, memorized),
        "distance_memorized": _mean(ev.recitation.normalised, memorized),
        "nll_memorized": _mean(ev.suffix_nll, memorized),
        "nll_control": _mean(ev.suffix_nll, control),
        "membership_auc": compute.auc(-ev.suffix_nll[memorized], -ev.suffix_nll[control]),
        "by_group": _group_stats(ev, groups),
    }


def _memorized_description(config: Config, data: CanarySet, memorized: np.ndarray) -> str:
    found = int(memorized.sum())
    if data.planted is not None:
        return (
            f"canaries planted >= {config.memorized_min_repetitions} times "
            f"({found} of {len(memorized)})"
        )
    candidates = int((~data.control).sum())
    how = "verbatim" if config.memorized_if == "strict" else "at least loosely"
    return f"{found} of {candidates} candidates from {data.source} that the model recites {how}"


def _metrics(
    config: Config,
    data: CanarySet,
    groups: np.ndarray,
    memorized: np.ndarray,
    base: Evaluation,
    kfac: Evaluation,
    matched: dict | None,
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
        "memorized_found": int(memorized.sum()),
        "candidates": int((~data.control).sum()),
        "candidates_too_short": data.skipped,
        "strict_before": b["strict_memorized"],
        "strict_after": k["strict_memorized"],
        "loose_before": b["loose_memorized"],
        "loose_after": k["loose_memorized"],
        "perplexity_before": b["perplexity"],
        "perplexity_after": k["perplexity"],
        "perplexity_change_pct": 100.0 * (k["perplexity"] / b["perplexity"] - 1.0),
        "ndcg_after": k["ndcg"],
        "nll_gap_after": k["nll_control"] - k["nll_memorized"],
        "memorized_set": _memorized_description(config, data, memorized),
        "loose_threshold": config.loose_threshold,
        "ndcg_k": config.ndcg_k,
        "kept_components": kept[rhos.index(config.rho)],
        "components_for_95pct_mass": float(np.median(mass95)),
        "edited_weights": len(bases),
        "held_out_tokens": int(data.held_out_mask[:, 1:].sum()),
        "base": b,
        "kfac": k,
    }
    headline = ["memorized_found", "strict_before", "strict_after", "loose_after"]
    headline += ["perplexity_before", "perplexity_after", "perplexity_change_pct", "ndcg_after"]
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
    groups: np.ndarray,
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
        "sequence_names": np.array(data.names),
        "group": groups,
        "groups": np.array(group_order(groups)),
        "control": data.control,
        "memorized": memorized,
        "prompt_text": np.array(data.prompt_texts),
        "target_text": np.array(data.target_texts),
        **spectrum,
    }
    if data.planted is not None:
        a["repetitions"] = data.planted
    for name, basis in bases.items():
        a[f"eig_G.{name}"] = basis.lam.cpu().numpy()
        a[f"eig_A.{name}"] = basis.mu.cpu().numpy()
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
                [_mean(getattr(p.recitation, metric), memorized) for p in points]
            )
        a[f"{prefix}_sweep_continuation"] = np.stack(
            [_decode(model, p.continuations) for p in points]
        )
        a[f"{prefix}_sweep_distance"] = np.stack([p.recitation.normalised for p in points])
    return a


def _summary(spec: str, m: dict) -> str:
    edit = (
        f"On {spec}, keeping {m['rho']:g} of the K-FAC curvature mass in {m['edited_weights']} "
        f"matrices ({m['kept_components']:.1%} of their components)"
    )
    coherence = (
        f"held-out perplexity goes from {m['perplexity_before']:.2f} to "
        f"{m['perplexity_after']:.2f} ({m['perplexity_change_pct']:+.2f}%) and the edited model's "
        f"top-{m['ndcg_k']} next tokens keep nDCG {m['ndcg_after']:.3f} against the unedited ones"
    )
    if not m["memorized_found"]:
        return (
            f"No memorized set was found: none of the {m['candidates']} candidates "
            f"({m['memorized_set']}) is recited by the unedited model, so there is no recitation "
            f"for the edit to remove. {edit}, {coherence}."
        )
    text = (
        f"{edit} changes verbatim recitation of the memorized set ({m['memorized_set']}) from "
        f"{m['strict_before']:.0%} to {m['strict_after']:.0%} (loose: {m['loose_before']:.0%} "
        f"to {m['loose_after']:.0%}), while {coherence}."
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
        f"{m['kfac']['nll_memorized']:.2f} nats/token against {m['kfac']['nll_control']:.2f} for "
        f"the controls (membership AUC {m['kfac']['membership_auc']:.2f})."
    )
    return text


def collect_factors_file(
    spec: str,
    out: str | Path,
    *,
    params: dict[str, Any] | None = None,
    preset: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    overwrite: bool = False,
) -> KFACFactors:
    """``workbench factors collect``: the factors ``run`` would collect with these settings,
    written to ``out`` (``.safetensors``, provenance JSON beside it) for ``factors=FILE``.

    Under ``torchrun`` each process loads the model, reads its shard of the corpus and takes
    part in one all-reduce at the end; rank 0 writes the file. Every setting, the corpus path
    and the output are checked before the model is loaded.
    """
    from workbench.distributed import torchrun_process
    from workbench.models import load_model
    from workbench.models.loader import peek_family
    from workbench.probe import make_config

    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise DataError(f"--out is a .safetensors file; got {out.name}")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    config = make_config(NAME, preset=preset, params=params)
    assert isinstance(config, Config)
    if config.factor_corpus and not Path(config.factor_corpus).expanduser().exists():
        raise DataError(
            f"corpus {config.factor_corpus} does not exist; give a text file, JSONL, folder or "
            "dataset"
        )
    family = peek_family(spec)
    if family not in FAMILIES:
        raise FamilyError(f"curvature factors need a causal LM; {spec} is a {family} model")
    with torchrun_process(device) as process:
        model = load_model(spec, device=process.device, dtype=dtype)
        if process.world > 1 and config.threads == 0:
            config = dataclasses.replace(config, threads=process.threads)
        factors = factors_for(model, config, process.shard)
        if process.leader:
            factors.save(out)
    return factors

"""Probes along training: the same measurements on every checkpoint of one training run.

A trajectory is a list of checkpoints, each a loadable spec with its training step: the
checkpoints of a zoo build (``zoo:NAME@STEP``, from ``workbench zoo build NAME --checkpoints
K``) or a hub model's revisions (``EleutherAI/pythia-70m@step1000``, as the Pythia suite
publishes them). Before anything is measured every checkpoint is loaded once and its weights
digest compared with the previous one's: a suite that served the same (or the final) weights
under two step names would make every curve silently wrong, so consecutive identical
checkpoints are refused, naming the steps.

Per checkpoint, what fits the model's family:

- atlas decodability per layer (the atlas probe; vision models on its scenes, causal LMs on the
  canary corpus's topic read at function words, which name no topic themselves);
- binding's headline (distance-matched balanced accuracy, best probe and layer) beside its
  pixel, position, patch-embedding and random-init controls (vision models);
- canary recitation (greedy, exact and loose) of each repetition group and held-out perplexity
  (causal LMs trained on ``workbench.data.canaries``: the curvature probe's base evaluation).

The checkpoints run one after the other in this process (a plain loop: each point needs the
previous digest, and the models are small); ``Trajectory.save`` writes ``trajectory.json`` and
the figures, atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.figures import fit_cell, new_figure
from workbench.models import LoadedModel, load_model
from workbench.staging import sibling_name

TRAJECTORY_FILE = "trajectory.json"
MEASURES = ("atlas", "binding", "recitation")


class DuplicateCheckpointError(WorkbenchError):
    """Two consecutive checkpoints hold the same weights."""


# -- which checkpoints -------------------------------------------------------------------------
def checkpoints_of(spec: str, revisions: Sequence[str] = ()) -> list[tuple[int, str]]:
    """(step, spec) of every checkpoint: a zoo build's (``zoo:NAME``), or a hub model at the
    given ``revisions`` (``step1000`` -> step 1000; the digits of the name are the step)."""
    if revisions:
        out = []
        for revision in revisions:
            digits = re.findall(r"\d+", revision)
            if not digits:
                raise WorkbenchError(
                    f"revision {revision!r} names no training step; use names like step1000"
                )
            out.append((int(digits[-1]), f"{spec}@{revision}"))
        return sorted(out)
    if not spec.startswith("zoo:"):
        raise WorkbenchError(
            f"{spec!r}: name its checkpoints with revisions (e.g. step1000 step2000), or use a "
            "zoo model built with `workbench zoo build NAME --checkpoints K`"
        )
    from workbench.zoo import zoo_checkpoints

    name = spec.removeprefix("zoo:")
    return [(step, f"{spec}@{step}") for step in zoo_checkpoints(name)]


def check_distinct(steps: Sequence[int], digests: Sequence[str]) -> None:
    """Refuse consecutive checkpoints with the same weights digest, naming their steps."""
    same = [(steps[k - 1], steps[k]) for k in range(1, len(steps)) if digests[k] == digests[k - 1]]
    if same:
        pairs = ", ".join(f"{a} and {b}" for a, b in same)
        raise DuplicateCheckpointError(
            f"checkpoints at steps {pairs} hold identical weights (same digest); the source "
            "served one checkpoint under several steps, so a trajectory over them would be "
            "wrong. Drop the duplicates or fetch the right revisions"
        )


# -- the result --------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """Per checkpoint (in step order): its digest and every measure that applies."""

    spec: str
    steps: list[int]
    digests: list[str]
    layer_names: list[str] = field(default_factory=list)
    atlas: list[list[float]] = field(default_factory=list)
    """Decodability per layer at each step (steps x layers), and its chance level."""
    atlas_chance: list[float] = field(default_factory=list)
    binding: dict[str, list[float]] = field(default_factory=dict)
    """Headline and controls at each step: ``headline``, ``pixel_control``, ..."""
    recitation: dict[str, list[float]] = field(default_factory=dict)
    """Per repetition group (``"1"``, ``"4"``, ...; ``"0"`` the unseen control): the fraction
    recited exactly (``strict:R``) and loosely (``loose:R``), and ``perplexity``."""

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def load(cls, folder: str | Path) -> Trajectory:
        return cls(**json.loads((Path(folder) / TRAJECTORY_FILE).read_text()))

    def figures(self) -> dict[str, go.Figure]:
        """Every figure that has data; refused if two consecutive digests are the same."""
        check_distinct(self.steps, self.digests)
        out: dict[str, go.Figure] = {}
        if self.atlas:
            out["decodability"] = decodability_figure(self)
        if self.recitation:
            out["recitation"] = recitation_figure(self)
        if self.binding:
            out["binding"] = binding_figure(self)
        return {name: fit_cell(fig) for name, fig in out.items()}

    def save(self, folder: str | Path) -> Path:
        """``trajectory.json`` and every figure (HTML), written to a temporary folder and
        renamed into place."""
        target = Path(folder).expanduser()
        if target.exists() and not (target / TRAJECTORY_FILE).is_file():
            raise WorkbenchError(f"{target} exists and is not a trajectory; choose another --out")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / sibling_name(target.name, "tmp")
        old = target.parent / sibling_name(target.name, "old")
        tmp.mkdir()
        try:
            text = json.dumps(self.to_json(), indent=2) + "\n"
            (tmp / TRAJECTORY_FILE).write_text(text)
            for name, fig in self.figures().items():
                fig.write_html(tmp / f"{name}.html", include_plotlyjs=True)
            if target.exists():
                target.rename(old)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return target


# -- measuring ---------------------------------------------------------------------------------
def run_trajectory(
    spec: str,
    *,
    revisions: Sequence[str] = (),
    steps: Sequence[int] = (),
    measures: Sequence[str] = MEASURES,
    atlas_params: dict[str, Any] | None = None,
    binding_params: dict[str, Any] | None = None,
    held_out_sequences: int = 200,
    seed: int = 0,
) -> Trajectory:
    """Measure every checkpoint of ``spec`` (or those at ``steps``) after the digest guard."""
    bad = sorted(set(measures) - set(MEASURES))
    if bad:
        raise WorkbenchError(f"unknown measures {bad}; choose from {', '.join(MEASURES)}")
    points = checkpoints_of(spec, revisions)
    if steps:
        known = {s for s, _ in points}
        missing = sorted(set(steps) - known)
        if missing:
            raise WorkbenchError(
                f"{spec} has no checkpoints at steps {missing}; it has {sorted(known)}"
            )
        points = [(s, p) for s, p in points if s in set(steps)]
    if len(points) < 2:
        raise WorkbenchError(f"a trajectory needs at least two checkpoints; {spec} has {points}")
    digests = [load_model(p).digest() for _, p in tqdm(points, desc="digests", unit="ckpt")]
    check_distinct([s for s, _ in points], digests)
    out = Trajectory(spec, [s for s, _ in points], digests)
    canaries = None  # tokenised once: every checkpoint of a run shares its tokenizer
    for _, point in tqdm(points, desc=f"trajectory {spec}", unit="ckpt"):
        model = load_model(point)
        if "atlas" in measures:
            _measure_atlas(out, model, atlas_params or {}, seed)
        if "binding" in measures and model.is_vision:
            _measure_binding(out, model, binding_params or {}, seed)
        if "recitation" in measures and model.family == "causal-lm":
            canaries = _measure_recitation(out, model, held_out_sequences, seed, canaries)
    return out


def _quick_run(name: str, model: LoadedModel, params: dict[str, Any], data: Any = None) -> Any:
    """One probe run with its quick preset under ``params``."""
    from workbench.probe import get_probe, make_config

    config = make_config(name, preset="quick", params=params)
    return get_probe(name).run(model, config, data)


def _measure_atlas(out: Trajectory, model: LoadedModel, params: dict[str, Any], seed: int) -> None:
    data = None if model.is_vision else topic_positions(model, seed=seed)
    result = _quick_run("atlas", model, {"seed": seed, **params}, data)
    out.layer_names = [str(v) for v in result.arrays["layer_names"]]
    out.atlas.append([float(v) for v in result.arrays["accuracy"]])
    out.atlas_chance.append(float(result.metrics["chance_accuracy"]))


BINDING_KEYS = (
    ("headline", "distance_matched_balanced_accuracy"),
    ("pixel_control", "pixel_control"),
    ("position_control", "position_control"),
    ("patch_embedding_control", "patch_embedding_control"),
    ("random_init_control", "random_init_control"),
)


def _measure_binding(
    out: Trajectory, model: LoadedModel, params: dict[str, Any], seed: int
) -> None:
    quick = {"attention": False, "ablation": False, "seed": seed}
    metrics = _quick_run("binding", model, {**quick, **params}).metrics
    for key, metric in BINDING_KEYS:
        out.binding.setdefault(key, []).append(float(metrics.get(metric, np.nan)))


def _measure_recitation(
    out: Trajectory, model: LoadedModel, held_out_sequences: int, seed: int, canaries: Any
) -> Any:
    """Recitation per canary group and held-out perplexity; returns the canary set to reuse."""
    from probes.curvature.config import Config as CurvatureConfig
    from probes.curvature.data import canary_set
    from probes.curvature.memorization import evaluate

    seq_len = CurvatureConfig().seq_len
    config = CurvatureConfig(held_out_tokens=held_out_sequences * seq_len, seed=seed)
    canaries = canaries or canary_set(model, config)
    ev = evaluate(
        model,
        canaries.prompts,
        canaries.targets,
        canaries.held_out_ids,
        canaries.held_out_mask,
        loose_threshold=config.loose_threshold,
    )
    for r in np.unique(canaries.planted):
        group = canaries.planted == r
        out.recitation.setdefault(f"strict:{r}", []).append(
            float(ev.recitation.strict[group].mean())
        )
        out.recitation.setdefault(f"loose:{r}", []).append(float(ev.recitation.loose[group].mean()))
    out.recitation.setdefault("perplexity", []).append(float(ev.perplexity))
    return canaries


def topic_positions(model: LoadedModel, n: int = 160, *, seed: int = 0) -> Any:
    """Canary-corpus documents; label = the document's topic, read at its function words
    (``the``, ``of``, ...), which carry no topic of their own: decodable only from context."""
    from probes.atlas.data import LabelledPositions
    from workbench.data.canaries import EOS, FUNCTION_WORDS, N_TOPICS, document

    texts, rows, labels, hover = [], [], [], []
    function_words = set(FUNCTION_WORDS)
    for i in range(n):
        topic = int(np.random.default_rng([seed, i]).integers(N_TOPICS))
        words = [EOS, *document(np.random.default_rng([seed, i]), 40)][:40]
        texts.append(" ".join(words))
        for t, word in enumerate(words):
            if t >= 6 and word in function_words:
                rows.append((i, t))
                labels.append(topic)
                hover.append(f"document {i}, word {t} ({word}): topic {topic}")
    batch = model.encode_texts(texts)
    lengths = batch["attention_mask"].sum(1).numpy()
    if any(lengths[i] != len(texts[i].split()) for i in range(n)):
        raise WorkbenchError(
            f"{model.spec} does not read the canary corpus one word per token; the topic atlas "
            "needs a model trained on workbench.data.canaries (zoo:gpt2-canaries)"
        )
    positions = np.array(rows)
    return LabelledPositions(
        inputs=batch,
        positions=positions,
        labels=np.array(labels),
        label_names=tuple(f"topic {k}" for k in range(N_TOPICS)),
        groups=positions[:, 0],
        hover=np.array(hover),
        label_title="document topic",
    )


# -- figures -----------------------------------------------------------------------------------
def _step_labels(t: Trajectory) -> list[str]:
    return [str(s) for s in t.steps]


def decodability_figure(t: Trajectory) -> go.Figure:
    """Layer x step heatmap of atlas decodability (cross-validated accuracy)."""
    z = np.array(t.atlas).T  # layers x steps
    fig = new_figure(
        title=f"Decodability by layer along training: {t.spec}<br><sup>cross-validated linear "
        f"probe accuracy; chance {np.mean(t.atlas_chance):.2f}</sup>",
        xaxis_title="training step (checkpoints, log-spaced)",
        yaxis_title="layer",
    )
    fig.add_heatmap(
        x=_step_labels(t),
        y=t.layer_names,
        z=z,
        colorscale="Viridis",
        colorbar={"title": "accuracy"},
        hovertemplate="step %{x}<br>%{y}<br>accuracy %{z:.3f}<extra></extra>",
    )
    fig.update_xaxes(type="category")
    return fig


def recitation_figure(t: Trajectory) -> go.Figure:
    """Exact (solid) and loose (dotted) recitation of each canary group vs step, and held-out
    perplexity: when does memorization form?"""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        subplot_titles=("canaries recited (greedy continuation)", "held-out perplexity"),
    )
    x = _step_labels(t)
    groups = sorted({int(k.split(":")[1]) for k in t.recitation if ":" in k})
    for colour, r in enumerate(groups):
        name = "unseen" if r == 0 else f"{r}x"
        for kind, dash in (("strict", "solid"), ("loose", "dot")):
            fig.add_scatter(
                x=x,
                y=t.recitation[f"{kind}:{r}"],
                name=f"{name} ({'exact' if kind == 'strict' else 'loose'})",
                mode="lines+markers",
                line={"dash": dash, "color": _colour(colour)},
                legendgroup=name,
                row=1,
                col=1,
            )
    fig.add_scatter(
        x=x, y=t.recitation["perplexity"], name="perplexity", mode="lines+markers", row=1, col=2
    )
    fig.update_xaxes(type="category", title_text="training step")
    fig.update_yaxes(title_text="fraction recited", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title=f"When do the canaries become recited? {t.spec}", height=460)
    return fig


def binding_figure(t: Trajectory) -> go.Figure:
    """Binding headline vs step against its controls."""
    fig = new_figure(
        title=f"Binding along training: {t.spec}<br><sup>distance-matched balanced accuracy "
        "(best probe and layer, held-out pairs) and the controls on the same pairs</sup>",
        xaxis_title="training step",
        yaxis_title="distance-matched balanced accuracy",
    )
    x = _step_labels(t)
    for key, _ in BINDING_KEYS:
        values = t.binding.get(key)
        if values is None or np.all(np.isnan(values)):
            continue
        fig.add_scatter(
            x=x,
            y=values,
            name=key.replace("_", " "),
            mode="lines+markers",
            line={
                "width": 3 if key == "headline" else 1.5,
                "dash": "solid" if key == "headline" else "dash",
            },
        )
    fig.add_hline(y=0.5, line={"dash": "dashdot", "color": "#6B7280"})
    fig.update_xaxes(type="category")
    return fig


def _colour(k: int) -> str:
    from workbench.figures import COLORWAY

    return COLORWAY[k % len(COLORWAY)]

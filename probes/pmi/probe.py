"""``run``: how a PMI-Transformer writes, consolidates and reads memory while answering stories."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.pmi import compute
from probes.pmi.config import Config
from probes.pmi.plots import figures
from workbench.capture import capture, hooks
from workbench.data.stories import (
    ANSWERS,
    VOCABULARY,
    Story,
    majority_accuracy,
    make_stories,
    uniform_chance,
)
from workbench.errors import DataError, FamilyError
from workbench.maps import project_2d
from workbench.models import LoadedModel, load_model, peek_family
from workbench.probe import Findings, run_frame

NAME = "pmi"
FAMILIES = ("pmi",)
DEFAULT_MODELS = ("zoo:pmi-stories",)
MAJORITY_REFERENCE = (3000, 0)
"""(n, seed) of the stories whose most common answer per task gives the majority baseline (the
zoo models' training seed)."""

STEP_SITES = (
    "write.attn_pre_topk",
    "write.attn",
    "wm",
    "consolidation.delta",
    "ltm",
    "read.wm_attn",
    "read.ltm_attn_pre_topk",
    "read.ltm_attn",
    "read.wm",
    "correction.attn",
    "correction.out",
    "integration.gate",
)
ABLATIONS = {
    "no LTM read": ("read.ltm", "accuracy_no_ltm_read"),
    "no correction (U = alpha U_w)": ("correction.out", "accuracy_no_correction"),
    "no WM read": ("read.wm", "accuracy_no_wm_read"),
}
"""Accuracy with one read path zeroed at every step (through ``workbench.capture.hooks``):
label -> (zeroed site, metric key)."""


def check(model: LoadedModel, config: Config) -> None:
    """The model is a PMI-Transformer that reads the stories; the control is a pmi model."""
    check_story_reader(model, role="model")
    if config.control:
        family = peek_family(config.control)  # a missing control fails here, with advice
        if family != "pmi":
            raise FamilyError(
                f"control {config.control} is a {family} model; it must be a pmi model"
            )


def check_story_reader(model: LoadedModel, role: Literal["model", "control"]) -> None:
    """The model must be a PMI-family story reader whose words and answers are the stories'.

    ``role`` is ``model`` (the PMI-Transformer inspected) or ``control`` (any architecture).
    """
    architecture = getattr(model.config, "architecture", None)
    if architecture is None:
        raise FamilyError(f"{model.spec} is not a workbench pmi model (no PMIConfig)")
    if role == "model" and architecture != "pmi":
        raise FamilyError(
            f"{model.spec} is the Transformer control: it has no memory to inspect. Run the "
            "probe on a PMI-Transformer (zoo:pmi-stories) and pass the control as "
            "--param control=... to see its accuracy beside it"
        )
    if model.processor is None:
        raise DataError(f"{model.spec} has no tokenizer (tokenizer.json); it cannot read stories")
    vocab = model.processor.get_vocab()
    missing = [w for w in VOCABULARY if w not in vocab]
    if missing:
        raise DataError(
            f"{model.spec}'s vocabulary lacks story words {missing[:5]}; it was not trained on "
            "workbench.data.stories"
        )
    labels = list(model.head_labels or ())
    if labels != list(ANSWERS):
        raise DataError(
            f"{model.spec} answers {labels[:4]}...; the stories need the answer classes "
            f"{list(ANSWERS)}"
        )


def load_control(spec: str) -> LoadedModel:
    control = load_model(spec)
    if control.family != "pmi":
        raise FamilyError(f"control {spec} is a {control.family} model; it must be a pmi model")
    check_story_reader(control, role="control")
    return control


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: list[Story] | None) -> Findings:
    """How does the PMI-Transformer write, consolidate and read while answering stories?"""
    control = load_control(config.control) if config.control else None
    stories = data
    if stories is None:
        stories = make_stories(config.n_stories, seed=config.seed, tasks=config.tasks)
    if len(stories) < config.n_examples:
        raise DataError(f"{len(stories)} stories for {config.n_examples} examples")
    batch = _encode(model, stories)
    cfg = model.config
    n_steps = cfg.n_steps

    sites = ["logits", "memory.wm_init", "memory.ltm_init"]
    sites += [f"steps.{t}.{s}" for t in range(n_steps) for s in STEP_SITES]
    truth = np.array([ANSWERS.index(s.answer) for s in stories])
    tasks = [s.task for s in stories]
    # float32 whatever the model's dtype: the analyses below run in numpy (no bfloat16)
    cache = capture(model, batch, sites, batch_size=config.batch_size, dtype=torch.float32)
    try:
        pred = cache["logits"].argmax(-1).numpy()
        per_story = _per_story(cache, stories, n_steps)
    finally:
        cache.close()
    accuracy = compute.accuracy_by_task(pred, truth, tasks)
    metrics: dict[str, Any] = {"accuracy": accuracy["all"]}
    arrays: dict[str, np.ndarray] = {}
    provenance: dict[str, Any] = {}
    if control is not None:
        control_pred = predict(control, _encode(control, stories), config.batch_size)
        control_acc = compute.accuracy_by_task(control_pred, truth, tasks)
        metrics["control_accuracy"] = control_acc["all"]
    majority_train = make_stories(
        MAJORITY_REFERENCE[0], seed=MAJORITY_REFERENCE[1], tasks=config.tasks
    )
    metrics["chance_majority"] = majority_accuracy(majority_train, stories)
    metrics["chance_uniform"] = uniform_chance(stories)
    task_names = list(dict.fromkeys(tasks))
    arrays["task_names"] = np.array(["all", *task_names])
    arrays["accuracy_by_task"] = np.array([accuracy[t] for t in ["all", *task_names]])
    arrays["chance_majority_by_task"] = np.array(
        [
            majority_accuracy(majority_train, [s for s in stories if t in ("all", s.task)])
            for t in ["all", *task_names]
        ]
    )
    arrays["chance_uniform_by_task"] = np.array(
        [uniform_chance([s for s in stories if t in ("all", s.task)]) for t in ["all", *task_names]]
    )
    metrics["accuracy_by_task"] = {t: round(accuracy[t], 4) for t in task_names}
    if control is not None:
        arrays["control_accuracy_by_task"] = np.array(
            [control_acc[t] for t in arrays["task_names"]]
        )
        metrics["control_accuracy_by_task"] = {t: round(control_acc[t], 4) for t in task_names}
        provenance["control_spec"] = control.spec
        del control

    if config.ablations:
        names, values = [], []
        for label, (site, key) in tqdm(ABLATIONS.items(), desc="ablations", leave=False):
            zeroed = {f"steps.{t}.{site}": torch.zeros_like for t in range(n_steps)}
            with hooks(model, zeroed):
                values.append(float((predict(model, batch, config.batch_size) == truth).mean()))
            names.append(label)
            metrics[key] = round(values[-1], 4)
        arrays["ablation_names"] = np.array(["none", *names])
        arrays["ablation_accuracy"] = np.array([accuracy["all"], *values])
        metrics["ablation_accuracy"] = dict(zip(names, (round(v, 4) for v in values), strict=True))

    arrays |= _dataset_arrays(per_story, stories, n_steps)
    k = config.n_examples
    arrays |= _example_arrays(per_story[:k], stories[:k], pred, n_steps)
    arrays["example_index"] = np.array(config.example)
    if config.slot_map != "none":
        arrays |= _slot_map(per_story, stories, config)
    metrics |= _summary_metrics(arrays, config)
    metrics["n_stories"] = len(stories)
    metrics["n_steps"] = n_steps
    metrics["n_slots"] = cfg.n_slots
    metrics["n_segments"] = cfg.n_segments
    metrics["consolidation"] = cfg.consolidation
    metrics["integration"] = cfg.integration
    metrics["headline"] = ["accuracy", "control_accuracy", "chance_majority", "chance_uniform"]
    if "control_accuracy" not in metrics:
        metrics["headline"].remove("control_accuracy")
    return Findings(metrics, arrays, _summary(model.spec, metrics), provenance)


def _encode(model: LoadedModel, stories: list[Story]) -> dict[str, torch.Tensor]:
    batch = model.encode_texts([s.text for s in stories])
    lengths = batch["attention_mask"].sum(1).tolist()
    bad = [i for i, (s, n) in enumerate(zip(stories, lengths, strict=True)) if len(s.tokens) != n]
    if bad:
        raise DataError(
            f"{model.spec}'s tokenizer splits story {bad[0]} into {lengths[bad[0]]} tokens, not "
            f"{len(stories[bad[0]].tokens)} words; the probe needs one token per word"
        )
    return batch


@torch.no_grad()
def predict(model: LoadedModel, batch: dict[str, torch.Tensor], batch_size: int) -> np.ndarray:
    """Predicted answer index per story."""
    n = batch["input_ids"].shape[0]
    out = []
    for start in range(0, n, batch_size):
        part = {k: v[start : start + batch_size] for k, v in batch.items()}
        out.append(model(**part).logits.argmax(-1))
    return torch.cat(out).numpy()


def _per_story(cache: Any, stories: list[Story], n_steps: int) -> list[dict[str, np.ndarray]]:
    """Every captured tensor cut to each story's real tokens, heads averaged."""

    def stack(name: str) -> np.ndarray:
        return np.stack([cache[f"steps.{t}.{name}"].numpy() for t in range(n_steps)], axis=1)

    write_pre = stack("write.attn_pre_topk").mean(2)  # (B, S, N, T)
    write = stack("write.attn").mean(2)
    read_wm = stack("read.wm_attn").mean(2)  # (B, S, T, N)
    read_ltm_pre = stack("read.ltm_attn_pre_topk").mean(2)
    read_ltm = stack("read.ltm_attn").mean(2)
    correction = stack("correction.attn").mean(2)  # (B, S, T, T)
    u_w, u_wl = stack("read.wm"), stack("correction.out")
    gate = stack("integration.gate")
    share = compute.read_share_wm(u_w, u_wl, gate)  # (B, S, T)
    wm = np.concatenate([cache["memory.wm_init"].numpy()[:, None], stack("wm")], axis=1)
    ltm = np.concatenate([cache["memory.ltm_init"].numpy()[:, None], stack("ltm")], axis=1)
    delta = stack("consolidation.delta")  # (B, S, C, N, D)
    out = []
    for i, story in enumerate(stories):
        n = len(story.tokens)
        out.append(
            {
                "write_pre": write_pre[i, :, :, :n],
                "write": write[i, :, :, :n],
                "read_wm": read_wm[i, :, :n],
                "read_ltm_pre": read_ltm_pre[i, :, :n],
                "read_ltm": read_ltm[i, :, :n],
                "correction": correction[i, :, :n, :n],
                "share_wm": share[i, :, :n],
                "gate": gate[i, :, :n, 0],
                "wm": wm[i],  # (S + 1, N, D)
                "ltm_norm": compute.segment_norms(ltm[i]),  # (S + 1, C)
                "ltm_wm_sim": compute.segment_wm_similarity(ltm[i], wm[i]),  # (S + 1, C)
                "ltm_update": compute.relative_update(delta[i], ltm[i, :-1]),  # (S, C)
                "ltm_drift": compute.segment_drift(ltm[i]),  # (S, C)
                "holdings": compute.slot_holdings(write[i, :, :, :n], story),  # (S, N)
            }
        )
    return out


def _dataset_arrays(
    per_story: list[dict[str, np.ndarray]], stories: list[Story], n_steps: int
) -> dict[str, np.ndarray]:
    norms = np.stack([p["ltm_norm"] for p in per_story])
    sims = np.stack([p["ltm_wm_sim"] for p in per_story])
    updates = np.stack([p["ltm_update"] for p in per_story])
    drift = np.stack([p["ltm_drift"] for p in per_story])
    roles = [compute.token_roles(s) for s in stories]
    share = np.stack(
        [compute.mean_by_role(p["share_wm"], r) for p, r in zip(per_story, roles, strict=True)]
    )
    write = np.stack(
        [compute.write_share_by_role(p["write"], r) for p, r in zip(per_story, roles, strict=True)]
    )
    support = []
    max_facts = max(len(s.facts) for s in stories)
    recency = np.full((len(stories), n_steps, max_facts), np.nan)
    for i, (p, s) in enumerate(zip(per_story, stories, strict=True)):
        per_fact = compute.mass_by_sentence(p["write"], s.sentence_of_token, len(s.facts))
        facts = per_fact[..., : len(s.facts)].sum(1)  # (S, F) summed over slots
        fact_share = facts / np.maximum(facts.sum(-1, keepdims=True), 1e-12)
        recency[i, :, : len(s.facts)] = fact_share[:, ::-1]  # column 0: the most recent fact
        is_support = np.isin(np.arange(len(s.facts)), s.supporting)
        support.append(facts[:, is_support].mean(-1) / np.maximum(facts.mean(-1), 1e-12))
    return {
        "roles": np.array(compute.ROLES),
        "ltm_norm_mean": norms.mean(0),
        "ltm_norm_std": norms.std(0),
        "ltm_wm_sim_mean": sims.mean(0),
        "ltm_wm_sim_std": sims.std(0),
        "ltm_update_mean": updates.mean(0),
        "ltm_update_std": updates.std(0),
        "ltm_drift_mean": drift.mean(0),
        "ltm_drift_std": drift.std(0),
        "read_share_by_role": np.nanmean(share, axis=0),
        "write_by_role": write.mean(0),
        "support_write_ratio": np.stack(support).mean(0),
        "write_by_recency": np.nanmean(recency, axis=0),  # (S, max facts)
        "write_recency_uniform": np.array(
            [
                np.mean([1 / len(s.facts) for s in stories if len(s.facts) > j])
                for j in range(max_facts)
            ]
        ),
        "slot_change_mean": np.stack([compute.slot_change(p["wm"]) for p in per_story]).mean(0),
    }


def _example_arrays(
    per_story: list[dict[str, np.ndarray]], stories: list[Story], pred: np.ndarray, n_steps: int
) -> dict[str, np.ndarray]:
    """Every per-step tensor of the first few stories, padded to a common length."""
    k = len(stories)
    t_max = max(len(s.tokens) for s in stories)
    f_max = max(len(s.facts) for s in stories) + 1
    n = per_story[0]["write"].shape[1]
    d = per_story[0]["wm"].shape[-1]
    out: dict[str, np.ndarray] = {
        "ex_write_pre": np.zeros((k, n_steps, n, t_max), np.float32),
        "ex_write": np.zeros((k, n_steps, n, t_max), np.float32),
        "ex_read_wm": np.zeros((k, n_steps, t_max, n), np.float32),
        "ex_read_ltm_pre": np.zeros((k, n_steps, t_max, n), np.float32),
        "ex_read_ltm": np.zeros((k, n_steps, t_max, n), np.float32),
        "ex_correction": np.zeros((k, n_steps, t_max, t_max), np.float32),
        "ex_share_wm": np.zeros((k, n_steps, t_max), np.float32),
        "ex_gate": np.zeros((k, n_steps, t_max), np.float32),
        "ex_wm": np.zeros((k, n_steps + 1, n, d), np.float32),
        "ex_slot_change": np.zeros((k, n_steps, n), np.float32),
        "ex_holding": np.zeros((k, n_steps, n), np.int64),
        "ex_tokens": np.full((k, t_max), "", dtype=object),
        "ex_sentence": np.full((k, t_max), -2, np.int64),
        "ex_facts": np.full((k, f_max), "", dtype=object),
        "ex_entity_of_fact": np.full((k, f_max), "", dtype=object),
    }
    for i, (p, s) in enumerate(zip(per_story, stories, strict=True)):
        m = len(s.tokens)
        for key in ("write_pre", "write"):
            out[f"ex_{key}"][i, :, :, :m] = p[key]
        for key in ("read_wm", "read_ltm_pre", "read_ltm"):
            out[f"ex_{key}"][i, :, :m] = p[key]
        out["ex_correction"][i, :, :m, :m] = p["correction"]
        out["ex_share_wm"][i, :, :m] = p["share_wm"]
        out["ex_gate"][i, :, :m] = p["gate"]
        out["ex_wm"][i] = p["wm"]
        out["ex_slot_change"][i] = compute.slot_change(p["wm"])
        out["ex_holding"][i] = p["holdings"]
        out["ex_tokens"][i, :m] = s.tokens
        out["ex_sentence"][i, :m] = s.sentence_of_token
        for j in range(len(s.facts) + 1):
            labels = compute.fact_labels(s, j)
            out["ex_facts"][i, j] = labels["text"]
            out["ex_entity_of_fact"][i, j] = labels["entity"] if j < len(s.facts) else "question"
    for key in ("ex_tokens", "ex_facts", "ex_entity_of_fact"):
        out[key] = out[key].astype(str)
    out["ex_n_tokens"] = np.array([len(s.tokens) for s in stories])
    out["ex_n_facts"] = np.array([len(s.facts) for s in stories])
    out["ex_task"] = np.array([s.task for s in stories])
    out["ex_answer"] = np.array([s.answer for s in stories])
    out["ex_prediction"] = np.array([ANSWERS[j] for j in pred[: len(stories)]])
    out["ex_supporting"] = np.array(
        [[j in s.supporting for j in range(f_max)] for s in stories], dtype=bool
    )
    return out


def _slot_map(
    per_story: list[dict[str, np.ndarray]], stories: list[Story], config: Config
) -> dict[str, np.ndarray]:
    """A 2-D map of WM slot states after every step, labelled by the fact each slot holds."""
    states = []
    labels: dict[str, list] = {
        k: [] for k in ("entity", "kind", "support", "slot", "step", "story", "hover")
    }
    for i, (p, s) in enumerate(zip(per_story, stories, strict=True)):
        n_steps, n_slots = p["holdings"].shape
        for t in range(n_steps):
            for n in range(n_slots):
                fact = compute.fact_labels(s, int(p["holdings"][t, n]))
                states.append(p["wm"][t + 1, n])
                labels["entity"].append(
                    fact["entity"] if fact["kind"] != "question" else "question"
                )
                labels["kind"].append(fact["kind"])
                labels["support"].append(fact["support"])
                labels["slot"].append(f"slot {n}")
                labels["step"].append(f"step {t}")
                labels["story"].append(i)
                labels["hover"].append(
                    f"story {i} ({s.task}), step {t}, slot {n}<br>holds: {fact['text']}"
                )
    keep = compute.subsample(len(states), config.max_map_points, config.seed)
    x = np.stack(states)[keep]
    xy = project_2d(x, config.slot_map, seed=config.seed, n_neighbors=config.umap_neighbors)
    out = {"map_xy": xy, "map_method": np.array(config.slot_map)}
    for key, values in labels.items():
        out[f"map_{key}"] = np.array(values)[keep]
    return out


def _summary_metrics(arrays: dict[str, np.ndarray], config: Config) -> dict[str, Any]:
    roles = list(compute.ROLES)
    wm_share = float(arrays["read_share_by_role"][-1, roles.index("question")])
    out: dict[str, Any] = {
        "wm_read_share_question_last_step": round(wm_share, 4),
        # the rest of the question's read comes from long-term memory through the correction
        "ltm_read_share_question_last_step": round(1 - wm_share, 4),
        "write_share_content_words": [
            round(float(arrays["write_by_role"][t, [0, 1, 2]].sum()), 4)
            for t in range(arrays["write_by_role"].shape[0])
        ],
        "support_write_ratio": [round(float(v), 3) for v in arrays["support_write_ratio"]],
        "write_share_last_fact": [round(float(v), 3) for v in arrays["write_by_recency"][:, 0]],
        "write_share_last_fact_uniform": round(float(arrays["write_recency_uniform"][0]), 3),
        "ltm_wm_similarity_last_step": round(float(arrays["ltm_wm_sim_mean"][-1].mean()), 4),
        "ltm_relative_update": [round(float(v), 4) for v in arrays["ltm_update_mean"].mean(-1)],
    }
    if "map_xy" in arrays:
        story = arrays["map_story"]
        for key in ("entity", "slot"):
            labels = arrays[f"map_{key}"]
            purity = compute.label_purity(labels, arrays["map_xy"], groups=story)
            out[f"map_purity_{key}"] = round(purity, 4)
            out[f"map_purity_{key}_chance"] = round(compute.label_purity_chance(labels), 4)
        facts = arrays["map_kind"] != "question"  # states holding a person's fact
        if len(np.unique(arrays["map_entity"][facts])) > 1:
            person = arrays["map_entity"][facts]
            purity = compute.label_purity(person, arrays["map_xy"][facts], groups=story[facts])
            out["map_purity_person"] = round(purity, 4)
            out["map_purity_person_chance"] = round(compute.label_purity_chance(person), 4)
        out["map_purity_story"] = round(compute.label_purity(story, arrays["map_xy"]), 4)
        out["map_purity_story_chance"] = round(compute.label_purity_chance(story), 4)
    return out


def _summary(spec: str, m: dict[str, Any]) -> str:
    text = (
        f"On {m['n_stories']} held-out bAbI-style stories ({', '.join(m['accuracy_by_task'])}), "
        f"{spec} answers {m['accuracy']:.1%} correctly (majority-answer chance "
        f"{m['chance_majority']:.1%}, uniform guessing {m['chance_uniform']:.1%})"
    )
    if "control_accuracy" in m:
        text += f"; the same-size Transformer control answers {m['control_accuracy']:.1%}"
    text += (
        f". At the last step, question tokens draw {m['wm_read_share_question_last_step']:.0%} "
        "of their read from working memory (the rest from long-term memory through the "
        "correction). Supporting facts receive "
        f"{m['support_write_ratio'][-1]:.2f}x the write attention of an average fact at the last "
        f"step, and the most recent fact {m['write_share_last_fact'][-1]:.0%} of the write "
        f"attention on facts (an even spread would give {m['write_share_last_fact_uniform']:.0%})."
    )
    if "map_purity_entity" in m:
        text += (
            " In the map of slot states, neighbours from other stories share the held entity "
            f"(a person, or the question) {m['map_purity_entity']:.0%} of the time (chance "
            f"{m['map_purity_entity_chance']:.0%}) and the slot index {m['map_purity_slot']:.0%} "
            f"(chance {m['map_purity_slot_chance']:.0%})"
        )
        if "map_purity_person" in m:
            text += (
                f"; among slots holding a fact, the person {m['map_purity_person']:.0%} (chance "
                f"{m['map_purity_person_chance']:.0%})"
            )
        text += "."
    if "ablation_accuracy" in m:
        parts = [f"{k}: {v:.1%}" for k, v in m["ablation_accuracy"].items()]
        text += " Accuracy with a read path zeroed at every step: " + "; ".join(parts)
        unused = [k for k, v in m["ablation_accuracy"].items() if abs(v - m["accuracy"]) < 0.02]
        if unused:
            text += f" (within 2 points of intact for {', '.join(unused)})"
        text += "."
    return text

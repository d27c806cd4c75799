"""``run``: what Vision Mamba's hidden states hold, how long they remember, where the class token
looks, and how the two scan directions share the work."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.vim import compute
from probes.vim.config import Config
from probes.vim.plots import figures
from workbench.capture import hooks
from workbench.data.scenes import SHAPES, Scenes, make_scenes, patch_labels
from workbench.errors import DataError
from workbench.models import LoadedModel, load_model, peek_family
from workbench.models.vim import DIRECTIONS, flush_denormals, selective_scan
from workbench.probe import Findings, run_frame

NAME = "vim"
FAMILIES = ("vim",)
DEFAULT_MODELS = ("zoo:vim-scenes",)
SCAN_PARTS = ("x", "delta", "B", "C", "y")


def rollout_start(config: Config, n_layers: int) -> int:
    """The first rollout layer: ``config.rollout_start``, or 5/8 of the depth for -1."""
    if config.rollout_start == -1:
        return min(n_layers - 1, round(5 * n_layers / 8))
    return config.rollout_start


def check(model: LoadedModel, config: Config) -> None:
    """Refuse settings this model cannot serve before any work, naming the fix."""
    if config.rollout_start >= model.n_layers:
        raise DataError(
            f"rollout_start must be -1 (automatic) or a layer in 0..{model.n_layers - 1}; "
            f"got {config.rollout_start}"
        )
    target_index(model, config.target)
    if config.compare_with:
        family = peek_family(config.compare_with)  # a missing model fails here, with advice
        if family != "vit":
            raise DataError(
                f"compare_with must name a ViT (family vit); {config.compare_with} is a {family} "
                "model. Set compare_with to '' for no comparison."
            )


def target_index(model: LoadedModel, target: str) -> int | None:
    """The class index that attribution explains, or None for each image's top logit."""
    if target == "predicted":
        return None
    labels = model.head_labels or ()
    names = {name: k for k, name in enumerate(labels)}
    if target in names:
        return names[target]
    if target.lstrip("-").isdigit() and 0 <= int(target) < len(labels):
        return int(target)
    known = ", ".join(sorted(names)[:12]) + (", ..." if len(names) > 12 else "")
    raise DataError(
        f"target {target!r} is not 'predicted' nor a class of {model.spec} ({known}; or an "
        f"index 0..{len(labels) - 1})"
    )


def state_matrix(model: LoadedModel, layer: int, direction: str) -> torch.Tensor:
    """A = −exp(A_log) of one layer's scan direction, (E, N), computed as ``VisionMamba.A`` does:
    float32 (float64 in a float64 model)."""
    a_log = model.weight(f"blocks.{layer}.ssm.{direction}.A_log").detach()
    if a_log.dtype not in (torch.float32, torch.float64):
        a_log = a_log.float()
    return -torch.exp(a_log)


@dataclass
class _Accumulator:
    """Running sums over images, filled layer by layer while the model runs."""

    n_layers: int
    length: int
    n_maps: int
    delta_sum: dict = field(default_factory=lambda: defaultdict(float))
    norm_sum: dict = field(default_factory=lambda: defaultdict(float))
    share_sum: dict = field(default_factory=lambda: defaultdict(float))
    images_seen: int = 0
    norm_maps: dict = field(default_factory=dict)
    attention_maps: dict = field(default_factory=dict)


@run_frame(name=NAME, config=Config, families=FAMILIES, figures=figures, check=check)
def run(model: LoadedModel, config: Config, data: Scenes | None) -> Findings:
    """Inspect the hidden states of a Vision Mamba on synthetic scenes (or ``data``)."""
    grid, image_size = model.config.grid_size, model.config.image_size
    scenes = data
    if scenes is None:
        scenes = make_scenes(config.n_images, size=image_size, seed=config.seed)
    elif len(scenes) < config.n_images:
        raise DataError(f"{len(scenes)} scenes given but n_images is {config.n_images}")
    images = scenes.images[: config.n_images]
    start = rollout_start(config, model.n_layers)

    with flush_denormals():
        acc, logits = _statistics(model, images, config)
        pixels = model.encode_images(images[: config.n_maps])["pixel_values"]
        grads = _residual_gradients(model, pixels, config) if config.attribution else None
        change = _ablation(model, images, logits, config) if config.ablation else None

    arrays, metrics = _summarise(model, acc, grads, change, start, config)
    display, objects = _display_images(scenes, config.n_maps, grid, image_size)
    arrays["images"], arrays["object_patches"] = display, objects
    metrics |= _object_metrics(arrays, objects)
    metrics |= _label_metrics(model, scenes, logits, config.n_images)
    if config.compare_with:
        comparison = _compare(config, scenes, image_size, objects)
        arrays |= comparison.pop("arrays")
        metrics |= comparison
    metrics["rollout_start"] = start
    metrics["headline"] = [
        k
        for k in (
            "rollout_object_mass",
            "object_area",
            "forward_share",
            "median_memory_tokens",
            "mean_lookback_tokens",
            "label_accuracy",
            "vit_rollout_object_mass",
            "vit_label_accuracy",
        )
        if k in metrics
    ]
    return Findings(metrics, arrays, _summary(model, metrics))


# -- statistics over the scenes ----------------------------------------------------------------
def _statistics(
    model: LoadedModel, images: np.ndarray, config: Config
) -> tuple[_Accumulator, torch.Tensor]:
    """One pass over the images; each layer's scan inputs are reduced as soon as it has run.

    Returns the accumulated sums and the model's logits for every image.
    """
    L = model.n_patches + 1
    acc = _Accumulator(model.n_layers, L, config.n_maps)
    logits = []
    bar = tqdm(total=len(images), desc="vim states", unit="image")
    for first in range(0, len(images), config.batch_size):
        batch = images[first : first + config.batch_size]
        seen: dict[str, torch.Tensor] = {}
        fns = {}
        for i in range(model.n_layers):
            for d in DIRECTIONS:
                for part in SCAN_PARTS:
                    fns[f"ssm.{i}.{d}.{part}"] = _keep(seen, f"{i}.{d}.{part}")
            fns[f"ssm.{i}.gate"] = _keep(seen, f"{i}.gate")
            fns[f"blocks.{i}.mixer.out"] = _reduce_layer(model, i, seen, acc, first)
        with hooks(model, fns):
            out = model(**model.encode_images(batch))
        logits.append(out.logits.float())
        acc.images_seen += len(batch)
        bar.update(len(batch))
    bar.close()
    return acc, torch.cat(logits)


def _keep(store: dict[str, torch.Tensor], key: str):
    def fn(value: torch.Tensor) -> None:
        store[key] = value.detach()

    return fn


def _reduce_layer(
    model: LoadedModel, layer: int, seen: dict[str, torch.Tensor], acc: _Accumulator, first: int
):
    """A hook on the mixer output: layer ``layer`` has run, so reduce its captured tensors."""
    out_proj = model.weight(f"blocks.{layer}.mixer.W_out").detach().float()
    divide_out = bool(model.config.divide_out)

    def fn(_value: torch.Tensor) -> None:
        parts = {d: {p: seen.pop(f"{layer}.{d}.{p}") for p in SCAN_PARTS} for d in DIRECTIONS}
        gate = seen.pop(f"{layer}.gate").float()
        n = gate.shape[0]
        for d in DIRECTIONS:
            p = parts[d]
            # Back to scan order: the backward branch read the flipped sequence.
            x, delta, B, C = (
                p[k].flip(1) if d == "bwd" else p[k] for k in ("x", "delta", "B", "C")
            )
            A = state_matrix(model, layer, d)
            acc.delta_sum[(layer, d)] = acc.delta_sum[(layer, d)] + delta.float().sum((0, 1))
            _, states = selective_scan(x, delta, A, B, C, return_states=True)
            norms = compute.state_norms(states)
            norms = norms.flip(1) if d == "bwd" else norms
            acc.norm_sum[(layer, d)] = acc.norm_sum[(layer, d)] + norms.sum(0)
            for k in range(n):
                m = first + k
                if m >= acc.n_maps:
                    break
                acc.norm_maps[(m, layer, d)] = norms[k].numpy()
                alpha = compute.hidden_attention(delta[k : k + 1], A, B[k : k + 1], C[k : k + 1])
                attention = compute.channel_mean_abs(alpha)[0]
                if d == "bwd":
                    attention = compute.to_token_order(attention)
                acc.attention_maps[(m, layer, d)] = attention.float().numpy()
        forward, backward = compute.branch_contributions(
            parts["fwd"]["y"].float(),
            parts["bwd"]["y"].float(),
            gate,
            out_proj,
            divide_out,
        )
        share = compute.forward_share(forward, backward)
        acc.share_sum[layer] = acc.share_sum[layer] + share.sum(0)

    return fn


def _residual_gradients(model: LoadedModel, pixels: torch.Tensor, config: Config) -> np.ndarray:
    """d(target logit)/d(residual stream entering each block): (images, layers, L, D).

    Gradients are taken with ``torch.autograd.grad`` on the captured activations, so no
    parameter's ``.grad`` is touched.
    """
    stored: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def fn(value: torch.Tensor) -> None:
            stored[i] = value

        return fn

    names = {f"blocks.{i}.resid_pre": keep(i) for i in range(model.n_layers)}
    fixed = target_index(model, config.target)
    with torch.enable_grad(), hooks(model, names):
        x = pixels.clone().requires_grad_(True)
        logits = model.forward({"pixel_values": x}, grad=True).logits.float()
        index = logits.argmax(-1) if fixed is None else torch.full_like(logits[:, 0], fixed).long()
        target = logits.gather(1, index[:, None]).sum()
        grads = torch.autograd.grad(target, [stored[i] for i in range(model.n_layers)])
    return torch.stack(grads, dim=1).float().numpy()


def _ablation(
    model: LoadedModel, images: np.ndarray, base: torch.Tensor, config: Config
) -> np.ndarray:
    """(layers, 2): mean relative change of the logits when one branch of one layer is zeroed."""
    change = np.zeros((model.n_layers, len(DIRECTIONS)))
    inputs = model.encode_images(images)["pixel_values"]
    jobs = [(i, k, d) for i in range(model.n_layers) for k, d in enumerate(DIRECTIONS)]
    for i, k, d in tqdm(jobs, desc="branch ablation", leave=False):
        outs = []
        with hooks(model, {f"ssm.{i}.{d}.y": torch.zeros_like}):
            for first in range(0, len(images), config.batch_size):
                outs.append(model(pixel_values=inputs[first : first + config.batch_size]).logits)
        ablated = torch.cat(outs).float()
        moved = (ablated - base).norm(dim=-1) / base.norm(dim=-1).clamp_min(1e-12)
        change[i, k] = float(moved.mean())
    return change


def _compare(config: Config, scenes: Scenes, image_size: int, objects: np.ndarray) -> dict:
    """The ViT's CLS rollout on the map scenes and its accuracy on all scenes, if sizes match."""
    from probes.vim.compare import scene_label_accuracy, vit_rollout_maps

    vit = load_model(config.compare_with)
    if vit.image_size != image_size or vit.n_patches != objects.shape[1]:
        return {
            "arrays": {},
            "comparison": f"skipped: {config.compare_with} reads {vit.image_size}-px images in "
            f"{vit.n_patches} patches, this model {image_size}-px images in {objects.shape[1]}",
        }
    maps = vit_rollout_maps(vit, scenes.images[: config.n_maps], config.batch_size)
    out: dict = {"arrays": {"vit_rollout_map": maps}, "comparison": config.compare_with}
    positive = np.clip(maps, 0, None)
    out["vit_rollout_object_mass"] = round(
        float(((positive * objects).sum(1) / positive.sum(1).clip(1e-12)).mean()), 4
    )
    present = scenes.present()[: config.n_images]
    accuracy = scene_label_accuracy(vit, scenes.images[: config.n_images], present)
    if accuracy is not None:
        out["vit_label_accuracy"] = round(accuracy, 4)
    return out


# -- summaries ---------------------------------------------------------------------------------
def _summarise(
    model: LoadedModel,
    acc: _Accumulator,
    grads: np.ndarray | None,
    change: np.ndarray | None,
    start: int,
    config: Config,
) -> tuple[dict[str, np.ndarray], dict]:
    n_layers, L, cls = model.n_layers, acc.length, int(model.config.cls_index)
    dirs = range(len(DIRECTIONS))
    n = acc.images_seen
    mean_delta = np.stack(
        [[np.asarray(acc.delta_sum[(i, d)]) / (n * L) for d in DIRECTIONS] for i in range(n_layers)]
    )
    A = np.stack([[state_matrix(model, i, d).numpy() for d in DIRECTIONS] for i in range(n_layers)])
    memory = np.stack(
        [[compute.memory_lengths(mean_delta[i, k], A[i, k]) for k in dirs] for i in range(n_layers)]
    )  # (layers, 2, E, N)
    norm_mean = np.stack(
        [[np.asarray(acc.norm_sum[(i, d)]) / n for d in DIRECTIONS] for i in range(n_layers)]
    )
    share_by_position = np.stack([np.asarray(acc.share_sum[i]) / n for i in range(n_layers)])
    attention = np.stack(
        [
            [[acc.attention_maps[(m, i, d)] for d in DIRECTIONS] for i in range(n_layers)]
            for m in range(config.n_maps)
        ]
    )  # (maps, layers, 2, L, L)
    norm_maps = np.stack(
        [
            [[acc.norm_maps[(m, i, d)] for d in DIRECTIONS] for i in range(n_layers)]
            for m in range(config.n_maps)
        ]
    )
    lookback = attention_lookback(attention)  # (layers, 2)
    combined = attention.mean(axis=2)  # both directions, token order: (maps, layers, L, L)
    raw_rows = compute.row_normalise(combined[:, :, cls])  # (maps, layers, L)
    raw = raw_rows[:, start:].mean(axis=1)
    rolled = np.stack([compute.rollout(c, start)[cls] for c in combined])
    arrays = {
        "mean_delta": mean_delta.astype(np.float32),
        "A": A.astype(np.float32),
        "memory_tokens": memory.astype(np.float32),
        "state_norm": norm_mean.astype(np.float32),
        "state_norm_maps": norm_maps.astype(np.float32),
        "forward_share_by_position": share_by_position.astype(np.float32),
        "forward_share": share_by_position.mean(axis=1).astype(np.float32),
        "layer_names": np.array([f"layer {i}" for i in range(n_layers)]),
        "attention": attention.astype(np.float32),
        "lookback_tokens": lookback.astype(np.float32),
        "raw_layer_rows": raw_rows.astype(np.float32),
        "raw_map": compute.patch_scores(raw, cls).astype(np.float32),
        "rollout_map": compute.patch_scores(rolled, cls).astype(np.float32),
    }
    if grads is not None:
        attributed = np.stack(
            [compute.attribution(c, g, start)[cls] for c, g in zip(combined, grads, strict=True)]
        )
        arrays["attribution_map"] = compute.patch_scores(attributed, cls).astype(np.float32)
    if change is not None:
        arrays["ablation_logit_change"] = change.astype(np.float32)
    slowest = memory.max(axis=-1)  # per channel: its slowest state
    metrics = {
        "forward_share": round(float(share_by_position.mean()), 4),
        "forward_share_by_layer": [round(float(v), 4) for v in share_by_position.mean(axis=1)],
        "median_memory_tokens": round(float(np.median(memory)), 3),
        "median_channel_memory_tokens": round(float(np.median(slowest)), 3),
        "mean_lookback_tokens": round(float(lookback.mean()), 3),
        "uniform_lookback_tokens": round(uniform_lookback(L), 3),
        "sequence_length": L,
        "cls_index": cls,
        "n_images": n,
        "n_maps": config.n_maps,
    }
    if change is not None:
        i, k = np.unravel_index(int(change.argmax()), change.shape)
        metrics["largest_ablation"] = {
            "layer": int(i),
            "direction": DIRECTIONS[k],
            "logit_change": round(float(change[i, k]), 4),
        }
    return arrays, metrics


def attention_lookback(attention: np.ndarray) -> np.ndarray:
    """(maps, layers, 2, L, L) -> (layers, 2): mean attention-weighted distance |i − j|."""
    maps, layers, dirs = attention.shape[:3]
    reach = np.zeros((layers, dirs))
    for i in range(layers):
        for k in range(dirs):
            reach[i, k] = np.mean([compute.lookback(attention[m, i, k]) for m in range(maps)])
    return reach


def uniform_lookback(length: int) -> float:
    """The same distance for uniform attention over every token a direction can read."""
    attention = np.tril(np.ones((length, length)))
    return compute.lookback(compute.row_normalise(attention))


def _display_images(
    scenes: Scenes, n_maps: int, grid: int, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Map images at a size that is a whole number of grid cells, and which cells hold objects."""
    cell = image_size // grid
    size = grid * cell
    images = scenes.images[:n_maps]
    classes = scenes.class_ids[:n_maps]
    if size != image_size:
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size))) for im in images])
        nearest = Image.Resampling.NEAREST
        classes = np.stack(
            [
                np.asarray(Image.fromarray(c.astype(np.uint8)).resize((size, size), nearest))
                for c in classes
            ]
        )
    objects = patch_labels(classes, cell) > 0
    return images.astype(np.uint8), objects


def _object_metrics(arrays: dict[str, np.ndarray], objects: np.ndarray) -> dict:
    """How much of each class-token map falls on object patches, against their share of area."""
    out = {"object_area": round(float(objects.mean()), 4)}
    for kind in ("raw", "rollout", "attribution"):
        scores = arrays.get(f"{kind}_map")
        if scores is None:
            continue
        total = np.clip(scores, 0, None).sum(axis=1)
        on_objects = (np.clip(scores, 0, None) * objects).sum(axis=1)
        mass = np.divide(on_objects, total, out=np.zeros_like(total), where=total > 0)
        out[f"{kind}_object_mass"] = round(float(mass.mean()), 4)
    return out


def _label_metrics(model: LoadedModel, scenes: Scenes, logits: torch.Tensor, n: int) -> dict:
    """Accuracy on the scenes when the model's classes are the scene shapes (the zoo model)."""
    names = list(model.head_labels or ())
    if names != list(SHAPES) or model.config.problem_type != "multi_label_classification":
        return {}
    truth = scenes.present()[:n]
    pred = (logits > 0).numpy()
    majority = np.maximum(truth.mean(axis=0), 1 - truth.mean(axis=0))
    return {
        "label_accuracy": round(float((pred == truth).mean()), 4),
        "chance_label_accuracy": round(float(majority.mean()), 4),
    }


def _summary(model: LoadedModel, m: dict) -> str:
    by_layer = m["forward_share_by_layer"]
    text = (
        f"On {model.spec} ({model.n_layers} layers, {m['sequence_length']} tokens, class token at "
        f"{m['cls_index']}), the forward scan carries {m['forward_share']:.0%} of the mixer "
        f"output on average (per layer {min(by_layer):.0%} to {max(by_layer):.0%}); the rest "
        "comes from the backward scan. "
        f"Half of the state modes forget an input within {m['median_memory_tokens']:.1f} tokens "
        f"(e-folding length at the typical step size; the slowest mode of the median channel "
        f"lasts {m['median_channel_memory_tokens']:.1f}), and the hidden attention reaches back "
        f"{m['mean_lookback_tokens']:.1f} tokens on average where uniform attention would reach "
        f"{m['uniform_lookback_tokens']:.1f}."
    )
    if "rollout_object_mass" in m:
        text += (
            f" The class token's rollout map puts {m['rollout_object_mass']:.0%} of its mass on "
            f"object patches, which cover {m['object_area']:.0%} of the image"
        )
        if "attribution_object_mass" in m:
            text += f" (attribution: {m['attribution_object_mass']:.0%})"
        text += "."
    if "largest_ablation" in m:
        a = m["largest_ablation"]
        text += (
            f" Zeroing the {a['direction']} branch of layer {a['layer']} moves the logits most "
            f"({a['logit_change']:.0%} of their norm)."
        )
    if "label_accuracy" in m:
        text += (
            f" On these scenes the model labels {m['label_accuracy']:.0%} of (scene, shape) pairs "
            f"correctly (chance {m['chance_label_accuracy']:.0%})"
        )
        if "vit_label_accuracy" in m:
            text += f"; the side-by-side ViT {m['vit_label_accuracy']:.0%}"
        text += "."
    if "vit_rollout_object_mass" in m:
        text += (
            f" The ViT's CLS rollout puts {m['vit_rollout_object_mass']:.0%} of its mass on "
            "object patches."
        )
    return text

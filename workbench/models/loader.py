"""``load_model``: one loader for hub ids, local folders and embedded ``zoo:`` models.

A model folder is untrusted input: config.json must be a JSON object, model.safetensors must
have a sound header, and a file that transformers cannot build a model from is named in one
line, all before any weights are read where that can be checked cheaply.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.devices import (
    CPU,
    accelerator,
    check_load_options,
    normalise_max_memory,
    resolve_device,
    resolve_dtype,
)
from workbench.errors import FamilyError, ModelNotFoundError, one_line
from workbench.models.loaded import LoadedModel, Site, Weight
from workbench.staging import sweep_stale, temp_dir, temp_prefix

VISION_TYPES = {"vit", "dinov2", "dinov2_with_registers", "clip_vision_model", "clip", "vit_mae"}
CAUSAL_TYPES = {"gpt2", "gpt_neox", "llama", "olmo", "olmo2", "mistral", "qwen2", "qwen3"}
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "electra"}
OWN_FAMILIES = {"vim": "workbench.models.vim", "pmi": "workbench.models.pmi"}
"""Families whose model code lives in the workbench: ``config.json``'s ``model_type`` is the
family name, and the module's ``load(spec, folder, config, dtype=..., device=...)`` loads it."""
CHECKPOINT_FILES = {".pth": "vim", ".pt": "vim"}
"""Single-file checkpoints (a pickled training checkpoint, as Vim releases its weights) and the
family that reads them; that family's ``load`` gets the file as ``folder`` and an empty config."""

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
REVISION = re.compile(r"^[\w.\-/]+$")
"""A hub branch, tag or commit (``step1000``, ``main``, a sha)."""


def family_of(model_type: str) -> str:
    if model_type in OWN_FAMILIES:
        return model_type
    if model_type in VISION_TYPES:
        return "vit"
    if model_type in CAUSAL_TYPES:
        return "causal-lm"
    if model_type in ENCODER_TYPES:
        return "encoder"
    known = sorted(VISION_TYPES | CAUSAL_TYPES | ENCODER_TYPES | set(OWN_FAMILIES))
    raise FamilyError(
        f"model type {model_type!r} is not supported yet; supported types: {', '.join(known)}"
    )


def load_model(
    spec: str | Path,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
    backend: str = "hf",
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (hub id, local folder, or ``zoo:NAME``) in eval mode with named sites.

    ``revision`` picks a branch, tag or commit of a hub model (``revision="step1000"``: the
    Pythia suite's checkpoint after 1000 steps); ``"ID@REVISION"`` says the same in one string,
    which is what the CLI, sweeps and provenance carry. A zoo model's checkpoints are
    ``zoo:NAME@STEP`` (``workbench zoo build NAME --checkpoints K`` makes them).

    ``device="auto"`` takes the accelerator when there is one, else the CPU; ``dtype="auto"``
    takes the checkpoint's own dtype on an accelerator (bfloat16 for OLMo-2) and float32 on the
    CPU. ``device_map="auto"`` (or a dict from module to device, ``"cpu"`` or ``"disk"``) lets
    accelerate split a Hugging Face model across devices and offload what does not fit
    ``max_memory`` to CPU RAM or disk (``offload_folder``, a temporary folder by default); the
    workbench's own families (vim, pmi) take a single device. Every choice is checked before
    any weights are read. ``backend="transformer-lens"`` wraps a causal LM in TransformerLens's
    ``TransformerBridge`` and maps the same site names onto its hook points.
    """
    spec = with_revision(str(spec), revision)
    folder = resolve_spec(spec)
    config = _read_config(folder)
    family = family_of(config.get("model_type", ""))
    _check_files(folder, family)
    check_load_options(
        family,
        device=device,
        dtype=dtype,
        device_map=device_map,
        max_memory=max_memory,
        backend=backend,
        spec=spec,
    )
    main = resolve_device(device) if device_map is None else accelerator() or CPU
    torch_dtype = resolve_dtype(dtype, main, config)
    if family in OWN_FAMILIES:
        module = importlib.import_module(OWN_FAMILIES[family])
        loaded: LoadedModel = module.load(spec, folder, config, dtype=torch_dtype, device=main)
        return loaded
    if device_map is None:
        placement: dict[str, Any] = {"device_map": {"": main}}
    else:
        placement = {
            "device_map": device_map,
            "max_memory": normalise_max_memory(max_memory),
            "offload_folder": str(offload_folder or _temporary_offload_folder()),
        }
    if backend == "transformer-lens":
        loaded = _load_bridge(spec, folder, torch_dtype, placement)
    else:
        loaded = _load_hf(spec, folder, config, family, torch_dtype, attn_implementation, placement)
    if device_map is not None:
        loaded.device_map = _device_map_of(loaded.model, main)
        if offload_folder is None:  # the temporary folder goes when the model does
            weakref.finalize(loaded.model, shutil.rmtree, placement["offload_folder"], True)
    return loaded


def _one_device(placement: dict[str, Any]) -> torch.device | None:
    """The device of a whole-model placement (``{"": device}``), None for a split one."""
    device_map = placement["device_map"]
    if isinstance(device_map, dict) and set(device_map) == {""}:
        return torch.device(device_map[""])
    return None


def _temporary_offload_folder() -> Path:
    sweep_stale(temp_dir())  # offload folders of killed runs
    return Path(tempfile.mkdtemp(prefix=temp_prefix("offload")))


def _device_map_of(model: nn.Module, main: torch.device) -> dict[str, str]:
    """accelerate's map from module to device, ``cpu`` or ``disk`` (all on ``main`` if unsplit)."""
    found = getattr(model, "hf_device_map", None)
    if not found:
        return {"": str(main)}
    return {
        name: f"cuda:{where}" if isinstance(where, int) else str(where)
        for name, where in found.items()
    }


# -- spec resolution ---------------------------------------------------------------------------
def with_revision(spec: str, revision: str | None) -> str:
    """``spec`` with ``revision`` folded in as ``ID@REVISION`` (hub ids only)."""
    if revision is None:
        return spec
    if spec.startswith("zoo:"):
        raise ModelNotFoundError(
            f"revision= picks a hub model's branch; a zoo checkpoint is named by its step: "
            f"{spec}@STEP"
        )
    if "@" in spec or Path(spec).expanduser().exists() or not HUB_ID.match(spec):
        raise ModelNotFoundError(
            f"revision={revision!r} applies to a hub id (owner/name) without @; {spec!r} is not one"
        )
    if not REVISION.match(revision):
        raise ModelNotFoundError(f"{revision!r} is not a branch, tag or commit name")
    return f"{spec}@{revision}"


def resolve_spec(spec: str) -> Path:
    """The local folder that holds ``spec``'s files, downloading from the hub only if allowed.

    ``ID@REVISION`` is a hub model at a branch, tag or commit; ``zoo:NAME@STEP`` a zoo model's
    checkpoint.
    """
    if spec.startswith("zoo:"):
        from workbench.zoo import zoo_path

        return zoo_path(spec.removeprefix("zoo:"))
    path = Path(spec).expanduser()
    base, at, revision = spec.rpartition("@")
    if at and not path.exists() and HUB_ID.match(base) and REVISION.match(revision):
        return _from_hub(base, revision)
    if path.exists():
        if path.is_file() and path.suffix in CHECKPOINT_FILES:
            return path
        if not path.is_dir():
            raise ModelNotFoundError(
                f"{spec} is a file; point load_model at the model's folder (single files are "
                f"read only as {', '.join(CHECKPOINT_FILES)} checkpoints)"
            )
        return path
    if spec.startswith((".", "/", "~")) or not HUB_ID.match(spec):
        raise ModelNotFoundError(
            f"{spec!r} names no known model: it is not a folder, not a hub id (owner/name), and "
            "not an embedded model (zoo:NAME; `workbench zoo list` shows them)"
        )
    return _from_hub(spec)


def _from_hub(repo_id: str, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.bin"]
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=patterns, local_files_only=offline
            )
        )
    except Exception:  # every hub failure gets the same advice
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        name = repo_id.split("/")[-1] + (f"-{revision.replace('/', '-')}" if revision else "")
        at = f" --revision {revision}" if revision else ""
        what = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
        raise ModelNotFoundError(
            f"{what} is not in the local Hugging Face cache and {why}.\n"
            f"Load it from a local folder instead: on a machine with network access run\n"
            f"    hf download {repo_id}{at} --local-dir ./models/{name}\n"
            f"copy that folder here and call load_model('./models/{name}') "
            f"(or `--model ./models/...`). Embedded models need no network: `workbench zoo list`."
        ) from None


def _read_config(folder: Path) -> dict[str, Any]:
    if folder.is_file():  # a checkpoint file: its family reads the rest from the weights
        return {"model_type": CHECKPOINT_FILES[folder.suffix]}
    path = folder / "config.json"
    if not path.is_file():
        raise ModelNotFoundError(
            f"{folder} has no config.json; a model folder needs config.json plus weights "
            f"({' or '.join(WEIGHT_FILES[::2])})"
        )
    config = read_json_object(path)
    if not isinstance(config.get("model_type", ""), str):
        raise ModelNotFoundError(
            f"{path}: model_type must be a string, not {type(config['model_type']).__name__}; "
            "restore the model's config.json"
        )
    return config


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is a one-line error naming the file."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, or nested absurdly
        raise ModelNotFoundError(
            f"{path} is not valid JSON ({one_line(err)}); restore the model's {path.name}"
        ) from None
    if not isinstance(value, dict):
        raise ModelNotFoundError(
            f"{path} holds a JSON {type(value).__name__}, not an object; restore the model's "
            f"{path.name}"
        )
    return value


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or foreign ``.safetensors`` file by its header (no weights read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as err:
        raise ModelNotFoundError(
            f"{path} is not a complete safetensors file ({one_line(err)}); it may be truncated "
            "or damaged: restore or download it again"
        ) from None


def _check_files(folder: Path, family: str) -> None:
    if folder.is_file():
        return
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelNotFoundError(
            f"{folder} is missing its weights: expected model.safetensors (or one of "
            f"{', '.join(WEIGHT_FILES[1:])})"
        )
    if (folder / WEIGHT_FILES[0]).is_file():
        check_safetensors(folder / WEIGHT_FILES[0])
    if family in ("causal-lm", "encoder") and not any(
        (folder / f).is_file() for f in TOKENIZER_FILES
    ):
        raise ModelNotFoundError(
            f"{folder} is missing its tokenizer: expected tokenizer.json (or vocab.txt, "
            "vocab.json + merges.txt, tokenizer.model)"
        )


# -- Hugging Face models -----------------------------------------------------------------------
def _load_hf(
    spec: str,
    folder: Path,
    config: dict[str, Any],
    family: str,
    dtype: torch.dtype,
    attn_implementation: str | None,
    placement: dict[str, Any],
) -> LoadedModel:
    import transformers as tf

    model_type = config["model_type"]
    kwargs: dict[str, Any] = {"dtype": dtype, **placement}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    archs = config.get("architectures") or []
    cls: Any
    if family == "causal-lm":
        cls = tf.AutoModelForCausalLM
    elif model_type in ("clip", "clip_vision_model"):
        cls = tf.CLIPVisionModel
    elif model_type == "vit_mae":
        cls = tf.ViTMAEModel
        kwargs["mask_ratio"] = 0.0
    elif any(a.endswith("ForImageClassification") for a in archs):
        cls = tf.AutoModelForImageClassification
    else:
        cls = tf.AutoModel
    try:
        with _quiet_load_report():
            model, info = cls.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, **kwargs
            )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as err:
        split = _one_device(placement) is None
        raise ModelNotFoundError(
            f"{folder}: transformers cannot build a {model_type} model from these files "
            f"({type(err).__name__}: {one_line(err)}); check config.json and the weights"
            + (", and that device_map places every module" if split else "")
        ) from None
    model.eval()

    blocks_path, blocks = _find_blocks(model)
    sites = _block_sites(blocks_path, blocks)
    weights = _block_weights(blocks_path, blocks)
    sites.update(_weight_sites(weights))
    cfg = model.config
    loaded = LoadedModel(
        spec=spec,
        family=family,
        model=model,
        processor=None,
        sites=sites,
        n_layers=len(blocks),
        d_model=int(getattr(cfg, "hidden_size", None) or cfg.n_embd),
        model_type=model_type,
        source=folder,
        weights=weights,
        head_labels=_head_labels(model),
        load_report=_load_report(spec, info),
    )
    if family == "vit":
        _add_vision_info(loaded, folder, cfg)
    else:
        loaded.processor = _load_tokenizer(folder)
    return loaded


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Drop transformers' table of unused and newly initialised weights (``_load_report`` says
    the same in one line); its other messages pass."""

    def not_the_table(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(not_the_table)
    try:
        yield
    finally:
        logger.removeFilter(not_the_table)


def _load_report(spec: str, info: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Checkpoint weights the model did not use and model weights the checkpoint lacked (newly
    initialised at random), announced in one line; the lists stay on ``model.load_report``."""
    report = {
        "unused": tuple(sorted(info.get("unexpected_keys") or ())),
        "initialised": tuple(sorted(info.get("missing_keys") or ())),
    }
    parts = [
        f"{len(names)} {label} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})"
        for label, names in (
            ("checkpoint weights unused", report["unused"]),
            ("weights newly initialised", report["initialised"]),
        )
        if names
    ]
    if parts:
        print(f"{spec}: {'; '.join(parts)}. All of them: model.load_report", file=sys.stderr)
    return report


def _head_labels(model: nn.Module) -> tuple[str, ...] | None:
    """Class names of a classification head (``...ForImageClassification``), else None."""
    config: Any = getattr(model, "config", None)
    if not hasattr(model, "classifier") or config is None:
        return None
    return tuple(str(config.id2label.get(k, k)) for k in range(config.num_labels))


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the one whose length is the number of layers."""
    cfg = model.config
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and n_layers:
            return name, module
    raise FamilyError(f"could not find the {n_layers} transformer blocks of {type(model).__name__}")


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _block_sites(blocks_path: str, blocks: nn.ModuleList) -> dict[str, Site]:
    """Map the standard site names onto one family's module layout."""
    block = blocks[0]
    attn = next(p for p in ("attention.self", "self_attn", "attention", "attn") if _has(block, p))
    bert_style = attn == "attention.self"
    sites: dict[str, Site] = {}
    for i in range(len(blocks)):
        b = f"{blocks_path}.{i}"
        entries = [
            Site(f"blocks.{i}.resid_pre", b, "input"),
            Site(f"blocks.{i}.resid_post", b, "output", 0),
            Site(f"blocks.{i}.attn.pattern", f"{b}.{attn}", "output", 1, True),
        ]
        if bert_style:
            entries += [
                Site(f"blocks.{i}.attn.out", f"{b}.attention.output.dense", "output"),
                Site(f"blocks.{i}.mlp.in", f"{b}.intermediate", "input"),
                Site(f"blocks.{i}.mlp.out", f"{b}.output.dense", "output"),
            ]
        else:
            entries += [
                Site(f"blocks.{i}.attn.out", f"{b}.{attn}", "output", 0),
                Site(f"blocks.{i}.mlp.in", f"{b}.mlp", "input"),
                Site(f"blocks.{i}.mlp.out", f"{b}.mlp", "output"),
            ]
        sites.update({s.name: s for s in entries})
    return sites


# Where each family keeps its block matrices, relative to a block: (role, path, layout).
# "conv1d" is GPT-2's transposed layout; "qkv" is a fused Q/K/V projection.
_WEIGHT_PATHS = (
    ("attn.W_Q", ("attention.q_proj", "self_attn.q_proj", "attention.self.query"), "linear"),
    ("attn.W_K", ("attention.k_proj", "self_attn.k_proj", "attention.self.key"), "linear"),
    ("attn.W_V", ("attention.v_proj", "self_attn.v_proj", "attention.self.value"), "linear"),
    ("attn.W_QKV", ("attn.c_attn",), "conv1d-qkv"),
    ("attn.W_QKV", ("attention.query_key_value",), "linear"),
    (
        "attn.W_O",
        ("attention.o_proj", "self_attn.o_proj", "self_attn.out_proj", "attention.output.dense"),
        "linear",
    ),
    ("attn.W_O", ("attention.dense",), "linear"),
    ("attn.W_O", ("attn.c_proj",), "conv1d"),
    ("mlp.W_gate", ("mlp.gate_proj",), "linear"),
    (
        "mlp.W_in",
        ("mlp.fc1", "mlp.up_proj", "mlp.dense_h_to_4h", "intermediate.dense"),
        "linear",
    ),
    ("mlp.W_in", ("mlp.c_fc",), "conv1d"),
    ("mlp.W_out", ("mlp.fc2", "mlp.down_proj", "mlp.dense_4h_to_h", "output.dense"), "linear"),
    ("mlp.W_out", ("mlp.c_proj",), "conv1d"),
)


def _block_weights(blocks_path: str, blocks: nn.ModuleList) -> dict[str, Weight]:
    """Name every block's attention and MLP matrices, whatever the family calls them.

    GPT-2's fused ``c_attn`` is also split into W_Q, W_K, W_V views; GPT-NeoX interleaves heads
    inside its fused projection, so it only has W_QKV.
    """
    block = blocks[0]
    found: dict[str, tuple[str, str]] = {}
    for role, paths, layout in _WEIGHT_PATHS:
        for path in paths:
            if role not in found and _has(block, path):
                found[role] = (path, layout)
    weights: dict[str, Weight] = {}
    for i in range(len(blocks)):
        prefix = f"blocks.{i}"
        for role, (path, layout) in found.items():
            module = f"{blocks_path}.{i}.{path}"
            name = f"{prefix}.{role}"
            weights[name] = Weight(name, module, transposed=layout.startswith("conv1d"))
            if layout == "conv1d-qkv":
                d = int(blocks[i].get_submodule(path).get_parameter("weight").shape[1]) // 3
                for k, part in enumerate(("W_Q", "W_K", "W_V")):
                    sub = f"{prefix}.attn.{part}"
                    weights[sub] = Weight(sub, module, transposed=True, rows=(k * d, (k + 1) * d))
    return weights


def _weight_sites(weights: dict[str, Weight]) -> dict[str, Site]:
    """``NAME.input`` and ``NAME.output`` sites around each whole matrix (for K-FAC and friends)."""
    sites: dict[str, Site] = {}
    for w in weights.values():
        if w.rows is None:
            sites[f"{w.name}.input"] = Site(f"{w.name}.input", w.module, "input")
            sites[f"{w.name}.output"] = Site(f"{w.name}.output", w.module, "output")
    return sites


def _add_vision_info(loaded: LoadedModel, folder: Path, cfg: Any) -> None:
    vcfg = getattr(cfg, "vision_config", cfg)
    image_size = vcfg.image_size
    proc_path = folder / "preprocessor_config.json"
    if proc_path.is_file():
        proc = read_json_object(proc_path)
        loaded.image_mean = tuple(proc.get("image_mean", loaded.image_mean))
        loaded.image_std = tuple(proc.get("image_std", loaded.image_std))
        crop = proc.get("crop_size") if proc.get("do_center_crop") else None
        size = crop or proc.get("size")
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge")
        if isinstance(size, int):
            image_size = size
    loaded.image_size = int(image_size if isinstance(image_size, int) else image_size[0])
    loaded.patch_size = int(vcfg.patch_size)
    loaded.n_prefix_tokens = 1 + int(getattr(vcfg, "num_register_tokens", 0) or 0)
    if loaded.model_type == "vit_mae":
        loaded.extra_forward_kwargs["noise"] = torch.arange(loaded.n_patches, dtype=torch.float)[
            None
        ]


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # the tokenizers library raises plain Exceptions for bad files
        raise ModelNotFoundError(
            f"{folder}: its tokenizer files cannot be read ({type(err).__name__}: "
            f"{one_line(err)}); restore tokenizer.json or the vocabulary files"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


# -- TransformerLens bridge --------------------------------------------------------------------
BRIDGE_HOOKS = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "attn.out": "attn.hook_out",
    "attn.pattern": "attn.hook_pattern",
    "mlp.in": "mlp.hook_in",
    "mlp.out": "mlp.hook_out",
}


def _load_bridge(
    spec: str, folder: Path, dtype: torch.dtype, placement: dict[str, Any]
) -> LoadedModel:
    """A causal LM wrapped in TransformerLens's ``TransformerBridge``, lined up with the HF backend.

    The tokenizer is the folder's own, loaded as for the HF backend, so texts become the same
    ids (the bridge's tokenizer would put a BOS in front of GPT-2-style texts, which the HF
    backend does not). The MLP matrices are named as for the HF backend (the bridge runs the
    original modules), so weight edits and K-FAC work on both; attention matrices are not: the
    bridge keeps split copies of a fused QKV projection beside it, which is also why its
    parameter count exceeds the HF model's by those copies on GPT-2 and GPT-NeoX.
    """
    from transformer_lens.model_bridge import TransformerBridge

    one = _one_device(placement)
    place = {"device": one} if one is not None else placement
    bridge = TransformerBridge.boot_transformers(str(folder), dtype=dtype, **place)
    bridge.eval()
    tokenizer = _load_tokenizer(folder)
    with torch.no_grad():  # the bridge adds hooks of its own on its first forward: do it now
        first = next(bridge.parameters()).device if one is None else one
        bridge(torch.tensor([[tokenizer.eos_token_id or 0]], device=first))
    hook_names = set(bridge.hook_dict)
    n_layers = int(bridge.cfg.n_layers)
    sites: dict[str, Site] = {}
    for i in range(n_layers):
        for kind, hook in BRIDGE_HOOKS.items():
            name = f"blocks.{i}.{hook}"
            if name in hook_names:
                sites[f"blocks.{i}.{kind}"] = Site(f"blocks.{i}.{kind}", name, "output")
    weights = {
        name: w
        for name, w in _block_weights("blocks", bridge.blocks).items()
        if name.split(".")[2] == "mlp"
    }
    sites.update(_weight_sites(weights))
    return LoadedModel(
        spec=spec,
        family="causal-lm",
        model=bridge,
        processor=tokenizer,
        sites=sites,
        n_layers=n_layers,
        d_model=int(bridge.cfg.d_model),
        model_type=_read_config(folder)["model_type"],
        source=folder,
        backend="transformer-lens",
        weights=weights,
    )


def backend_note(model: LoadedModel) -> dict[str, str]:
    """What a result records about the backend it ran on (probes add it to their provenance)."""
    note = {"backend": model.backend}
    if model.backend == "transformer-lens":
        note["backend_note"] = (
            "TransformerLens bridge: the same token ids and MLP weights as the Hugging Face "
            "backend; its parameter count also holds split copies of a fused QKV projection "
            "(GPT-2, GPT-NeoX), which the Hugging Face count does not"
        )
    return note


def peek_family(spec: str | Path) -> str:
    """The family ``spec`` would load as, from its config alone (cheap: no weights read)."""
    folder = resolve_spec(str(spec))
    family = family_of(_read_config(folder).get("model_type", ""))
    _check_files(folder, family)
    return family

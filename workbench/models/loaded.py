"""The loaded model every probe receives: a module plus named sites, never raw module paths."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from workbench.devices import StoredTensor, dtype_name, execution_device, stored_tensor
from workbench.errors import DataError, DeviceError, SiteError

FAMILIES = ("vit", "causal-lm", "encoder", "vim", "pmi")
"""Families the loader knows: Hugging Face ones, and the workbench's own (``vim``, ``pmi``)."""

SITE_KINDS = ("resid_pre", "resid_post", "attn.out", "attn.pattern", "mlp.in", "mlp.out")


class HookPoint(nn.Identity):
    """An identity module inside the workbench's own models: a named place that capture and
    hooks can read or replace (a site points at it), with no parameters and no cost unhooked."""


@dataclass(frozen=True)
class Site:
    """A hookable place in the model, named like TransformerLens hook points.

    ``read`` says whether the value is the module's input or output; ``index`` picks an element
    when that value is a tuple (attention modules return ``(output, weights)``).
    """

    name: str
    module: str
    read: Literal["input", "output"] = "output"
    index: int | None = None
    needs_eager_attention: bool = False

    def extract(self, args: tuple, kwargs: dict, output: Any) -> torch.Tensor:
        """The tensor this site denotes, given a forward hook's arguments."""
        if self.read == "output":
            value = output
        else:
            value = args[0] if args else kwargs.get("hidden_states")
        if isinstance(value, tuple | list):
            value = value[self.index or 0]
        if not isinstance(value, torch.Tensor):
            raise SiteError(
                f"site {self.name!r} produced {type(value).__name__}, not a tensor; for attention "
                "patterns the model must run with eager attention"
            )
        return value


@dataclass(frozen=True)
class Weight:
    """A weight matrix of a block, named like TransformerLens (``blocks.3.mlp.W_in``).

    ``module`` holds it; ``transposed`` marks GPT-2's Conv1D, which stores (in, out) instead of
    nn.Linear's (out, in); ``rows`` picks this matrix's output features out of a fused
    projection (GPT-2's ``c_attn`` holds Q, K and V side by side).
    """

    name: str
    module: str
    transposed: bool = False
    rows: tuple[int, int] | None = None
    param: str = "weight"
    """The module's attribute holding it: ``weight`` for matrices, or another parameter (Vim's
    ``A_log`` and ``D``)."""


@dataclass(eq=False)
class LoadedModel:
    """A model in eval mode with its family, pre-processor and named sites.

    Printing it shows everything a probe relies on: family, sizes, and the site names.
    """

    spec: str
    family: str
    model: nn.Module
    processor: Any
    sites: dict[str, Site]
    n_layers: int
    d_model: int
    model_type: str
    source: Path | None = None
    backend: str = "hf"
    image_size: int | None = None
    patch_size: int | None = None
    grid_size: int | None = None
    """Patches per side when patches overlap (stride below the patch width); else None."""
    n_prefix_tokens: int = 0
    class_token_index: int | None = None
    """Token index of a class token placed among the patches (Vim's middle one); None when the
    class token and registers come first (``n_prefix_tokens`` of them)."""
    patch_window: int | None = None
    """A patch's width in pixels when patches overlap (``patch_size`` is then the stride)."""
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    extra_forward_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Weight] = field(default_factory=dict)
    head_labels: tuple[str, ...] | None = None
    """Names of the classification head's outputs, in order; None when there is no head."""
    device_map: dict[str, str] | None = None
    """accelerate's map from module to device, ``cpu`` or ``disk`` when the model was loaded with
    a ``device_map``; None when it sits whole on ``device``."""
    load_report: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    """Checkpoint weights the model did not use (``unused``) and model weights the checkpoint did
    not hold, so initialised at random (``initialised``)."""
    _digest: str | None = field(default=None, repr=False)

    # -- sites ---------------------------------------------------------------------------------
    def site(self, name: str) -> Site:
        try:
            return self.sites[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.sites), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise SiteError(
                f"{self.spec} has no site {name!r}.{hint} "
                f"Sites look like blocks.0.resid_post; list them with model.site_names()."
            ) from None

    def site_names(self, pattern: str | None = None) -> list[str]:
        """Site names, optionally filtered by a regular expression (``r"resid_post$"``)."""
        names = list(self.sites)
        if pattern is not None:
            names = [n for n in names if re.search(pattern, n)]
        return names

    def layer_sites(self, kind: str = "resid_post") -> list[str]:
        """One site per block, in depth order: ``blocks.{i}.{kind}``."""
        if kind not in SITE_KINDS:
            raise SiteError(f"unknown site kind {kind!r}; choose one of {', '.join(SITE_KINDS)}")
        return [f"blocks.{i}.{kind}" for i in range(self.n_layers)]

    # -- weights -------------------------------------------------------------------------------
    def weight(self, name: str) -> torch.Tensor:
        """The (out, in) matrix ``name`` as a view of the parameter: edits write through.

        A weight that accelerate keeps offloaded (CPU RAM or disk, with a meta placeholder in
        the module) is read from where it is stored, on the device its module runs on; writing
        to that copy changes nothing, so change weights with ``workbench.edited``.
        """
        return self.weight_view(name, self.stored(name).read())

    def weight_view(self, name: str, whole: torch.Tensor) -> torch.Tensor:
        """Matrix ``name`` (out, in) inside ``whole``, a tensor shaped like its parameter."""
        self._check_weight(name)
        w = self.weights[name]
        matrix = whole.T if w.transposed else whole
        if w.rows is not None:
            matrix = matrix[w.rows[0] : w.rows[1]]
        return matrix

    def parameter(self, name: str) -> nn.Parameter:
        """The whole parameter holding weight ``name`` (a fused QKV matrix holds three names):
        what ``requires_grad`` works on. A meta placeholder when accelerate offloads it."""
        self._check_weight(name)
        w = self.weights[name]
        return getattr(self.model.get_submodule(w.module), w.param)

    def stored(self, name: str) -> StoredTensor:
        """Where the parameter holding weight ``name`` keeps its values (in the module, or in
        accelerate's offload map): what an exact save and restore works on."""
        self._check_weight(name)
        w = self.weights[name]
        return stored_tensor(self.model, w.module, w.param)

    def bias(self, name: str) -> torch.Tensor | None:
        """The bias added after matrix ``name`` (its rows of a fused one), or None."""
        self._check_weight(name)
        w = self.weights[name]
        if w.param != "weight" or getattr(self.model.get_submodule(w.module), "bias", None) is None:
            return None
        bias = stored_tensor(self.model, w.module, "bias").read()
        return bias if w.rows is None else bias[w.rows[0] : w.rows[1]]

    def _check_weight(self, name: str) -> None:
        """Raise SiteError naming close matches when ``name`` is not a weight of this model."""
        if name not in self.weights:
            close = difflib.get_close_matches(name, list(self.weights), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise SiteError(
                f"{self.spec} has no weight {name!r}.{hint} Weights look like "
                "blocks.0.mlp.W_in; list them with model.weight_names()."
            )

    def weight_names(self, pattern: str | None = None) -> list[str]:
        """Weight names, optionally filtered by a regular expression (``r"mlp\\.W_"``)."""
        names = list(self.weights)
        if pattern is not None:
            names = [n for n in names if re.search(pattern, n)]
        return names

    # -- inputs --------------------------------------------------------------------------------
    @property
    def is_vision(self) -> bool:
        return self.image_size is not None

    @property
    def n_patches(self) -> int:
        if self.image_size is None or not self.patch_size:
            raise DataError(f"{self.spec} is a {self.family} model and has no image patches")
        return (self.grid_size or self.image_size // self.patch_size) ** 2

    def patch_token_positions(self) -> torch.Tensor:
        """Token indices of the patches in row-major patch order: the prefix tokens (class token,
        registers) or Vim's middle class token left out. What probes read patch features at."""
        n = self.n_patches
        if self.class_token_index is None:
            return torch.arange(self.n_prefix_tokens, self.n_prefix_tokens + n)
        k = self.class_token_index
        return torch.cat([torch.arange(k), torch.arange(k + 1, n + 1)])

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, ...) -> (batch, patches, ...) in row-major patch order."""
        return tokens[:, self.patch_token_positions().to(tokens.device)]

    def encode_images(self, images: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 images (N, H, W, 3) at the model's own size -> normalised ``pixel_values``.

        No resizing happens here, so that per-pixel masks stay aligned with the patches: render or
        resize images (and masks) to ``model.image_size`` first.
        """
        if not self.is_vision:
            raise DataError(f"{self.spec} is a {self.family} model; it takes text, not images")
        arr = torch.as_tensor(np.asarray(images))
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise DataError(f"images must have shape (N, H, W, 3); got {tuple(arr.shape)}")
        if arr.shape[1] != self.image_size or arr.shape[2] != self.image_size:
            raise DataError(
                f"images are {arr.shape[1]}x{arr.shape[2]} but {self.spec} expects "
                f"{self.image_size}x{self.image_size}; render or resize them (and their masks) "
                f"to {self.image_size} px first"
            )
        x = arr.permute(0, 3, 1, 2).float()
        if arr.dtype == torch.uint8:
            x = x / 255.0
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return {"pixel_values": (x - mean) / std}

    def encode_texts(
        self, texts: list[str], *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenise all texts together so every batch shares one padded length.

        Warns when more than 5% of a text's tokens are unknown to the tokenizer (the model sees
        them all as one unknown token); special tokens never count as unknown.
        """
        from workbench.data.corpus import UNKNOWN_WARNING_SHARE, unknown_share

        if self.is_vision or self.processor is None:
            raise DataError(f"{self.spec} is a {self.family} model; it takes images, not text")
        if not texts:
            raise DataError("no texts given")
        enc = self.processor(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_special_tokens_mask=True,
        )
        real = enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()
        shares = [
            unknown_share(self.processor, text, ids[keep].tolist())
            for text, ids, keep in zip(texts, enc["input_ids"], real, strict=True)
        ]
        worst = max(shares)
        if worst > UNKNOWN_WARNING_SHARE:
            flagged = sum(share > UNKNOWN_WARNING_SHARE for share in shares)
            warnings.warn(
                f"{flagged} of {len(texts)} text(s) have more than {UNKNOWN_WARNING_SHARE:.0%} of "
                f"their tokens unknown to {self.spec}'s tokenizer (up to {worst:.0%}, e.g. "
                f"{texts[shares.index(worst)][:60]!r}); the model reads each unknown word as "
                f"{self.processor.unk_token!r}. Use words the model knows.",
                stacklevel=2,
            )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments for one forward pass, with family-specific extras.

        Hugging Face causal LMs would build a key/value cache on every pass; a probe's single
        pass never reads it, so it is switched off unless the batch asks for it.
        """
        kwargs: dict[str, Any] = dict(batch)
        if self.backend == "hf" and self.family == "causal-lm":
            kwargs.setdefault("use_cache", False)
        if "noise" in self.extra_forward_kwargs:
            # ViTMAE: increasing noise keeps the patch order with masking off.
            pixels = batch["pixel_values"]
            noise = self.extra_forward_kwargs["noise"].to(pixels.device)
            kwargs["noise"] = noise.expand(pixels.shape[0], -1)
        return kwargs

    def __call__(self, **batch: torch.Tensor) -> Any:
        """One forward pass without gradients, called the way this backend expects."""
        return self.forward(batch)

    def forward(self, batch: Mapping[str, torch.Tensor], *, grad: bool = False) -> Any:
        """One forward pass, with gradients when ``grad`` (for attributions, fits, K-FAC).

        Inputs move to ``self.device`` first, so callers may keep their batches on the CPU.
        """
        device = self.device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.set_grad_enabled(grad):
            if self.backend == "transformer-lens":
                return self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"))
            return self.model(**self.forward_kwargs(dict(batch)))

    # -- facts probes need ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embedding (the first parameter otherwise).

        A model split across devices takes its inputs where its first layer runs (also when
        accelerate offloads that layer's weights); probes put the tensors they fit (probe
        weights, factors) here too.
        """
        embeddings = getattr(self.model, "get_input_embeddings", None)
        module = embeddings() if callable(embeddings) else None
        for source in (module, self.model):
            if source is None:
                continue
            placed = execution_device(source)
            if placed is not None:
                return placed
            for tensor in (*source.parameters(), *source.buffers()):
                if tensor.device.type != "meta":
                    return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype most of the parameters are in (what captures come back in by default)."""
        counts: dict[torch.dtype, int] = {}
        for p in self.model.parameters():
            if p.is_floating_point():
                counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
        return max(counts, key=counts.__getitem__) if counts else torch.float32

    def placement(self) -> dict[str, Any]:
        """Device, dtype, device map and backend: how this model was placed, for provenance."""
        return {
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "device_map": dict(self.device_map) if self.device_map is not None else None,
            "backend": self.backend,
        }

    @property
    def config(self) -> Any:
        """The model's configuration object (read it; changing it changes nothing reliably)."""
        if self.backend == "transformer-lens":
            return self.model.cfg
        return getattr(self.model, "config", None)

    @property
    def context_length(self) -> int | None:
        """How many positions the model reads (its position table), if it says."""
        cfg = self.config
        if self.backend == "transformer-lens":
            return int(cfg.n_ctx)
        for key in ("n_positions", "max_position_embeddings"):
            value = getattr(cfg, key, None)
            if value:
                return int(value)
        return None

    @property
    def n_heads(self) -> int | None:
        """Attention heads per block, or None for models without attention (Vim)."""
        cfg = self.config
        cfg = getattr(cfg, "vision_config", cfg)
        for key in ("num_attention_heads", "n_head", "n_heads"):
            value = getattr(cfg, key, None)
            if value:
                return int(value)
        return None

    def random_init_copy(self, seed: int = 0) -> LoadedModel:
        """The same architecture with fresh random weights: the floor for "is this learned?"."""
        if self.backend != "hf":
            raise SiteError("random_init_copy needs the Hugging Face backend")
        if self.device_map is not None and set(self.device_map.values()) != {str(self.device)}:
            places = ", ".join(sorted(set(self.device_map.values())))
            raise DeviceError(
                f"{self.spec} is split across {places}; a random copy would need the same room "
                "again: load the model on one device for probes that compare with one"
            )
        torch.manual_seed(seed)
        fresh = type(self.model)(self.model.config).to(self.device, self.dtype).eval()
        return dataclasses.replace(
            self,
            spec=f"{self.spec} (random init, seed {seed})",
            model=fresh,
            device_map=None,
            load_report={},
            _digest=None,
        )

    # -- provenance ----------------------------------------------------------------------------
    def digest(self) -> str:
        """sha256 over parameter and buffer names, dtypes, shapes and bytes (cached)."""
        if self._digest is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                if tensor.device.type == "meta":  # offloaded by accelerate: read where stored
                    module, _, attr = name.rpartition(".")
                    tensor = stored_tensor(self.model, module, attr).read()
                t = tensor.detach().cpu().contiguous()
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._digest = "sha256:" + h.hexdigest()
        return self._digest

    def __repr__(self) -> str:
        weight_sites = {f"{w}.{end}" for w in self.weights for end in ("input", "output")}
        activations = [n for n in self.sites if n not in weight_sites]
        kinds = sorted({n.split(".", 2)[2] for n in activations if n.startswith("blocks.")})
        lines = [
            f"LoadedModel({self.spec!r})",
            f"  family      {self.family} ({self.model_type}, backend {self.backend})",
            f"  size        {self.n_layers} blocks x d={self.d_model}, "
            f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters",
        ]
        if self.is_vision:
            lines.append(
                f"  input       {self.image_size}px images, {self.n_patches} patches "
                f"({'stride' if self.grid_size else 'size'} {self.patch_size}px), "
                f"{self.n_prefix_tokens} prefix token(s)"
            )
        lines += self._placement_lines()
        lines.append(f"  sites       blocks.{{0..{self.n_layers - 1}}}.{{{', '.join(kinds)}}}")
        roles = sorted({n.split(".", 2)[2] for n in self.weights})
        if roles:
            lines.append(
                f"  weights     blocks.{{0..{self.n_layers - 1}}}.{{{', '.join(roles)}}} "
                "(each also a site NAME.input / NAME.output)"
            )
        others = [n for n in activations if not n.startswith("blocks.")]
        if others:
            lines.append(f"              {_summarise_sites(others)}")
        if self.source is not None:
            lines.append(f"  source      {self.source}")
        return "\n".join(lines)

    def _placement_lines(self) -> list[str]:
        """Where each block lives and its dtype, runs of alike blocks merged."""
        split = " (split by a device map)" if self.device_map is not None else ""
        lines = [f"  placement   inputs go to {self.device}{split}"]
        homes = _homes(self.model)
        blocks: list[tuple[str, str]] = []
        claimed: set[int] = set()
        for i in range(self.n_layers):
            path = self._block_path(i)
            if path is None:  # blocks without weights of their own (PMI's hook points)
                return [f"{lines[0]}; weights {', '.join(_describe_homes(homes.values()))}"]
            inside = {id(p) for p in self.model.get_submodule(path).parameters()}
            claimed |= inside
            blocks.append(_describe_homes([homes[k] for k in inside if k in homes]))
        start = 0
        for i in range(1, len(blocks) + 1):
            if i == len(blocks) or blocks[i] != blocks[start]:
                span = f"block {start}" if i - 1 == start else f"blocks {start}-{i - 1}"
                lines.append(f"              {span:<14} {', '.join(blocks[start])}")
                start = i
        rest = [h for k, h in homes.items() if k not in claimed]
        if rest:
            lines.append(f"              {'the rest':<14} {', '.join(_describe_homes(rest))}")
        return lines

    def _block_path(self, i: int) -> str | None:
        """The module path of block ``i`` (the module holding its weights), if it has one."""
        site = self.sites.get(f"blocks.{i}.resid_pre")
        if site is None:
            return None
        path = site.module
        while path:
            if any(True for _ in self.model.get_submodule(path).parameters()):
                return path
            path = path.rpartition(".")[0]  # a hook point inside the block: its parent
        return None


def _homes(model: nn.Module) -> dict[int, tuple[str, torch.dtype]]:
    """Every parameter's home (device, ``cpu-offload`` or ``disk``) and dtype, by its id (a
    wrapper such as TransformerLens's bridge reaches one parameter by several names)."""
    out = {}
    for name, param in model.named_parameters():
        module, _, attr = name.rpartition(".")
        stored = stored_tensor(model, module, attr)
        out[id(param)] = (stored.home, stored.dtype)
    return out


def _describe_homes(homes: Any) -> tuple[str, str]:
    """(``cpu`` or ``cpu + disk``, ``float32``) for a group of parameters."""
    places = sorted({h for h, _ in homes})
    dtypes = sorted({dtype_name(d) for _, d in homes})
    return " + ".join(places) or "no weights", "/".join(dtypes) or "-"


def _summarise_sites(names: list[str]) -> str:
    """``steps.{0..3}.{gate, wm}`` for names that differ only in one index, else the names."""
    groups: dict[str, list[str]] = {}
    for name in names:
        pattern = re.sub(r"\.\d+\.", ".{i}.", name, count=1)
        groups.setdefault(pattern, []).append(name)
    parts = []
    by_prefix: dict[str, set[str]] = {}
    indices: dict[str, set[int]] = {}
    for pattern, members in groups.items():
        if ".{i}." not in pattern:
            parts.append(pattern)
            continue
        prefix, rest = pattern.split(".{i}.", 1)
        by_prefix.setdefault(prefix, set()).add(rest)
        for m in members:
            indices.setdefault(prefix, set()).add(int(m[len(prefix) + 1 :].split(".", 1)[0]))
    for prefix, rests in by_prefix.items():
        idx = sorted(indices[prefix])
        span = f"{idx[0]}..{idx[-1]}" if len(idx) > 1 else str(idx[0])
        parts.append(f"{prefix}.{{{span}}}.{{{', '.join(sorted(rests))}}}")
    return ", ".join(parts)

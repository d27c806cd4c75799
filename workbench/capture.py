"""Activation capture and interventions over named sites.

``hooks`` is the one way to touch a running model: it attaches functions to named sites and
removes every hook on exit, also when the forward raises. ``capture`` is built on it and
copies each site's value batch by batch into preallocated CPU buffers, which live on disk
(memory-mapped ``.npy`` files) when they would not fit the memory budget. Both work the same on
a model split across devices or partly offloaded by accelerate: a site's value is wherever its
block ran, and copies from an accelerator go through page-locked memory without blocking.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.devices import host_buffer, release_offloaded, synchronize
from workbench.errors import DataError
from workbench.models.loaded import LoadedModel
from workbench.staging import sweep_stale, temp_dir, temp_prefix

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]
Inputs = Mapping[str, torch.Tensor] | np.ndarray | torch.Tensor | Sequence[str]


# -- interventions -----------------------------------------------------------------------------
@contextmanager
def hooks(model: LoadedModel, fns: Mapping[str, SiteFn]) -> Iterator[None]:
    """Call ``fn(value)`` at each named site during forwards inside the block.

    A function that returns a tensor replaces the site's value (for patching and steering); one
    that returns None only observes. Attention-pattern sites switch the model to eager attention
    for the duration, and the previous implementation is restored on exit.
    """
    sites = [model.site(name) for name in fns]
    handles = []
    restore_attn = (
        _use_eager_attention(model) if any(s.needs_eager_attention for s in sites) else None
    )
    try:
        for site in sites:
            module = model.model.get_submodule(site.module)
            fn = fns[site.name]
            if site.read == "output":
                handles.append(
                    module.register_forward_hook(_output_hook(site, fn), with_kwargs=True)
                )
            else:
                handles.append(
                    module.register_forward_pre_hook(_input_hook(site, fn), with_kwargs=True)
                )
        yield
    except BaseException:
        release_offloaded(model.model)  # a forward that raised midway left weights moved in
        raise
    finally:
        for handle in handles:
            handle.remove()
        if restore_attn is not None:
            restore_attn()


def _output_hook(site: Any, fn: SiteFn) -> Callable:
    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        new = fn(site.extract(args, kwargs, output))
        if new is None:
            return None
        if isinstance(output, tuple):
            return (*output[: site.index or 0], new, *output[(site.index or 0) + 1 :])
        return new

    return hook


def _input_hook(site: Any, fn: SiteFn) -> Callable:
    def hook(module: Any, args: tuple, kwargs: dict) -> Any:
        new = fn(site.extract(args, kwargs, None))
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    return hook


def _use_eager_attention(model: LoadedModel) -> Callable[[], None] | None:
    """Switch to eager attention (the only kind that returns weights); return the undo."""
    config = getattr(model.model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if config is None or previous in (None, "eager") or model.backend != "hf":
        return None
    hf_model: Any = model.model  # a transformers PreTrainedModel
    hf_model.set_attn_implementation("eager")
    return lambda: hf_model.set_attn_implementation(previous)


# -- capture -----------------------------------------------------------------------------------
@dataclass(eq=False)
class ActivationCache(Mapping[str, torch.Tensor]):
    """Captured activations by site name, each a tensor with the inputs on dim 0.

    On the CPU unless captured with ``keep_on_device``. ``attention_mask`` (text models) marks
    real tokens; ``spill_dir`` is set when some tensors are memory-mapped files rather than RAM
    (bfloat16 ones hold their raw 16-bit patterns there: numpy has no bfloat16).
    """

    activations: dict[str, torch.Tensor]
    attention_mask: torch.Tensor | None = None
    spill_dir: Path | None = None
    _cleanup: Any = field(default=None, repr=False)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.activations[name]
        except KeyError:
            raise KeyError(f"{name!r} was not captured; captured: {', '.join(self)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.activations)

    def __len__(self) -> int:
        return len(self.activations)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.activations.values())

    def close(self) -> None:
        """Drop the tensors and delete spill files now instead of at garbage collection."""
        self.activations = {}
        if self._cleanup is not None:
            self._cleanup()

    def __repr__(self) -> str:
        where = f"memory-mapped in {self.spill_dir}" if self.spill_dir else "in memory"
        lines = [f"ActivationCache({len(self)} sites, {self.nbytes / 2**20:.1f} MiB {where})"]
        for name, t in self.activations.items():
            lines.append(f"  {name:<28} {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}")
        return "\n".join(lines)


def encode_inputs(model: LoadedModel, inputs: Inputs) -> dict[str, torch.Tensor]:
    """Turn images, texts or ready model inputs into a dict of tensors sharing dim 0."""
    if isinstance(inputs, Mapping):
        batch = {k: torch.as_tensor(v) for k, v in inputs.items()}
    elif isinstance(inputs, np.ndarray | torch.Tensor):
        batch = model.encode_images(inputs)
    elif isinstance(inputs, Sequence) and all(isinstance(t, str) for t in inputs):
        if len(inputs) == 0:
            raise DataError("the dataset is empty: no inputs to run the model on")
        batch = model.encode_texts(list(inputs))
    else:
        raise DataError(
            "inputs must be images (N, H, W, 3), a list of strings, or a dict of model tensors; "
            f"got {type(inputs).__name__}"
        )
    sizes = {k: v.shape[0] for k, v in batch.items()}
    if not sizes or min(sizes.values()) == 0:
        raise DataError("the dataset is empty: no inputs to run the model on")
    if len(set(sizes.values())) != 1:
        raise DataError(f"model inputs disagree on the number of examples: {sizes}")
    return batch


def capture(
    model: LoadedModel,
    inputs: Inputs,
    sites: Sequence[str],
    *,
    batch_size: int = 8,
    memory_budget: int = 2 * 2**30,
    spill_dir: str | Path | None = None,
    dtype: torch.dtype | None = None,
    keep_on_device: bool = False,
    check_finite: bool = True,
    progress: bool = True,
) -> ActivationCache:
    """Run ``inputs`` through ``model`` in batches and keep every named site's value.

    Values keep the model's own dtype (bfloat16 for a bfloat16 load) unless ``dtype`` asks for
    another: a probe that needs more precision passes ``dtype=torch.float32``. They come back to
    the CPU, or stay on the device that computed them with ``keep_on_device``.

    Buffers are allocated once from the first batch's shapes. When all of them together would
    exceed ``memory_budget`` bytes (of RAM, or of device memory with ``keep_on_device``) the rest
    are memory-mapped ``.npy`` files in ``spill_dir`` (a temporary folder by default, deleted
    with the cache). A capture that fails removes the files it spilled, also from a
    ``spill_dir`` you gave.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    sites = list(dict.fromkeys(sites))
    if not sites:
        raise ValueError("no sites to capture; e.g. model.layer_sites('resid_post')")
    for name in sites:
        model.site(name)
    batch = encode_inputs(model, inputs)
    n = next(iter(batch.values())).shape[0]

    store = _Store(n, memory_budget, spill_dir, dtype, check_finite, keep_on_device)
    bar = tqdm(total=n, desc=f"capture {len(sites)} sites", unit="input", disable=not progress)
    try:
        with hooks(model, {name: store.recorder(name) for name in sites}), bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                store.window = (start, stop)
                model(**{k: v[start:stop] for k, v in batch.items()})
                store.end_batch()
                missing = [name for name in sites if name not in store.buffers]
                if missing:
                    raise DataError(f"sites {missing} were not reached by the forward pass")
                bar.update(stop - start)
    except BaseException:
        store.discard()
        raise
    cache = ActivationCache(
        {name: store.buffers[name] for name in sites},
        attention_mask=batch.get("attention_mask"),
        spill_dir=store.spill_dir,
    )
    if store.owns_spill_dir and store.spill_dir is not None:
        cache._cleanup = weakref.finalize(cache, shutil.rmtree, store.spill_dir, True)
    return cache


class _Store:
    """Full-size buffers, each allocated when its site is first seen.

    Sites are placed in memory until the running total would pass the memory budget; the rest
    become memory-mapped ``.npy`` files. Each value is copied exactly once; copies from an
    accelerator into page-locked buffers do not block, and ``end_batch`` waits for them.
    """

    def __init__(
        self,
        n: int,
        memory_budget: int,
        spill_dir: str | Path | None,
        dtype: torch.dtype | None,
        check_finite: bool,
        keep_on_device: bool = False,
    ) -> None:
        self.n = n
        self.budget_left = memory_budget
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.owns_spill_dir = spill_dir is None
        self.created_spill_dir = False
        self.spilled: list[Path] = []
        self.dtype = dtype
        self.check_finite = check_finite
        self.keep_on_device = keep_on_device
        self.buffers: dict[str, torch.Tensor] = {}
        self.window = (0, 0)
        self.finite: list[tuple[str, torch.Tensor]] = []
        self.sources: set[torch.device] = set()

    def recorder(self, name: str) -> SiteFn:
        def record(value: torch.Tensor) -> None:
            buf = self.buffers.get(name)
            if buf is None:
                buf = self.buffers[name] = self._allocate(name, value)
            start, stop = self.window
            buf[start:stop].copy_(value.detach(), non_blocking=buf.is_pinned())
            self.sources.add(value.device)
            if self.check_finite and value.is_floating_point():
                self.finite.append((name, torch.isfinite(value.detach().sum())))

        return record

    def end_batch(self) -> None:
        """Wait for this batch's copies; refuse NaN or inf, naming the site and the inputs."""
        synchronize(self.sources)
        checks, self.finite = self.finite, []
        for name, finite in checks:
            if not bool(finite):
                start, stop = self.window
                raise DataError(
                    f"activations at {name} contain NaN or inf for inputs {start}..{stop - 1}; "
                    "check those inputs and the model's dtype (fp16 overflows easily on CPU)"
                )

    def discard(self) -> None:
        """Drop every buffer and delete every file this capture spilled (after a failure)."""
        self.buffers.clear()
        if self.spill_dir is None:
            return
        if self.owns_spill_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            return
        for path in self.spilled:
            path.unlink(missing_ok=True)
        if self.created_spill_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def _allocate(self, name: str, value: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype or value.dtype
        shape = (self.n, *value.shape[1:])
        nbytes = torch.Size(shape).numel() * torch.empty(0, dtype=dtype).element_size()
        if nbytes <= self.budget_left:
            self.budget_left -= nbytes
            if self.keep_on_device:
                return torch.empty(shape, dtype=dtype, device=value.device)
            return host_buffer(shape, dtype, value.device)
        if self.spill_dir is None:
            sweep_stale(temp_dir())  # spill folders of killed captures
            self.spill_dir = Path(tempfile.mkdtemp(prefix=temp_prefix("capture")))
        elif not self.spill_dir.is_dir():
            self.spill_dir.mkdir(parents=True)
            self.created_spill_dir = True
        raw = torch.int16 if dtype == torch.bfloat16 else dtype  # same bytes, a numpy dtype
        np_dtype = torch.empty(0, dtype=raw).numpy().dtype
        path = self.spill_dir / f"{name}.npy"
        self.spilled.append(path)
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=shape)
        return torch.from_numpy(arr).view(dtype)

"""Devices, dtypes and where a model's weights live.

One place turns the user's choices (``device="auto"``, ``dtype="bfloat16"``, ``device_map``,
``max_memory``) into what torch and accelerate take, and checks them before any weights are read.
It also reads and swaps a weight wherever accelerate keeps it: in its module on some device, or
offloaded to CPU RAM or disk, with only a meta-device placeholder in the module and the values in
the module hook's weights map (accelerate moves them in for each forward and drops them after).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.errors import DeviceError, one_line

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
"""The dtypes a model loads in, by name (``auto`` picks one, see ``resolve_dtype``)."""
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
CPU = torch.device("cpu")
BACKENDS = ("hf", "transformer-lens")


# -- choosing a device and a dtype ----------------------------------------------------------------
def accelerator() -> torch.device | None:
    """The accelerator torch sees on this machine (CUDA, MPS, ...), or None."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return None


def resolve_device(device: str | torch.device | int) -> torch.device:
    """``auto`` -> the accelerator if there is one, else the CPU; anything else is checked to exist
    here, so that a missing GPU is one clear line before any weights are read."""
    name = f"cuda:{device}" if isinstance(device, int) else str(device)
    if name == "auto":
        return accelerator() or CPU
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{name!r} is not a device; choose {DEVICE_CHOICES}") from None
    if resolved.type == "cpu":
        return CPU
    if resolved.type == "meta":
        raise DeviceError(f"{name!r} holds no weights; choose {DEVICE_CHOICES}")
    found = accelerator()
    if found is None or found.type != resolved.type:
        seen = f"only {found.type}" if found is not None else "no accelerator"
        raise DeviceError(
            f"device {name!r} is not available here (torch sees {seen}); use device='cpu' or "
            "'auto' (--device cpu / auto)"
        )
    count = torch.accelerator.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise DeviceError(
            f"device {name!r} does not exist: this machine has {count} {resolved.type} "
            f"device(s), {resolved.type}:0 to {resolved.type}:{count - 1}"
        )
    return resolved


def stated_dtype(config: Mapping[str, Any]) -> torch.dtype | None:
    """The dtype a checkpoint's config.json states (``torch_dtype``, or ``dtype`` in newer ones)."""
    for key in ("torch_dtype", "dtype"):
        value = config.get(key)
        if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
            return DTYPES[value.removeprefix("torch.")]
    return None


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device, config: Mapping[str, Any]
) -> torch.dtype:
    """``auto`` -> the checkpoint's own dtype on an accelerator (bfloat16 for OLMo-2), float32 on
    the CPU (where half precision is slow and overflows easily); else the named dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise DeviceError(f"models load in {', '.join(DTYPES)}, not {dtype}")
        return dtype
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return stated_dtype(config) or torch.float32
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- splitting a model across devices -----------------------------------------------------------
def normalise_max_memory(max_memory: Mapping[Any, Any] | None) -> dict[int | str, int | str] | None:
    """accelerate's ``max_memory`` with GPU indices as ints (JSON and the CLI give strings), each
    size checked (bytes, or a string such as ``"10GiB"`` or ``"500MB"``)."""
    if max_memory is None:
        return None
    if not isinstance(max_memory, Mapping) or not max_memory:
        raise DeviceError(
            "max_memory must map devices to sizes, e.g. {'cpu': '8GiB', 0: '20GiB'} "
            "(--max-memory cpu=8GiB --max-memory 0=20GiB)"
        )
    from accelerate.utils import convert_file_size_to_int

    out: dict[int | str, int | str] = {}
    for key, size in max_memory.items():
        name = str(key)
        where: int | str = name
        if name not in ("cpu", "disk"):
            device = resolve_device(int(name) if name.isdigit() else name)
            where = device.type if device.type == "mps" else (device.index or 0)
        try:
            if isinstance(size, bool) or convert_file_size_to_int(size) <= 0:
                raise ValueError(size)
        except (ValueError, TypeError) as err:
            raise DeviceError(
                f"max_memory[{key!r}] = {size!r} is not a size; give bytes or a string such as "
                f"'8GiB' or '500MB' ({one_line(err)})"
            ) from None
        out[where] = size
    return out


def check_device_map(device_map: str | Mapping[str, Any] | None) -> None:
    """``None`` (one device), ``"auto"`` (accelerate splits and offloads), or a dict from module
    path to a device, ``"cpu"`` or ``"disk"``."""
    if device_map is None or device_map == "auto":
        return
    if not isinstance(device_map, Mapping) or not device_map:
        raise DeviceError(
            f"device_map must be None, 'auto' or a dict from module to device, not {device_map!r}"
        )
    for module, where in device_map.items():
        if not isinstance(module, str):
            raise DeviceError(f"device_map keys are module paths (strings), not {module!r}")
        if where not in ("cpu", "disk"):
            resolve_device(where)


def check_load_options(
    family: str,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, Any] | None = None,
    backend: str = "hf",
    spec: str = "this model",
) -> None:
    """Every loading choice checked against this machine and the model's family, cheaply: no
    weights are read, so the CLI refuses a bad ``--device`` before any heavy work."""
    from workbench.errors import FamilyError

    if backend not in BACKENDS:
        raise DeviceError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "transformer-lens" and family != "causal-lm":
        raise FamilyError(
            f"the TransformerLens backend wraps causal LMs; {spec} is a {family} model"
        )
    resolve_dtype(dtype, CPU, {})
    check_device_map(device_map)
    if device_map is not None:
        if family in ("vim", "pmi"):
            raise DeviceError(
                f"{spec} is a {family} model, which takes a single device: drop device_map and "
                "give device= (--device) instead"
            )
        if str(device) != "auto":
            raise DeviceError(
                f"give either device ({device!r}) or device_map ({device_map!r}), not both: "
                "a device map places every part of the model itself"
            )
    else:
        resolve_device(device)
        if max_memory is not None:
            raise DeviceError("max_memory bounds a device_map; add device_map='auto' to use it")
    normalise_max_memory(max_memory)


# -- where a tensor's values are -----------------------------------------------------------------
def _offload_hook(module: nn.Module) -> Any | None:
    """accelerate's AlignDevicesHook on ``module`` when it offloads weights, else None."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
        if getattr(candidate, "offload", False) and getattr(candidate, "weights_map", None):
            return candidate
    return None


def _backing_entry(weights_map: Mapping, key: str) -> tuple[MutableMapping, str, str] | None:
    """Through accelerate's prefixed views to the dict the value can be put in: (that dict,
    the full key, where the stored value is: ``cpu-offload`` or ``disk``), or None if absent."""
    from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset

    while isinstance(weights_map, PrefixedDataset):
        key = weights_map.prefix + key
        weights_map = weights_map.dataset
    if isinstance(weights_map, OffloadedWeightsLoader):
        if key in weights_map.state_dict:
            return weights_map.state_dict, key, "cpu-offload"
        if key in weights_map.index:
            return weights_map.state_dict, key, "disk"
        return None
    if isinstance(weights_map, MutableMapping) and key in weights_map:
        return weights_map, key, "cpu-offload"
    return None


@dataclass
class StoredTensor:
    """A parameter or buffer of a module, wherever its values are.

    In the module itself (``offloaded`` False), or, when accelerate offloads the module, in the
    weights map its hook reads at every forward: then the module holds a meta placeholder, and
    ``read`` gives the stored values and ``replace`` swaps them without writing any file.
    """

    module: nn.Module
    name: str
    hook: Any = None
    weights_map: Mapping | None = None
    key: str = ""

    @property
    def offloaded(self) -> bool:
        return self.hook is not None

    @property
    def home(self) -> str:
        """``cuda:0``, ``cpu``, ``cpu-offload`` (RAM, moved in per forward) or ``disk``."""
        if self.weights_map is None:
            return str(getattr(self.module, self.name).device)
        entry = _backing_entry(self.weights_map, self.key)
        return entry[2] if entry is not None else "meta"

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.module, self.name).dtype  # a meta placeholder keeps the dtype

    def read(self) -> torch.Tensor:
        """The values: the module's tensor itself (views write through), or the stored copy."""
        if self.weights_map is None:
            return getattr(self.module, self.name)
        return self.weights_map[self.key]

    def replace(self, value: torch.Tensor) -> Callable[[], None]:
        """Put ``value`` in place of the values; returns the undo, which is bit-exact."""
        current = self.read()
        if self.weights_map is None:
            saved = current.detach().clone()
            with torch.no_grad():
                current.copy_(value)

            def undo_in_place() -> None:
                with torch.no_grad():
                    current.copy_(saved)

            return undo_in_place
        entry = _backing_entry(self.weights_map, self.key)
        if entry is None:
            raise DeviceError(f"accelerate's weights map has no {self.key!r}")
        store, key, _ = entry
        had, old = key in store, store.get(key)
        store[key] = value.detach().to(device=current.device, dtype=current.dtype).clone()

        def undo_offloaded() -> None:
            if had:
                store[key] = old  # the very tensor that was there, never written to
            else:
                store.pop(key, None)  # reads fall back to the untouched file on disk
            self.drop_materialised()

        return undo_offloaded

    def drop_materialised(self) -> None:
        """Put the meta placeholder back: a forward that raised midway leaves accelerate's
        copy of the weights in the module (its hook only drops them after a clean forward)."""
        if self.weights_map is not None and getattr(self.module, self.name).device.type != "meta":
            from accelerate.utils import set_module_tensor_to_device

            set_module_tensor_to_device(self.module, self.name, "meta")


def stored_tensor(root: nn.Module, module_path: str, name: str) -> StoredTensor:
    """Where ``module_path``'s tensor ``name`` really is (see ``StoredTensor``)."""
    module = root.get_submodule(module_path)
    parts = module_path.split(".") if module_path else []
    for depth in range(len(parts), -1, -1):  # the module itself, then its parents
        owner = root.get_submodule(".".join(parts[:depth]))
        hook = _offload_hook(owner)
        if hook is None or (depth < len(parts) and not hook.place_submodules):
            continue
        key = ".".join([*parts[depth:], name])
        if _backing_entry(hook.weights_map, key) is not None:
            return StoredTensor(module, name, hook, hook.weights_map, key)
    return StoredTensor(module, name)


def release_offloaded(root: nn.Module) -> None:
    """Put the meta placeholders back in every offloaded module that still holds its weights:
    after a forward that raised midway (accelerate drops them only after a clean forward)."""
    for module in root.modules():
        hook = _offload_hook(module)
        if hook is None:
            continue
        for name, tensor in [
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        ]:
            if tensor.device.type != "meta" and _backing_entry(hook.weights_map, name) is not None:
                StoredTensor(module, name, hook, hook.weights_map, name).drop_materialised()


def execution_device(module: nn.Module) -> torch.device | None:
    """Where accelerate runs ``module`` (its hook's execution device), if it placed it."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", (hook,)):
        where = getattr(candidate, "execution_device", None)
        if isinstance(where, int):  # accelerate's shorthand for accelerator number N
            found = accelerator()
            return torch.device(found.type if found is not None else "cuda", where)
        if where is not None:
            return torch.device(where)
    return None


# -- moving captured values back -------------------------------------------------------------------
def host_buffer(shape: tuple[int, ...], dtype: torch.dtype, source: torch.device) -> torch.Tensor:
    """A CPU buffer for values coming from ``source``: page-locked when that is a CUDA device, so
    copies into it can run without blocking the host."""
    return torch.empty(shape, dtype=dtype, pin_memory=source.type == "cuda")


def synchronize(devices: set[torch.device]) -> None:
    """Wait for copies queued on accelerators (non-blocking ones) to finish; no-op on the CPU."""
    for device in devices:
        if device.type != "cpu":
            torch.accelerator.synchronize(device)

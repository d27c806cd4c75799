"""Activation store: run a model over a dataset once, keep chosen sites on disk, probe many times.

A store is a folder::

    manifest.json               what the store holds: its key and its shards
    shard-000000.safetensors    one tensor per site: rows [start, stop) of the dataset
    shard-000001.safetensors    ...

The manifest's key says what the activations are of: the model (spec and weights digest), the
sites, the dtype, the token layout (token count, patch grid, prefix tokens such as the class
token and registers), the dataset (a name and one digest per input row) and the
preprocessing. A probe given ``store=DIR`` reuses the store when the key matches, runs the model
only for rows the store lacks (appending them as new shards), and refuses a store whose key
differs, naming what differs.

Why safetensors shards rather than zarr chunks: safetensors is already a dependency (every
model folder uses it), a shard is one self-describing file, and ``safe_open(...).get_slice``
reads any row range of one site through a memory map without touching the rest of the file,
which is all a probe needs (rows of one site at a time). zarr would add a dependency for
chunked writes in place, which a store does not need: rows are only ever appended, a shard at a
time. Each shard is written under a temporary name and renamed, and the manifest (also renamed
into place) lists only complete shards, so an interrupted build resumes where it stopped and
produces the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.capture import Inputs, encode_inputs, hooks
from workbench.errors import DataError
from workbench.models.loaded import LoadedModel

FORMAT = "workbench-activation-store/1"
MANIFEST = "manifest.json"
SHARD_BYTES = 256 * 2**20
"""Target size of one shard; rows per shard follow from the bytes one row takes."""
KEY_FIELDS = ("model", "dtype", "tokens", "preprocessing")
"""Key fields that must be equal for reuse (sites need only be a superset, rows a prefix)."""


# -- the key -----------------------------------------------------------------------------------
def row_digests(inputs: Inputs) -> list[str]:
    """One short sha256 per input row: of the raw image bytes, the text, or the model tensors.

    Preprocessing is recorded beside it in the key, so a changed resize is named as such.
    """
    if isinstance(inputs, np.ndarray | torch.Tensor):
        arr = np.ascontiguousarray(np.asarray(inputs))
        rows: list[bytes] = [f"{arr.dtype}{arr.shape[1:]}".encode() + row.tobytes() for row in arr]
    elif isinstance(inputs, Mapping):
        names = sorted(inputs)
        tensors = {k: torch.as_tensor(inputs[k]).contiguous() for k in names}
        n = len(next(iter(tensors.values())))
        rows = [
            b"".join(k.encode() + tensors[k][i].numpy().tobytes() for k in names) for i in range(n)
        ]
    else:
        rows = [str(t).encode() for t in inputs]
    return [hashlib.sha256(r).hexdigest()[:20] for r in rows]


def model_key(model: LoadedModel) -> dict[str, Any]:
    return {
        "spec": model.spec,
        "digest": model.digest(),
        "family": model.family,
        "model_type": model.model_type,
    }


def token_layout(model: LoadedModel) -> dict[str, Any]:
    """Where the patches are among the tokens: a reader needs this to drop the prefix."""
    if not model.is_vision:
        return {"kind": "text"}
    side = model.grid_size or (model.image_size or 0) // (model.patch_size or 1)
    return {
        "kind": "image",
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "grid": [side, side],
        "prefix_tokens": model.n_prefix_tokens,
    }


def model_preprocessing(model: LoadedModel, loader: Mapping[str, Any] | None) -> dict[str, Any]:
    """The loader's resize/crop (as given) plus the model's own normalisation."""
    out: dict[str, Any] = {"loader": dict(loader or {})}
    if model.is_vision:
        out["image_mean"] = [round(float(v), 8) for v in model.image_mean]
        out["image_std"] = [round(float(v), 8) for v in model.image_std]
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_sites(model: LoadedModel, spec: str) -> list[str]:
    """Comma-separated site names, site kinds (``resid_post``: every block's) or shell-style
    patterns (``blocks.*.attn.W_Q.input``) -> the model's site names, in the order given."""
    from fnmatch import fnmatchcase

    from workbench.models.loaded import SITE_KINDS

    names = model.site_names()
    out: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item in SITE_KINDS:
            found = model.layer_sites(item)
        elif any(c in item for c in "*?["):
            found = [n for n in names if fnmatchcase(n, item)]
        else:
            found = [model.site(item).name]
        if not found:
            raise DataError(
                f"{item!r} matches no site of {model.spec}; sites look like blocks.0.resid_post "
                "(list them with model.site_names())"
            )
        out += found
    if not out:
        raise DataError("no sites given; e.g. --sites blocks.0.resid_pre,resid_post")
    return list(dict.fromkeys(out))


# -- reading -----------------------------------------------------------------------------------
@dataclass(eq=False)
class ActivationStore:
    """A store folder opened for reading; ``read(site, rows)`` returns a CPU tensor.

    ``computed_rows`` is how many rows the call that returned this store had to compute (0 when
    the store was reused as it was).
    """

    path: Path
    manifest: dict[str, Any]
    computed_rows: int = 0
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def key(self) -> dict[str, Any]:
        return self.manifest["key"]

    @property
    def reused(self) -> bool:
        return self.computed_rows == 0

    def shape(self, site: str) -> tuple[int, ...]:
        """(rows, ...) of one site over the whole store."""
        self._check_site(site)
        return (self.n_rows, *self.manifest["shapes"][site])

    def read(
        self, site: str, rows: slice | Sequence[int] | np.ndarray | None = None
    ) -> torch.Tensor:
        """Rows of one site, read through memory maps from the shards that hold them.

        ``rows`` is a slice, any sequence of row indices (in any order, repeats allowed), or
        None for all; only the shards and row ranges asked for are touched.
        """
        self._check_site(site)
        n = self.n_rows
        if rows is None:
            index = np.arange(n)
        elif isinstance(rows, slice):
            index = np.arange(n)[rows]
        else:
            index = np.asarray(rows, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -n or index.max() >= n):
            raise DataError(f"rows out of range: the store at {self.path} holds {n} rows")
        index = np.where(index < 0, index + n, index)
        shape = self.shape(site)[1:]
        dtype = getattr(torch, self.manifest["key"]["dtype"])
        out = torch.empty((len(index), *shape), dtype=dtype)
        if not len(index):
            return out
        order = np.argsort(index, kind="stable")
        sorted_rows = index[order]
        starts = np.array([s["start"] for s in self.manifest["shards"]])
        which = np.searchsorted(starts, sorted_rows, side="right") - 1
        for shard_no in np.unique(which):
            shard = self.manifest["shards"][int(shard_no)]
            picked = np.nonzero(which == shard_no)[0]
            local = sorted_rows[picked] - shard["start"]
            lo, hi = int(local.min()), int(local.max()) + 1
            block = self._handle(shard["file"]).get_slice(site)[lo:hi]
            out[torch.from_numpy(order[picked])] = block[torch.from_numpy(local - lo)]
        return out

    def describe(self) -> str:
        """What ``workbench store info`` prints."""
        m, key = self.manifest, self.key
        row_bytes = sum(
            int(np.prod(s)) * torch.empty(0, dtype=getattr(torch, key["dtype"])).element_size()
            for s in m["shapes"].values()
        )
        lines = [
            f"activation store {self.path}",
            f"  model         {key['model']['spec']} ({key['model']['model_type']}, "
            f"{key['model']['digest'][:19]}...)",
            f"  dataset       {m['dataset']['name']}: {self.n_rows} rows, digest "
            f"{m['dataset']['digest'][:19]}...",
            f"  tokens        {json.dumps(key['tokens'])}",
            f"  preprocessing {json.dumps(key['preprocessing'])}",
            f"  dtype         {key['dtype']}, {len(m['shards'])} shards, "
            f"{row_bytes * self.n_rows / 2**30:.2f} GiB",
            "  sites:",
        ]
        lines += [f"    {s:<32} {tuple(m['shapes'][s])}" for s in self.sites]
        return "\n".join(lines)

    def close(self) -> None:
        self._handles.clear()

    def _handle(self, name: str) -> Any:
        from safetensors import safe_open

        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = safe_open(self.path / name, framework="pt")
        return handle

    def _check_site(self, site: str) -> None:
        if site not in self.manifest["shapes"]:
            raise DataError(
                f"the store at {self.path} has no site {site!r}; it holds {', '.join(self.sites)}"
            )


def open_store(path: str | Path) -> ActivationStore:
    """Open an existing store folder; DataError if it holds none."""
    path = Path(path).expanduser()
    manifest = _read_manifest(path)
    if manifest is None:
        raise DataError(
            f"{path} holds no activation store (no {MANIFEST}); build one with "
            "`workbench store build` or let a probe build it with --param store=DIR"
        )
    return ActivationStore(path, manifest)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(
            f"{file} is not valid JSON ({err}); delete the folder and rebuild"
        ) from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{file} is not a {FORMAT} manifest; point store= at another folder")
    return manifest


# -- building ----------------------------------------------------------------------------------
def build_store(
    model: LoadedModel,
    inputs: Inputs,
    sites: Sequence[str],
    out: str | Path,
    *,
    dataset: str = "inputs",
    preprocessing: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    shard_rows: int | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> ActivationStore:
    """Capture ``sites`` of ``model`` over ``inputs`` into the store at ``out``; return it opened.

    A new folder gets a new store. A folder that holds a store with the same key and the same
    first rows is reused: only rows it lacks are computed and appended, so calling this again
    after an interruption resumes the build. A store with another key, fewer sites or other
    rows is refused with a DataError naming the difference; nothing is written then.
    ``preprocessing`` describes how the loader resized and cropped the inputs.
    """
    if batch_size < 1:
        raise DataError("batch_size must be at least 1")
    sites = list(dict.fromkeys(sites))
    if not sites:
        raise DataError("no sites to store; e.g. blocks.0.resid_post")
    for name in sites:
        model.site(name)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; a store is a folder")
    digests = row_digests(inputs)
    if not digests:
        raise DataError("the dataset is empty: no inputs to store")
    key = {
        "model": model_key(model),
        "dtype": _dtype_name(dtype),
        "tokens": token_layout(model),
        "preprocessing": model_preprocessing(model, preprocessing),
    }
    manifest = _read_manifest(out)
    if manifest is None and out.is_dir():
        others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if others:
            raise DataError(
                f"{out} holds other files ({', '.join(sorted(others)[:3])}) and no store; "
                "choose an empty or new folder for the store"
            )
    if manifest is None:
        manifest = {
            "format": FORMAT,
            "key": key,
            "sites": sites,
            "shapes": {},
            "batch_size": batch_size,
            "shard_rows": shard_rows,
            "dataset": {"name": dataset, "digest": "", "rows": []},
            "n_rows": 0,
            "shards": [],
        }
    else:
        check_reusable(manifest, out, key, sites, digests)
    have = int(manifest["n_rows"])
    missing = len(digests) - have
    if missing > 0:
        _extend(model, inputs, digests, out, manifest, progress)
    store = ActivationStore(out, manifest, computed_rows=max(missing, 0))
    return store


def check_model(path: str | Path, model: LoadedModel) -> None:
    """Refuse, before any data is read, a store folder built from another model (no-op when the
    folder holds no store yet): the cheap part of ``check_reusable``."""
    path = Path(path).expanduser()
    manifest = _read_manifest(path)
    if manifest is None:
        return
    key = {"model": model_key(model), "tokens": token_layout(model)}
    for name, value in key.items():
        if manifest["key"][name] != value:
            raise DataError(
                f"the store at {path} was built from another model: it has {name}="
                f"{json.dumps(manifest['key'][name])[:200]}, this run needs "
                f"{json.dumps(value)[:200]}; use another store folder or delete this one"
            )


def check_reusable(
    manifest: Mapping[str, Any],
    path: Path,
    key: Mapping[str, Any],
    sites: Sequence[str],
    digests: Sequence[str],
) -> None:
    """Refuse a store that holds other activations than these, naming the first difference."""
    stored = manifest["key"]
    for name in KEY_FIELDS:
        if stored[name] != key[name]:
            what = {
                "model": "another model (spec or weights digest)",
                "dtype": "another dtype",
                "tokens": "another token layout",
                "preprocessing": "other preprocessing",
            }[name]
            raise DataError(
                f"the store at {path} was built from {what}: it has {name}="
                f"{json.dumps(stored[name])[:200]}, this run needs "
                f"{json.dumps(key[name])[:200]}; use another store folder or delete this one"
            )
    lacking = [s for s in sites if s not in manifest["sites"]]
    if lacking:
        raise DataError(
            f"the store at {path} lacks sites {', '.join(lacking)}; rebuild it with them "
            "(workbench store build --sites ...) or use another store folder"
        )
    rows = manifest["dataset"]["rows"]
    common = min(len(rows), len(digests))
    differ = next((i for i in range(common) if rows[i] != digests[i]), None)
    if differ is not None:
        raise DataError(
            f"the store at {path} holds other inputs: row {differ} differs from this run's "
            f"dataset ({manifest['dataset']['name']} there); use another store folder"
        )


def _extend(
    model: LoadedModel,
    inputs: Inputs,
    digests: Sequence[str],
    out: Path,
    manifest: dict[str, Any],
    progress: bool,
) -> None:
    """Compute rows ``n_rows..`` shard by shard; each shard and the manifest land atomically.

    Forward batches never straddle shards, and the batch size and rows per shard are kept in
    the manifest, so a resumed build computes every shard exactly as an uninterrupted one.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    # Images are normalised batch by batch (all of them at once would hold float32 copies of
    # the whole dataset); texts are tokenised together so every batch shares one padding.
    images = isinstance(inputs, np.ndarray | torch.Tensor)
    encoded = None if images else encode_inputs(model, inputs)
    sites = manifest["sites"]
    dtype = getattr(torch, manifest["key"]["dtype"])
    batch_size = int(manifest["batch_size"])
    n = len(digests)
    start = int(manifest["n_rows"])
    bar = tqdm(
        total=n, initial=start, desc=f"store {len(sites)} sites", unit="input", disable=not progress
    )
    with bar:
        while start < n:
            parts: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
            first = start
            stop = min(n, start + manifest["shard_rows"]) if manifest["shard_rows"] else None
            while stop is None or first < stop:
                last = min(n if stop is None else stop, first + batch_size)
                if encoded is None:
                    batch = encode_inputs(model, inputs[first:last])  # type: ignore[index]
                else:
                    batch = {k: v[first:last] for k, v in encoded.items()}
                values = _forward(model, batch, sites)
                for site in sites:
                    value = values[site].to(dtype)
                    if value.is_floating_point() and not torch.isfinite(value.float().sum()):
                        raise DataError(
                            f"activations at {site} contain NaN or inf for inputs "
                            f"{first}..{last - 1}; check those inputs and the model's dtype"
                        )
                    parts[site].append(value)
                    manifest["shapes"].setdefault(site, list(value.shape[1:]))
                if not manifest["shard_rows"]:  # the first batch tells how large a row is
                    rows = SHARD_BYTES // max(_row_bytes(manifest, dtype), 1)
                    manifest["shard_rows"] = max(batch_size, rows // batch_size * batch_size)
                if stop is None:
                    stop = min(n, start + manifest["shard_rows"])
                bar.update(last - first)
                first = last
            tensors = {s: torch.cat(parts[s]).contiguous() for s in sites}
            del parts
            name = f"shard-{len(manifest['shards']):06d}.safetensors"
            tmp = out / f".{name}.tmp"
            save_file(tensors, str(tmp))  # no metadata: its order is not stable across writes
            os.replace(tmp, out / name)
            del tensors
            manifest["shards"].append({"file": name, "start": start, "stop": stop})
            manifest["n_rows"] = stop
            rows_done = manifest["dataset"]["rows"] = list(digests[:stop])
            manifest["dataset"]["digest"] = (
                "sha256:" + hashlib.sha256("".join(rows_done).encode()).hexdigest()
            )
            _write_manifest(out, manifest)
            start = stop


def _row_bytes(manifest: Mapping[str, Any], dtype: torch.dtype) -> int:
    size = torch.empty(0, dtype=dtype).element_size()
    return sum(int(np.prod(shape)) * size for shape in manifest["shapes"].values())


def _forward(
    model: LoadedModel, batch: dict[str, torch.Tensor], sites: Sequence[str]
) -> dict[str, torch.Tensor]:
    """One forward pass; every site's value, detached, on the CPU."""
    values: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def record(value: torch.Tensor) -> None:
            values[name] = value.detach().to("cpu", copy=True)

        return record

    with hooks(model, {s: keep(s) for s in sites}):
        model(**batch)
    missing = [s for s in sites if s not in values]
    if missing:
        raise DataError(f"sites {missing} were not reached by the forward pass")
    return values


def _write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)

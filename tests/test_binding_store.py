"""Binding through the activation store: the same numbers as from memory, and reuse is said."""

from __future__ import annotations

import numpy as np
import pytest

from probes import binding
from workbench import store as store_module
from workbench.models import load_model

SMALL = dict(
    n_images=20,
    max_iter=8,
    probes=("quadratic", "cosine", "attention"),
    control_probes=("quadratic",),
    ranks=(1,),
    bootstrap=10,
    ablation_random=1,
    n_show=2,
    threads=1,
)


def _numbers(value, prefix=""):
    """Every number in a nested metrics dict, by its path."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_numbers(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_numbers(v, f"{prefix}{i}."))
        return out
    if isinstance(value, bool | str) or value is None:
        return {prefix: value}
    return {prefix: float(value)}


@pytest.mark.slow
def test_binding_from_the_store_equals_binding_from_memory(tmp_path, monkeypatch):
    lm = load_model("zoo:vit-binding-contrast")
    folder = tmp_path / "store"
    built = binding.run(lm, binding.Config(**SMALL, store=str(folder)))
    assert built.provenance["features"]["reused"] is False
    assert built.provenance["random_init_features"]["store"].endswith("random-init-seed-0")

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran although the store holds every feature")

    monkeypatch.setattr(store_module, "_forward", no_forward)
    reused = binding.run(lm, binding.Config(**SMALL, store=str(folder)))
    monkeypatch.undo()
    assert reused.provenance["features"]["reused"] is True
    assert reused.provenance["features"]["rows_reused"] == 20
    memory = binding.run(lm, binding.Config(**SMALL))
    assert memory.provenance["features"]["where"] == "memory"
    expected = _numbers(memory.metrics)
    for result in (built, reused):
        got = _numbers(result.metrics)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, float) and np.isfinite(value):
                assert got[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert got[key] == value or (value != value and got[key] != got[key]), key
        for name, array in memory.arrays.items():
            if array.dtype.kind == "f":
                assert np.allclose(result.arrays[name], array, atol=1e-6, equal_nan=True), name


def test_a_store_of_another_model_is_refused_before_any_data_is_read(tmp_path, monkeypatch):
    from probes.binding import probe as binding_probe
    from workbench.errors import DataError

    lm = load_model("zoo:vit-binding-contrast")
    other = load_model("zoo:vit-binding-mae")
    images = binding.load_data(other, binding.Config(n_images=10))
    store_module.build_store(other, images.images[:4], ["blocks.0.resid_pre"], tmp_path / "s")

    def heavy(*args, **kwargs):
        raise AssertionError("data was loaded before the store was checked")

    monkeypatch.setattr(binding_probe, "load_data", heavy)
    with pytest.raises(DataError, match="another model"):
        binding.run(lm, binding.Config(store=str(tmp_path / "s")))

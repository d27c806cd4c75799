"""The activation store: bit-exact round trips, resumable builds, and refusals that name why."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench import store as store_module
from workbench.capture import capture
from workbench.data.scenes import make_binding_scenes
from workbench.errors import DataError
from workbench.models import load_model
from workbench.store import build_store, open_store

SITES = ["blocks.0.resid_pre", "blocks.1.resid_post", "blocks.0.attn.W_Q.input"]


@pytest.fixture(scope="module")
def vit(scratch_models):
    return load_model(scratch_models["dinov2"])


@pytest.fixture(scope="module")
def images(vit):
    return make_binding_scenes(11, size=vit.image_size, seed=3).images


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_is_bit_exact_across_shards_in_any_row_order(vit, images, tmp_path):
    store = build_store(vit, images, SITES, tmp_path / "s", batch_size=2, shard_rows=4)
    assert [s["stop"] for s in store.manifest["shards"]] == [4, 8, 11]
    reference = capture(vit, images, SITES, batch_size=2, progress=False)
    rows = np.array([10, 0, 5, 4, 3, 3, 9])
    for site in SITES:
        assert torch.equal(store.read(site), reference[site])
        assert torch.equal(store.read(site, rows), reference[site][torch.from_numpy(rows)])
        assert torch.equal(store.read(site, slice(3, 9)), reference[site][3:9])
    again = open_store(tmp_path / "s")
    assert again.shape("blocks.1.resid_post") == (11, *reference["blocks.1.resid_post"].shape[1:])
    key = again.key
    assert key["tokens"]["prefix_tokens"] == vit.n_prefix_tokens
    assert key["tokens"]["grid"] == [vit.image_size // vit.patch_size] * 2
    assert key["model"]["digest"] == vit.digest()
    with pytest.raises(DataError, match="no site"):
        again.read("blocks.5.resid_post")
    with pytest.raises(DataError, match="out of range"):
        again.read(SITES[0], [11])


def test_an_interrupted_build_resumes_to_the_same_bytes(vit, images, tmp_path, monkeypatch):
    build_store(vit, images, SITES, tmp_path / "whole", batch_size=2, shard_rows=4)
    real = store_module._forward
    calls = {"n": 0}

    def dies_on_the_fourth_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the second shard
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "_forward", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        build_store(vit, images, SITES, tmp_path / "cut", batch_size=2, shard_rows=4)
    monkeypatch.setattr(store_module, "_forward", real)
    cut = open_store(tmp_path / "cut")
    assert cut.n_rows == 4 and len(cut.manifest["shards"]) == 1  # only complete shards listed
    resumed = build_store(vit, images, SITES, tmp_path / "cut", batch_size=2, shard_rows=4)
    assert resumed.computed_rows == 7
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")


def test_reuse_runs_nothing_and_appending_keeps_the_old_shards(vit, images, tmp_path, monkeypatch):
    first = build_store(vit, images[:6], SITES, tmp_path / "s", batch_size=2, shard_rows=4)
    assert first.computed_rows == 6
    before = _files(tmp_path / "s")

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran although the store holds these rows")

    monkeypatch.setattr(store_module, "_forward", no_forward)
    again = build_store(vit, images[:6], SITES[:2], tmp_path / "s", batch_size=2)
    assert again.reused and _files(tmp_path / "s") == before
    assert build_store(vit, images[:3], SITES, tmp_path / "s").reused  # a prefix is reused too
    monkeypatch.undo()
    grown = build_store(vit, images, SITES, tmp_path / "s")
    assert grown.computed_rows == 5 and grown.n_rows == 11
    assert all(_files(tmp_path / "s")[k] == v for k, v in before.items() if k.startswith("shard"))
    whole = capture(vit, images, SITES[1:2], batch_size=2, progress=False)[SITES[1]]
    assert torch.equal(grown.read(SITES[1]), whole)


def test_a_store_of_other_activations_is_refused_before_any_work(
    vit, images, scratch_models, tmp_path
):
    build_store(vit, images[:4], SITES[:2], tmp_path / "s", batch_size=2)
    before = _files(tmp_path / "s")
    other = vit.random_init_copy(seed=1)
    with pytest.raises(DataError, match="another model"):
        build_store(other, images[:4], SITES[:2], tmp_path / "s")
    with pytest.raises(DataError, match="other preprocessing"):
        build_store(vit, images[:4], SITES[:2], tmp_path / "s", preprocessing={"resize": 300})
    with pytest.raises(DataError, match=r"lacks sites blocks\.1\.attn\.W_Q\.input"):
        build_store(vit, images[:4], ["blocks.1.attn.W_Q.input"], tmp_path / "s")
    with pytest.raises(DataError, match="row 2 differs"):
        build_store(vit, images[[0, 1, 5, 3]], SITES[:2], tmp_path / "s")
    with pytest.raises(DataError, match="another dtype"):
        build_store(vit, images[:4], SITES[:2], tmp_path / "s", dtype=torch.float16)
    assert _files(tmp_path / "s") == before
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "result.json").write_text("{}")
    with pytest.raises(DataError, match="holds other files"):
        build_store(vit, images[:4], SITES[:2], tmp_path / "results")
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match="no activation store"):
        open_store(tmp_path / "junk")
    (tmp_path / "junk" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a workbench-activation-store"):
        open_store(tmp_path / "junk")


def test_text_models_store_padded_tokens(scratch_models, tmp_path):
    lm = load_model(scratch_models["gpt2"])
    texts = ["a short one", "a somewhat longer sentence than that", "mid length text"]
    store = build_store(lm, texts, ["blocks.0.resid_post"], tmp_path / "t", batch_size=2)
    reference = capture(lm, texts, ["blocks.0.resid_post"], batch_size=2, progress=False)
    assert torch.equal(store.read("blocks.0.resid_post"), reference["blocks.0.resid_post"])
    assert store.key["tokens"] == {"kind": "text"}


def test_cli_builds_a_store_that_binding_then_reuses(scratch_models, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from probes import binding
    from workbench.cli import app

    folder = str(scratch_models["vit"])
    out = tmp_path / "store"
    sites = "blocks.0.resid_pre,resid_post,blocks.*.attn.W_Q.input"
    cli = CliRunner()
    args = ["store", "build", "--model", folder, "--out", str(out), "--sites", sites, "--n", "12"]
    built = cli.invoke(app, [*args, "--batch-size", "4"])
    assert built.exit_code == 0, built.output
    assert "12 rows computed" in built.output
    info = cli.invoke(app, ["store", "info", str(out)])
    assert "binding scenes (seed 0)" in info.output and "blocks.1.attn.W_Q.input" in info.output
    bad = cli.invoke(app, ["store", "build", "--model", folder, "--out", str(out), "--sites", "x*"])
    assert bad.exit_code == 2 and "matches no site" in bad.output

    def no_forward(*args, **kwargs):
        raise AssertionError("binding ran the model although the store holds its features")

    monkeypatch.setattr(store_module, "_forward", no_forward)
    config = binding.Config(
        n_images=12,
        store=str(out),
        controls=("pixels",),
        probes=("quadratic", "attention"),
        ranks=(1,),
        max_iter=3,
        bootstrap=5,
        ablation=False,
        threads=1,
    )
    result = binding.run(load_model(folder), config)
    assert result.provenance["features"]["reused"] is True
    assert result.provenance["features"]["rows_reused"] == 12

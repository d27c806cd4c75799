"""Capture and hooks: exact values, bounded memory, and no hook left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.capture import capture, hooks
from workbench.errors import DataError
from workbench.models import load_model

TEXTS = [f"w{i} w{i + 1} w{i + 2} w{i + 3}" for i in range(0, 40, 3)]


@pytest.fixture(scope="module")
def gpt2(scratch_models):
    return load_model(scratch_models["gpt2"])


def _hook_count(lm) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


def test_capture_equals_hidden_states_across_batch_sizes(gpt2):
    sites = gpt2.layer_sites("resid_pre")
    whole = capture(gpt2, TEXTS, sites, batch_size=len(TEXTS), progress=False)
    batched = capture(gpt2, TEXTS, sites, batch_size=3, progress=False)
    batch = gpt2.encode_texts(TEXTS)
    with torch.no_grad():
        hidden = gpt2.model(**batch, output_hidden_states=True).hidden_states
    for i, site in enumerate(sites):
        torch.testing.assert_close(whole[site], hidden[i])
        torch.testing.assert_close(batched[site], hidden[i], atol=1e-5, rtol=1e-5)
    assert whole.spill_dir is None
    torch.testing.assert_close(whole.attention_mask, batch["attention_mask"])


def test_over_budget_spills_to_memory_mapped_files_with_equal_values(gpt2, tmp_path):
    sites = gpt2.site_names()
    in_ram = capture(gpt2, TEXTS, sites, batch_size=4, progress=False)
    one_site = in_ram["blocks.0.resid_post"].numel() * 4
    spilled = capture(
        gpt2, TEXTS, sites, batch_size=4, memory_budget=one_site, spill_dir=tmp_path, progress=False
    )
    assert spilled.spill_dir == tmp_path
    on_disk = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert len(on_disk) == len(sites) - 1  # exactly the first site fit the budget
    for site in sites:
        assert torch.equal(in_ram[site], spilled[site])
    reloaded = np.load(tmp_path / "blocks.1.resid_post.npy", mmap_mode="r")
    assert np.array_equal(reloaded, in_ram["blocks.1.resid_post"].numpy())


def test_temporary_spill_folder_is_deleted_with_the_cache(gpt2):
    cache = capture(gpt2, TEXTS, ["blocks.0.resid_post"], memory_budget=0, progress=False)
    folder = cache.spill_dir
    assert folder is not None and folder.exists()
    cache.close()
    assert not folder.exists()


def test_hooks_removed_when_the_forward_raises(scratch_models):
    lm = load_model(scratch_models["gpt2"], attn_implementation="sdpa")
    before = _hook_count(lm)

    def boom(_value):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), hooks(lm, {"blocks.1.mlp.out": boom}):
        lm(**lm.encode_texts(["w1 w2"]))
    assert _hook_count(lm) == before
    # A pattern site switches to eager attention; the switch is undone on failure too.
    with pytest.raises(RuntimeError, match="boom"), hooks(lm, {"blocks.0.attn.pattern": boom}):
        lm(**lm.encode_texts(["w1 w2"]))
    assert _hook_count(lm) == before
    assert lm.model.config._attn_implementation == "sdpa"


def test_nan_activations_raise_and_leave_no_hooks_or_files(gpt2):
    before = _hook_count(gpt2)

    def poison(value):
        return torch.full_like(value, float("nan"))

    batch = gpt2.encode_texts(TEXTS)
    with hooks(gpt2, {"blocks.0.mlp.out": poison}), pytest.raises(DataError, match="NaN"):
        capture(gpt2, batch, ["blocks.1.resid_post"], memory_budget=0, progress=False)
    assert _hook_count(gpt2) == before


def test_replacing_a_site_value_changes_downstream_and_is_undone(gpt2):
    batch = gpt2.encode_texts(["w1 w2 w3"])
    base = gpt2(**batch).logits
    with hooks(gpt2, {"blocks.0.resid_post": torch.zeros_like}):
        patched = gpt2(**batch).logits
    after = gpt2(**batch).logits
    assert not torch.allclose(base, patched)
    assert torch.equal(base, after)


def test_bad_inputs_fail_before_any_forward(gpt2):
    with pytest.raises(DataError, match="empty"):
        capture(gpt2, [], ["blocks.0.resid_post"], progress=False)
    with pytest.raises(DataError, match="disagree"):
        capture(
            gpt2,
            {"input_ids": torch.zeros(3, 2, dtype=torch.long), "attention_mask": torch.ones(2, 2)},
            ["blocks.0.resid_post"],
            progress=False,
        )
    with pytest.raises(ValueError, match="no sites"):
        capture(gpt2, TEXTS, [], progress=False)

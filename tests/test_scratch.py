"""Random scratch models: seeded, and an unknown kind is refused before anything is written."""

from __future__ import annotations

import pytest

from workbench.models.scratch import SCRATCH_KINDS, save_random_model


@pytest.mark.parametrize("kind", ["gpt2", "dinov2"])
def test_the_seed_decides_the_weights(tmp_path, kind):
    def weights(name: str, seed: int) -> bytes:
        folder = save_random_model(tmp_path / name, kind, seed=seed)
        return (folder / "model.safetensors").read_bytes()

    assert weights("a", 1) == weights("b", 1) != weights("c", 2)


def test_unknown_kind_is_refused_before_the_folder_is_made(tmp_path):
    with pytest.raises(ValueError, match=SCRATCH_KINDS[0]):
        save_random_model(tmp_path / "model", "gpt3")
    assert not (tmp_path / "model").exists()

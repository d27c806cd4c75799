"""Shared fixtures: tiny random models of every family, saved as local folders once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def scratch_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from workbench.models.scratch import SCRATCH_KINDS, save_random_model

    root = tmp_path_factory.mktemp("scratch-models")
    return {kind: save_random_model(root / kind, kind) for kind in SCRATCH_KINDS}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models run fastest on one thread, and a busy machine makes two much slower."""
    from workbench.threads import torch_threads

    with torch_threads(1):
        yield

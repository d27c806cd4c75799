"""The official Vim shapes: Vim-S and Vim-B and the stride-8 "+" variants load and run."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.models import load_model
from workbench.models.published import save_published_shape


@pytest.mark.parametrize(
    ("name", "width", "grid"),
    [
        ("vim-small", 384, 14),
        pytest.param("vim-base", 768, 14, marks=pytest.mark.slow),
        pytest.param("vim-small-plus", 384, 27, marks=pytest.mark.slow),
        pytest.param("vim-base-plus", 768, 27, marks=pytest.mark.slow),
    ],
)
def test_official_vim_shapes_load_with_their_widths_and_grids(name, width, grid, tmp_path):
    lm = load_model(save_published_shape(tmp_path / name, name, n_layers=1))
    assert (lm.family, lm.d_model, lm.image_size) == ("vim", width, 224)
    assert lm.n_patches == grid * grid  # stride 8 overlaps 16-px patches: 27 x 27
    assert lm.config.d_inner == 2 * width and lm.config.d_state == 16
    images = np.random.default_rng(0).integers(0, 255, (1, 224, 224, 3), dtype=np.uint8)
    out = lm(**lm.encode_images(images))
    assert out.logits.shape == (1, 1000) and np.isfinite(out.logits.numpy()).all()

"""Published architectures with random weights: real widths, real special tokens, loadable."""

from __future__ import annotations

import json

import pytest

from workbench import load_model
from workbench.models.published import SHAPES, parameter_count, save_published_shape


def test_full_sizes_match_the_published_parameter_counts():
    assert parameter_count("gpt2") == 124_439_808
    assert parameter_count("vit-base-patch16-224") == 86_567_656
    assert parameter_count("pythia-70m") == 70_426_624
    assert parameter_count("dinov2-small") == 22_056_576


@pytest.mark.parametrize("name", ["gpt2", "pythia-70m", "smollm-135m"])
def test_causal_lm_shapes_keep_widths_and_special_tokens(name, tmp_path):
    folder = save_published_shape(tmp_path / name, name, n_layers=1)
    lm = load_model(folder)
    config = SHAPES[name].config
    assert lm.n_layers == 1 and lm.d_model == config.get("hidden_size", config.get("n_embd"))
    tok = lm.processor
    assert tok.unk_token == "<|endoftext|>" == tok.eos_token  # as in the real tokenizers
    ids = tok("<|endoftext|>The module returns a list.")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|endoftext|>") == lm.config.eos_token_id
    assert tok.unk_token_id not in ids[1:]  # byte-level BPE: no unknown text
    assert lm.model.get_input_embeddings().weight.shape[0] == config["vocab_size"]


def test_vision_shape_with_registers_states_its_preprocessing(tmp_path):
    folder = save_published_shape(tmp_path / "d", "dinov2-small-registers", n_layers=1)
    lm = load_model(folder)
    assert lm.patch_size == 14 and lm.image_size == 224 and lm.n_prefix_tokens == 5
    assert lm.n_patches == 256 and lm.image_mean[0] == pytest.approx(0.485)


@pytest.mark.slow
def test_olmo2_states_bfloat16_like_the_hub_folder(tmp_path):
    folder = save_published_shape(tmp_path / "o", "olmo-2-1b", n_layers=1, tokenizer_vocab=2000)
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_model(folder).d_model == 2048

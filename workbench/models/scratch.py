"""Randomly initialised models of every supported family, saved as local Hugging Face folders.

They exercise the loader, capture and benchmarks offline, and serve as the "untrained copy"
control. Text models get a small word-level tokenizer so that they load like any hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"]
SCRATCH_KINDS = ("gpt2", "gpt_neox", "llama", "bert", "vit", "dinov2", "clip_vision", "vit_mae")


def save_word_tokenizer(folder: Path, words: list[str], *, bert_style: bool) -> None:
    """A whitespace word-level tokenizer over ``words`` plus the special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        specials = {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    else:
        specials = {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
        }
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(folder)


def save_random_model(
    folder: str | Path,
    kind: str,
    *,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    n_positions: int = 512,
    seed: int = 0,
    words: list[str] | None = None,
) -> Path:
    """Write a random ``kind`` model (see ``SCRATCH_KINDS``) to ``folder`` and return it."""
    import transformers as tf

    if kind not in SCRATCH_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(SCRATCH_KINDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = words or [f"w{i}" for i in range(250)]
    vocab_size = len(SPECIAL_TOKENS) + len(dict.fromkeys(words))
    common: dict[str, Any] = {
        "hidden_size": d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "intermediate_size": 4 * d_model,
    }
    vision: dict[str, Any] = {"image_size": image_size, "patch_size": patch_size}
    torch.manual_seed(seed)  # building a config draws no random numbers; the model's init does
    model: tf.PreTrainedModel
    if kind == "gpt2":
        gpt2 = tf.GPT2Config(
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            vocab_size=vocab_size,
            n_positions=n_positions,
            bos_token_id=5,
            eos_token_id=5,
        )
        model = tf.GPT2LMHeadModel(gpt2)
    elif kind == "gpt_neox":
        neox = tf.GPTNeoXConfig(
            **common,
            vocab_size=vocab_size,
            max_position_embeddings=n_positions,
            bos_token_id=5,
            eos_token_id=5,
        )
        model = tf.GPTNeoXForCausalLM(neox)
    elif kind == "llama":
        llama = tf.LlamaConfig(
            **common,
            vocab_size=vocab_size,
            num_key_value_heads=n_heads,
            max_position_embeddings=n_positions,
            bos_token_id=5,
            eos_token_id=5,
            pad_token_id=0,
        )
        model = tf.LlamaForCausalLM(llama)
    elif kind == "bert":
        bert = tf.BertConfig(**common, vocab_size=vocab_size, max_position_embeddings=n_positions)
        model = tf.BertModel(bert)
    elif kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(**common, **vision))
    elif kind == "dinov2":
        dinov2 = tf.Dinov2Config(**common | {"mlp_ratio": 4}, **vision)
        dinov2.intermediate_size = None
        model = tf.Dinov2Model(dinov2)
    elif kind == "clip_vision":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**common, **vision))
    else:  # vit_mae, the last of SCRATCH_KINDS
        model = tf.ViTMAEModel(tf.ViTMAEConfig(**common, **vision))
    model.save_pretrained(folder)
    if kind in ("gpt2", "gpt_neox", "llama", "bert"):
        save_word_tokenizer(folder, words, bert_style=kind == "bert")
    return folder

"""Real architectures with random weights: folders written from published configs.

Real checkpoints cannot always be downloaded (offline machines, CI), but their architectures can
be built: ``save_published_shape(folder, "gpt2")`` writes a randomly initialised GPT-2 124M
exactly as the hub folder lays it out (``config.json``, ``model.safetensors``, a byte-level BPE
tokenizer whose special tokens are the real ones, a ``preprocessor_config.json`` for vision
models). Tests take fewer layers with the real widths (``n_layers=2``); benchmarks the full
sizes. Random weights test plumbing, speed and memory, never science.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.errors import ModelNotFoundError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class Shape:
    """One published architecture: where it comes from and how to write it."""

    hub_id: str
    kind: str
    """``causal-lm``, ``encoder``, ``vit`` or ``vim``: what writer builds it."""
    config: dict[str, Any]
    """Published config.json fields (``model_type`` first); ``n_layers`` overrides the depth."""
    layers_key: str = "num_hidden_layers"
    specials: dict[str, str] = field(default_factory=dict)
    """Tokenizer special tokens by role, as in the real tokenizer (GPT-2's unk is
    ``<|endoftext|>``); ``extra`` lists further special tokens comma-separated."""
    preprocessor: dict[str, Any] = field(default_factory=dict)


_GPT2_SPECIALS = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"}

SHAPES: dict[str, Shape] = {
    "gpt2": Shape(
        "openai-community/gpt2",
        "causal-lm",
        {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": 50257,
            "n_positions": 1024,
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
        },
        layers_key="n_layer",
        specials=_GPT2_SPECIALS,
    ),
    "pythia-70m": Shape(
        "EleutherAI/pythia-70m",
        "causal-lm",
        {
            "model_type": "gpt_neox",
            "architectures": ["GPTNeoXForCausalLM"],
            "vocab_size": 50304,
            "hidden_size": 512,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "intermediate_size": 2048,
            "rotary_pct": 0.25,
            "rotary_emb_base": 10000,
            "max_position_embeddings": 2048,
            "use_parallel_residual": True,
            "layer_norm_eps": 1e-5,
            "hidden_act": "gelu",
            "tie_word_embeddings": False,
        },
        specials={**_GPT2_SPECIALS, "pad": "<|padding|>"},
    ),
    "smollm-135m": Shape(
        "HuggingFaceTB/SmolLM-135M",
        "causal-lm",
        {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": 49152,
            "hidden_size": 576,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "intermediate_size": 1536,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": True,
        },
        specials={**_GPT2_SPECIALS, "extra": "<|im_start|>,<|im_end|>"},
    ),
    "olmo-2-1b": Shape(
        "allenai/OLMo-2-0425-1B",
        "causal-lm",
        {
            "model_type": "olmo2",
            "architectures": ["Olmo2ForCausalLM"],
            "vocab_size": 100352,
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "intermediate_size": 8192,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_theta": 500000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
        specials={"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|pad|>"},
    ),
    "bert-base": Shape(
        "google-bert/bert-base-uncased",
        "encoder",
        {
            "model_type": "bert",
            "architectures": ["BertModel"],
            "vocab_size": 30522,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        },
        specials={
            "pad": "[PAD]",
            "unk": "[UNK]",
            "cls": "[CLS]",
            "sep": "[SEP]",
            "mask": "[MASK]",
        },
    ),
    "vit-base-patch16-224": Shape(
        "google/vit-base-patch16-224",
        "vit",
        {
            "model_type": "vit",
            "architectures": ["ViTForImageClassification"],
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 16,
            "layer_norm_eps": 1e-12,
            "qkv_bias": True,
            "num_labels": 1000,
        },
        preprocessor={
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": 224, "width": 224},
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
    ),
    "dinov2-small": Shape(
        "facebook/dinov2-small",
        "vit",
        {
            "model_type": "dinov2",
            "architectures": ["Dinov2Model"],
            "hidden_size": 384,
            "num_hidden_layers": 12,
            "num_attention_heads": 6,
            "mlp_ratio": 4,
            "image_size": 518,
            "patch_size": 14,
            "layerscale_value": 1.0,
        },
        preprocessor={
            "image_processor_type": "BitImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 256},
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "do_normalize": True,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
        },
    ),
    "dinov2-small-registers": Shape(
        "facebook/dinov2-with-registers-small",
        "vit",
        {
            "model_type": "dinov2_with_registers",
            "architectures": ["Dinov2WithRegistersModel"],
            "hidden_size": 384,
            "num_hidden_layers": 12,
            "num_attention_heads": 6,
            "mlp_ratio": 4,
            "image_size": 518,
            "patch_size": 14,
            "num_register_tokens": 4,
            "layerscale_value": 1.0,
        },
        preprocessor={
            "image_processor_type": "BitImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 256},
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "do_normalize": True,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
        },
    ),
    "clip-vit-base-patch32": Shape(
        "openai/clip-vit-base-patch32",
        "vit",
        {
            "model_type": "clip_vision_model",
            "architectures": ["CLIPVisionModel"],
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 32,
            "hidden_act": "quick_gelu",
            "projection_dim": 512,
        },
        preprocessor={
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 224},
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "do_normalize": True,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
        },
    ),
    "vit-mae-base": Shape(
        "facebook/vit-mae-base",
        "vit",
        {
            "model_type": "vit_mae",
            "architectures": ["ViTMAEModel"],
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 16,
            "mask_ratio": 0.75,
        },
        preprocessor={
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": 224, "width": 224},
            "do_normalize": True,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
        },
    ),
    **{
        f"vim-{size}{plus}": Shape(
            f"hustvl/Vim-{size}{plus}",
            "vim",
            {
                "model_type": "vim",
                "d_model": width,
                "n_layers": 24,
                "image_size": 224,
                "patch_size": 16,
                "stride": 8 if plus else 16,
                "num_classes": 1000,
            },
            layers_key="n_layers",
        )
        for size, width in (("tiny", 192), ("small", 384), ("base", 768))
        for plus in ("", "-plus")
    },
}
"""Published architectures by short name; ``hub_id`` says where the real weights live."""


@functools.lru_cache(maxsize=2)
def english_sample(max_chars: int = 500_000) -> str:
    """English prose that ships with Python itself: the standard library's docstrings.

    Read from the source files with ``ast`` (nothing is imported or run). Enough to train a
    byte-level BPE tokenizer offline; the text is under the PSF licence.
    """
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    parts.append(doc)
                    total += len(doc)
        if total >= max_chars:
            break
    return "\n\n".join(dict.fromkeys(parts))[:max_chars]


def save_bpe_tokenizer(folder: Path, specials: dict[str, str], *, vocab_size: int) -> dict:
    """A byte-level BPE (GPT-2 style) trained on ``english_sample``; returns the special ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokens = [t for role, t in specials.items() if role != "extra"]
    tokens += [t for t in specials.get("extra", "").split(",") if t]
    tokens = list(dict.fromkeys(tokens))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(english_sample().split("\n\n"), trainer=trainer)
    roles = {f"{role}_token": t for role, t in specials.items() if role != "extra"}
    extra = [t for t in specials.get("extra", "").split(",") if t]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, additional_special_tokens=extra or None, **roles
    )
    fast.save_pretrained(folder)
    return {role: tok.token_to_id(t) for role, t in specials.items() if role != "extra"}


def save_wordpiece_tokenizer(folder: Path, specials: dict[str, str], *, vocab_size: int) -> dict:
    """A BERT-style uncased WordPiece tokenizer trained on ``english_sample``."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # lazy export

    order = ["pad", "unk", "cls", "sep", "mask"]
    tok = Tokenizer(models.WordPiece(unk_token=specials["unk"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[specials[r] for r in order], show_progress=False
    )
    tok.train_from_iterator(english_sample().split("\n\n"), trainer=trainer)
    cls, sep = specials["cls"], specials["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok, **{f"{r}_token": specials[r] for r in order}, do_lower_case=True
    )
    fast.save_pretrained(folder)
    return {r: tok.token_to_id(specials[r]) for r in order}


def save_published_shape(
    folder: str | Path,
    name: str,
    *,
    n_layers: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    tokenizer_vocab: int = 8000,
) -> Path:
    """Write a randomly initialised ``name`` (a key of ``SHAPES``) to ``folder``; return it.

    ``n_layers`` keeps the real widths with fewer blocks (for tests); ``dtype`` defaults to the
    dtype the published config states (bfloat16 for OLMo-2, else float32). The tokenizer is trained
    to ``tokenizer_vocab`` entries (the model keeps its real vocabulary size), and the config's
    special-token ids point at the tokenizer's own.
    """
    if name not in SHAPES:
        raise ModelNotFoundError(f"no published shape {name!r}; known: {', '.join(SHAPES)}")
    shape = SHAPES[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = dict(shape.config)
    if n_layers is not None:
        values[shape.layers_key] = n_layers
    stated = values.pop("torch_dtype", "float32")
    dtype = dtype or getattr(torch, stated)
    if shape.kind == "vim":
        from workbench.models.vim import VimConfig, VisionMamba, save_pretrained

        torch.manual_seed(seed)
        config = VimConfig.from_dict(values)
        save_pretrained(VisionMamba(config).eval(), folder, dtype)
        return folder
    if shape.kind in ("causal-lm", "encoder"):
        save = save_wordpiece_tokenizer if shape.kind == "encoder" else save_bpe_tokenizer
        ids = save(folder, shape.specials, vocab_size=min(tokenizer_vocab, values["vocab_size"]))
        for role in ("bos", "eos", "pad"):
            if ids.get(role) is not None and shape.kind == "causal-lm":
                values[f"{role}_token_id"] = ids[role]
        if shape.kind == "encoder":
            values["pad_token_id"] = ids["pad"]
    _save_hf_model(folder, values, seed, dtype, stated)
    if shape.preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps(shape.preprocessor, indent=2))
    return folder


def _save_hf_model(
    folder: Path, values: dict[str, Any], seed: int, dtype: torch.dtype, stated: str
) -> None:
    import transformers as tf

    values = dict(values)
    model_type = values.pop("model_type")
    architecture = values.pop("architectures")[0]
    config = tf.AutoConfig.for_model(model_type, **values)
    torch.manual_seed(seed)
    model = getattr(tf, architecture)(config).to(dtype).eval()
    model.save_pretrained(folder)
    path = folder / "config.json"
    saved = json.loads(path.read_text())
    saved.pop("dtype", None)
    saved["torch_dtype"] = stated  # the dtype the published checkpoint states, as on the hub
    path.write_text(json.dumps(saved, indent=2))


def parameter_count(name: str) -> int:
    """Parameters of the full published model (for benchmark labels), from a meta-device build."""
    import transformers as tf

    shape = SHAPES[name]
    if shape.kind == "vim":
        from workbench.models.vim import VimConfig, VisionMamba

        with torch.device("meta"):
            return sum(
                p.numel() for p in VisionMamba(VimConfig.from_dict(shape.config)).parameters()
            )
    values = dict(shape.config)
    model_type = values.pop("model_type")
    architecture = values.pop("architectures")[0]
    values.pop("torch_dtype", None)
    with torch.device("meta"):
        model = getattr(tf, architecture)(tf.AutoConfig.for_model(model_type, **values))
    return sum(p.numel() for p in model.parameters())

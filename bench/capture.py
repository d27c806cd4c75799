"""Capture overhead: every block output of a GPT-2-shape model vs a bare forward.

A 6-layer, d=384 GPT-2 (random weights, GPT-2's vocabulary size) runs 8 x 256 tokens three ways,
interleaved round by round so that machine noise hits all of them alike:
bare Hugging Face forward, ``workbench.capture`` of every ``blocks.{i}.resid_post``, and
TransformerLens ``TransformerBridge.run_with_cache`` on the same weights. Ratios are medians
over rounds against the bare forward.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from workbench.capture import capture
from workbench.models import load_model

from _common import interleaved_medians, save_reference_gpt2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_reference_gpt2(Path(tmp) / "gpt2-6x384")
        lm = load_model(folder)
        bridge = load_model(folder, backend="transformer-lens")
        ids = torch.randint(6, lm.model.config.vocab_size, (args.batch, args.tokens))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        sites = lm.layer_sites("resid_post")
        hook_names = [bridge.site(s).module for s in sites]

        def bare() -> None:
            lm(**inputs)

        def ours() -> None:
            capture(lm, inputs, sites, batch_size=args.batch, progress=False)

        def tl_cache() -> None:
            with torch.no_grad():
                bridge.model.run_with_cache(ids, names_filter=hook_names)

        def tl_cache_all() -> None:
            with torch.no_grad():
                bridge.model.run_with_cache(ids)

        runs = {"bare": bare, "capture": ours, "tl": tl_cache, "tl_all": tl_cache_all}
        med = interleaved_medians(runs, args.rounds)

    print(f"model: gpt2 6 x d384, {args.batch} x {args.tokens} tokens, {args.rounds} rounds")
    labels = {
        "bare": "bare HF forward",
        "capture": "workbench.capture (6 block outputs)",
        "tl": "TL bridge run_with_cache (same 6)",
        "tl_all": "TL bridge run_with_cache (all hooks)",
    }
    for key, label in labels.items():
        print(f"  {label:<38} median {med[key] * 1e3:8.1f} ms  ({med[key] / med['bare']:.3f}x)")
    print(
        f"bench capture: overhead={med['capture'] / med['bare']:.3f} "
        f"tl_cache={med['tl'] / med['bare']:.3f} tl_cache_all={med['tl_all'] / med['bare']:.3f}"
    )


if __name__ == "__main__":
    main()

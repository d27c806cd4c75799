"""PMI costs: the memory step against self-attention, and recording every memory tensor.

The zoo PMI-Transformer and its same-size Transformer control read the same 256 held-out
stories three ways, interleaved round by round so that machine noise hits all of them alike:
the control's bare forward, the PMI model's bare forward, and ``workbench.capture`` of every
site of the PMI model (all internal tensors of every step, as the probe records them). Ratios
are medians over rounds:

- ``memory_step_cost``: PMI forward / control forward (what the memory costs at this size);
- ``capture_overhead``: PMI forward with every site captured / bare PMI forward.
"""

from __future__ import annotations

import argparse

import torch

from workbench.capture import capture
from workbench.data.stories import make_stories
from workbench.models import load_model

from _common import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--stories", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pmi = load_model("zoo:pmi-stories")
    control = load_model("zoo:pmi-stories-control")
    texts = [s.text for s in make_stories(args.stories, seed=30_000)]
    inputs = pmi.encode_texts(texts)
    sites = pmi.site_names()

    def batched(model) -> None:
        for start in range(0, args.stories, args.batch):
            model(**{k: v[start : start + args.batch] for k, v in inputs.items()})

    def captured() -> None:
        cache = capture(pmi, inputs, sites, batch_size=args.batch, progress=False)
        cache.close()

    runs = {"control": lambda: batched(control), "pmi": lambda: batched(pmi), "capture": captured}
    med = interleaved_medians(runs, args.rounds)
    print(
        f"{args.stories} stories, batch {args.batch}, {args.threads} thread(s), {args.rounds} "
        f"rounds; {len(sites)} PMI sites captured"
    )
    for key, label in (
        ("control", "Transformer control forward"),
        ("pmi", "PMI-Transformer forward"),
        ("capture", "PMI forward + capture of every site"),
    ):
        print(f"  {label:<38} {med[key] * 1000:8.1f} ms")
    print(
        f"bench pmi: memory_step_cost={med['pmi'] / med['control']:.2f} "
        f"capture_overhead={med['capture'] / med['pmi']:.2f}"
    )


if __name__ == "__main__":
    main()

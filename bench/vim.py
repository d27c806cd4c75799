"""Vision Mamba on the CPU: hidden attention vectorised vs a per-(i, j) loop, and forward speed.

1. Hidden attention of one scan direction at Vim-S size (L = 197 tokens, E = 384 channels,
   N = 16 states), one image: ``probes.vim.compute.hidden_attention`` (cumulative sums of Δ,
   one batched product per block of positions, no exponent above its limit) against its floor,
   one einsum contracting the same E x L x L x N products (``floor_ratio``: at most 2 is the
   target), and against two per-(i, j) loops: the way the reference code (HiddenMambaAttn)
   computes α_ij = C_i (Π_{k=j+1..i} Ā_k) B̄_j, multiplying the decays of each pair
   (``speedup``), and a loop that already uses the closed form exp(A (S_i − S_j)) per pair
   (``hidden_attention_pairwise``; ``speedup_closed_form``). Inputs follow Mamba's
   initialisation (Δ between 1e-3 and 1e-1, A = −(1..16)). All run with denormals flushed.
2. Images per second of the CPU forward of the zoo Vim (``zoo:vim-scenes``, or a random Vim of
   the same shape if it is not built), plain and while capturing every layer's hidden states
   (``ssm.{i}.{fwd,bwd}.h``, batch x L x E x N each), and of a random Vim-Ti at 224 px.
3. The vim probe's quick preset on a random Vim-Ti (24 layers, D = 192) at 224 px, once:
   wall time (``quick_vim_ti_s``; target at most 180 s on a 2-core CPU).

Rounds interleave the contenders so that machine load hits them alike; ratios are medians.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from probes.vim.compute import hidden_attention, hidden_attention_pairwise
from workbench.capture import capture
from workbench.errors import ModelNotFoundError
from workbench.models import LoadedModel, load_model
from workbench.models.vim import VimConfig, VisionMamba, flush_denormals, vim_sites, vim_weights

from _common import interleaved_medians


def attention_inputs(L: int, E: int, N: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    log_dt = torch.rand(E, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    delta = torch.exp(log_dt + 0.3 * torch.randn(1, L, E, generator=g))
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)
    B = torch.randn(1, L, N, generator=g)
    C = torch.randn(1, L, N, generator=g)
    return delta, A, B, C


def product_loop(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor):
    """α as the reference computes it: per (i, j), the product of Ā_k = exp(Δ_k A), k = j+1..i."""
    _, L, E = delta.shape
    decay = torch.exp(delta[0, :, :, None] * A)  # Ā_k: (L, E, N)
    drive = delta[0, :, :, None] * B[0, :, None, :]  # B̄_j: (L, E, N)
    out = torch.zeros(1, E, L, L)
    for i in range(L):
        for j in range(i + 1):
            product = torch.ones_like(decay[0])
            for k in range(j + 1, i + 1):
                product = product * decay[k]
            out[0, :, i, j] = (C[0, i] * product * drive[j]).sum(-1)
    return out


def zoo_or_random() -> LoadedModel:
    try:
        return load_model("zoo:vim-scenes")
    except ModelNotFoundError:
        from workbench.zoo.vim_scenes import vim_config

        return _random(vim_config(), "random vim-scenes shape")


def _random(config: VimConfig, spec: str) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(
        spec=spec,
        family="vim",
        model=VisionMamba(config).eval(),
        processor=None,
        sites=vim_sites(config.n_layers),
        n_layers=config.n_layers,
        d_model=config.d_model,
        model_type="vim",
        image_size=config.image_size,
        patch_size=config.stride,
        weights=vim_weights(config.n_layers),
    )


def quick_preset_seconds(model: LoadedModel) -> float:
    """Wall time of the vim probe's quick preset on ``model`` (no side-by-side ViT)."""
    import time

    from probes import vim
    from workbench.probe import make_config

    config = make_config("vim", preset="quick", params={"compare_with": ""})
    start = time.perf_counter()
    vim.run(model, config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)

    delta, A, B, C = attention_inputs(197, 384, 16)
    with flush_denormals():
        fast = hidden_attention(delta, A, B, C)
        slow = hidden_attention_pairwise(delta, A, B, C)
        error = float((fast - slow).abs().max() / slow.abs().max())
        g = torch.Generator().manual_seed(1)
        P, Q = (torch.randn(384, 197, 16, generator=g) for _ in range(2))
        attention = interleaved_medians(
            {
                "floor": lambda: torch.einsum("ein,ejn->eij", P, Q),
                "product": lambda: product_loop(delta, A, B, C),
                "pairwise": lambda: hidden_attention_pairwise(delta, A, B, C),
                "fast": lambda: hidden_attention(delta, A, B, C),
            },
            args.rounds,
            warm_up=False,
        )

        lm = zoo_or_random()
        images = np.random.default_rng(0).integers(
            0, 255, (args.images, lm.image_size, lm.image_size, 3), dtype=np.uint8
        )
        batch = lm.encode_images(images)
        states = [f"ssm.{i}.{d}.h" for i in range(lm.n_layers) for d in ("fwd", "bwd")]
        ti = _random(VimConfig(), "random Vim-Ti")
        ti_batch = ti.encode_images(images[:2].repeat(4, axis=1).repeat(4, axis=2)[:, :224, :224])
        forward = interleaved_medians(
            {
                "plain": lambda: lm(**batch),
                "states": lambda: capture(
                    lm, batch, states, batch_size=args.images, progress=False
                ),
                "ti": lambda: ti(**ti_batch),
            },
            args.rounds,
        )

        quick_s = quick_preset_seconds(ti)

    fast_s, slow_s, product_s = attention["fast"], attention["pairwise"], attention["product"]
    floor_s = attention["floor"]
    plain, with_states, ti_s = forward["plain"], forward["states"], forward["ti"]
    print(
        f"hidden attention L=197 E=384 N=16: vectorised {fast_s * 1e3:.0f} ms, its floor (one "
        f"einsum over the same E x L x L x N products) {floor_s * 1e3:.0f} ms; per-(i, j) "
        f"loops: reference-style product {product_s:.1f} s, closed form {slow_s:.1f} s; max "
        f"relative difference {error:.1e}"
    )
    print(
        f"{lm.spec}: {args.images / plain:.1f} images/s plain, "
        f"{args.images / with_states:.1f} images/s capturing all hidden states"
    )
    print(f"random Vim-Ti (224 px): {2 / ti_s:.2f} images/s; quick preset {quick_s:.0f} s")
    print(
        f"bench vim: speedup={product_s / fast_s:.1f} floor_ratio={fast_s / floor_s:.2f} "
        f"speedup_closed_form={slow_s / fast_s:.1f} floor_ms={floor_s * 1e3:.0f} "
        f"attention_ms={fast_s * 1e3:.0f} product_loop_s={product_s:.2f} "
        f"pairwise_s={slow_s:.2f} images_per_s={args.images / plain:.1f} "
        f"images_per_s_states={args.images / with_states:.1f} "
        f"states_overhead={with_states / plain:.2f} "
        f"vim_ti_images_per_s={2 / ti_s:.2f} quick_vim_ti_s={quick_s:.0f}"
    )


if __name__ == "__main__":
    main()

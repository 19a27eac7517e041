"""Test helpers: the reference model is Hugging Face transformers' ``SegformerModel``; a free port.

Nothing here is copied from ``segformer_lite``: the variant table, the weight draw and
the error measure are written out independently so the tests compare two implementations.
transformers is imported lazily (it takes seconds) so notebook and browser tests do not pay for it.
"""
from __future__ import annotations

import math
import socket

import torch

# MiT-B0 ... B5 as released (NVlabs mix_transformer.py: mit_b0 ... mit_b5), written out here
# rather than read from segformer_lite.VARIANTS so a wrong entry there cannot hide.
_WIDE = [64, 128, 320, 512]
HF_VARIANTS = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "b1": dict(hidden_sizes=_WIDE, depths=[2, 2, 2, 2]),
    "b2": dict(hidden_sizes=_WIDE, depths=[3, 4, 6, 3]),
    "b3": dict(hidden_sizes=_WIDE, depths=[3, 4, 18, 3]),
    "b4": dict(hidden_sizes=_WIDE, depths=[3, 8, 27, 3]),
    "b5": dict(hidden_sizes=_WIDE, depths=[3, 6, 40, 3]),
}
HEADS = [1, 2, 5, 8]
SR_RATIOS = [8, 4, 2, 1]


def hf_config(variant: str, **overrides):
    from transformers import SegformerConfig

    kwargs = dict(HF_VARIANTS[variant], num_attention_heads=HEADS, sr_ratios=SR_RATIOS)
    return SegformerConfig(**{**kwargs, **overrides})


@torch.no_grad()
def unit_scale_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Draw every parameter afresh so that every part of the network shows in the output.

    transformers' own init (Linear std .02, LayerNorms at weight 1 / bias 0, zero biases) keeps
    each residual branch tiny next to the residual stream: a swapped norm, a dropped bias or the
    tanh GELU in place of the exact one would move the outputs by less than the 1e-5 tolerance.
    Here weights are N(0, 1 / fan_in) (activations stay O(1)), norm weights 1 + N(0, .3^2),
    biases N(0, .3^2).
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            base = 1.0 if "norm" in name and name.endswith(".weight") else 0.0
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    for m in model.modules():  # BatchNorm of a decode head: running mean 0, var 1
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return model


def hf_segformer(variant: str = "b0", seed: int = 0, cls_name: str = "SegformerModel", **overrides):
    """A randomly initialised transformers Segformer in eval mode with eager attention
    (transformers 5.x returns no attention maps under its default sdpa). It is built on the meta
    device and filled by :func:`unit_scale_`, which skips transformers' slower init."""
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, cls_name)(hf_config(variant, **overrides))
    model = unit_scale_(model.to_empty(device="cpu"), seed).eval()
    assert all(torch.isfinite(t).all() for t in (*model.parameters(), *model.buffers()))
    model.set_attn_implementation("eager")
    return model


def rel_err(ref: torch.Tensor, got: torch.Tensor) -> float:
    """max |got - ref| / max |ref|: the parity measure docs and benchmarks quote."""
    assert ref.shape == got.shape, f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for gloo and torchrun)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

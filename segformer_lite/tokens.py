"""Image <-> token reshaping.

A transformer layer wants a sequence ``(B, N, C)``; a convolution wants an image
``(B, C, H, W)``. MiT switches between the two in every block, so the grid size ``(H, W)``
travels beside the tokens: ``N = H * W`` cannot be undone without it (a 32x8 grid and a
16x16 grid both give N = 256, and ``sqrt(N)`` is only right for square images).
"""
from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["image_to_tokens", "tokens_to_image"]


def image_to_tokens(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, C, H, W)`` -> ``(B, H*W, C)`` tokens in row-major order, plus ``(H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D image tensor (B, C, H, W), got {x.ndim}-D shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    return rearrange(x, "b c h w -> b (h w) c"), (h, w)


def tokens_to_image(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> ``(B, C, H, W)``; ``hw`` is the grid the tokens came from.

    The result is a view (no copy) with channels-last strides, which is what
    ``torch.nn.Conv2d`` runs fastest on CPU.
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (B, N, C), got {type(tokens).__name__}")
    if tokens.ndim != 3:
        raise ValueError(f"expected 3-D tokens (B, N, C), got {tokens.ndim}-D shape {tuple(tokens.shape)}")
    try:  # a symbolic size (torch.export, ONNX export) stays symbolic: int() would fix it to the traced value
        h, w = (v if isinstance(v, torch.SymInt) else int(v) for v in hw)
    except (TypeError, ValueError):
        raise TypeError(f"hw must be a pair of ints (H, W), got {hw!r}") from None
    if h * w != tokens.shape[1]:
        raise ValueError(f"token count N={tokens.shape[1]} does not match the grid "
                         f"H*W = {h}*{w} = {h * w}")
    return rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)

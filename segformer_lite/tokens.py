"""Image <-> token reshaping, and the checks of what comes in: an ``(H, W)`` pair, an image array.

A transformer layer wants a sequence ``(B, N, C)``; a convolution wants an image
``(B, C, H, W)``. MiT switches between the two in every block, so the grid size ``(H, W)``
travels beside the tokens: ``N = H * W`` cannot be undone without it (a 32x8 grid and a
16x16 grid both give N = 256, and ``sqrt(N)`` is only right for square images).
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from einops import rearrange

__all__ = ["image_to_tokens", "tokens_to_image", "int_pair", "image_to_tensor"]


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
    h, w = int_pair("hw", hw)
    if h * w != tokens.shape[1]:
        raise ValueError(f"token count N={tokens.shape[1]} does not match the grid "
                         f"H*W = {h}*{w} = {h * w}")
    return rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)


def int_pair(name: str, value, what: str = "(H, W)") -> tuple[int, int]:
    """``value`` as a pair of ints ``what`` (numpy ints too, never bools), else a TypeError naming
    ``name``. A symbolic size (torch.export, ONNX export) stays symbolic: ``int()`` would fix it
    to the traced value."""
    try:
        pair = tuple(value)
        if len(pair) != 2 or any(isinstance(v, bool) for v in pair):
            raise TypeError
        return tuple(v if isinstance(v, torch.SymInt) else operator.index(v) for v in pair)
    except TypeError:
        raise TypeError(f"{name} must be a pair of ints {what}, got {value!r}") from None


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """An ``(H, W, 3)`` image array -> a ``(3, H, W)`` float32 tensor: uint8 scaled to ``[0, 1]``,
    floating-point values kept as they are."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image array, got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W), a view of a copy (photos are read-only)
    return x.float() / 255.0 if image.dtype == np.uint8 else x.float()

"""Efficient self-attention with sequence reduction, and plain full attention for comparison."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .tokens import tokens_to_image

__all__ = ["EfficientSelfAttention", "FullSelfAttention"]


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from a shrunken grid.

    Queries come from all N tokens. When ``sr_ratio > 1`` the tokens are put back on their
    ``(H, W)`` grid, reduced by a Conv2d with kernel = stride = sr_ratio and normalised, so
    keys and values have ``M = floor(H / sr) * floor(W / sr)`` tokens (``N / sr**2`` when sr
    divides H and W; :func:`segformer_lite.grid.reduced_grid`): the score matrix shrinks by ``N / M``.
    Heads split the channels (each head sees every token through ``dim / heads`` channels).
    K and V share one fused Linear as in the official code: rows ``[:dim]`` are K, ``[dim:]`` V.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim} (heads split the channels)")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=eps)

    def reduce(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The tokens keys and values are computed from: ``(B, N, C) -> (B, M, C)``, M = floor(H/sr) * floor(W/sr)."""
        if self.sr_ratio == 1:
            return x
        x = self.sr(tokens_to_image(x, hw))  # (B, C, floor(H/sr), floor(W/sr))
        return self.norm(rearrange(x, "b c h w -> b (h w) c"))  # (B, M, C)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], return_attention: bool = False):
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)  # (B, heads, N, d)
        kv = self.kv(self.reduce(x, hw))  # (B, M, 2C), M = floor(H/sr) * floor(W/sr)
        k, v = rearrange(kv, "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        if return_attention:
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # (B, heads, N, M)
            out = attn @ v
        else:  # fused kernel: never materialises the (N, M) score matrix
            attn, out = None, F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, C)
        return (out, attn) if return_attention else out


class FullSelfAttention(EfficientSelfAttention):
    """The ViT baseline: every token attends to every token (``sr_ratio = 1``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__(dim, num_heads, sr_ratio=1, qkv_bias=qkv_bias)

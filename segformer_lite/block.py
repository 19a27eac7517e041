"""The MiT block: pre-norm efficient self-attention and pre-norm Mix-FFN, each residual."""
from __future__ import annotations

import torch
from torch import nn

from .attention import EfficientSelfAttention
from .mix_ffn import MixFFN

__all__ = ["Block", "DropPath"]


class DropPath(nn.Module):
    """Stochastic depth: in training, drop the whole residual branch for a random subset of
    samples and rescale the rest by ``1 / keep``; identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """``x = x + DropPath(Attn(LN(x)));  x = x + DropPath(MixFFN(LN(x)))``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int = 4,
                 qkv_bias: bool = True, drop_path: float = 0.0, eps: float = 1e-6,
                 embed_eps: float = 1e-5, act: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, eps=embed_eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = MixFFN(dim, dim * mlp_ratio, act)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), hw, return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x), hw), None
        x = x + self.drop_path(y)
        del y  # free the attention output: alive through the Mix-FFN it adds one (B, N, C) to the peak
        x = x + self.drop_path(self.ffn(self.norm2(x), hw))
        return (x, attn) if return_attention else x

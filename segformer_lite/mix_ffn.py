"""Mix-FFN: the MLP with a depthwise 3x3 convolution between its two Linears."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .tokens import tokens_to_image

__all__ = ["MixFFN"]


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 Conv2d -> GELU -> Linear.

    The depthwise conv mixes each channel with its 3x3 neighbourhood. Its zero padding lets
    tokens near the border "feel" the edge, which leaks enough position information that MiT
    needs no positional embedding and runs at any resolution.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.dwconv(tokens_to_image(self.fc1(x), hw))  # (B, hidden, H, W)
        x = rearrange(x, "b c h w -> b (h w) c")  # (B, N, hidden), a view: the conv kept channels last
        x = F.gelu(x)  # exact (erf) GELU, as the official code and transformers
        return self.fc2(x)  # (B, N, C)

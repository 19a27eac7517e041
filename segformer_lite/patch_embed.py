"""Overlapping patch embedding: a strided Conv2d whose kernel is larger than its stride."""
from __future__ import annotations

import torch
from torch import nn

from .tokens import image_to_tokens

__all__ = ["OverlapPatchEmbed"]


class OverlapPatchEmbed(nn.Module):
    """Conv2d(k, s, padding k//2) then LayerNorm over channels.

    With k > s neighbouring patches share pixels, so each token also sees its neighbours'
    borders (stage 1 of MiT: k=7, s=4, so a patch overlaps the next by 3 pixels).
    Returns tokens ``(B, H'*W', C)`` and the grid ``(H', W')``, ``H' = ceil(H / s)`` (see
    :func:`segformer_lite.grid.conv_output_size`).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int = 7, stride: int = 4,
                 eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=stride,
                              padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, C, H', W')
        tokens, hw = image_to_tokens(x)  # (B, H'*W', C)
        return self.norm(tokens), hw

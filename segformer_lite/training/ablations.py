"""The designs the experiments compare: the released SegFormer and versions with one part
swapped or taken away. Each swapped part is a small module that slots into a SegFormer in place
of the released one, so everything else (init, optimiser, data, loss) stays the same.

- ``mit``: MiT-B0 as released (Mix-FFN, sr_ratios (8, 4, 2, 1), the head on all four stages).
- ``pos-embed``: a ViT-style learned positional embedding after every patch embedding
  (:class:`PositionalEmbedding`) and a plain MLP in place of Mix-FFN (:class:`PlainMLP`): the
  design the paper's Table 1c compares Mix-FFN against.
- ``head-stage1`` / ``head-stage4``: the all-MLP head fed one stage only (:class:`HeadOn`).
- ``sr-1111``: full attention in every stage (no sequence reduction).
- ``sr-16842``: twice the released reduction; at 64 px every stage keeps one key.
- ``local-cnn``: the local baseline of ``baselines.py`` (receptive field 7 px), for comparison.
- ``dilated-cnn``: a CNN whose theoretical receptive field (63 px) spans the image, for comparison.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import mit_config
from ..decoder import AllMLPDecoder, SegFormer
from ..encoder import init_weights
from ..grid import stage_grid_sizes
from ..patch_embed import OverlapPatchEmbed
from .baselines import DilatedCNN, LocalCNN
from .data import CLASSES

__all__ = ["DESIGNS", "PositionalEmbedding", "PlainMLP", "HeadOn", "build_design", "SR_RATIOS", "HEAD_STAGES"]

SR_RATIOS = {"sr-1111": (1, 1, 1, 1), "sr-16842": (16, 8, 4, 2)}
HEAD_STAGES = {"head-stage1": (0,), "head-stage4": (3,)}
DESIGNS = ("mit", "pos-embed", *HEAD_STAGES, *SR_RATIOS, "local-cnn", "dilated-cnn")


class PositionalEmbedding(OverlapPatchEmbed):
    """An overlapping patch embedding followed by a learned positional embedding, one vector per
    cell of the training grid; on another grid the table is resized (bicubic), as ViT does at a new
    resolution. Takes over ``patch_embed``'s weights."""

    def __init__(self, patch_embed: OverlapPatchEmbed, grid: tuple[int, int]):
        conv = patch_embed.proj
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                         patch_embed.norm.eps)
        self.load_state_dict(patch_embed.state_dict())
        self.pos = nn.Parameter(torch.empty(1, conv.out_channels, *grid))  # (1, C, H_train, W_train)
        nn.init.trunc_normal_(self.pos, std=0.02)  # ViT's init

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, hw = super().forward(x)  # (B, N, C)
        pos = self.pos
        if tuple(hw) != tuple(pos.shape[-2:]):
            pos = F.interpolate(pos, size=hw, mode="bicubic", align_corners=False)  # (1, C, H, W)
        return x + rearrange(pos, "1 c h w -> 1 (h w) c"), hw


class PlainMLP(nn.Module):
    """Mix-FFN without its depthwise conv: ``Linear -> GELU -> Linear``, each token on its own."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # hw unused: no token looks at another


class HeadOn(nn.Module):
    """The all-MLP head fed only the feature maps of ``stages`` (0-based), each resized to stage 1's
    grid first. The head's per-pixel Linear and the bilinear resize commute (its weights sum to 1),
    so with all four stages this computes the released head's logits."""

    def __init__(self, stages: tuple[int, ...], in_dims: tuple[int, ...], num_classes: int,
                 decoder_dim: int, dropout: float):
        super().__init__()
        self.stages = tuple(stages)
        self.head = AllMLPDecoder(tuple(in_dims[i] for i in self.stages), num_classes, decoder_dim, dropout)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]  # stage 1's grid: 1/4 of the image
        return self.head([F.interpolate(feats[i], size=size, mode="bilinear", align_corners=False)
                          for i in self.stages])

    def extra_repr(self) -> str:
        return f"stages={self.stages}"


def build_design(design: str, image_size: int = 64, decoder_dim: int = 128) -> nn.Module:
    """A freshly initialised model of ``design`` (one of :data:`DESIGNS`) for the synthetic shapes,
    MiT-B0 widths without dropout or drop-path (the context recipe); ``image_size`` is the training
    size, which fixes the grid of ``pos-embed``'s tables. Seed torch first for a repeatable init."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if design == "local-cnn":
        return LocalCNN(len(CLASSES))
    if design == "dilated-cnn":
        return DilatedCNN(len(CLASSES))
    cfg = dataclasses.replace(mit_config("b0"), drop_path_rate=0.0,
                              sr_ratios=SR_RATIOS.get(design, mit_config("b0").sr_ratios))
    model = SegFormer(cfg, len(CLASSES), decoder_dim, dropout=0.0)
    if design == "pos-embed":
        grids = stage_grid_sizes(cfg, image_size, image_size)
        for i, (stage, grid) in enumerate(zip(model.encoder.stages, grids)):
            dim = cfg.embed_dims[i]
            stage.patch_embed = PositionalEmbedding(stage.patch_embed, grid)
            for block in stage.blocks:
                block.ffn = PlainMLP(dim, dim * cfg.mlp_ratios[i])
                block.ffn.apply(init_weights)  # the official Linear init, as Mix-FFN's
    elif design in HEAD_STAGES:
        model.decode_head = HeadOn(HEAD_STAGES[design], cfg.embed_dims, len(CLASSES), decoder_dim, 0.0)
    return model

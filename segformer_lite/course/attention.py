"""Attention maps read out of efficient self-attention: where one query token looks.

* :func:`attention_for_query` works with any :class:`~segformer_lite.EfficientSelfAttention`
  (given a feature map) or any :class:`~segformer_lite.MixTransformer` (given an image and a
  block index) and returns an :class:`AttentionMap`: one query's weights over the key/value grid.
* :func:`encoder_attention` runs a :class:`~segformer_lite.MixTransformer` once and returns every
  block's weights with their grids (:class:`BlockAttention`), to read many maps from one pass.
* :func:`attend_split` runs attention with the heads made by any einops split (notebook 03's
  experiment on splitting the tokens instead of the channels; its code is shown after the exercise).
* :func:`colour_position_features` and :func:`colour_position_attention` build a layer whose
  attention *means* something without training: head 0 compares colours, head 1 compares
  positions. A randomly initialised layer attends almost uniformly, which shows nothing.

The pictures and the slider are ``widgets/attention_map.py``'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..attention import EfficientSelfAttention
from ..encoder import MixTransformer
from ..grid import reduced_grid, stage_grid_sizes
from ..tokens import image_to_tensor, image_to_tokens, int_pair

__all__ = ["AttentionMap", "BlockAttention", "attention_for_query", "encoder_attention", "query_attention",
           "scale_query", "colour_position_features", "colour_position_attention", "HEAD_NAMES", "attend_split"]

COLOUR_CHANNELS, POSITION_CHANNELS = 6, 4  # cos/sin of r, g, b; cos/sin of y, x
HEAD_DIM = 2 * COLOUR_CHANNELS  # each feature and its negation: head 0 colour, head 1 position
HEAD_NAMES = ("colour", "position")


@dataclass(frozen=True)
class AttentionMap:
    """The attention weights of one query token over the (reduced) key/value grid.

    ``weights`` has shape ``kv_grid`` and sums to 1. Key/value cell ``(i, j)`` was pooled from
    tokens ``[i*sr, (i+1)*sr) x [j*sr, (j+1)*sr)`` of the ``grid`` the query lives on.
    """

    weights: np.ndarray
    grid: tuple[int, int]
    kv_grid: tuple[int, int]
    sr_ratio: int
    query: tuple[int, int]
    head: int


def attend_split(x: torch.Tensor, projections: tuple[nn.Module, nn.Module, nn.Module], split: str,
                 heads: int) -> torch.Tensor:
    """Attention over the tokens ``x`` (B, N, C), with the query, key and value layers
    ``projections``, the heads made by the einops pattern ``split`` ("b n (h d) -> b h n d" splits
    the channels, "b (h t) e -> b h t e" the tokens) and put back by the same pattern read
    backwards."""
    q, k, v = (rearrange(p(x), split, h=heads) for p in projections)  # (B, heads, ., .)
    out = F.scaled_dot_product_attention(q, k, v)
    source, target = split.split("->")
    return rearrange(out, f"{target.strip()} -> {source.strip()}", h=heads)  # (B, N, C)


def _check_query(query_rc, grid: tuple[int, int]) -> tuple[int, int]:
    r, c = int_pair("query_rc", query_rc, "(row, col)")
    h, w = grid
    if not (0 <= r < h and 0 <= c < w):
        raise ValueError(f"query (row={r}, col={c}) is outside the {h}x{w} token grid "
                         f"(rows 0..{h - 1}, cols 0..{w - 1})")
    return r, c


def query_attention(attn: torch.Tensor, grid: tuple[int, int], kv_grid: tuple[int, int],
                    query_rc, head: int = 0, sr_ratio: int = 1) -> AttentionMap:
    """Pick one query's row out of an attention tensor ``(B, heads, N, M)`` (batch item 0)."""
    if not isinstance(attn, torch.Tensor) or attn.ndim != 4:
        raise ValueError("expected attention weights of shape (B, heads, N, M), got "
                         f"{getattr(attn, 'shape', type(attn).__name__)}")
    (h, w), (kh, kw) = grid, kv_grid
    if attn.shape[-2:] != (h * w, kh * kw):
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not fit a {h}x{w} query grid "
                         f"and a {kh}x{kw} key grid (expected N={h * w}, M={kh * kw})")
    heads = attn.shape[1]
    if not isinstance(head, int) or not 0 <= head < heads:
        raise ValueError(f"head must be an int in 0..{heads - 1} (this layer has {heads} heads), got {head!r}")
    r, c = _check_query(query_rc, grid)
    row = attn[0, head, r * w + c].detach().float().reshape(kh, kw)  # tokens are row-major
    return AttentionMap(row.cpu().numpy(), (h, w), (kh, kw), sr_ratio, (r, c), head)


def scale_query(query_rc, from_grid: tuple[int, int], to_grid: tuple[int, int]) -> tuple[int, int]:
    """The token of ``to_grid`` that covers token ``query_rc`` of ``from_grid`` (same image)."""
    r, c = _check_query(query_rc, from_grid)
    return r * to_grid[0] // from_grid[0], c * to_grid[1] // from_grid[1]


@dataclass(frozen=True)
class BlockAttention:
    """All attention weights of one encoder block, with the grids needed to read them."""

    weights: torch.Tensor  # (B, heads, N, M)
    grid: tuple[int, int]  # the stage's query grid, N = H * W
    kv_grid: tuple[int, int]  # the reduced key/value grid, M = H' * W'
    sr_ratio: int
    stage: int  # 0-based

    def query(self, query_rc, head: int = 0) -> AttentionMap:
        """One query's :class:`AttentionMap` (batch item 0)."""
        return query_attention(self.weights, self.grid, self.kv_grid, query_rc, head, self.sr_ratio)


@torch.no_grad()
def encoder_attention(model: MixTransformer, image: torch.Tensor) -> list[BlockAttention]:
    """Run ``model`` once on ``image`` and return every block's attention, in block order."""
    if not isinstance(model, MixTransformer):
        raise TypeError(f"expected a MixTransformer, got {type(model).__name__}")
    _, attns = model(image, return_attention=True)
    cfg, out = model.config, []
    for stage, grid in enumerate(stage_grid_sizes(cfg, *image.shape[-2:])):
        sr = cfg.sr_ratios[stage]
        for _ in range(cfg.depths[stage]):
            out.append(BlockAttention(attns[len(out)], grid, reduced_grid(grid, sr), sr, stage))
    return out


@torch.no_grad()
def attention_for_query(layer_or_model, image: torch.Tensor, query_rc, head: int = 0,
                        block: int = 0) -> AttentionMap:
    """One query token's attention over the key/value grid.

    * ``layer_or_model`` an :class:`EfficientSelfAttention`: ``image`` is its input as a feature
      map ``(1, C, H, W)``; ``query_rc`` a token of that ``H x W`` grid.
    * a :class:`MixTransformer`: ``image`` is ``(1, 3, H, W)``; ``block`` counts blocks over all
      stages (0 .. sum(depths) - 1); ``query_rc`` is a token of that block's stage grid.
    """
    if isinstance(layer_or_model, MixTransformer):
        depths = layer_or_model.config.depths
        if not isinstance(block, int) or not 0 <= block < sum(depths):
            raise ValueError(f"block must be an int in 0..{sum(depths) - 1} (this encoder has "
                             f"{sum(depths)} blocks, depths {depths}), got {block!r}")
        return encoder_attention(layer_or_model, image)[block].query(query_rc, head)
    if isinstance(layer_or_model, EfficientSelfAttention):
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            raise ValueError("expected the layer's input as a feature map (1, C, H, W), got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
        tokens, grid = image_to_tokens(image)
        sr = layer_or_model.sr_ratio
        kv_grid = reduced_grid(grid, sr)
        _, attn = layer_or_model(tokens, grid, return_attention=True)
    else:
        raise TypeError("expected an EfficientSelfAttention layer or a MixTransformer, got "
                        f"{type(layer_or_model).__name__}")
    return query_attention(attn, grid, kv_grid, query_rc, head, sr)


def _to_unit_image(image) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` array or float ``(1, 3, H, W)`` tensor in [0, 1] -> ``(1, 3, H, W)``."""
    if isinstance(image, np.ndarray):
        return image_to_tensor(image)[None]
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[1] == 3:
        return image.float()
    raise TypeError("expected a photo as an (H, W, 3) uint8 array or a (1, 3, H, W) tensor in [0, 1], "
                    f"got {getattr(image, 'shape', type(image).__name__)}")


def colour_position_features(image, grid: tuple[int, int]) -> torch.Tensor:
    """Hand-made token features ``(1, 24, H, W)`` for a photo averaged down to ``grid``.

    Channels 0-11 (head 0): ``cos`` and ``sin`` of each colour channel (0..1 read as an angle
    of 0..180 degrees) and their negations; channels 12-23 (head 1): ``cos`` and ``sin`` of
    the row and column position (top/left .. bottom/right read as 0..180 degrees), their
    negations, and four zeros. Dot products of such features are sums of ``cos(angle
    difference)``: largest for equal colour (head 0) or equal position (head 1). The
    negated copies make every token's channel mean zero and its norm the same, so a
    LayerNorm only rescales them (it cannot reorder similarities).
    """
    img = F.adaptive_avg_pool2d(_to_unit_image(image), grid)  # (1, 3, H, W), values in [0, 1]
    h, w = grid
    rows = torch.linspace(0, 1, h)[:, None].expand(h, w)
    cols = torch.linspace(0, 1, w)[None, :].expand(h, w)
    colour_angle = img[0] * math.pi  # colours 0..1 -> angles 0..180 degrees
    position_angle = torch.stack([rows, cols]) * math.pi
    colour = torch.cat([colour_angle.cos(), colour_angle.sin()])  # (6, H, W)
    position = torch.cat([position_angle.cos(), position_angle.sin()])  # (4, H, W)
    zeros = torch.zeros(HEAD_DIM - 2 * POSITION_CHANNELS, h, w)
    return torch.cat([colour, -colour, position, -position, zeros])[None]  # (1, 24, H, W)


@torch.no_grad()
def colour_position_attention(sr_ratio: int = 1, sharpness=(30.0, 40.0)) -> EfficientSelfAttention:
    """An :class:`EfficientSelfAttention` (dim 24, 2 heads) with weights set by hand for
    :func:`colour_position_features`: queries = input x ``sharpness`` (one factor per head, or
    one for both), keys = values = input (the fused ``kv`` stacks two identities), and a
    sequence reduction that hands on the centre token of each ``sr x sr`` window (so every
    key is an exact token and its LayerNorm only rescales, see the features). The scores are
    ``sharpness * similarity``, up to a constant: no training, nothing random."""
    dim = 2 * HEAD_DIM
    layer = EfficientSelfAttention(dim, num_heads=2, sr_ratio=sr_ratio)
    eye = torch.eye(dim)
    per_head = torch.as_tensor(sharpness, dtype=torch.float32).expand(2)
    layer.q.weight.copy_(torch.diag(per_head.repeat_interleave(HEAD_DIM)))
    layer.kv.weight.copy_(torch.cat([eye, eye]))  # rows [:dim] -> K, [dim:] -> V
    layer.proj.weight.copy_(eye)
    for lin in (layer.q, layer.kv, layer.proj):
        lin.bias.zero_()
    if sr_ratio > 1:  # channel c of the output = channel c of the window's centre token
        layer.sr.weight.zero_()
        layer.sr.weight[range(dim), range(dim), sr_ratio // 2, sr_ratio // 2] = 1.0
        layer.sr.bias.zero_()
    return layer.eval()

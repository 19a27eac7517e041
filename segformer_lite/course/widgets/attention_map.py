"""Where does one query pixel look? Attention maps of efficient self-attention on a photo.

Pure functions compute and draw; :func:`attention_widget` only wires sliders to them
(an :class:`AttentionWidget`, the course's one widget shape: see ``_render.SliderView``).

* :func:`attention_for_query` works with any :class:`~segformer_lite.EfficientSelfAttention`
  (given a feature map) or any :class:`~segformer_lite.MixTransformer` (given an image and a
  block index) and returns an :class:`AttentionMap`: one query's weights over the key/value grid.
* :func:`encoder_attention` runs a :class:`~segformer_lite.MixTransformer` once and returns every
  block's weights with their grids (:class:`BlockAttention`), to read many maps from one pass.
* :func:`draw_attention` overlays such a map on the photo, keys/values drawn as the
  ``sr_ratio x sr_ratio`` windows of tokens they were pooled from, on one fixed logarithmic colour
  scale (:data:`WEIGHT_RANGE`) shared by every map of the course, so panels compare and a flat map
  looks flat; :func:`attention_colorbar` adds the one colour bar of a figure.
* :func:`colour_position_features` and :func:`colour_position_attention` build a layer whose
  attention *means* something without training: head 0 compares colours, head 1 compares
  positions. A randomly initialised layer attends almost uniformly, which shows nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...attention import EfficientSelfAttention
from ...encoder import MixTransformer
from ...grid import reduced_grid, stage_grid_sizes
from ...tokens import image_to_tensor, image_to_tokens, int_pair
from ._render import SliderView

__all__ = ["AttentionMap", "BlockAttention", "attention_for_query", "encoder_attention",
           "query_attention", "colour_position_features", "colour_position_attention",
           "WEIGHT_RANGE", "attention_norm", "draw_attention", "attention_colorbar", "scale_query",
           "AttentionWidget", "attention_widget"]

COLOUR_CHANNELS, POSITION_CHANNELS = 6, 4  # cos/sin of r, g, b; cos/sin of y, x
HEAD_DIM = 2 * COLOUR_CHANNELS  # each feature and its negation: head 0 colour, head 1 position
HEAD_NAMES = ("colour", "position")
# One colour scale for every attention map: weights from 1e-4 (below: darkest) to 1, logarithmic,
# because the course's maps range from 1/2400 (uniform over 40x60 keys) to a few tenths.
WEIGHT_RANGE = (1e-4, 1.0)


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


def attention_norm():
    """The fixed colour scale of every attention map: :data:`WEIGHT_RANGE`, logarithmic."""
    from matplotlib.colors import LogNorm
    return LogNorm(*WEIGHT_RANGE, clip=True)


def draw_attention(ax, photo: np.ndarray, amap: AttentionMap, title: str | None = None,
                   alpha: float = 0.6, cmap: str = "inferno"):
    """Overlay ``amap`` on ``photo`` (``(H, W, 3)`` uint8) in ``ax``; mark the query token.

    The map is drawn over the part of the photo its keys were pooled from (rows and columns
    beyond the last full ``sr x sr`` window are not covered), coloured on the fixed scale
    :func:`attention_norm`, the same for every panel. Returns the image, for
    :func:`attention_colorbar`.
    """
    ph, pw = photo.shape[:2]
    (h, w), (kh, kw), sr = amap.grid, amap.kv_grid, amap.sr_ratio
    sy, sx = ph / h, pw / w  # photo pixels per token
    ax.imshow(photo)
    weights = np.maximum(amap.weights, WEIGHT_RANGE[0])  # a log scale has no 0: tiny weights get its floor
    im = ax.imshow(weights, cmap=cmap, alpha=alpha, interpolation="nearest",
                   extent=(0, kw * sr * sx, kh * sr * sy, 0), norm=attention_norm())
    r, c = amap.query
    ax.add_patch(_rectangle((c * sx, r * sy), sx, sy))
    ax.plot((c + 0.5) * sx, (r + 0.5) * sy, marker="+", color="cyan", markersize=14, mew=2)
    ax.set_xlim(0, pw)
    ax.set_ylim(ph, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is None:
        title = f"query ({r}, {c}), head {amap.head}, keys {kh}x{kw}"
    ax.set_title(title, fontsize=9)
    return im


def attention_colorbar(im, ax, **kwargs):
    """One colour bar for all the attention maps drawn in ``ax`` (an Axes or an array of them);
    ``im`` is any of their images (they share :func:`attention_norm`)."""
    kwargs = {"label": "attention weight (log scale)", "shrink": 0.9, **kwargs}
    return im.figure.colorbar(im, ax=ax, **kwargs)


def _rectangle(xy, width, height):
    from matplotlib.patches import Rectangle
    return Rectangle(xy, width, height, fill=False, edgecolor="cyan", linewidth=1.5)


class AttentionWidget(SliderView):
    """Sliders over attention maps on ``photo`` (see :func:`attention_widget`); ``shown`` is the
    :class:`AttentionMap` drawn last (see :class:`SliderView` for the other attributes)."""

    def __init__(self, photo: np.ndarray, model: MixTransformer | None = None, image=None,
                 grid: tuple[int, int] = (56, 56), sr_ratios=(1, 2, 4, 8), sharpness=(30.0, 40.0)):
        import ipywidgets as widgets

        self.photo, self.model = photo, model
        if model is None:
            self.features = colour_position_features(photo, grid)
            self.layers = {sr: colour_position_attention(sr, sharpness) for sr in sr_ratios}
            self.base_grid = tuple(grid)
            extra = {"sr_ratio": widgets.SelectionSlider(options=list(sr_ratios), value=sr_ratios[0],
                                                         description="sr_ratio"),
                     "head": widgets.IntSlider(0, 0, 1, description="head")}
        else:
            if image is None:
                raise ValueError("with a model, pass image=(1, 3, H, W), the tensor the model reads")
            self.blocks = encoder_attention(model, image)  # once; the sliders only pick from it
            self.base_grid = self.blocks[0].grid
            extra = {"block": widgets.IntSlider(0, 0, len(self.blocks) - 1, description="block"),
                     # the full range up front: a range changed at run time stops the slider's End/Home keys
                     "head": widgets.IntSlider(0, 0, max(model.config.num_heads) - 1, description="head")}
        h, w = self.base_grid
        query = {"row": widgets.IntSlider(h // 2, 0, h - 1, description="query row"),
                 "col": widgets.IntSlider(w // 2, 0, w - 1, description="query col")}
        super().__init__([query, extra], figsize=(5.0, 4.2 * photo.shape[0] / photo.shape[1] + 0.3))  # + colour bar

    def draw(self, ax, row: int, col: int, head: int, sr_ratio: int | None = None, block: int | None = None):
        note = ""
        if self.model is None:
            amap = attention_for_query(self.layers[sr_ratio], self.features, (row, col), head)
            title = f"{HEAD_NAMES[head]} head, sr_ratio {sr_ratio}"
        else:
            b = self.blocks[block]
            heads = b.weights.shape[1]
            amap = b.query(scale_query((row, col), self.base_grid, b.grid), min(head, heads - 1))
            title = f"stage {b.stage + 1}, block {block}, head {amap.head}"
            if amap.head != head:  # early stages have fewer heads
                note = f"stage {b.stage + 1} has {heads} head{'s' * (heads > 1)}: showing head {amap.head}. "
        attention_colorbar(draw_attention(ax, self.photo, amap, title), ax, shrink=0.8)
        (gh, gw), (kh, kw) = amap.grid, amap.kv_grid
        return amap, note + (f"query token {amap.query} of a {gh}x{gw} grid attends to {kh}x{kw} = "
                             f"{kh * kw} keys; largest weight {amap.weights.max():.3f} "
                             f"(uniform: {1 / (kh * kw):.4f})")


def attention_widget(photo: np.ndarray, model: MixTransformer | None = None, image=None,
                     grid: tuple[int, int] = (56, 56), sr_ratios=(1, 2, 4, 8),
                     sharpness=(30.0, 40.0)) -> AttentionWidget:
    """Sliders over attention maps; display the returned :class:`AttentionWidget` in a notebook.

    Without ``model``: the hand-made :func:`colour_position_attention` layer on ``photo``
    averaged to ``grid``; sliders query row / col, sr_ratio and head (0 colour, 1 position).
    With ``model`` (a :class:`MixTransformer`) and ``image`` (its ``(1, 3, H, W)`` input):
    sliders query row / col on the stage-1 grid, block and head; the query is moved to the
    block's own stage grid with :func:`scale_query`. Set ``w.controls["row"].value = ...`` to
    drive it from code.
    """
    return AttentionWidget(photo, model, image, grid, sr_ratios, sharpness)

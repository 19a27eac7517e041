"""Where does one query pixel look? Attention maps of efficient self-attention on a photo, drawn.

The maps come from ``course/attention.py`` (:func:`attention_for_query`, :func:`encoder_attention`,
:func:`colour_position_attention`, re-exported here for the notebooks); pure functions draw them,
and :func:`attention_widget` only wires sliders to them (an :class:`AttentionWidget`, the course's
one widget shape: see ``_render.SliderView``).

* :func:`draw_attention` overlays such a map on the photo, keys/values drawn as the
  ``sr_ratio x sr_ratio`` windows of tokens they were pooled from, on one fixed logarithmic colour
  scale (:data:`WEIGHT_RANGE`) shared by every map of the course, so panels compare and a flat map
  looks flat; :func:`attention_colorbar` adds the one colour bar of a figure.
"""
from __future__ import annotations

import numpy as np

from ...encoder import MixTransformer
from ..attention import (HEAD_NAMES, AttentionMap, BlockAttention, attention_for_query, colour_position_attention,
                         colour_position_features, encoder_attention, query_attention, scale_query)
from ._render import SliderView

__all__ = ["AttentionMap", "BlockAttention", "attention_for_query", "encoder_attention",
           "query_attention", "colour_position_features", "colour_position_attention",
           "WEIGHT_RANGE", "attention_norm", "draw_attention", "attention_colorbar", "scale_query",
           "AttentionWidget", "attention_widget"]

# One colour scale for every attention map: weights from 1e-4 (below: darkest) to 1, logarithmic,
# because the course's maps range from 1/2400 (uniform over 40x60 keys) to a few tenths.
WEIGHT_RANGE = (1e-4, 1.0)


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

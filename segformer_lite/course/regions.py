"""Regions of a label map, to place queries inside shapes and to read where their attention lands.

Pure numpy, no image library:

* :func:`interior_depth`: per pixel, how many 3x3 erosions it survives inside its mask, the image
  border counted as outside. Depth ``r`` means the ``(2r+1) x (2r+1)`` window around the pixel
  lies in the mask: a model that sees ``(2r+1) x (2r+1)`` pixels sees no outline from there.
* :func:`deepest_pixel`: the pixel of a class farthest inside it (a query well inside a shape).
* :func:`connected_region`: the 4-connected part of a mask that holds a pixel (one shape).
* :func:`key_cell_shares` and :func:`region_weight`: how much of an attention map's weight falls
  on a region, against what even attention would put there.
"""
from __future__ import annotations

import numpy as np

from ..tokens import int_pair

__all__ = ["interior_depth", "deepest_pixel", "connected_region", "key_cell_shares", "region_weight"]


def _check_mask(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(f"expected a boolean (H, W) mask, got dtype {mask.dtype} and shape {mask.shape}")
    return mask


def _erode3(inside: np.ndarray) -> np.ndarray:
    """3x3 erosion of a mask whose outermost rows and columns are False (a padded frame): a pixel
    stays if it and its 8 neighbours are set."""
    rows = inside.copy()
    rows[1:] &= inside[:-1]
    rows[:-1] &= inside[1:]  # now: set if the pixels above and below are set too
    out = rows.copy()
    out[:, 1:] &= rows[:, :-1]
    out[:, :-1] &= rows[:, 1:]  # and the columns left and right of those: the 3x3 window
    return out


def interior_depth(mask) -> np.ndarray:
    """``(H, W)`` int: 0 outside ``mask``; inside, the number of 3x3 erosions the pixel survives,
    the image border counted as outside (so a pixel on the edge has depth 0)."""
    inside = np.pad(_check_mask(mask), 1)  # (H+2, W+2): a frame of "outside" around the image
    depth = np.zeros(inside.shape, dtype=np.int64)
    k = 0
    while inside.any():
        depth[inside] = k
        k += 1
        inside = _erode3(inside)
    return depth[1:-1, 1:-1]


def deepest_pixel(label, cls: int) -> tuple[int, int]:
    """``(row, col)`` of the pixel of class ``cls`` in ``label`` ``(H, W)`` with the largest
    :func:`interior_depth` (the first in row-major order on a tie): well inside a shape and
    away from the image's edge."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a label map (H, W), got shape {label.shape}")
    mask = label == cls
    if not mask.any():
        raise ValueError(f"class {cls!r} has no pixel in this label map (classes present: "
                         f"{np.unique(label).tolist()})")
    r, c = np.unravel_index(interior_depth(mask).argmax(), mask.shape)
    return int(r), int(c)


def connected_region(mask, pixel) -> np.ndarray:
    """The 4-connected part of ``mask`` that holds ``pixel`` ``(row, col)``, as a boolean mask."""
    mask = _check_mask(mask)
    r, c = int_pair("pixel", pixel, "(row, col)")
    if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]) or not mask[r, c]:
        raise ValueError(f"pixel {(r, c)} is not inside the mask (shape {mask.shape})")
    region = np.zeros_like(mask)
    region[r, c] = True
    while True:  # grow by one pixel in the four directions, never leaving the mask
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= mask
        if (grown == region).all():
            return region
        region = grown


def key_cell_shares(mask, grid: tuple[int, int], kv_grid: tuple[int, int], sr_ratio: int) -> np.ndarray:
    """``kv_grid``-shaped float: the share of each key/value cell's pixels that lie in ``mask``.

    Key ``(i, j)`` was pooled from tokens ``[i*sr, (i+1)*sr) x [j*sr, (j+1)*sr)`` of the query
    ``grid``, and a token covers ``H / grid[0] x W / grid[1]`` pixels of the ``(H, W)`` mask (as
    :func:`~segformer_lite.course.widgets.attention_map.draw_attention` draws it).
    """
    mask = _check_mask(mask)
    (h, w), (kh, kw) = grid, kv_grid
    ys = np.round(np.arange(kh + 1) * sr_ratio * mask.shape[0] / h).astype(int)  # cell edges in pixels
    xs = np.round(np.arange(kw + 1) * sr_ratio * mask.shape[1] / w).astype(int)
    return np.array([[mask[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() for j in range(kw)] for i in range(kh)])


def region_weight(amap, mask) -> tuple[float, float]:
    """``(weight, even)`` for an :class:`~segformer_lite.course.widgets.attention_map.AttentionMap`:
    the share of its attention that lands on ``mask``'s pixels (each key's weight spread evenly
    over its cell) and the share even attention (``1 / M`` per key) would put there."""
    shares = key_cell_shares(mask, amap.grid, amap.kv_grid, amap.sr_ratio)  # (kh, kw)
    return float((amap.weights * shares).sum()), float(shares.mean())

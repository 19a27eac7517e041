"""What a trained encoder's heads attend to, measured over many images (notebook 07, section 8).

* :func:`query_maps`: the attention rows of queries placed deep inside shapes, every block and
  head, read from one batched :func:`~segformer_lite.course.attention.encoder_attention`,
  with each key cell's share of the query's own shape (:class:`QueryMaps`).
* :func:`own_shape_ratio`: per query and head, the weight on the query's own shape divided by
  what even attention would put there (1: no preference).
* :func:`own_shape_test`: the mean of that ratio with a bootstrap interval over images and three
  permutation nulls: each query's map scored against the shape of another query (of any
  position), of another query whose pixel lies in the same key cell (the null keeps "attend to
  where you are" and removes only the shape), and of another query of the same image (it keeps
  "attend to where this image's shapes are" and removes only which shape is the query's own).
* :func:`same_argmax_share`, :func:`common_key_weight` and :func:`fixed_key_share`: does a head
  send every query of an image to the same key, and is it the same key position in every image
  (an "attention sink")? Independent, uniformly placed argmaxes agree for a share ``1 / M`` of
  the query pairs. :func:`head_summary` has all three per head, and the focus, for every block.
* :func:`focus`: the largest weight of each map as a multiple of ``1 / M`` (1: uniform).
* :func:`draw_ratio` and :func:`ratio_colorbar`: a map drawn as weight / uniform (``w * M``) on a
  diverging log2 scale centred at 1, the same limits for every panel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .regions import connected_region, key_cell_shares, shape_queries
from .resample import Interval, bootstrap_mean, p_value, permutations
from .attention import AttentionMap, scale_query

__all__ = ["QueryMaps", "query_maps", "own_shape_ratio", "OwnShapeTest", "own_shape_test", "focus",
           "same_argmax_share", "common_key_weight", "common_key", "fixed_key_share", "head_summary", "draw_ratio",
           "ratio_colorbar"]


@dataclass(frozen=True)
class QueryMaps:
    """The attention of ``Q`` queries, each at the deepest pixel of a shape class of its image.

    Per block ``b``: ``weights[b]`` ``(Q, heads, M)`` (each row sums to 1, keys row-major),
    ``shares[b]`` ``(Q, M)`` the share of each key cell's pixels that lie in the query's own shape
    (its connected region), ``cell[b]`` ``(Q,)`` the key cell the query's token was pooled into.
    """

    image: np.ndarray  # (Q,) index of the query's image
    pixel: np.ndarray  # (Q, 2) row, col in pixels
    cls: np.ndarray  # (Q,) class of the query's shape
    stage: tuple[int, ...]  # per block, 0-based
    weights: list[np.ndarray]
    shares: list[np.ndarray]
    cell: list[np.ndarray]


def query_maps(blocks, labels, min_depth: int = 3) -> QueryMaps:
    """Read the queries of :func:`~segformer_lite.course.regions.shape_queries` of each label map
    (``labels`` ``(B, H, W)``: one per shape class present, at its deepest pixel, if that lies
    ``min_depth`` or more inside) out of ``blocks``, the
    :func:`~segformer_lite.course.attention.encoder_attention` of the ``B`` images."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != blocks[0].weights.shape[0]:
        raise ValueError(f"expected labels (B, H, W) for the {blocks[0].weights.shape[0]} images the attention "
                         f"was computed on, got shape {labels.shape}")
    size = labels.shape[-2:]
    image, pixel, cls, shapes = [], [], [], []
    for i, label in enumerate(labels):
        for c, rc in shape_queries(label, min_depth).items():
            image.append(i), pixel.append(rc), cls.append(c)
            shapes.append(connected_region(label == c, rc))
    if not image:
        raise ValueError(f"no shape in these {len(labels)} label maps has a pixel {min_depth} or more inside")
    weights, shares, cell = [], [], []
    for b in blocks:
        tokens = [scale_query(rc, size, b.grid) for rc in pixel]
        rows = [t[0] * b.grid[1] + t[1] for t in tokens]  # row-major token index
        weights.append(b.weights[image, :, rows].float().numpy())  # (Q, heads, M)
        shares.append(np.stack([key_cell_shares(s, b.grid, b.kv_grid, b.sr_ratio).ravel() for s in shapes]))
        cell.append(np.array([min(r // b.sr_ratio, b.kv_grid[0] - 1) * b.kv_grid[1]
                              + min(c // b.sr_ratio, b.kv_grid[1] - 1) for r, c in tokens]))
    return QueryMaps(np.array(image), np.array(pixel), np.array(cls), tuple(b.stage for b in blocks),
                     weights, shares, cell)


def own_shape_ratio(weights: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """``(Q, heads)``: weight on the shape / even attention's weight on it, for ``weights``
    ``(Q, heads, M)`` and key-cell ``shares`` ``(Q, M)`` of the shape (each key's weight spread
    evenly over its cell, as :func:`~segformer_lite.course.regions.region_weight`)."""
    return np.einsum("qhm,qm->qh", weights, shares) / shares.mean(-1, keepdims=True)


@dataclass(frozen=True)
class OwnShapeTest:
    """:func:`own_shape_test` for one block: per head (arrays ``(heads,)``) and over the block's
    heads (floats). ``ratio``: mean own shape / even with its bootstrap interval over images;
    ``null_any`` / ``null_cell`` / ``null_image``: the null's mean and its 95th percentile;
    ``p_any`` / ``p_cell`` / ``p_image``: one-sided permutation p-values (ratio at least as large
    under the null)."""

    ratio: Interval
    null_any: tuple
    p_any: np.ndarray
    null_cell: tuple
    p_cell: np.ndarray
    null_image: tuple
    p_image: np.ndarray
    block_ratio: Interval
    block_null_any: tuple
    block_p_any: float
    block_null_cell: tuple
    block_p_cell: float
    block_null_image: tuple
    block_p_image: float


def own_shape_test(maps: QueryMaps, rounds: int = 2000, seed: int = 0) -> list[OwnShapeTest]:
    """Per block of ``maps``: does a head give the query's own shape more than even attention
    would? The observed mean of :func:`own_shape_ratio` over queries, its bootstrap interval
    (resampling images), and three permutation nulls (``rounds`` each): every query's map scored
    against the shape of a random query (``null_any``), of a random query whose token lies in the
    same key cell (``null_cell``), or of a random query of the same image (``null_image``: another
    shape the image holds; a query alone in its image is paired with itself)."""
    out = []
    for b, (w, s, cell) in enumerate(zip(maps.weights, maps.shares, maps.cell)):
        ratio = own_shape_ratio(w, s)  # (Q, heads)
        result = {"ratio": bootstrap_mean(ratio, maps.image, rounds=rounds, seed=seed),
                  "block_ratio": bootstrap_mean(ratio.mean(1), maps.image, rounds=rounds, seed=seed)}
        for name, strata in (("any", np.zeros(len(cell), int)), ("cell", cell), ("image", maps.image)):
            paired = s[permutations(strata, rounds, seed + 1)]  # (rounds, Q, M): another query's shape
            paired = (paired / paired.mean(-1, keepdims=True)).reshape(rounds, -1)  # (rounds, Q * M)
            null = paired @ w.transpose(0, 2, 1).reshape(-1, w.shape[1]) / len(w)  # (rounds, heads): mean ratio
            result[f"null_{name}"] = (null.mean(0), np.percentile(null, 95, axis=0))
            result[f"p_{name}"] = p_value(ratio.mean(0), null)
            block_null = null.mean(1)
            result[f"block_null_{name}"] = (float(block_null.mean()), float(np.percentile(block_null, 95)))
            result[f"block_p_{name}"] = float(p_value(ratio.mean(), block_null))
        out.append(OwnShapeTest(**result))
    return out


def focus(weights) -> np.ndarray:
    """The largest weight of each attention row as a multiple of ``1 / M`` (``weights`` ``(..., M)``):
    1 for uniform attention, ``M`` for all weight on one key."""
    weights = np.asarray(weights)
    return weights.max(-1) * weights.shape[-1]


def same_argmax_share(weights) -> np.ndarray:
    """``(B, heads)``: for attention ``(B, heads, N, M)``, the share of the ``N (N - 1) / 2`` query
    pairs of an image whose largest weight falls on the same key. Argmaxes placed independently
    and uniformly give ``1 / M`` in expectation; a head that sends every query to one key, 1."""
    weights = torch.as_tensor(weights)
    if weights.ndim != 4 or weights.shape[2] < 2:
        raise ValueError(f"expected attention (B, heads, N, M) with N >= 2, got {tuple(weights.shape)}")
    n, m = weights.shape[-2:]
    counts = torch.nn.functional.one_hot(weights.argmax(-1), m).sum(2).double()  # (B, heads, M)
    return ((counts * (counts - 1)).sum(-1) / (n * (n - 1))).numpy()


def common_key_weight(weights) -> np.ndarray:
    """``(B, heads)``: the mean weight, over an image's queries, on the key that gets the most
    weight on average (:func:`common_key`), as a multiple of ``1 / M``: 1 when no key is shared
    more than evenly (even attention, or every query attending to its own, different, key),
    ``M`` when every query puts all its weight on one key."""
    weights = torch.as_tensor(weights)  # (B, heads, N, M)
    return (weights.mean(2).max(-1).values * weights.shape[-1]).numpy()


def common_key(weights) -> np.ndarray:
    """``(B, heads)``: per image and head, the key (row-major index) with the largest mean weight
    over the queries."""
    return torch.as_tensor(weights).mean(2).argmax(-1).numpy()


def fixed_key_share(weights) -> np.ndarray:
    """``(heads,)``: the share of the images whose :func:`common_key` is the head's most frequent
    one. Near 1: the head picks the same key position whatever the image shows."""
    key = common_key(weights)  # (B, heads)
    m = torch.as_tensor(weights).shape[-1]
    return np.stack([np.bincount(k, minlength=m).max() / len(k) for k in key.T])


def head_summary(blocks) -> list[dict]:
    """Per :class:`~segformer_lite.course.attention.BlockAttention` of ``blocks`` (a
    batch of images), per head (arrays ``(heads,)``), means over the images: ``same_argmax``
    (:func:`same_argmax_share`), ``common_weight`` (:func:`common_key_weight`), ``fixed_key``
    (:func:`fixed_key_share`); and over images, queries and heads ``focus_mean`` and
    ``focus_max`` (:func:`focus`); ``keys``: ``M``."""
    out = []
    for b in blocks:
        f = focus(b.weights.numpy())  # (B, heads, N)
        out.append({"keys": b.weights.shape[-1], "same_argmax": same_argmax_share(b.weights).mean(0),
                    "common_weight": common_key_weight(b.weights).mean(0), "fixed_key": fixed_key_share(b.weights),
                    "focus_mean": float(f.mean()), "focus_max": float(f.max())})
    return out


def draw_ratio(ax, photo: np.ndarray, amap: AttentionMap, limit: float = 2.0, title: str | None = None,
               alpha: float = 0.75, cmap: str = "RdBu_r"):
    """Overlay ``amap`` on ``photo`` ``(H, W, 3)``, shown in grey so that its colours do not mix
    with the scale, as ``log2(weight * M)``: 0 (white) is uniform attention, red above, blue below,
    clipped to ``[-limit, limit]`` (pass every panel the same ``limit``). Keys are drawn over the
    pixels they were pooled from; a cyan + marks the query's token. Returns the image, for
    :func:`ratio_colorbar`."""
    from matplotlib.colors import Normalize

    ph, pw = photo.shape[:2]
    (h, w), (kh, kw), sr = amap.grid, amap.kv_grid, amap.sr_ratio
    ratio = np.log2(np.maximum(amap.weights * amap.weights.size, 2.0 ** -limit))
    ax.imshow(np.asarray(photo, dtype=np.float64).mean(-1), cmap="gray")
    im = ax.imshow(ratio, cmap=cmap, norm=Normalize(-limit, limit), alpha=alpha, interpolation="nearest",
                   extent=(0, kw * sr * pw / w, kh * sr * ph / h, 0))
    r, c = amap.query
    ax.plot((c + 0.5) * pw / w, (r + 0.5) * ph / h, marker="+", color="cyan", markersize=12, mew=2)
    ax.set_xlim(0, pw), ax.set_ylim(ph, 0), ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title if title is not None else f"query {amap.query}, head {amap.head}", fontsize=9)
    return im


def ratio_colorbar(im, ax, limit: float = 2.0, **kwargs):
    """The one colour bar of the :func:`draw_ratio` panels in ``ax``, ticks labelled as ratios."""
    ticks = np.arange(-np.floor(limit), np.floor(limit) + 1)
    bar = im.figure.colorbar(im, ax=ax, ticks=ticks, **{"shrink": 0.8, **kwargs})
    bar.ax.set_yticklabels([f"{2.0 ** t:g}" if t >= 0 else f"1/{2.0 ** -t:g}" for t in ticks])
    bar.set_label("attention / uniform (weight x M), log scale")
    return bar

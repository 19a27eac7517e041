"""Grid arithmetic: how many tokens each convolution of the encoder leaves along each axis.

Two kinds of convolution shape MiT's grids, and both follow the one formula of
:func:`conv_output_size`:

* the overlapping patch embedding of stage i (kernel k, stride s, padding k // 2) gives the
  stage's query grid ``(H_i, W_i)``, ``ceil(H / s)`` for MiT's odd kernels (:func:`stage_grid_sizes`);
* the sequence-reduction conv of the attention (kernel = stride = sr, no padding) gives the
  key/value grid ``floor(H_i / sr) x floor(W_i / sr)`` (:func:`reduced_grid`). So the number of
  keys is ``M = floor(H/sr) * floor(W/sr)``, which equals ``N / sr**2`` only when sr divides
  both sides: the rows and columns past the last full window never become keys.

:func:`min_input_size` is the smallest image for which every reduction still has a window to cover.
"""
from __future__ import annotations

from .config import MiTConfig, check_int

__all__ = ["conv_output_size", "stage_grid_sizes", "reduced_grid", "min_input_size"]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``floor((size + 2p - k) / s) + 1``
    (``<= 0`` when the kernel does not fit in the padded input)."""
    return (size + 2 * padding - kernel) // stride + 1


def stage_grid_sizes(cfg: MiTConfig, height: int, width: int) -> list[tuple[int, int]]:
    """The ``(H_i, W_i)`` token grid of every stage for an input of ``height x width``."""
    sizes, h, w = [], height, width
    for k, s in zip(cfg.patch_sizes, cfg.strides):
        h, w = conv_output_size(h, k, s, k // 2), conv_output_size(w, k, s, k // 2)
        sizes.append((h, w))
    return sizes


def reduced_grid(grid: tuple[int, int], sr_ratio: int) -> tuple[int, int]:
    """The key/value grid left by the sequence-reduction conv (kernel = stride = sr_ratio,
    no padding): ``floor(H / sr) x floor(W / sr)``. Tokens past the last full window never
    become keys. A readable ValueError when the grid is smaller than one window."""
    check_int("sr_ratio", sr_ratio)
    h, w = grid
    if sr_ratio > min(h, w):
        raise ValueError(f"sr_ratio={sr_ratio} is larger than the {h}x{w} token grid: the "
                         f"{sr_ratio}x{sr_ratio} sequence-reduction window does not fit, so no "
                         f"key/value tokens would be left (use sr_ratio <= {min(h, w)} or a larger image)")
    return conv_output_size(h, sr_ratio, sr_ratio, 0), conv_output_size(w, sr_ratio, sr_ratio, 0)


def min_input_size(cfg: MiTConfig) -> int:
    """Smallest side length for which every stage's grid is at least ``sr_ratio`` wide,
    so each sequence-reduction conv (kernel = stride = sr_ratio) has a window to cover."""
    size = 1
    while any(h < max(r, 1) for (h, _), r in zip(stage_grid_sizes(cfg, size, size), cfg.sr_ratios)):
        size += 1
    return size

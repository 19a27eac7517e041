"""Where a patch-embedding convolution looks: its patches drawn on a photo.

A ``Conv2d(kernel_size=k, stride=s, padding=p)`` used as a patch embedding cuts the (zero-padded)
image into ``k x k`` windows whose top-left corners are ``s`` pixels apart; each window becomes one
token. Everything here is plain computation on those numbers (``patch_grid``), drawing on a
matplotlib ``Axes`` (``draw_patch_grid``), and a thin ipywidgets wrapper with three sliders
(``patch_grid_widget``) whose state tests can drive without a browser.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from ...config import check_int
from ...grid import conv_output_size
from ...tokens import int_pair
from ._render import SliderView

__all__ = ["PatchGrid", "patch_grid", "draw_patch_grid", "PatchGridWidget", "patch_grid_widget"]

# four colours that stay distinguishable when they overlap (a 2x2 block of neighbouring patches)
_BLOCK_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231")


@dataclass(frozen=True)
class PatchGrid:
    """The patches a ``Conv2d(k, s, p)`` cuts from an ``H x W`` image, and what they cover.

    Coordinates are pixel indices of the unpadded image; a patch that starts in the padding has a
    negative corner. ``out_hw`` is the conv's output grid, one token per patch (``<= 0`` when the
    kernel does not fit, then ``valid`` is False and ``message`` says why).
    """

    image_hw: tuple[int, int]
    kernel: int
    stride: int
    padding: int
    out_hw: tuple[int, int]
    coverage: float  # fraction of the image's pixels inside at least one patch
    max_views: int  # most patches any single pixel belongs to
    unseen_edge: tuple[int, int]  # pixel rows at the bottom / columns at the right no patch reaches
    padding_only: int  # patches that lie entirely in the zero padding (they see only zeros)

    @property
    def valid(self) -> bool:
        return self.out_hw[0] > 0 and self.out_hw[1] > 0

    @property
    def num_patches(self) -> int:
        return self.out_hw[0] * self.out_hw[1] if self.valid else 0

    @property
    def overlap(self) -> int:
        """Pixels two neighbouring patches share along an axis (0 when they do not touch)."""
        return max(self.kernel - self.stride, 0)

    @property
    def gap(self) -> int:
        """Pixels between two neighbouring patches that neither sees."""
        return max(self.stride - self.kernel, 0)

    def starts(self, axis: int) -> np.ndarray:
        """First pixel index of every patch along ``axis`` (0 = rows, 1 = columns)."""
        return np.arange(max(self.out_hw[axis], 0)) * self.stride - self.padding

    def boxes(self) -> np.ndarray:
        """Every patch as ``(top, left, bottom, right)``, end exclusive, row-major like the tokens."""
        top, left = np.meshgrid(self.starts(0), self.starts(1), indexing="ij")
        top, left = top.ravel(), left.ravel()
        return np.stack([top, left, top + self.kernel, left + self.kernel], axis=1)

    @property
    def message(self) -> str:
        """One line a learner can read: the grid size, or why there is none."""
        h, w = self.image_hw
        k, s, p = self.kernel, self.stride, self.padding
        head = f"kernel {k}, stride {s}, padding {p} on {h}x{w} pixels"
        if not self.valid:
            side, name = (h, "tall") if self.out_hw[0] <= 0 else (w, "wide")
            return (f"{head}: no output. The {k}-pixel kernel does not fit in the padded image "
                    f"({side} + 2*{p} = {side + 2 * p} pixels {name}); use a smaller kernel "
                    f"or more padding.")
        oh, ow = self.out_hw
        parts = [f"{head} -> {oh}x{ow} grid = {oh * ow:,} tokens"]
        if self.overlap:
            parts.append(f"neighbours share {self.overlap} px; a pixel is in up to {self.max_views} patches")
        elif self.gap:
            parts.append(f"gaps of {self.gap} px between patches: "
                         f"{1 - self.coverage:.0%} of pixels are never seen")
        else:
            parts.append("patches tile the image without overlap")
        edge = [f"{n} {name}" for n, name in
                zip(self.unseen_edge, ("row(s) at the bottom", "column(s) at the right")) if n]
        if edge:
            parts.append(" and ".join(edge) + " fall off the grid")
        if self.padding_only:
            parts.append(f"{self.padding_only} patch(es) see only padding")
        return "; ".join(parts)


def _axis_cover(size: int, out: int, kernel: int, stride: int, padding: int):
    """How many patches see each pixel of one axis, and how many patches touch the axis at all."""
    starts = np.arange(max(out, 0)) * stride - padding
    counts = np.zeros(size + 1, dtype=np.int64)  # difference array: +1 where a patch starts, -1 after it
    lo, hi = np.clip(starts, 0, size), np.clip(starts + kernel, 0, size)
    np.add.at(counts, lo, 1)
    np.add.at(counts, hi, -1)
    views = np.cumsum(counts)[:size]
    touching = int(np.sum(hi > lo))
    return views, touching


def patch_grid(image_hw: tuple[int, int], kernel: int, stride: int, padding: int = 0) -> PatchGrid:
    """The patch layout of ``Conv2d(kernel_size=kernel, stride=stride, padding=padding)`` on an
    image of ``image_hw = (H, W)`` pixels. Never raises for sizes that merely do not fit: the
    returned ``PatchGrid`` then has ``valid == False`` and a ``message`` saying why."""
    h, w = int_pair("image_hw", image_hw)
    h, w = check_int("image height", h), check_int("image width", w)
    kernel, stride, padding = check_int("kernel", kernel), check_int("stride", stride), check_int("padding", padding, 0)
    out_hw = (conv_output_size(h, kernel, stride, padding), conv_output_size(w, kernel, stride, padding))
    if min(out_hw) <= 0:
        return PatchGrid((h, w), kernel, stride, padding, out_hw, 0.0, 0, (h, w), 0)
    (views_h, touch_h), (views_w, touch_w) = (_axis_cover(n, o, kernel, stride, padding)
                                              for n, o in zip((h, w), out_hw))
    # a pixel (i, j) is seen by views_h[i] * views_w[j] patches: the layout is separable
    coverage = float(np.mean(views_h > 0) * np.mean(views_w > 0))
    max_views = int(views_h.max() * views_w.max())
    if coverage == 0:  # every patch lies in the padding (possible when padding >= kernel)
        unseen = (h, w)
    else:
        unseen = tuple(int(n - 1 - np.flatnonzero(v)[-1]) for n, v in zip((h, w), (views_h, views_w)))
    padding_only = out_hw[0] * out_hw[1] - touch_h * touch_w
    return PatchGrid((h, w), kernel, stride, padding, out_hw, coverage, max_views, unseen, padding_only)


def _as_image(image) -> np.ndarray:
    if hasattr(image, "detach"):  # a torch tensor: (3, H, W) or (1, 3, H, W) -> (H, W, 3)
        image = image.detach().cpu().numpy()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = np.moveaxis(image, 0, -1)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    return image


def draw_patch_grid(ax, image, kernel: int, stride: int, padding: int = 0, *,
                    block: tuple[int, int] | None = None, window: tuple[int, int, int, int] | None = None,
                    max_boxes: int = 150, title: bool = True) -> PatchGrid:
    """Draw the patches of ``Conv2d(kernel, stride, padding)`` over ``image`` on ``ax``.

    The zero padding is hatched; every patch is outlined (or, past ``max_boxes`` patches in view,
    marked by its centre); a 2x2 block of neighbours starting at grid cell ``block`` (default: the
    block in the middle of the view) is filled in four colours, so shared pixels show where the
    fills mix and gaps show as unfilled strips. ``window = (top, left, height, width)`` zooms in,
    in pixels. Returns the ``PatchGrid`` it drew.
    """
    from matplotlib.patches import Rectangle

    image = _as_image(image)
    info = patch_grid(image.shape[:2], kernel, stride, padding)
    h, w = info.image_hw
    k, p = info.kernel, info.padding
    # pixel i covers [i - .5, i + .5], so a patch starting at pixel t spans t - .5 ... t + k - .5
    ax.add_patch(Rectangle((-p - 0.5, -p - 0.5), w + 2 * p, h + 2 * p, facecolor="0.85",
                           edgecolor="0.5", hatch="//", linewidth=0.5, zorder=0))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
              interpolation="nearest", zorder=1)
    top, left, height, width = window if window is not None else (-p, -p, h + 2 * p, w + 2 * p)
    ax.set_xlim(left - 0.5, left + width - 0.5)
    ax.set_ylim(top + height - 0.5, top - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(f"k={k}, s={info.stride}, p={p}: " + (f"{info.out_hw[0]}x{info.out_hw[1]} tokens"
                                                          if info.valid else "no output"), fontsize=10)
    if not info.valid:
        ax.text(0.5, 0.5, "kernel does not fit", transform=ax.transAxes, ha="center", va="center",
                color="white", fontsize=12, bbox=dict(facecolor="black", alpha=0.6))
        return info
    boxes = info.boxes()
    in_view = ((boxes[:, 2] > top) & (boxes[:, 0] < top + height)
               & (boxes[:, 3] > left) & (boxes[:, 1] < left + width))
    shown = boxes[in_view]
    if len(shown) <= max_boxes:
        for t, l, _, _ in shown:
            ax.add_patch(Rectangle((l - 0.5, t - 0.5), k, k, fill=False, edgecolor="white",
                                   linewidth=0.6, alpha=0.8, zorder=2))
    else:
        centre = (k - 1) / 2
        ax.scatter(shown[:, 1] + centre, shown[:, 0] + centre, s=3, c="white", linewidths=0, zorder=2)
    oh, ow = info.out_hw
    if block is None:  # the 2x2 block whose middle is nearest the middle of the view
        centre = (top + (height - 1) / 2, left + (width - 1) / 2)
        # patch i is centred on pixel i*s - p + (k-1)/2; a block's middle lies s/2 further
        first = (round((c + p - (k - 1) / 2 - info.stride / 2) / info.stride) for c in centre)
        bi, bj = (int(np.clip(f, 0, max(n - 2, 0))) for f, n in zip(first, info.out_hw))
    else:
        bi, bj = block
    for n, (di, dj) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        i, j = bi + di, bj + dj
        if 0 <= i < oh and 0 <= j < ow:
            t, l = boxes[i * ow + j, :2]
            ax.add_patch(Rectangle((l - 0.5, t - 0.5), k, k, facecolor=_BLOCK_COLOURS[n], alpha=0.4,
                                   edgecolor=_BLOCK_COLOURS[n], linewidth=2, zorder=3))
    return info


class PatchGridWidget(SliderView):
    """Sliders ``kernel``, ``stride`` and ``padding`` over one photo; ``shown`` is the current
    :class:`PatchGrid`, ``message`` its :attr:`PatchGrid.message` (see :class:`SliderView`)."""

    def __init__(self, image, kernel: int = 7, stride: int = 4, padding: int = 3, *,
                 max_kernel: int = 32, max_stride: int = 32, max_padding: int = 16,
                 figsize: tuple[float, float] = (6.0, 4.0), dpi: int = 80):
        import ipywidgets as widgets

        self.photo = _as_image(image)
        patch_grid(self.photo.shape[:2], kernel, stride, padding)  # fail early on bad numbers
        style = dict(continuous_update=False, style={"description_width": "60px"})
        sliders = {name: widgets.IntSlider(value=value, min=low, max=max(high, value), description=name, **style)
                   for name, value, low, high in (("kernel", kernel, 1, max_kernel),
                                                  ("stride", stride, 1, max_stride),
                                                  ("padding", padding, 0, max_padding))}
        super().__init__([sliders], figsize, dpi)

    def draw(self, ax, kernel: int, stride: int, padding: int):
        info = draw_patch_grid(ax, self.photo, kernel, stride, padding)
        colour = "#b00020" if not info.valid else "inherit"
        return info, f'<span style="color:{colour}">{html.escape(info.message)}</span>'


def patch_grid_widget(image, kernel: int = 7, stride: int = 4, padding: int = 3, **kwargs) -> PatchGridWidget:
    """Three sliders (kernel, stride, padding) redrawing the patch grid on ``image``. Display the
    returned object in a notebook; set ``w.controls["kernel"].value = ...`` to drive it from code."""
    return PatchGridWidget(image, kernel, stride, padding, **kwargs)

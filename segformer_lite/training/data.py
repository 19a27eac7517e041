"""A synthetic segmentation set: textured shapes on a noisy background, made from a seed.

No data can be downloaded, so the course draws its own. Every image is a pure function of
``(seed, index, task)``: the same triple always gives the same pixels, on any machine, and two
seeds give unrelated images (training and held-out sets never overlap).

Each image holds a few shapes (disc, box, triangle) of random size, aspect ratio and rotation on
a smoothly shaded background, each filled with a texture (flat, stripes, checks, waves) between
two colours; shapes drawn later hide the ones below (occlusion), and pixel noise covers
everything. Two tasks draw them under two laws:

* ``"hints"``: a shape's colour stays near its class's hue (red, blue, green) on a greyish
  background, and it wears its class's own texture 9 times in 10. The class can be read off
  single pixels: a per-pixel MLP (1x1 convolutions, no spatial context) reaches mIoU 0.93 on it,
  so it cannot show what any part of the encoder is for.
* ``"context"`` (the training command's default and the shipped checkpoint's task): colour and texture are independent of the class, the background's colours
  included (every colour from one law, every texture equally likely on every class), and the
  shapes are large (half-sizes 10 to 24 px), painted largest first so smaller ones hide parts of
  larger ones but never a whole one. A pixel, or a small patch inside a shape, says nothing about
  the class: the interior of a big disc and of a big box look the same. Only the outline does
  (curved, four right angles, three sharp corners), and it spans tens of pixels, so seeing it
  needs a large receptive field.
"""
from __future__ import annotations

import colorsys
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import check_int
from ..tokens import image_to_tensor

__all__ = ["CLASSES", "TASKS", "SyntheticShapes", "render_shapes"]

CLASSES = ("background", "disc", "box", "triangle")
TEXTURES = ("flat", "stripes", "checks", "waves")
_HUES = (None, 0.0, 0.6, 0.3)  # hints: each class's hue (red, blue, green), jittered per shape
_PREFERRED_TEXTURE = 0.9  # hints: chance a shape wears its class's own texture (disc: flat, box: stripes, ...)
_CONTEXT_HALF_SIZE = (10.0, 24.0)  # context: half-widths in pixels, large against a 7-pixel receptive field


def _texture(kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ``[0, 1]`` texture value per pixel, in the shape's own rotated coordinates ``(u, v)``."""
    period = rng.uniform(4.0, 9.0)
    if kind == "flat":
        return np.zeros_like(u)
    if kind == "stripes":
        return (np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    if kind == "checks":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    return 0.5 + 0.5 * np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)  # waves


def _hsv(rng: np.random.Generator, hue: float, saturation: tuple, value: tuple) -> np.ndarray:
    """An RGB colour of hue ``hue``, saturation and value drawn uniformly from their ranges."""
    sat = rng.uniform(*saturation)
    return np.array(colorsys.hsv_to_rgb(hue, sat, rng.uniform(*value)), dtype=np.float32)


def _inside(cls: int, u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Boolean mask of the shape of class ``cls`` with half-width ``a`` and half-height ``b``."""
    if cls == 1:  # disc: an ellipse
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if cls == 2:  # box: a rectangle
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    # triangle: apex at v = -b, base of half-width a at v = +b
    return (v <= b) & (np.abs(u) <= a * (v + b) / (2 * b))


class _Shape(NamedTuple):
    cls: int
    a: float  # half-width, pixels
    b: float  # half-height, pixels
    cx: float
    cy: float
    theta: float  # rotation, radians


# --- "hints": colour and texture tell the class ---------------------------------------------------

def _hints_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Near the class's hue and saturated for a shape; any hue but greyish for the background."""
    if cls == 0:
        return _hsv(rng, rng.uniform(0, 1), (0.0, 0.35), (0.35, 1.0))
    return _hsv(rng, (_HUES[cls] + rng.uniform(-0.08, 0.08)) % 1.0, (0.5, 1.0), (0.35, 1.0))


def _hints_texture(rng: np.random.Generator, cls: int) -> str:
    """The class's own texture 9 times in 10, another one otherwise."""
    own = TEXTURES[cls - 1]
    return own if rng.uniform() < _PREFERRED_TEXTURE else str(rng.choice([t for t in TEXTURES if t != own]))


def _hints_layout(rng: np.random.Generator, h: int, w: int, per_canvas: int) -> Iterator[_Shape]:
    """2 to 4 shapes per 64x64, half-sizes 7 to 22 px (aspect 1:2 to 2:1, capped at 24), anywhere."""
    for _ in range(rng.integers(2, 5) * per_canvas):
        cls = int(rng.integers(1, len(CLASSES)))
        a = rng.uniform(7.0, 22.0)
        b = min(a * np.exp(rng.uniform(np.log(0.5), np.log(2.0))), 24.0)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        yield _Shape(cls, a, b, cx, cy, rng.uniform(0, 2 * np.pi))


# --- "context": only the outline tells the class ---------------------------------------------------

def _context_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Any hue, saturation and brightness: one law for every class, the background's included."""
    return _hsv(rng, rng.uniform(0, 1), (0.0, 1.0), (0.2, 1.0))


def _context_texture(rng: np.random.Generator, cls: int) -> str:
    """Any texture on any class."""
    return str(rng.choice(TEXTURES))


def _context_layout(rng: np.random.Generator, h: int, w: int, per_canvas: int) -> Iterator[_Shape]:
    """1 to 3 shapes per 64x64, half-sizes 10 to 24 px (aspect 3:5 to 5:3), largest first so the
    smaller ones occlude it; centres far enough in that most of each outline is on the canvas."""
    for a in np.sort(rng.uniform(*_CONTEXT_HALF_SIZE, size=int(rng.integers(1, 4)) * per_canvas))[::-1]:
        cls = int(rng.integers(1, len(CLASSES)))
        b = a * np.exp(rng.uniform(np.log(0.6), np.log(1.0 / 0.6)))
        margin = 0.5 * max(a, b)
        cx = rng.uniform(min(margin, w / 2), max(w - margin, w / 2))
        cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
        yield _Shape(cls, a, b, cx, cy, rng.uniform(0, 2 * np.pi))


class _Law(NamedTuple):
    colour: Callable  # (rng, cls) -> RGB; cls 0 is the background
    texture: Callable  # (rng, cls) -> a name in TEXTURES
    layout: Callable  # (rng, h, w, per_canvas) -> shapes, drawn lazily (see render_shapes)


_LAWS = {"hints": _Law(_hints_colour, _hints_texture, _hints_layout),
         "context": _Law(_context_colour, _context_texture, _context_layout)}
TASKS = tuple(_LAWS)


def _check_task(task) -> str:
    if task not in _LAWS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    return task


def render_shapes(seed: int, index: int, size: int | tuple[int, int] = 64,
                  task: str = "hints") -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W, 3)`` float32 in ``[0, 1]`` and label map ``(H, W)`` int64 for ``(seed, index)``
    under ``task`` (``"hints"`` or ``"context"``, see the module docstring).

    Shape sizes are in pixels, so a larger canvas holds more shapes of the same look rather
    than bigger ones.
    """
    law = _LAWS[_check_task(task)]
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([int(seed), int(index)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # background: a colour gradient in a random direction, plus faint waves
    c0, c1 = law.colour(rng, 0), law.colour(rng, 0)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((np.cos(angle) * xx + np.sin(angle) * yy) / max(h, w) + 1) / 2  # (H, W) in [0, 1]
    image = c0 + (c1 - c0) * ramp[..., None]  # (H, W, 3)
    image += 0.08 * _texture("waves", xx, yy, rng)[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    label = np.zeros((h, w), dtype=np.int64)

    # the layout yields one shape at a time and each shape's texture and colours are drawn before
    # the next shape: one fixed order of random draws, so (seed, index) fixes every pixel
    for s in law.layout(rng, h, w, max(1, round(h * w / 64 ** 2))):
        u = np.cos(s.theta) * (xx - s.cx) + np.sin(s.theta) * (yy - s.cy)  # the shape's own axes
        v = -np.sin(s.theta) * (xx - s.cx) + np.cos(s.theta) * (yy - s.cy)
        mask = _inside(s.cls, u, v, s.a, s.b)
        t = _texture(law.texture(rng, s.cls), u, v, rng)[..., None]  # (H, W, 1)
        col_a, col_b = law.colour(rng, s.cls), law.colour(rng, s.cls)
        fill = col_a + (col_b - col_a) * t  # (H, W, 3)
        image[mask] = fill[mask]  # later shapes occlude earlier ones, in pixels and labels
        label[mask] = s.cls

    image += rng.normal(0.0, rng.uniform(0.02, 0.08), size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


class SyntheticShapes(Dataset):
    """``num_images`` images of :func:`render_shapes` for ``task``; item ``i`` is
    ``(image (3, H, W) float32 in [0, 1], labels (H, W) int64)``, rendered on demand."""

    classes = CLASSES

    def __init__(self, num_images: int, image_size: int = 64, seed: int = 0, task: str = "hints"):
        num_images, seed = check_int("num_images", num_images, 0), check_int("seed", seed, None)
        if check_int("image_size", image_size, None) < 32:
            raise ValueError(f"image_size must be at least 32 pixels (MiT's coarsest stage has "
                             f"stride 32), got {image_size}")
        self.num_images, self.image_size, self.seed = int(num_images), int(image_size), int(seed)
        self.task = _check_task(task)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        image, label = render_shapes(self.seed, index % self.num_images, self.image_size, self.task)
        return image_to_tensor(image).contiguous(), torch.from_numpy(label)  # (3, H, W), (H, W)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, H, W)`` and labels ``(B, H, W)`` of several items."""
        images, labels = zip(*(self[int(i)] for i in indices))
        return torch.stack(images), torch.stack(labels)

"""A synthetic segmentation set: textured shapes on a noisy background, made from a seed.

No data can be downloaded, so the course draws its own. Every image is a pure function of
``(seed, index)``: the same pair always gives the same pixels, on any machine, and two seeds
give unrelated images (training and held-out sets never overlap).

Each image holds a few shapes (disc, box, triangle) of random size, aspect ratio and rotation,
in a colour near their class's hue (red, blue, green) on a greyish background, each filled with
a texture (flat, stripes, checks, waves); shapes drawn later hide the
ones below (occlusion), and pixel noise covers everything. A shape wears its class's own
texture 9 times in 10 and another one otherwise: texture is a strong hint, and where it
misleads, only the outline tells the class.
"""
from __future__ import annotations

import colorsys

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["CLASSES", "SyntheticShapes", "render_shapes"]

CLASSES = ("background", "disc", "box", "triangle")
TEXTURES = ("flat", "stripes", "checks", "waves")
_HUES = (None, 0.0, 0.6, 0.3)  # each class's hue (red, blue, green), jittered per shape
_PREFERRED_TEXTURE = 0.9  # chance a shape wears its class's own texture (disc: flat, box: stripes, ...)


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


def _colour(rng: np.random.Generator, hue: float | None) -> np.ndarray:
    """An RGB colour: near ``hue`` and saturated for a shape, any hue but greyish for the background."""
    if hue is None:
        h, sat = rng.uniform(0, 1), rng.uniform(0.0, 0.35)
    else:
        h, sat = (hue + rng.uniform(-0.08, 0.08)) % 1.0, rng.uniform(0.5, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, sat, rng.uniform(0.35, 1.0)), dtype=np.float32)


def _inside(cls: int, u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Boolean mask of the shape of class ``cls`` with half-width ``a`` and half-height ``b``."""
    if cls == 1:  # disc: an ellipse
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if cls == 2:  # box: a rectangle
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    # triangle: apex at v = -b, base of half-width a at v = +b
    return (v <= b) & (np.abs(u) <= a * (v + b) / (2 * b))


def render_shapes(seed: int, index: int, size: int | tuple[int, int] = 64) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W, 3)`` float32 in ``[0, 1]`` and label map ``(H, W)`` int64 for ``(seed, index)``.

    Shape sizes are in pixels (half-sizes 7 to 22), so a larger canvas holds more shapes
    of the same look rather than bigger ones.
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([int(seed), int(index)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # background: a colour gradient in a random direction, plus faint waves
    c0, c1 = _colour(rng, None), _colour(rng, None)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((np.cos(angle) * xx + np.sin(angle) * yy) / max(h, w) + 1) / 2  # (H, W) in [0, 1]
    image = c0 + (c1 - c0) * ramp[..., None]  # (H, W, 3)
    image += 0.08 * _texture("waves", xx, yy, rng)[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    label = np.zeros((h, w), dtype=np.int64)

    n_shapes = rng.integers(2, 5) * max(1, round(h * w / 64 ** 2))
    for _ in range(n_shapes):
        cls = int(rng.integers(1, len(CLASSES)))
        a = rng.uniform(7.0, 22.0)
        b = a * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))  # aspect ratio 1:2 ... 2:1
        b = min(b, 24.0)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        theta = rng.uniform(0, 2 * np.pi)
        u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)  # the shape's own axes
        v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
        mask = _inside(cls, u, v, a, b)
        own = TEXTURES[cls - 1]
        kind = own if rng.uniform() < _PREFERRED_TEXTURE else str(rng.choice([t for t in TEXTURES if t != own]))
        t = _texture(kind, u, v, rng)[..., None]  # (H, W, 1)
        col_a, col_b = _colour(rng, _HUES[cls]), _colour(rng, _HUES[cls])
        fill = col_a + (col_b - col_a) * t  # (H, W, 3)
        image[mask] = fill[mask]  # later shapes occlude earlier ones, in pixels and labels
        label[mask] = cls

    image += rng.normal(0.0, rng.uniform(0.02, 0.08), size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


class SyntheticShapes(Dataset):
    """``num_images`` images of :func:`render_shapes`; item ``i`` is
    ``(image (3, H, W) float32 in [0, 1], labels (H, W) int64)``, rendered on demand."""

    classes = CLASSES

    def __init__(self, num_images: int, image_size: int = 64, seed: int = 0):
        for name, value in (("num_images", num_images), ("image_size", image_size), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels (MiT's coarsest stage has "
                             f"stride 32), got {image_size}")
        self.num_images, self.image_size, self.seed = int(num_images), int(image_size), int(seed)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        image, label = render_shapes(self.seed, index % self.num_images, self.image_size)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(label)  # (3, H, W), (H, W)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, H, W)`` and labels ``(B, H, W)`` of several items."""
        images, labels = zip(*(self[int(i)] for i in indices))
        return torch.stack(images), torch.stack(labels)

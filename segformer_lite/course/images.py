"""The course's sample photos (CC0 / public domain) and figures, shipped inside the package in
``photos/`` (with their licence note) and ``figures/``, so an installed wheel has them too."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..tokens import image_to_tensor

__all__ = ["PHOTOS", "FIGURES_DIR", "load_photo", "photo_tensor", "IMAGENET_MEAN", "IMAGENET_STD"]

PHOTOS_DIR = Path(__file__).resolve().parent / "photos"  # package data, next to this module
FIGURES_DIR = Path(__file__).resolve().parent / "figures"  # the encoder diagram notebook 05 shows
PHOTOS = ("chelsea", "coffee", "astronaut")
# SegFormer's checkpoints were trained on images normalised with the ImageNet statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_photo(name: str = "chelsea", size: tuple[int, int] | None = None) -> np.ndarray:
    """A photo as a ``(H, W, 3)`` uint8 array; ``size=(H, W)`` resizes it (bilinear)."""
    from PIL import Image

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; available: {', '.join(PHOTOS)}")
    path = PHOTOS_DIR / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"photo {path} is missing: the package ships it as package data in "
                                "segformer_lite/course/photos/; reinstall segformer-lite")
    img = Image.open(path).convert("RGB")
    if size is not None:
        h, w = size
        img = img.resize((int(w), int(h)), Image.BILINEAR)
    return np.asarray(img)


def photo_tensor(name: str = "chelsea", size: tuple[int, int] | None = None,
                 normalize: bool = True) -> torch.Tensor:
    """A photo as a ``(1, 3, H, W)`` float32 tensor, ImageNet-normalised by default."""
    x = image_to_tensor(load_photo(name, size))  # (3, H, W) in [0, 1]
    if normalize:
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x[None]

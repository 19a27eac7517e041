"""Two local baselines with SegFormer's contract, to show what a task needs beyond a pixel.

If the class could be read off a pixel or a small patch, these would solve the task; on the
``"context"`` shapes, where only the outline tells the class, they should not.

- :class:`PixelMLP`: 1x1 convolutions only, so every pixel is classified from its own RGB.
- :class:`LocalCNN`: three 3x3 convolutions, a 7x7-pixel receptive field.
- :class:`DilatedCNN`: five 3x3 convolutions dilated 1, 2, 4, 8, 16, a 63x63-pixel theoretical
  receptive field (nearly all of a 64 px image): a CNN that *could* see the outline, for the
  experiments' effective-receptive-field comparison (not a shipped baseline).

As :class:`~segformer_lite.SegFormer`: ``model(images)`` gives logits ``(B, K, H, W)`` (here at
full resolution), ``model(images, labels)`` gives ``(loss, logits)`` with the same loss
(:func:`~segformer_lite.decoder.segmentation_loss`), ``model.predict(images)`` class indices.
:func:`receptive_field` measures a model's receptive field from gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_int
from ..decoder import segmentation_loss

__all__ = ["ConvBaseline", "PixelMLP", "LocalCNN", "DilatedCNN", "BASELINES", "receptive_field"]


class ConvBaseline(nn.Module):
    """Same-padded ``kernel x kernel`` convolutions with ReLUs, one per entry of ``dilations``, then a
    1x1 classifier."""

    kind = ""  # the name train's --model and checkpoint files use

    def __init__(self, kernel: int, dilations: tuple[int, ...], num_classes: int, width: int,
                 ignore_index: int = 255):
        super().__init__()
        check_int("num_classes", num_classes)
        check_int("width", width)
        layers, c = [], 3
        for d in dilations:
            layers += [nn.Conv2d(c, width, kernel, padding=d * (kernel // 2), dilation=d), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, num_classes, kernel_size=1)
        self.num_classes, self.width, self.ignore_index = num_classes, width, ignore_index

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.classifier(self.features(images))  # (B, 3, H, W) -> (B, K, H, W)
        return logits if labels is None else (segmentation_loss(logits, labels, self.ignore_index), logits)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class index per pixel, ``(B, H, W)`` int64 (the logits are already full resolution)."""
        return self(images).argmax(1)


class PixelMLP(ConvBaseline):
    """Per-pixel MLP: two hidden 1x1 convolutions (receptive field 1 pixel)."""

    kind = "pixel-mlp"

    def __init__(self, num_classes: int, width: int = 64):
        super().__init__(kernel=1, dilations=(1, 1), num_classes=num_classes, width=width)


class LocalCNN(ConvBaseline):
    """Three 3x3 convolutions (receptive field 7x7 pixels). 32 wide: at 64 px and batch 16 a
    64-wide step costs 3.4x the 32-wide one: full-resolution convolutions are dear."""

    kind = "local-cnn"

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__(kernel=3, dilations=(1, 1, 1), num_classes=num_classes, width=width)


class DilatedCNN(ConvBaseline):
    """Five 3x3 convolutions dilated 1, 2, 4, 8, 16: theoretical receptive field
    ``1 + 2 * (1 + 2 + 4 + 8 + 16) = 63`` pixels, at the local CNN's width and cost per layer."""

    kind = "dilated-cnn"

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__(kernel=3, dilations=(1, 2, 4, 8, 16), num_classes=num_classes, width=width)


BASELINES = {cls.kind: cls for cls in (PixelMLP, LocalCNN)}


def receptive_field(model: nn.Module, size: int = 33) -> int:
    """Side in pixels of the receptive field of ``model``'s centre output, measured: the input
    columns whose gradient reaches it (random weights and input, so no gradient is 0 by chance)."""
    x = torch.randn(1, 3, size, size, requires_grad=True)
    logits = model(x)  # (1, K, h, w)
    logits[0, :, logits.shape[-2] // 2, logits.shape[-1] // 2].sum().backward()
    touched = x.grad.abs().sum((0, 1)) > 0  # (size, size)
    return int(touched.any(0).sum())

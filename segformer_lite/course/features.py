"""Looking inside a model: its feature maps channel by channel (notebook 05) and how much each
input pixel moves one prediction (notebook 06's effective receptive field)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["standardised_channels", "prediction_gradient"]


def standardised_channels(feature: torch.Tensor, k: int = 3) -> torch.Tensor:
    """``(1, C, H, W)`` -> ``(k, H, W)``: the ``k`` channels that vary most over the map, each
    standardised on its own (mean 0, standard deviation 1 over the map), so that one loud channel
    does not set the colour scale of the others. Channels come most varying first."""
    if not (isinstance(feature, torch.Tensor) and feature.ndim == 4 and feature.shape[0] == 1):
        raise ValueError(f"expected one feature map (1, C, H, W), got {getattr(feature, 'shape', type(feature))}")
    if not (isinstance(k, int) and 1 <= k <= feature.shape[1]):
        raise ValueError(f"k must be an int from 1 to the {feature.shape[1]} channels, got {k!r}")
    f = feature[0].detach()  # (C, H, W)
    spread = f.std(dim=(1, 2))  # (C,)
    top = spread.argsort(descending=True)[:k]
    chosen = f[top]  # (k, H, W)
    return (chosen - chosen.mean(dim=(1, 2), keepdim=True)) / spread[top, None, None].clamp_min(1e-12)


def prediction_gradient(model: nn.Module, image: torch.Tensor, query: tuple[int, int]) -> torch.Tensor:
    """``(H, W)``: how much each pixel of ``image`` (1, 3, H, W) moves the log-probability of the
    class ``model`` predicts at logit pixel ``query`` (row, column of its logit grid), as the size
    of the gradient summed over the colour channels. ``model(image)`` returns logits
    ``(1, classes, h, w)``. The gradient of the decision, not of a sum of all class scores, in
    which opposite changes would cancel."""
    if not (isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] == 1):
        raise ValueError(f"expected one image (1, C, H, W), got {getattr(image, 'shape', type(image))}")
    pixels = image.detach().clone().requires_grad_(True)
    logits = model(pixels)  # (1, classes, h, w)
    h, w = logits.shape[-2:]
    row, col = query
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query {query} lies outside the {h}x{w} logit grid")
    log_p = logits.log_softmax(dim=1)[0, :, row, col]  # (classes,)
    (grad,) = torch.autograd.grad(log_p[log_p.argmax()], pixels)
    return grad[0].abs().sum(0)  # (H, W)

"""The effective receptive field (ERF) of a network's feature maps, measured from gradients, and
the side of the square that holds most of it."""
from __future__ import annotations

import torch

__all__ = ["effective_receptive_field", "erf_extent"]


def _feature_maps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The maps whose receptive field we measure: the encoder's four stages, or the local CNN's
    last hidden layer."""
    return model.encoder(images) if hasattr(model, "encoder") else [model.features(images)]


def effective_receptive_field(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per feature map, ``(H, W)``: ``|d (centre feature) / d pixel|``, summed over RGB, averaged over
    ``images`` and scaled to a maximum of 1: the effective receptive field of Luo et al. (2016) that
    the paper's Figure 3 draws. The centre feature is ``relu(f[:, :, h/2, w/2]).sum()``, as in
    RepLKNet's ERF script: a plain channel sum would cancel, since every MiT stage ends in a
    LayerNorm, whose outputs sum to a constant when its scale is 1 (as at initialisation)."""
    images = images.clone().requires_grad_(True)
    maps = _feature_maps(model, images)
    out = []
    for i, f in enumerate(maps):  # (B, C, h, w)
        centre = torch.relu(f[:, :, f.shape[-2] // 2, f.shape[-1] // 2]).sum()  # images independent in eval mode
        (grad,) = torch.autograd.grad(centre, images, retain_graph=i < len(maps) - 1)
        erf = grad.abs().sum(1).mean(0)  # (H, W)
        out.append(erf / erf.max())
    return out


def erf_extent(erf: torch.Tensor, mass: float = 0.9) -> int:
    """Side in pixels of the smallest square, centred on the image centre, that holds ``mass`` of
    the ERF's total (clipped at the image border)."""
    h, w = erf.shape
    total, cy, cx = float(erf.sum()), h // 2, w // 2
    for r in range(max(h, w)):
        if float(erf[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1].sum()) >= mass * total:
            return 2 * r + 1
    return max(h, w)

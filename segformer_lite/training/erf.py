"""Receptive fields, measured from gradients: the theoretical field (which input pixels reach a
feature at all) and the effective one of Luo et al. (2016) (how strongly each pixel moves it),
which the SegFormer paper draws per stage in its Figure 3.

The theoretical field is fixed by the architecture: at 64 px every stage of MiT reaches every
pixel (attention gives each query every key, and each key pools a window of tokens that together
tile the image), a stack of three 3x3 convolutions reaches 7 px. The effective field is what
training made of that reach: where the gradient's mass actually lies.
"""
from __future__ import annotations

import torch

__all__ = ["feature_maps", "effective_receptive_field", "theoretical_receptive_field", "erf_extent",
           "erf_radius"]


def feature_maps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The maps whose receptive field we measure: the encoder's four stages, or a convolutional
    baseline's last hidden layer."""
    return model.encoder(images) if hasattr(model, "encoder") else [model.features(images)]


def _centre_gradients(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per feature map, ``(B, 3, H, W)``: the gradient of ``relu(f[:, :, h/2, w/2]).sum()``. A plain
    channel sum would cancel: every MiT stage ends in a LayerNorm, whose outputs sum to a constant
    while its scales are 1 (as at initialisation); RepLKNet's ERF script takes the ReLU too."""
    images = images.clone().requires_grad_(True)
    maps = feature_maps(model, images)
    grads = []
    for i, f in enumerate(maps):  # (B, C, h, w)
        centre = torch.relu(f[:, :, f.shape[-2] // 2, f.shape[-1] // 2]).sum()  # images independent in eval mode
        (grad,) = torch.autograd.grad(centre, images, retain_graph=i < len(maps) - 1)
        grads.append(grad)
    return grads


def effective_receptive_field(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per feature map, ``(H, W)``: ``|d (centre feature) / d pixel|``, summed over RGB, averaged
    over ``images`` and scaled to a maximum of 1."""
    out = []
    for grad in _centre_gradients(model, images):
        erf = grad.abs().sum(1).mean(0)  # (H, W)
        out.append(erf / erf.max())
    return out


def theoretical_receptive_field(model: torch.nn.Module, size: int = 64, seed: int = 0) -> list[int]:
    """Per feature map, the side in pixels of the bounding box of the input pixels whose gradient
    reaches the centre feature at all (random input; a pixel outside the field has exactly 0)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 3, size, size, generator=generator)
    sides = []
    for grad in _centre_gradients(model, images):
        rows, cols = torch.nonzero(grad.abs().sum((0, 1)) > 0, as_tuple=True)
        sides.append(int(max(rows.max() - rows.min(), cols.max() - cols.min())) + 1)
    return sides


def erf_extent(erf: torch.Tensor, mass: float = 0.9) -> int:
    """Side in pixels of the smallest square, centred on the image centre, that holds ``mass`` of
    the ERF's total (clipped at the image border)."""
    h, w = erf.shape
    total, cy, cx = float(erf.sum()), h // 2, w // 2
    for r in range(max(h, w)):
        if float(erf[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1].sum()) >= mass * total:
            return 2 * r + 1
    return max(h, w)


def erf_radius(erf: torch.Tensor) -> float:
    """The ERF's mass-weighted mean distance in pixels from the image centre: 0 for all the mass
    on the centre pixel, about 0.38 of the side for mass spread evenly over a square image. A
    continuous measure, where :func:`erf_extent` moves in steps of 2 px."""
    h, w = erf.shape
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    dist = torch.sqrt(yy.double() ** 2 + xx.double() ** 2)
    return float((erf.double() * dist).sum() / erf.double().sum())

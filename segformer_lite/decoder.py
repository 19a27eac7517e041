"""The all-MLP decode head and the full SegFormer: MiT encoder -> decode head -> logits at 1/4.

The head follows the released code (NVlabs ``SegFormerHead``, transformers' ``SegformerDecodeHead``):

1. a Linear per stage maps ``C_i`` channels to one decoder width ``D``;
2. every map is upsampled (bilinear, ``align_corners=False``) to the stride-4 grid of stage 1;
3. the four maps are concatenated **deepest first**, ``[c4, c3, c2, c1]``, as the official code does;
4. a 1x1 conv without bias + BatchNorm + ReLU fuses ``4D -> D`` channels (mmcv's ``ConvModule``);
5. dropout, then a 1x1 conv classifier gives ``num_classes`` logits per stride-4 pixel.

Given labels, ``SegFormer`` also computes the training loss as transformers does. Only the model
lives here; reading and writing its weights is ``checkpoint.py``'s job.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import MiTConfig, check_int
from .encoder import MixTransformer

__all__ = ["AllMLPDecoder", "SegFormer", "segmentation_loss"]


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """transformers' segmentation loss: the logits ``(B, K, h, w)`` upsampled (bilinear) to the
    labels' size ``(B, H, W)``, then cross-entropy skipping ``ignore_index``; with one class,
    binary cross-entropy on the logit, ignored pixels zeroed but still counted in the mean (as
    transformers does)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError("expected labels as an integer tensor (B, H, W) of class indices, got "
                        + (f"dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else type(labels).__name__))
    if labels.ndim != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"expected labels of shape (B, H, W) with B = {logits.shape[0]}, "
                         f"got {tuple(labels.shape)}")
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)
    if logits.shape[1] > 1:
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    valid = ((labels >= 0) & (labels != ignore_index)).float()
    loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    return (loss * valid).mean()


class AllMLPDecoder(nn.Module):
    """``[f1, f2, f3, f4]`` (``(B, C_i, H_i, W_i)``) -> logits ``(B, num_classes, H_1, W_1)``."""

    def __init__(self, in_dims: tuple[int, ...], num_classes: int, decoder_dim: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Linear(c, decoder_dim) for c in in_dims)
        self.fuse = nn.Conv2d(len(in_dims) * decoder_dim, decoder_dim, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(decoder_dim)  # the conv has no bias: BatchNorm's shift is the bias
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]  # stage 1's grid: 1/4 of the image
        ups = []
        for f, linear in zip(feats, self.linear_c):
            h, w = f.shape[-2:]
            x = linear(rearrange(f, "b c h w -> b (h w) c"))  # (B, H_i*W_i, D)
            x = rearrange(x, "b (h w) d -> b d h w", h=h, w=w)  # (B, D, H_i, W_i)
            ups.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))  # (B, D, H_1, W_1)
        x = torch.cat(ups[::-1], dim=1)  # (B, 4D, H_1, W_1), deepest stage first as released
        x = torch.relu(self.norm(self.fuse(x)))  # (B, D, H_1, W_1)
        return self.classifier(self.dropout(x))  # (B, num_classes, H_1, W_1)


class SegFormer(nn.Module):
    """MiT encoder + all-MLP decoder. ``forward(images) -> logits (B, num_classes, H/4, W/4)``,
    the same output as transformers' ``SegformerForSemanticSegmentation``.

    ``forward(images, labels)`` returns ``(loss, logits)``, the loss computed as transformers
    does (:meth:`loss`). With ``return_attention=True`` the encoder's attention maps (one per
    block) come last. Upsample the logits to the image size (bilinear) before an ``argmax``.
    """

    def __init__(self, config: MiTConfig, num_classes: int, decoder_dim: int = 256, dropout: float = 0.1,
                 ignore_index: int = 255):
        super().__init__()
        if not isinstance(config, MiTConfig):
            raise TypeError(f"expected an MiTConfig (see segformer_lite.mit_config), got {type(config).__name__}")
        check_int("num_classes", num_classes)
        check_int("decoder_dim", decoder_dim)
        self.config, self.num_classes, self.decoder_dim = config, num_classes, decoder_dim
        self.ignore_index = ignore_index  # label of pixels the loss skips (transformers' semantic_loss_ignore_index)
        self.encoder = MixTransformer(config)
        self.decode_head = AllMLPDecoder(config.embed_dims, num_classes, decoder_dim, dropout)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, return_attention: bool = False):
        if return_attention:
            feats, attns = self.encoder(images, return_attention=True)
        else:
            feats, attns = self.encoder(images), None
        logits = self.decode_head(feats)
        out = (logits,) if labels is None else (self.loss(logits, labels), logits)
        if return_attention:
            out += (attns,)
        return out[0] if len(out) == 1 else out

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' segmentation loss on this model's logits (:func:`segmentation_loss`)."""
        return segmentation_loss(logits, labels, self.ignore_index)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class index per pixel at full image resolution, ``(B, H, W)`` int64."""
        logits = self(images)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False).argmax(1)

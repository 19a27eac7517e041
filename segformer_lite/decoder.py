"""The all-MLP decode head and the full SegFormer: MiT encoder -> decode head -> logits at 1/4.

The head follows the released code (NVlabs ``SegFormerHead``, transformers' ``SegformerDecodeHead``):

1. a Linear per stage maps ``C_i`` channels to one decoder width ``D``;
2. every map is upsampled (bilinear, ``align_corners=False``) to the stride-4 grid of stage 1;
3. the four maps are concatenated **deepest first**, ``[c4, c3, c2, c1]``, as the official code does;
4. a 1x1 conv without bias + BatchNorm + ReLU fuses ``4D -> D`` channels (mmcv's ``ConvModule``);
5. dropout, then a 1x1 conv classifier gives ``num_classes`` logits per stride-4 pixel.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checkpoint import _load_into
from .config import MiTConfig
from .encoder import MixTransformer
from ._files import atomic_write

__all__ = ["AllMLPDecoder", "SegFormer", "segformer_from_transformers", "save_segformer",
           "load_segformer", "SHIPPED_CHECKPOINT"]

SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "segformer_shapes.safetensors"


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

    With ``return_attention=True`` it also returns the encoder's attention maps (one per block).
    Upsample the logits to the image size (bilinear) before a loss or an ``argmax``.
    """

    def __init__(self, config: MiTConfig, num_classes: int, decoder_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        if not isinstance(config, MiTConfig):
            raise TypeError(f"expected an MiTConfig (see segformer_lite.mit_config), got {type(config).__name__}")
        for name, value in (("num_classes", num_classes), ("decoder_dim", decoder_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive int, got {value!r}")
        self.config, self.num_classes, self.decoder_dim = config, num_classes, decoder_dim
        self.encoder = MixTransformer(config)
        self.decode_head = AllMLPDecoder(config.embed_dims, num_classes, decoder_dim, dropout)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        if return_attention:
            feats, attns = self.encoder(images, return_attention=True)
            return self.decode_head(feats), attns
        return self.decode_head(self.encoder(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class index per pixel at full image resolution, ``(B, H, W)`` int64."""
        logits = self(images)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False).argmax(1)


# transformers' decode-head names -> ours (the encoder keys are renamed by checkpoint.py)
_HF_HEAD = [
    (r"^decode_head\.linear_projections\.(\d+)\.proj\.", r"decode_head.linear_c.\1."),
    (r"^decode_head\.linear_fuse\.", "decode_head.fuse."),
    (r"^decode_head\.batch_norm\.", "decode_head.norm."),
]


def segformer_from_transformers(cfg: MiTConfig, encoder_sd: dict, head_sd: dict) -> SegFormer:
    """A :class:`SegFormer` from a transformers ``SegformerForSemanticSegmentation`` state dict,
    split by ``checkpoint.canonical_state_dict`` into the (renamed) encoder and the
    ``decode_head.*`` keys. Class count and decoder width are read off the classifier's shape."""
    sd = {f"encoder.{k}": v for k, v in encoder_sd.items()}
    for key, value in head_sd.items():
        for pattern, repl in _HF_HEAD:
            key = re.sub(pattern, repl, key)
        sd[key] = value
    if "decode_head.classifier.weight" not in sd:
        raise ValueError("transformers decode head without decode_head.classifier.weight: "
                         "cannot tell the number of classes")
    num_classes, decoder_dim = sd["decode_head.classifier.weight"].shape[:2]
    model = SegFormer(cfg, int(num_classes), int(decoder_dim))
    _load_into(model, sd, "from transformers")
    return model.eval()


def save_segformer(model: SegFormer, path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model``'s weights and architecture to a ``.safetensors`` file, atomically
    (a temporary file in the same folder, then ``os.replace``: never a half-written file)."""
    from safetensors.torch import save_file

    if not isinstance(model, SegFormer):
        raise TypeError(f"expected a SegFormer, got {type(model).__name__}")
    meta = {"config": json.dumps(_config_dict(model.config)), "num_classes": str(model.num_classes),
            "decoder_dim": str(model.decoder_dim)}
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))


def load_segformer(path=None) -> SegFormer:
    """A :class:`SegFormer` from a file written by :func:`save_segformer` (default: the
    shipped checkpoint trained on the synthetic shapes). Returned in eval mode, float32."""
    from safetensors import SafetensorError, safe_open

    path = SHIPPED_CHECKPOINT if path is None else path
    if not isinstance(path, (str, Path)):
        raise TypeError(f"expected a path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SegFormer checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
        cfg = MiTConfig(**json.loads(meta["config"]))
        num_classes, decoder_dim = int(meta["num_classes"]), int(meta["decoder_dim"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a SegFormer checkpoint written by save_segformer "
                         f"({type(e).__name__}: {e})") from None
    model = SegFormer(cfg, num_classes, decoder_dim)
    _load_into(model, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, str(path))
    return model.eval()


def _config_dict(cfg: MiTConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}

"""The Mix Transformer (MiT) encoder: four stages, feature maps at strides 4, 8, 16, 32."""
from __future__ import annotations

import math

import torch
from torch import nn

from .block import Block
from .config import MiTConfig
from .grid import min_input_size
from .patch_embed import OverlapPatchEmbed
from .tokens import tokens_to_image

__all__ = ["MixTransformer", "Stage", "init_weights"]


class Stage(nn.Module):
    """Overlapping patch embedding -> ``depth`` blocks -> LayerNorm -> back to an image."""

    def __init__(self, cfg: MiTConfig, i: int, in_channels: int, drop_paths: list[float]):
        super().__init__()
        dim = cfg.embed_dims[i]
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, cfg.patch_sizes[i], cfg.strides[i],
                                             eps=cfg.embed_norm_eps)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads[i], cfg.sr_ratios[i], cfg.mlp_ratios[i], cfg.qkv_bias, p,
                  eps=cfg.norm_eps, embed_eps=cfg.embed_norm_eps, act=cfg.hidden_act)
            for p in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        x, hw = self.patch_embed(x)  # (B, N, C), N = H*W of this stage's grid
        attns = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, hw, return_attention=True)
                attns.append(attn)
            else:
                x = block(x, hw)
        x = tokens_to_image(self.norm(x), hw)  # (B, C, H, W), channels-last strides
        return (x, attns) if return_attention else x


class MixTransformer(nn.Module):
    """MiT encoder. ``forward(images) -> [f1, f2, f3, f4]``, ``f_i`` of shape ``(B, C_i, H_i, W_i)``,
    ordinary contiguous tensors (so ``f.view(B, -1)`` works, as with the official code).

    With ``return_attention=True`` it also returns one attention map per block, in order,
    each ``(B, heads, N_i, M_i)``: ``N_i = H_i * W_i`` and ``M_i = floor(H_i / sr_i) * floor(W_i / sr_i)``
    (:func:`segformer_lite.grid.stage_grid_sizes` and :func:`~segformer_lite.grid.reduced_grid`).
    """

    def __init__(self, cfg: MiTConfig | None = None):
        super().__init__()
        if cfg is None:
            cfg = MiTConfig()
        if not isinstance(cfg, MiTConfig):
            raise TypeError(f"expected an MiTConfig (see segformer_lite.mit_config), got {type(cfg).__name__}")
        self.config = cfg
        # stochastic depth grows linearly from 0 to drop_path_rate over all blocks
        n = sum(cfg.depths)  # plain floats, not torch.linspace: works on the meta device too
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        in_dims = (cfg.in_channels,) + cfg.embed_dims[:-1]
        self.stages = nn.ModuleList(
            Stage(cfg, i, in_dims[i], rates[starts[i]:starts[i] + cfg.depths[i]])
            for i in range(cfg.num_stages))
        self.min_size = min_input_size(cfg)
        self.apply(init_weights)

    def check_input(self, images) -> None:
        """Raise a clear TypeError/ValueError for anything the encoder cannot take."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected images as a torch.Tensor (B, C, H, W), got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"expected a 4-D batch of images (B, C, H, W), got a {images.ndim}-D "
                             f"tensor of shape {tuple(images.shape)}"
                             + (" (add a batch dimension: images[None])" if images.ndim == 3 else ""))
        c = self.config.in_channels
        if images.shape[1] != c:
            raise ValueError(f"expected {c} input channels (B, {c}, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"expected a floating-point image tensor, got dtype {images.dtype} "
                            "(convert with images.float() / 255)")
        weight = self.stages[0].patch_embed.proj.weight
        if images.device != weight.device:
            raise ValueError(f"expected images on the model's device {weight.device}, got {images.device} "
                             f"(use images.to('{weight.device}'))")
        dtype = weight.dtype
        if images.dtype != dtype:
            raise TypeError(f"expected images of the model's dtype {dtype}, got {images.dtype} "
                            f"(use images.to({dtype}) or model.to({images.dtype}))")
        h, w = images.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(f"image of {h}x{w} is too small: this encoder needs at least "
                             f"{self.min_size}x{self.min_size} so that every stage's grid "
                             f"(strides {self.config.total_stride}) covers its sequence-reduction "
                             f"window (sr_ratios {self.config.sr_ratios})")

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        self.check_input(images)
        feats, attns, x = [], [], images
        for stage in self.stages:
            if return_attention:
                x, stage_attns = stage(x, return_attention=True)
                attns += stage_attns
            else:
                x = stage(x)
            # the next stage reads the channels-last view as is; callers get plain NCHW maps
            feats.append(x.contiguous())
        return (feats, attns) if return_attention else feats


@torch.no_grad()
def init_weights(m: nn.Module) -> None:
    """The official scheme, for ``module.apply``: truncated normal (std .02) for Linear, ones and
    zeros for LayerNorm, fan-out normal for Conv2d."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.zero_()

"""What attention costs: FLOPs and score-matrix memory, full vs efficient, for any resolution.

FLOPs are counted as ``torch.utils.flop_counter`` counts them: only matrix products and
convolutions, two FLOPs per multiply-add (a ``(m, k) @ (k, n)`` product is ``2*m*k*n``), biases,
LayerNorms, softmax and GELU left out. The tests hold these formulas to FlopCounterMode.

For an ``H x W`` token grid of width ``C`` (``N = H*W`` tokens), sequence reduction ``R = sr``
and ``M = floor(H/R) * floor(W/R)`` key/value tokens, one attention layer costs

=================  ==========================  =====================================
q                  ``2 * N * C * C``           a Linear on all N tokens
sr conv            ``2 * M * C * C * R*R``     kernel = stride = R: each input pixel read once
kv (fused)         ``2 * M * C * 2C``          keys and values from the M reduced tokens
scores  Q K^T      ``2 * N * M * C``           summed over heads: heads * (N * M * C/heads)
mix     A V        ``2 * N * M * C``
proj               ``2 * N * C * C``
=================  ==========================  =====================================

Only the two score terms grow with ``N * M``; full attention has ``M = N`` and so grows with
``N**2``. The score matrix itself holds ``B * heads * N * M`` numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import MiTConfig, check_int
from ..grid import min_input_size, reduced_grid, stage_grid_sizes

__all__ = ["AttentionCost", "StageCost", "EncoderCost", "attention_cost", "mix_ffn_flops",
           "encoder_cost"]


@dataclass(frozen=True)
class AttentionCost:
    """The cost of one (efficient or full) self-attention layer on one batch."""

    tokens: int  # N = H * W queries
    kv_tokens: int  # M = floor(H / sr) * floor(W / sr) keys and values (N when sr = 1)
    score_elements: int  # B * heads * N * M entries in the attention matrix
    score_bytes: int  # its size at bytes_per_element each (what return_attention=True stores)
    projection_flops: int  # q, sr conv, kv and output Linears: linear in N
    score_flops: int  # Q K^T and A V: proportional to N * M
    flops: int  # projection_flops + score_flops

    @property
    def reduction(self) -> float:
        """How many times smaller the score matrix is than full attention's: ``N / M``."""
        return self.tokens / self.kv_tokens


def attention_cost(height: int, width: int, dim: int, num_heads: int = 1, sr_ratio: int = 1,
                   batch: int = 1, bytes_per_element: int = 4) -> AttentionCost:
    """FLOPs and score memory of ``EfficientSelfAttention(dim, num_heads, sr_ratio)`` on an
    ``height x width`` token grid (``sr_ratio=1``: full attention).

    >>> attention_cost(128, 128, 32, sr_ratio=8).kv_tokens   # stage 1 of a 512x512 image
    256
    """
    for name, value in dict(height=height, width=width, dim=dim, num_heads=num_heads, sr_ratio=sr_ratio,
                            batch=batch, bytes_per_element=bytes_per_element).items():
        check_int(name, value)
    if dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide dim={dim} (heads split the channels)")
    n = height * width
    kh, kw = reduced_grid((height, width), sr_ratio)  # a partial window at the edge is dropped
    m = kh * kw
    c = dim
    projection = 2 * batch * (n * c * c  # q
                              + m * c * 2 * c  # fused kv
                              + n * c * c)  # output proj
    if sr_ratio > 1:
        projection += 2 * batch * m * c * c * sr_ratio * sr_ratio  # sr conv
    scores = 2 * batch * (n * m * c) * 2  # Q K^T and A V, summed over heads
    elements = batch * num_heads * n * m
    return AttentionCost(tokens=n, kv_tokens=m, score_elements=elements,
                         score_bytes=elements * bytes_per_element, projection_flops=projection,
                         score_flops=scores, flops=projection + scores)


def mix_ffn_flops(height: int, width: int, dim: int, hidden_dim: int, batch: int = 1) -> int:
    """FLOPs of ``MixFFN(dim, hidden_dim)``: fc1, the depthwise 3x3 conv (9 per channel and
    pixel) and fc2."""
    for name, value in dict(height=height, width=width, dim=dim, hidden_dim=hidden_dim, batch=batch).items():
        check_int(name, value)
    n = height * width
    return 2 * batch * n * (dim * hidden_dim + hidden_dim * 9 + hidden_dim * dim)


@dataclass(frozen=True)
class StageCost:
    """One encoder stage: its patch embedding and ``depth`` identical blocks."""

    grid: tuple[int, int]  # (H_i, W_i) token grid
    dim: int
    depth: int
    patch_embed_flops: int  # the overlapping-patch conv
    attention: AttentionCost  # one block's attention (every block of a stage is the same)
    ffn_flops: int  # one block's Mix-FFN
    flops: int  # patch_embed_flops + depth * (attention.flops + ffn_flops)


@dataclass(frozen=True)
class EncoderCost:
    stages: tuple[StageCost, ...]
    flops: int  # the whole MixTransformer forward: every matmul and convolution

    @property
    def attention_score_flops(self) -> int:
        """The part of ``flops`` that grows with N * M (Q K^T and A V of every block)."""
        return sum(s.depth * s.attention.score_flops for s in self.stages)


def encoder_cost(cfg: MiTConfig, height: int, width: int, batch: int = 1) -> EncoderCost:
    """FLOPs of ``MixTransformer(cfg)`` on ``batch`` images of ``height x width``, stage by stage.

    >>> import segformer_lite as sl
    >>> round(sl.encoder_cost(sl.mit_config("b0"), 512, 512).flops / 1e9, 2)   # GFLOPs
    6.41
    """
    if not isinstance(cfg, MiTConfig):
        raise TypeError(f"expected an MiTConfig (see segformer_lite.mit_config), got {type(cfg).__name__}")
    for name, value in dict(height=height, width=width, batch=batch).items():
        check_int(name, value)
    if min(height, width) < min_input_size(cfg):
        raise ValueError(f"a {height}x{width} image is too small for this encoder: it needs at "
                         f"least {min_input_size(cfg)}x{min_input_size(cfg)}")
    stages, in_ch = [], cfg.in_channels
    for i, (h, w) in enumerate(stage_grid_sizes(cfg, height, width)):
        dim, k = cfg.embed_dims[i], cfg.patch_sizes[i]
        embed = 2 * batch * h * w * dim * in_ch * k * k
        attn = attention_cost(h, w, dim, cfg.num_heads[i], cfg.sr_ratios[i], batch)
        ffn = mix_ffn_flops(h, w, dim, dim * cfg.mlp_ratios[i], batch)
        stages.append(StageCost(grid=(h, w), dim=dim, depth=cfg.depths[i], patch_embed_flops=embed,
                                attention=attn, ffn_flops=ffn,
                                flops=embed + cfg.depths[i] * (attn.flops + ffn)))
        in_ch = dim
    return EncoderCost(stages=tuple(stages), flops=sum(s.flops for s in stages))

"""Planted variants: the reference computation with one knob turned, one knob per classic mistake.

Plain ``torch`` code that reads the reference module's weights, written independently of the
package: with no knob turned each variant equals the package's module (``tests/test_checks.py``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...attention import EfficientSelfAttention
from ...block import Block
from ...decoder import AllMLPDecoder
from ...encoder import MixTransformer, Stage
from ...mix_ffn import MixFFN
from ...patch_embed import OverlapPatchEmbed


def to_tokens(x: torch.Tensor, how: str = "permute") -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) done right ("permute") or in one of the classic wrong ways."""
    b, c, h, w = x.shape
    if how == "reshape":
        return x.reshape(b, h * w, c)
    if how == "column":
        return x.transpose(2, 3).flatten(2).transpose(1, 2)
    return x.flatten(2).transpose(1, 2)


def to_image(t: torch.Tensor, hw: tuple[int, int], how: str = "permute") -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W) done right ("permute") or in one of the classic wrong ways."""
    b, n, c = t.shape
    h, w = hw
    if how == "sqrt":
        h = w = math.isqrt(n)
    elif how == "swap":
        h, w = w, h
    if how == "reshape":
        return t.reshape(b, c, h, w)
    if how == "column":
        return t.transpose(1, 2).reshape(b, c, w, h).transpose(2, 3)
    return t.transpose(1, 2).reshape(b, c, h, w)


def through_image(t: torch.Tensor, hw: tuple[int, int], conv, layout: str = "permute") -> torch.Tensor:
    """Tokens -> image -> ``conv`` -> tokens, done right ("permute") or with a classic layout
    mistake: "reshape" (no permute either way), "reshape_in" / "reshape_out" (only on the way
    in / out), "sqrt" or "swap" (wrong grid)."""
    into = {"reshape_in": "reshape", "reshape_out": "permute"}.get(layout, layout)
    return to_tokens(conv(to_image(t, hw, into)), "reshape" if layout in ("reshape", "reshape_out") else "permute")


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def patch_embed(m: OverlapPatchEmbed, x: torch.Tensor, pad: bool = True, norm: bool = True,
                flatten: str = "permute", swap_hw: bool = False):
    conv = m.proj
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.kernel_size[0] // 2 if pad else 0)
    h, w = y.shape[-2:]
    t = to_tokens(y, flatten)
    if norm:
        t = layer_norm(t, m.norm)
    return t, ((w, h) if swap_hw else (h, w))


def attention(m: EfficientSelfAttention, x: torch.Tensor, hw: tuple[int, int], split: str = "channels",
              merge: str = "permute", scale: str = "head", softmax_dim: int = -1,
              layout: str = "permute", sr_norm: bool = True, reduce: bool = True,
              kv_order: str = "kv", proj: bool = True) -> torch.Tensor:
    b, n, c = x.shape
    heads = m.num_heads
    d = c // heads

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, d)
        if split == "tokens":  # a plain reshape: head i gets a block of tokens, read as (L, d)
            return t.reshape(b, heads, t.shape[1], d)
        if split == "token_blocks":  # 'b (h t) c -> b h t c': head i gets L/heads whole tokens
            return t.reshape(b, heads, t.shape[1] // heads, c)
        return t.reshape(b, t.shape[1], heads, d).permute(0, 2, 1, 3)

    q = split_heads(F.linear(x, m.q.weight, m.q.bias))
    kv_in = x
    if m.sr_ratio > 1 and reduce:
        red = through_image(x, hw, lambda img: F.conv2d(img, m.sr.weight, m.sr.bias, m.sr.stride), layout)
        kv_in = layer_norm(red, m.norm) if sr_norm else red
    kv = F.linear(kv_in, m.kv.weight, m.kv.bias)
    k, v = kv[..., :c], kv[..., c:]
    if kv_order == "vk":
        k, v = v, k
    k, v = split_heads(k), split_heads(v)
    s = {"head": d ** -0.5, "dim": c ** -0.5, "none": 1.0, "twice": d ** -1.0, "inverted": d ** 0.5}.get(scale, 1.0)
    attn = (q @ k.transpose(-2, -1) * s).softmax(dim=softmax_dim)
    attn = attn * d ** -0.5 if scale == "after_softmax" else attn
    out = attn @ v  # (B, heads, N, d)
    out = out.reshape(b, n, c) if merge == "reshape" else out.permute(0, 2, 1, 3).reshape(b, n, c)
    return F.linear(out, m.proj.weight, m.proj.bias) if proj else out


def mix_ffn(m: MixFFN, x: torch.Tensor, hw: tuple[int, int], act_at: str = "dwconv",
            act: str = "gelu", layout: str = "permute", dwconv: bool = True,
            residual: bool = False) -> torch.Tensor:
    activation = {"gelu": F.gelu, "relu": F.relu,
                  "tanh": lambda t: F.gelu(t, approximate="tanh")}[act]
    y = F.linear(x, m.fc1.weight, m.fc1.bias)
    if act_at in ("fc1", "fc1_and_dwconv"):
        y = activation(y)
    if dwconv:
        conv = m.dwconv
        y = through_image(y, hw, lambda img: F.conv2d(img, conv.weight, conv.bias, padding=1,
                                                       groups=conv.groups), layout)
    if act_at in ("dwconv", "fc1_and_dwconv", "dwconv_twice"):
        y = activation(y)
    if act_at == "dwconv_twice":
        y = activation(y)
    y = F.linear(y, m.fc2.weight, m.fc2.bias)
    if act_at == "fc2":
        y = activation(y)
    return x + y if residual else y


def block(m: Block, x: torch.Tensor, hw: tuple[int, int], post_norm: bool = False,
          attn_residual: bool = True, ffn_residual: bool = True, norm1_twice: bool = False,
          parallel: bool = False, drop_path: bool = True, ffn_first: bool = False, norms_swapped: bool = False,
          norm_again: tuple[str, ...] = (), norm_sum: tuple[str, ...] = (),
          normed_residual: tuple[str, ...] = ()) -> torch.Tensor:
    """The two residual branches, "attn" then "ffn" (``ffn_first``: the other way round; with
    ``norms_swapped`` too, norm1 stays with the first branch run). The tuples
    name branches: ``norm_again`` whose input is normalised twice, ``norm_sum`` whose residual sum
    is normalised as well, ``normed_residual`` whose residual starts from the normalised tokens."""
    dp = m.drop_path if drop_path else (lambda t: t)
    norms = {"attn": m.norm1, "ffn": m.norm1 if norm1_twice else m.norm2}
    if post_norm:
        x = m.norm1(x + dp(m.attn(x, hw)))
        return norms["ffn"](x + dp(m.ffn(x, hw)))
    if norms_swapped:
        norms = {"attn": m.norm2, "ffn": m.norm1}
    block_input = x
    for name in ["ffn", "attn"] if ffn_first else ["attn", "ffn"]:
        norm = norms[name]
        h = norm(block_input if parallel and name == "ffn" else x)
        if name in norm_again:
            h = norm(h)
        y = dp({"attn": m.attn, "ffn": m.ffn}[name](h, hw))
        residual = attn_residual if name == "attn" else ffn_residual
        x = (h if name in normed_residual else x) + y if residual else y
        if name in norm_sum:
            x = norm(x)
    return x


def stage_tokens(m: Stage, x: torch.Tensor, norm: bool | str = True):
    """(B, C_in, H, W) -> tokens (B, H'*W', C) and their grid: patch embedding, blocks, LayerNorm
    (``norm``: True, once after the blocks; False, none; "every_block", after each block)."""
    t, hw = m.patch_embed(x)
    for blk in m.blocks:
        t = blk(t, hw)
        t = layer_norm(t, m.norm) if norm == "every_block" else t
    return (layer_norm(t, m.norm) if norm is True else t), hw


def stage(m: Stage, x: torch.Tensor, norm: bool | str = True, layout: str = "permute") -> torch.Tensor:
    """(B, C_in, H, W) -> (B, C, H', W'): a stage, then back to an image."""
    return to_image(*stage_tokens(m, x, norm), layout)


def encoder(m: MixTransformer, images: torch.Tensor, norm: bool | str = True, layout: str = "permute",
            chain: str = "image") -> list[torch.Tensor]:
    """The stage loop, feeding each stage the previous stage's image ("image", right), its
    tokens ("tokens") or the input images ("input")."""
    features, x = [], images
    for s in m.stages:
        t, hw = stage_tokens(s, images if chain == "input" else x, norm)
        features.append(to_image(t, hw, layout))  # (B, C_i, H_i, W_i)
        x = t if chain == "tokens" else features[-1]
    return features


def all_mlp_decoder(m: AllMLPDecoder, feats: list[torch.Tensor], order: str | tuple = "deepest_first",
                    size: str = "stage1", align_corners: bool = False, mode: str = "bilinear", norm: bool = True,
                    relu: bool = True, layout: str = "permute", relu_first: bool = False, norm_twice: bool = False,
                    dropout_at: str = "features", training: bool = False) -> torch.Tensor:
    """[(B, C_i, H_i, W_i)] -> logits (B, K, H_1, W_1): per-stage Linear, upsample, concatenate,
    fuse conv + BatchNorm + ReLU, dropout on the "features" (or on the "logits"), classifier. In
    eval mode, or with ``training`` in training mode: BatchNorm on the batch's statistics (the
    running ones left alone) and ``F.dropout`` (which the checker seeds)."""
    h1, w1 = feats[0].shape[-2:]
    ups = []
    for i, (f, linear) in enumerate(zip(feats, m.linear_c)):
        h, w = f.shape[-2:]
        # layout: "permute" (right), "reshape" (no permute into the Linear), "reshape_out" (none out of it)
        t = F.linear(to_tokens(f, "reshape" if layout == "reshape" else "permute"), linear.weight, linear.bias)
        x = to_image(t, (h, w), "reshape" if layout == "reshape_out" else "permute")  # (B, D, H_i, W_i)
        if size == "scale_factor":  # stage i is 2**i times coarser than stage 1, on whole multiples only
            x = F.interpolate(x, scale_factor=2 ** i, mode=mode, align_corners=align_corners)
        else:
            target = (4 * h1, 4 * w1) if size == "image" else (h1, w1)
            x = F.interpolate(x, size=target, mode=mode, align_corners=None if mode == "nearest" else align_corners)
        ups.append(x)
    # order: "deepest_first" (right), "shallowest_first", or the stage indices in their order
    stacked = (ups[::-1] if order == "deepest_first" else ups if order == "shallowest_first" else
               [ups[i] for i in order])
    x = torch.cat(stacked, dim=1)  # (B, 4D, H_1, W_1)
    x = F.conv2d(x, m.fuse.weight)
    bn = m.norm
    stats = (None, None) if training else (bn.running_mean, bn.running_var)
    steps = [lambda t: F.batch_norm(t, *stats, bn.weight, bn.bias, training, 0.0, bn.eps)] * (
        (2 if norm_twice else 1) if norm else 0)
    if relu:
        steps.insert(0 if relu_first else len(steps), F.relu)
    for step in steps:
        x = step(x)

    def drop(t: torch.Tensor) -> torch.Tensor:  # the identity in eval mode
        return F.dropout(t, m.dropout.p, training=True) if training else t
    x = drop(x) if dropout_at == "features" else x
    x = F.conv2d(x, m.classifier.weight, m.classifier.bias)  # (B, K, H_1, W_1)
    return drop(x) if dropout_at == "logits" else x

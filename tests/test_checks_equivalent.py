"""Checkers judge behaviour, not spelling: for every graded exercise (00-06), rewrites of the
notebook's solution that compute the same thing in another way (padding="same", nn.GELU() for
F.gelu, transpose().reshape for einops, view for reshape, torch.einsum for @, the fused
F.scaled_dot_product_attention, a 1x1 conv on the Linear's weights, upsampling before the Linear,
...) must each get the check mark AND pass the notebook's hidden tests.

Each rewrite is a student class or function written here the way a learner might, bound to the
exercise's name in a namespace that holds what the notebook gives before the exercise (read from
the course notebook by ``graded_cells``), then the graded cell's checker call and its hidden tests
run on it, as nbgrader would.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import segformer_lite as sl

from graded_cells import graded_exercises, run

EXERCISES = {ex["grade_id"]: ex for ex in graded_exercises()}


def _notebook(grade_id: str) -> dict:
    """What the notebook defines before the exercise and what its hidden tests read."""
    ex = EXERCISES[grade_id]
    namespace: dict = {}
    for stmt in ex["solution_context"] + ex["context"]:
        exec(stmt, namespace)
    return namespace


# --- 00 counting ----------------------------------------------------------------------------------

def count_with_ceil(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """the grid as ceil(side / stride) (what padding k // 2 gives for an odd kernel), via math.ceil."""
    h, w = math.ceil(height / stride), math.ceil(width / stride)
    m = math.floor(h / sr_ratio) * math.floor(w / sr_ratio)
    return h * w, m, num_heads * h * w * m


def count_with_layers(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """the sizes read off torch's own convolutions, run on the meta device (shapes, no values)."""
    image = torch.empty(1, 1, height, width, device="meta")
    grid = nn.Conv2d(1, 1, patch_size, stride, padding=patch_size // 2, device="meta")(image)
    keys = nn.Conv2d(1, 1, sr_ratio, sr_ratio, device="meta")(grid) if sr_ratio > 1 else grid
    n, m = grid.shape[-2] * grid.shape[-1], keys.shape[-2] * keys.shape[-1]
    return n, m, num_heads * n * m


# --- 01 overlapping patch embedding --------------------------------------------------------------

class EmbedTupleEinops(nn.Module):
    """padding as a tuple; einops for the flatten; the grid read from the map."""

    def __init__(self, in_channels, embed_dim, patch_size=7, stride=4, eps=1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride, padding=(patch_size // 2, patch_size // 2))
        self.norm = nn.LayerNorm((embed_dim,), eps=eps)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(rearrange(x, "b c h w -> b (h w) c")), (h, w)


class EmbedPermuteReshape(EmbedTupleEinops):
    """(k - 1) // 2 for the padding; permute + reshape for the flatten."""

    def __init__(self, in_channels, embed_dim, patch_size=7, stride=4, eps=1e-5):
        super().__init__(in_channels, embed_dim, patch_size, stride, eps)
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=stride,
                              padding=(patch_size - 1) // 2, bias=True, padding_mode="zeros")

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        return self.norm(x.permute(0, 2, 3, 1).reshape(b, h * w, c)), (int(h), int(w))


class EmbedViewFunctional(EmbedTupleEinops):
    """view instead of reshape; the LayerNorm applied through F.layer_norm on its own weights."""

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        tokens = x.view(b, c, h * w).transpose(1, 2)
        return F.layer_norm(tokens, (c,), self.norm.weight, self.norm.bias, self.norm.eps), (h, w)


class EmbedPadInForward(EmbedTupleEinops):
    """the padding done by F.pad in forward, the conv itself unpadded: the module computes the same
    (notebook 01's first student trial was refused for it, with "no padding")."""

    def __init__(self, in_channels, embed_dim, patch_size=7, stride=4, eps=1e-5):
        super().__init__(in_channels, embed_dim, patch_size, stride, eps)
        self.pad = patch_size // 2
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x):
        return super().forward(F.pad(x, (self.pad,) * 4))


# --- 02 tokens ------------------------------------------------------------------------------------

def to_tokens_einops(x):
    h, w = x.shape[-2:]
    return rearrange(x, "b c h w -> b (h w) c"), (h, w)


def to_image_einops(tokens, hw):
    h, w = hw
    if tokens.shape[1] != h * w:
        raise ValueError(f"{tokens.shape[1]} tokens for a {h}x{w} grid")
    return rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)


def to_tokens_permute(x):
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c), (h, w)


def to_image_permute(tokens, hw):
    b, n, c = tokens.shape
    if n != hw[0] * hw[1]:
        raise ValueError(f"the grid {hw} does not fit {n} tokens")  # the sizes, as the contract asks
    return tokens.permute(0, 2, 1).reshape(b, c, *hw)


def to_tokens_view(x):
    b, c, h, w = x.shape
    return x.view(b, c, h * w).transpose(1, 2), tuple(x.shape[-2:])  # a torch.Size is a tuple of ints


def to_image_unflatten(tokens, hw):
    if tokens.shape[1] != math.prod(hw):
        raise ValueError(f"expected {math.prod(hw)} tokens, got {tokens.shape[1]}")
    return tokens.movedim(1, 2).unflatten(2, tuple(hw))


# --- 03 efficient self-attention ------------------------------------------------------------------

class AttentionEinsum(nn.Module):
    """torch.einsum for both products; transpose().reshape for heads; chunk for k and v;
    padding="valid" on the reduction conv; the scale as 1 / sqrt(d)."""

    def __init__(self, dim, num_heads, sr_ratio=1, qkv_bias=True, eps=1e-5):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.scale = 1 / math.sqrt(dim // num_heads)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, (sr_ratio, sr_ratio), stride=(sr_ratio, sr_ratio), padding="valid")
            self.norm = nn.LayerNorm(dim, eps)

    def heads(self, t):  # (B, L, C) -> (B, heads, L, d)
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def keys_values(self, x, hw):
        if self.sr_ratio > 1:
            b, n, c = x.shape
            x = self.sr(x.transpose(1, 2).reshape(b, c, *hw))
            x = self.norm(x.flatten(2).transpose(1, 2))
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def forward(self, x, hw, return_attention=False):
        b, n, c = x.shape
        q = self.heads(self.q(x))
        k, v = self.keys_values(x, hw)
        attn = torch.softmax(torch.einsum("bhnd,bhmd->bhnm", q, k) * self.scale, dim=-1)
        out = torch.einsum("bhnm,bhmd->bhnd", attn, v).transpose(1, 2).reshape(b, n, c)
        out = self.proj(out)
        return (out, attn) if return_attention else out


class AttentionFused(AttentionEinsum):
    """F.scaled_dot_product_attention for the output (the maps, when asked for, computed
    explicitly); q scaled before the product; views for the heads."""

    def heads(self, t):
        b, n, c = t.shape
        return t.view(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, x, hw, return_attention=False):
        b, n, c = x.shape
        q = self.heads(self.q(x))
        k, v = self.keys_values(x, hw)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, heads, N, d)
        out = self.proj(out.permute(0, 2, 1, 3).reshape(b, n, c))
        if not return_attention:
            return out
        return out, ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)


# --- 04 Mix-FFN and block -------------------------------------------------------------------------

class MixFFNSame(nn.Module):
    """padding="same"; nn.GELU() as a module; transpose().reshape instead of the helpers."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding="same", groups=hidden_dim)
        self.act = nn.GELU()

    def forward(self, x, hw):
        b, n, _ = x.shape
        x = self.fc1(x)
        x = self.dwconv(x.transpose(1, 2).reshape(b, -1, *hw))
        return self.fc2(self.act(x.flatten(2).transpose(1, 2)))


class MixFFNView(MixFFNSame):
    """Every argument spelled out (padding=(1, 1), dilation, bias, padding_mode); views; F.gelu."""

    def __init__(self, dim, hidden_dim):
        super().__init__(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=(3, 3), stride=1, padding=(1, 1), dilation=1,
                                groups=hidden_dim, bias=True, padding_mode="zeros")

    def forward(self, x, hw):
        b, n, _ = x.shape
        h, w = hw
        x = self.fc1(x)
        c = x.shape[-1]
        x = self.dwconv(x.transpose(1, 2).contiguous().view(b, c, h, w))
        return self.fc2(F.gelu(x.view(b, c, n).transpose(1, 2)))


class BlockSpelledOut(nn.Module):
    """The norms as nn.LayerNorm((dim,), eps), the hidden width through int(); the residuals
    added the other way round."""

    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio=4, qkv_bias=True, drop_path=0.0,
                 eps=1e-6, embed_eps=1e-5):
        super().__init__()
        self.attn = sl.EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, eps=embed_eps)
        self.drop_path = sl.DropPath(drop_path)
        self.norm1 = nn.LayerNorm((dim,), eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True)
        self.ffn = sl.MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x, hw):
        x = self.drop_path(self.attn(self.norm1(x), hw)) + x
        return torch.add(self.drop_path(self.ffn(self.norm2(x), hw)), x)


# --- 05 the encoder -------------------------------------------------------------------------------

def encoder_rewrites() -> dict:
    stage_parts = _notebook("check_mix_transformer")["stage_parts"]

    class EncoderEinops(nn.Module):
        """in_dims as a list; the stage's parts by key; einops back to an image."""

        def __init__(self, cfg):
            super().__init__()
            self.config = cfg
            rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
            starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
            in_dims = [cfg.in_channels, *cfg.embed_dims[:-1]]
            self.stages = nn.ModuleList(
                stage_parts(cfg, i, in_dims[i], rates[starts[i]:starts[i] + cfg.depths[i]])
                for i in range(cfg.num_stages))

        def forward(self, images):
            features = []
            for stage in self.stages:
                tokens, (h, w) = stage["patch_embed"](images if not features else features[-1])
                for block in stage["blocks"]:
                    tokens = block(tokens, (h, w))
                features.append(rearrange(stage["norm"](tokens), "b (h w) c -> b c h w", h=h, w=w))
            return features

    class EncoderTranspose(EncoderEinops):
        """transpose().reshape back to an image, a view of contiguous memory for the next stage."""

        def forward(self, images):
            x, out = images, []
            for stage in self.stages:
                x, hw = stage.patch_embed(x)
                for block in stage.blocks:
                    x = block(x, hw)
                x = stage.norm(x)
                b, n, c = x.shape
                x = x.transpose(1, 2).contiguous().view(b, c, *hw)
                out.append(x)
            return out

    return {"in_dims a list, parts by key, einops": EncoderEinops,
            "transpose and view": EncoderTranspose}


# --- 06 the all-MLP decoder -----------------------------------------------------------------------

class DecoderUpsampleFirst(nn.Module):
    """Upsampling before the Linear (both are linear, and bilinear weights sum to 1), the Linear
    applied over channels-last maps without flattening."""

    def __init__(self, in_dims, num_classes, decoder_dim=256, dropout=0.1):
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Linear(c, decoder_dim) for c in in_dims)
        self.fuse = nn.Conv2d(len(in_dims) * decoder_dim, decoder_dim, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(decoder_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)

    def forward(self, feats):
        size = feats[0].shape[-2:]
        ups = []
        for f, linear in zip(feats, self.linear_c):
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)  # (B, C_i, H_1, W_1)
            ups.append(linear(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # (B, D, H_1, W_1)
        x = torch.cat(list(reversed(ups)), dim=1)
        x = F.relu(self.norm(self.fuse(x)))
        return self.classifier(self.dropout(x))


class DecoderConv1x1(DecoderUpsampleFirst):
    """Each Linear applied as a 1x1 conv on its own weights (reshaped one to one); the fuse conv
    applied as a Linear over flattened tokens; functional dropout."""

    def forward(self, feats):
        n, _, h1, w1 = feats[0].shape
        ups = [F.interpolate(F.conv2d(f, linear.weight[:, :, None, None], linear.bias), size=(h1, w1),
                             mode="bilinear") for f, linear in zip(feats, self.linear_c)]
        x = torch.cat(ups[::-1], dim=1)  # (B, 4D, H_1, W_1)
        tokens = F.linear(x.flatten(2).transpose(1, 2), self.fuse.weight.flatten(1))  # (B, H_1*W_1, D)
        x = tokens.transpose(1, 2).reshape(n, -1, h1, w1)
        x = torch.relu(self.norm(x))
        x = F.dropout(x, self.dropout.p, self.training)
        return self.classifier(x)


class DecoderOfficial(DecoderUpsampleFirst):
    """The released SegFormerHead's style: flatten/transpose, permute/reshape back."""

    def forward(self, feats):
        n, _, h, w = feats[0].shape
        outs = []
        for c, linear in zip(feats, self.linear_c):
            x = linear(c.flatten(2).transpose(1, 2)).permute(0, 2, 1).reshape(n, -1, c.shape[2], c.shape[3])
            outs.append(F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False))
        return self.classifier(self.dropout(F.relu(self.norm(self.fuse(torch.cat(outs[::-1], dim=1))))))


REWRITES = {
    "check_count_attention": {"math.ceil, math.floor": count_with_ceil,
                              "torch's convolutions on the meta device": count_with_layers},
    "check_overlap_patch_embed": {"padding tuple, einops": EmbedTupleEinops,
                                  "(k - 1) // 2, permute + reshape, int grid": EmbedPermuteReshape,
                                  "view, F.layer_norm": EmbedViewFunctional,
                                  "F.pad in forward, the conv unpadded": EmbedPadInForward},
    "check_tokens": {"einops": (to_tokens_einops, to_image_einops),
                     "permute + reshape": (to_tokens_permute, to_image_permute),
                     "view, torch.Size grid, movedim + unflatten": (to_tokens_view, to_image_unflatten)},
    "check_efficient_self_attention": {"einsum, chunk, padding='valid', 1/sqrt(d)": AttentionEinsum,
                                       "F.scaled_dot_product_attention, view": AttentionFused},
    "check_mix_ffn": {"padding='same', nn.GELU(), transpose + reshape": MixFFNSame,
                      "every argument spelled out, view, F.gelu": MixFFNView},
    "check_block": {"LayerNorm((dim,), eps), int(), residuals swapped": BlockSpelledOut},
    "check_mix_transformer": encoder_rewrites(),
    "check_all_mlp_decoder": {"upsampling before the Linear, channels-last Linear": DecoderUpsampleFirst,
                              "1x1 conv on the Linear's weights, fuse as a Linear, F.dropout": DecoderConv1x1,
                              "the released head's flatten/transpose": DecoderOfficial},
}
CASES = [(grade_id, label) for grade_id, rewrites in REWRITES.items() for label in rewrites]


def test_every_graded_exercise_has_rewrites():
    assert set(EXERCISES) <= set(REWRITES), set(EXERCISES) - set(REWRITES)
    assert all(len(rewrites) >= 1 for rewrites in REWRITES.values())


@pytest.mark.slow
@pytest.mark.parametrize("grade_id, label", CASES, ids=[f"{g}-{label}" for g, label in CASES])
def test_an_equivalent_rewrite_gets_the_check_mark_and_full_marks(grade_id, label):
    ex = EXERCISES[grade_id]
    student = REWRITES[grade_id][label]
    names = ex["exercise"]
    namespace = {**_notebook(grade_id), **(dict(zip(names, student)) if isinstance(student, tuple)
                                           else {names[0]: student})}
    torch.manual_seed(0)
    error, out, err = run(ex["visible"], dict(namespace))
    assert error is None and err == "" and out.count("✓ ") >= 1, f"checker refused {label}:\n{out}{err}{error}"
    hidden_error, hidden_out, _ = run(ex["hidden"], dict(namespace))
    assert hidden_error is None, f"hidden tests refused {label}: {hidden_error!r}\n{hidden_out}"

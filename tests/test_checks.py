"""The exercise checkers: a correct student passes, an unfinished one is told so without an
exception, and every catalogued mistake, planted in a student-style class, is named.

The student classes are written the way a learner writes them (plain reshape/permute, in the
style of the official NVlabs code), independently of the checkers' own planted variants; each
planted class differs from the correct one by exactly one bug, selected with ``bug``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import segformer_lite as sl
from segformer_lite.course import checks
from segformer_lite.course.checks import harness, localise, variants
from segformer_lite.block import DropPath
from segformer_lite.course.checks.decoder_check import dropout_by_shape

from graded_cells import graded_exercises, run


# --- student-style implementations ----------------------------------------------------------------

class StudentPatchEmbed(nn.Module):
    bug = None

    def __init__(self, in_channels, embed_dim, patch_size=7, stride=4, eps=1e-5):
        super().__init__()
        padding = 0 if self.bug == "no_padding" else patch_size // 2
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride, padding)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x):
        x = self.proj(x)
        B, C, H, W = x.shape
        if self.bug == "flatten_no_permute":
            x = x.reshape(B, H * W, C)
        elif self.bug == "column_major":
            x = x.permute(0, 3, 2, 1).reshape(B, W * H, C)
        elif self.bug == "batch_written_as_number":  # right for the batches of 2 of the first cases
            x = x.reshape(2, C, H * W).transpose(1, 2)
        else:
            x = x.flatten(2).transpose(1, 2)
        if self.bug != "embed_no_norm":
            x = self.norm(x)
        return x, ((W, H) if self.bug == "hw_swapped" else (H, W))


def student_image_to_tokens(x, bug=None):
    B, C, H, W = x.shape
    if bug == "flatten_no_permute":
        return x.reshape(B, H * W, C), (H, W)
    if bug == "column_major":
        return x.permute(0, 3, 2, 1).reshape(B, W * H, C), (H, W)
    return x.permute(0, 2, 3, 1).reshape(B, H * W, C), ((W, H) if bug == "hw_swapped" else (H, W))


def student_tokens_to_image(t, hw, bug=None):
    B, N, C = t.shape
    H, W = hw
    if bug != "grid_not_checked" and N != H * W:
        raise ValueError(f"{N} tokens do not fill a {H}x{W} grid")
    if bug == "sqrt_hw":
        H = W = int(math.sqrt(N))
    if bug == "unflatten_no_permute":
        return t.reshape(B, C, H, W)
    if bug == "hw_swapped":
        return t.permute(0, 2, 1).reshape(B, C, W, H)
    return t.permute(0, 2, 1).reshape(B, C, H, W)


class StudentAttention(nn.Module):
    bug = None

    def __init__(self, dim, num_heads, sr_ratio=1, qkv_bias=True, eps=1e-5):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, 2 if self.bug == "sr_kernel_stride" else sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=eps)

    def heads(self, t):
        B, L, C = t.shape
        if self.bug == "heads_over_tokens":
            return t.reshape(B, self.num_heads, L, C // self.num_heads)
        return t.reshape(B, L, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, x, hw, return_attention=False):
        B, N, C = x.shape
        H, W = hw
        if self.bug == "sqrt_hw":
            H = W = int(N ** 0.5)
        q = self.heads(self.q(x))
        if self.sr_ratio > 1 and self.bug != "no_reduction":
            if self.bug == "conv_channels_last":
                x_ = self.sr(x.reshape(B, C, H, W)).reshape(B, -1, C)
            elif self.bug == "conv_channels_last_in":
                x_ = self.sr(x.reshape(B, C, H, W)).flatten(2).transpose(1, 2)
            else:
                x_ = self.sr(x.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1)
            if self.bug != "sr_no_norm":
                x_ = self.norm(x_)
        else:
            x_ = x
        kv = self.kv(x_)
        k, v = kv[..., :C], kv[..., C:]
        if self.bug == "kv_swapped":
            k, v = v, k
        k, v = self.heads(k), self.heads(v)
        scores = q @ k.transpose(-2, -1)
        if self.bug == "scale_dim":
            scores = scores * C ** -0.5
        elif self.bug == "scale_misplaced":  # applied twice (the 03 trials found it only located)
            scores = scores * self.scale * self.scale
        elif self.bug not in ("no_scale", "scale_after_softmax"):
            scores = scores * self.scale
        attn = scores.softmax(dim=-2 if self.bug == "softmax_axis" else -1)
        if self.bug == "scale_after_softmax":
            attn = attn * self.scale
        out = attn @ v
        if self.bug in ("merge_no_permute", "heads_over_tokens"):
            out = out.reshape(B, N, C)
        else:
            out = out.transpose(1, 2).reshape(B, N, C)
        out = out if self.bug == "no_proj" else self.proj(out)
        return (out, attn) if return_attention else out


class StudentMixFFN(nn.Module):
    bug = None

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        groups = 1 if self.bug == "dwconv_no_groups" else hidden_dim
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=groups)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x, hw):
        B, N, C = x.shape
        H, W = hw
        if self.bug == "sqrt_hw":
            H = W = int(math.sqrt(N))
        act = {"relu": F.relu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}.get(self.bug, F.gelu)
        y = self.fc1(x)
        if self.bug in ("gelu_before_dwconv", "gelu_twice_fc1"):  # (GELU twice: found by the 04 trials)
            y = act(y)
        if self.bug != "no_dwconv":
            hidden = y.shape[-1]
            if self.bug == "unflatten_no_permute":
                y = self.dwconv(y.reshape(B, hidden, H, W)).reshape(B, N, hidden)
            elif self.bug == "unflatten_no_permute_in":
                y = self.dwconv(y.reshape(B, hidden, H, W)).flatten(2).transpose(1, 2)
            elif self.bug == "flatten_no_permute":
                y = self.dwconv(y.transpose(1, 2).reshape(B, hidden, H, W)).reshape(B, N, hidden)
            else:
                y = self.dwconv(y.transpose(1, 2).reshape(B, hidden, H, W)).flatten(2).transpose(1, 2)
        if self.bug not in ("gelu_before_dwconv", "gelu_after_fc2", "no_gelu"):
            y = act(y)
        if self.bug == "gelu_twice":
            y = act(y)
        y = self.fc2(y)
        if self.bug == "gelu_after_fc2":
            y = act(y)
        return x + y if self.bug == "ffn_residual" else y


class StudentBlock(nn.Module):
    bug = None

    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio=4, qkv_bias=True, drop_path=0.0, eps=1e-6,
                 embed_eps=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = sl.EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, eps=embed_eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = sl.MixFFN(dim, dim * (4 if self.bug == "ffn_hidden_width" else mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x, hw):
        dp = (lambda t: t) if self.bug == "no_drop_path" else self.drop_path
        norm2 = self.norm1 if self.bug == "norm1_twice" else self.norm2
        if self.bug == "post_norm":
            x = self.norm1(x + dp(self.attn(x, hw)))
            return self.norm2(x + dp(self.ffn(x, hw)))
        if self.bug == "inplace_input":
            x += dp(self.attn(self.norm1(x), hw))  # overwrites the caller's tensor
            x += dp(self.ffn(self.norm2(x), hw))
            return x
        if self.bug in ("ffn_before_attention", "ffn_before_attention_norm1_first"):  # norm1 goes first, or its branch
            first, second = ((self.norm1, self.norm2) if self.bug.endswith("norm1_first") else (self.norm2, self.norm1))
            x = x + dp(self.ffn(first(x), hw))
            return x + dp(self.attn(second(x), hw))
        if self.bug == "norm_after_residual":  # pre-norm and post-norm both
            x = self.norm1(x + dp(self.attn(self.norm1(x), hw)))
            return self.norm2(x + dp(self.ffn(self.norm2(x), hw)))
        if self.bug in ("residual_from_normed", "residual_from_normed_attn"):
            x = self.norm1(x)
            x = x + dp(self.attn(x, hw))
            if self.bug == "residual_from_normed_attn":
                return x + dp(self.ffn(self.norm2(x), hw))
            x = self.norm2(x)
            return x + dp(self.ffn(x, hw))
        norm1, norm2 = (self.norm2, self.norm1) if self.bug == "norms_swapped" else (self.norm1, norm2)
        twice = self.bug in ("norm_applied_twice", "norm_applied_twice_attn")  # norm1 applied again
        y = dp(self.attn(norm1(norm1(x)) if twice else norm1(x), hw))
        x_new = y if self.bug == "no_attn_residual" else x + y
        h = norm2(x if self.bug == "parallel_branches" else x_new)
        z = dp(self.ffn(norm2(h) if self.bug == "norm_applied_twice" else h, hw))
        return z if self.bug == "no_ffn_residual" else x_new + z


class StudentStage(nn.Module):
    bug = None

    def __init__(self, cfg, i, in_channels, drop_paths):
        super().__init__()
        dim = cfg.embed_dims[i]
        self.patch_embed = sl.OverlapPatchEmbed(in_channels, dim, cfg.patch_sizes[i], cfg.strides[i])
        self.blocks = nn.ModuleList(sl.Block(dim, cfg.num_heads[i], cfg.sr_ratios[i], cfg.mlp_ratios[i],
                                             drop_path=p) for p in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x, (H, W) = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x, (H, W))
        if self.bug != "stage_no_norm":
            x = self.norm(x)
        if self.bug == "stage_returns_tokens":
            return x
        if self.bug == "sqrt_hw":
            H = W = int(x.shape[1] ** 0.5)
        B, N, C = x.shape
        if self.bug == "unflatten_no_permute":
            return x.reshape(B, C, H, W)
        return x.transpose(1, 2).reshape(B, C, H, W)


class StudentMiT(nn.Module):
    """The stage loop the learner writes in notebook 05, over the package's stages."""
    bug = None

    def __init__(self, cfg):
        super().__init__()
        rates = [0.0] * sum(cfg.depths)
        in_dims = (cfg.in_channels,) + cfg.embed_dims[:-1]
        self.stages = nn.ModuleList(sl.Stage(cfg, i, in_dims[i], rates[:cfg.depths[i]])
                                    for i in range(cfg.num_stages))

    def forward(self, images):
        feats, x = [], images
        for stage in self.stages:
            x, (H, W) = stage.patch_embed(images if self.bug == "encoder_not_chained" else x)
            for blk in stage.blocks:
                x = blk(x, (H, W))
                if self.bug == "stage_norm_every_block":  # found by the 05 trial
                    x = stage.norm(x)
            if self.bug not in ("stage_no_norm", "stage_norm_every_block"):
                x = stage.norm(x)
            B, N, C = x.shape
            if self.bug == "unflatten_no_permute":
                image = x.reshape(B, C, H, W)
            elif self.bug == "batch_hard_coded":
                image = x.transpose(1, 2).reshape(1, C, H, W)
            else:
                image = x.transpose(1, 2).reshape(B, C, H, W)
            feats.append(image)
            if self.bug != "encoder_chains_tokens":
                x = image
        return x if self.bug == "encoder_last_only" else feats


class StudentDecoder(nn.Module):
    """The all-MLP head written like the official SegFormerHead (flatten/transpose, F.interpolate)."""
    bug = None

    def __init__(self, in_dims, num_classes, decoder_dim=256, dropout=0.1):
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Linear(c, decoder_dim) for c in in_dims)
        self.fuse = nn.Conv2d(4 * decoder_dim, decoder_dim, 1, bias=False)
        self.norm = nn.BatchNorm2d(decoder_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(decoder_dim, num_classes, 1)

    def forward(self, feats):
        n, _, h1, w1 = feats[0].shape
        outs = []
        for i, (c, linear) in enumerate(zip(feats, self.linear_c)):
            h, w = c.shape[2:]
            if self.bug == "decoder_linear_axis":
                x = linear(c.reshape(n, h * w, -1))
            else:
                x = linear(c.flatten(2).transpose(1, 2))
            x = x.permute(0, 2, 1).reshape(n, -1, h, w)
            if self.bug == "decoder_scale_factor":
                x = F.interpolate(x, scale_factor=2 ** i, mode="bilinear", align_corners=False)
            else:
                size = (4 * h1, 4 * w1) if self.bug == "decoder_full_size" else (h1, w1)
                if self.bug == "decoder_interp_mode":  # nearest: no align_corners at all
                    x = F.interpolate(x, size=size, mode="nearest")
                else:
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=self.bug == "decoder_align_corners")
            outs.append(x)
        order = {"decoder_concat_order": [0, 1, 2, 3], "decoder_concat_permuted": [3, 1, 2, 0]}.get(self.bug, [3, 2, 1, 0])
        x = torch.cat([outs[i] for i in order], dim=1)
        x = self.fuse(x)
        if self.bug == "decoder_relu_before_norm":  # norm(relu(fuse(x)))
            x = F.relu(x)
        if self.bug not in ("decoder_no_norm", "decoder_no_norm_no_relu"):
            x = self.norm(x)
        if self.bug == "decoder_norm_twice":
            x = self.norm(x)
        if self.bug not in ("decoder_no_relu", "decoder_no_norm_no_relu", "decoder_relu_before_norm"):
            x = F.relu(x)
        if self.bug == "decoder_dropout_after_classifier":
            return self.dropout(self.classifier(x))
        return self.classifier(self.dropout(x))


def planted(base, bug):
    return type(f"{base.__name__}_{bug}", (base,), {"bug": bug})


def functions(bug):
    return (lambda x: student_image_to_tokens(x, bug)), (lambda t, hw: student_tokens_to_image(t, hw, bug))


CHECKERS = [
    (checks.check_overlap_patch_embed, StudentPatchEmbed,
     ["no_padding", "embed_no_norm", "flatten_no_permute", "column_major", "hw_swapped", "batch_written_as_number"]),
    (checks.check_efficient_self_attention, StudentAttention,
     ["heads_over_tokens", "merge_no_permute", "no_scale", "scale_dim", "scale_misplaced", "scale_after_softmax",
      "softmax_axis",
      "conv_channels_last", "conv_channels_last_in", "sr_no_norm", "no_reduction", "kv_swapped", "no_proj",
      "sqrt_hw", "sr_kernel_stride"]),
    (checks.check_mix_ffn, StudentMixFFN,
     ["dwconv_no_groups", "gelu_before_dwconv", "gelu_after_fc2", "no_gelu", "relu", "gelu_tanh", "gelu_twice",
      "gelu_twice_fc1",
      "no_dwconv", "ffn_residual", "unflatten_no_permute", "unflatten_no_permute_in", "flatten_no_permute",
      "sqrt_hw"]),
    (checks.check_block, StudentBlock,
     ["post_norm", "no_attn_residual", "no_ffn_residual", "norm1_twice", "parallel_branches",
      "no_drop_path", "inplace_input", "norm_applied_twice", "norm_applied_twice_attn", "norm_after_residual",
      "ffn_before_attention", "ffn_before_attention_norm1_first", "residual_from_normed",
      "residual_from_normed_attn", "norms_swapped", "ffn_hidden_width"]),
    (checks.check_stage, StudentStage,
     ["stage_no_norm", "stage_returns_tokens", "unflatten_no_permute", "sqrt_hw"]),
    (checks.check_mix_transformer, StudentMiT,
     ["encoder_last_only", "encoder_not_chained", "encoder_chains_tokens", "stage_no_norm", "stage_norm_every_block",
      "unflatten_no_permute", "batch_hard_coded"]),
    (checks.check_all_mlp_decoder, StudentDecoder,
     ["decoder_concat_order", "decoder_full_size", "decoder_scale_factor", "decoder_align_corners",
      "decoder_no_norm", "decoder_no_relu", "decoder_linear_axis", "decoder_relu_before_norm", "decoder_norm_twice",
      "decoder_dropout_after_classifier", "decoder_no_norm_no_relu", "decoder_interp_mode",
      "decoder_concat_permuted"]),
]
# planted bugs that make half of a catalogued mistake, and the mistake they must be named as
HALF_MADE = {"conv_channels_last_in": "conv_channels_last", "unflatten_no_permute_in": "unflatten_no_permute",
             "gelu_twice_fc1": "gelu_twice", "scale_after_softmax": "scale_misplaced",
             "norm_applied_twice_attn": "norm_applied_twice", "residual_from_normed_attn": "residual_from_normed",
             "ffn_before_attention_norm1_first": "ffn_before_attention"}
CLASS_CASES = [(check, base, bug) for check, base, bugs in CHECKERS for bug in bugs]
TOKEN_CASES = [("image_to_tokens", "flatten_no_permute"), ("image_to_tokens", "column_major"),
               ("image_to_tokens", "hw_swapped"), ("tokens_to_image", "unflatten_no_permute"),
               ("tokens_to_image", "sqrt_hw"), ("tokens_to_image", "hw_swapped"),
               ("tokens_to_image", "grid_not_checked")]


@pytest.mark.parametrize("check, base", [(c, b) for c, b, _ in CHECKERS], ids=lambda v: getattr(v, "__name__", ""))
def test_correct_student_passes(check, base, capsys):
    check(base)
    out, err = capsys.readouterr()
    assert out.startswith("✓ ") and "matches segformer_lite" in out
    assert err == ""


def test_correct_token_helpers_pass(capsys):
    checks.check_tokens(*functions(None))
    out, err = capsys.readouterr()
    assert out.count("✓ ") == 3 and err == ""
    assert out.count("in float32, float64 and int64, gradients and the device kept") == 2, out  # as notebook 02 says


@pytest.mark.parametrize("check, base, bug", CLASS_CASES,
                         ids=[f"{b.__name__}-{bug}" for _, b, bug in CLASS_CASES])
def test_planted_mistake_is_named(check, base, bug):
    m_id = HALF_MADE.get(bug, bug)
    mistake = checks.MISTAKES[m_id]
    for attempt in (1, 2):  # the first report says what and why; the fix comes when the mistake comes back
        with pytest.raises(AssertionError) as e:
            check(planted(base, bug))
        message = str(e.value)
        assert f"Likely mistake: {mistake.title}." in message, message
        assert (mistake.fix in message) == (attempt == 2), message
        assert (checks.mistakes.WHY[m_id] in message) == (attempt == 1), message
        assert message.count("Likely mistake:") == 1, message  # a single bug names one mistake


@pytest.mark.parametrize("which, bug", TOKEN_CASES, ids=[f"{w}-{b}" for w, b in TOKEN_CASES])
def test_planted_token_mistake_is_named(which, bug):
    to_tokens, to_image = functions(None)
    bad_to_tokens, bad_to_image = functions(bug)
    with pytest.raises(AssertionError) as e:
        if which == "image_to_tokens":
            checks.check_tokens(bad_to_tokens, to_image)
        else:
            checks.check_tokens(to_tokens, bad_to_image)
    assert f"Likely mistake: {checks.MISTAKES[bug].title}." in str(e.value), str(e.value)
    assert str(e.value).count("Likely mistake:") == 1, str(e.value)


def test_every_catalogued_mistake_is_planted_somewhere():
    tested = {HALF_MADE.get(bug, bug) for *_, bug in CLASS_CASES} | {bug for _, bug in TOKEN_CASES}
    assert tested == set(checks.MISTAKES)


class TokenBlockHeads(StudentAttention):
    """The split notebook 03 shows: rearrange 'b (h t) e -> b h t e', every head all channels."""

    def heads(self, t):
        return rearrange(t, "b (h t) e -> b h t e", h=self.num_heads)

    def forward(self, x, hw, return_attention=False):
        q = self.heads(self.q(x))
        x_ = self.norm(self.sr(rearrange(x, "b (h w) c -> b c h w", h=hw[0])).flatten(2).transpose(1, 2)) \
            if self.sr_ratio > 1 else x
        k, v = self.kv(x_).chunk(2, dim=-1)
        attn = (q @ self.heads(k).transpose(-2, -1) * self.scale).softmax(-1)
        out = self.proj(rearrange(attn @ self.heads(v), "b h t e -> b (h t) e"))
        return (out, attn) if return_attention else out


def test_heads_split_into_token_blocks_is_named():
    with pytest.raises(AssertionError) as e:
        checks.check_efficient_self_attention(TokenBlockHeads)
    assert f"Likely mistake: {checks.MISTAKES['heads_over_tokens'].title}." in str(e.value), str(e.value)
    assert str(e.value).count("Likely mistake:") == 1, str(e.value)


class Unfinished(StudentAttention):
    def forward(self, x, hw, return_attention=False):
        raise NotImplementedError()


def test_unfinished_exercise_is_reported_on_stderr_not_raised(capsys):
    checks.check_efficient_self_attention(Unfinished)  # must not raise: the notebook runs on
    out, err = capsys.readouterr()
    assert out == ""
    assert "EfficientSelfAttention: not implemented yet" in err


def test_unfinished_token_helper_is_reported(capsys):
    def to_tokens(x):
        raise NotImplementedError
    checks.check_image_to_tokens(to_tokens)
    assert "image_to_tokens: not implemented yet" in capsys.readouterr().err


class Renamed(StudentMixFFN):
    def __init__(self, dim, hidden_dim):
        super().__init__(dim, hidden_dim)
        self.conv = self.dwconv
        del self.dwconv

    def forward(self, x, hw):
        return self.fc2(F.gelu(self.fc1(x)))


def test_renamed_layers_are_explained():
    with pytest.raises(AssertionError, match="Keep the layer names the skeleton gives") as e:
        checks.check_mix_ffn(Renamed)
    assert "dwconv.weight" in str(e.value)


class Crashing(StudentMixFFN):
    def forward(self, x, hw):
        return self.fc2(x)  # hidden-size mismatch: a RuntimeError inside the learner's code


def test_student_exception_becomes_a_readable_assertion():
    with pytest.raises(AssertionError, match=r"MixFFN: raised RuntimeError for x of shape \(2, 60, 8\)"):
        checks.check_mix_ffn(Crashing)


def test_bad_constructor_is_explained():
    class TwoArgs(StudentAttention):
        def __init__(self, dim):
            super().__init__(dim, 1)
    with pytest.raises(AssertionError, match="Keep the skeleton's constructor"):
        checks.check_efficient_self_attention(TwoArgs)


def test_planted_variants_with_no_knob_turned_equal_the_package():
    # the checker's variants are an independent re-implementation; untouched, they are the reference
    torch.manual_seed(0)
    attn = sl.EfficientSelfAttention(16, 2, 2)
    ffn, block = sl.MixFFN(8, 32), sl.Block(16, 2, 2).eval()
    embed = sl.OverlapPatchEmbed(3, 8, 7, 4)
    stage = sl.Stage(sl.MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4)), 1, 8, [0.0, 0.0]).eval()
    for m in (attn, ffn, block, embed, stage):
        harness.randomize(m)
    with torch.no_grad():
        x16, x8, img = torch.randn(2, 60, 16), torch.randn(2, 60, 8), torch.randn(2, 3, 30, 45)
        torch.testing.assert_close(variants.attention(attn, x16, (6, 10)), attn(x16, (6, 10)))
        torch.testing.assert_close(variants.mix_ffn(ffn, x8, (6, 10)), ffn(x8, (6, 10)))
        torch.testing.assert_close(variants.block(block, x16, (6, 10)), block(x16, (6, 10)))
        feats = torch.randn(2, 8, 12, 20)
        torch.testing.assert_close(variants.stage(stage, feats), stage(feats))
        tokens, hw = variants.patch_embed(embed, img)
        ref_tokens, ref_hw = embed(img)
        torch.testing.assert_close(tokens, ref_tokens)
        assert hw == ref_hw == (8, 12)


class AttentionLogits(StudentAttention):
    """Returns the scores before the softmax with return_attention=True."""

    def forward(self, x, hw, return_attention=False):
        out, attn = super().forward(x, hw, return_attention=True)
        return (out, attn.log()) if return_attention else out


class NoAttentionMaps(StudentAttention):
    def forward(self, x, hw):
        return super().forward(x, hw)


def test_attention_maps_are_required_and_checked():
    with pytest.raises(AssertionError, match="attention probabilities returned differ"):
        checks.check_efficient_self_attention(AttentionLogits)
    with pytest.raises(AssertionError, match="forward has no return_attention argument"):
        checks.check_efficient_self_attention(NoAttentionMaps)


def test_a_check_leaves_the_notebooks_random_stream_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    checks.check_block(StudentBlock)
    torch.testing.assert_close(torch.rand(3), expected)


def test_decoder_variant_with_no_knob_turned_equals_the_package():
    torch.manual_seed(0)
    head = sl.AllMLPDecoder((8, 16, 24, 32), num_classes=5, decoder_dim=12).eval()
    harness.randomize(head)
    with torch.no_grad():
        head.norm.running_mean.normal_(0, 0.5)
        head.norm.running_var.uniform_(0.5, 2.0)
        feats = [torch.randn(2, c, *hw) for c, hw in zip((8, 16, 24, 32), [(10, 18), (5, 9), (3, 5), (2, 3)])]
        torch.testing.assert_close(variants.all_mlp_decoder(head, feats), head(feats))
        head.train()  # training mode: batch statistics, and the checker's seeded dropout for both
        with dropout_by_shape():
            want = head(feats)
        with dropout_by_shape():
            torch.testing.assert_close(variants.all_mlp_decoder(head, feats, training=True), want)


@pytest.mark.parametrize("knobs", [dict(ffn_first=True), dict(norms_swapped=True), dict(norm_again=("attn",)),
                                   dict(norm_sum=("ffn",)), dict(normed_residual=("attn", "ffn"))], ids=str)
def test_block_variants_follow_their_knobs(knobs):
    # each knob written out by hand on the package's layers (pre-norm block, eval mode)
    torch.manual_seed(0)
    m = sl.Block(16, 2, 2).eval()
    harness.randomize(m)
    x, hw = torch.randn(2, 60, 16), (6, 10)
    a, f, n1, n2 = (lambda t: m.attn(t, hw)), (lambda t: m.ffn(t, hw)), m.norm1, m.norm2
    with torch.no_grad():
        if knobs.get("ffn_first"):
            y = x + f(n2(x))
            want = y + a(n1(y))
        elif knobs.get("norms_swapped"):
            y = x + a(n2(x))
            want = y + f(n1(y))
        elif "norm_again" in knobs:
            y = x + a(n1(n1(x)))
            want = y + f(n2(y))
        elif "norm_sum" in knobs:
            y = x + a(n1(x))
            want = n2(y + f(n2(y)))
        else:
            y = n1(x) + a(n1(x))
            want = n2(y) + f(n2(y))
        torch.testing.assert_close(variants.block(m, x, hw, **knobs), want)


class DecoderBothWaysWrong(StudentDecoder):
    """Channels moved last on the way in, but the projection reshaped to a map without moving them back."""

    def forward(self, feats):
        n, _, h1, w1 = feats[0].shape
        outs = [F.interpolate(linear(c.flatten(2).transpose(1, 2)).reshape(n, -1, *c.shape[2:]), size=(h1, w1),
                              mode="bilinear", align_corners=False) for c, linear in zip(feats, self.linear_c)]
        return self.classifier(F.relu(self.norm(self.fuse(torch.cat(outs[::-1], dim=1)))))


def test_decoder_projection_reshaped_without_permute_is_named():
    with pytest.raises(AssertionError) as e:
        checks.check_all_mlp_decoder(DecoderBothWaysWrong)
    assert f"Likely mistake: {checks.MISTAKES['decoder_linear_axis'].title}." in str(e.value), str(e.value)
    assert str(e.value).count("Likely mistake:") == 1, str(e.value)


def test_planted_encoder_loop_with_no_knob_turned_equals_the_package():
    torch.manual_seed(0)
    mit = sl.MixTransformer(sl.MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4),
                                         depths=(1, 2, 1, 1))).eval()
    harness.randomize(mit)
    images = torch.randn(2, 3, 40, 72)
    with torch.no_grad():
        for got, want in zip(variants.encoder(mit, images), mit(images), strict=True):
            torch.testing.assert_close(got, want)


def test_a_tuple_that_differs_only_in_values_shows_the_difference():
    with pytest.raises(AssertionError) as e:
        checks.check_overlap_patch_embed(planted(StudentPatchEmbed, "embed_no_norm"))
    assert "([0]: max |difference| " in str(e.value), str(e.value)
    with pytest.raises(AssertionError) as e:
        checks.check_overlap_patch_embed(planted(StudentPatchEmbed, "hw_swapped"))
    assert "([1]: expected (6, 9), got (9, 6))" in str(e.value), str(e.value)


class BlockEps(StudentBlock):
    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio=4, qkv_bias=True, drop_path=0.0, eps=1e-6,
                 embed_eps=1e-5):
        super().__init__(dim, num_heads, sr_ratio, mlp_ratio, qkv_bias, drop_path, eps, embed_eps)
        self.norm2 = nn.LayerNorm(dim)  # torch's default eps, 1e-5, whatever eps the block is built with


def test_layer_settings_unlike_the_reference_are_listed():
    with pytest.raises(AssertionError) as e:
        checks.check_block(BlockEps)
    message = str(e.value)
    assert "self.norm2 has eps=1e-05 where the reference's has eps=0.1" in message, message
    assert "pass the constructor's eps on (eps=eps)" in message, message
    assert "self.norm1" not in message and "Likely mistake" not in message, message


# --- a check mark means full marks: each checker against its notebook's hidden tests ---------------
#
# The hidden tests are read from the course notebooks (so this follows them when they change) and
# run in a namespace holding what they read from the notebook (its imports and the few names such
# as `cfg` they use, found by their last assignment in an earlier cell), with the exercise's name
# bound to each planted student. The checker, run as the graded cell's visible code, and the hidden
# tests must pass or fail together.

def notebook_students(checker: str, names: list[str]) -> list[tuple[str, dict]]:
    """(bug, {exercise name: student}) for the correct student and every planted one."""
    if checker == "check_tokens":
        assert names == ["image_to_tokens", "tokens_to_image"], names
        students = [("correct", dict(zip(names, functions(None))))]
        for which, bug in TOKEN_CASES:
            fns = dict(zip(names, functions(None)))
            fns[which] = dict(zip(names, functions(bug)))[which]
            students.append((f"{which}-{bug}", fns))
        return students
    [name] = names
    extra = {"check_efficient_self_attention": [("token_blocks", TokenBlockHeads), ("logits", AttentionLogits)]}
    planted_classes = [(bug, planted(base, bug)) for check, base, bugs in CHECKERS if check.__name__ == checker
                       for bug in bugs]
    correct = [("correct", base) for check, base, _ in CHECKERS if check.__name__ == checker]
    if not correct:  # test_every_graded_exercise_is_tried_with_planted_students says so
        return []
    return [(bug, {name: cls}) for bug, cls in correct + planted_classes + extra.get(checker, [])]


AGREEMENT = [(ex, bug, students) for ex in graded_exercises()
             for bug, students in notebook_students(ex["checker"], ex["exercise"])]


@pytest.mark.slow
@pytest.mark.parametrize("exercise, bug, students", AGREEMENT,
                         ids=[f"{ex['grade_id']}-{bug}" for ex, bug, _ in AGREEMENT])
def test_checker_and_hidden_tests_agree(exercise, bug, students):
    namespace = {}
    for stmt in exercise["context"]:
        exec(stmt, namespace)
    namespace.update(students)
    error, out, err = run(exercise["visible"], dict(namespace))
    checker_passes = error is None and err == "" and "✓ " in out
    hidden_error, hidden_out, _ = run(exercise["hidden"], dict(namespace))
    assert not isinstance(hidden_error, NameError), f"the hidden tests need more of the notebook: {hidden_error}"
    assert checker_passes == (hidden_error is None), (
        f"{exercise['notebook']} {exercise['grade_id']}, student {bug}: checker "
        f"{'passes' if checker_passes else 'fails'}, hidden tests {'pass' if hidden_error is None else 'fail'}\n"
        f"checker: {out}{err}{error or ''}\nhidden tests: {hidden_out}{hidden_error!r}")
    assert checker_passes == (bug == "correct")


# graded exercises whose checker-vs-hidden-tests agreement is tested in a file of their own
AGREEMENT_ELSEWHERE = {"check_count_attention": "tests/test_checks_counting.py"}


def test_every_graded_exercise_is_tried_with_planted_students():
    graded = {ex["checker"] for ex in graded_exercises()}
    assert {"check_overlap_patch_embed", "check_tokens", "check_efficient_self_attention", "check_mix_ffn",
            "check_block", "check_mix_transformer"} <= graded, graded
    for checker in graded - set(AGREEMENT_ELSEWHERE):
        tried = [bug for ex, bug, _ in AGREEMENT if ex["checker"] == checker]
        assert "correct" in tried and len(tried) >= 4, f"add {checker}'s students and planted bugs to CHECKERS"


def test_readme_counts_the_catalogue():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "instructors.md").read_text(encoding="utf-8")
    assert f"({len(checks.MISTAKES)} catalogued" in readme


# --- notebook 02: its own mistakes, the shortcut through the package, the report's words -----------

def _report(to_tokens, to_image) -> str:
    with pytest.raises(AssertionError) as e:
        checks.check_tokens(to_tokens, to_image)
    return "\n".join(localise.render(e.value))


def _alias_to_image(tokens, hw):
    from segformer_lite.tokens import tokens_to_image as finished  # the package's, under another name
    return finished(tokens, hw)


SHORTCUTS = {"the package's functions": (sl.image_to_tokens, sl.tokens_to_image),
             "lambdas around them": (lambda x: sl.image_to_tokens(x), lambda t, hw: sl.tokens_to_image(t, hw)),
             "tokens_to_image imported under another name": (functions(None)[0], _alias_to_image)}


@pytest.mark.parametrize("how", SHORTCUTS)
def test_token_helpers_that_call_the_package_are_refused(how):
    to_tokens, to_image = SHORTCUTS[how]
    report = _report(to_tokens, to_image)
    which = "tokens_to_image" if how.startswith("tokens_to_image") else "image_to_tokens"
    assert report.startswith(f"{which}: ") and f"segformer_lite.{which}" in report, report
    assert "the finished function this exercise asks you to write" in report, report


def test_a_value_error_without_the_sizes_is_refused():
    def to_image(t, hw):
        if t.shape[1] != hw[0] * hw[1]:
            raise ValueError("wrong grid")
        return student_tokens_to_image(t, hw)
    report = _report(functions(None)[0], to_image)
    assert report.startswith("tokens_to_image: raised ValueError('wrong grid')"), report
    assert "the token count N = 60 and the grid 8x8 (64 cells)" in report, report


def test_a_value_error_with_the_sides_or_the_cells_passes(capsys):
    for message in ("{n} tokens, grid {h}x{w}", "N={n} but H*W={cells}"):
        def to_image(t, hw, message=message):
            n, (h, w) = t.shape[1], hw
            if n != h * w:
                raise ValueError(message.format(n=n, h=h, w=w, cells=h * w))
            return student_tokens_to_image(t, hw)
        checks.check_tokens(functions(None)[0], to_image)
        assert capsys.readouterr().out.count("✓ ") == 3


def test_a_channels_last_image_is_named_then_fixed():
    def to_image(t, hw):
        student_tokens_to_image(t, hw)  # its check of the grid
        return t.reshape(t.shape[0], hw[0], hw[1], t.shape[2])
    for attempt in (1, 2):
        report = _report(functions(None)[0], to_image)
        assert report.startswith("tokens_to_image: the image has shape (2, 6, 10, 5)"), report
        assert "(B, H, W, C) (the right picture, channels last)" in report, report
        assert "Likely mistake: the tokens were put on the grid channels last" in report, report
        assert ("Why it is one" in report) == (attempt == 1) and ("How to fix" in report) == (attempt == 2), report
        assert "shape trace" not in report, report


def test_tokens_left_channels_first_are_named():
    report = _report(lambda x: (x.flatten(2), tuple(x.shape[-2:])), functions(None)[1])
    assert report.startswith("image_to_tokens: the tokens have shape (2, 5, 60)"), report
    assert "Likely mistake: the tokens are (B, C, N)" in report, report


def _column_major_to_image(t, hw):
    student_tokens_to_image(t, hw)  # its check of the grid
    return rearrange(t, "b (w h) c -> b c h w", h=hw[0], w=hw[1])


TO_TOKENS_FIX = "'b c h w -> b (h w) c'"  # the catalogue's fix for column-major tokens: image_to_tokens's
TO_IMAGE_FIX = "rearrange(tokens, 'b (h w) c -> b c h w', h=H, w=W)"


def test_column_major_on_the_way_back_gets_the_fix_of_tokens_to_image():
    assert TO_TOKENS_FIX in checks.MISTAKES["column_major"].fix
    for attempt in (1, 2):
        report = _report(functions(None)[0], _column_major_to_image)
        assert report.startswith("tokens_to_image: wrong output"), report
        assert "Likely mistake: the tokens are in column-major order (w before h)." in report, report
        assert ("image_to_tokens lays them out in that order" in report) == (attempt == 1), report
        assert (TO_IMAGE_FIX in report) == (attempt == 2), report
        assert TO_TOKENS_FIX not in report and "(and tokens_to_image) assumes" not in report, report


def test_column_major_met_in_image_to_tokens_first_shows_tokens_to_image_its_own_fix():
    report = _report(functions("column_major")[0], functions(None)[1])
    assert report.startswith("image_to_tokens: ") and "Why it is one" in report, report
    report = _report(functions(None)[0], _column_major_to_image)  # the same mistake, now in the other one
    assert report.startswith("tokens_to_image: ") and TO_IMAGE_FIX in report, report  # the memory is per mistake:
    assert "in the order image_to_tokens wrote them" in report and TO_TOKENS_FIX not in report, report  # the fix


HW_TRANSPOSED = {"transpose(1, 3)": lambda t, hw: t.reshape(t.shape[0], *hw, t.shape[2]).transpose(1, 3),
                 "permute(0, 3, 2, 1)": lambda t, hw: t.reshape(t.shape[0], *hw, t.shape[2]).permute(0, 3, 2, 1)}


@pytest.mark.parametrize("how", HW_TRANSPOSED)
def test_tokens_to_image_swapping_h_and_w_by_a_transpose_is_named_then_fixed(how):
    def to_image(t, hw):
        student_tokens_to_image(t, hw)  # its check of the grid
        return HW_TRANSPOSED[how](t, hw)
    for attempt in (1, 2):
        report = _report(functions(None)[0], to_image)
        assert report.startswith("tokens_to_image: the image has shape (2, 5, 10, 6)"), report
        assert "(B, C, W, H) (the right picture, transposed)" in report, report
        assert "Likely mistake: H and W are swapped" in report and "A shape differs" not in report, report
        assert ("Why it is one" in report) == (attempt == 1), report
        assert ("x.permute(0, 3, 1, 2) on (B, H, W, C)" in report) == (attempt == 2), report


def _sizes_checked_channels_first(t, hw):
    B, C, N = t.shape
    H, W = hw
    if N != H * W:
        raise ValueError(f"{N} tokens do not fill a {H}x{W} grid")
    return t.transpose(1, 2).reshape(B, C, H, W)


def _sizes_channels_first(t, hw):
    B, C, N = t.shape
    return t.transpose(1, 2).reshape(B, C, *hw)


@pytest.mark.parametrize("to_image, error", [(_sizes_checked_channels_first, "ValueError: 5 tokens do not fill"),
                                             (_sizes_channels_first, "RuntimeError: shape '[2, 60, 6, 10]'")])
def test_tokens_unpacked_as_channels_first_are_named_then_fixed(to_image, error):
    for attempt in (1, 2):
        report = _report(functions(None)[0], to_image)
        assert report.startswith("tokens_to_image: raised "), report
        assert "Likely mistake: the tokens' sizes were read as if they were (B, C, N)" in report, report
        assert ("How to fix: unpack the sizes in the tokens' order, B, N, C = tokens.shape" in report) == \
            (attempt == 2), report
        assert "Where your code raised it:" in report and error in report, report  # the learner's error too


def test_a_tokens_to_image_error_not_from_the_sizes_is_not_blamed_on_them():
    def to_image(t, hw):
        raise ValueError("not yet")
    report = _report(functions(None)[0], to_image)
    assert report.startswith("tokens_to_image: raised ValueError") and "Likely mistake" not in report, report


def _to_tokens(x):
    return x.flatten(2).transpose(1, 2), tuple(x.shape[-2:])


def _half_detached(t, hw):
    image = student_tokens_to_image(t, hw)
    return image * 0.5 + image.detach() * 0.5


WORDING = {  # a wrong answer -> (what the report must say, what it must not)
    ".float()": (lambda x: (_to_tokens(x)[0].float(), _to_tokens(x)[1]), None,
                 ["the tokens are float32", "no .float(), .double()"], ["tokens is"]),
    "three items": (lambda x: (*_to_tokens(x), 1), None,
                    ["the result has 3 items", "the contract is 2: the tokens and the grid (H, W)"], ["tuple of"]),
    "a grid of three": (lambda x: (_to_tokens(x)[0], (*x.shape[-2:], 1)), None,
                        ["the grid has 3 items", "the contract is 2: (H, W)"], ["tuple of"]),
    "a crash": (None, lambda t, hw: t.reshape(t.shape[0], t.shape[2], *hw, 1).squeeze(5),
                ["tokens_to_image: raised IndexError", "Where your code raised it:"], ["raised and before", "Step by step"]),
    "an order of its own": (None, lambda t, hw: student_tokens_to_image(t, hw).flip(-1),
                            ["The values are all there, in another order"], ["heads", "Step by step"]),
    "a shape of its own": (None, lambda t, hw: t.transpose(1, 2),
                           ["the image has shape (2, 5, 60)", "compare it with the contract"], ["shape trace"]),
    "a grid of tensors": (lambda x: (_to_tokens(x)[0], tuple(torch.tensor(s) for s in x.shape[-2:])), None,
                          ["the grid is (tensor(6), tensor(10))", "H and W are two Tensors", "two Python ints"],
                          ["a Tensor, a Tensor"]),
    "a grid of an int and a float": (lambda x: (_to_tokens(x)[0], (x.shape[-2], x.shape[-1] / 1)), None,
                                     ["the grid is (6, 10.0)", "H and W are an int and a float"], ["a float (10.0)"]),
    ".detach()": (None, lambda t, hw: student_tokens_to_image(t, hw).detach(),
                  ["the image carries no gradient", "Something in your function cuts it", "inside it"],
                  ["forward", "module"]),
    "a gradient of its own": (None, _half_detached,
                              ["the gradient of the tokens differs", "Something in your function changes"],
                              ["forward", "argument 1"]),
    "values that are computed": (lambda x: (_to_tokens(x)[0] * 1.0001, _to_tokens(x)[1]), None,
                                 ["the tokens are off by up to", "every value must come back exactly"], ["batch size"]),
}


@pytest.mark.parametrize("answer", WORDING)
def test_token_reports_speak_of_the_exercise(answer):
    to_tokens, to_image, said, unsaid = WORDING[answer]
    report = _report(to_tokens or functions(None)[0], to_image or functions(None)[1])
    assert all(s in report for s in said) and not any(u in report for u in unsaid), report

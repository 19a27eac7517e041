"""The checkers, one per exercise: ``check_<exercise>(Student)`` (see the package docstring)."""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Callable

import torch
from torch import nn

from ...attention import EfficientSelfAttention
from ...block import Block
from ...config import MiTConfig
from ...encoder import MixTransformer, Stage
from ...mix_ffn import MixFFN
from ...patch_embed import OverlapPatchEmbed
from . import localise, variants
from .decoder_check import _TINY, _shipped_photos, check_all_mlp_decoder, dropout_by_shape  # noqa: F401  (re-exported)
from .harness import call, close, compare, describe, diff, fail, randn, run_check, vet
from .layers import build
from .passes import compare_on_grids, gradients
from .tokens_check import _GRIDS, _TOKENS_AND_GRID, check_image_to_tokens, check_tokens, \
    check_tokens_to_image  # noqa: F401  (re-exported)


def _grids(sr_ratio: int) -> list[tuple[int, int]]:
    """_GRIDS's three kinds of grid, each side a multiple of sr_ratio so the reduction keeps every token."""
    return _GRIDS if sr_ratio <= 2 else [(2 * sr_ratio, 3 * sr_ratio), (2 * sr_ratio, 2 * sr_ratio),
                                          (sr_ratio, 4 * sr_ratio)]


# notebook 05's checker: a four-channel input (in_channels is not 3), and images whose sides differ
# (a 40x72 image's grids round up: 10x18, 5x9, 3x5, 2x3); notebook 05 names both
MIT_CHECK_CONFIG = MiTConfig(in_channels=4, embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4),
                             depths=(1, 2, 1, 1), drop_path_rate=0.0)
MIT_CHECK_SIZES = [(40, 72), (64, 64), (64, 96)]
# notebook 04's checkers, which notebook 04 prints. Mix-FFN: MixFFN(dim, hidden_dim) with a hidden width
# 3x dim, not the usual 4x, on MIX_FFN_CHECK_GRIDS. The block: (dim, num_heads, sr_ratio) and keywords,
# first every argument unlike its default (so a layer built with a setting of its own is reported before
# any output is compared), then the defaults, each in eval mode on BLOCK_CHECK_GRIDS[sr_ratio]; then the
# first one in training mode on BLOCK_CHECK_TRAINING, (batch, grid)
MIX_FFN_CHECK_ARGS = (8, 24)
MIX_FFN_CHECK_GRIDS = _GRIDS
BLOCK_CHECK_CONFIGS = [((16, 1, 8), dict(mlp_ratio=2, qkv_bias=False, drop_path=0.5, eps=0.1, embed_eps=0.2)),
                       ((16, 2, 2), dict(drop_path=0.5))]
BLOCK_CHECK_GRIDS = {args[2]: _grids(args[2]) for args, _ in BLOCK_CHECK_CONFIGS}
BLOCK_CHECK_TRAINING = (8, (16, 24))
_IMAGE_SIZES = [(64, 64), (64, 96), (40, 72)]


def _listed(values) -> str:
    """1, 2, 4 and 8."""
    *rest, last = sorted(set(values))
    return f"{', '.join(map(str, rest))} and {last}" if rest else str(last)


# notebook 01's checker, which notebook 01 names: (in_channels, embed_dim, patch_size, stride), keywords,
# image sizes. First every argument unlike its default (eps too) and a 6x9 grid with C = 16; then stage
# 1's layer on a 6x11 grid with C = 10; then kernel 5, stride 2, which no MiT stage uses: the paper's two
# settings (P = 3 for K = 7, S = 4; P = 1 for K = 3, S = 2) also fit the wrong rules padding = stride - 1
# and padding = patch_size - stride, which pad 1 and 3 pixels here where the released code pads 2
PATCH_EMBED_CHECK_CONFIGS = [((10, 16, 3, 2), dict(eps=0.1), [(12, 18), (9, 14)]),
                             ((3, 10, 7, 4), {}, [(24, 44), (32, 32)]),
                             ((6, 12, 5, 2), {}, [(11, 20)])]


def check_overlap_patch_embed(Student: type) -> None:
    """Check ``Student(in_channels, embed_dim, patch_size=k, stride=s, eps=e)`` (layers ``proj``,
    ``norm``) whose ``forward(images)`` returns the tuple ``(tokens (B, H'*W', C), (H', W'))``,
    the grid a tuple of two ints, on ``PATCH_EMBED_CHECK_CONFIGS``."""
    title = "OverlapPatchEmbed"
    configs = PATCH_EMBED_CHECK_CONFIGS

    def body() -> str:
        cases = 0
        for args, more, sizes in configs:
            student, ref = build(Student, OverlapPatchEmbed, args[:2],
                                 dict(patch_size=args[2], stride=args[3], **more), title)

            def case(seed, hw):
                x = randn(2, args[0], *hw, seed=seed)
                planted = {"no_padding": lambda: variants.patch_embed(ref, x, pad=False),
                           "embed_no_norm": lambda: variants.patch_embed(ref, x, norm=False),
                           "flatten_no_permute": lambda: variants.patch_embed(ref, x, flatten="reshape"),
                           "column_major": lambda: variants.patch_embed(ref, x, flatten="column"),
                           "hw_swapped": lambda: variants.patch_embed(ref, x, swap_hw=True)}
                where = (f"for images of shape {tuple(x.shape)} (kernel {args[2]}, stride {args[3]}"
                         + "".join(f", {k}={v}" for k, v in more.items()) + ")")
                return (x,), where, planted

            cases += compare_on_grids(title, student, ref, sizes, case, sqrt_hw_on_error=False,
                                      name="forward's result", items=_TOKENS_AND_GRID)
        settings = ", ".join(f"{args[2]}/{args[3]}" for args, _, _ in configs)
        return (f"matches segformer_lite.OverlapPatchEmbed on {cases} inputs (kernel/stride {settings}; square "
                "and non-square, eps passed on), gradients, float64 and the device kept")

    run_check(title, body)


def check_efficient_self_attention(Student: type) -> None:
    """Check ``Student(dim, num_heads=h, sr_ratio=sr)`` (layers ``q``, ``kv``, ``proj`` and, when
    ``sr_ratio > 1``, ``sr``, ``norm``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``
    and, with ``return_attention=True``, the tuple ``(out, attn (B, heads, N, M))``."""
    title = "EfficientSelfAttention"
    knobs = {"heads_over_tokens": dict(split="tokens", merge="reshape"),
             "merge_no_permute": dict(merge="reshape"), "no_scale": dict(scale="none"),
             "scale_twice": dict(scale="twice"), "scale_inverted": dict(scale="inverted"),
             "scale_after_softmax": dict(scale="after_softmax"),
             "scale_dim": dict(scale="dim"), "softmax_axis": dict(softmax_dim=-2),
             "conv_channels_last": dict(layout="reshape"),
             "sr_no_norm": dict(sr_norm=False), "no_reduction": dict(reduce=False),
             "kv_swapped": dict(kv_order="vk"), "no_proj": dict(proj=False),
             "sqrt_hw": dict(layout="sqrt"), "hw_swapped": dict(layout="swap"),
             # half-made mistakes, named through mistakes.ALIASES
             "heads_over_tokens_split_only": dict(split="tokens"),
             "heads_over_token_blocks": dict(split="token_blocks", merge="reshape"),
             "conv_channels_last_out": dict(layout="reshape_out"),
             "conv_channels_last_in": dict(layout="reshape_in")}
    # (dim, num_heads, sr_ratio), other keywords: first every argument unlike its default (the first grid
    # 8x12, C = 16, M = 6 keys), then one head (a head split or merge mistake shows as "1 head passes,
    # 2 fail"), then the defaults and sr_ratio 1, 2 and 8
    configs = [((16, 2, 4), dict(qkv_bias=False, eps=0.1)), ((8, 1, 2), {}), ((16, 2, 2), {}),
               ((24, 3, 1), dict(qkv_bias=False)), ((32, 4, 8), dict(eps=0.2))]

    def body() -> str:
        cases = 0
        for args, more in configs:
            student, ref = build(Student, EfficientSelfAttention, args[:1],
                                 dict(num_heads=args[1], sr_ratio=args[2], **more), title)
            if "return_attention" not in inspect.signature(student.forward).parameters:
                raise fail(title, "forward has no return_attention argument",
                           extra="Keep the skeleton's signature forward(self, x, hw, return_attention=False)"
                                 " and return (out, attn) when it is True.")

            def case(seed, hw):
                x = randn(2, hw[0] * hw[1], args[0], seed=seed)
                where = (f"for x of shape {tuple(x.shape)}, hw={hw} "
                         f"(dim={args[0]}, num_heads={args[1]}, sr_ratio={args[2]}"
                         + "".join(f", {k}={v}" for k, v in more.items()) + ")")
                planted = {m_id: (lambda kw=kw: variants.attention(ref, x, hw, **kw))
                           for m_id, kw in knobs.items()}
                return (x, hw), where, planted

            def attention_maps(inputs, where):
                where += " with return_attention=True"
                got = call(functools.partial(student, return_attention=True), *inputs, title=title, where=where)
                want = ref(*inputs, return_attention=True)
                vet(title, got, want, where, "forward's result", ("the output", "the attention maps"))
                if not close(got[1], want[1]):
                    raise fail(title, f"the attention probabilities returned differ {where} "
                               f"({diff(got[1], want[1])})",
                               extra="Return (out, attn) with attn the softmax of the scaled scores, "
                                     "(B, heads, N, M), the weights that multiply v.", localised=True)
                compare(title, got[0], want[0], where, {}, name="the output")

            cases += compare_on_grids(title, student, ref, _grids(args[2]), case, then=attention_maps)
        return (f"matches segformer_lite.EfficientSelfAttention on {cases} inputs, attention maps "
                f"included (square and non-square, sr_ratio {_listed(c[0][2] for c in configs)}, qkv_bias "
                "and eps passed on), gradients, float64 and the device kept")

    run_check(title, body)


def check_mix_ffn(Student: type) -> None:
    """Check ``Student(dim, hidden_dim)`` (layers ``fc1``, ``dwconv``, ``fc2``) whose
    ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``."""
    title = "MixFFN"
    knobs = {"gelu_before_dwconv": dict(act_at="fc1"), "gelu_after_fc2": dict(act_at="fc2"),
             "gelu_twice": dict(act_at="dwconv_twice"), "gelu_twice_fc1": dict(act_at="fc1_and_dwconv"),
             "no_gelu": dict(act_at="none"), "relu": dict(act="relu"),
             "gelu_tanh": dict(act="tanh"), "unflatten_no_permute": dict(layout="reshape"),
             "no_dwconv": dict(dwconv=False), "ffn_residual": dict(residual=True),
             "sqrt_hw": dict(layout="sqrt"), "hw_swapped": dict(layout="swap"),
             "flatten_no_permute": dict(layout="reshape_out"),
             "unflatten_no_permute_in": dict(layout="reshape_in")}  # named through mistakes.ALIASES

    def body() -> str:
        student, ref = build(Student, MixFFN, MIX_FFN_CHECK_ARGS, {}, title)
        dim = MIX_FFN_CHECK_ARGS[0]

        def case(seed, hw):
            x = randn(2, hw[0] * hw[1], dim, seed=seed)
            planted = {m_id: (lambda kw=kw: variants.mix_ffn(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
            return (x, hw), f"for x of shape {tuple(x.shape)}, hw={hw}", planted

        n = compare_on_grids(title, student, ref, MIX_FFN_CHECK_GRIDS, case)
        return f"matches segformer_lite.MixFFN on {n} inputs (square and non-square), gradients, float64 and the device kept"

    run_check(title, body)


def check_block(Student: type) -> None:
    """Check ``Student(dim, num_heads, sr_ratio, drop_path=p)`` (layers ``norm1``, ``attn``,
    ``norm2``, ``ffn``, ``drop_path``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``,
    in eval mode and, with DropPath active, in training mode."""
    title = "Block"
    knobs = {"post_norm": dict(post_norm=True), "no_attn_residual": dict(attn_residual=False),
             "no_ffn_residual": dict(ffn_residual=False), "norm1_twice": dict(norm1_twice=True),
             "parallel_branches": dict(parallel=True), "no_drop_path": dict(drop_path=False),
             "ffn_before_attention": dict(ffn_first=True), "norms_swapped": dict(norms_swapped=True),
             **{f"{m_id}{part}": {knob: branches} for m_id, knob in [("norm_applied_twice", "norm_again"),
                                                                    ("norm_after_residual", "norm_sum"),
                                                                    ("residual_from_normed", "normed_residual")]
                for part, branches in [("", ("attn", "ffn")), ("_attn", ("attn",)), ("_ffn", ("ffn",))]},
             # half-made or combined, named through mistakes.ALIASES
             "ffn_before_attention_norm1_first": dict(ffn_first=True, norms_swapped=True)}
    configs = BLOCK_CHECK_CONFIGS  # (dim, num_heads, sr_ratio), keywords

    def body() -> str:
        n = 0
        for args, more in configs:
            student, ref = build(Student, Block, args, more, title)

            def case(seed, hw):
                x = randn(2, hw[0] * hw[1], args[0], seed=seed)
                planted = {m_id: (lambda kw=kw: variants.block(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
                shown = "".join(f", {k}={v}" for k, v in more.items() if k != "drop_path")
                return (x, hw), f"for x of shape {tuple(x.shape)}, hw={hw}, sr_ratio={args[2]}{shown} (eval mode)", planted

            n += compare_on_grids(title, student, ref, BLOCK_CHECK_GRIDS[args[2]], case)
        # training mode, stage 1's sr_ratio: DropPath draws one mask per branch; same seed -> same masks
        student, ref = (m.train() for m in build(Student, Block, *configs[0], title))
        batch, hw = BLOCK_CHECK_TRAINING
        x = randn(batch, hw[0] * hw[1], configs[0][0][0], seed=5)

        def seeded(fn: Callable, *args, **kwargs):
            torch.manual_seed(1234)
            return fn(*args, **kwargs)

        where = f"for x of shape {tuple(x.shape)}, hw={hw} (training mode, drop_path=0.5)"
        localise.set_case(student, ref, (x, hw), run=seeded)
        with torch.no_grad():
            got = call(seeded, student, x, hw, title=title, where=where)
        planted = {m_id: (lambda kw=kw: seeded(variants.block, ref, x, hw, **kw)) for m_id, kw in knobs.items()}
        with torch.no_grad():
            compare(title, got, seeded(ref, x, hw), where, planted)
        gradients(title, functools.partial(seeded, student), functools.partial(seeded, ref), (x, hw), where,
                  modules=(student, ref))  # the same DropPath masks, so the same gradients
        return (f"matches segformer_lite.Block on {n + 1} inputs (square, non-square, "
                f"sr_ratio {_listed(c[0][2] for c in configs)}, training mode, mlp_ratio, qkv_bias and both eps "
                "passed on), gradients, float64 and the device kept")

    run_check(title, body)


def check_stage(Student: type) -> None:
    """Check ``Student(cfg, i, in_channels, drop_paths)`` (layers ``patch_embed``, ``blocks``,
    ``norm``) whose ``forward(x (B, C_in, H, W))`` returns the feature map ``(B, C_i, H_i, W_i)``."""
    title = "Stage"
    knobs = {"stage_no_norm": dict(norm=False), "stage_norm_every_block": dict(norm="every_block"), "unflatten_no_permute": dict(layout="reshape"),
             "sqrt_hw": dict(layout="sqrt")}

    def body() -> str:
        cases = 0
        for i, in_channels in [(0, 3), (1, _TINY.embed_dims[0])]:
            drop_paths = [0.0] * _TINY.depths[i]
            student, ref = build(Student, Stage, (_TINY, i, in_channels, drop_paths), {}, title)

            def case(seed, hw):
                x = randn(2, in_channels, *hw, seed=seed)
                planted = {m_id: (lambda kw=kw: variants.stage(ref, x, **kw)) for m_id, kw in knobs.items()}
                return (x,), f"for stage {i + 1} and input of shape {tuple(x.shape)}", planted

            def accept(got, expected, where):
                if isinstance(got, torch.Tensor) and got.ndim == 3:
                    raise fail(title, f"wrong output {where} ({diff(got, expected)})", ["stage_returns_tokens"])
                return got

            # stage 2 reads stage 1's feature map, a quarter of the image's size
            sizes = _IMAGE_SIZES if i == 0 else [(h // 4, w // 4) for h, w in _IMAGE_SIZES]
            cases += compare_on_grids(title, student, ref, sizes, case, accept=accept)
        return f"matches segformer_lite.Stage on {cases} inputs (stages 1 and 2, square and non-square)"

    run_check(title, body)


@contextlib.contextmanager
def _refusing_finished(student: nn.Module, title: str, finished: tuple[type, ...]):
    """While the learner's forward runs, calling the forward of one of the package's ``finished``
    classes (the part the exercise asks for) fails with a report saying so."""
    running = []
    hooks = [student.register_forward_pre_hook(lambda *_: running.append(True)),
             student.register_forward_hook(lambda *_: running.clear(), always_call=True)]
    originals = {cls: cls.forward for cls in finished}

    def guarded(cls: type, original: Callable) -> Callable:
        @functools.wraps(original)
        def forward(self, *args, **kwargs):
            if running:
                raise fail(title, f"forward calls segformer_lite.{cls.__name__}'s finished forward: the package "
                           "would run the steps this exercise asks you to write",
                           extra="Write them with the parts the skeleton gives (each stage's patch_embed, blocks "
                                 "and norm); the questions above the exercise lead to their order and forms.")
            return original(self, *args, **kwargs)
        return forward
    try:
        for cls, original in originals.items():
            cls.forward = guarded(cls, original)
        yield
    finally:
        for cls, original in originals.items():
            cls.forward = original
        for hook in hooks:
            hook.remove()


def check_mix_transformer(Student: type) -> None:
    """Check ``Student(cfg)`` (layer ``stages``) whose ``forward(images)`` returns the list of
    the four stages' feature maps ``[(B, C_i, H_i, W_i)]``: the stage loop of notebook 05, on
    ``MIT_CHECK_CONFIG`` and ``MIT_CHECK_SIZES`` (which the notebook names). Calling the forward
    of ``segformer_lite.Stage`` (or ``MixTransformer``) inside the loop is refused."""
    title = "MixTransformer"
    knobs = {"stage_no_norm": dict(norm=False), "stage_norm_every_block": dict(norm="every_block"), "unflatten_no_permute": dict(layout="reshape"),
             "encoder_chains_tokens": dict(chain="tokens"), "encoder_not_chained": dict(chain="input")}

    def body() -> str:
        student, ref = build(Student, MixTransformer, (MIT_CHECK_CONFIG,), {}, title)
        channels = MIT_CHECK_CONFIG.in_channels

        def case(seed, hw):
            x = randn(2, channels, *hw, seed=seed)
            planted = {m_id: (lambda kw=kw: variants.encoder(ref, x, **kw)) for m_id, kw in knobs.items()}
            return (x,), f"for images of shape {tuple(x.shape)}", planted

        def accept(got, expected, where):
            if isinstance(got, torch.Tensor):
                mistakes = ["encoder_last_only"] if close(got, expected[-1]) else []
                raise fail(title, f"forward must return a list of {MIT_CHECK_CONFIG.num_stages} feature maps, "
                                  f"got a {describe(got)}", mistakes)
            return got

        with _refusing_finished(student, title, (Stage, MixTransformer)):
            n = compare_on_grids(title, student, ref, MIT_CHECK_SIZES, case, sqrt_hw_on_error=False, accept=accept,
                                 name="forward's result",
                                 items=tuple(f"stage {i + 1}'s feature map" for i in range(MIT_CHECK_CONFIG.num_stages)))
        return (f"matches segformer_lite.MixTransformer on {n} batches of 2 images (square and non-square, "
                f"{channels} channels), gradients, float64 and the device kept")

    run_check(title, body)

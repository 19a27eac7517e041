"""The checkers, one per exercise: ``check_<exercise>(Student)`` (see the package docstring)."""
from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...attention import EfficientSelfAttention
from ...block import Block
from ...config import MiTConfig
from ...decoder import AllMLPDecoder
from ...encoder import MixTransformer, Stage
from ...grid import stage_grid_sizes
from ...mix_ffn import MixFFN
from ...patch_embed import OverlapPatchEmbed
from ...tokens import image_to_tokens, tokens_to_image
from . import localise, variants
from .harness import Report, Unfinished, build, call, close, compare, compare_on_grids, describe, diff, fail, \
    gradients, in_float64, randn, raises_alike, run_check, vet

# first a grid whose sides differ from each other and from every width checked (so a wrong axis
# cannot hide), then a square one, then a non-square one with a square N (sqrt(N) runs, wrongly)
_GRIDS = [(6, 10), (8, 8), (4, 16)]


def _grids(sr_ratio: int) -> list[tuple[int, int]]:
    """_GRIDS's three kinds of grid, each side a multiple of sr_ratio so the reduction keeps every token."""
    return _GRIDS if sr_ratio <= 2 else [(2 * sr_ratio, 3 * sr_ratio), (2 * sr_ratio, 2 * sr_ratio),
                                          (sr_ratio, 4 * sr_ratio)]


_TOKEN_GRIDS = _GRIDS + [(1, 9)]  # and one row of pixels
_DTYPES = (torch.float64, torch.int64)  # the tokens helpers' contract: the input's dtype comes back
_TOKENS_AND_GRID = ("the tokens", "the grid (H, W)")
_TINY = MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1),
                  drop_path_rate=0.0)
# notebook 05's checker: a four-channel input (in_channels is not 3), and images whose sides differ
# (a 40x72 image's grids round up: 10x18, 5x9, 3x5, 2x3); notebook 05 names both
MIT_CHECK_CONFIG = MiTConfig(in_channels=4, embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4),
                             depths=(1, 2, 1, 1), drop_path_rate=0.0)
MIT_CHECK_SIZES = [(40, 72), (64, 64), (64, 96)]
_IMAGE_SIZES = [(64, 64), (64, 96), (40, 72)]


def _listed(values) -> str:
    """1, 2, 4 and 8."""
    *rest, last = sorted(set(values))
    return f"{', '.join(map(str, rest))} and {last}" if rest else str(last)


def check_overlap_patch_embed(Student: type) -> None:
    """Check ``Student(in_channels, embed_dim, patch_size=k, stride=s)`` (layers ``proj``,
    ``norm``) whose ``forward(images)`` returns the tuple ``(tokens (B, H'*W', C), (H', W'))``,
    the grid a tuple of two ints."""
    title = "OverlapPatchEmbed"

    # (in_channels, embed_dim, patch_size, stride), keywords, image sizes: first every argument unlike
    # its default (eps too) and a 6x9 grid with C = 16, then stage 1's layer on a 6x11 grid with C = 10
    configs = [((10, 16, 3, 2), dict(eps=0.1), [(12, 18), (9, 14)]), ((3, 10, 7, 4), {}, [(24, 44), (32, 32)])]

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
        return (f"matches segformer_lite.OverlapPatchEmbed on {cases} inputs (square and non-square, eps "
                "passed on), gradients and float64 included")

    run_check(title, body)


def check_image_to_tokens(image_to_tokens_fn: Callable) -> None:
    """Check ``image_to_tokens_fn(x (B, C, H, W)) -> (tokens (B, H*W, C), (H, W))``, a tuple whose
    grid is a tuple of two ints."""
    title = "image_to_tokens"

    def case(seed, hw):
        x = randn(2, 5, *hw, seed=seed)
        h, w = hw
        planted = {"flatten_no_permute": lambda: (variants.to_tokens(x, "reshape"), (h, w)),
                   "column_major": lambda: (variants.to_tokens(x, "column"), (h, w)),
                   "hw_swapped": lambda: (variants.to_tokens(x), (w, h))}
        return (x,), f"for x of shape {tuple(x.shape)}", planted

    def body() -> str:
        n = compare_on_grids(title, image_to_tokens_fn, image_to_tokens, _TOKEN_GRIDS, case,
                             sqrt_hw_on_error=False, exact=True, name="the result", items=_TOKENS_AND_GRID)
        for dtype in _DTYPES:  # the contract: the tokens keep the input's dtype
            x = randn(2, 5, 6, 10, seed=8).mul(4).to(dtype)
            where = f"for x of shape {tuple(x.shape)} and dtype {str(dtype).removeprefix('torch.')}"
            compare(title, call(image_to_tokens_fn, x, title=title, where=where), image_to_tokens(x), where, {},
                    exact=True, name="the result", items=_TOKENS_AND_GRID)
        return (f"matches segformer_lite.image_to_tokens exactly on {n} grids (square, non-square, one row) "
                "and in float64 and int64, gradients included")

    run_check(title, body)


def check_tokens_to_image(tokens_to_image_fn: Callable) -> None:
    """Check ``tokens_to_image_fn(tokens (B, N, C), (H, W)) -> (B, C, H, W)``."""
    title = "tokens_to_image"

    def case(seed, hw):
        t = randn(2, hw[0] * hw[1], 5, seed=seed)
        planted = {m_id: (lambda how=how: variants.to_image(t, hw, how)) for m_id, how in
                   [("unflatten_no_permute", "reshape"), ("sqrt_hw", "sqrt"),
                    ("hw_swapped", "swap"), ("column_major", "column")]}
        return (t, hw), f"for tokens of shape {tuple(t.shape)} and hw={hw}", planted

    def body() -> str:
        n = compare_on_grids(title, tokens_to_image_fn, tokens_to_image, _TOKEN_GRIDS, case, exact=True)
        for dtype in _DTYPES:  # the contract: the image keeps the tokens' dtype
            t = randn(2, 60, 5, seed=8).mul(4).to(dtype)
            where = f"for tokens of shape {tuple(t.shape)}, dtype {str(dtype).removeprefix('torch.')}, and hw=(6, 10)"
            compare(title, call(tokens_to_image_fn, t, (6, 10), title=title, where=where),
                    tokens_to_image(t, (6, 10)), where, {}, exact=True)
        t = randn(2, 60, 5, seed=9)
        for hw in [(8, 8), (6, 5)]:  # 64 cells for 60 tokens; 30 cells, which reshape(B, -1, 6, 5) fills
            where = f"for tokens of shape {tuple(t.shape)} and hw={hw}"
            try:
                tokens_to_image_fn(t, hw)
            except ValueError:
                continue
            except NotImplementedError:
                raise Unfinished from None
            except Exception as e:
                raise fail(title, f"raised {type(e).__name__}, not ValueError, {where}: {e}",
                           ["grid_not_checked"]) from e
            raise fail(title, f"accepted a grid that does not fit the tokens {where}", ["grid_not_checked"])
        return (f"matches segformer_lite.tokens_to_image exactly on {n} grids (square, non-square, "
                "one row) and in float64 and int64, gradients included, and refuses grids that do not fit "
                "with ValueError")

    run_check(title, body)


def check_tokens(image_to_tokens_fn: Callable, tokens_to_image_fn: Callable) -> None:
    """Check both helpers, then that they undo each other on a non-square image."""
    check_image_to_tokens(image_to_tokens_fn)
    check_tokens_to_image(tokens_to_image_fn)
    title = "image <-> tokens round trip"

    def body() -> str:
        x = randn(2, 5, 6, 10, seed=7)
        tokens, hw = call(image_to_tokens_fn, x, title=title, where="on a 6x10 image")
        back = call(tokens_to_image_fn, tokens, hw, title=title, where="on a 6x10 image")
        vet(title, back, x, "on a 6x10 image", "tokens_to_image(*image_to_tokens(x))")
        if not close(back, x, exact=True):
            raise fail(title, "tokens_to_image(*image_to_tokens(x)) does not give x back",
                       extra="The two reshapes must be exact inverses (same token order).")
        return "tokens_to_image(*image_to_tokens(x)) == x on a 6x10 image"

    run_check(title, body)


def check_efficient_self_attention(Student: type) -> None:
    """Check ``Student(dim, num_heads=h, sr_ratio=sr)`` (layers ``q``, ``kv``, ``proj`` and, when
    ``sr_ratio > 1``, ``sr``, ``norm``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``
    and, with ``return_attention=True``, the tuple ``(out, attn (B, heads, N, M))``."""
    title = "EfficientSelfAttention"
    knobs = {"heads_over_tokens": dict(split="tokens", merge="reshape"),
             "merge_no_permute": dict(merge="reshape"), "no_scale": dict(scale="none"),
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
                "and eps passed on), gradients and float64 included")

    run_check(title, body)


def check_mix_ffn(Student: type) -> None:
    """Check ``Student(dim, hidden_dim)`` (layers ``fc1``, ``dwconv``, ``fc2``) whose
    ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``."""
    title = "MixFFN"
    knobs = {"gelu_before_dwconv": dict(act_at="fc1"), "gelu_after_fc2": dict(act_at="fc2"),
             "no_gelu": dict(act_at="none"), "relu": dict(act="relu"),
             "gelu_tanh": dict(act="tanh"), "unflatten_no_permute": dict(layout="reshape"),
             "no_dwconv": dict(dwconv=False), "ffn_residual": dict(residual=True),
             "sqrt_hw": dict(layout="sqrt"), "hw_swapped": dict(layout="swap"),
             "flatten_no_permute": dict(layout="reshape_out"),
             "unflatten_no_permute_in": dict(layout="reshape_in")}  # named through mistakes.ALIASES

    def body() -> str:
        student, ref = build(Student, MixFFN, (8, 24), {}, title)  # hidden width 3x, not the usual 4x

        def case(seed, hw):
            x = randn(2, hw[0] * hw[1], 8, seed=seed)
            planted = {m_id: (lambda kw=kw: variants.mix_ffn(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
            return (x, hw), f"for x of shape {tuple(x.shape)}, hw={hw}", planted

        n = compare_on_grids(title, student, ref, _GRIDS, case)
        return f"matches segformer_lite.MixFFN on {n} inputs (square and non-square), gradients and float64 included"

    run_check(title, body)


def check_block(Student: type) -> None:
    """Check ``Student(dim, num_heads, sr_ratio, drop_path=p)`` (layers ``norm1``, ``attn``,
    ``norm2``, ``ffn``, ``drop_path``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``,
    in eval mode and, with DropPath active, in training mode."""
    title = "Block"
    knobs = {"post_norm": dict(post_norm=True), "no_attn_residual": dict(attn_residual=False),
             "no_ffn_residual": dict(ffn_residual=False), "norm1_twice": dict(norm1_twice=True),
             "parallel_branches": dict(parallel=True), "no_drop_path": dict(drop_path=False)}
    # (dim, num_heads, sr_ratio), keywords: first every argument unlike its default (so a layer built
    # with a setting of its own is reported before any output is compared), then the defaults
    configs = [((16, 1, 8), dict(mlp_ratio=2, qkv_bias=False, drop_path=0.5, eps=0.1, embed_eps=0.2)),
               ((16, 2, 2), dict(drop_path=0.5))]

    def body() -> str:
        n = 0
        for args, more in configs:
            student, ref = build(Student, Block, args, more, title)

            def case(seed, hw):
                x = randn(2, hw[0] * hw[1], 16, seed=seed)
                planted = {m_id: (lambda kw=kw: variants.block(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
                shown = "".join(f", {k}={v}" for k, v in more.items() if k != "drop_path")
                return (x, hw), f"for x of shape {tuple(x.shape)}, hw={hw}, sr_ratio={args[2]}{shown} (eval mode)", planted

            n += compare_on_grids(title, student, ref, _grids(args[2]), case)
        # training mode, stage 1's sr_ratio: DropPath draws one mask per branch; same seed -> same masks
        student, ref = (m.train() for m in build(Student, Block, *configs[0], title))
        x, hw = randn(8, 24 * 16, 16, seed=5), (16, 24)

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
                "passed on), gradients and float64 included")

    run_check(title, body)


def check_stage(Student: type) -> None:
    """Check ``Student(cfg, i, in_channels, drop_paths)`` (layers ``patch_embed``, ``blocks``,
    ``norm``) whose ``forward(x (B, C_in, H, W))`` returns the feature map ``(B, C_i, H_i, W_i)``."""
    title = "Stage"
    knobs = {"stage_no_norm": dict(norm=False), "unflatten_no_permute": dict(layout="reshape"),
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
                           extra="Write them with the parts the skeleton gives: each stage's patch_embed, its "
                                 "blocks (with the grid beside the tokens), its norm, then back to an image.")
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
    knobs = {"stage_no_norm": dict(norm=False), "unflatten_no_permute": dict(layout="reshape"),
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
                f"{channels} channels), gradients and float64 included")

    run_check(title, body)


# square; non-square; sides that are not multiples of 32, so the stage grids round up (10, 5, 3, 2)
_DECODER_IMAGES = [(64, 64), (64, 96), (40, 72)]


@contextlib.contextmanager
def dropout_by_shape(seed: int = 1234):
    """Dropout whose mask depends only on the tensor's shape and the call's place in order, not on
    its memory layout: torch's CPU dropout draws its mask in memory order, so a correct head that
    makes a tensor contiguous, or uses a 1x1 conv for a Linear, would get another mask than the
    reference's. Patches F.dropout, which nn.Dropout and a learner's F.dropout both call."""
    real, calls = F.dropout, itertools.count()

    def dropout(x, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return x
        keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed + next(calls))) >= p
        return x * keep.to(x.dtype) / (1 - p)

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = real


@functools.lru_cache(maxsize=1)
def _shipped_photos():
    """The shipped SegFormer, its encoder's four maps for two 300x451 photos (notebook 06's photo
    and its mirror image, as the exercise's hidden tests use) and its logits for them (loaded
    and run once per session)."""
    from ...checkpoint import load_segformer
    from ..images import photo_tensor

    model = load_segformer().eval()
    image = photo_tensor("chelsea", normalize=False)  # (1, 3, 300, 451)
    images = torch.cat([image, image.flip(-1)])
    with torch.no_grad():
        feats = model.encoder(images)
        return model, feats, model.decode_head(feats)


def check_all_mlp_decoder(Student: type) -> None:
    """Check ``Student(in_dims, num_classes, decoder_dim, dropout=p)`` (layers ``linear_c``, ``fuse``,
    ``norm``, ``dropout``, ``classifier``) whose ``forward(feats)``, ``feats`` the four stage maps
    ``[(B, C_i, H_i, W_i)]``, returns the logits ``(B, num_classes, H_1, W_1)``, in eval mode and, with
    the same seed for both (so the same dropout mask), in training mode."""
    title = "AllMLPDecoder"
    knobs = {"decoder_concat_order": dict(order="shallowest_first"), "decoder_full_size": dict(size="image"),
             "decoder_align_corners": dict(align_corners=True), "decoder_no_norm": dict(norm=False),
             "decoder_no_relu": dict(relu=False), "decoder_linear_axis": dict(layout="reshape"),
             "decoder_linear_axis_out": dict(layout="reshape_out")}  # an alias (mistakes.ALIASES)
    raising = {"decoder_scale_factor": dict(size="scale_factor")}  # runs only on multiples of 32

    def body() -> str:
        student, ref = build(Student, AllMLPDecoder, (_TINY.embed_dims, 5, 12), dict(dropout=0.3), title)
        g = torch.Generator().manual_seed(2)  # BatchNorm statistics worth checking (not 0 and 1)
        ref.norm.running_mean.copy_(torch.randn(12, generator=g) * 0.5)
        ref.norm.running_var.copy_(torch.rand(12, generator=g) * 1.5 + 0.5)
        student.load_state_dict(ref.state_dict())
        for seed, (h, w) in enumerate(_DECODER_IMAGES):
            feats = [randn(2, c, *grid, seed=10 * seed + i)
                     for i, (c, grid) in enumerate(zip(_TINY.embed_dims, stage_grid_sizes(_TINY, h, w)))]
            where = f"for the stage maps of a batch of two {h}x{w} images, {[tuple(f.shape) for f in feats]}"
            planted = {m_id: (lambda kw=kw: variants.all_mlp_decoder(ref, feats, **kw)) for m_id, kw in knobs.items()}
            localise.set_case(student, ref, (feats,))
            try:
                with torch.no_grad():
                    got = call(student, feats, title=title, where=where)
            except Report as report:  # the learner's code raised: does a planted variant raise alike?
                cause = report.__cause__
                named = [m_id for m_id, kw in raising.items()
                         if raises_alike(lambda kw=kw: variants.all_mlp_decoder(ref, feats, **kw), cause)]
                if not named:
                    raise
                raise fail(title, f"raised {type(cause).__name__} {where}: {cause}", named) from cause
            with torch.no_grad():
                compare(title, got, ref(feats), where, planted, name="the logits")
        gradients(title, student, ref, (feats,), where, "the logits")
        in_float64(title, student, ref, (feats,), where, "the logits")
        # training mode: BatchNorm on the batch's statistics, dropout=0.3 with the same seed for both
        student.train(), ref.train()

        def seeded(module, maps):
            with dropout_by_shape():
                return module(maps)

        where = where.replace("images, ", "images in training mode (dropout=0.3), ")
        with torch.no_grad():
            got = call(seeded, student, feats, title=title, where=where)
            compare(title, got, seeded(ref, feats), where, {}, name="the logits")
        gradients(title, functools.partial(seeded, student), functools.partial(seeded, ref), (feats,), where,
                  "the logits", modules=(student, ref))
        if localise.failing():  # the small maps already failed: the report comes without the photos
            return ""
        # then the shipped head's trained weights on two photos: sl.SegFormer's logits, as notebook 06 promises
        model, feats, logits = _shipped_photos()
        head = model.decode_head
        student, _ = build(Student, AllMLPDecoder, (model.config.embed_dims, model.num_classes, model.decoder_dim),
                           {}, title)
        student.load_state_dict(head.state_dict())
        where = (f"with the shipped model's head weights, on its encoder's maps of two 300x451 photos, "
                 f"{[tuple(f.shape) for f in feats]}")
        localise.set_case(student, head, (feats,))
        got = call(student, feats, title=title, where=where)
        planted = {m_id: (lambda kw=kw: variants.all_mlp_decoder(head, feats, **kw)) for m_id, kw in knobs.items()}
        compare(title, got, logits, where, planted, name="the logits")
        return (f"matches segformer_lite.AllMLPDecoder on {len(_DECODER_IMAGES) + 1} inputs (batch 2, square "
                "and non-square, sides not multiples of 32, training mode with dropout=0.3), gradients and "
                "float64 included, and with the shipped head's trained weights gives sl.SegFormer's logits on "
                "two 300x451 photos")

    run_check(title, body)

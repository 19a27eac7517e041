"""The checkers, one per exercise: ``check_<exercise>(Student)`` (see the package docstring)."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

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
    randn, raises_alike, run_check, vet

_GRIDS = [(8, 8), (4, 16), (6, 10)]  # square; non-square with a square N (sqrt(N) runs, wrongly); neither


def _grids(sr_ratio: int) -> list[tuple[int, int]]:
    """_GRIDS's three kinds of grid, each side a multiple of sr_ratio so the reduction keeps every token."""
    return _GRIDS if sr_ratio <= 2 else [(2 * sr_ratio, 2 * sr_ratio), (sr_ratio, 4 * sr_ratio),
                                          (2 * sr_ratio, 3 * sr_ratio)]


_TOKEN_GRIDS = _GRIDS + [(1, 9)]  # and one row of pixels
_TOKENS_AND_GRID = ("the tokens", "the grid (H, W)")
_TINY = MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1),
                  drop_path_rate=0.0)
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

    def body() -> str:
        cases = 0
        for args, sizes in [((3, 8, 7, 4), [(32, 32), (30, 45)]), ((8, 16, 3, 2), [(12, 12), (9, 14)])]:
            student, ref = build(Student, OverlapPatchEmbed, args[:2], dict(patch_size=args[2], stride=args[3]),
                                 title)

            def case(seed, hw):
                x = randn(2, args[0], *hw, seed=seed)
                planted = {"no_padding": lambda: variants.patch_embed(ref, x, pad=False),
                           "embed_no_norm": lambda: variants.patch_embed(ref, x, norm=False),
                           "flatten_no_permute": lambda: variants.patch_embed(ref, x, flatten="reshape"),
                           "column_major": lambda: variants.patch_embed(ref, x, flatten="column"),
                           "hw_swapped": lambda: variants.patch_embed(ref, x, swap_hw=True)}
                where = f"for images of shape {tuple(x.shape)} (kernel {args[2]}, stride {args[3]})"
                return (x,), where, planted

            cases += compare_on_grids(title, student, ref, sizes, case, sqrt_hw_on_error=False,
                                      name="forward's result", items=_TOKENS_AND_GRID)
        return f"matches segformer_lite.OverlapPatchEmbed on {cases} inputs (square and non-square)"

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
        return f"matches segformer_lite.image_to_tokens exactly on {n} grids (square, non-square, one row)"

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
                "one row) and refuses grids that do not fit with ValueError")

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
    configs = [(8, 1, 2), (16, 2, 2), (24, 3, 1), (16, 2, 4), (32, 4, 8)]  # (dim, num_heads, sr_ratio)

    def body() -> str:
        cases = 0
        for args in configs:
            student, ref = build(Student, EfficientSelfAttention, args[:1],
                                 dict(num_heads=args[1], sr_ratio=args[2]), title)
            if "return_attention" not in inspect.signature(student.forward).parameters:
                raise fail(title, "forward has no return_attention argument",
                           extra="Keep the skeleton's signature forward(self, x, hw, return_attention=False)"
                                 " and return (out, attn) when it is True.")

            def case(seed, hw):
                x = randn(2, hw[0] * hw[1], args[0], seed=seed)
                where = (f"for x of shape {tuple(x.shape)}, hw={hw} "
                         f"(dim={args[0]}, num_heads={args[1]}, sr_ratio={args[2]})")
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
                f"included (square and non-square, sr_ratio {_listed(c[2] for c in configs)})")

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
        student, ref = build(Student, MixFFN, (8, 32), {}, title)

        def case(seed, hw):
            x = randn(2, hw[0] * hw[1], 8, seed=seed)
            planted = {m_id: (lambda kw=kw: variants.mix_ffn(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
            return (x, hw), f"for x of shape {tuple(x.shape)}, hw={hw}", planted

        n = compare_on_grids(title, student, ref, _GRIDS, case)
        return f"matches segformer_lite.MixFFN on {n} inputs (square and non-square)"

    run_check(title, body)


def check_block(Student: type) -> None:
    """Check ``Student(dim, num_heads, sr_ratio, drop_path=p)`` (layers ``norm1``, ``attn``,
    ``norm2``, ``ffn``, ``drop_path``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``,
    in eval mode and, with DropPath active, in training mode."""
    title = "Block"
    knobs = {"post_norm": dict(post_norm=True), "no_attn_residual": dict(attn_residual=False),
             "no_ffn_residual": dict(ffn_residual=False), "norm1_twice": dict(norm1_twice=True),
             "parallel_branches": dict(parallel=True), "no_drop_path": dict(drop_path=False)}
    configs = [(16, 2, 2), (16, 1, 8)]  # (dim, num_heads, sr_ratio)

    def body() -> str:
        n = 0
        for args in configs:
            student, ref = build(Student, Block, args, {"drop_path": 0.5}, title)

            def case(seed, hw):
                x = randn(2, hw[0] * hw[1], 16, seed=seed)
                planted = {m_id: (lambda kw=kw: variants.block(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
                return (x, hw), f"for x of shape {tuple(x.shape)}, hw={hw}, sr_ratio={args[2]} (eval mode)", planted

            n += compare_on_grids(title, student, ref, _grids(args[2]), case)
        # training mode, stage 1's sr_ratio: DropPath draws one mask per branch; same seed -> same masks
        student, ref = (m.train() for m in build(Student, Block, (16, 1, 8), {"drop_path": 0.5}, title))
        x, hw = randn(8, 24 * 16, 16, seed=5), (16, 24)

        def seeded(fn: Callable, *args, **kwargs):
            torch.manual_seed(1234)
            return fn(*args, **kwargs)

        where = f"for x of shape {tuple(x.shape)}, hw={hw} (training mode, drop_path=0.5)"
        localise.set_case(student, ref, (x, hw), run=seeded)
        got = call(seeded, student, x, hw, title=title, where=where)
        planted = {m_id: (lambda kw=kw: seeded(variants.block, ref, x, hw, **kw)) for m_id, kw in knobs.items()}
        compare(title, got, seeded(ref, x, hw), where, planted)
        return (f"matches segformer_lite.Block on {n + 1} inputs (square, non-square, "
                f"sr_ratio {_listed(c[2] for c in configs)}, training mode)")

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


def check_mix_transformer(Student: type) -> None:
    """Check ``Student(cfg)`` (layer ``stages``) whose ``forward(images)`` returns the list of
    the four stages' feature maps ``[(B, C_i, H_i, W_i)]``: the stage loop of notebook 05."""
    title = "MixTransformer"
    knobs = {"stage_no_norm": dict(norm=False), "unflatten_no_permute": dict(layout="reshape"),
             "encoder_chains_tokens": dict(chain="tokens"), "encoder_not_chained": dict(chain="input")}

    def body() -> str:
        student, ref = build(Student, MixTransformer, (_TINY,), {}, title)

        def case(seed, hw):
            x = randn(2, 3, *hw, seed=seed)
            planted = {m_id: (lambda kw=kw: variants.encoder(ref, x, **kw)) for m_id, kw in knobs.items()}
            return (x,), f"for images of shape {tuple(x.shape)}", planted

        def accept(got, expected, where):
            if isinstance(got, torch.Tensor):
                mistakes = ["encoder_last_only"] if close(got, expected[-1]) else []
                raise fail(title, f"forward must return a list of {_TINY.num_stages} feature maps, "
                                  f"got a {describe(got)}", mistakes)
            return got

        n = compare_on_grids(title, student, ref, _IMAGE_SIZES, case, sqrt_hw_on_error=False, accept=accept,
                             name="forward's result",
                             items=tuple(f"stage {i + 1}'s feature map" for i in range(_TINY.num_stages)))
        return f"matches segformer_lite.MixTransformer on {n} batches of 2 images (square and non-square)"

    run_check(title, body)


# square; non-square; sides that are not multiples of 32, so the stage grids round up (10, 5, 3, 2)
_DECODER_IMAGES = [(64, 64), (64, 96), (40, 72)]


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
    """Check ``Student(in_dims, num_classes, decoder_dim)`` (layers ``linear_c``, ``fuse``, ``norm``,
    ``dropout``, ``classifier``) whose ``forward(feats)``, ``feats`` the four stage maps
    ``[(B, C_i, H_i, W_i)]``, returns the logits ``(B, num_classes, H_1, W_1)`` (eval mode)."""
    title = "AllMLPDecoder"
    knobs = {"decoder_concat_order": dict(order="shallowest_first"), "decoder_full_size": dict(size="image"),
             "decoder_align_corners": dict(align_corners=True), "decoder_no_norm": dict(norm=False),
             "decoder_no_relu": dict(relu=False), "decoder_linear_axis": dict(layout="reshape"),
             "decoder_linear_axis_out": dict(layout="reshape_out")}  # an alias (mistakes.ALIASES)
    raising = {"decoder_scale_factor": dict(size="scale_factor")}  # runs only on multiples of 32

    def body() -> str:
        student, ref = build(Student, AllMLPDecoder, (_TINY.embed_dims, 5, 12), {}, title)
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
                got = call(student, feats, title=title, where=where)
            except Report as report:  # the learner's code raised: does a planted variant raise alike?
                cause = report.__cause__
                named = [m_id for m_id, kw in raising.items()
                         if raises_alike(lambda kw=kw: variants.all_mlp_decoder(ref, feats, **kw), cause)]
                if not named:
                    raise
                raise fail(title, f"raised {type(cause).__name__} {where}: {cause}", named) from cause
            compare(title, got, ref(feats), where, planted, name="the logits")
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
        return (f"matches segformer_lite.AllMLPDecoder on {len(_DECODER_IMAGES)} inputs "
                "(batch 2, square and non-square, sides not multiples of 32), and with the shipped head's "
                "trained weights gives sl.SegFormer's logits on two 300x451 photos")

    run_check(title, body)

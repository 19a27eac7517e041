"""The decoder's checker (notebook 06): ``check_all_mlp_decoder``, with the dropout both modules share.

The head is compared on the stage maps of three image sizes in eval mode, then in training mode
with the same dropout mask for both (:func:`dropout_by_shape`, which notebook 06's hidden tests
use too; the planted variants run there as well, so a dropout in the wrong place is named), then with the shipped model's trained head weights on two photos, where it must give
``sl.SegFormer``'s logits (:func:`_shipped_photos`, loaded once per session).
"""
from __future__ import annotations

import contextlib
import functools
import itertools

import torch
import torch.nn.functional as F

from ...config import MiTConfig
from ...decoder import AllMLPDecoder
from ...grid import stage_grid_sizes
from . import localise, variants
from .harness import Report, call, compare, fail, randn, raises_alike, run_check
from .layers import build
from .passes import gradients, in_float64, on_another_device, other_batch

_TINY = MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1),
                  drop_path_rate=0.0)

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
             "decoder_relu_before_norm": dict(relu_first=True), "decoder_norm_twice": dict(norm_twice=True),
             "decoder_no_norm_no_relu": dict(norm=False, relu=False),
             "decoder_linear_axis_out": dict(layout="reshape_out"),  # an alias (mistakes.ALIASES)
             **{f"decoder_interp_{mode}": dict(mode=mode) for mode in ("nearest", "bicubic", "area")},
             # every other order of the four blocks (named by their stage indices, 0 = stage 1)
             **{f"decoder_concat_{''.join(map(str, order))}": dict(order=order)
                for order in itertools.permutations(range(4)) if order not in ((3, 2, 1, 0), (0, 1, 2, 3))}}
    # in training mode too: dropout, the identity in eval mode, shows where it sits
    training = {**knobs, "decoder_dropout_after_classifier": dict(dropout_at="logits")}
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
        if not localise.failing():  # its layers, however written, compute what the reference's do together
            localise.layers_differ(None)
        gradients(title, student, ref, (feats,), where, "the logits")
        in_float64(title, student, ref, (feats,), where, "the logits")
        on_another_device(title, student, ref, (feats,), where, "the logits")
        other_batch(title, student, ref, (feats,), where, name="the logits")
        # training mode: BatchNorm on the batch's statistics, dropout=0.3 with the same seed for both
        student.train(), ref.train()

        def seeded(module, maps):
            with dropout_by_shape():
                return module(maps)

        where = where.replace("images, ", "images in training mode (dropout=0.3), ")
        planted = {m_id: (lambda kw=kw: seeded(functools.partial(variants.all_mlp_decoder, ref, training=True, **kw),
                                                feats)) for m_id, kw in training.items()}
        localise.set_case(student, ref, (feats,), run=seeded)
        with torch.no_grad():
            got = call(seeded, student, feats, title=title, where=where)
            compare(title, got, seeded(ref, feats), where, planted, name="the logits")
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
                "and non-square, sides not multiples of 32, training mode with dropout=0.3), gradients, "
                "float64 and the device kept, and with the shipped head's trained weights gives sl.SegFormer's logits on "
                "two 300x451 photos")

    run_check(title, body)

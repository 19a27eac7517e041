"""What the skeleton names, per exercise: where :mod:`localise` hooks a module and what it says.

A :class:`Plan` per kind of module (:data:`PLANS`, by the reference's class) or per function
(:data:`FUNCTION_PLANS`): which submodules to hook (the skeleton's named layers), the keywords
that expose the contract's optional outputs, a label per returned item and where it is made, and
what the skeleton does just before each point, said when the first difference is there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ...attention import EfficientSelfAttention
from ...block import Block
from ...decoder import AllMLPDecoder
from ...encoder import MixTransformer, Stage
from ...mix_ffn import MixFFN
from ...patch_embed import OverlapPatchEmbed
from ...tokens import image_to_tokens, tokens_to_image


@dataclass(frozen=True)
class Plan:
    """How to localise a mistake in one kind of module.

    ``depth``: hook the submodules whose path has this many names (list indices aside);
    ``kwargs``: extra keywords for ``forward`` (the contract's optional outputs); ``outputs``: a
    label per item of the returned tuple or list and the hooked call before which it is made
    (``None``: at the end; ``"{i+1}"`` in the call's name is the next item's index);
    ``steps``: what the skeleton does just before each point (``in:<path>`` with ``*`` for any
    index, an output's label), said when the first difference is there.
    """
    depth: int = 1
    kwargs: dict = field(default_factory=dict)
    outputs: tuple[tuple[str, str | None], ...] = (("the output", None),)
    steps: dict[str, str] = field(default_factory=dict)


_TOKENS_IN = "the input x"
PLANS: dict[type, Plan] = {
    OverlapPatchEmbed: Plan(outputs=(("the tokens", None), ("the grid", None)), steps={
        "in:proj": "the images", "in:norm": "flattening proj's map (B, C, H', W') to tokens (B, H'*W', C), row by row",
        "the tokens": "what forward returns after norm",
        "the grid": "the grid (H', W'): proj's map's height and width, as a tuple of two ints"}),
    EfficientSelfAttention: Plan(
        kwargs={"return_attention": True},
        outputs=(("the output", None), ("the attention weights", "proj")), steps={
            "in:q": _TOKENS_IN, "in:sr": "putting the tokens x (B, N, C) on their grid hw as an image (B, C, H, W)",
            "in:norm": "flattening sr's map (B, C, H/sr, W/sr) back to tokens (B, M, C)",
            "in:kv": "the tokens keys and values come from: x itself when sr_ratio is 1, else norm's output",
            "the attention weights": "splitting q and kv's output into heads (keys: kv's first dim outputs, "
                                     "values: the last dim), q @ k^T, the scale and the softmax over the keys",
            "in:proj": "attn @ v and merging the heads back to (B, N, C)",
            "the output": "what forward returns after proj"}),
    MixFFN: Plan(steps={
        "in:fc1": _TOKENS_IN, "in:dwconv": "putting fc1's tokens (B, N, hidden) on the grid hw as an image "
                                           "(B, hidden, H, W)",
        "in:fc2": "flattening dwconv's map back to tokens (B, N, hidden), then the GELU",
        "the output": "what forward returns after fc2 (no residual here: the Block adds it)"}),
    Block: Plan(steps={
        "in:norm1": _TOKENS_IN, "in:attn": "norm1 on the block's input (and the grid hw)",
        "in:drop_path": "the branch's output (attn's, then ffn's)",
        "in:norm2": "the attention branch's residual: x + drop_path(attn(norm1(x), hw))",
        "in:ffn": "norm2 on the attention branch's result (and the grid hw)",
        "the output": "the Mix-FFN branch's residual: x + drop_path(ffn(norm2(x), hw))"}),
    Stage: Plan(steps={
        "in:patch_embed": "the input map", "in:blocks.0": "the patch embedding's tokens and grid",
        "in:blocks.*": "the previous block's tokens and the grid", "in:norm": "the last block's tokens",
        "the output": "norm's tokens put back on the grid as a map (B, C, H, W)"}),
    MixTransformer: Plan(
        depth=2, outputs=tuple((f"stage {i + 1}'s feature map", f"stages.{i + 1}.patch_embed") for i in range(4)),
        steps={"in:stages.0.patch_embed": "the images",
               "in:stages.*.patch_embed": "the previous stage's feature map: its tokens after norm, back on "
                                          "the grid as (B, C, H, W)",
               "in:stages.*.blocks.0": "the patch embedding's tokens and grid",
               "in:stages.*.blocks.*": "the previous block's tokens and the grid",
               "in:stages.*.norm": "the stage's last block's tokens",
               **{f"stage {i + 1}'s feature map": f"stage {i + 1}'s tokens after norm, put back on the grid as "
                                                  f"(B, C_{i + 1}, H_{i + 1}, W_{i + 1}) and collected in the list"
                  for i in range(4)}}),
    AllMLPDecoder: Plan(outputs=(("the logits", None),), steps={
        "in:linear_c.*": "that stage's map (B, C_i, H_i, W_i) moved channels last, (B, H_i*W_i, C_i)",
        "in:fuse": "each Linear's tokens put back on their grid (B, D, H_i, W_i), upsampled to one "
                   "common grid and concatenated along the channels",
        "in:norm": "fuse's output", "in:dropout": "the ReLU after norm", "in:classifier": "dropout's output",
        "the logits": "what forward returns after classifier"}),
}


FUNCTION_PLANS: dict[Callable, Plan] = {
    image_to_tokens: Plan(outputs=(("the tokens", None), ("the grid", None))),
    tokens_to_image: Plan(outputs=(("the image", None),)),
}


def _plan(reference: Any) -> Plan:
    if not isinstance(reference, nn.Module):
        return FUNCTION_PLANS.get(reference, Plan())
    return next((p for cls, p in PLANS.items() if isinstance(reference, cls)), Plan())


def _shown(path: str) -> str:
    """linear_c.2 -> linear_c[2]; stages.0.blocks.1 -> stages[0].blocks[1]."""
    return re.sub(r"\.(\d+)", r"[\1]", path)


def _hooked(module: nn.Module, depth: int) -> list[str]:
    return [name for name, m in module.named_modules() if name and not isinstance(m, (nn.ModuleList, nn.Sequential))
            and len([p for p in name.split(".") if not p.isdigit()]) == depth]

"""Checkers for the course's exercises: run the learner's module beside the package's and say
what is wrong, not just that something is.

Each ``check_<exercise>(Student)`` builds the learner's module and the package's reference with
the same constructor arguments, copies the reference's weights into the learner's, and compares
outputs on fresh random inputs of several shapes, square and non-square. Three outcomes:

* right: prints one line starting with ``✓`` and returns ``None``;
* unfinished (``forward`` raises ``NotImplementedError``): prints "... not implemented yet" to
  **stderr** and returns ``None``. The notebook keeps running top to bottom, and nbgrader, which
  scores a graded cell zero when it writes to stderr, gives the exercise no points;
* wrong: raises ``AssertionError`` whose message names the likely mistake and its fix.

The diagnosis is empirical: each exercise has a catalogue of classic mistakes (``MISTAKES``),
each one re-implemented here as a "planted variant" that runs on the reference's weights. When
the learner's output differs from the reference, the variant whose output it reproduces names
the mistake. The variants are plain ``torch`` code, written independently of the package.
"""
from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import EfficientSelfAttention
from ..block import Block
from ..config import MiTConfig
from ..encoder import MixTransformer, Stage
from ..mix_ffn import MixFFN
from ..patch_embed import OverlapPatchEmbed
from ..tokens import image_to_tokens, tokens_to_image

__all__ = ["MISTAKES", "Mistake", "check_overlap_patch_embed", "check_image_to_tokens",
           "check_tokens_to_image", "check_tokens", "check_efficient_self_attention",
           "check_mix_ffn", "check_block", "check_stage", "check_mix_transformer"]

ATOL, RTOL = 1e-5, 1e-4


@dataclass(frozen=True)
class Mistake:
    title: str  # what the learner did, in a few words; tests look for it in the message
    fix: str  # how to put it right


MISTAKES: dict[str, Mistake] = {m_id: Mistake(*text) for m_id, text in {
    # overlapping patch embedding
    "no_padding": ("the patch-embedding convolution has no padding, so the token grid is too small",
                   "pad by patch_size // 2 (Conv2d(..., padding=patch_size // 2)): SegFormer's grid is "
                   "ceil(H / stride) x ceil(W / stride)"),
    "embed_no_norm": ("the LayerNorm after the patch-embedding convolution is missing",
                      "return self.norm(tokens), not the raw tokens"),
    "flatten_no_permute": ("the feature map was reshaped to tokens without moving channels last",
                           "x.reshape(B, H*W, C) mixes channels into tokens; use "
                           "x.flatten(2).transpose(1, 2) or rearrange(x, 'b c h w -> b (h w) c')"),
    "column_major": ("the tokens are in column-major order (w before h)",
                     "flatten rows first: token n is pixel (n // W, n % W); use 'b c h w -> b (h w) c'"),
    "hw_swapped": ("H and W are swapped",
                   "keep the grid as (H, W) = (rows, columns), e.g. h, w = x.shape[-2:]"),
    # tokens -> image
    "unflatten_no_permute": ("the tokens were reshaped to an image without moving channels first",
                             "tokens.reshape(B, C, H, W) scrambles channels and pixels; use "
                             "tokens.transpose(1, 2).reshape(B, C, H, W) or "
                             "rearrange(t, 'b (h w) c -> b c h w', h=H, w=W)"),
    "sqrt_hw": ("H and W are computed as sqrt(N), which is only right for square grids",
                "use the (H, W) that travels with the tokens (the hw argument), never sqrt(N)"),
    # efficient self-attention
    "heads_over_tokens": ("the heads are split over tokens instead of channels",
                          "reshape (B, N, C) to (B, N, heads, C // heads) and then permute to "
                          "(B, heads, N, d), e.g. rearrange(q, 'b n (h d) -> b h n d'); a plain "
                          "reshape to (B, heads, N, d) hands each head a block of tokens"),
    "merge_no_permute": ("the heads are merged back without moving the head axis next to d",
                         "(B, heads, N, d) -> (B, N, heads*d) needs a transpose(1, 2) before the "
                         "reshape, e.g. rearrange(out, 'b h n d -> b n (h d)')"),
    "no_scale": ("the attention scores are not scaled by head_dim ** -0.5",
                 "multiply q @ k^T by self.scale = (dim // num_heads) ** -0.5 before the softmax"),
    "scale_dim": ("the scores are scaled by dim ** -0.5 instead of head_dim ** -0.5",
                  "each head's dot product has head_dim = dim // num_heads terms: scale by "
                  "(dim // num_heads) ** -0.5"),
    "softmax_axis": ("the softmax runs over the wrong axis (queries instead of keys)",
                     "normalise over the keys, the last axis: scores.softmax(dim=-1)"),
    "conv_channels_last": ("the sequence-reduction Conv2d got a channels-last tensor "
                           "(reshape without permute)",
                           "Conv2d wants (B, C, H, W): use x.transpose(1, 2).reshape(B, C, H, W) "
                           "(or tokens_to_image(x, hw)) before self.sr and flatten back with "
                           ".flatten(2).transpose(1, 2)"),
    "sr_no_norm": ("the LayerNorm after the sequence-reduction conv is missing",
                   "apply self.norm to the reduced tokens before self.kv"),
    "no_reduction": ("keys and values come from all N tokens: the sequence reduction is skipped",
                     "when sr_ratio > 1 compute kv from self.norm(self.sr(image)) tokens"),
    "kv_swapped": ("K and V are swapped when splitting the fused kv projection",
                   "the first dim outputs of self.kv are K, the last dim are V"),
    "no_proj": ("the output projection self.proj is not applied",
                "end with self.proj(out) after merging the heads"),
    # Mix-FFN
    "dwconv_no_groups": ("the depthwise convolution is a full convolution (groups missing)",
                         "use nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden): one 3x3 "
                         "filter per channel"),
    "gelu_before_dwconv": ("GELU is applied before the depthwise conv instead of after it",
                           "the order is fc1 -> dwconv -> GELU -> fc2"),
    "gelu_after_fc2": ("GELU is applied after fc2 instead of after the depthwise conv",
                       "the order is fc1 -> dwconv -> GELU -> fc2"),
    "no_gelu": ("the GELU activation is missing",
                "apply F.gelu (exact, not tanh) between the depthwise conv and fc2"),
    "relu": ("ReLU is used instead of GELU", "use F.gelu (exact erf form, torch's default)"),
    "gelu_tanh": ("GELU uses the tanh approximation",
                  "SegFormer uses the exact GELU: F.gelu(x) without approximate='tanh'"),
    "no_dwconv": ("the depthwise convolution is skipped",
                  "reshape the fc1 output to (B, hidden, H, W), apply self.dwconv, flatten back"),
    "ffn_residual": ("Mix-FFN adds its own residual",
                     "return fc2(...) only; the residual connection belongs to the Block"),
    # Block
    "post_norm": ("the block is post-norm (LayerNorm after the residual add)",
                  "MiT is pre-norm: x = x + attn(norm1(x)), then x = x + ffn(norm2(x))"),
    "no_attn_residual": ("the attention branch has no residual connection",
                         "add the input back: x = x + drop_path(attn(norm1(x), hw))"),
    "no_ffn_residual": ("the Mix-FFN branch has no residual connection",
                        "add the input back: x = x + drop_path(ffn(norm2(x), hw))"),
    "norm1_twice": ("norm1 is used for both branches (norm2 is never used)",
                    "the Mix-FFN branch has its own LayerNorm: ffn(norm2(x), hw)"),
    "parallel_branches": ("Mix-FFN reads the block's input instead of the attention branch's result",
                          "update x after attention, then feed that x to norm2 and the FFN"),
    "no_drop_path": ("DropPath is not applied to the residual branches",
                     "wrap both branches: x = x + self.drop_path(...)"),
    # Stage and encoder
    "stage_no_norm": ("the stage's final LayerNorm is missing",
                      "apply self.norm to the tokens after the last block"),
    "stage_returns_tokens": ("the stage returns tokens instead of a feature map",
                             "turn the tokens back into (B, C, H, W) with tokens_to_image(x, hw)"),
    "encoder_last_only": ("the encoder returns only the last feature map",
                          "collect every stage's output in a list and return all of them"),
    "encoder_not_chained": ("each stage is fed the input images instead of the previous "
                            "stage's feature map",
                            "x = stage(x) in the loop: stage i+1 reads stage i's output"),
}.items()}


class _Unfinished(Exception):
    """The learner's code raised NotImplementedError."""


class _Report(AssertionError):
    pass


def _fail(title: str, what: str, mistakes: list[str] = (), extra: str = "") -> _Report:
    lines = [f"{title}: {what}"]
    if mistakes:
        for m_id in dict.fromkeys(mistakes):
            m = MISTAKES[m_id]
            lines += [f"Likely mistake: {m.title}.", f"  How to fix: {m.fix}."]
    elif extra:
        lines.append(extra)
    else:
        lines.append("No catalogued mistake reproduces your output. Print the shape of every "
                     "intermediate tensor and compare with the notebook's shape trace.")
    return _Report("\n".join(lines))


def _run_check(title: str, body: Callable[[], str]) -> None:
    """Run one checker body; translate NotImplementedError into the "not implemented" note."""
    try:  # fork_rng: checking must not move the notebook's random stream
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            summary = body()
    except _Unfinished:
        print(f"{title}: not implemented yet (forward raises NotImplementedError). "
              "Write it, then re-run this cell.", file=sys.stderr)
        return
    print(f"✓ {title}: {summary}")


def _call(fn: Callable, *args, title: str, where: str, on_error: list[str] = ()):
    """Call the learner's code; NotImplementedError means unfinished, any other error fails."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _Unfinished from None
    except Exception as e:  # the learner's bug, reported with a hint instead of a traceback
        raise _fail(title, f"raised {type(e).__name__} {where}: {e}", on_error) from e


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=ATOL, rtol=RTOL)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


# half-made versions of a catalogued mistake (e.g. only one of two reshapes wrong) -> its id
_ALIASES = {"heads_over_tokens_split_only": "heads_over_tokens", "heads_over_token_blocks": "heads_over_tokens",
            "conv_channels_last_out": "conv_channels_last"}


def _matching(got: Any, variants: dict[str, Callable[[], Any]]) -> list[str]:
    """The ids of the catalogued mistakes whose planted variant's output equals ``got``."""
    found = []
    for m_id, make in variants.items():
        try:
            out = make()
        except Exception:  # a variant that cannot run on this input (e.g. sqrt(N) not whole)
            continue
        if _close(got, out):
            found.append(_ALIASES.get(m_id, m_id))
    return found


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return type(x).__name__ + " of " + ", ".join(_describe(v) for v in x)
    return repr(x)


def _diff(got: Any, expected: torch.Tensor) -> str:
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        return f"max |difference| {(got.float() - expected.float()).abs().max().item():.2e}"
    return f"expected a {_describe(expected)}, got a {_describe(got)}"


def _build(Student: type, Reference: type, args: tuple, kwargs: dict, title: str,
           structural: Callable[[nn.Module], list[str]] | None = None):
    """Build both modules with the same arguments and give the learner the reference's weights."""
    torch.manual_seed(0)
    ref = Reference(*args, **kwargs)
    _randomize(ref)
    try:
        student = Student(*args, **kwargs)
    except NotImplementedError:
        raise _Unfinished from None
    except Exception as e:
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise _fail(title, f"building {Student.__name__}({shown}) raised {type(e).__name__}: {e}",
                    extra=f"Keep the skeleton's constructor: it takes the same arguments as "
                          f"segformer_lite.{Reference.__name__}.") from e
    if not isinstance(student, nn.Module):
        raise _fail(title, f"{Student.__name__} is not a torch.nn.Module",
                    extra="Subclass nn.Module and call super().__init__() first.")
    mistakes = structural(student) if structural else []
    if mistakes:
        raise _fail(title, "the layers built in __init__ differ from the reference", mistakes)
    try:
        student.load_state_dict(ref.state_dict())
    except RuntimeError as e:
        raise _fail(title, f"its parameters do not match segformer_lite.{Reference.__name__}'s:\n{e}",
                    extra="Keep the skeleton's layer names and shapes in __init__ "
                          "(only forward is yours to write).") from e
    return student.eval(), ref.eval()


@torch.no_grad()
def _randomize(module: nn.Module) -> None:
    """Random LayerNorm affine parameters and biases, so that no mistake hides behind an
    identity scale or a zero bias."""
    g = torch.Generator().manual_seed(1)
    for name, p in module.named_parameters():
        if name.endswith("bias") or "norm" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "norm" in name and
                                                                name.endswith("weight") else 0.0))


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _compare(title: str, got: Any, expected: Any, where: str, variants: dict[str, Callable[[], Any]],
             square_passed: bool, square: bool) -> None:
    if _close(got, expected):
        return
    found = _matching(got, variants)
    if not found and square_passed and not square:
        found = ["sqrt_hw"]  # right on square grids, wrong on this one: the grid was guessed
    what = f"wrong output {where} ({_diff(got, expected)})"
    raise _fail(title, what, found)


# --- planted variants: the reference computation with one knob turned ---------------------------

def _to_tokens(x: torch.Tensor, how: str = "permute") -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) done right ("permute") or in one of the classic wrong ways."""
    b, c, h, w = x.shape
    if how == "reshape":
        return x.reshape(b, h * w, c)
    if how == "column":
        return x.transpose(2, 3).flatten(2).transpose(1, 2)
    return x.flatten(2).transpose(1, 2)


def _to_image(t: torch.Tensor, hw: tuple[int, int], how: str = "permute") -> torch.Tensor:
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


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _patch_embed(m: OverlapPatchEmbed, x: torch.Tensor, pad: bool = True, norm: bool = True,
                 flatten: str = "permute", swap_hw: bool = False):
    conv = m.proj
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.kernel_size[0] // 2 if pad else 0)
    h, w = y.shape[-2:]
    t = _to_tokens(y, flatten)
    if norm:
        t = _layer_norm(t, m.norm)
    return t, ((w, h) if swap_hw else (h, w))


def _attention(m: EfficientSelfAttention, x: torch.Tensor, hw: tuple[int, int], split: str = "channels",
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
        # layout: "permute" (right), "reshape" (no permute either way), "reshape_out" (only on
        # the way back to tokens), "sqrt" or "swap" (wrong grid)
        img = _to_image(x, hw, layout if layout in ("reshape", "sqrt", "swap") else "permute")
        red = _to_tokens(F.conv2d(img, m.sr.weight, m.sr.bias, m.sr.stride),
                         "reshape" if layout in ("reshape", "reshape_out") else "permute")
        kv_in = _layer_norm(red, m.norm) if sr_norm else red
    kv = F.linear(kv_in, m.kv.weight, m.kv.bias)
    k, v = kv[..., :c], kv[..., c:]
    if kv_order == "vk":
        k, v = v, k
    k, v = split_heads(k), split_heads(v)
    s = {"head": d ** -0.5, "dim": c ** -0.5, "none": 1.0}[scale]
    attn = (q @ k.transpose(-2, -1) * s).softmax(dim=softmax_dim)
    out = attn @ v  # (B, heads, N, d)
    out = out.reshape(b, n, c) if merge == "reshape" else out.permute(0, 2, 1, 3).reshape(b, n, c)
    return F.linear(out, m.proj.weight, m.proj.bias) if proj else out


def _mix_ffn(m: MixFFN, x: torch.Tensor, hw: tuple[int, int], act_at: str = "dwconv",
             act: str = "gelu", layout: str = "permute", dwconv: bool = True,
             residual: bool = False) -> torch.Tensor:
    activation = {"gelu": F.gelu, "relu": F.relu,
                  "tanh": lambda t: F.gelu(t, approximate="tanh")}[act]
    y = F.linear(x, m.fc1.weight, m.fc1.bias)
    if act_at == "fc1":
        y = activation(y)
    if dwconv:
        conv = m.dwconv
        img = F.conv2d(_to_image(y, hw, layout), conv.weight, conv.bias, padding=1, groups=conv.groups)
        y = _to_tokens(img, "reshape" if layout == "reshape" else "permute")
    if act_at == "dwconv":
        y = activation(y)
    y = F.linear(y, m.fc2.weight, m.fc2.bias)
    if act_at == "fc2":
        y = activation(y)
    return x + y if residual else y


def _block(m: Block, x: torch.Tensor, hw: tuple[int, int], post_norm: bool = False,
           attn_residual: bool = True, ffn_residual: bool = True, norm1_twice: bool = False,
           parallel: bool = False, drop_path: bool = True) -> torch.Tensor:
    dp = m.drop_path if drop_path else (lambda t: t)
    norm2 = m.norm1 if norm1_twice else m.norm2
    if post_norm:
        x = m.norm1(x + dp(m.attn(x, hw)))
        return norm2(x + dp(m.ffn(x, hw)))
    y = dp(m.attn(m.norm1(x), hw))
    x_attn = x + y if attn_residual else y
    ffn_in = x if parallel else x_attn
    z = dp(m.ffn(norm2(ffn_in), hw))
    return x_attn + z if ffn_residual else z


# --- the checkers --------------------------------------------------------------------------------

def check_overlap_patch_embed(Student: type) -> None:
    """Check ``Student(in_channels, embed_dim, patch_size, stride)`` (layers ``proj``, ``norm``)
    whose ``forward(images)`` returns ``(tokens (B, H'*W', C), (H', W'))``."""
    title = "OverlapPatchEmbed"

    def body() -> str:
        cases = 0
        for args, sizes in [((3, 8, 7, 4), [(32, 32), (30, 45)]), ((8, 16, 3, 2), [(12, 12), (9, 14)])]:
            student, ref = _build(Student, OverlapPatchEmbed, args, {}, title)
            square_passed = False
            for seed, (h, w) in enumerate(sizes):
                x = _randn(2, args[0], h, w, seed=seed)
                where = f"for images of shape {tuple(x.shape)} (kernel {args[2]}, stride {args[3]})"
                got = _call(student, x, title=title, where=where)
                if not (isinstance(got, (tuple, list)) and len(got) == 2):
                    raise _fail(title, f"forward must return (tokens, (H, W)), got a {_describe(got)}",
                                extra="Return the tokens and the grid: return self.norm(tokens), (h, w).")
                got = (got[0], _as_hw(got[1], title))
                variants = {"no_padding": lambda: _patch_embed(ref, x, pad=False),
                            "embed_no_norm": lambda: _patch_embed(ref, x, norm=False),
                            "flatten_no_permute": lambda: _patch_embed(ref, x, flatten="reshape"),
                            "column_major": lambda: _patch_embed(ref, x, flatten="column"),
                            "hw_swapped": lambda: _patch_embed(ref, x, swap_hw=True)}
                _compare(title, got, ref(x), where, variants, square_passed, h == w)
                square_passed |= h == w
                cases += 1
        return f"matches segformer_lite.OverlapPatchEmbed on {cases} inputs (square and non-square)"

    _run_check(title, body)


def _as_hw(hw: Any, title: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError):
        raise _fail(title, f"the grid must be a pair of ints (H, W), got {hw!r}",
                    extra="Read it from the feature map: h, w = x.shape[-2:].") from None
    return h, w


_GRIDS = [(8, 8), (4, 16), (6, 10)]  # square; non-square with a square N (sqrt(N) runs, wrongly); neither


def check_image_to_tokens(image_to_tokens_fn: Callable) -> None:
    """Check ``image_to_tokens_fn(x (B, C, H, W)) -> (tokens (B, H*W, C), (H, W))``."""
    title = "image_to_tokens"

    def body() -> str:
        square_passed = False
        for seed, (h, w) in enumerate(_GRIDS):
            x = _randn(2, 5, h, w, seed=seed)
            where = f"for x of shape {tuple(x.shape)}"
            got = _call(image_to_tokens_fn, x, title=title, where=where)
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise _fail(title, f"must return (tokens, (H, W)), got a {_describe(got)}",
                            extra="Return both: the grid travels with the tokens.")
            got = (got[0], _as_hw(got[1], title))
            variants = {"flatten_no_permute": lambda: (_to_tokens(x, "reshape"), (h, w)),
                        "column_major": lambda: (_to_tokens(x, "column"), (h, w)),
                        "hw_swapped": lambda: (_to_tokens(x), (w, h))}
            _compare(title, got, image_to_tokens(x), where, variants, square_passed, h == w)
            square_passed |= h == w
        return f"matches segformer_lite.image_to_tokens on {len(_GRIDS)} grids (square and non-square)"

    _run_check(title, body)


def check_tokens_to_image(tokens_to_image_fn: Callable) -> None:
    """Check ``tokens_to_image_fn(tokens (B, N, C), (H, W)) -> (B, C, H, W)``."""
    title = "tokens_to_image"

    def body() -> str:
        square_passed = False
        for seed, hw in enumerate(_GRIDS):
            t = _randn(2, hw[0] * hw[1], 5, seed=seed)
            where = f"for tokens of shape {tuple(t.shape)} and hw={hw}"
            got = _call(tokens_to_image_fn, t, hw, title=title, where=where,
                        on_error=[] if hw[0] == hw[1] else ["sqrt_hw"])
            variants = {m_id: (lambda how=how: _to_image(t, hw, how)) for m_id, how in
                        [("unflatten_no_permute", "reshape"), ("sqrt_hw", "sqrt"),
                         ("hw_swapped", "swap"), ("column_major", "column")]}
            _compare(title, got, tokens_to_image(t, hw), where, variants, square_passed, hw[0] == hw[1])
            square_passed |= hw[0] == hw[1]
        return f"matches segformer_lite.tokens_to_image on {len(_GRIDS)} grids (square and non-square)"

    _run_check(title, body)


def check_tokens(image_to_tokens_fn: Callable, tokens_to_image_fn: Callable) -> None:
    """Check both helpers, then that they undo each other on a non-square image."""
    check_image_to_tokens(image_to_tokens_fn)
    check_tokens_to_image(tokens_to_image_fn)
    title = "image <-> tokens round trip"

    def body() -> str:
        x = _randn(2, 5, 6, 10, seed=7)
        tokens, hw = _call(image_to_tokens_fn, x, title=title, where="on a 6x10 image")
        back = _call(tokens_to_image_fn, tokens, hw, title=title, where="on a 6x10 image")
        if not _close(back, x):
            raise _fail(title, "tokens_to_image(*image_to_tokens(x)) does not give x back",
                        extra="The two reshapes must be exact inverses (same token order).")
        return "tokens_to_image(*image_to_tokens(x)) == x on a 6x10 image"

    _run_check(title, body)


def check_efficient_self_attention(Student: type) -> None:
    """Check ``Student(dim, num_heads, sr_ratio)`` (layers ``q``, ``kv``, ``proj`` and, when
    ``sr_ratio > 1``, ``sr``, ``norm``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``."""
    title = "EfficientSelfAttention"

    def body() -> str:
        cases = 0
        for args in [(16, 2, 2), (24, 3, 1)]:
            student, ref = _build(Student, EfficientSelfAttention, args, {}, title)
            square_passed = False
            for seed, hw in enumerate(_GRIDS):
                x = _randn(2, hw[0] * hw[1], args[0], seed=seed)
                where = (f"for x of shape {tuple(x.shape)}, hw={hw} "
                         f"(dim={args[0]}, num_heads={args[1]}, sr_ratio={args[2]})")
                got = _call(student, x, hw, title=title, where=where,
                            on_error=[] if hw[0] == hw[1] else ["sqrt_hw"])
                knobs = {"heads_over_tokens": dict(split="tokens", merge="reshape"),
                         "merge_no_permute": dict(merge="reshape"), "no_scale": dict(scale="none"),
                         "scale_dim": dict(scale="dim"), "softmax_axis": dict(softmax_dim=-2),
                         "conv_channels_last": dict(layout="reshape"),
                         "sr_no_norm": dict(sr_norm=False), "no_reduction": dict(reduce=False),
                         "kv_swapped": dict(kv_order="vk"), "no_proj": dict(proj=False),
                         "sqrt_hw": dict(layout="sqrt"), "hw_swapped": dict(layout="swap")}
                variants = {m_id: (lambda kw=kw: _attention(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
                variants["heads_over_tokens_split_only"] = lambda: _attention(ref, x, hw, split="tokens")
                variants["heads_over_token_blocks"] = lambda: _attention(ref, x, hw, split="token_blocks",
                                                                         merge="reshape")
                variants["conv_channels_last_out"] = lambda: _attention(ref, x, hw, layout="reshape_out")
                _compare(title, got, ref(x, hw), where, variants, square_passed, hw[0] == hw[1])
                square_passed |= hw[0] == hw[1]
                cases += 1
                if "return_attention" in inspect.signature(student.forward).parameters:
                    got = _call(student, x, hw, True, title=title, where=where + " with return_attention=True")
                    want = ref(x, hw, return_attention=True)
                    if not (isinstance(got, (tuple, list)) and len(got) == 2 and _close(got[1], want[1])):
                        raise _fail(title, "the attention probabilities returned with return_attention=True "
                                           f"differ {where}", extra="Return (out, attn) with attn the "
                                    "softmax of the scaled scores, (B, heads, N, M), that multiplies v.")
        return (f"matches segformer_lite.EfficientSelfAttention on {cases} inputs "
                "(square and non-square, sr_ratio 1 and 2)")

    _run_check(title, body)


def _dwconv_groups(student: nn.Module) -> list[str]:
    conv = getattr(student, "dwconv", None)
    if isinstance(conv, nn.Conv2d) and conv.groups != conv.in_channels:
        return ["dwconv_no_groups"]
    return []


def check_mix_ffn(Student: type) -> None:
    """Check ``Student(dim, hidden_dim)`` (layers ``fc1``, ``dwconv``, ``fc2``) whose
    ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``."""
    title = "MixFFN"

    def body() -> str:
        student, ref = _build(Student, MixFFN, (8, 32), {}, title, structural=_dwconv_groups)
        square_passed = False
        for seed, hw in enumerate(_GRIDS):
            x = _randn(2, hw[0] * hw[1], 8, seed=seed)
            where = f"for x of shape {tuple(x.shape)}, hw={hw}"
            got = _call(student, x, hw, title=title, where=where,
                        on_error=[] if hw[0] == hw[1] else ["sqrt_hw"])
            knobs = {"gelu_before_dwconv": dict(act_at="fc1"), "gelu_after_fc2": dict(act_at="fc2"),
                     "no_gelu": dict(act_at="none"), "relu": dict(act="relu"),
                     "gelu_tanh": dict(act="tanh"), "unflatten_no_permute": dict(layout="reshape"),
                     "no_dwconv": dict(dwconv=False), "ffn_residual": dict(residual=True),
                     "sqrt_hw": dict(layout="sqrt"), "hw_swapped": dict(layout="swap")}
            variants = {m_id: (lambda kw=kw: _mix_ffn(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
            _compare(title, got, ref(x, hw), where, variants, square_passed, hw[0] == hw[1])
            square_passed |= hw[0] == hw[1]
        return f"matches segformer_lite.MixFFN on {len(_GRIDS)} inputs (square and non-square)"

    _run_check(title, body)


def check_block(Student: type) -> None:
    """Check ``Student(dim, num_heads, sr_ratio, drop_path=p)`` (layers ``norm1``, ``attn``,
    ``norm2``, ``ffn``, ``drop_path``) whose ``forward(x (B, N, C), (H, W))`` returns ``(B, N, C)``,
    in eval mode and, with DropPath active, in training mode."""
    title = "Block"

    def body() -> str:
        student, ref = _build(Student, Block, (16, 2, 2), {"drop_path": 0.5}, title)
        knobs = {"post_norm": dict(post_norm=True), "no_attn_residual": dict(attn_residual=False),
                 "no_ffn_residual": dict(ffn_residual=False), "norm1_twice": dict(norm1_twice=True),
                 "parallel_branches": dict(parallel=True), "no_drop_path": dict(drop_path=False)}
        square_passed = False
        for seed, hw in enumerate(_GRIDS):
            x = _randn(2, hw[0] * hw[1], 16, seed=seed)
            where = f"for x of shape {tuple(x.shape)}, hw={hw} (eval mode)"
            got = _call(student, x, hw, title=title, where=where,
                        on_error=[] if hw[0] == hw[1] else ["sqrt_hw"])
            variants = {m_id: (lambda kw=kw: _block(ref, x, hw, **kw)) for m_id, kw in knobs.items()}
            _compare(title, got, ref(x, hw), where, variants, square_passed, hw[0] == hw[1])
            square_passed |= hw[0] == hw[1]
        # training mode: DropPath draws one mask per branch; same seed -> same masks
        student.train(), ref.train()
        x, hw = _randn(8, 24, 16, seed=5), (4, 6)

        def seeded(fn: Callable, *args, **kwargs):
            torch.manual_seed(1234)
            return fn(*args, **kwargs)

        where = f"for x of shape {tuple(x.shape)}, hw={hw} (training mode, drop_path=0.5)"
        got = _call(seeded, student, x, hw, title=title, where=where)
        variants = {m_id: (lambda kw=kw: seeded(_block, ref, x, hw, **kw)) for m_id, kw in knobs.items()}
        _compare(title, got, seeded(ref, x, hw), where, variants, True, True)
        return f"matches segformer_lite.Block on {len(_GRIDS) + 1} inputs (square, non-square, training mode)"

    _run_check(title, body)


_TINY = MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1),
                  drop_path_rate=0.0)
_IMAGE_SIZES = [(64, 64), (64, 96), (40, 72)]


def check_stage(Student: type) -> None:
    """Check ``Student(cfg, i, in_channels, drop_paths)`` (layers ``patch_embed``, ``blocks``,
    ``norm``) whose ``forward(x (B, C_in, H, W))`` returns the feature map ``(B, C_i, H_i, W_i)``."""
    title = "Stage"

    def body() -> str:
        cases = 0
        for i, in_channels in [(0, 3), (1, _TINY.embed_dims[0])]:
            drop_paths = [0.0] * _TINY.depths[i]
            student, ref = _build(Student, Stage, (_TINY, i, in_channels, drop_paths), {}, title)
            square_passed = False
            for seed, (h, w) in enumerate(_IMAGE_SIZES):
                h, w = (h, w) if i == 0 else (h // 4, w // 4)
                x = _randn(2, in_channels, h, w, seed=seed)
                where = f"for stage {i + 1} and input of shape {tuple(x.shape)}"
                got = _call(student, x, title=title, where=where,
                            on_error=[] if h == w else ["sqrt_hw"])
                expected = ref(x)
                if isinstance(got, torch.Tensor) and got.ndim == 3:
                    raise _fail(title, f"wrong output {where} ({_diff(got, expected)})",
                                ["stage_returns_tokens"])

                variants = {"stage_no_norm": lambda: _to_image(*_stage_tokens(ref, x, norm=False)),
                            "unflatten_no_permute": lambda: _to_image(*_stage_tokens(ref, x), "reshape"),
                            "sqrt_hw": lambda: _to_image(*_stage_tokens(ref, x), "sqrt")}
                _compare(title, got, expected, where, variants, square_passed, h == w)
                square_passed |= h == w
                cases += 1
        return f"matches segformer_lite.Stage on {cases} inputs (stages 1 and 2, square and non-square)"

    _run_check(title, body)


def _stage_tokens(stage: Stage, x: torch.Tensor, norm: bool = True):
    """The stage's tokens before they go back to an image: ``((B, N, C), (H, W))``."""
    t, hw = stage.patch_embed(x)
    for block in stage.blocks:
        t = block(t, hw)
    return (_layer_norm(t, stage.norm) if norm else t), hw


def check_mix_transformer(Student: type) -> None:
    """Check ``Student(cfg)`` (layer ``stages``) whose ``forward(images)`` returns the list of
    the four stages' feature maps ``[(B, C_i, H_i, W_i)]``."""
    title = "MixTransformer"

    def body() -> str:
        student, ref = _build(Student, MixTransformer, (_TINY,), {}, title)
        for seed, (h, w) in enumerate(_IMAGE_SIZES):
            x = _randn(1, 3, h, w, seed=seed)
            where = f"for images of shape {tuple(x.shape)}"
            got = _call(student, x, title=title, where=where, on_error=["encoder_not_chained"])
            expected = ref(x)
            if isinstance(got, torch.Tensor):
                mistakes = ["encoder_last_only"] if _close(got, expected[-1]) else []
                raise _fail(title, f"forward must return a list of {_TINY.num_stages} feature maps, "
                                   f"got a {_describe(got)}", mistakes)
            variants = {"encoder_last_only": lambda: [expected[-1]]}
            _compare(title, list(got) if isinstance(got, tuple) else got, expected, where,
                     variants, True, True)
        return f"matches segformer_lite.MixTransformer on {len(_IMAGE_SIZES)} inputs (square and non-square)"

    _run_check(title, body)

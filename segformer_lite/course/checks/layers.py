"""The layers a learner's module builds in ``__init__``, judged by what they compute, not by how
they are written.

:func:`build` makes the learner's module beside the reference with the same arguments and, before
copying the reference's weights in, gives each of the learner's convolutions, Linears and norms
the reference layer's weights and a probe input (:func:`layer_differences`): a layer that computes
something else is named with the settings that differ (padding, groups, kernel and stride, eps,
bias) and what each does, and the catalogued mistakes among them. A setting written another way
(``padding="same"`` for a stride-1 odd kernel) computes the same and is no difference.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from . import localise
from .harness import Unfinished, close, diff, fail, randomize

_PROBED = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.BatchNorm2d)
_NO_FIT = "its weights do not fit the reference's"
# (layer name, setting, is the learner's value this mistake?) -> catalogued mistake
_NAMED_SETTINGS = {("proj", "padding"): (lambda v: v == (0, 0), "no_padding"),
                   ("dwconv", "groups"): (lambda v: v == 1, "dwconv_no_groups"),
                   ("sr", "kernel_size"): (lambda v: True, "sr_kernel_stride"),
                   ("sr", "stride"): (lambda v: True, "sr_kernel_stride"),
                   ("ffn.fc1", "out_features"): (lambda v: True, "ffn_hidden_width")}  # (the block's Mix-FFN)
# where the released code (NVlabs mix_transformer.py) gets each LayerNorm's eps, by the layer's owner
_EPS_SOURCE = {
    "OverlapPatchEmbed": "the released code (NVlabs mix_transformer.py) builds this LayerNorm as "
                         "nn.LayerNorm(dim), torch's default eps=1e-5",
    "EfficientSelfAttention": "the released code (NVlabs mix_transformer.py) builds this LayerNorm as "
                              "nn.LayerNorm(dim), torch's default eps=1e-5",
    "Block": "the released code (NVlabs mix_transformer.py) builds this LayerNorm with "
             "norm_layer=partial(nn.LayerNorm, eps=1e-6)",
    "Stage": "the released code (NVlabs mix_transformer.py) builds this LayerNorm with "
             "norm_layer=partial(nn.LayerNorm, eps=1e-6)"}


def _probe(layer: nn.Module) -> torch.Tensor:
    """An input the reference's ``layer`` takes: a non-square map whose sides are no multiple of
    the conv's stride, or a few rows of features."""
    g = torch.Generator().manual_seed(3)
    if isinstance(layer, nn.Conv2d):
        k = max(layer.kernel_size)
        return torch.randn(2, layer.in_channels, 2 * k + 3, 3 * k + 2, generator=g)
    if isinstance(layer, nn.BatchNorm2d):
        return torch.randn(2, layer.num_features, 5, 7, generator=g)
    width = layer.in_features if isinstance(layer, nn.Linear) else layer.normalized_shape
    return torch.randn(2, 5, *([width] if isinstance(width, int) else width), generator=g) * 2 + 0.5


def _padding(conv: nn.Conv2d) -> tuple[int, ...]:
    """The padding a conv applies, however it was written ("same", "valid", an int, a tuple)."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":  # stride 1: (k - 1) * dilation split over both sides (torch pads the extra after)
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return tuple(conv.padding)


def _settings(layer: nn.Module) -> dict[str, Any]:
    """The settings that decide what a layer computes, with the padding as applied."""
    has = lambda name: getattr(layer, name, None) is not None  # noqa: E731
    if isinstance(layer, nn.Conv2d):
        return dict(in_channels=layer.in_channels, out_channels=layer.out_channels,
                    kernel_size=layer.kernel_size, stride=layer.stride, padding=_padding(layer),
                    dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode,
                    bias=has("bias"))
    if isinstance(layer, nn.Linear):
        return dict(in_features=layer.in_features, out_features=layer.out_features, bias=has("bias"))
    if isinstance(layer, nn.LayerNorm):
        return dict(normalized_shape=layer.normalized_shape, eps=layer.eps,
                    elementwise_affine=layer.elementwise_affine, bias=has("bias"))
    if isinstance(layer, nn.BatchNorm2d):
        return dict(num_features=layer.num_features, eps=layer.eps, affine=layer.affine,
                    track_running_stats=layer.track_running_stats)
    return {}


def _effect(setting: str, got: Any, want: Any, layer: nn.Module, owner: str, kwargs: dict,
            mine: dict[str, Any]) -> str:
    """What a setting unlike the reference's does, in words (``mine``: all the learner's layer's settings)."""
    if setting == "eps":
        passed = [k for k, v in kwargs.items() if "eps" in k and v == want]
        why = (f"this check builds it with {passed[0]}={want}: pass the constructor's {passed[0]} on "
               "(eps=" + passed[0] + "), do not write a number of your own" if passed else
               _EPS_SOURCE.get(owner, f"the reference's eps is {want}"))
        return (f"has eps={got!r} where the reference's has eps={want!r}; eps is added to each token's "
                f"variance before the square root, so every normalised value changes (most where the "
                f"variance is small). {why[0].upper()}{why[1:]}")
    if setting == "padding":
        return (f"pads {got} pixels per side (rows, columns) where the reference pads {want}: the "
                "output grid and its border values change")
    if setting == "groups":
        if want == layer.in_channels and got < mine["in_channels"]:
            return (f"has groups={got}, so each filter mixes {mine['in_channels'] // got} channels, where the "
                    f"reference's gives every channel its own filter (groups={want}): a different "
                    "computation with a weight of another shape")
        return f"has groups={got} where the reference's has groups={want}"
    if setting == "padding_mode":
        return (f"pads with padding_mode={got!r} where the reference pads with {want!r}: the border "
                "values of the output change")
    if setting == "bias":
        return ("has a bias where the reference's has none" if got else "has no bias where the reference's has "
                "one") + ("; pass the constructor's qkv_bias on (bias=qkv_bias)" if "qkv_bias" in kwargs and
                          isinstance(layer, nn.Linear) else "")
    if setting == "elementwise_affine":
        return ("has no learnable scale and shift (elementwise_affine=False) where the reference's has them" if not got
                else "has a learnable scale and shift where the reference's has none")
    if setting == "kernel_size":
        return f"has a {got[0]}x{got[1]} kernel where the reference's is {want[0]}x{want[1]}: another window"
    if setting == "stride":
        return (f"moves {got} pixels at a time (stride={got}) where the reference's moves {want}: the output "
                "grid comes out another size")
    if setting == "dilation":
        return f"has dilation={got} where the reference's has {want}: its kernel reads pixels further apart"
    if setting in ("in_channels", "in_features"):
        return f"reads {got} input channels where the reference's reads {want}"
    if setting in ("out_channels", "out_features", "num_features"):
        return f"makes {got} channels where the reference's makes {want}"
    if setting == "normalized_shape":
        return f"normalises over {got} where the reference's normalises over {want}, the channels"
    return f"has {setting}={got!r} where the reference's has {setting}={want!r}"


def _computes_alike(theirs: nn.Module, layer: nn.Module) -> tuple[bool, str]:
    """Whether the learner's layer, given the reference layer's weights, computes what it does on a
    probe input; and, when not, how it differs."""
    if not isinstance(theirs, type(layer)):  # e.g. the released code's DWConv wrapper around the Conv2d
        inner = [n for n, m in theirs.named_modules() if n and isinstance(m, type(layer))]
        return False, (f"is a {type(theirs).__name__} where the reference's is the {type(layer).__name__} itself"
                       + (f" (yours holds it as .{inner[0]})" if inner else "") + ": the skeleton's names hold the "
                       "layers themselves, so that the weights load by name")
    mine = copy.deepcopy(theirs)
    try:
        mine.load_state_dict(layer.state_dict())
    except Exception as e:  # weights of other shapes (groups, kernel) or a bias too many
        return False, f"{_NO_FIT}: " + str(e).splitlines()[-1].strip()
    x = _probe(layer)
    with torch.no_grad():
        want = copy.deepcopy(layer).eval()(x)
        try:
            got = mine.eval()(x)
        except Exception as e:
            return False, f"it raised {type(e).__name__} on an input of shape {tuple(x.shape)} that the reference takes"
    if close(got, want):
        return True, ""
    return False, f"on an input of shape {tuple(x.shape)}: {diff(got, want)}"


def layer_differences(student: nn.Module, ref: nn.Module, kwargs: dict) -> tuple[list[str], list[str]]:
    """The layers the learner built (by name) that compute something else than the reference's on
    the same weights, one line each naming the settings that differ and their effect, and the
    catalogued mistakes among them. A setting written another way (padding="same" for a stride-1
    odd kernel) computes the same and is no difference."""
    mine, owners = dict(student.named_modules()), dict(ref.named_modules())
    lines, mistakes = [], []
    for name, layer in ref.named_modules():
        theirs = mine.get(name)
        if not name or not isinstance(layer, _PROBED) or not isinstance(theirs, nn.Module):
            continue
        alike, how = _computes_alike(theirs, layer)
        if alike:
            continue
        owner = type(owners[name.rsplit(".", 1)[0]] if "." in name else ref).__name__
        got, want = _settings(theirs), _settings(layer)
        said = [k for k in ("groups",) if k in want and got.get(k) == got.get("in_channels")
                and want[k] == want.get("in_channels")]
        said += ["bias"] if got.get("elementwise_affine") != want.get("elementwise_affine") else []
        effects = [_effect(k, got[k], want[k], layer, owner, kwargs, got) for k in want  # (both depthwise: the
                   if k in got and got[k] != want[k] and k not in said]                # width is what differs)
        lines.append(f"self.{name} " + ("; ".join(effects) + f" ({how})" if effects else how if how.startswith("is a ")
                                         else f"computes something else than the reference's {type(layer).__name__} ({how})"))
        for k in want:
            is_it, m_id = _NAMED_SETTINGS.get((name, k)) or _NAMED_SETTINGS.get((name.rsplit(".", 1)[-1], k),
                                                                                (None, None))
            if is_it and k in got and got[k] != want[k] and is_it(got[k]):
                mistakes.append(m_id)
    return lines, mistakes


def _build_error_hint(error: Exception, Reference: type) -> str:
    """What to do about an error raised while building the learner's module."""
    if isinstance(error, TypeError) and "must be tuple of ints, but found element of type float" in str(error):
        return ("A layer was given a width that is a float (dim * mlp_ratio is one when mlp_ratio is): channel "
                "counts are ints, so convert it, int(...), as the released code does.")
    if isinstance(error, ValueError) and "padding='same'" in str(error):  # torch: a strided conv
        return ("torch refuses padding='same' for a strided convolution (stride above 1; 'same' keeps the size "
                "only at stride 1), so give this conv's padding in pixels, an int per side: the number the "
                "notebook works out.")
    return (f"Keep the skeleton's constructor: it takes the same arguments as "
            f"segformer_lite.{Reference.__name__}.")


def build(Student: type, Reference: type, args: tuple, kwargs: dict, title: str):
    """Build both modules with the same arguments and give the learner the reference's weights,
    after checking the settings of the layers built in ``__init__`` (padding, groups, eps...)."""
    torch.manual_seed(0)
    ref = Reference(*args, **kwargs)
    randomize(ref)
    shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    try:
        student = Student(*args, **kwargs)
    except NotImplementedError:
        raise Unfinished from None
    except Exception as e:
        raise fail(title, f"building {Student.__name__}({shown}) raised {type(e).__name__}: {e}",
                   extra=_build_error_hint(e, Reference)) from e
    if not isinstance(student, nn.Module):
        raise fail(title, f"{Student.__name__} is not a torch.nn.Module",
                   extra="Subclass nn.Module and call super().__init__() first.")
    lines, mistakes = layer_differences(student, ref, kwargs)

    def report():
        return fail(title, f"layers built by {Student.__name__}({shown}) compute something else than "
                    f"segformer_lite.{Reference.__name__}'s on the same weights:\n  " + "\n  ".join(lines),
                    mistakes, extra="Build each layer with the settings the notebook derives (or the skeleton "
                                    "passes); a setting written another way is fine when it computes the same.")
    # a layer whose weights do not fit fails now; one that computes something else on the same weights
    # fails only where the module's results do (a conv without padding after F.pad in forward is right)
    if lines and (any(_NO_FIT in line for line in lines) or not localise.layers_differ(report)):
        raise report()
    if not lines:
        localise.layers_differ(None)
    try:
        student.load_state_dict(ref.state_dict())
    except RuntimeError as e:
        mine, theirs = set(student.state_dict()), set(ref.state_dict())
        lists = [f"{what}: {', '.join(sorted(keys))}" for what, keys in
                 [("yours has, the reference's not", mine - theirs), ("the reference's has, yours not", theirs - mine)]
                 if keys]
        raise fail(title, f"built as {Student.__name__}({shown}), its parameters do not match "
                   f"segformer_lite.{Reference.__name__}'s" + (":\n  " + "\n  ".join(lists) if lists else f":\n{e}"),
                   extra="Keep the layer names the skeleton gives in __init__ (the weights are copied in by name), "
                         "build each with the shapes the released model uses, and build a layer only where the "
                         "reference does with these arguments (is a condition in __init__ right for them?). A tensor "
                         "kept with register_buffer joins the weights unless persistent=False.") from None
    return student.eval(), ref.eval()

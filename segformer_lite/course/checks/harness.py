"""The checkers' harness: build the learner's module beside the reference, call it, compare the
outputs and, when they differ, name the planted variant that reproduces the learner's output."""
from __future__ import annotations

import copy
import re
import sys
from typing import Any, Callable

import torch
from torch import nn

from . import localise
from .mistakes import ALIASES, MISTAKES, Mistake

# the tolerance of every notebook's hidden tests (torch.testing.assert_close(..., rtol=RTOL,
# atol=ATOL)): the checker accepts exactly what the hidden tests accept
ATOL, RTOL = 1e-5, 1e-4

Variants = dict[str, Callable[[], Any]]  # mistake id (or alias) -> its planted variant's output


class Unfinished(Exception):
    """The learner's code raised NotImplementedError."""


class Report(AssertionError):
    def _render_traceback_(self) -> list[str]:  # IPython shows these lines, not the checker's frames
        return localise.render(self)


def fail(title: str, what: str, mistakes: list[str] = (), extra: str = "",
         catalogue: dict[str, Mistake] = MISTAKES, localised: bool = False, shape: bool = False,
         error: BaseException | None = None) -> Report:
    """Every checker's failure: what is wrong, then the likely mistakes (from ``catalogue``; the
    fix from the second time a mistake is named on), else the ``extra`` hint; with
    ``localised``, where the learner's module first parts from the reference (on the case the
    checker is comparing; ``error``: the learner's code raised it); the shape-trace advice
    only where a shape differs."""
    lines = [f"{title}: {what}"]
    where, shape_here = localise.where_it_differs(error) if localised else ([], False)
    if mistakes:
        for m_id in dict.fromkeys(mistakes):
            lines += localise.hint_lines(m_id, catalogue)
    elif extra:
        lines.append(extra)
    elif not where:
        lines.append("No catalogued mistake reproduces it.")
    lines += where + localise.notes()
    if (shape or shape_here) and not mistakes:
        lines.append(localise.SHAPE_ADVICE)
    return Report("\n".join(lines))


def run_check(title: str, body: Callable[[], str]) -> None:
    """Run one checker body; translate NotImplementedError into the "not implemented" note."""
    try:  # fork_rng: checking must not move the notebook's random stream
        with torch.random.fork_rng(devices=[]), localise.cases(title) as session:
            summary = body()
    except Unfinished:
        print(f"{title}: not implemented yet (forward raises NotImplementedError). "
              "Write it, then re-run this cell.", file=sys.stderr)
        return
    print(f"✓ {title}: {summary}")
    for note in session.notes:  # right results, but the caller's list changed: said, not graded (the
        print(note)             # hidden tests, which hand over a fresh list, pass such a module too)


_NO_FORWARD = 'is missing the required "forward" function'


def call(fn: Callable, *args, title: str, where: str,
         diagnose: Callable[[Exception], list[str]] = lambda e: []):
    """Call the learner's code on copies of ``args`` (the caller keeps the originals for the
    reference); NotImplementedError means unfinished, any other error fails (naming the mistakes
    ``diagnose(error)`` finds, else where the learner's module parts from the reference), and so
    does changing a tensor argument. A list changed in place is noted in a later report."""
    given = localise.copies(args)
    try:
        out = fn(*given)
    except NotImplementedError as e:
        if _NO_FORWARD in str(e):  # torch's own error: a container (ModuleDict, ModuleList) was called
            raise fail(title, f"called a module that has no forward of its own {where}: {e}",
                       extra="The skeleton's containers (an nn.ModuleDict of named parts, an nn.ModuleList) "
                             "only hold layers: call the layers they hold, one step at a time.") from None
        raise Unfinished from None
    except Report:  # a checker's own verdict from inside the learner's call (a refused shortcut)
        raise
    except Exception as e:  # the learner's bug, reported with a hint and the learner's own frames
        localise.note(localise.changed(fn, given, args))
        raise fail(title, f"raised {type(e).__name__} {where}: {e}", diagnose(e), localised=True,
                   shape=bool(re.search(r"shape|size|dimension", str(e))), error=e) from e
    done = localise.changed(fn, given, args)
    tensors = [d for d in done if " list " not in d]
    if tensors:
        raise fail(title, f"{tensors[0]} {where}", ["inplace_input"])
    localise.note(done)
    return out


def close(a: Any, b: Any, exact: bool = False) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if exact:  # a reshape moves numbers, it never changes them
            return a.shape == b.shape and torch.equal(a, b)
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=ATOL, rtol=RTOL)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(close(x, y, exact) for x, y in zip(a, b))
    return a == b


def matching(got: Any, variants: Variants) -> list[str]:
    """The ids of the catalogued mistakes whose planted variant's output equals ``got``."""
    found = []
    for m_id, make in variants.items():
        try:
            out = make()
        except Exception:  # a variant that cannot run on this input (e.g. sqrt(N) not whole)
            continue
        if close(got, out):
            found.append(ALIASES.get(m_id, m_id))
    return found


def raises_alike(make: Callable, error: BaseException) -> bool:
    """Whether ``make()`` raises the learner's ``error``: same type, same message (shapes
    included), so the same mistake."""
    try:
        make()
    except Exception as e:
        return type(e) is type(error) and str(e) == str(error)
    return False


def raising(error: Exception, variants: Variants) -> list[str]:
    """The ids of the catalogued mistakes whose planted variant raises the learner's ``error``."""
    return [ALIASES.get(m_id, m_id) for m_id, make in variants.items() if raises_alike(make, error)]


def right_for_one(student: Callable, reference: Callable, args: tuple,
                  accept: Callable[[Any, Any, str], Any] | None) -> bool:
    """Whether the learner's code, wrong on a batch, is right on the batch's first item alone."""
    x = args[0]
    if not (isinstance(x, torch.Tensor) and x.shape[0] > 1):
        return False
    one = (x[:1].clone(), *args[1:])
    try:
        expected = reference(*one)
        got = student(*one)
        return close(accept(got, expected, "") if accept else got, expected)
    except Exception:  # wrong for one item too (or unfinished): not a batch problem
        return False


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return type(x).__name__ + " of " + ", ".join(describe(v) for v in x)
    return repr(x)


def _has_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor) or (isinstance(x, (tuple, list)) and any(map(_has_tensor, x)))


def _same_layout(a: Any, b: Any) -> bool:
    """Same nesting and tensor shapes (values aside)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
    if _has_tensor(a) or _has_tensor(b):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(map(_same_layout, a, b)))
    return True  # plain values such as a grid (H, W): compared as a whole


def diff(got: Any, expected: Any) -> str:
    """How ``got`` differs from ``expected``: where the layouts agree, the largest difference of
    each differing tensor (item by item in a tuple or list) or the two plain values; otherwise
    the two layouts."""
    if not _same_layout(got, expected):
        return f"expected a {describe(expected)}, got a {describe(got)}"
    if isinstance(got, torch.Tensor):
        return f"max |difference| {(got.float() - expected.float()).abs().max().item():.2e}"
    if _has_tensor(got):
        return "; ".join(f"[{i}]: {diff(g, e)}" for i, (g, e) in enumerate(zip(got, expected)) if not close(g, e))
    return f"expected {expected!r}, got {got!r}"


# --- the layers built in __init__: judged by what they compute, not by how they are written -------

_PROBED = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.BatchNorm2d)
# (layer name, setting, is the learner's value this mistake?) -> catalogued mistake
_NAMED_SETTINGS = {("proj", "padding"): (lambda v: v == (0, 0), "no_padding"),
                   ("dwconv", "groups"): (lambda v: v == 1, "dwconv_no_groups"),
                   ("sr", "kernel_size"): (lambda v: True, "sr_kernel_stride"),
                   ("sr", "stride"): (lambda v: True, "sr_kernel_stride")}
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


def _effect(setting: str, got: Any, want: Any, layer: nn.Module, owner: str, kwargs: dict) -> str:
    """What a setting unlike the reference's does, in words."""
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
        if want == layer.in_channels and got < want:  # (more groups than channels: the width is what differs)
            return (f"has groups={got}, so each filter mixes {layer.in_channels // got} channels, where the "
                    f"reference's gives every channel its own filter (groups={want}): a different "
                    "computation with a weight of another shape")
        return f"has groups={got} where the reference's has groups={want}"
    if setting == "padding_mode":
        return (f"pads with padding_mode={got!r} where the reference pads with {want!r}: the border "
                "values of the output change")
    if setting == "bias":
        return ("has a bias where the reference's has none" if got else "has no bias where the reference's has "
                "one") + ("; pass the constructor's qkv_bias on (bias=qkv_bias)" if "qkv_bias" in kwargs else "")
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
    mine = copy.deepcopy(theirs)
    try:
        mine.load_state_dict(layer.state_dict())
    except Exception as e:  # weights of other shapes (groups, kernel) or a bias too many
        return False, "its weights do not fit the reference's: " + str(e).splitlines()[-1].strip()
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
        effects = [_effect(k, got[k], want[k], layer, owner, kwargs) for k in want if k in got and got[k] != want[k]]
        lines.append(f"self.{name} " + ("; ".join(effects) + f" ({how})" if effects else
                                         f"computes something else than the reference's {type(layer).__name__} ({how})"))
        for k in want:
            is_it, m_id = _NAMED_SETTINGS.get((name.rsplit(".", 1)[-1], k), (None, None))
            if is_it and k in got and got[k] != want[k] and is_it(got[k]):
                mistakes.append(m_id)
    return lines, mistakes


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
                   extra=f"Keep the skeleton's constructor: it takes the same arguments as "
                         f"segformer_lite.{Reference.__name__}.") from e
    if not isinstance(student, nn.Module):
        raise fail(title, f"{Student.__name__} is not a torch.nn.Module",
                   extra="Subclass nn.Module and call super().__init__() first.")
    lines, mistakes = layer_differences(student, ref, kwargs)
    if lines:
        raise fail(title, f"layers built by {Student.__name__}({shown}) compute something else than "
                   f"segformer_lite.{Reference.__name__}'s on the same weights:\n  " + "\n  ".join(lines),
                   mistakes, extra="Build each layer with the settings the notebook derives (or the skeleton "
                                   "passes); a setting written another way is fine when it computes the same.")
    try:
        student.load_state_dict(ref.state_dict())
    except RuntimeError as e:
        raise fail(title, f"its parameters do not match segformer_lite.{Reference.__name__}'s:\n{e}",
                   extra="Keep the layer names the skeleton gives in __init__ (the weights are copied "
                         "in by name) and build each with the shapes the released model uses.") from e
    return student.eval(), ref.eval()


@torch.no_grad()
def randomize(module: nn.Module) -> None:
    """Random LayerNorm affine parameters and biases, so that no mistake hides behind an
    identity scale or a zero bias."""
    g = torch.Generator().manual_seed(1)
    for name, p in module.named_parameters():
        if name.endswith("bias") or "norm" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "norm" in name and
                                                                name.endswith("weight") else 0.0))


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _kind(x: Any) -> str:
    """'a float (8.0)', 'a list', 'a Tensor'."""
    return f"a {type(x).__name__}" + (f" ({x!r})" if isinstance(x, (int, float)) else "")


def vet(title: str, got: Any, expected: Any, where: str, name: str = "the output",
        items: tuple[str, ...] = ()) -> None:
    """Fail unless ``got`` has the form of ``expected``, whatever its values, naming the property
    that differs: a tensor where the reference returns one, with its dtype and device; a tuple
    (``torch.Size`` is one) or a list where it returns one, as long; Python ints where it
    returns ints. ``items`` names the items of a returned tuple or list in the messages. The
    hidden tests assert the same properties."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise fail(title, f"{name} is {_kind(got)} {where}, not a tensor",
                       extra=f"Return {name} as a torch.Tensor, as the reference does.")
        if got.dtype != expected.dtype:
            raise fail(title, f"{name} is {str(got.dtype).removeprefix('torch.')} {where}; the "
                       f"reference's is {str(expected.dtype).removeprefix('torch.')}",
                       extra=f"Where does a {str(got.dtype).removeprefix('torch.')} creep in? Keep the "
                             "input's dtype: no .double() or .half(), no torch.tensor(...) or numpy "
                             "array mixed in.")
        if got.device != expected.device:
            raise fail(title, f"{name} is on the device {got.device} {where}; the reference's is on "
                       f"{expected.device}", extra="Keep every tensor on the input's device: no .to(), "
                                                   ".cpu() or .cuda() of your own; create new tensors "
                                                   "with device=x.device.")
        return
    if isinstance(expected, (tuple, list)):
        kind = tuple if isinstance(expected, tuple) else list
        if not isinstance(got, kind):
            hint = ("Return them as a tuple: return a, b (a comma makes one)." if kind is tuple else
                    "Collect them in a list: features = [], then features.append(...).")
            raise fail(title, f"{name} is {_kind(got)} {where}; the contract is a {kind.__name__} of "
                       f"{len(expected)}", extra=hint)
        if len(got) != len(expected):
            raise fail(title, f"{name} has {len(got)} items {where}; the contract is {len(expected)} "
                       f"({describe(expected)})", extra="Return exactly what the exercise's contract lists.")
        if all(type(e) is int for e in expected) and not all(type(g) is int for g in got):
            raise fail(title, f"{name} holds {', '.join(_kind(g) for g in got)} {where}; the contract "
                       f"is {len(expected)} Python ints",
                       extra="Sizes and counts are ints: use // (floor division), not /, and read sizes "
                             "from the shape (h, w = x.shape[-2:]), not from a tensor.")
        for i, (g, e) in enumerate(zip(got, expected)):
            vet(title, g, e, where, items[i] if i < len(items) else f"{name}[{i}]")


def compare(title: str, got: Any, expected: Any, where: str, variants: Variants,
            fallback: Callable[[], list[str]] = list, exact: bool = False, name: str = "the output",
            items: tuple[str, ...] = ()) -> bool:
    """Fail unless ``got`` has the form of ``expected`` (:func:`vet`) and its values, naming the
    planted variants it reproduces (or, when none does, the mistakes ``fallback()`` suspects).
    A wrong output that no catalogued mistake explains is kept while a check runs
    (:func:`localise.defer`), and then the result is False."""
    vet(title, got, expected, where, name, items)
    if close(got, expected, exact):
        localise.verdict(where, None)
        return True
    found = matching(got, variants) or fallback()
    report = fail(title, f"wrong output {where} ({diff(got, expected)})", found, localised=True,
                  shape=not _same_layout(got, expected))
    if found or not localise.defer(report, where):  # uncatalogued: the check goes on to the other cases
        raise report
    return False


def compare_on_grids(title: str, student: Callable, reference: Callable, grids: list[tuple[int, int]],
                     case: Callable[[int, tuple[int, int]], tuple[tuple, str, Variants]], *,
                     sqrt_hw_on_error: bool = True, accept: Callable[[Any, Any, str], Any] | None = None,
                     then: Callable[[tuple, str], None] | None = None, exact: bool = False,
                     name: str = "the output", items: tuple[str, ...] = (), train: bool = True) -> int:
    """Compare ``student(*args)`` with ``reference(*args)`` on one input per grid (H, W), square and
    non-square, and return how many inputs were compared.

    ``case(seed, hw)`` makes the arguments (the first one batched, B >= 2), the "where" of the
    messages and the planted variants; ``accept(got, expected, where)`` diagnoses a wrong form
    of the learner's output before :func:`compare` vets it (``name``, ``items`` in its messages),
    ``then(args, where)``
    checks more once the output matches. A wrong output or an error is blamed on the planted
    variant that reproduces it; failing that, on a batch size hard-coded to 1 when the first
    item alone comes out right; failing that, on a grid guessed as sqrt(N) when square grids
    passed (or, with ``sqrt_hw_on_error``, when the error came on a non-square grid).

    Once every output matches, with ``train`` the first input also goes through a backward pass
    (:func:`gradients`) and, for modules, through both in float64 (:func:`in_float64`).
    """
    with torch.no_grad():
        compared = _compare_on_grids(title, student, reference, grids, case, sqrt_hw_on_error, accept, then,
                                     exact, name, items)
    if train:
        args, where, _ = case(0, grids[0])
        gradients(title, student, reference, args, where, name)
        if isinstance(student, nn.Module) and isinstance(reference, nn.Module):
            in_float64(title, student, reference, args, where, name, items)
    return compared


def _compare_on_grids(title, student, reference, grids, case, sqrt_hw_on_error, accept, then, exact, name,
                      items) -> int:
    square_passed = False
    for seed, hw in enumerate(grids):
        square = hw[0] == hw[1]
        args, where, variants = case(seed, hw)
        localise.set_case(student, reference, args)

        def suspects(guessed_grid: bool) -> list[str]:
            if right_for_one(student, reference, args, accept):
                return ["batch_hard_coded"]
            return ["sqrt_hw"] if guessed_grid and not square else []

        def on_error(error: Exception) -> list[str]:
            """The mistakes behind an error: a planted variant that raises alike; a batch size of 1;
            else, on a non-square grid, what the code does on a square one: right there, a grid
            guessed as sqrt(N) (with ``sqrt_hw_on_error``); wrong there, the variant it reproduces."""
            found = raising(error, variants) or suspects(False)
            squares = [(i, g) for i, g in enumerate(grids) if g[0] == g[1]]
            if found or square or not squares:
                return found
            sq_args, _, sq_variants = case(*squares[0])
            try:
                expected = reference(*sq_args)
                got = student(*sq_args)
                got = accept(got, expected, "") if accept else got
            except Exception:  # wrong there too, or another error: no diagnosis
                return []
            if close(got, expected, exact):
                return ["sqrt_hw"] if sqrt_hw_on_error else []
            return matching(got, sq_variants)

        got = call(student, *args, title=title, where=where, diagnose=on_error)
        expected = reference(*args)
        if accept:
            got = accept(got, expected, where)
        if not compare(title, got, expected, where, variants, lambda: suspects(square_passed), exact, name, items):
            continue
        if then:
            then(args, where)
        square_passed |= square
    return len(grids)


# --- training: the backward pass ------------------------------------------------------------------

_BLOCKED = ("Something in forward cuts it from autograd's graph: .detach(), .data, .item() or .numpy() "
            "turned back into a tensor, a new tensor built from the values (torch.tensor(...)), or "
            "torch.no_grad() / torch.inference_mode() inside forward. Such a module runs but cannot "
            "train: keep every step of forward differentiable.")


def _leaves(x: Any) -> Any:
    """``x`` with every floating-point tensor (nested in tuples and lists too) replaced by a fresh
    copy that requires grad."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.is_floating_point())
    if isinstance(x, (tuple, list)):
        return type(x)(map(_leaves, x))
    return x


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


def gradients(title: str, student: Callable, reference: Callable, args: tuple, where: str,
              name: str = "the output", modules: tuple[nn.Module, nn.Module] | None = None) -> None:
    """Fail unless one backward pass through the learner's code gives the reference's gradients,
    at the hidden tests' tolerance on the gradient's own scale (divided by its largest value when
    that is above 1: a weight's gradient sums over every position, so its rounding error grows
    with it): for every input tensor and every parameter of the learner's
    module (matched by name; ``modules`` names the two modules when ``student`` and ``reference`` are
    functions that call them). The loss is a fixed random weighting of every output value, so each
    value's gradient counts. Skipped once the check has kept a wrong output: its gradients are
    wrong too, and the report is about the output."""
    if localise.failing():
        return
    where += " (backward pass)"
    mine, theirs = _leaves(args), _leaves(args)
    if modules is None and isinstance(student, nn.Module) and isinstance(reference, nn.Module):
        modules = (student, reference)
    for module in modules or ():
        module.zero_grad(set_to_none=True)
    with torch.enable_grad():
        got = call(student, *mine, title=title, where=where)
        expected = reference(*theirs)
        outs, refs = _tensors(got), _tensors(expected)
        blocked = [i for i, (o, r) in enumerate(zip(outs, refs)) if r.requires_grad and not o.requires_grad]
        if blocked:
            which = (name if len(refs) == 1 else f"all {len(refs)} tensors of {name}" if len(blocked) == len(refs)
                     else ", ".join(f"{name}[{i}]" for i in blocked))
            carry = "carries" if len(refs) == 1 or len(blocked) == 1 else "carry"
            raise fail(title, f"{which} {carry} no gradient {where}: no loss computed from it could "
                       "train a weight", extra=_BLOCKED)
        weights = [randn(*r.shape, seed=40 + i).to(r.dtype) for i, r in enumerate(refs)]
        pairs = [(o, r, w) for o, r, w in zip(outs, refs, weights) if r.requires_grad]
        try:
            sum((o * w).sum() for o, _, w in pairs).backward()
        except Exception as e:
            raise fail(title, f"the backward pass raised {type(e).__name__} {where}: {e}",
                       extra="An in-place operation (x += ..., .relu_(), x[...] = ...) overwrote a tensor "
                             "autograd still needs: write x = x + ... instead.") from e
        sum((r * w).sum() for _, r, w in pairs).backward()
    checked = [("the input" if len(mine) == 1 else f"argument {i + 1}", a, b)
               for i, (a, b) in enumerate(zip(_tensors(mine), _tensors(theirs))) if b.requires_grad]
    if modules:
        params = dict(modules[0].named_parameters())
        checked += [(f"self.{n}", params[n], p) for n, p in modules[1].named_parameters() if n in params]
    for label, a, b in checked:
        if b.grad is None:
            continue
        if a.grad is None:
            raise fail(title, f"no gradient reaches {label} {where}, where the reference's gets one",
                       extra=_BLOCKED)
        scale = max(b.grad.abs().max().item(), 1.0)  # a weight's gradient sums over every position
        if not close(a.grad / scale, b.grad / scale):
            raise fail(title, f"the gradient of {label} differs from the reference's {where} "
                       f"({diff(a.grad, b.grad)}, its largest value {scale:.3g}), although the outputs match",
                       extra="Something in forward changes how the gradient flows without changing the "
                             "values: a .detach() on part of a sum, a custom autograd.Function, a value "
                             "computed twice and mixed. Keep forward plain torch.")


def in_float64(title: str, student: nn.Module, reference: nn.Module, args: tuple, where: str,
               name: str = "the output", items: tuple[str, ...] = ()) -> None:
    """The dtype promise: the learner's module, in float64 on float64 inputs, returns float64
    values that match the reference's (then both go back to float32, exactly). Skipped once the
    check has kept a wrong output."""
    if localise.failing():
        return
    where += " in float64 (module.double())"
    args = tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else
                 [t.double() for t in a] if isinstance(a, list) else a for a in args)
    student.double(), reference.double()
    try:
        with torch.no_grad():
            got = call(student, *args, title=title, where=where)
            expected = reference(*args)
        vet(title, got, expected, where, name, items)
        if not close(got, expected):
            raise fail(title, f"wrong output {where} ({diff(got, expected)})",
                       extra="Where does float32 creep in? Create new tensors with dtype=x.dtype (and "
                             "device=x.device), or with torch.zeros_like / x.new_zeros.")
    finally:
        student.float(), reference.float()

"""The checkers' harness: build the learner's module beside the reference, call it, compare the
outputs and, when they differ, name the planted variant that reproduces the learner's output. The layers built in ``__init__``
are judged in :mod:`layers` (:func:`layers.build`), the passes over the grids, backward and in
float64 in :mod:`passes`."""
from __future__ import annotations

import re
import sys
from typing import Any, Callable

import torch
from torch import nn

from . import localise
from .mistakes import ALIASES, MISTAKES, Mistake
from .report import Report

# the tolerance of every notebook's hidden tests (torch.testing.assert_close(..., rtol=RTOL,
# atol=ATOL)): the checker accepts exactly what the hidden tests accept
ATOL, RTOL = 1e-5, 1e-4

Variants = dict[str, Callable[[], Any]]  # mistake id (or alias) -> its planted variant's output


class Unfinished(Exception):
    """The learner's code raised NotImplementedError."""


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
        print(f"{title}: not implemented yet (the skeleton still raises NotImplementedError). "
              "Write it, then re-run this cell.", file=sys.stderr)
        return
    print(f"✓ {title}: {summary}")
    for note in session.notes:  # right results, but the caller's list changed: said, not graded (the
        print(note)             # hidden tests, which hand over a fresh list, pass such a module too)


_NO_FORWARD = 'is missing the required "forward" function'
_VIEW = ("No shape is wrong here: .view needs the tensor's numbers in memory in the order it reads them, and "
         "after a transpose or permute they are not. Use .reshape (it copies when it must), or .contiguous().view.")


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
        strides = "view size is not compatible with input tensor's size and stride" in str(e)
        raise fail(title, f"raised {type(e).__name__} {where}: {e}", diagnose(e), localised=True,
                   extra=_VIEW if strides else "", shape=not strides and bool(re.search(r"shape|size|dimension", str(e))),
                   error=e) from e
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
        items: tuple[str, ...] = (), verb: str = "is", kept: bool = False,
        hints: dict[str, str] | None = None) -> None:
    """Fail unless ``got`` has the form of ``expected``, whatever its values, naming the property
    that differs: a tensor where the reference returns one, with its dtype and device; a tuple
    (``torch.Size`` is one) or a list where it returns one, as long; Python ints where it
    returns ints. ``items`` names the items of a returned tuple or list in the messages. The
    hidden tests assert the same properties. In an exercise's own words: ``verb`` ("the tokens
    are"), ``kept`` (the contract keeps the input's dtype and device: said so, not "the
    reference's") and ``hints`` (the hint for "tensor", "dtype" or "device")."""
    hints = hints or {}
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise fail(title, f"{name} {verb} {_kind(got)} {where}, not a tensor",
                       extra=hints.get("tensor", f"Return {name} as a torch.Tensor, as the reference does."))
        for prop, shown in (("dtype", lambda t: str(t.dtype).removeprefix("torch.")), ("device", lambda t: str(t.device))):
            if getattr(got, prop) == getattr(expected, prop):
                continue
            on = "on the device " if prop == "device" else ""
            said = (f", where the contract keeps the input's {prop} ({shown(expected)})" if kept else
                    f"; the reference's is {'on ' if on else ''}{shown(expected)}")
            default = (f"Where does a {shown(got)} creep in? Keep the input's dtype: no .float(), .double() or "
                       ".half(), no torch.tensor(...) or numpy array mixed in." if prop == "dtype" else
                       "Keep every tensor on the input's device: no .to(), .cpu() or .cuda() of your own; create "
                       "new tensors with device=x.device.")
            raise fail(title, f"{name} {verb} {on}{shown(got)} {where}{said}",
                       extra=hints.get(prop, default).replace("{got}", shown(got)))
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

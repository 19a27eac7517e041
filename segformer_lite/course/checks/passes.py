"""The passes through the learner's code once its module is built: the forward passes over the
grids, the backward pass, the float64 pass, the pass on another device and one with another batch size.

:func:`compare_on_grids` compares the learner's output with the reference's on one input per grid,
square and non-square, blaming a wrong output or an error on the planted variant that reproduces
it, else on a batch size hard-coded to 1 or a grid guessed as sqrt(N). Once every output matches,
:func:`gradients` runs one backward pass through both (every input's and every parameter's
gradient compared), :func:`in_float64` runs both in float64 (the dtype promise) and
:func:`on_another_device` on the meta device (the device promise, without a GPU) and
:func:`other_batch` once more as a batch of 3 (every case's batch holds 2).
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import nn

from ..grading import keeps_device, leaves, map_tensors, tensors
from . import localise
from .report import Report
from .harness import Variants, call, close, compare, diff, fail, matching, randn, raising, right_for_one, vet

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
    (:func:`gradients`), for modules through both in float64 (:func:`in_float64`), through
    both on the meta device (:func:`on_another_device`) and, as a batch of 3, through both again
    (:func:`other_batch`).
    """
    with torch.no_grad():
        compared = _compare_on_grids(title, student, reference, grids, case, sqrt_hw_on_error, accept, then,
                                     exact, name, items)
    if not localise.failing():  # its layers, however written, compute what the reference's do together
        localise.layers_differ(None)
    if train:
        args, where, _ = case(0, grids[0])
        gradients(title, student, reference, args, where, name)
        if isinstance(student, nn.Module) and isinstance(reference, nn.Module):
            in_float64(title, student, reference, args, where, name, items)
        on_another_device(title, student, reference, args, where, name)
        other_batch(title, student, reference, args, where, accept, exact, name, items)
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


def _hinted(title: str, report: Report, hint: str) -> Report:
    """The report on an error the learner's code raised, its hint replaced by one for the pass that
    met it (the error itself stays the report's cause)."""
    return fail(title, str(report).splitlines()[0].removeprefix(f"{title}: "), extra=hint)


def _labels(fn: Callable, args: tuple) -> list[str]:
    """A name for each tensor in ``args``, in the order of :func:`tensors`: the parameter's name
    from ``fn``'s signature (x, feats, ...), with the index of a tensor in a list (feats[3])."""
    names = localise._names(fn, len(args))
    labels = []
    for name, arg in zip(names, args):
        items = tensors(arg)
        labels += [name] if isinstance(arg, torch.Tensor) else [f"{name}[{j}]" for j in range(len(items))]
    return labels


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
    mine, theirs = leaves(args), leaves(args)
    if modules is None and isinstance(student, nn.Module) and isinstance(reference, nn.Module):
        modules = (student, reference)
    for module in modules or ():
        module.zero_grad(set_to_none=True)
    with torch.enable_grad():
        try:
            got = call(student, *mine, title=title, where=where)
        except Report as report:  # e.g. .numpy(): right on plain tensors, refused on ones that carry gradients
            if "numpy()" not in str(report.__cause__):
                raise
            raise _hinted(title, report, "numpy knows nothing of gradients, so torch refuses a tensor that carries "
                          "them; the .detach() it suggests would cut the gradient. Stay in torch (or einops) from "
                          "input to output.") from report.__cause__
        expected = reference(*theirs)
        outs, refs = tensors(got), tensors(expected)
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
    checked = [(label, a, b) for label, a, b in zip(_labels(student, mine), tensors(mine), tensors(theirs))
               if b.requires_grad]
    if modules:
        params = dict(modules[0].named_parameters())
        checked += [(f"self.{n}", params[n], p) for n, p in modules[1].named_parameters() if n in params]
    checked = [(label, a, b) for label, a, b in checked if b.grad is not None]
    for label, a, b in checked:  # a path cut from the graph first: it names the layer behind it
        if a.grad is None:
            raise fail(title, f"no gradient reaches {label} {where}, where the reference's gets one",
                       extra=_BLOCKED)
    for label, a, b in checked:
        scale = max(b.grad.abs().max().item(), 1.0)  # a weight's gradient sums over every position
        if not close(a.grad / scale, b.grad / scale):
            raise fail(title, f"the gradient of {label} differs from the reference's {where} "
                       f"({diff(a.grad, b.grad)}, its largest value {scale:.3g}), although the outputs match",
                       extra="Something in forward changes how the gradient flows without changing the "
                             "values: a .detach() on part of a sum, a custom autograd.Function, a value "
                             "computed twice and mixed. Keep forward plain torch.")


_FLOAT32 = ("Where does float32 creep in? Create new tensors with dtype=x.dtype (and device=x.device), or "
            "with torch.zeros_like / x.new_zeros.")


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
            try:
                got = call(student, *args, title=title, where=where)
            except Report as report:  # e.g. a float32 tensor of the learner's meets a float64 weight
                if report.__cause__ is None:
                    raise
                raise _hinted(title, report, _FLOAT32) from report.__cause__
            expected = reference(*args)
        vet(title, got, expected, where, name, items)
        if not close(got, expected):
            raise fail(title, f"wrong output {where} ({diff(got, expected)})", extra=_FLOAT32)
    finally:
        student.float(), reference.float()


# --- the device promise, without a GPU --------------------------------------------------------------

_ON_THE_CPU = ("{who} makes a tensor on the CPU (or copies the input's values there) and mixes it with the "
               "input's: on a GPU it would fail the same. Create new tensors where the input is: "
               "torch.zeros(..., device=x.device, dtype=x.dtype), torch.zeros_like(x), x.new_zeros(...); no "
               ".cpu(), .tolist() or .numpy()")
_NO_PLAIN_TENSORS = ("; keep no plain tensor attribute from __init__ (module.to(device) moves parameters and buffers "
                     "only: self.register_buffer(name, tensor, persistent=False), which keeps it out of the saved "
                     "weights too)")


def on_another_device(title: str, student: Callable, reference: Callable, args: tuple, where: str,
                      name: str = "the output") -> None:
    """The device promise ("dtype and device of x"), tested without a GPU by
    :func:`segformer_lite.course.grading.keeps_device` (the hidden tests' own test: both modules
    and ``args`` moved to the meta device), its failure reported with what to do. Skipped once
    the check has kept a wrong output."""
    if localise.failing():
        return
    where += " on the meta device (a stand-in for a GPU: tensors with shapes and no values)"
    who = "forward" if isinstance(student, nn.Module) else "your function"
    try:
        keeps_device(student, reference, *args)
    except AssertionError as e:
        cause = e.__cause__
        what = (f"{who} mixes devices {where}: {type(cause).__name__}: {cause}" if cause is not None else
                f"{str(e).replace('returned tensor 0', name)} {where}")
        hint = _ON_THE_CPU.format(who=who[0].upper() + who[1:]) + (_NO_PLAIN_TENSORS if who == "forward" else "")
        raise fail(title, what, extra=hint + ".") from cause or e


# --- another batch size ------------------------------------------------------------------------------

def other_batch(title: str, student: Callable, reference: Callable, args: tuple, where: str,
                accept: Callable[[Any, Any, str], Any] | None = None, exact: bool = False,
                name: str = "the output", items: tuple[str, ...] = ()) -> None:
    """The cases' batches hold 2 items: once more with 3 (the first item repeated), so that a batch
    size written as 2 shows. Skipped once the check has kept a wrong output."""
    if localise.failing():
        return
    where = re.sub(r"\(2, (?=\d)", "(3, ", where).replace("a batch of two", "a batch of three")
    where += " (a batch of 3: the first item repeated)"
    three = map_tensors(lambda t: torch.cat([t, t[:1]]) if t.ndim and t.shape[0] == 2 else t, args)
    with torch.no_grad():
        expected = reference(*three)
        got = call(student, *three, title=title, where=where, diagnose=lambda e: ["batch_written_as_number"])
        if accept:
            got = accept(got, expected, where)
        compare(title, got, expected, where, {}, lambda: ["batch_written_as_number"], exact, name, items)

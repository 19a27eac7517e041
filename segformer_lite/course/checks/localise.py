"""Where a wrong answer first parts from the reference, and how a failed check is shown.

When the learner's output differs from the reference's, the checker runs both once more on the
same inputs (each on its own copy) with forward hooks on the named submodules the skeleton gives
(``q``, ``kv``, ``sr``, ``norm``, ``proj``; ``fc1``, ``dwconv``, ``fc2``; ``linear_c[i]``,
``fuse``, ...), recording the input and the output of every call, plus the tensors the contract
exposes (the attention weights, each stage's feature map, the grid). Walking the reference's
calls in order, the first recorded value that differs is where the two part: "q, kv and the
attention weights match; the input to proj differs (same shape (2, 64, 16), max |diff| 0.8; the
same numbers in another order: ...)", followed by what happens just before that point in the
skeleton (:data:`PLANS`). Where the calls themselves part first, that is said instead: a layer
called once more than the reference calls it ("but norm is called twice"), or the same calls in
another order ("but classifier is called before dropout").

Also here, the learner's arguments (:func:`copies`, :func:`changed`): the learner gets copies,
the reference the originals, and a changed copy is named ("reversed the list feats in place").
The skeleton's names per exercise are in :mod:`plans`, the cases of one check in :mod:`cases`,
the hints and the rendering of a failure in :mod:`report`; their public names are re-exported here.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .cases import (Case, _sessions, cases, defer, failing, layers_differ, note, notes,  # noqa: F401  (re-exported)
                    set_case, summary, verdict)
from .plans import FUNCTION_PLANS, PLANS, Plan, _plan, _shown, _hooked  # noqa: F401  (re-exported)
from .report import SEEN, hint_lines, render, reset  # noqa: F401  (re-exported)

ATOL, RTOL = 1e-5, 1e-4  # harness.ATOL, harness.RTOL (the hidden tests' tolerance)
SHAPE_ADVICE = ("A shape differs: print the shape of every intermediate tensor and compare with the "
                "notebook's shape trace.")


# --- recording ----------------------------------------------------------------------------------

def snapshot(value: Any) -> Any:
    """A copy that later in-place changes cannot reach: tensors cloned (detached), lists and
    tuples as tuples, a torch.Size as a tuple, other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return tuple(snapshot(v) for v in value)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in sorted(value.items())}
    return value


def copies(args: tuple) -> tuple:
    """The arguments for the learner: tensors cloned, lists copied (with cloned tensors), so
    that nothing the learner does reaches the reference's arguments."""
    def copy(v):
        if isinstance(v, torch.Tensor):
            return v.clone()
        if isinstance(v, list):
            return [copy(x) for x in v]
        if isinstance(v, tuple):
            return tuple(copy(x) for x in v)
        return v
    return tuple(copy(a) for a in args)


def _names(fn: Callable, n: int) -> list[str]:
    """The names of the first ``n`` positional parameters of ``fn`` (a module: its forward)."""
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    if isinstance(fn, nn.Module):
        fn = fn.forward
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"argument {i + 1}" for i in range(n)]


def changed(fn: Callable, given: tuple, originals: tuple) -> list[str]:
    """What the learner's ``fn`` did to the arguments it was ``given`` (copies of ``originals``):
    one phrase per changed argument, e.g. "changed its input x in place", "reversed the list
    feats in place (feats.reverse())"."""
    said = []
    names = _names(fn, len(originals))
    if originals and isinstance(originals[0], nn.Module):  # fn(module, *args): a wrapper such as a seeded call
        names = ["module", *_names(originals[0], len(originals) - 1)]
    for name, got, orig in zip(names, given, originals):
        if isinstance(orig, torch.Tensor):
            if not (isinstance(got, torch.Tensor) and got.shape == orig.shape and torch.equal(got, orig)):
                said.append(f"changed its input {name} in place")
        elif isinstance(orig, list) and any(isinstance(v, torch.Tensor) for v in orig):
            said += _list_change(name, got, orig)
    return said


def _list_change(name: str, got: list, orig: list) -> list[str]:
    def index(t):  # which original item is this (by value)?
        return next((i for i, o in enumerate(orig) if isinstance(t, torch.Tensor) and t.shape == o.shape
                     and torch.equal(t, o)), None)
    order = [index(t) for t in got]
    if len(got) != len(orig):
        return [f"changed the length of the list {name} it was given, from {len(orig)} to {len(got)} items "
                f"(an append, pop or del on {name})"]
    if order == list(range(len(orig))):
        return []
    if order == list(range(len(orig)))[::-1]:
        return [f"reversed the list {name} it was given, in place ({name}.reverse())"]
    if None not in order and sorted(order) == list(range(len(orig))):
        return [f"reordered the list {name} it was given, in place ({name}.sort() or item assignment)"]
    return [f"changed the items of the list {name} it was given (an item assignment or an in-place op on "
            f"{name}[i])"]


@dataclass
class Run:
    events: list[tuple[tuple, Any]]  # ((kind, name, call index), value) in call order
    output: Any = None
    error: BaseException | None = None
    open: str | None = None  # the hooked module being run when the error came
    hooked: frozenset[str] = frozenset()  # the submodules whose calls were recorded


def record(module: Any, run: Callable[[Any, tuple], Any], args: tuple, plan: Plan) -> Run:
    """Run ``run(module, args)`` with forward hooks on the plan's submodules, recording each
    call's input (arguments) and output in order; an error is kept, not raised."""
    events: list = []
    ins, outs = Counter(), Counter()
    stack: list[str] = []
    handles = []
    hooked = _hooked(module, plan.depth) if isinstance(module, nn.Module) else []
    for name in hooked:
        sub = module.get_submodule(name)

        def pre(m, a, kw, name=name):
            events.append((("in", name, ins[name]), snapshot((a, kw) if kw else a)))
            ins[name] += 1
            stack.append(name)

        def post(m, a, kw, out, name=name):
            events.append((("out", name, outs[name]), snapshot(out)))
            outs[name] += 1
            if stack and stack[-1] == name:
                stack.pop()
        handles += [sub.register_forward_pre_hook(pre, with_kwargs=True),
                    sub.register_forward_hook(post, with_kwargs=True)]
    result = Run(events, hooked=frozenset(hooked))
    try:
        with torch.no_grad():
            result.output = snapshot(run(module, args))
    except Exception as e:  # the learner's error: where it came is part of the report
        result.error, result.open = e, (stack[-1] if stack else None)
    finally:
        for h in handles:
            h.remove()
    return result


# --- comparing ----------------------------------------------------------------------------------

@dataclass
class Difference:
    text: str
    shape: bool = False  # a shape (or a length) differs


def differ(got: Any, want: Any) -> Difference | None:
    """How ``got`` differs from ``want`` (None: it does not, at the hidden tests' tolerance)."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return Difference(f"a {type(got).__name__} where the reference's is a tensor", True)
        if got.shape != want.shape:
            return Difference(f"shape {tuple(got.shape)} where the reference's is {tuple(want.shape)}", True)
        g, w = got.double(), want.double()
        if torch.allclose(g, w, atol=ATOL, rtol=RTOL, equal_nan=True):
            return None
        text = f"same shape {tuple(want.shape)}, max |diff| {(g - w).abs().max().item():.2g}"
        if g.numel() > 1 and torch.allclose(g.flatten().sort().values, w.flatten().sort().values,
                                            atol=ATOL, rtol=RTOL):
            text += ("; the same numbers in another order: an axis order problem (a reshape without a "
                     "permute, axes swapped in an einops pattern or a transpose, H and W swapped, heads or "
                     "blocks of channels merged in another order)")
        return Difference(text)
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return Difference(f"a {type(got).__name__} where the reference's is a {type(want).__name__}", True)
        if len(got) != len(want):
            return Difference(f"{len(got)} items where the reference's has {len(want)}", True)
        for i, (g, w) in enumerate(zip(got, want)):
            d = differ(g, w)
            if d:
                nested = re.match(r"item ((?:\[\d+\])+): ", d.text)  # item [1][0]: rather than item 1: item 0:
                text = f"item [{i}]{nested.group(1)}: {d.text[nested.end():]}" if nested else f"item [{i}]: {d.text}"
                return Difference(text, d.shape) if len(want) > 1 else d
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or got.keys() != want.keys():
            return Difference(f"the keyword arguments {sorted(got) if isinstance(got, dict) else got!r} where the "
                              f"reference's are {sorted(want)}")
        return differ(tuple(got.values()), tuple(want.values()))
    return None if got == want else Difference(f"{got!r} where the reference's is {want!r}")


def _step(plan: Plan, kind: str, name: str) -> str | None:
    key = f"{kind}:{name}"
    for pattern, text in plan.steps.items():
        if re.fullmatch(re.escape(pattern).replace(r"\*", r"\d+"), key if kind == "in" else name):
            return text
    return None


def _point(kind: str, name: str) -> str:
    return {"in": f"the input to {_shown(name)}", "out": f"the output of {_shown(name)}"}.get(kind, name)


def _items(value: Any, plan: Plan) -> list[tuple[str, str | None, Any]]:
    """The output's items, labelled by the plan: (label, made before, value)."""
    labels = plan.outputs
    if len(labels) > 1 and isinstance(value, (tuple, list)) and len(value) == len(labels):
        return [(label, before, v) for (label, before), v in zip(labels, value)]
    return [(labels[0][0], None, value)]


def _times(n: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(n, f"{n} times")


def compare_runs(mine: Run, ref: Run, plan: Plan) -> tuple[list[str], bool]:
    """Where ``mine`` first parts from ``ref``: report lines, and whether a shape differs. Calls of the
    learner's submodules the reference lacks (``self.act = nn.GELU()`` for ``F.gelu``) are left out."""
    mine = dataclasses.replace(mine, events=[e for e in mine.events if e[0][1] in ref.hooked])
    ref_events = list(ref.events)
    for label, before, value in _items(ref.output, plan):  # the contract's tensors, where they are made
        at = next((i for i, (key, _) in enumerate(ref_events) if key[:2] == ("in", before)), len(ref_events))
        ref_events.insert(at, (("val", label, 0), value))
    got = dict(mine.events)
    if mine.error is None:
        got.update({("val", label, 0): v for label, _, v in _items(mine.output, plan)})
    calls_mine = Counter(k[1] for k in got if k[0] == "in")
    calls_ref = Counter(k[1] for k, _ in ref_events if k[0] == "in")
    matched: list[str] = []
    last = None  # the last point that matches
    skipped: list[str] = []  # layers forward never calls: their step may be written another way
    for j, ((kind, name, k), want) in enumerate(ref_events):
        if (kind, name, k) not in got:
            if mine.error is not None:
                return _crashed(matched, mine, ref, last, kind, name), False
            if kind == "val":
                return [_matched(matched) + f"{name} is missing from what forward returns."], True
            if calls_mine[name] == 0:  # not called at all: judge what comes out where its step is
                skipped += [name] if name not in skipped else []
                continue
            return [_matched(matched) + _calls(name, calls_mine[name], calls_ref[name])
                    + _before(plan, "in", name, k)], False
        d = differ(got[(kind, name, k)], want)
        more = [n for n in calls_mine if calls_mine[n] > calls_ref[n]]
        if d and kind == "val" and more:  # all calls right, and one more: that is the difference
            return [_matched(matched) + "but " + _calls(more[0], calls_mine[more[0]], calls_ref[more[0]]) + "."], False
        if d and (wrong := _out_of_place(mine, ref_events, j, calls_mine, calls_ref)):
            return [(_matched(matched) + "but " + wrong if matched else wrong) + "."], False
        if d:
            what = _point(kind, name) + (f" (call {k + 1})" if calls_ref[name] > 1 else "")
            verb = "differ" if kind == "val" and name.endswith("s") else "differs"
            lines = [_matched(matched) + f"{what} {verb} ({d.text})."]
            if skipped:
                lines.append(_not_called(skipped[0], calls_ref[skipped[0]], plan))
            elif kind == "out":
                lines.append(f"Its input matches, so {_shown(name)} itself computes something else than the "
                             "reference's: compare how it is built and called (its settings and arguments; the "
                             "weights were copied from the reference).")
            else:
                step = _step(plan, kind, name)
                if step:
                    lines.append(f"Just before {'it' if kind == 'val' else _shown(name)} comes {step}: look there.")
            return lines, d.shape
        last = (kind, name, k)
        if kind in ("out", "val") and _shown(name) not in matched:
            matched.append(_shown(name))
    if mine.error is not None:
        return _crashed(matched, mine, ref, last, None, None), False
    extra = [n for n in calls_mine if calls_mine[n] > calls_ref[n]]
    if extra:
        return [_matched(matched) + "but " + _calls(extra[0], calls_mine[extra[0]], calls_ref[extra[0]]) + "."], False
    if skipped:  # everything that is compared matches: only the call is missing
        name = skipped[0]
        return [_matched(matched) + _calls(name, 0, calls_ref[name]) + _before(plan, "in", name, 0)], False
    return [], False


def _out_of_place(mine: Run, ref_events: list, j: int, calls_mine: Counter, calls_ref: Counter) -> str | None:
    """Why the learner's run parts from the reference's at ``ref_events[j]``, where that is a call
    made before it: a layer called once more than the reference calls it ("norm is called
    twice"), or the same calls in another order ("classifier is called before dropout")."""
    kind, name, k = ref_events[j][0]
    order = [key for key, _ in mine.events]
    at = order.index((kind, name, k)) if (kind, name, k) in order else len(order)
    for n in calls_mine:
        if calls_mine[n] > calls_ref[n] and order.index(("in", n, calls_ref[n])) < at:
            return _calls(n, calls_mine[n], calls_ref[n])
    mine_in = [key[1] for key in order if key[0] == "in"]
    ref_in = [key[1] for key, _ in ref_events if key[0] == "in"]
    if calls_mine != calls_ref or mine_in == ref_in:
        return None
    first = next(i for i, (a, b) in enumerate(zip(mine_in, ref_in)) if a != b)
    reached = sum(key[0] == "in" for key, _ in ref_events[:j]) + (kind == "in")  # the reference's calls so far
    if first >= reached:
        return None
    a, b = _shown(mine_in[first]), _shown(ref_in[first])
    return f"{a} is called before {b}, where the reference calls {b} first"


def _not_called(name: str, ref_calls: int, plan: Plan) -> str:
    """A layer forward never calls, said as a fact: doing its step another way is no mistake."""
    step = _step(plan, "in", name)
    return (f"forward never calls {_shown(name)}, where the reference calls it {_times(ref_calls)}"
            + (f" (on {step})" if step else "") + ". Doing its step without calling it (a function of "
            "torch.nn.functional, with the layer's own settings and weights) is fine when it computes the "
            "same; here what comes out differs, so look at that step: is it there, what does it compute, over "
            "which axes, with which weights?")


def _calls(name: str, mine: int, ref: int) -> str:
    if mine == 0:
        return f"{_shown(name)} is never called, where the reference calls it {_times(ref)}"
    return f"{_shown(name)} is called {_times(mine)}, where the reference calls it {_times(ref)}"


def _before(plan: Plan, kind: str, name: str, k: int) -> str:
    step = _step(plan, kind, name)
    return f" (on {step})." if step else "."


def _matched(matched: list[str]) -> str:
    if not matched:
        return ""
    if len(matched) > 6:
        return f"Everything up to {matched[-1]} matches ({len(matched)} steps); "
    listed = matched[0] if len(matched) == 1 else ", ".join(matched[:-1]) + " and " + matched[-1]
    return f"{listed} match{'es' if len(matched) == 1 else ''}; "


def _crashed(matched: list[str], mine: Run, ref: Run, last: tuple | None, kind: str | None,
             name: str | None) -> list[str]:
    if mine.open:
        k = max(key[2] for key, _ in mine.events if key[:2] == ("in", mine.open))
        theirs = dict(ref.events).get(("in", mine.open, k))
        ours = next(v for key, v in mine.events if key == ("in", mine.open, k))
        where = f" inside {_shown(mine.open)}"
        if name and name != mine.open and kind == "in":  # called before a layer the reference calls first
            where += f", called before {_shown(name)} (the reference calls {_shown(name)} first)"
        if theirs is None:
            times = sum(key[:2] == ("in", mine.open) for key, _ in ref.events)
            where += f" (call {k + 1}), which the reference calls {_times(times)}"
        else:
            d = differ(ours, theirs)
            where += ", whose input matches" if d is None else f", whose input differs from the reference's ({d.text})"
    else:
        where = (f" after {_point(*last[:2])}" if last else "") + (  # a value forward returns is not recorded
            f", where {_point(kind, name)} {'are' if name.endswith('s') else 'is'} made or later" if kind == "val"
            else f" and before {_point(kind, name)}" if name else "")
    return [_matched(matched) + f"your code raised{where} (its line is shown below)."]


def _localise(case: Case, plan: Plan) -> tuple[list[str], bool]:
    def run(module, args):
        if case.run is not None:
            return case.run(module, *args, **plan.kwargs)
        return module(*args, **plan.kwargs)
    try:
        ref = record(case.reference, run, copies(case.args), plan)
        mine = record(case.student, run, copies(case.args), plan)
    except Exception:  # localising must never hide the report it belongs to
        return [], False
    if ref.error is not None:
        return [], False
    return compare_runs(mine, ref, plan)


def where_it_differs(error: BaseException | None = None) -> tuple[list[str], bool]:
    """Localise the current case: report lines and whether a shape differs. ``error``: the
    learner's code raised it (localised up to the point it came)."""
    if not _sessions or _sessions[-1].case is None:
        return [], False
    case = _sessions[-1].case
    plan = _plan(case.reference)

    lines, shape = _localise(case, plan)
    if not lines and plan.kwargs:  # right with the contract's options (return_attention=True), wrong without
        lines, shape = _localise(case, Plan(plan.depth, {}, (("the output", None),), plan.steps))
        if lines:
            shown = ", ".join(f"{k}={v!r}" for k, v in plan.kwargs.items())
            lines[0] = f"with {shown} everything matches; without it, " + lines[0][0].lower() + lines[0][1:]
    if lines:
        first = lines[0].replace("Everything up to", "everything up to", 1)
        lines[0] = "Step by step beside the reference, on that input: " + first
    return lines, shape

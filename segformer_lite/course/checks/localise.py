"""Where a wrong answer first parts from the reference, and how a failed check is shown.

When the learner's output differs from the reference's, the checker runs both once more on the
same inputs (each on its own copy) with forward hooks on the named submodules the skeleton gives
(``q``, ``kv``, ``sr``, ``norm``, ``proj``; ``fc1``, ``dwconv``, ``fc2``; ``linear_c[i]``,
``fuse``, ...), recording the input and the output of every call, plus the tensors the contract
exposes (the attention weights, each stage's feature map, the grid). Walking the reference's
calls in order, the first recorded value that differs is where the two part: "q, kv and the
attention weights match; the input to proj differs (same shape (2, 64, 16), max |diff| 0.8; the
same numbers in another order: ...)", followed by what happens just before that point in the
skeleton (:data:`PLANS`).

Also here:

* the cases of one check (:func:`cases`): a check goes on after an uncatalogued wrong output and
  says which of its inputs pass and which fail ("passes with num_heads=1 and fails with
  num_heads=2, 3 and 4");
* the hints, which teach before they tell (:func:`hint_lines`): the first time a catalogued
  mistake is named, the report says what it is and why it is one; the fix, as code, comes when
  the same mistake comes back (:data:`SEEN` counts, per mistake id; :func:`reset` clears it);
* the learner's arguments (:func:`copies`, :func:`changed`): the learner gets copies, the
  reference the originals, and a changed copy is named ("reversed the list feats in place");
* the rendering of a failure (:func:`render`): IPython shows a :class:`harness.Report` through
  its ``_render_traceback_``, so a wrong result is one short report and a crash shows the
  learner's own frames (none from this package's checkers, torch or einops) after the hint.
"""
from __future__ import annotations

import contextlib
import inspect
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ...attention import EfficientSelfAttention
from ...block import Block
from ...decoder import AllMLPDecoder
from ...encoder import MixTransformer, Stage
from ...mix_ffn import MixFFN
from ...patch_embed import OverlapPatchEmbed
from ...tokens import image_to_tokens, tokens_to_image
from .mistakes import MISTAKES, WHY

ATOL, RTOL = 1e-5, 1e-4  # harness.ATOL, harness.RTOL (the hidden tests' tolerance)
SHAPE_ADVICE = ("A shape differs: print the shape of every intermediate tensor and compare with the "
                "notebook's shape trace.")


# --- what the skeleton names, per exercise -----------------------------------------------------

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


def record(module: Any, run: Callable[[Any, tuple], Any], args: tuple, plan: Plan) -> Run:
    """Run ``run(module, args)`` with forward hooks on the plan's submodules, recording each
    call's input (arguments) and output in order; an error is kept, not raised."""
    events: list = []
    ins, outs = Counter(), Counter()
    stack: list[str] = []
    handles = []
    if isinstance(module, nn.Module):
        for name in _hooked(module, plan.depth):
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
    result = Run(events)
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
                     "permute, axes swapped in an einops pattern or a transpose, H and W swapped, heads "
                     "merged in another order)")
        return Difference(text)
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return Difference(f"a {type(got).__name__} where the reference's is a {type(want).__name__}", True)
        if len(got) != len(want):
            return Difference(f"{len(got)} items where the reference's has {len(want)}", True)
        for i, (g, w) in enumerate(zip(got, want)):
            d = differ(g, w)
            if d:
                return Difference(f"item {i}: {d.text}" if len(want) > 1 else d.text, d.shape)
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
    """Where ``mine`` first parts from ``ref``: report lines, and whether a shape differs."""
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
    for (kind, name, k), want in ref_events:
        if (kind, name, k) not in got:
            if mine.error is not None:
                return _crashed(matched, mine, last, kind, name), False
            if kind == "val":
                return [_matched(matched) + f"{name} is missing from what forward returns."], True
            return [_matched(matched) + _calls(name, calls_mine[name], calls_ref[name])
                    + _before(plan, "in", name, k)], False
        d = differ(got[(kind, name, k)], want)
        more = [n for n in calls_mine if calls_mine[n] > calls_ref[n]]
        if d and kind == "val" and more:  # all calls right, and one more: that is the difference
            return [_matched(matched) + "but " + _calls(more[0], calls_mine[more[0]], calls_ref[more[0]]) + "."], False
        if d:
            what = _point(kind, name) + (f" (call {k + 1})" if calls_ref[name] > 1 else "")
            verb = "differ" if kind == "val" and name.endswith("s") else "differs"
            lines = [_matched(matched) + f"{what} {verb} ({d.text})."]
            if kind == "out":
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
        return _crashed(matched, mine, last, None, None), False
    extra = [n for n in calls_mine if calls_mine[n] > calls_ref[n]]
    if extra:
        return [_matched(matched) + "but " + _calls(extra[0], calls_mine[extra[0]], calls_ref[extra[0]]) + "."], False
    return [], False


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


def _crashed(matched: list[str], mine: Run, last: tuple | None, kind: str | None, name: str | None) -> list[str]:
    if mine.open:
        where = f" inside {_shown(mine.open)}, whose input matches"
    else:
        where = (f" after {_point(*last[:2])}" if last else "") + (f" and before {_point(kind, name)}" if name else "")
    return [_matched(matched) + f"your code raised{where} (its line is shown below)."]


# --- one case of a check ------------------------------------------------------------------------

@dataclass
class Case:
    student: Any
    reference: Any
    args: tuple
    run: Callable[..., Any] | None = None  # run(module, *args): e.g. with a fixed seed

    def attributes(self) -> dict[str, Any]:
        """What tells this case from the others: heads, sr_ratio, mode, grid."""
        found = {}
        ref = self.reference
        attn = getattr(ref, "attn", ref)
        for attr in ("num_heads", "sr_ratio"):
            if isinstance(getattr(attn, attr, None), int):
                found[attr] = getattr(attn, attr)
        if isinstance(ref, nn.Module):
            found["mode"] = "training" if ref.training else "eval"
        grid = next((tuple(a) for a in self.args if isinstance(a, tuple) and len(a) == 2
                     and all(type(v) is int for v in a)), None)
        if grid is None:
            first = self.args[0][0] if self.args and isinstance(self.args[0], list) else (self.args or [None])[0]
            if isinstance(first, torch.Tensor) and first.ndim == 4:
                grid = tuple(first.shape[-2:])
        if grid:
            found["grid"] = grid
        return found


@dataclass
class _Session:
    title: str
    case: Case | None = None
    rows: dict[str, tuple[dict, str | None]] = field(default_factory=dict)  # where -> (attributes, failure)
    first: Any = None  # the first deferred report
    notes: list[str] = field(default_factory=list)  # what the learner's code did to its arguments
    said: list[str] = field(default_factory=list)  # the changes those notes describe, names left out


_sessions: list[_Session] = []


def set_case(student: Any, reference: Any, args: tuple, run: Callable[..., Any] | None = None) -> None:
    """The case the next comparison is about (a checker calls this before calling the learner)."""
    if _sessions:
        _sessions[-1].case = Case(student, reference, args, run)


def failing() -> bool:
    """Whether the running check has kept a failure (it will fail whatever comes next)."""
    return bool(_sessions) and _sessions[-1].first is not None


def note(done: list[str]) -> None:
    """Remember what the learner's code did to a list it was given, for the reports that follow."""
    if _sessions:
        for d in done:
            name = re.search(r"the list (\w+)", d).group(1)
            text = (f"Note: forward {d}, so the caller's list changed with it. Leave the caller's list alone: "
                    f"build a new one ({name}[::-1], list(reversed({name})), [... for f in {name}]).")
            change = re.sub(r"\b" + re.escape(name) + r"\b", "_", d)  # once per change, whatever a
            if change not in _sessions[-1].said:                          # wrapper called the argument
                _sessions[-1].said.append(change)
                _sessions[-1].notes.append(text)


def notes() -> list[str]:
    return list(_sessions[-1].notes) if _sessions else []


def verdict(where: str, failure: str | None) -> None:
    """One case's result, for the summary of which cases pass and which fail."""
    if _sessions:
        s = _sessions[-1]
        attrs = dict(s.case.attributes()) if s.case else {}
        option = re.search(r" with (\w+)=True$", where)  # the contract's option, e.g. return_attention=True
        attrs["called"] = f"with {option.group(1)}=True" if option else "without options"
        if where not in s.rows or failure:
            s.rows[where] = (attrs, failure)


def defer(report: Exception, where: str) -> bool:
    """Keep an uncatalogued wrong output and go on to the next case (True), or not (False: no check
    is running)."""
    if not _sessions:
        return False
    verdict(where, str(report).splitlines()[0])
    if _sessions[-1].first is None:
        _sessions[-1].first = report
    return True


@contextlib.contextmanager
def cases(title: str):
    """Collect the cases of one check; on leaving, raise the first deferred failure with the
    summary of which cases pass and which fail."""
    from .harness import Report

    s = _Session(title)
    _sessions.append(s)
    try:
        yield s
    except Report as later:
        if s.first is None:
            raise
        line = str(later).splitlines()[0]
        key = next((w for w in s.rows if w in line), "(a later input)")  # a failing case, not a passing one
        s.rows[key] = (s.rows.get(key, ({}, None))[0], line)
        raise _final(s) from None
    finally:
        _sessions.remove(s)
    if s.first is not None:
        raise _final(s)


def _final(s: _Session):
    from .harness import Report

    head, *rest = str(s.first).splitlines()
    report = Report("\n".join([head, summary(s.rows), *rest]))
    report.__cause__ = s.first.__cause__
    return report


def _values(vs) -> str:
    vs = sorted(set(vs))
    shown = [f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v) for v in vs]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def summary(rows: dict[str, tuple[dict, str | None]]) -> str:
    """Which cases pass and which fail, by the attribute that tells them apart where one does."""
    passed = [a for a, f in rows.values() if f is None]
    failed = [a for a, f in rows.values() if f is not None]
    if not passed:
        return f"Cases: it fails on all {len(failed)} inputs tried." if len(failed) > 1 else "Cases: one input tried."
    for attr in ("called", "num_heads", "sr_ratio", "mode", "square", "grid"):
        def value(a):
            return (a["grid"][0] == a["grid"][1]) if attr == "square" and "grid" in a else a.get(attr)
        ok, bad = {value(a) for a in passed}, {value(a) for a in failed}
        if None in ok | bad or ok & bad:
            continue
        if attr == "square":
            good = "square" if True in ok else "non-square"
            return (f"Cases: it passes on {good} grids ({_values(a['grid'] for a in passed)}) and fails on "
                    f"{'non-square' if good == 'square' else 'square'} ones ({_values(a['grid'] for a in failed)}).")
        if attr == "called":
            return f"Cases: it passes when called {_values(ok)} and fails when called {_values(bad)}."
        if attr == "mode":
            return f"Cases: it passes in {_values(ok)} mode and fails in {_values(bad)} mode."
        if attr == "grid":
            return f"Cases: it passes on the grids {_values(ok)} and fails on {_values(bad)}."
        return f"Cases: it passes with {attr}={_values(ok)} and fails with {attr}={_values(bad)}."
    def some(wheres: list[str]) -> str:
        return "; ".join(wheres[:2]) + (f" (and {len(wheres) - 2} more)" if len(wheres) > 2 else "")

    fails = [w for w, (_, f) in rows.items() if f is not None]
    passes = [w for w, (_, f) in rows.items() if f is None]
    return (f"Cases: {len(passed)} of {len(rows)} inputs pass, {some(passes)}; it fails {some(fails)}.")


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


# --- hints: teach before telling -----------------------------------------------------------------

SEEN: Counter = Counter()  # mistake id -> how many reports have named it


def reset() -> None:
    """Forget which mistakes were named (tests call this; so can a learner)."""
    SEEN.clear()


def hint_lines(m_id: str, catalogue: dict = MISTAKES) -> list[str]:
    """The first time: the mistake and why it is one; from the second time on, the fix too."""
    m = catalogue[m_id]
    SEEN[m_id] += 1
    lines = [f"Likely mistake: {m.title}."]
    why = WHY.get(m_id) if catalogue is MISTAKES else None
    if why and SEEN[m_id] == 1:
        return lines + [f"  Why it is one: {why}.",
                        "  Put it right yourself and run the check again; if the same mistake comes back, "
                        "the check shows the fix."]
    return lines + [f"  How to fix: {m.fix}."]


# --- showing a failure --------------------------------------------------------------------------

_HIDDEN = [Path(__file__).resolve().parent, Path(torch.__file__).resolve().parent]
with contextlib.suppress(ImportError):
    import einops
    _HIDDEN.append(Path(einops.__file__).resolve().parent)


def _learners(tb) -> traceback.StackSummary:
    """The frames of ``tb`` outside this package's checkers, torch and einops."""
    frames = traceback.extract_tb(tb)
    keep = [f for f in frames if not any(str(Path(f.filename).resolve()).startswith(str(h)) for h in _HIDDEN)]
    return traceback.StackSummary.from_list(keep)


def _cell_names(frames: traceback.StackSummary) -> traceback.StackSummary:
    """Notebook cells named as IPython names them ("Cell In[3]"), not by their temporary file."""
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None:
        return frames
    for f in frames:
        label = shell.compile.format_code_name(f.filename)
        if label:
            f.filename = " ".join(label)
    return frames


def render(report: BaseException) -> list[str]:
    """The lines IPython shows for a failed check: the report, then, when the learner's code
    raised, its own frames and the error."""
    lines = str(report).splitlines()
    cause = report.__cause__
    if cause is not None and cause.__traceback__ is not None:
        frames = _cell_names(_learners(cause.__traceback__))
        if frames:
            lines += ["", "Where your code raised it:", *"".join(frames.format()).rstrip("\n").splitlines()]
        lines += traceback.format_exception_only(type(cause), cause)[-1].rstrip("\n").splitlines()
    return lines

"""The cases of one check: which of its inputs pass and which fail.

A check goes on after an uncatalogued wrong output (:func:`defer`) and, on leaving :func:`cases`,
raises the first one kept with a summary of which inputs pass and which fail ("passes with
num_heads=1 and fails with num_heads=2, 3 and 4", :func:`summary`). The running check's session
also holds the case being compared (:func:`set_case`, for :mod:`localise`) and the notes on what
the learner's code did to a list it was given (:func:`note`, :func:`notes`).
"""
from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .report import SEEN, Report


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
    layers: Callable[[], Report] | None = None  # makes the report on the layers of the module just built
    blamed: Callable[[], Report] | None = None  # ... of the module that gave the first deferred failure


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


def layers_differ(report: Callable[[], Report] | None) -> bool:
    """Keep what makes the report on the layers of the module just built (None: they compute what
    the reference's do): that report is raised in place of the check's first failure, and
    forgotten when the module passes, since layers written another way that together compute the
    same are right (False: no check is running, so the caller raises it now)."""
    if not _sessions:
        return False
    _sessions[-1].layers = report and functools.partial(_layer_report, report, Counter(SEEN))
    return True


def _layer_report(report: Callable[[], Report], seen: Counter) -> Report:
    """The report on the layers, raised in place of the reports made since they were kept: the
    hints those named are counted as never shown (:data:`report.SEEN`)."""
    SEEN.clear()
    SEEN.update(seen)
    return report()


def defer(report: Exception, where: str) -> bool:
    """Keep an uncatalogued wrong output and go on to the next case (True), or not (False: no check
    is running)."""
    if not _sessions:
        return False
    verdict(where, str(report).splitlines()[0])
    if _sessions[-1].first is None:
        _sessions[-1].first, _sessions[-1].blamed = report, _sessions[-1].layers
    return True


@contextlib.contextmanager
def cases(title: str):
    """Collect the cases of one check; on leaving, raise the first deferred failure with the
    summary of which cases pass and which fail, or, where the failing module's layers compute
    something else than the reference's (:func:`layers_differ`), the report on its layers."""
    s = _Session(title)
    _sessions.append(s)
    try:
        yield s
    except Report as later:
        blamed = s.layers if s.first is None else s.blamed
        if blamed is not None:
            raise blamed() from None
        if s.first is None:
            raise
        line = str(later).splitlines()[0]
        key = next((w for w in s.rows if w in line), "on a later input")  # a failing case, not a passing one
        s.rows[key] = (s.rows.get(key, ({}, None))[0], line)
        raise _final(s) from None
    finally:
        _sessions.remove(s)
    if s.first is not None:
        raise s.blamed() if s.blamed is not None else _final(s)


def _final(s: _Session):
    head, *rest = str(s.first).splitlines()
    report = Report("\n".join([head, summary(s.rows), *rest]))
    report.__cause__ = s.first.__cause__
    return report


def _values(vs) -> str:
    vs = sorted(set(vs))
    shown = [f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v) for v in vs]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _separates(attr: str, passed: list[dict], failed: list[dict]) -> bool:
    """Whether ``attr`` has other values in the passing cases than in the failing ones."""
    ok, bad = {a.get(attr) for a in passed}, {a.get(attr) for a in failed}
    return None not in ok | bad and not ok & bad


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
        if attr == "num_heads" and _separates("sr_ratio", passed, failed):  # either may be the cause (a norm
            both = [", ".join(f"{k}={_values(a[k] for a in group)}" for k in ("num_heads", "sr_ratio"))  # of the
                    for group in (passed, failed)]                              # reduction fails wherever sr > 1)
            return f"Cases: it passes with {both[0]} and fails with {both[1]}."
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

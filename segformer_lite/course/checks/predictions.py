"""Checkers for predictions: the learner commits to an answer before a cell measures it, and a
graded cell compares the two.

A prediction is written as a function that returns it, so that the student version (whose answer
nbgrader replaces by ``raise NotImplementedError()``) still runs top to bottom::

    def erase_prediction():
        ### BEGIN SOLUTION
        return "band"
        ### END SOLUTION

The graded cell, placed after the cell that measures, passes the function (or a plain value) and
what the notebook measured:

* :func:`check_prediction`: one option from a listed set (a verdict such as ``"band"``), or a set
  of options when ``measured`` is a set (which models beat a ceiling);
* :func:`check_number`: a number, or a tuple of numbers, within an absolute tolerance;
* :func:`check_interval`: an interval ``(lo, hi)`` worked out by hand, each end within a tolerance;
* :func:`interval_verdict` and :func:`which_bin`: the option a measurement supports, from two
  intervals (which is larger, or neither when they overlap) or from a number and bin edges.

Three outcomes, none of which stops the notebook:

* right: one line on stdout starting with ``✓``, then what was measured;
* not answered yet (the function still raises ``NotImplementedError``, or the value passed is
  ``None`` or ``...``): a note on **stderr**, telling nothing;
* wrong, or malformed (not one of the options, the wrong count of numbers, a function returning
  ``None``): a report on **stderr** starting with ``✗`` (:func:`wrong`). A wrong answer hears the
  measurement and why, and is told to keep its prediction as written; an answer outside the options
  hears the options, never the measured one.

nbgrader scores a graded code cell zero when it writes to stderr, so a wrong prediction scores zero
while "Run All" goes on to the next measurement: the only way to the point is to predict right,
not to edit the prediction until the notebook runs on. A mistake of the notebook's author (a title
that is not a str, a measured option that is not an option) still raises ``TypeError`` or
``ValueError``.
"""
from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["wrong", "raised", "check_prediction", "check_number", "check_interval", "interval_verdict",
           "which_bin"]

_UNANSWERED = object()
_NO_RETURN = object()


class _Raised:
    """What :func:`_read` returns for a function that raised: the error, reported by :func:`_no_answer`."""

    def __init__(self, error: Exception):
        self.error = error


def wrong(message: str, *, revealed: bool) -> None:
    """Report a wrong or malformed answer on stderr, which nbgrader scores zero, without stopping the
    notebook. ``revealed``: the message tells the measurement, so the learner is asked to keep the
    answer as written; otherwise they may correct it and re-run the cell."""
    note = ("Marked zero; the notebook goes on. Keep your answer as you wrote it: the measurement is the "
            "lesson, not an answer to copy in." if revealed else
            "Marked zero as it stands; the notebook goes on. You may correct your answer and re-run this cell.")
    print(f"✗ {message}\n  {note}", file=sys.stderr)


def raised(title: str, error: BaseException) -> None:
    """Report an error raised inside the learner's own function like a wrong answer (stderr, marked
    zero, the notebook goes on), with the learner's frames only: none of the checker's."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "segformer_lite/course/checks" not in f.filename.replace("\\", "/")]
    where = "".join(traceback.format_list(frames)).rstrip()
    wrong(f"{title}: your function raised {type(error).__name__}: {error}" + (f"\n{where}" if where else ""),
          revealed=False)


def _read(answer: Any) -> Any:
    """The learner's answer: ``answer()`` when it is a function, else ``answer`` itself;
    ``_UNANSWERED`` for a function still raising ``NotImplementedError``, ``None`` or ``...``;
    ``_NO_RETURN`` for a function that returned ``None`` (written, but without a ``return``)."""
    if callable(answer):
        try:
            answer = answer()
        except NotImplementedError:
            return _UNANSWERED
        except Exception as error:  # a bug in the learner's function: said, and the notebook goes on
            return _Raised(error)
        if answer is None:  # a written function without a return: not the same as an unanswered one
            return _NO_RETURN
    return _UNANSWERED if answer is None or answer is Ellipsis else answer


def _no_answer(title: str, got: Any) -> bool:
    """True, after saying so on stderr, when the learner has not answered (or forgot the return)."""
    if isinstance(got, _Raised):
        raised(title, got.error)
        return True
    if got is _NO_RETURN:
        wrong(f"{title}: your prediction function returned None: end it with return and your answer.", revealed=False)
    elif got is _UNANSWERED:
        print(f"{title}: not answered yet (your prediction cell still raises NotImplementedError). "
              "Write your prediction there, then re-run it and this cell.", file=sys.stderr)
    return got is _NO_RETURN or got is _UNANSWERED


def _title(title: Any) -> str:
    if not isinstance(title, str) or not title:
        raise TypeError(f"title must be a non-empty str naming the prediction, got {title!r}")
    return title


def _tail(why: str) -> str:
    return f" {why}" if why else ""


def check_prediction(answer: Any, measured: Any, options: Sequence[str], *, title: str, why: str = "") -> None:
    """Grade a prediction that picks from ``options`` against ``measured``, the option the
    measurement supports. When ``measured`` is a set (or frozenset) of options, the answer must be
    a collection of options too, and is right when it holds exactly those. ``why``: what was
    measured, in words and numbers, shown only once the learner has answered."""
    title = _title(title)
    options = list(options)
    if not options or not all(isinstance(o, str) for o in options):
        raise TypeError(f"options must be a non-empty list of str, got {options!r}")
    several = isinstance(measured, (set, frozenset))
    expected = set(measured) if several else {measured}
    if not expected <= set(options) or (not several and len(expected) != 1):
        raise ValueError(f"measured {measured!r} is not {'a set of' if several else 'one of the'} options {options}")
    got = _read(answer)
    if _no_answer(title, got):
        return
    listed = ", ".join(repr(o) for o in options)
    if several:
        if isinstance(got, str) or not isinstance(got, Iterable):
            return wrong(f"{title}: your answer {got!r} is not a set of options; return a set "
                         f"such as {{{options[0]!r}}} (or set() for none) drawn from: {listed}", revealed=False)
        got = set(got)
        unknown = sorted(map(repr, got - set(options)))
        if unknown:
            return wrong(f"{title}: {', '.join(unknown)} not among the options: {listed}", revealed=False)
        said = "{" + ", ".join(repr(o) for o in options if o in got) + "}" if got else "none of them"
        right = "{" + ", ".join(repr(o) for o in options if o in expected) + "}" if expected else "none of them"
    else:
        if got not in options:
            return wrong(f"{title}: your answer {got!r} is not one of the options: {listed}", revealed=False)
        got, said, right = {got}, repr(got), repr(measured)
    if got != expected:
        return wrong(f"{title}: you predicted {said}; the measurement says {right}.{_tail(why)}", revealed=True)
    print(f"✓ {title}: you predicted {said}, and the measurement agrees.{_tail(why)}")


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if hasattr(value, "tolist"):  # a numpy array or scalar, a tensor
        value = value.tolist()
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not items or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                            for v in items):
        raise TypeError(f"{what} must be a finite number or a tuple of them, got {value!r}")
    return tuple(float(v) for v in items)


def _fmt(values: tuple[float, ...]) -> str:
    text = ", ".join(f"{v:g}" for v in values)
    return f"({text})" if len(values) > 1 else text


def check_number(answer: Any, measured: Any, *, tol: float, title: str, why: str = "") -> None:
    """Grade a number (or a tuple of numbers) against ``measured``: right when every one lies
    within ``tol`` (absolute) of the measured one."""
    title = _title(title)
    if not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    expected = _numbers(measured, "measured")
    got = _read(answer)
    if _no_answer(title, got):
        return
    try:
        got = _numbers(got, "your answer")
    except TypeError as e:
        return wrong(f"{title}: {e}", revealed=False)
    if len(got) != len(expected):
        return wrong(f"{title}: your answer has {len(got)} number(s); {len(expected)} are asked for", revealed=False)
    if any(abs(g - e) > tol for g, e in zip(got, expected)):
        return wrong(f"{title}: you answered {_fmt(got)}; the measurement gives {_fmt(expected)} "
                     f"({f'accepted within ±{tol:g}' if tol else 'exactly'}).{_tail(why)}", revealed=True)
    print(f"✓ {title}: you answered {_fmt(got)}, and the measurement gives {_fmt(expected)}.{_tail(why)}")


def check_interval(answer: Any, measured: Sequence[float], *, tol: float, title: str, why: str = "") -> None:
    """Grade an interval ``(lo, hi)`` worked out by hand against the ``measured`` one: right when
    each end lies within ``tol`` (absolute) of the measured end."""
    title = _title(title)
    expected = _numbers(measured, "measured")
    if len(expected) != 2 or expected[0] > expected[1]:
        raise ValueError(f"measured must be an interval (lo, hi) with lo <= hi, got {measured!r}")
    got = _read(answer)
    if _no_answer(title, got):
        return
    try:
        got = _numbers(got, "your interval")
    except TypeError as e:
        return wrong(f"{title}: {e}", revealed=False)
    if len(got) != 2 or got[0] > got[1]:
        return wrong(f"{title}: your answer {_fmt(got)} is not an interval (lo, hi) with lo <= hi", revealed=False)
    check_number(got, expected, tol=tol, title=title, why=why)


def interval_verdict(first: Any, second: Any, labels: tuple[str, str, str]) -> str:
    """``labels[0]`` when the interval ``first`` lies wholly above ``second``, ``labels[1]`` when
    wholly below, ``labels[2]`` when they overlap. Each interval is ``(lo, hi)`` or has ``.lo`` and
    ``.hi`` (a :class:`~segformer_lite.course.resample.Interval`)."""
    if len(labels) != 3:
        raise ValueError(f"labels must name three outcomes (first higher, second higher, overlap), got {labels!r}")
    (a_lo, a_hi), (b_lo, b_hi) = (_ends(first), _ends(second))
    if a_lo > b_hi:
        return labels[0]
    if b_lo > a_hi:
        return labels[1]
    return labels[2]


def _ends(interval: Any) -> tuple[float, float]:
    lo, hi = (interval.lo, interval.hi) if hasattr(interval, "lo") else tuple(interval)
    lo, hi = float(lo), float(hi)
    if not lo <= hi:
        raise ValueError(f"an interval needs lo <= hi, got ({lo}, {hi})")
    return lo, hi


def which_bin(value: float, edges: Sequence[float], labels: Sequence[str]) -> str:
    """The label of the bin ``value`` falls in: ``labels[0]`` below ``edges[0]``, ``labels[i]``
    in ``[edges[i-1], edges[i])``, the last label from ``edges[-1]`` on."""
    edges, labels = list(edges), list(labels)
    if len(labels) != len(edges) + 1 or edges != sorted(edges):
        raise ValueError(f"need increasing edges and one label more than edges, got {edges} and {labels}")
    value = float(value)
    if math.isnan(value):
        raise ValueError("value is NaN")
    return labels[sum(value >= e for e in edges)]


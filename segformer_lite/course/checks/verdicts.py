"""Checkers for notebook 08's exercises, which grade decisions rather than modules: predicted
verdicts, a 95 % interval computed by hand, and an ``sr_ratio`` chosen under a memory budget.

Each ``check_*`` takes a function the learner writes (so that the student version, whose body is
``raise NotImplementedError()``, runs top to bottom) and has three outcomes, none of which stops
the notebook (as for notebook 07's predictions, :mod:`.predictions`):

* right: one line on stdout starting with ``✓``;
* unfinished (the function raises ``NotImplementedError``): "... not implemented yet" on stderr;
* wrong or malformed (a function returning ``None`` included): a report on stderr starting with
  ``✗`` (:func:`~.predictions.wrong`), saying what is wrong and what the notebook gives to work it
  out, never the answer itself.

nbgrader scores a graded code cell that writes to stderr zero. A mistake of the notebook's author
(passing the learner's answer instead of the function) still raises ``TypeError``.

A prediction has no right answer before the results are read, so :func:`check_predictions`
grades that one is recorded for every claim, from the listed verdicts; section 8 of the notebook
sets the learner's predictions beside the verdicts (:func:`compare_predictions`, not graded).
"""
from __future__ import annotations

import math
import numbers
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence

from ...training.stats import t975
from ..cost import attention_cost
from .predictions import raised, wrong

__all__ = ["VERDICTS", "check_predictions", "compare_predictions", "check_paired_interval", "check_sr_budget"]

VERDICTS = ("agrees", "disagrees", "inconclusive")


def _call(fn: Callable, title: str):
    """``fn()``, or None after the "not implemented yet" note when it raises NotImplementedError,
    or after a report saying so when it raises another error (its own frames, none of the checker's)
    or returns None (a forgotten ``return``)."""
    if not callable(fn):
        raise TypeError(f"{title}: pass the function you wrote (without calling it), got {type(fn).__name__}")
    try:
        got = fn()
    except NotImplementedError:
        print(f"{title}: not implemented yet (your function raises NotImplementedError). "
              "Write it, then re-run this cell.", file=sys.stderr)
        return None
    except Exception as error:  # a bug in the learner's function: said, and the notebook goes on
        raised(title, error)
        return None
    if got is None:
        wrong(f"{title}: your function returned None: end it with return and your answer.", revealed=False)
    return got


def check_predictions(fn: Callable[[], Mapping[str, str]], claims: Sequence[str]) -> None:
    """``fn()`` must return a dict with one prediction per claim of ``claims``, each one of
    :data:`VERDICTS`."""
    title = "predictions"
    got = _call(fn, title)
    if got is None:
        return
    if not isinstance(got, Mapping):
        return wrong(f"{title}: return a dict {{claim: verdict}}, got {type(got).__name__}", revealed=False)
    missing = [c for c in claims if c not in got]
    extra = [c for c in got if c not in claims]
    if missing or extra:
        return wrong(f"{title}: one prediction per claim, keyed exactly as listed; missing {missing}, "
                     f"not a listed claim {extra}", revealed=False)
    bad = {c: v for c, v in got.items() if v not in VERDICTS}
    if bad:
        return wrong(f"{title}: each prediction is one of {', '.join(map(repr, VERDICTS))}; got {bad}", revealed=False)
    print(f"✓ {title}: {len(claims)} recorded; section 8 sets them beside the verdicts")


def compare_predictions(fn: Callable[[], Mapping[str, str]], verdicts: Mapping[str, str]) -> str:
    """One line per claim: the learner's prediction beside the verdict (not graded)."""
    try:
        got = fn()
    except NotImplementedError:
        return "no predictions recorded (Exercise 1)"
    except Exception as error:  # the learner's bug, already reported by the graded cell
        return f"no predictions to compare: your function raised {type(error).__name__}: {error}"
    lines = [f"{'claim':<46} {'predicted':<13} verdict"]
    lines += [f"{c:<46} {got.get(c, '-'):<13} {v}" for c, v in verdicts.items()]
    hits = sum(got.get(c) == v for c, v in verdicts.items())
    lines.append(f"{hits} of {len(verdicts)} predicted as they came out")
    return "\n".join(lines)


def check_paired_interval(fn: Callable[[], tuple[float, float]], diffs: Sequence[float], digits: int = 4, *,
                          designs: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
    """``fn()`` must return the 95 % paired t-interval ``(low, high)`` of the per-seed differences
    ``diffs``, to the printed precision (half a unit in the last of ``digits`` digits, plus the
    rounding of the printed differences it was computed from). ``designs``: the two designs'
    per-seed values whose differences ``diffs`` are, when the notebook prints them too; then an
    unpaired interval built from them (their separate spreads) is recognised and named."""
    title = "95 % interval by hand"
    n = len(diffs)
    if designs is not None:
        first, second = designs
        if not (len(first) == len(second) == n
                and all(abs(a - b - d) <= 2 * 10 ** -digits for a, b, d in zip(first, second, diffs))):
            raise ValueError(f"designs must be two sequences of {n} values whose differences are diffs, "
                             f"got {designs!r} for {list(diffs)!r}")
    got = _call(fn, title)
    if got is None:
        return
    if hasattr(got, "tolist"):  # a numpy array or a tensor, e.g. mean + np.array([-h, h])
        got = got.tolist()
    if not (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in got)):
        return wrong(f"{title}: return two numbers (low, high), got {got!r}", revealed=False)
    if got[0] > got[1]:
        return wrong(f"{title}: return the interval as (low, high), the lower end first; got {tuple(got)!r}",
                     revealed=False)
    mean, s, t = statistics.fmean(diffs), statistics.stdev(diffs), t975(n - 1)
    half = t * s / math.sqrt(n)
    tol = 10 ** -digits * (1 + t)  # the printed differences are rounded to `digits` digits
    low, high = got
    if abs(low - (mean - half)) <= tol and abs(high - (mean + half)) <= tol:
        print(f"✓ {title}: [{low:+.{digits}f}, {high:+.{digits}f}]")
        return
    hints = []
    if abs((low + high) / 2 - mean) > tol:
        hints.append(f"the centre {(low + high) / 2:+.{digits}f} is not the mean of the {n} differences")
    width = (high - low) / 2
    if abs(width - t * s) <= tol:
        hints.append("the half-width is t * s: divide by sqrt(n)")
    elif abs(width - 1.96 * s / math.sqrt(n)) <= tol:
        hints.append(f"1.96 is the normal quantile; with {n} seeds use Student's t at n - 1 = {n - 1} degrees of freedom")
    elif abs(width - t * statistics.pstdev(diffs) / math.sqrt(n)) <= tol:
        hints.append("s divides by n - 1, not n")
    elif n < 10 and abs(width - t975(n) * s / math.sqrt(n)) <= tol:
        hints.append(f"t has n - 1 = {n - 1} degrees of freedom, not n")
    elif designs is not None and any(abs(width - w) <= tol for w in _unpaired_half_widths(*designs)):
        hints.append("this is an unpaired interval, built from the two designs' separate spreads: it ignores that "
                     "both designs ran on the same seeds, so the variation from seed to seed that they share, "
                     "which cancels in each seed's difference, stays in. Pair them: take the per-seed "
                     "differences first, then their mean, their s and t * s / sqrt(n)")
    advice = "; ".join(hints) or ("recompute mean, s (n - 1), t and t * s / sqrt(n) step by step, as in "
                                  "section 3's worked example")
    wrong(f"{title}: [{low:+.{digits}f}, {high:+.{digits}f}] is not the interval of these differences: {advice}.",
          revealed=False)


def _unpaired_half_widths(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """The half-widths of the unpaired intervals a learner may build from two designs' values:
    standard error sqrt(s1^2 / n + s2^2 / n) (Welch's; the pooled one is the same at equal n) or
    the two standard errors added, times t at n - 1, 2n - 2 or Welch's degrees of freedom, or 1.96."""
    n = len(first)
    v1, v2 = statistics.variance(first) / n, statistics.variance(second) / n
    welch = (v1 + v2) ** 2 / (v1 ** 2 / (n - 1) + v2 ** 2 / (n - 1)) if v1 + v2 > 0 else n - 1
    quantiles = [1.96]
    for dof in sorted({n - 1, 2 * n - 2, math.floor(welch), round(welch)}):
        try:
            quantiles.append(t975(dof))
        except ValueError:  # a degree of freedom the table leaves out
            pass
    return [q * se for q in quantiles for se in (math.sqrt(v1 + v2), math.sqrt(v1) + math.sqrt(v2))]


def check_sr_budget(fn: Callable[[], int], height: int = 256, width: int = 256, dim: int = 32,
                    budget_mib: float = 64, choices: Sequence[int] = (1, 2, 4, 8, 16, 32)) -> None:
    """``fn()`` must return the smallest ``sr_ratio`` of ``choices`` whose attention matrix (one
    head, float32, :func:`~segformer_lite.course.cost.attention_cost`) on a ``height x width``
    token grid takes at most ``budget_mib`` MiB."""
    title = f"smallest sr_ratio within {budget_mib:g} MiB"
    got = _call(fn, title)
    if got is None:
        return
    mib = {sr: attention_cost(height, width, dim, 1, sr).score_bytes / 2 ** 20 for sr in choices}
    fits = [sr for sr in choices if mib[sr] <= budget_mib]
    want = min(fits)
    if isinstance(got, numbers.Real) and not isinstance(got, bool) and float(got).is_integer():
        got = int(got)  # 16.0 from a square root, or a numpy integer, is the ratio 16
    if got == want and isinstance(got, int):
        print(f"✓ {title}: sr_ratio {got} ({mib[got]:,.1f} MiB)")
        return
    if isinstance(got, int) and got in mib:
        if mib[got] > budget_mib:
            return wrong(f"{title}: sr_ratio {got} keeps {height * width // got ** 2:,} keys, whose scores take "
                         f"more than {budget_mib:g} MiB. Each query has N / sr^2 keys (notebook 03), and each "
                         "score is one float32, 4 bytes.", revealed=False)
        return wrong(f"{title}: sr_ratio {got} fits, but a smaller ratio fits too; the question asks for "
                     f"the smallest (\"at most\" includes equality).", revealed=False)
    wrong(f"{title}: return one of the ratios {list(choices)} as an int, got {got!r}", revealed=False)

"""Comparing two designs over training seeds: the paired t-interval the experiments' verdicts use,
the unpaired one for contrast, and the text tables notebook 08 and ``experiments --show`` print.

Two designs trained from the same seed see the same training images in the same order, so they
are compared seed by seed: ``d_i = a_i - b_i``, the mean
``d``, the sample standard deviation ``s`` (``n - 1`` in the denominator), and the 95 % interval
``d +- t * s / sqrt(n)`` with Student's ``t`` at ``n - 1`` degrees of freedom. Its half-width is
the smallest difference the comparison can resolve. The seed does not give two designs the same
initial weights in every part they share: each design draws its weights from the seeded generator
in its own order, so a part that comes after one the designs do not share starts elsewhere
(``sr-1111`` and ``sr-16842`` already differ in their first patch embedding). What pairing takes
out is what a seed's images do to both designs.

A comparison claims a direction (``"+"``: ``a - b > 0``, ``"-"``: ``a - b < 0``) or none
(``None``: the difference is reported, no verdict is given).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["t975", "paired", "unpaired", "verdict", "verdict_label", "seed_table", "unit", "comparison_table",
           "explain", "NONE_CLAIMED"]

NONE_CLAIMED = "none claimed"  # the verdict of a comparison that claims no direction: a difference only

# two-sided 95 % quantiles of Student's t by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 14: 2.145, 16: 2.120, 18: 2.101}


def t975(dof: int) -> float:
    """Student's t two-sided 95 % quantile at ``dof`` degrees of freedom (those of :data:`_T975`)."""
    if dof not in _T975:
        raise ValueError(f"degrees of freedom must be one of {sorted(_T975)}, got {dof!r}")
    return _T975[dof]


def _check_pair(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 seeds, got {len(a)} and {len(b)}")


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """Seed-by-seed differences ``a - b``: n, mean, s, t, half-width and the 95 % interval."""
    _check_pair(a, b)
    diffs = [x - y for x, y in zip(a, b)]
    n, mean, s = len(diffs), statistics.fmean(diffs), statistics.stdev(diffs)
    t = t975(n - 1)
    half = t * s / math.sqrt(n)
    return {"diffs": diffs, "n": n, "mean": mean, "sd": s, "t": t, "half": half,
            "low": mean - half, "high": mean + half}


def unpaired(a: Sequence[float], b: Sequence[float]) -> dict:
    """The same difference of means judged as if the seeds were unrelated: pooled variance,
    ``2n - 2`` degrees of freedom, half-width ``t * sqrt((s_a^2 + s_b^2) / n)``."""
    _check_pair(a, b)
    n = len(a)
    t = t975(2 * n - 2)
    half = t * math.sqrt((statistics.variance(a) + statistics.variance(b)) / n)
    mean = statistics.fmean(a) - statistics.fmean(b)
    return {"mean": mean, "t": t, "half": half, "low": mean - half, "high": mean + half}


def verdict(stats: Mapping, direction: str | None = "+") -> str:
    """For the claim ``a - b > 0`` (``direction="+"``): ``agrees`` when the interval lies above 0,
    ``disagrees`` when it lies below, ``inconclusive`` when it contains 0; mirrored for ``"-"``
    (``a - b < 0``). ``None``: no direction is claimed, so there is no verdict (:data:`NONE_CLAIMED`)."""
    if direction is None:
        return NONE_CLAIMED
    if direction not in ("+", "-"):
        raise ValueError(f"direction must be '+', '-' or None, got {direction!r}")
    above, below = stats["low"] > 0, stats["high"] < 0
    if direction == "-":
        above, below = below, above
    return "agrees" if above else "disagrees" if below else "inconclusive"


def verdict_label(comparison: Mapping) -> str:
    """The verdict as every table and sentence prints it: with the qualifications the results file
    records for it (a confound, stalled runs, low power, a baseline that shows the same)."""
    quals = comparison.get("qualifications") or []
    return comparison["verdict"] + (f" [{'; '.join(quals)}]" if quals else "")


def seed_table(rows: Mapping[str, Sequence[float]], seeds: Sequence[int], digits: int = 4,
               unit: str = "") -> str:
    """One line per row label: its value for every seed, their mean and their min-max."""
    bad = {k: len(v) for k, v in rows.items() if len(v) != len(seeds)}
    if not rows or bad:
        raise ValueError(f"need one value per seed ({len(seeds)}) in every row, got {bad or 'no rows'}")
    width = max(8, digits + 4 + len(unit))
    label_w = max(len(k) for k in rows)
    fmt = lambda v: f"{v:.{digits}f}{unit}"
    head = [f"seed {s}" for s in seeds] + ["mean", "min-max"]
    lines = [f"{'':<{label_w}}  " + "  ".join(f"{h:>{width}}" for h in head[:-1]) + f"  {head[-1]}"]
    for label, values in rows.items():
        cells = [fmt(v) for v in values] + [fmt(statistics.fmean(values))]
        lines.append(f"{label:<{label_w}}  " + "  ".join(f"{c:>{width}}" for c in cells)
                     + f"  {min(values):.{digits}f}-{max(values):.{digits}f}{unit}")
    return "\n".join(lines)


def unit(metric: str) -> tuple[int, str]:
    """Digits and unit a comparison's metric is written with: ERF radii in pixels, mIoU bare."""
    return (1, " px") if metric.startswith("erf") else (4, "")


def _interval(c: Mapping, digits: int, u: str) -> str:
    return f"[{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]{u}"


def comparison_table(comparisons: Sequence[Mapping]) -> str:
    """One line per comparison: whose claim, mean paired difference ``a - b`` over all seeds, its 95 %
    interval, the half-width (the smallest difference it resolves), the verdict with its
    qualifications. Where runs stalled, a second line gives the same over the seeds where both
    designs trained, which is what the verdict reads."""
    head = "comparison (a minus b, seed by seed)"
    label_w = max(len(head), *(len(c["comparison"]) for c in comparisons))
    lines = [f"{head:<{label_w}}  {'whose':<6}  {'mean':>9}  {'95 % interval':>21}  {'+-':>7}  verdict"]
    for c in comparisons:
        digits, u = unit(c["metric"])
        lines.append(f"{c['comparison']:<{label_w}}  {c['whose']:<6}  {c['mean']:>+9.{digits}f}  "
                     f"{_interval(c, digits, u):>21}  {c['half']:>7.{digits}f}  {verdict_label(c)}")
        t = c.get("trained")
        if c.get("stalled_runs"):
            what = (f"{t['mean']:>+9.{digits}f}  {_interval(t, digits, u):>21}  {t['half']:>7.{digits}f}" if t
                    else f"{'fewer than 2 seeds: no interval':>41}")
            lines.append(f"{'  runs that trained: seeds ' + ', '.join(map(str, c['trained_seeds'])):<{label_w}}  "
                         f"{'':<6}  {what}")
    return "\n".join(lines)


def explain(comparison: Mapping) -> str:
    """The verdict of one comparison in a sentence, read off its numbers (over the runs that trained
    where some stalled), with the qualifications the results record for it."""
    c = comparison
    digits, u = unit(c["metric"])
    direction = c.get("direction", "+")
    if direction is None:
        return (f"{c['comparison']}: {c['mean']:+.{digits}f}{u} on average over {c['n']} seeds, 95 % interval "
                f"{_interval(c, digits, u)}; no direction is claimed, so this is a difference, not a verdict: "
                f"{verdict_label(c)}.")
    sign = ">" if direction == "+" else "<"
    claim = "the paper's claim is that" if c["whose"] == "paper" else "the course asks whether"
    read = c
    prefix = f"{c['mean']:+.{digits}f}{u} on average over {c['n']} seeds"
    if c.get("stalled_runs"):
        read = c.get("trained")
        prefix += (f", which mixes {c['stalled_runs']} stalled run(s) with runs that trained; over the "
                   f"{len(c['trained_seeds'])} seed(s) where both trained")
        if read is None:
            return (f"{c['comparison']}: {prefix} no interval can be computed; {claim} {c['a_name']} minus "
                    f"{c['b_name']} {sign} 0: {verdict_label(c)}.")
        prefix += f" {read['mean']:+.{digits}f}{u}"
    low, high = read["low"], read["high"]
    where = "lies above 0" if low > 0 else "lies below 0" if high < 0 else "contains 0"
    tail = {"agrees": "the results agree" if c["whose"] == "paper" else "yes",
            "disagrees": "the results contradict the claim" if c["whose"] == "paper" else "no, the opposite",
            "inconclusive": "inconclusive: with this noise, the difference is not resolved"}[c["verdict"]]
    margin = ""
    if c["verdict"] != "inconclusive" and min(abs(low), abs(high)) < 0.1 * read["half"]:
        margin = " (by a hair: the interval's end is within a tenth of its half-width of 0)"
    quals = c.get("qualifications") or []
    return (f"{c['comparison']}: {prefix}; {claim} {c['a_name']} minus {c['b_name']} {sign} 0; the 95 % interval "
            f"{_interval(read, digits, u)} {where}: {tail}{margin}"
            + (f" [{'; '.join(quals)}]" if quals else "") + ".")

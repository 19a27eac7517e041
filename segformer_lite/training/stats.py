"""Comparing two designs over training seeds: the paired t-interval the experiments' verdicts use,
the unpaired one for contrast, and the text tables notebook 08 and ``experiments --show`` print.

Two designs trained from the same seed see the same images and start from the same initial
weights in every part they share, so they are compared seed by seed: ``d_i = a_i - b_i``, the mean
``d``, the sample standard deviation ``s`` (``n - 1`` in the denominator), and the 95 % interval
``d +- t * s / sqrt(n)`` with Student's ``t`` at ``n - 1`` degrees of freedom. Its half-width is
the smallest difference the comparison can resolve.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["t975", "paired", "unpaired", "verdict", "seed_table", "unit", "comparison_table", "explain"]

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


def verdict(stats: Mapping) -> str:
    """``agrees`` when the interval lies above 0 (the claim or question is ``a - b > 0``),
    ``disagrees`` when it lies below, ``inconclusive`` when it contains 0."""
    return "agrees" if stats["low"] > 0 else "disagrees" if stats["high"] < 0 else "inconclusive"


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


def comparison_table(comparisons: Sequence[Mapping]) -> str:
    """One line per comparison: whose claim, mean paired difference ``a - b``, its 95 % interval,
    the half-width (the smallest difference it resolves), the verdict."""
    head = "comparison (a minus b, seed by seed)"
    label_w = max(len(head), *(len(c["comparison"]) for c in comparisons))
    lines = [f"{head:<{label_w}}  {'whose':<6}  {'mean':>9}  {'95 % interval':>21}  {'+-':>7}  verdict"]
    for c in comparisons:
        digits, u = unit(c["metric"])
        interval = f"[{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]{u}"
        lines.append(f"{c['comparison']:<{label_w}}  {c['whose']:<6}  {c['mean']:>+9.{digits}f}  {interval:>21}  "
                     f"{c['half']:>7.{digits}f}  {c['verdict']}")
    return "\n".join(lines)


def explain(comparison: Mapping) -> str:
    """The verdict of one comparison in a sentence, read off its numbers."""
    c = comparison
    digits, u = unit(c["metric"])
    claim = "the paper's claim is that" if c["whose"] == "paper" else "the course asks whether"
    where = "lies above 0" if c["low"] > 0 else "lies below 0" if c["high"] < 0 else "contains 0"
    tail = {"agrees": "the results agree" if c["whose"] == "paper" else "yes",
            "disagrees": "the results contradict the claim" if c["whose"] == "paper" else "no, the opposite",
            "inconclusive": "inconclusive: with this noise, the difference is not resolved"}[c["verdict"]]
    margin = ""
    if c["verdict"] != "inconclusive" and min(abs(c["low"]), abs(c["high"])) < 0.1 * c["half"]:
        margin = " (by a hair: the interval's end is within a tenth of its half-width of 0)"
    return (f"{c['comparison']}: {c['mean']:+.{digits}f}{u} on average over {c['n']} seeds; {claim} "
            f"{c['a_name']} minus {c['b_name']} > 0; the 95 % interval [{c['low']:+.{digits}f}, "
            f"{c['high']:+.{digits}f}]{u} {where}: {tail}{margin}.")

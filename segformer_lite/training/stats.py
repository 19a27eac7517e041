"""The statistics of the experiments: paired differences seed by seed, their 95 % t-interval and
the verdict it gives on a claim, and the text tables that show them
(``python -m segformer_lite experiments --show``, notebook 08).

A verdict compares two designs seed by seed (same seed: same training images and the same
initialisation of every shared part): the mean paired difference with its 95 % t-interval over
the seeds. ``agrees`` when the interval lies on the claim's side, ``disagrees`` when it lies on
the other, ``inconclusive`` when it straddles the line: with this noise, the difference is not
resolved.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["T975", "paired", "verdict", "seed_table", "comparison_table", "explain"]

# two-sided 95 % quantiles of Student's t by degrees of freedom (seeds - 1)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def paired(a: list[float], b: list[float]) -> dict:
    """Seed-by-seed differences ``a - b``: their mean and 95 % t-interval (Student, n - 1 dof)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 seeds, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    half = T975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"diffs": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def verdict(stats: dict, claim: str = "greater", margin: float = 0.0) -> str:
    """``agrees`` / ``disagrees`` / ``inconclusive`` for the claim ``a - b > 0`` (``"greater"``) or
    ``a - b < margin`` (``"within"``), from :func:`paired`'s interval."""
    line = 0.0 if claim == "greater" else margin
    above, below = stats["low"] > line, stats["high"] < line
    if claim == "greater":
        return "agrees" if above else "disagrees" if below else "inconclusive"
    if claim == "within":
        return "agrees" if below else "disagrees" if above else "inconclusive"
    raise ValueError(f"claim must be 'greater' or 'within', got {claim!r}")


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


def _unit(metric: str) -> tuple[int, str]:
    """Digits and unit a comparison's metric is written with: ERF sides in pixels, mIoU bare."""
    return (1, " px") if metric.startswith("erf") else (4, "")


def comparison_table(comparisons: Sequence[Mapping]) -> str:
    """One line per comparison: mean paired difference ``a - b``, its 95 % interval, the verdict."""
    head = "comparison (a minus b, seed by seed)"
    label_w = max(len(head), *(len(c["comparison"]) for c in comparisons))
    lines = [f"{head:<{label_w}}  {'mean':>10}  {'95 % interval':>22}  verdict"]
    for c in comparisons:
        digits, unit = _unit(c["metric"])
        interval = f"[{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]{unit}"
        lines.append(f"{c['comparison']:<{label_w}}  {c['mean']:>+10.{digits}f}  {interval:>22}  {c['verdict']}")
    return "\n".join(lines)


def explain(comparison: Mapping) -> str:
    """The verdict of one comparison in a sentence, read off its numbers: where the 95 % interval
    lies against the claim's line (0 for ``greater``, the margin for ``within``)."""
    c = comparison
    digits, unit = _unit(c["metric"])
    n, line = len(c["diffs"]), (0.0 if c["claim"] == "greater" else c["margin"])
    claim = f"{c['a']} minus {c['b']} {'>' if c['claim'] == 'greater' else '<'} {line:g}"
    where = ("lies above" if c["low"] > line else "lies below" if c["high"] < line else "contains") + f" {line:g}"
    tail = {"agrees": "the results agree with the claim",
            "disagrees": "the results contradict the claim",
            "inconclusive": "inconclusive: with this noise, the difference is not resolved"}[c["verdict"]]
    return (f"{c['comparison']}: {c['mean']:+.{digits}f}{unit} on average over {n} seeds; the claim is "
            f"that {claim}; the 95 % interval [{c['low']:+.{digits}f}, {c['high']:+.{digits}f}] {where}: {tail}.")

"""Resampling statistics for notebook 07: intervals and nulls that make no assumption of normality.

* :func:`bootstrap_mean`: a weighted mean over items (queries, pixels) and its percentile
  bootstrap interval, resampling whole groups (images) with replacement: items of one image are
  not independent, images are.
* :func:`permutations` and :func:`p_value`: a permutation null. Each round shuffles the items
  within each stratum (all items in one stratum, or items that share a property the null must
  keep), and a statistic recomputed on the shuffled pairing gives one draw of the null.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Interval", "bootstrap_mean", "permutations", "p_value"]


class Interval(NamedTuple):
    """A statistic and its bootstrap interval (``level`` of the resampled values between lo and hi)."""

    value: np.ndarray | float
    lo: np.ndarray | float
    hi: np.ndarray | float


def _check_groups(groups, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n,) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"groups must be {n} ints (one per item), got dtype {groups.dtype} and shape {groups.shape}")
    return groups


def bootstrap_mean(values, groups, weights=None, rounds: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """The weighted mean of ``values`` ``(n, ...)`` over the ``n`` items, ``sum(w * v) / sum(w)``
    (``weights`` ``(n,)``, all 1 by default), and its percentile interval over ``rounds`` bootstrap
    resamples of the groups: each draws as many groups as there are, with replacement, and takes
    every item of each drawn group (a group drawn twice counts twice)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    groups = _check_groups(groups, n)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be {n} values >= 0 with a positive sum, got shape {weights.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, got {level!r}")
    ids, inverse = np.unique(groups, return_inverse=True)
    wv = np.zeros((len(ids), *values.shape[1:]))  # (G, ...): per group, sum of w * v
    np.add.at(wv, inverse, weights.reshape(n, *[1] * (values.ndim - 1)) * values)
    w = np.bincount(inverse, weights=weights, minlength=len(ids))  # (G,): per group, sum of w
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(rounds, len(ids)))  # (rounds, G)
    wsum = w[draws].sum(1).reshape(rounds, *[1] * (values.ndim - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = wv[draws].sum(1) / wsum  # (rounds, ...); 0/0 (only zero-weight groups drawn): NaN
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return Interval(wv.sum(0) / w.sum(), lo, hi)


def permutations(strata, rounds: int, seed: int = 0) -> np.ndarray:
    """``(rounds, n)`` int: in each row, item ``i`` is paired with item ``row[i]``, a uniformly
    random permutation of the items of ``i``'s stratum (``strata`` ``(n,)``, one label per item;
    an item may be paired with itself, with chance 1 / its stratum's size)."""
    strata = np.asarray(strata)
    if strata.ndim != 1:
        raise ValueError(f"strata must be one label per item, shape (n,), got shape {strata.shape}")
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, len(strata)), dtype=np.int64)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[:, members] = members[rng.permuted(np.tile(np.arange(len(members)), (rounds, 1)), axis=1)]
    return out


def p_value(observed, null) -> np.ndarray | float:
    """One-sided permutation p-value of ``observed`` against ``null`` ``(rounds, ...)``:
    ``(1 + #(null >= observed)) / (1 + rounds)``, never 0. A null value equal to ``observed`` up to
    rounding (relative 1e-9: sums of the same terms in another order) counts as a tie, so ``>=``."""
    null, observed = np.asarray(null), np.asarray(observed)
    at_least = (null >= observed) | np.isclose(null, observed, rtol=1e-9, atol=0.0)
    return (1 + at_least.sum(0)) / (1 + len(null))

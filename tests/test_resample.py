"""segformer_lite.course.resample: the bootstrap against an explicit resampling loop and the
normal approximation, permutations checked for what a permutation must be, p-values by hand."""
import numpy as np
import pytest

from segformer_lite.course import resample


def test_bootstrap_mean_matches_an_explicit_loop():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 7, size=40)
    values, weights = rng.normal(size=(40, 2)), rng.uniform(0.5, 2.0, size=40)
    got = resample.bootstrap_mean(values, groups, weights, rounds=300, seed=4)
    np.testing.assert_allclose(got.value, (weights[:, None] * values).sum(0) / weights.sum())
    ids = np.unique(groups)
    draws = np.random.default_rng(4).integers(0, len(ids), size=(300, len(ids)))  # the documented draws
    boot = []
    for row in draws:
        picked = np.concatenate([np.flatnonzero(groups == ids[g]) for g in row])  # a group twice: its items twice
        boot.append((weights[picked, None] * values[picked]).sum(0) / weights[picked].sum())
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(got.lo, lo)
    np.testing.assert_allclose(got.hi, hi)


def test_bootstrap_interval_is_about_the_normal_one():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=400)  # one item per group: iid
    got = resample.bootstrap_mean(values, np.arange(400), rounds=4000)
    half = 1.96 * values.std(ddof=1) / np.sqrt(400)
    assert got.lo < values.mean() < got.hi
    assert (got.hi - got.lo) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_of_one_group_and_of_constant_groups():
    got = resample.bootstrap_mean([1.0, 2.0, 6.0], [5, 5, 5])
    assert got.value == got.lo == got.hi == pytest.approx(3.0)
    # group 0: weight 2 at 2.0, group 1: weight 2 at 4.0; a quarter of the resamples draw group 0 twice
    got = resample.bootstrap_mean([2.0, 2.0, 4.0], [0, 0, 1], weights=[1, 1, 2])
    assert got.value == pytest.approx(3.0) and got.lo == pytest.approx(2.0) and got.hi == pytest.approx(4.0)


def test_permutations_permute_within_strata_uniformly():
    strata = np.array([0, 1, 0, 2, 1, 0, 0])
    perms = resample.permutations(strata, rounds=4000, seed=2)
    assert perms.shape == (4000, 7)
    for row in perms[:50]:
        assert sorted(row) == list(range(7))  # a permutation
        assert (strata[row] == strata).all()  # that keeps every item in its stratum
    assert (perms[:, 3] == 3).all()  # a stratum of one: paired with itself
    members = np.flatnonzero(strata == 0)
    hits = np.array([(perms[:, 0] == j).mean() for j in members])  # item 0's partner: uniform over 4
    np.testing.assert_allclose(hits, 0.25, atol=0.03)
    assert not (perms[0] == perms[1]).all()


def test_p_value_by_hand():
    assert resample.p_value(5.0, np.array([1.0, 5.0, 6.0, 2.0])) == pytest.approx(3 / 5)
    assert resample.p_value(9.0, np.zeros(99)) == pytest.approx(0.01)
    np.testing.assert_allclose(resample.p_value(np.array([0.0, 2.0]), np.array([[1.0, 1.0], [3.0, 1.0]])),
                               [3 / 3, 1 / 3])
    terms = np.random.default_rng(0).uniform(size=1000)
    assert resample.p_value(terms.sum(), np.array([terms[::-1].sum()])) == 1.0  # a tie up to rounding


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="groups must be 3 ints"):
        resample.bootstrap_mean([1.0, 2.0, 3.0], [0.5, 1, 2])
    with pytest.raises(ValueError, match="weights must be 2 values"):
        resample.bootstrap_mean([1.0, 2.0], [0, 1], weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="level"):
        resample.bootstrap_mean([1.0, 2.0], [0, 1], level=95)
    with pytest.raises(ValueError, match="one label per item"):
        resample.permutations(np.zeros((2, 2)), 3)

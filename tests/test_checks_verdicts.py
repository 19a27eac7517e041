"""Notebook 08's checkers (course/checks/verdicts.py): right answers pass on stdout; the common wrong
ones raise nothing and get a report on stderr (which nbgrader scores zero) that names the mistake;
unfinished functions print the "not implemented" note."""
import math
import statistics

import pytest

from segformer_lite.course.checks import check_paired_interval, check_predictions, check_sr_budget, verdicts

DIFFS = [0.0022, -0.0253, 0.0003]
MEAN, S = statistics.fmean(DIFFS), statistics.stdev(DIFFS)
HALF = 4.303 * S / math.sqrt(3)  # t at 2 degrees of freedom, by hand
# notebook 08's position experiment as printed: the drop 64->128 px per seed of each design, whose
# differences are DIFFS (seed 2: 0.0269 - 0.0267 prints as +0.0003 from the unrounded drops)
POS_EMBED, MIT = [0.0467, 0.0250, 0.0269], [0.0445, 0.0503, 0.0267]


def unfinished():
    raise NotImplementedError()


def reported(capsys) -> str:
    """The stderr report of a wrong or malformed answer: nothing on stdout, marked ✗, zero, runs on."""
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("✗ ") and "Marked zero" in err and "the notebook goes on" in err, (out, err)
    return err


def around(mean, half):
    return lambda: (mean - half, mean + half)


def test_interval_right_and_its_common_mistakes(capsys):
    check_paired_interval(around(MEAN, HALF), DIFFS)
    assert capsys.readouterr().out.startswith("✓")
    for wrong, words in [(around(MEAN, 4.303 * S), "divide by sqrt(n)"),
                         (around(MEAN, 1.96 * S / math.sqrt(3)), "normal quantile"),
                         (around(MEAN, 3.182 * S / math.sqrt(3)), "n - 1 = 2 degrees"),
                         (around(MEAN + 0.02, HALF), "not the mean")]:
        assert check_paired_interval(wrong, DIFFS) is None
        assert words in reported(capsys)
    check_paired_interval(lambda: MEAN, DIFFS)
    assert "two numbers" in reported(capsys)
    check_paired_interval(unfinished, DIFFS)
    assert "not implemented yet" in capsys.readouterr().err


def test_an_unpaired_interval_is_named(capsys):
    """The two designs' separate spreads instead of the per-seed differences, as a learner computes
    it from the printed drops: Welch's (or pooled) standard error at n - 1 or 2n - 2 degrees of
    freedom, or the two standard errors added. Each is told to pair; without the designs the
    checker cannot tell, and gives the generic advice."""
    n = 3
    v1, v2 = statistics.variance(POS_EMBED) / n, statistics.variance(MIT) / n
    se_welch, se_sum = math.sqrt(v1 + v2), math.sqrt(v1) + math.sqrt(v2)
    unpaired = [4.303 * se_welch, 2.776 * se_welch, 4.303 * se_sum]  # t at 2 and 4 degrees of freedom
    assert all(abs(h - HALF) > 0.0005 for h in unpaired)  # each is wider or narrower than the paired one
    for half in unpaired:
        check_paired_interval(around(MEAN, half), DIFFS, designs=(POS_EMBED, MIT))
        err = reported(capsys)
        assert "unpaired interval" in err and "per-seed differences" in err, err
    check_paired_interval(around(MEAN, unpaired[0]), DIFFS)
    err = reported(capsys)
    assert "unpaired" not in err and "step by step" in err
    check_paired_interval(around(MEAN, HALF), DIFFS, designs=(POS_EMBED, MIT))  # the paired one still passes
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(ValueError, match="differences are diffs"):  # the notebook author's mistake raises
        check_paired_interval(around(MEAN, HALF), DIFFS, designs=(MIT, POS_EMBED))


def test_sr_budget_is_the_smallest_ratio_at_most_the_budget(capsys):
    # 256 x 256 stage-1 tokens, float32: sr 16 leaves 256 keys, 65536 * 256 * 4 bytes = exactly 64 MiB
    check_sr_budget(lambda: 16)
    assert "sr_ratio 16 (64.0 MiB)" in capsys.readouterr().out
    check_sr_budget(lambda: 8)
    assert "more than 64 MiB" in reported(capsys)
    check_sr_budget(lambda: 32)
    assert "smaller ratio fits too" in reported(capsys)
    check_sr_budget(lambda: "16")
    assert "as an int" in reported(capsys)
    check_sr_budget(unfinished)
    assert "not implemented yet" in capsys.readouterr().err


def test_predictions_need_one_listed_verdict_per_claim(capsys):
    claims = ["a", "b"]
    check_predictions(lambda: {"a": "agrees", "b": "inconclusive"}, claims)
    assert capsys.readouterr().out.startswith("✓ predictions: 2 recorded")
    check_predictions(lambda: {"a": "agrees"}, claims)
    assert "missing ['b']" in reported(capsys)
    check_predictions(lambda: {"a": "agrees", "b": "yes"}, claims)
    assert "each prediction is one of" in reported(capsys)
    check_predictions(lambda: ["agrees", "agrees"], claims)
    assert "return a dict" in reported(capsys)
    with pytest.raises(TypeError, match="without calling it"):  # the notebook author's mistake raises
        check_predictions({"a": "agrees"}, claims)


def test_a_forgotten_return_is_named_not_silent(capsys):
    for check, args in [(verdicts.check_predictions, (["a"],)), (verdicts.check_paired_interval, ([0.1, 0.2, 0.3],)),
                        (verdicts.check_sr_budget, ())]:
        assert check(lambda: None, *args) is None
        assert "returned None" in reported(capsys)


def test_equivalent_forms_of_a_right_answer_pass(capsys):
    import numpy as np

    verdicts.check_sr_budget(lambda: 16.0)  # from a square root
    verdicts.check_sr_budget(lambda: np.int64(16))
    diffs = [0.0022, -0.0253, 0.0003]
    mean, half = np.mean(diffs), 4.303 * np.std(diffs, ddof=1) / np.sqrt(3)
    verdicts.check_paired_interval(lambda: mean + np.array([-half, half]), diffs)
    assert capsys.readouterr().out.count("✓") == 3
    verdicts.check_paired_interval(lambda: (mean + half, mean - half), diffs)
    assert "lower end first" in reported(capsys)


def test_a_bug_in_the_learners_function_is_reported_and_the_notebook_runs_on(capsys):
    """A NameError inside the learner's function is marked zero on stderr with the learner's own line,
    none of the checker's frames, and nothing raised (before, Run All stopped there and showed
    verdicts.py's source); section 8's comparison says so instead of raising."""
    def buggy():
        return my_diffs  # noqa: F821 - the learner's typo

    for check, args in [(verdicts.check_predictions, (["a"],)), (verdicts.check_paired_interval, (DIFFS,)),
                        (verdicts.check_sr_budget, ())]:
        assert check(buggy, *args) is None
        err = reported(capsys)
        assert "your function raised NameError: name 'my_diffs' is not defined" in err and "return my_diffs" in err, err
        assert "course/checks" not in err, err  # no frame of the checkers
    assert verdicts.compare_predictions(buggy, {"a": "agrees"}).startswith("no predictions to compare: your function raised")


def test_an_sr_over_the_budget_hears_the_bytes_per_score(capsys):
    check_sr_budget(lambda: 8)
    assert "4 bytes" in reported(capsys)

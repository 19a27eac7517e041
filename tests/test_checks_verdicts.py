"""Notebook 08's checkers (course/checks/verdicts.py): right answers pass, the common wrong ones get
a message that names the mistake, unfinished functions print the "not implemented" note."""
import math
import re
import statistics

import pytest

from segformer_lite.course.checks import check_paired_interval, check_predictions, check_sr_budget, verdicts

DIFFS = [0.0022, -0.0253, 0.0003]
MEAN, S = statistics.fmean(DIFFS), statistics.stdev(DIFFS)
HALF = 4.303 * S / math.sqrt(3)  # t at 2 degrees of freedom, by hand


def unfinished():
    raise NotImplementedError()


def test_interval_right_and_its_common_mistakes(capsys):
    check_paired_interval(lambda: (MEAN - HALF, MEAN + HALF), DIFFS)
    assert capsys.readouterr().out.startswith("✓")
    for wrong, words in [((MEAN - 4.303 * S, MEAN + 4.303 * S), "divide by sqrt(n)"),
                         ((MEAN - 1.96 * S / math.sqrt(3), MEAN + 1.96 * S / math.sqrt(3)), "normal quantile"),
                         ((MEAN - 3.182 * S / math.sqrt(3), MEAN + 3.182 * S / math.sqrt(3)), "n - 1 = 2 degrees"),
                         ((MEAN + 0.02 - HALF, MEAN + 0.02 + HALF), "not the mean")]:
        with pytest.raises(AssertionError, match=re.escape(words)):
            check_paired_interval(lambda wrong=wrong: wrong, DIFFS)
    with pytest.raises(AssertionError, match="two numbers"):
        check_paired_interval(lambda: MEAN, DIFFS)
    check_paired_interval(unfinished, DIFFS)
    assert "not implemented yet" in capsys.readouterr().err


def test_sr_budget_is_the_smallest_ratio_at_most_the_budget(capsys):
    # 256 x 256 stage-1 tokens, float32: sr 16 leaves 256 keys, 65536 * 256 * 4 bytes = exactly 64 MiB
    check_sr_budget(lambda: 16)
    assert "sr_ratio 16 (64.0 MiB)" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="more than 64 MiB"):
        check_sr_budget(lambda: 8)
    with pytest.raises(AssertionError, match="smaller ratio fits too"):
        check_sr_budget(lambda: 32)
    with pytest.raises(AssertionError, match="as an int"):
        check_sr_budget(lambda: "16")
    check_sr_budget(unfinished)
    assert "not implemented yet" in capsys.readouterr().err


def test_predictions_need_one_listed_verdict_per_claim(capsys):
    claims = ["a", "b"]
    check_predictions(lambda: {"a": "agrees", "b": "inconclusive"}, claims)
    assert capsys.readouterr().out.startswith("✓ predictions: 2 recorded")
    with pytest.raises(AssertionError, match=r"missing \['b'\]"):
        check_predictions(lambda: {"a": "agrees"}, claims)
    with pytest.raises(AssertionError, match="each prediction is one of"):
        check_predictions(lambda: {"a": "agrees", "b": "yes"}, claims)
    with pytest.raises(TypeError, match="without calling it"):
        check_predictions({"a": "agrees"}, claims)


def test_a_forgotten_return_is_named_not_silent():
    for check, args in [(verdicts.check_predictions, (["a"],)), (verdicts.check_paired_interval, ([0.1, 0.2, 0.3],)),
                        (verdicts.check_sr_budget, ())]:
        with pytest.raises(AssertionError, match="returned None"):
            check(lambda: None, *args)


def test_equivalent_forms_of_a_right_answer_pass(capsys):
    import numpy as np

    verdicts.check_sr_budget(lambda: 16.0)  # from a square root
    verdicts.check_sr_budget(lambda: np.int64(16))
    diffs = [0.0022, -0.0253, 0.0003]
    mean, half = np.mean(diffs), 4.303 * np.std(diffs, ddof=1) / np.sqrt(3)
    verdicts.check_paired_interval(lambda: mean + np.array([-half, half]), diffs)
    assert capsys.readouterr().out.count("✓") == 3
    with pytest.raises(AssertionError, match="lower end first"):
        verdicts.check_paired_interval(lambda: (mean + half, mean - half), diffs)

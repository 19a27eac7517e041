"""The prediction checkers (segformer_lite.course.checks.predictions): a right prediction passes on
stdout; a wrong or malformed one raises nothing and reports on stderr (which nbgrader scores zero),
the wrong one with the measurement; an unanswered one notes it on stderr; and nothing tells the
measured result before the learner has answered."""
from __future__ import annotations

import pytest

from segformer_lite.course.checks import predictions as p
from segformer_lite.course.resample import Interval

OPTIONS = ["band", "placebo", "same"]
WHY = "band 0.242 [0.171, 0.316], placebo 0.047 [0.024, 0.076]"


def unanswered():
    raise NotImplementedError()  # what nbgrader leaves in the student version


def answering(value):
    return lambda: value


def reported(capsys) -> str:
    """The stderr report of a wrong or malformed answer, checked to be one: nothing on stdout, the
    report marked ✗ and saying that it scores zero and the notebook goes on."""
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("✗ ") and "Marked zero" in err and "the notebook goes on" in err, (out, err)
    return err


def test_right_prediction_passes_and_tells_what_was_measured(capsys):
    p.check_prediction(answering("band"), "band", OPTIONS, title="erase", why=WHY)
    out, err = capsys.readouterr()
    assert out.startswith("✓ erase: you predicted 'band'") and WHY in out and err == ""


def test_a_plain_value_is_an_answer_too(capsys):
    p.check_prediction("band", "band", OPTIONS, title="erase")
    assert capsys.readouterr().out.startswith("✓ erase")


def test_wrong_prediction_reports_the_measurement_on_stderr_and_does_not_raise(capsys):
    assert p.check_prediction(answering("placebo"), "band", OPTIONS, title="erase", why=WHY) is None
    err = reported(capsys)
    assert err.splitlines()[0] == f"✗ erase: you predicted 'placebo'; the measurement says 'band'. {WHY}"
    assert "Keep your answer as you wrote it" in err  # the measurement is out: no editing it in


@pytest.mark.parametrize("answer", [unanswered, None, answering(...)])
def test_unanswered_goes_to_stderr_and_reveals_nothing(answer, capsys):
    assert p.check_prediction(answer, "band", OPTIONS, title="erase", why=WHY) is None
    out, err = capsys.readouterr()
    assert out == "" and "not answered yet" in err
    assert "band" not in err and WHY not in err


def test_a_function_that_forgets_its_return_is_told_so_not_called_unanswered(capsys):
    p.check_prediction(answering(None), "band", OPTIONS, title="erase", why=WHY)
    err = reported(capsys)
    assert "returned None" in err and "not answered yet" not in err
    assert "'band'" not in err and WHY not in err and "re-run this cell" in err  # nothing told: fixing it is fair


def test_a_numpy_answer_is_a_number_too(capsys):
    import numpy as np

    p.check_number(lambda: np.array([4, 2]), (4, 2), tol=0.01, title="own shape")
    assert capsys.readouterr().out.startswith("✓ own shape")


def test_an_answer_outside_the_options_hears_the_options_not_the_measurement(capsys):
    p.check_prediction(answering("Band!"), "placebo", OPTIONS, title="erase", why=WHY)
    message = reported(capsys)
    assert "'Band!' is not one of the options: 'band', 'placebo', 'same'" in message
    assert "measurement" not in message and WHY not in message


def test_a_set_of_options(capsys):
    models = ["pixel-mlp", "local-cnn", "SegFormer"]
    p.check_prediction(answering({"SegFormer"}), {"SegFormer"}, models, title="ceiling")
    p.check_prediction(answering(set()), set(), models, title="ceiling")
    assert capsys.readouterr().out.count("✓ ceiling") == 2
    p.check_prediction(answering({"SegFormer", "local-cnn"}), {"SegFormer"}, models, title="ceiling")
    assert "you predicted {'local-cnn', 'SegFormer'}; the measurement says {'SegFormer'}" in reported(capsys)
    p.check_prediction(answering("SegFormer"), {"SegFormer"}, models, title="ceiling")
    assert "not a set of options" in reported(capsys)
    p.check_prediction(answering({"cnn"}), {"SegFormer"}, models, title="ceiling", why="measured")
    err = reported(capsys)
    assert "'cnn' not among the options" in err and "measured" not in err


def test_the_measured_option_must_be_an_option():
    with pytest.raises(ValueError, match="is not one of the options"):
        p.check_prediction("band", "erase", OPTIONS, title="erase")
    with pytest.raises(TypeError, match="title"):
        p.check_prediction("band", "band", OPTIONS, title="")


def test_numbers_within_the_tolerance(capsys):
    p.check_number(answering((4, 2.0)), (4.0, 2.0), tol=0.05, title="ratio")
    assert capsys.readouterr().out.startswith("✓ ratio: you answered (4, 2)")
    p.check_number(answering((4, 1)), (4.0, 2.0), tol=0.05, title="ratio")
    assert "you answered (4, 1); the measurement gives (4, 2)" in reported(capsys)
    p.check_number(answering(4), (4.0, 2.0), tol=0.05, title="ratio")
    assert "2 are asked for" in reported(capsys)
    p.check_number(answering("4"), 4.0, tol=0.05, title="ratio")
    assert "finite number" in reported(capsys)
    with pytest.raises(ValueError, match="tol"):  # the notebook author's mistake still raises
        p.check_number(answering(4), 4.0, tol=-1, title="ratio")
    p.check_number(unanswered, 4.0, tol=0.05, title="ratio")
    assert "not answered yet" in capsys.readouterr().err


def test_intervals_by_hand(capsys):
    p.check_interval(answering((0.17, 0.32)), (0.171, 0.316), tol=0.01, title="interval")
    assert capsys.readouterr().out.startswith("✓ interval")
    p.check_interval(answering((0.10, 0.32)), (0.171, 0.316), tol=0.01, title="interval")
    assert "the measurement gives (0.171, 0.316)" in reported(capsys)
    p.check_interval(answering((0.32, 0.17)), (0.171, 0.316), tol=0.01, title="interval")
    assert "not an interval" in reported(capsys)
    p.check_interval(answering("0.17 to 0.32"), (0.171, 0.316), tol=0.01, title="interval")
    assert "your interval must be a finite number or a tuple" in reported(capsys)
    with pytest.raises(ValueError, match="lo <= hi"):
        p.check_interval(answering((0.17, 0.32)), (0.316, 0.171), tol=0.01, title="interval")


def test_interval_verdict():
    labels = ("band", "placebo", "same")
    assert p.interval_verdict(Interval(0.242, 0.171, 0.316), Interval(0.047, 0.024, 0.076), labels) == "band"
    assert p.interval_verdict((0.037, 0.084), (0.047, 0.120), labels) == "same"  # overlapping
    assert p.interval_verdict((0.0, 0.1), (0.2, 0.3), labels) == "placebo"
    with pytest.raises(ValueError, match="lo <= hi"):
        p.interval_verdict((0.3, 0.2), (0.2, 0.3), labels)


def test_which_bin():
    labels = ["lower by more than 0.2", "lower by 0.05 to 0.2", "within 0.05", "higher by more than 0.05"]
    edges = [-0.2, -0.05, 0.05]
    assert [p.which_bin(v, edges, labels) for v in (-0.3, -0.1, -0.022, 0.0, 0.05, 0.3)] == [
        labels[0], labels[1], labels[2], labels[2], labels[3], labels[3]]
    with pytest.raises(ValueError, match="one label more"):
        p.which_bin(0.0, edges, labels[:3])


def test_every_wrong_or_malformed_answer_lets_the_notebook_run_on(capsys):
    """A cell that checks two answers (07's shapes question) reports both, the wrong one and then the
    right one: the first report stops nothing."""
    p.check_number(answering((8, 4, 64, 64)), (8, 4, 16, 16), tol=0, title="logits")
    p.check_number(answering((8, 64, 64)), (8, 64, 64), tol=0, title="predict")
    out, err = capsys.readouterr()
    assert err.startswith("✗ logits: you answered (8, 4, 64, 64); the measurement gives (8, 4, 16, 16)")
    assert out.startswith("✓ predict")


def buggy():
    return undefined_name  # noqa: F821 - the learner's typo


@pytest.mark.parametrize("check", [
    lambda f: p.check_prediction(f, "band", OPTIONS, title="erase"),
    lambda f: p.check_number(f, 3, tol=0, title="count"),
    lambda f: p.check_interval(f, (0.171, 0.316), tol=0.01, title="interval"),
])
def test_a_bug_in_the_learners_function_is_reported_with_its_own_frames_and_runs_on(check, capsys):
    """An error inside the learner's function (a NameError from a typo) is marked zero on stderr like
    a wrong answer, with the learner's line and none of the checker's frames, and raises nothing."""
    check(buggy)
    err = reported(capsys)
    assert "your function raised NameError: name 'undefined_name' is not defined" in err, err
    assert "in buggy" in err and "return undefined_name" in err, err
    assert "course/checks" not in err and "band" not in err.split("Marked zero")[0].split("NameError")[0], err

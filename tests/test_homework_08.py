"""Notebook 08 as homework: its three graded exercises (verdicts predicted before any is shown, a
paired interval computed by hand, the smallest sr_ratio under a memory budget) go through a full
nbgrader round trip, and each of its review questions keeps its answer cell.

The round trip drives nbgrader's own command line in a temporary course directory, as
tests/test_homework.py does for 04, 06 and 07; it lives in a file of its own so that 08's one long
autograde stays apart from theirs.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from segformer_lite.course import homework

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISES = homework.exercises_dir(NOTEBOOKS)
NB = "08_do_the_parts_matter.ipynb"
TIMEOUT_ENAMES = {"KeyboardInterrupt", "CellTimeoutError"}  # how an autograded cell records a timeout

# the prediction function of each graded cell: grade_id -> function the learner writes
FUNCTIONS = {"predict_verdicts_check": "my_predictions", "hand_interval_check": "my_interval",
             "sr_budget_check": "smallest_sr_within_budget"}


def cells(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"])


def grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def printed_differences() -> list[str]:
    """The three per-seed differences of "drop 64->128 px" as the course notebook prints them above
    Exercise 2 (what a learner types in)."""
    for c in cells(NOTEBOOKS / NB):
        out = "".join("".join(o.get("text", "")) for o in c.get("outputs", []))
        found = re.findall(r"seed \d+:\s+pos-embed \S+\s+mit \S+\s+difference (\S+)", out)
        if found:
            assert len(found) == 3, found
            return found
    raise AssertionError(f"{NB}: no cell prints the per-seed differences of Exercise 2")


def right_answers() -> dict[str, str]:
    """A learner's right answers, written as a learner writes them (not the course's solutions):
    function -> the body that replaces ``raise NotImplementedError()``."""
    d = ", ".join(printed_differences())
    return {
        "my_predictions": 'return {claim: "inconclusive" for claim in CLAIMS}',
        "my_interval": (f"import statistics\n    d = [{d}]\n    m, s = statistics.mean(d), statistics.stdev(d)\n"
                        "    half = 4.303 * s / 3 ** 0.5  # t(0.975) at 2 degrees of freedom\n"
                        "    return m - half, m + half"),
        "smallest_sr_within_budget": "return 16",
    }


def wrong_answers() -> dict[str, str]:
    """One common mistake per exercise: a verdict outside the listed three, the normal quantile in
    place of Student's t, the largest ratio that does not fit instead of the smallest that does."""
    d = ", ".join(printed_differences())
    return {
        "my_predictions": 'return {claim: "probably" for claim in CLAIMS}',
        "my_interval": (f"import statistics\n    d = [{d}]\n    m, s = statistics.mean(d), statistics.stdev(d)\n"
                        "    return m - 1.96 * s / 3 ** 0.5, m + 1.96 * s / 3 ** 0.5"),
        "smallest_sr_within_budget": "return 8",
    }


def answered(student: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    for function, body in answers.items():
        [cell] = [c for c in student.cells if f"def {function}():" in c.source]
        head, tail = cell.source.split(f"def {function}():")
        assert "raise NotImplementedError()" in tail, function
        cell.source = head + f"def {function}():" + tail.replace("raise NotImplementedError()", body, 1)
    return student


def submit(course: Path, student: str, nb: nbformat.NotebookNode) -> None:
    folder = course / "submitted" / student / homework.ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / NB)


def streams(cell: nbformat.NotebookNode, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == name)


def test_notebook_08_grades_three_exercises_each_checking_its_function():
    """The round trip below fills in one function per graded cell: these are 08's graded cells."""
    course = cells(NOTEBOOKS / NB)
    graded = {grade_id(c): text(c) for c in course
              if c["cell_type"] == "code" and c["metadata"].get("nbgrader", {}).get("grade")}
    assert set(graded) == set(FUNCTIONS)
    for gid, function in FUNCTIONS.items():
        assert re.search(rf"\bcheck_\w+\({function}\b", graded[gid]), gid


def test_every_review_question_of_08_has_its_answer_cell():
    """Each numbered question under "Check your understanding" is followed by a manually graded
    answer cell: the course's answer between the solution markers in notebooks/, "YOUR ANSWER HERE"
    and nothing else in the student version."""
    course, student = cells(NOTEBOOKS / NB), cells(EXERCISES / NB)
    assert [grade_id(c) for c in course] == [grade_id(c) for c in student]
    start = next(i for i, c in enumerate(course) if text(c).startswith("## Check your understanding"))
    questions = [i for i in range(start, len(course)) if re.match(r"\d+\. ", text(course[i]))]
    assert len(questions) == 6
    for i in questions:
        answer = course[i + 1]
        meta = answer["metadata"].get("nbgrader", {})
        assert answer["cell_type"] == "markdown" and meta.get("grade") and meta.get("solution") and meta["points"] > 0, i
        assert re.fullmatch(r"### BEGIN SOLUTION\n.+\n### END SOLUTION", text(answer), re.S), i
        assert text(student[i + 1]).strip() == "YOUR ANSWER HERE", (i + 1, text(student[i + 1]))


@pytest.mark.slow
def test_nbgrader_round_trip_of_notebook_08(tmp_path):
    """08's student version, released by nbgrader, with every exercise answered right in one
    submission and wrong in another, runs top to bottom under autograde. Right answers score each
    graded cell's point and print a check mark; each wrong one scores zero, says so (an error or a
    report on stderr, which nbgrader scores zero alike) and never shows a check mark. The answer
    cells left as released count towards the maximum and score nothing."""
    source_nb = NOTEBOOKS / NB
    # this test is about grading, not the per-cell limit (tests/test_homework.py tests that): 08's
    # live-training cell takes about 10 s on a quiet machine but took 136 s at load average 28 on the
    # 2-core machine, so the cells get 10x the instructors' limit, as 07's round trip does
    course = homework.make_course(tmp_path / "course", [source_nb], timeout=10 * homework.CELL_TIMEOUT)
    homework.nbgrader(course, "generate_assignment", homework.ASSIGNMENT)
    release = course / "release" / homework.ASSIGNMENT / NB
    submit(course, "right", answered(nbformat.read(release, 4), right_answers()))
    submit(course, "wrong", answered(nbformat.read(release, 4), wrong_answers()))
    t0 = time.perf_counter()
    try:  # a guard against a hang, not a speed test: two runs of 08
        homework.nbgrader(course, "autograde", homework.ASSIGNMENT, timeout=3600)
    except RuntimeError as e:
        if "timed out" in str(e) or "Timeout waiting" in str(e):
            raise AssertionError(f"autograde: a cell of 08 ran past {10 * homework.CELL_TIMEOUT} s; "
                                 f"nbgrader's log follows\n{e}") from None
        raise
    print(f"autograde of 2 submissions of {NB}: {time.perf_counter() - t0:.0f} s")

    graded = {grade_id(c): c for c in cells(source_nb) if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
    auto = {g for g, c in graded.items() if c["cell_type"] == "code"}
    manual = {g for g, c in graded.items() if c["cell_type"] == "markdown"}
    assert auto == set(FUNCTIONS) and len(manual) >= 6
    points = {g: c["metadata"]["nbgrader"]["points"] for g, c in graded.items()}

    from nbgrader.api import Gradebook  # an instructor's tool, installed with the test requirements

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {student: {g: gb.find_grade(g, NB.removesuffix(".ipynb"), homework.ASSIGNMENT, student).score
                            for g in graded} for student in ("right", "wrong")}
    assert scores["right"] == {g: points[g] if g in auto else 0 for g in graded}, scores["right"]
    assert scores["wrong"] == dict.fromkeys(graded, 0), scores["wrong"]

    for student in ("right", "wrong"):
        nb = nbformat.read(course / "autograded" / student / homework.ASSIGNMENT / NB, 4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        timed_out = [i for i, c in enumerate(code) if any(o.output_type == "error" and o.ename in TIMEOUT_ENAMES
                                                          for o in c.outputs)]
        assert not timed_out, (student, timed_out)
        # top to bottom: the last cell (the notebook timing itself) ran
        assert "this notebook ran in" in streams(code[-1], "stdout"), student
        for c in code:
            g = grade_id(c)
            errors = [o for o in c.outputs if o.output_type == "error"]
            if student == "right":
                assert not errors and not streams(c, "stderr"), (g, errors, streams(c, "stderr"))
                if g in auto:
                    assert streams(c, "stdout").startswith("✓ "), (g, streams(c, "stdout"))
            elif g in auto:
                # wrong: reported as an error or on stderr (either scores zero), never with a check mark
                report = "".join(f"{o.ename}: {o.evalue}" for o in errors) + streams(c, "stderr")
                assert report.strip() and "✓" not in streams(c, "stdout"), (g, c.outputs)
                assert "not implemented yet" not in report, (g, report)  # the answer was read
            else:
                assert not errors, (g, [o.ename for o in errors])  # only the graded cells fail

    homework.nbgrader(course, "export")
    with open(course / "grades.csv", newline="") as f:
        totals = {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}
    total = sum(points.values())
    assert totals == {"right": (sum(points[g] for g in auto), total), "wrong": (0, total)}
    shutil.rmtree(course)

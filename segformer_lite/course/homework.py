"""Homework mode: the course notebooks as an nbgrader assignment.

The course notebooks in ``notebooks/`` are the solution ("source") notebooks: their exercise
cells carry nbgrader metadata and ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers, and each
exercise is followed by a graded cell that calls a checker from ``segformer_lite.course.checks``.
Everything else is nbgrader's own machinery: ``nbgrader generate_assignment`` makes the student
versions (solutions replaced by a stub, outputs cleared, checksums recorded) and
``nbgrader autograde`` grades submissions. This module only lays out a course directory for it.

    segformer-lite homework generate   # rewrite notebooks/exercises/ from notebooks/
    segformer-lite homework check      # exit 1 if notebooks/exercises/ is out of date
    segformer-lite homework course DIR # an nbgrader course directory with the source

The course notebooks are those of a checkout of the repository: ``notebooks/`` in the working
directory, or the folder ``--notebooks DIR`` names (an installed wheel does not ship them).

nbgrader is an instructor's tool, pinned in requirements-test.txt, not needed to take the course;
without it, or without course notebooks, the commands say so in one line and exit 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..checkpoint import atomic_write

__all__ = ["ASSIGNMENT", "CELL_TIMEOUT", "HomeworkError", "solution_notebooks", "course_notebooks",
           "make_course", "nbgrader", "generate_exercises", "stale_exercises", "exercises_dir", "NOTEBOOKS"]

ASSIGNMENT = "segformer-lite"
CELL_TIMEOUT = 60  # seconds per cell when grading: an infinite loop is interrupted, not waited on
IOPUB_TIMEOUT = 60  # seconds to wait for a cell's last output (after an interrupt) before failing a submission
NOTEBOOKS = Path("notebooks")  # the course notebooks, relative to the working directory (a checkout)

CONFIG = """\
# nbgrader configuration for the segformer-lite course (written by segformer-lite homework)
c = get_config()
c.CourseDirectory.course_id = "segformer-lite"
c.CourseDirectory.root = {root!r}
# Grading executes every submitted notebook; a cell running longer than this is interrupted
# and scored as an error, so a student's infinite loop cannot hang the grader.
c.Execute.timeout = {timeout}
c.Execute.interrupt_on_timeout = True
# After interrupting such a cell, wait this long for the kernel's last output before giving up on
# the whole submission: nbclient's 4 s default is too short on a loaded machine, where autograde
# then dropped a submission whose looping cell it had interrupted correctly.
c.Execute.iopub_timeout = {iopub_timeout}
# What replaces each "### BEGIN SOLUTION ... ### END SOLUTION" region in the student version.
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
"""


class HomeworkError(RuntimeError):
    """Something the instructor must fix first (no course notebooks, nbgrader missing): the
    command line prints it in one line instead of a traceback."""


def exercises_dir(folder: Path = NOTEBOOKS) -> Path:
    """Where the student versions of the notebooks in ``folder`` live: ``folder/exercises``."""
    return Path(folder) / "exercises"


def solution_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks in ``folder`` that contain at least one nbgrader cell, in course order."""
    found = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        if any("nbgrader" in cell.get("metadata", {}) for cell in cells):
            found.append(path)
    return found


def course_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """``solution_notebooks(folder)`` (default ``notebooks/``), refusing to find none: an empty
    course would grade nothing, and ``generate`` would delete every exercise."""
    folder = Path(folder)
    found = solution_notebooks(folder)
    if not found:
        raise HomeworkError(f"no course notebooks (notebooks with nbgrader cells) in {folder.resolve()}: run "
                            "this from a checkout of the segformer-lite repository, whose notebooks/ holds "
                            "them, or name the folder with --notebooks")
    return found


def make_course(root: Path, notebooks: list[Path], assignment: str = ASSIGNMENT,
                timeout: int = CELL_TIMEOUT) -> Path:
    """Lay out an nbgrader course directory: ``nbgrader_config.py`` and
    ``source/<assignment>/`` holding copies of ``notebooks``. Returns ``root``."""
    if not notebooks:
        raise HomeworkError("no notebooks to put in the course")
    root = Path(root).resolve()
    source = root / "source" / assignment
    source.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        shutil.copy2(nb, source / Path(nb).name)
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=str(root), timeout=int(timeout),
                                                          iopub_timeout=IOPUB_TIMEOUT))
    return root


def nbgrader(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``nbgrader <args>`` in the course directory ``root``; raise with its log on failure."""
    if importlib.util.find_spec("nbgrader") is None:
        raise HomeworkError(f"nbgrader is not installed for {sys.executable}: it is an instructor's tool "
                            "that comes with the test requirements (pip install -r requirements-test.txt)")
    cmd = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader shells out to `alembic` (its database migrations): put this Python's bin on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": path})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed (exit {proc.returncode}) in {root}:\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return proc


def _without_widget_state(src: Path, dst: Path) -> None:
    """Copy a released notebook without the widget state the executed source stores in its
    metadata: nbgrader clears outputs, not that, and it holds what the widgets last showed (a
    progress bar's last loss, an attention readout), which a student version must not."""
    nb = json.loads(Path(src).read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    # written as nbformat writes a notebook (sorted keys, one-space indent), so nothing else changes
    text = json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False)
    Path(dst).write_text(text + "\n", encoding="utf-8")


def _generate(notebooks: list[Path], out_dir: Path) -> list[Path]:
    """Student versions of ``notebooks`` made by ``nbgrader generate_assignment``, in ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="segformer-course-") as tmp:
        root = make_course(Path(tmp), notebooks)
        nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
        out_dir.mkdir(parents=True, exist_ok=True)
        made = []
        for nb in notebooks:
            released = root / "release" / ASSIGNMENT / Path(nb).name
            made.append(atomic_write(out_dir / Path(nb).name, lambda tmp: _without_widget_state(released, tmp)))
        return made


def generate_exercises(notebooks: list[Path] | None = None, out_dir: Path | None = None) -> list[Path]:
    """Rewrite ``out_dir`` (default ``notebooks/exercises/``) with the student versions of the
    solution notebooks, removing exercise notebooks whose source no longer has exercises."""
    notebooks = course_notebooks() if notebooks is None else notebooks
    out_dir = exercises_dir() if out_dir is None else out_dir
    made = _generate(notebooks, Path(out_dir))
    for old in set(Path(out_dir).glob("*.ipynb")) - set(made):
        old.unlink()
    return made


def stale_exercises(notebooks: list[Path] | None = None, out_dir: Path | None = None) -> list[str]:
    """Names of exercise notebooks that are missing, extra, or differ from a fresh generation."""
    notebooks = course_notebooks() if notebooks is None else notebooks
    out_dir = exercises_dir() if out_dir is None else out_dir
    with tempfile.TemporaryDirectory(prefix="segformer-exercises-") as tmp:
        fresh = {p.name: p.read_bytes() for p in _generate(notebooks, Path(tmp))}
    stored = {p.name: p.read_bytes() for p in Path(out_dir).glob("*.ipynb")}
    return sorted(name for name in fresh.keys() | stored.keys() if fresh.get(name) != stored.get(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segformer-lite homework", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                        help="the course notebooks (default: notebooks/ in the working directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="rewrite notebooks/exercises/ from the solution notebooks")
    sub.add_parser("check", help="exit 1 if notebooks/exercises/ is out of date")
    course = sub.add_parser("course", help="write an nbgrader course directory with the source notebooks")
    course.add_argument("root", type=Path)
    course.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell when grading")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except HomeworkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2  # an expected failure: one line, exit status 2


def _run(args: argparse.Namespace) -> int:
    sources, exercises = course_notebooks(args.notebooks), exercises_dir(args.notebooks)
    if args.command == "generate":
        for path in generate_exercises(sources, exercises):
            print(f"wrote {path}")
    elif args.command == "check":
        stale = stale_exercises(sources, exercises)
        if stale:
            print(f"out of date in {exercises}: " + ", ".join(stale)
                  + "\nrun: segformer-lite homework generate", file=sys.stderr)
            return 1
        print(f"{exercises} is in sync with the solution notebooks")
    else:
        root = make_course(args.root, sources, timeout=args.timeout)
        print(f"course directory {root}: source/{ASSIGNMENT}/ and nbgrader_config.py\n"
              f"next: cd {root} && nbgrader generate_assignment {ASSIGNMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The graded cells of the course notebooks, read as data: each exercise's checker call, hidden
tests, reference solution and the earlier statements they need (``tests/test_checks.py`` and
``tests/test_checks_contracts.py`` run checkers and hidden tests on students through these)."""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import re
from pathlib import Path

from segformer_lite.course import homework
from segformer_lite.course.checks import predictions, verdicts

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)
# graded cells that grade a prediction or an answer worked by hand (07, 08), not code: no hidden
# tests, no planted students (tests/test_predictions.py and tests/test_checks_verdicts.py test these
# checkers, tests/test_homework.py grades notebook 07's)
PREDICTION_CHECKERS = {name for module in (predictions, verdicts) for name in module.__all__ if name.startswith("check_")}


def _source(cell: dict) -> str:
    lines = "".join(cell["source"]).splitlines(True)
    return "".join(line for line in lines if not line.lstrip().startswith(("%", "!")))  # no IPython magics


def _binds(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return set()


def _reads(tree: ast.AST) -> set[str]:
    """The names ``tree`` reads and binds nowhere (assignments and function parameters bind)."""
    loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    stores = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    params = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    return loads - stores - params - set(dir(builtins))


def _context(earlier: list[str], needed: set[str], exercise: set[str]) -> list[str]:
    """The earlier top-level statements that bind what ``needed`` reads, transitively, in order."""
    statements = [stmt for src in earlier for stmt in ast.parse(src).body]
    chosen, seen, todo = set(), set(exercise), set(needed) - set(exercise)
    while todo:
        name = todo.pop()
        seen.add(name)
        binders = [i for i, stmt in enumerate(statements) if name in _binds(stmt)]
        if binders and binders[-1] not in chosen:
            chosen.add(binders[-1])
            todo |= _reads(statements[binders[-1]]) - seen
    return [ast.unparse(statements[i]) for i in sorted(chosen)]


def graded_exercises() -> list[dict]:
    """One entry per graded cell of the course notebooks that grades code (not a prediction): its checker, visible code, hidden tests,
    the names its exercise defines, the statements its hidden tests need, and the exercise's
    solution cell with the statements it needs."""
    found = []
    for path in homework.solution_notebooks(Path(__file__).resolve().parents[1] / "notebooks"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        for i, cell in enumerate(code):
            meta = cell["metadata"].get("nbgrader", {})
            if not meta.get("grade"):
                continue
            source = _source(cell)
            if set(re.findall(r"\b(check_\w+)\(", source)) & PREDICTION_CHECKERS:
                continue
            hidden = HIDDEN.search(source)
            assert hidden, f"{path.name}: graded cell {meta['grade_id']} has no hidden tests"
            visible = HIDDEN.sub("", source)
            [solution] = [c for c in code[:i] if c["metadata"].get("nbgrader", {}).get("solution")][-1:]
            exercise = {s.name for s in ast.parse(_source(solution)).body
                        if isinstance(s, (ast.FunctionDef, ast.ClassDef))}
            earlier = [_source(c) for c in code[:i]]
            before_solution = [_source(c) for c in code[:code.index(solution)]]
            found.append(dict(notebook=path.name, grade_id=meta["grade_id"], visible=visible,
                              hidden=hidden.group(1), exercise=sorted(exercise),
                              checker=re.search(r"\b(check_\w+)\(", visible).group(1),
                              context=_context(earlier, _reads(ast.parse(hidden.group(1))), exercise),
                              solution=_source(solution),
                              solution_context=_context(before_solution, _reads(ast.parse(_source(solution))),
                                                        exercise)))
    return found


def run(code: str, namespace: dict) -> tuple[Exception | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(code, "<graded cell>", "exec"), namespace)
        except Exception as e:  # the hidden tests' verdict
            return e, out.getvalue(), err.getvalue()
    return None, out.getvalue(), err.getvalue()



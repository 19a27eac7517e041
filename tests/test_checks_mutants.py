"""Mutation test of the checkers' feedback: single-edit mutants of each exercise's solution,
generated mechanically from the course notebook's solution cell (read as tests/graded_cells.py
reads it), must each get a report that names where the mutation sits, or the first step
downstream of it.

The edits (:func:`mutants`), each applied at every place it fits in ``forward`` (and 03's
``self.scale``):

* einops: two neighbouring axes of a pattern swapped (``b n (h d)`` -> ``b n (d h)``);
* a changed constant: an int (a transposed or concatenated dim, a softmax axis, a slice step)
  moved by one, a float doubled, a bool flipped, an interpolation mode changed;
* a dropped call: a layer, activation, upsampling or reshape call replaced by its first argument;
* two names swapped in a tuple assignment or a returned tuple (``h, w`` -> ``w, h``);
* an in-place op on an input: ``x = x + y`` written ``x += y``, the first read of a tensor
  argument made ``x.mul_(2)``, a list argument reversed in place.

Where a mutation sits is read from the source, not from the checker: each statement of
``forward`` is labelled with the hooked submodules it calls (``self.proj(...)`` -> ``proj``,
``linear(...)`` over ``self.linear_c`` -> ``linear_c[i]``, ``block(...)`` -> ``stages[i].blocks[j]``)
and the contract's values it makes (``attn`` -> the attention weights; ``return`` -> the output);
the accepted names are the mutated statement's labels and those of the first labelled statements
its result flows into (def-use within ``forward``, around a loop too; an ``if``'s condition reaches
what its body writes). The report's
"Step by step" sentence names one point ("the input to proj differs", "norm is never called",
"the attention weights differ", "your code raised inside fc2"), which must be among them; a
mutant that changes an input in place must be told so ("... in place"). For the two token
helpers (02) the check's title names the function.
"""
from __future__ import annotations

import ast
import contextlib
import io
import re
from dataclasses import dataclass

import pytest

import segformer_lite as sl
from segformer_lite.course import checks
from segformer_lite.course.checks import localise

from graded_cells import graded_exercises

EXERCISES = {ex["grade_id"]: ex for ex in graded_exercises()}
GRADED = ["check_overlap_patch_embed", "check_tokens", "check_efficient_self_attention", "check_mix_ffn",
          "check_block", "check_mix_transformer", "check_all_mlp_decoder"]
FRACTION = 0.9  # of the mutants whose output differs, overall
SAMPLE = 36  # mutants run per exercise at most
MODES = {"bilinear": "nearest", "nearest": "bilinear"}
RESULT = {"forward's result", "the output", "the result"}  # what a form check calls the whole returned value
DROPPABLE = {"gelu", "relu", "interpolate", "rearrange", "tokens_to_image", "flatten", "transpose", "softmax",
             "reshape", "permute"}


# --- the mutants --------------------------------------------------------------------------------

def _side_swaps(side: str) -> list[str]:
    """One side of an einops pattern with two neighbouring axes (or two axes of a group) swapped."""
    axes = re.findall(r"\([^)]*\)|\S+", side)
    found = [axes[:j] + [axes[j + 1], axes[j]] + axes[j + 2:] for j in range(len(axes) - 1)]
    for j, ax in enumerate(axes):
        inner = ax[1:-1].split() if ax.startswith("(") else []
        for k in range(len(inner) - 1):
            group = "(" + " ".join(inner[:k] + [inner[k + 1], inner[k]] + inner[k + 2:]) + ")"
            found.append(axes[:j] + [group] + axes[j + 1:])
    return [" ".join(a) for a in found]


def _pattern_swaps(pattern: str) -> list[str]:
    left, right = (side.strip() for side in pattern.split("->"))
    found = [f"{l} -> {right}" for l in _side_swaps(left)] + [f"{left} -> {r}" for r in _side_swaps(right)]
    return [p for p in dict.fromkeys(found) if p != pattern]


@dataclass
class Mutant:
    label: str
    source: str  # the whole solution cell, mutated
    line: int  # the mutated statement's first line (in the cell)
    kind: str


def _droppable(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    owner = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
    return bool(call.args) and (owner in ("self", "stage") or name in ("linear", "block") or name in DROPPABLE)


def _kind(node: ast.AST, negated: set[int]) -> str | None:
    """Which edit applies to this node, if any."""
    if isinstance(node, ast.Constant) and id(node) not in negated:
        if isinstance(node.value, str):
            return "einops" if "->" in node.value else "constant" if node.value in MODES else None
        return "constant" if type(node.value) in (int, float, bool) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return "constant"
    if isinstance(node, ast.Call) and _droppable(node):
        return "drop"
    if isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(isinstance(e, (ast.Name, ast.Call, ast.Attribute))
                                                                   for e in node.elts):
        return "swap"
    if (isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp)
            and ast.unparse(node.value.left) == ast.unparse(node.targets[0])):
        return "inplace"
    return None


def _sites(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """(node, edit) for every place an edit fits: forward's body (the functions' bodies for 02)
    and 03's ``self.scale``."""
    bodies = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and (fn.name == "forward" or fn in tree.body):
            bodies += fn.body
        elif isinstance(fn, ast.Assign) and ast.unparse(fn.targets[0]) == "self.scale":
            bodies.append(fn)
    found = []
    for stmt in bodies:
        negated = {id(n.operand) for n in ast.walk(stmt) if isinstance(n, ast.UnaryOp)}
        found += [(node, kind) for node in ast.walk(stmt) if (kind := _kind(node, negated))]
        found += [(node, "arguments") for node in ast.walk(stmt) if isinstance(node, ast.Call) and len(node.args) >= 2
                  and ast.dump(node.args[0]) != ast.dump(node.args[1])]
    return found


def _edits(node: ast.AST, kind: str) -> list[tuple[str, ast.AST]]:
    """(label, replacement node) for one site."""
    if kind == "einops":
        return [(f"einops {node.value!r} -> {p!r}", ast.Constant(p)) for p in _pattern_swaps(node.value)]
    if kind == "constant":
        if isinstance(node, ast.UnaryOp):
            v = -node.operand.value
            return [(f"constant {v} -> {v - 1}", ast.parse(repr(v - 1), mode="eval").body)]
        v = node.value
        if type(v) is bool:
            return [(f"constant {v} -> {not v}", ast.Constant(not v))]
        if type(v) is int:
            return [(f"constant {v} -> {v + 1}", ast.Constant(v + 1))]
        if type(v) is float:
            return [(f"constant {v} -> {2 * v}", ast.Constant(2 * v))]
        return [(f"constant {v!r} -> {MODES[v]!r}", ast.Constant(MODES[v]))]
    if kind == "arguments":
        return [(f"arguments swapped in {ast.unparse(node)}",
                 ast.Call(func=node.func, args=[node.args[1], node.args[0], *node.args[2:]], keywords=node.keywords))]
    if kind == "drop":
        return [(f"dropped call {ast.unparse(node.func)}(...)", node.args[0])]
    if kind == "swap":
        return [(f"swapped ({ast.unparse(node)})", ast.Tuple(elts=node.elts[::-1], ctx=node.ctx))]
    return [(f"in place: {ast.unparse(node)} -> +=",
             ast.AugAssign(target=node.targets[0], op=node.value.op, value=node.value.right))]


class _Replace(ast.NodeTransformer):
    def __init__(self, old: ast.AST, new: ast.AST):
        self.old, self.new = old, new

    def visit(self, node):
        return self.new if node is self.old else super().visit(node)


def _twin(tree: ast.AST, node: ast.AST) -> ast.AST:
    """The node at the same place in another parse of the same source."""
    return next(n for n in ast.walk(tree) if type(n) is type(node) and ast.dump(n) == ast.dump(node)
                and (n.lineno, n.col_offset, n.end_col_offset) == (node.lineno, node.col_offset, node.end_col_offset))


def _statement_line(tree: ast.AST, node: ast.AST) -> int:
    """The line of the simple statement holding ``node`` (a loop header's own line)."""
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt) and not isinstance(stmt, (ast.For, ast.If, ast.FunctionDef, ast.ClassDef)) \
                and any(n is node for n in ast.walk(stmt)):
            return stmt.lineno
    return node.lineno


def _forward(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "forward"] or \
        [n for n in tree.body if isinstance(n, ast.FunctionDef)]


def _name_sites(tree: ast.Module) -> list[tuple[ast.Name, str]]:
    """Each read of a local tensor name in forward (the functions for 02), with the name it is
    mistaken for: the one bound just before it (a parameter at the start), the classic slip of
    using the previous variable."""
    found = []
    fns = [fn for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and (fn.name == "forward" or fn in tree.body)]
    for fn in fns:
        modules = {n.id for loop in ast.walk(fn) if isinstance(loop, ast.For)
                   and re.search(r"\b(self|stage)\.", ast.unparse(loop.iter))
                   for n in ast.walk(loop.target) if isinstance(n, ast.Name) and n.id not in ("f",)}
        bound = [a.arg for a in fn.args.args if a.arg not in ("self", "return_attention")]
        events = sorted([(n.lineno, n.col_offset, n) for n in ast.walk(fn) if isinstance(n, ast.Name)],
                        key=lambda t: t[:2])
        order = list(bound)
        for _, _, n in events:
            if isinstance(n.ctx, ast.Store):
                if n.id not in order:
                    order.append(n.id)
                continue
            if n.id in order and n.id not in modules:
                others = [o for o in order if o != n.id and o not in modules]
                if others:
                    found.append((n, others[-1]))
    return found


def mutants(source: str) -> list[Mutant]:
    """Every single-edit mutant of a solution cell."""
    tree = ast.parse(source)
    out = []
    for node, other in _name_sites(tree):
        fresh = ast.parse(source)
        mutated = ast.fix_missing_locations(_Replace(_twin(fresh, node), ast.Name(other, ast.Load())).visit(fresh))
        out.append(Mutant(f"{node.id} read as {other} (line {node.lineno})", ast.unparse(mutated),
                          _statement_line(tree, node), "name"))
    for node, kind in _sites(tree):
        for label, new in _edits(node, kind):
            fresh = ast.parse(source)
            mutated = ast.fix_missing_locations(_Replace(_twin(fresh, node), new).visit(fresh))
            out.append(Mutant(label, ast.unparse(mutated), _statement_line(tree, node), kind))
    return out + _statement_mutants(source) + _input_mutants(source)


def _statement_mutants(source: str) -> list[Mutant]:
    """Each simple statement of forward (but its return) left out."""
    out = []
    tree = ast.parse(source)
    for fn in _forward(tree):
        for stmt in ast.walk(fn):
            body = getattr(stmt, "body", None)
            if not isinstance(body, list) or stmt is fn and len(body) < 2:
                continue
            for i, inner in enumerate(body):
                if isinstance(inner, (ast.Assign, ast.Expr, ast.AugAssign)) and not (
                        isinstance(inner, ast.Expr) and isinstance(inner.value, ast.Constant)) and len(body) > 1:
                    fresh = ast.parse(source)
                    twin = _twin(fresh, stmt)
                    del twin.body[i]
                    out.append(Mutant(f"statement left out: {ast.unparse(inner)}",
                                      ast.unparse(ast.fix_missing_locations(fresh)), inner.lineno, "statement"))
    return out


def _input_mutants(source: str) -> list[Mutant]:
    """The first read of each tensor argument made in place (``x.mul_(2)``); a list argument
    reversed in place first (``feats.reverse()``)."""
    out = []
    tree = ast.parse(source)
    for fn in _forward(tree):
        for p in [a.arg for a in fn.args.args if a.arg not in ("self", "hw", "return_attention")]:
            fresh = ast.parse(source)
            if p == "feats":
                [twin] = [n for n in _forward(fresh) if n.lineno == fn.lineno]
                twin.body.insert(0, ast.parse(f"{p}.reverse()").body[0])
                out.append(Mutant(f"in place: {p}.reverse() first", ast.unparse(ast.fix_missing_locations(fresh)),
                                  fn.body[0].lineno, "inplace"))
                continue
            reads = [n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == p and isinstance(n.ctx, ast.Load)]
            if reads:
                first = min(reads, key=lambda n: (n.lineno, n.col_offset))
                new = ast.parse(f"{p}.mul_(2)", mode="eval").body
                mutated = ast.fix_missing_locations(_Replace(_twin(fresh, first), new).visit(fresh))
                out.append(Mutant(f"in place: {p}.mul_(2) at its first read", ast.unparse(mutated),
                                  _statement_line(tree, first), "inplace"))
    return out


# --- where a mutation sits, read from the source -------------------------------------------------

def _labels(stmt: ast.stmt, outputs: list[str], returned: set[str] = frozenset()) -> set[str]:
    """The report's names for the points a statement makes: hooked calls, contract values."""
    found = set()
    for n in ast.walk(stmt):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute) and ast.unparse(f.value) == "self" and f.attr not in ("dropout",):
                found.add(re.escape(f.attr))
            elif isinstance(f, ast.Attribute) and ast.unparse(f.value) == "stage":
                found.add(rf"stages\[\d\]\.{f.attr}")
            elif isinstance(f, ast.Name) and f.id == "linear":
                found.add(r"linear_c\[\d\]")
            elif isinstance(f, ast.Name) and f.id == "block":
                found.add(r"stages\[\d\]\.blocks\[\d\]")
            elif isinstance(f, ast.Attribute) and f.attr == "append" and ast.unparse(f.value) in returned:
                found |= set(outputs) | RESULT  # features.append(x), features returned: a feature map
        if isinstance(n, ast.Attribute) and ast.unparse(n) == "self.dropout":
            found.add("dropout")
    if isinstance(stmt, ast.Assign) and "attn" in {ast.unparse(t) for t in stmt.targets}:
        found.add("the attention weights")
    if isinstance(stmt, ast.Return):
        found |= set(outputs) | RESULT
    return found


def _flat(body: list[ast.stmt], loop: int | None = None, out=None) -> list[tuple[ast.stmt, int | None]]:
    """The simple statements of a body in order, each with the loop (its line) it sits in."""
    out = [] if out is None else out
    for stmt in body:
        if isinstance(stmt, ast.For):
            out.append((stmt, loop))  # the loop header binds its targets
            _flat(stmt.body, stmt.lineno, out)
        elif isinstance(stmt, ast.If):
            out.append((stmt, loop))
            _flat(stmt.body, loop, out)
        else:
            out.append((stmt, loop))
    return out


def _writes(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.If):  # its condition decides what its body writes
        return set().union(*(_writes(s) for s in stmt.body + stmt.orelse))
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
        stmt, (ast.AugAssign, ast.For)) else []
    names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    names |= {ast.unparse(t) for t in targets if isinstance(t, ast.Attribute)}
    for n in ast.walk(stmt):  # features.append(x) writes features
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "append":
            names.add(ast.unparse(n.func.value))
    return names


def _reads(stmt: ast.stmt) -> set[str]:
    part = stmt.iter if isinstance(stmt, ast.For) else stmt.test if isinstance(stmt, ast.If) else stmt
    names = {n.id for n in ast.walk(part) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    names |= {ast.unparse(n) for n in ast.walk(part) if isinstance(n, ast.Attribute) and ast.unparse(n) == "self.scale"}
    if isinstance(stmt, ast.AugAssign):
        names |= _writes(stmt)
    return names


def accepted(source: str, line: int, outputs: list[str]) -> set[str]:
    """The labels of the statement at ``line`` and of the first labelled statements its result
    reaches (def-use in forward; a loop's later statements reach its earlier ones)."""
    tree = ast.parse(source)
    stmts = [s for fn in _forward(tree) for s in _flat(fn.body)]
    returned = {ast.unparse(s.value) for s, _ in stmts if isinstance(s, ast.Return)}
    scale = [s for s in ast.walk(tree) if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "self.scale"]
    where = next((i for i, (s, _) in enumerate(stmts) if s.lineno == line), None)
    if where is None:  # 03's self.scale: read where the scores are made
        assert scale and scale[0].lineno == line, line
        todo = [i for i, (s, _) in enumerate(stmts) if "self.scale" in _reads(s)]
        start = set()
    else:
        todo, start = [where], _labels(stmts[where][0], outputs, returned)
    seen, found = set(), set(start)

    def reached(i):  # statements that read a name statement i writes, with i's definition reaching them
        s, loop = stmts[i]
        names = _writes(s)
        end = i  # an if's condition also reaches past its body: skipped, the body's writes are not made
        while isinstance(s, ast.If) and end + 1 < len(stmts) and any(stmts[end + 1][0] is n for n in ast.walk(s)):
            end += 1
        for j, (t, tloop) in enumerate(stmts):
            if j == i:
                continue
            for name in names & _reads(t):
                later = j > i and not any(name in _writes(u) for u, _ in stmts[(end if j > end else i) + 1:j])
                wrapped = j < i and loop is not None and tloop == loop and not any(
                    name in _writes(u) for u, ul in stmts[j:i] if ul == loop) and not any(
                    name in _writes(u) for u, ul in stmts[i + 1:] if ul == loop)
                if later or wrapped:
                    yield j
                    break
    first = list(todo)
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        labels = _labels(stmts[i][0], outputs, returned)
        if labels and (i not in first or where is None):
            found |= labels
            continue
        todo += list(reached(i))
    return found


POINT = re.compile(r"(?:the input to|the output of) (?P<a>[\w\[\]\.]+)"
                   r"|(?P<b>[\w\[\]\.]+) is (?:never )?called"
                   r"|your code raised (?:inside|before) (?:the input to |the output of )?(?P<c>the [\w ]+|stage \d's feature map"
                   r"|[\w\[\]\.]+)"
                   r"|(?P<d>the [\w ]+?|stage \d's feature map) (?:differs?|is missing)\b")
FORM = re.compile(r"^\w+: (?P<a>the [\w ]+?|forward's result|stage \d's feature map)(?: \(H, W\))? (?:is|has|holds)\b")


def named_point(report: str) -> str | None:
    """The point the report says the learner's module first parts from the reference at (the
    "Step by step" sentence, after the list of what matches), or the output item a form check
    names."""
    line = next((l for l in report.splitlines() if l.startswith("Step by step")), None)
    if line is None:
        m = FORM.match(report)
        return m.group("a") if m else None
    line = line.split(": ", 1)[1]
    line = re.sub(r"^.*\bmatch(?:es)?(?: \(\d+ steps\))?; (?:but )?", "", line)
    m = POINT.match(line)
    return next((v for v in m.groups() if v), None) if m else None


# --- running them -------------------------------------------------------------------------------

def _checked(ex: dict, mutant: Mutant) -> tuple[bool, str]:
    """(whether the check fails, its report)."""
    namespace: dict = {}
    for stmt in ex["solution_context"]:
        exec(stmt, namespace)
    try:
        exec(compile(mutant.source, "<mutant>", "exec"), namespace)
    except Exception as e:  # a mutant that does not even define the exercise
        return False, f"does not run: {e}"
    check = getattr(checks, ex["checker"])
    localise.reset()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            check(*(namespace[name] for name in ex["exercise"]))
        except AssertionError as e:
            return True, "\n".join(localise.render(e))  # what the learner sees
    return False, out.getvalue() + err.getvalue()


def _first_changed_line(ex: dict, mutant: Mutant) -> int:
    base = ast.unparse(ast.parse(ex["solution"])).splitlines()
    mine = mutant.source.splitlines()
    return next(i for i, (a, b) in enumerate(zip(base + [""] * len(mine), mine), 1) if a != b)


def _crash_at_or_after(ex: dict, mutant: Mutant, report: str) -> bool:
    """A crash report that shows the learner's own line where it raised: the mutated line or one
    that runs after it (in a loop, any line of the loop holding it)."""
    lines = [int(n) for n in re.findall(r'File "<mutant>", line (\d+)', report)]
    if not lines:
        return False
    changed = _first_changed_line(ex, mutant)
    tree = ast.parse(mutant.source)
    loops = [(l.lineno, l.end_lineno) for l in ast.walk(tree) if isinstance(l, ast.For) and l.lineno <= changed <= l.end_lineno]
    return lines[-1] >= changed or any(a <= lines[-1] <= b for a, b in loops)


def judge(ex: dict, mutant: Mutant, report: str) -> bool:
    """Whether the report names where the mutation sits, or the first labelled step downstream."""
    if mutant.kind == "inplace" and " in place" in report.splitlines()[0]:
        return True
    if "Where your code raised it:" in report:
        return _crash_at_or_after(ex, mutant, report)
    if ex["checker"] == "check_tokens":  # two small functions: the check's title names the one
        fn = next(f for f in ast.parse(ex["solution"]).body if isinstance(f, ast.FunctionDef)
                  and f.lineno <= mutant.line <= f.end_lineno)
        return report.startswith(f"{fn.name}:")
    point = named_point(report)
    if point is None:
        return False
    outputs = [label for label, _ in localise.PLANS[REFERENCES[ex["checker"]]].outputs]
    return any(re.fullmatch(label, point) for label in accepted(ex["solution"], mutant.line, outputs))


REFERENCES = {"check_overlap_patch_embed": sl.OverlapPatchEmbed, "check_mix_ffn": sl.MixFFN,
              "check_efficient_self_attention": sl.EfficientSelfAttention, "check_block": sl.Block,
              "check_mix_transformer": sl.MixTransformer, "check_all_mlp_decoder": sl.AllMLPDecoder}


def sample(made: list[Mutant]) -> list[Mutant]:
    """At most SAMPLE mutants, evenly spaced over the list (every kind of edit stays in), so that
    the test keeps to about two minutes on a quiet 2-core machine."""
    n = min(len(made), SAMPLE)
    return [made[i * len(made) // n] for i in range(n)]


def results(grade_id: str) -> tuple[int, int, list[str]]:
    """(mutants whose output differs, of those the ones localised, the misses described)."""
    ex = EXERCISES[grade_id]
    differ, good, misses = 0, 0, []
    for mutant in sample(mutants(ex["solution"])):
        fails, report = _checked(ex, mutant)
        if not fails:
            continue
        differ += 1
        if judge(ex, mutant, report):
            good += 1
        else:
            misses.append(f"{mutant.label} (line {mutant.line}): {report}")
    return differ, good, misses


def test_the_mutants_are_many_and_mechanical():
    for grade_id in GRADED:
        made = mutants(EXERCISES[grade_id]["solution"])
        assert len(made) >= 20, (grade_id, len(made))
        assert len({m.source for m in made}) == len(made), grade_id  # each a different edit


@pytest.mark.slow
def test_reports_name_where_each_mutant_parts_from_the_reference():
    table, total, localised, all_misses = [], 0, 0, []
    for grade_id in GRADED:
        differ, good, misses = results(grade_id)
        assert differ >= 15, (grade_id, differ)  # most edits change the output
        table.append(f"{grade_id}: {good}/{differ} = {good / differ:.0%}")
        total, localised = total + differ, localised + good
        all_misses += [f"{grade_id}: {m}" for m in misses]
    print("\n".join(table) + f"\noverall: {localised}/{total} = {localised / total:.0%}")
    print("\n\n".join(all_misses))
    assert localised / total >= FRACTION, "\n".join(table) + "\n\n" + "\n\n".join(all_misses)

"""The package's layout: dependencies point one way, no import cycle, small modules, a short top level.

The model (the top-level modules) imports nothing from ``training/`` or ``course/``; ``training/``
may use the model, never ``course/``; ``course/`` may use both; ``__main__`` (the commands) may use
anything. Every import is read from the source with ``ast``, including those inside functions, so
a lazy import cannot hide a violation or a cycle. The last tests feed the same checks a fake
package that breaks every rule, so a check that finds nothing is known to be able to find something.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segformer_lite"
MAX_LINES = 400
MAX_TOP_LEVEL = 12
# layer -> the layers it must not import
FORBIDDEN = {"model": {"training", "course"}, "training": {"course"}, "course": set(), "cli": set()}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def layer(name: str) -> str:
    """``model``, ``training``, ``course`` or ``cli`` for a dotted module name of the package."""
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in ("training", "course"):
        return parts[1]
    return "cli" if parts[1:] == ["__main__"] else "model"


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in its body: ``from .a import b``
    gives ``pkg.a.b`` when that is a module, else ``pkg.a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top, found = name.split(".")[0], set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == top and t in known)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} ({layer(a)}) imports {b} ({layer(b)})"
            for a, targets in sorted(edges.items()) for b in sorted(targets) if layer(b) in FORBIDDEN[layer(a)]]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def long_modules(root: Path, limit: int = MAX_LINES) -> dict[str, int]:
    counts = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules(root).items()}
    return {name: n for name, n in counts.items() if n > limit}


def top_level(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def test_dependencies_point_one_way():
    assert violations(graph(PACKAGE)) == []


def test_no_import_cycle():
    assert cycles(graph(PACKAGE)) == []


def test_no_module_over_400_lines():
    assert long_modules(PACKAGE) == {}


def test_at_most_12_modules_at_the_top_level():
    names = top_level(PACKAGE)
    assert len(names) <= MAX_TOP_LEVEL, names


def test_the_root_exports_only_the_model():
    import segformer_lite

    homes = {getattr(segformer_lite, n).__module__ for n in segformer_lite.__all__
             if hasattr(getattr(segformer_lite, n), "__module__")}
    assert homes and all(layer(m) == "model" for m in homes), homes


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "fakepkg"
    for rel, text in {"__init__.py": "", "training/__init__.py": "", "course/__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_the_checks_find_what_they_look_for(tmp_path):
    pkg = _fake_package(tmp_path, {
        "encoder.py": "def f():\n    from .training.data import X  # a lazy import counts too\n",
        "decoder.py": "import fakepkg.course.plots\n",
        "training/data.py": "from ..course import plots\nX = 1\n",
        "training/loop.py": "from . import data\n",
        "course/plots.py": "from ..training.data import X\n",  # allowed
        "course/a.py": "from .b import g\n",
        "course/b.py": "def g():\n    from . import a\n",  # a cycle through a function-level import
        "course/big.py": "x = 1\n" * 401,
        **{f"m{i}.py": "" for i in range(11)},
    })
    edges = graph(pkg)
    assert edges["fakepkg.training.loop"] == {"fakepkg.training.data"}
    assert violations(edges) == [
        "fakepkg.decoder (model) imports fakepkg.course.plots (course)",
        "fakepkg.encoder (model) imports fakepkg.training.data (training)",
        "fakepkg.training.data (training) imports fakepkg.course.plots (course)",
    ]
    assert sorted(cycles(edges)) == [["fakepkg.course.a", "fakepkg.course.b"],
                                     ["fakepkg.course.plots", "fakepkg.training.data"]]
    assert long_modules(pkg) == {"fakepkg.course.big": 401}
    assert len(top_level(pkg)) == 13 > MAX_TOP_LEVEL


def test_a_clean_fake_package_passes(tmp_path):
    pkg = _fake_package(tmp_path, {"config.py": "X = 1\n", "training/data.py": "from ..config import X\n",
                                   "course/plots.py": "from ..training.data import X\nfrom .. import config\n",
                                   "__main__.py": "from .course import plots\n"})
    edges = graph(pkg)
    assert edges["fakepkg.course.plots"] == {"fakepkg.training.data", "fakepkg.config"}
    assert violations(edges) == [] and cycles(edges) == [] and long_modules(pkg) == {}

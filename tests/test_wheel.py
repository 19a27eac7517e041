"""The package as a user gets it: ``pip install .`` builds a wheel, and the wheel alone must work.

The wheel is built from a copy of the checkout's package files (so no ``build/`` or ``*.egg-info``
lands in the checkout, and nothing outside ``pyproject.toml``, ``README.md`` and
``segformer_lite/`` can leak in), with the test environment's setuptools and no build isolation,
so building needs no network.

Two checks:

* the wheel's METADATA declares a distribution for every third-party module the shipped code
  imports (import names mapped to distributions by ``importlib.metadata``, e.g. PIL -> pillow), and
  requirements.txt pins each declared distribution exactly, at a version the declared range accepts;
* the wheel, installed by pip into a virtual environment made for the test and run from a
  directory outside the checkout, imports, loads a photo, evaluates the shipped checkpoint through
  its console script ``segformer-lite`` and trains two steps; the instructors' homework command, which needs the repository's notebooks,
  refuses with one line instead of working on no notebooks.

Why the second is as good as a fresh venv with ``pip install .`` for what it checks: the package's
files can only come from the wheel (the new venv holds nothing else; the working directory is not
the checkout; PYTHONPATH is cleared; the test asserts ``segformer_lite.__file__`` lies in the new
venv). Only the third-party dependencies are borrowed, from the test environment's site-packages,
through a ``.pth`` file that puts them *after* the venv's own site-packages; Python does not
process ``.pth`` files inside a directory added that way, so the checkout's editable install stays
inert. Downloading torch into a fresh venv on every test run would take minutes and needs a
network; that the declared dependencies are complete is what the first check proves.
"""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# each optional extra and the only code allowed to import it (a folder or a file)
EXTRAS = {"course": "segformer_lite/course/widgets/",  # the notebooks' sliders
          "export": "segformer_lite/export.py"}  # ONNX export and onnxruntime


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "segformer_lite", src / "segformer_lite",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out)], check=True, cwd=out)
    (whl,) = out.glob("segformer_lite-*.whl")
    return whl


def _requirements(whl: Path) -> list[Requirement]:
    with zipfile.ZipFile(whl) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        text = z.read(meta).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def _third_party_imports(whl: Path) -> dict[str, set[str]]:
    """Top-level module -> the wheel's files that import it (stdlib and the package itself left out)."""
    found: dict[str, set[str]] = {}
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if not name.endswith(".py"):
                continue
            for node in ast.walk(ast.parse(z.read(name))):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "segformer_lite":
                        found.setdefault(top, set()).add(name)
    return found


def test_wheel_ships_the_data(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for data in ("segformer_lite/checkpoints/segformer_shapes.safetensors",
                 "segformer_lite/course/photos/LICENSE.md",
                 "segformer_lite/course/figures/encoder_diagram.png",
                 *(f"segformer_lite/course/photos/{p}.png" for p in ("chelsea", "coffee", "astronaut"))):
        assert data in names, f"{data} is not in {wheel.name}"


def test_wheel_declares_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as z:
        (entry_points,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = z.read(entry_points).decode()
    assert "[console_scripts]\nsegformer-lite = segformer_lite.__main__:main" in text, text


def test_wheel_declares_every_import_and_requirements_pin_them(wheel):
    reqs = _requirements(wheel)
    core = {canonicalize_name(r.name) for r in reqs if r.marker is None}
    extras = {name: {canonicalize_name(r.name) for r in reqs if r.marker is not None
                     and r.marker.evaluate({"extra": name})} for name in EXTRAS}
    assert core and all(extras.values()), f"expected core and {sorted(EXTRAS)} requirements, got {[str(r) for r in reqs]}"
    dists = importlib.metadata.packages_distributions()  # import name -> distributions providing it
    for module, files in sorted(_third_party_imports(wheel).items()):
        provided_by = {canonicalize_name(d) for d in dists.get(module, [])}
        assert provided_by, f"no installed distribution provides {module!r} (imported by {sorted(files)})"
        usable = [name for name, only in EXTRAS.items() if all(f.startswith(only) for f in files)]
        allowed = core.union(*(extras[name] for name in usable))
        assert provided_by & allowed, (
            f"{module!r} (from {'/'.join(sorted(provided_by))}) is imported by {sorted(files)} "
            f"but not declared in pyproject.toml's {' or '.join(['dependencies'] + usable)}")

    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
            pins[canonicalize_name(name)] = version
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"{r} is declared but requirements.txt pins no exact {r.name} version"
        assert r.specifier.contains(pins[name]), f"requirements.txt pins {r.name}=={pins[name]}, outside {r}"


@pytest.mark.slow
def test_installed_wheel_works_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # pip installs into the new venv while it holds nothing else, so nothing is "already installed"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True)
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "test_env_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "work"  # the working directory: outside the checkout, empty
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")

    def run(*args: str, status: int = 0) -> subprocess.CompletedProcess:
        p = subprocess.run([str(python), *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == status, f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
        return p

    out = run("-c", "import segformer_lite as sl, sys; from segformer_lite.course.images import load_photo; "
                    "print(sl.__file__); print(load_photo('chelsea').shape); "
                    "print(len(sl.__all__)); print(*sys.path, sep='\\n')").stdout
    file, shape, n_all, *path = out.splitlines()
    assert Path(file).is_relative_to(purelib), f"segformer_lite imported from {file}, not from the wheel in {purelib}"
    assert shape == "(300, 451, 3)"
    assert int(n_all) > 0
    assert not any(p and Path(p).resolve() == REPO for p in path), f"the checkout is on sys.path: {path}"

    # the console script pip wrote beside the venv's python: `segformer-lite COMMAND` with no activation
    script = python.parent / ("segformer-lite.exe" if os.name == "nt" else "segformer-lite")
    p = subprocess.run([str(script), "evaluate", "--images", "40"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, f"segformer-lite evaluate exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    out = p.stdout
    miou = float(re.search(r"^mIoU (\S+)$", out, re.M).group(1))
    # a random model scores about 0.16 ("background everywhere"); docs/results.md: 0.8506 on 200 images
    assert miou > 0.75, f"the shipped checkpoint should segment the context shapes, got:\n{out}"
    for kind in ("pixel-mlp", "local-cnn"):  # the shipped baselines are package data too
        out = run("-m", "segformer_lite", "evaluate", "--checkpoint", str(purelib / "segformer_lite" / "checkpoints"
                  / f"{kind}_context.safetensors"), "--images", "4", "--quiet").stdout
        assert re.search(r"^mIoU \S+$", out, re.M), out
    out = run("-c", "from segformer_lite.training.experiments import load_results; "
                    "print(*sorted(load_results()['experiments']))").stdout  # notebook 08's results file
    assert out.split() == ["decoder", "decoder-lr1e-3", "erf", "position", "sr"]  # every planned experiment, the re-run too

    weights = tmp_path / "run" / "w.safetensors"
    run("-m", "segformer_lite", "train", "--steps", "2", "--image-size", "32", "--batch-size", "2",
        "--decoder-dim", "16", "--eval-images", "2", "--threads", "1", "--output", str(weights))
    assert weights.is_file(), f"train wrote no weights to {weights}"

    # homework works on the repository's notebooks, which a wheel does not ship: one clear line, exit 2
    err = run("-m", "segformer_lite", "homework", "check", status=2).stderr
    assert "no course notebooks" in err and "Traceback" not in err, err

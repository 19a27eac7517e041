"""Each extra installs what its note promises, checked in a fresh virtual environment per extra.

* ``pip install ".[course]"`` (README, docs/site.md, the site's "run it live" note): afterwards
  ``jupyter lab`` exists, starts and answers on loopback with the python3 kernel, that kernel runs
  code and imports the notebooks' sliders, and the ONNX export, which the course extra does not bring, is refused in one
  line that names the export extra's install command;
* ``pip install ".[export]"`` (docs/export.md): afterwards the package exports a model to ONNX
  and onnxruntime runs it, matching PyTorch.

Unlike tests/test_wheel.py, nothing is borrowed from the test environment: pip installs the wheel
(built by test_wheel's fixture from a copy of the package) with its extra and every dependency
into a new venv, from the package index. requirements.txt is passed as a constraints file, so
pip takes the versions the project pins (torch==2.13.0, the CPU build where a local wheel is
configured) instead of newer releases; the pins are not installed unless the extra asks for them.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_wheel import REPO, wheel  # noqa: F401 (the fixture: the wheel, built once per module)

pytestmark = pytest.mark.slow
INSTALL_TIMEOUT_S = 1200  # each test took 7.5-8 min in all at load average 7-12 on 2 cores, most of it pip
LAB_START_TIMEOUT_S = 180


def fresh_venv(tmp_path: Path, wheel: Path, extra: str) -> Path:
    """A new venv holding only pip, then ``pip install WHEEL[extra]`` with the project's pins as constraints."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    p = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "-c", str(REPO / "requirements.txt"),
                        f"{wheel}[{extra}]"], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                       env=clean_env(tmp_path))
    assert p.returncode == 0, f"pip install {wheel.name}[{extra}] failed:\n{p.stdout}\n{p.stderr}"
    return bindir


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No PYTHONPATH (the checkout must not leak in), no user site, Jupyter's folders in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV"))}
    home = tmp_path / "jupyter"
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"))
    return env


def run(bindir: Path, tmp_path: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess:
    work = tmp_path / "work"  # outside the checkout
    work.mkdir(exist_ok=True)
    p = subprocess.run([str(bindir / args[0]), *args[1:]], cwd=work, env=clean_env(tmp_path), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == status, f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KERNEL_CHECK = """
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="python3", startup_timeout=300)
try:
    reply = kc.execute_interactive("import segformer_lite.course.widgets, ipywidgets; print('kernel ok')", timeout=300)
    assert reply["content"]["status"] == "ok", reply["content"]
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
"""


def test_course_extra_brings_jupyterlab_a_kernel_and_the_sliders(wheel, tmp_path):  # noqa: F811
    bindir = fresh_venv(tmp_path, wheel, "course")
    assert re.fullmatch(r"4\.\d+\.\d+", run(bindir, tmp_path, "jupyter", "lab", "--version").stdout.strip())
    kernels = json.loads(run(bindir, tmp_path, "jupyter", "kernelspec", "list", "--json").stdout)["kernelspecs"]
    assert "python3" in kernels, kernels
    # the kernel JupyterLab starts for a notebook runs code, and the sliders' modules import in it
    out = run(bindir, tmp_path, "python", "-c", KERNEL_CHECK).stdout
    assert "kernel ok" in out, out

    # the README's command, as a server on loopback: it answers, serves the lab and starts a kernel
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    port = free_port()
    cmd = [str(bindir / "jupyter"), "lab", "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
           "--ServerApp.disable_check_xsrf=True", str(notebooks)]
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LAB_START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"jupyter lab exited {server.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/lab", timeout=10) as r:
                    assert r.status == 200 and b"JupyterLab" in r.read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer in {LAB_START_TIMEOUT_S} s:\n{log.read_text()}"
                time.sleep(1)
        with urllib.request.urlopen(f"{url}/api/kernelspecs", timeout=30) as r:
            assert "python3" in json.load(r)["kernelspecs"]
    finally:
        server.terminate()
        server.wait(timeout=60)

    # the course extra does not bring the ONNX exporter: one line that says how to get it
    err = run(bindir, tmp_path, "segformer-lite", "export", "--out", str(tmp_path / "out"), "--format", "onnx",
              status=2).stderr
    assert err.count("\n") == 1 and "onnxscript" in err and 'pip install ".[export]"' in err, err
    assert not (tmp_path / "out").exists()


EXPORT_SMALL_MODEL = """
import numpy as np, torch
from segformer_lite import MiTConfig, SegFormer
from segformer_lite.export import OnnxRunner, export_onnx
torch.manual_seed(0)
model = SegFormer(MiTConfig(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), depths=(1, 1, 1, 1)), 5,
                  decoder_dim=32).eval()
images = torch.randn(2, 3, 70, 97)
ours = OnnxRunner(export_onnx(model, "small.onnx"))(images.numpy())[0]
with torch.no_grad():
    reference = model(images).numpy()
print(ours.shape == reference.shape == (2, 5, 18, 25), float(np.abs(ours - reference).max()))
"""


def test_export_extra_exports_to_onnx(wheel, tmp_path):  # noqa: F811
    bindir = fresh_venv(tmp_path, wheel, "export")
    p = run(bindir, tmp_path, "python", "-c", EXPORT_SMALL_MODEL)
    same_shape, diff = p.stdout.split()  # logits at a quarter of the image size, ceil(70 / 4) x ceil(97 / 4)
    assert same_shape == "True" and float(diff) < 1e-4, p.stdout
    assert p.stderr == "", p.stderr  # no note the user cannot act on
    assert (tmp_path / "work" / "small.onnx").is_file()

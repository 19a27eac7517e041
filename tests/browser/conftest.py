"""Fixtures for the browser suite: one JupyterLab server and one headless Chromium per session.

JupyterLab serves a temporary copy of the course (so running cells never touches the stored
outputs), listens on 127.0.0.1 on a free port with an empty token, and keeps its runtime, config,
data and workspace directories in a temporary folder, so a learner's own Jupyter setup cannot leak
in. Chromium is Debian's (/usr/bin/chromium), driven by Playwright's sync API; Playwright's own
browser download is never used. Without Chromium the suite skips, except under CI=true, where a
missing browser is a failure.

A killed run leaves nothing behind: SIGTERM (timeout(1), CI cancelling a job) and SIGHUP are turned
into KeyboardInterrupt, as Ctrl-C is, so pytest tears the fixtures down and the server's process
group and its kernels are stopped; on Linux the server also gets SIGTERM if pytest dies outright
(SIGKILL), and then shuts its kernels down itself.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright  # pinned in requirements-test.txt

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 90
SERVER_STOP_TIMEOUT_S = 20

# User settings written into the temporary JupyterLab settings dir.
LAB_SETTINGS = {
    # Attach every cell to the DOM, so sliders below the fold exist and error outputs can be read.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # No news or update checks: no network, and no toast covering the notebook.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def _need_browser(reason):
    """Skip on a learner's machine; fail under CI=true, where the browser suite must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run installs it with apt-get install -y chromium")
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium) to run the browser tests")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_course(root):
    """The notebooks, copied, never linked (the photos they open ship inside the package)."""
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=ignore)


def _die_with_parent():
    """In the server's child process, before exec: SIGTERM it when pytest dies (Linux prctl)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_server(proc):
    """SIGTERM the server's process group (Jupyter shuts its kernels down), then kill what is left."""
    import psutil  # a dependency of ipykernel

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
    # Kernels run in their own sessions, outside the server's group: end any that outlived it.
    _, alive = psutil.wait_procs(family, timeout=5)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=5)


class Lab:
    """A running JupyterLab: its base URL, the folder it serves, and a small REST helper."""

    def __init__(self, url, root, log):
        self.url, self.root, self.log = url, root, log

    def api(self, path, method="GET"):
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self):
        """Delete every session (and its kernel) so the next notebook gets the CPU to itself."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def log_tail(self, n=4000):
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture(scope="session")
def chromium_path():
    if not CHROMIUM.exists():
        _need_browser(f"Chromium is not installed at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="session")
def teardown_on_sigterm():
    """SIGTERM and SIGHUP raise KeyboardInterrupt (once), so session teardown runs as on Ctrl-C."""
    def interrupt(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGHUP):  # a second signal must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"{signal.Signals(signum).name}: stopping JupyterLab and Chromium")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def lab(tmp_path_factory, chromium_path, teardown_on_sigterm):
    """JupyterLab on 127.0.0.1:<free port>, empty token, serving a temporary copy of the course."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    _copy_course(root)
    home = base / "jupyter"
    settings = home / "config" / "lab" / "user-settings"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))

    env = dict(os.environ)
    env.pop("JUPYTER_PATH", None)  # only this venv's kernelspecs and lab extensions
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),  # hides ~/.local/share/jupyter kernelspecs
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYTHONUNBUFFERED="1",
        # One torch thread per kernel. With two, every parallel op waits for both threads to be
        # scheduled, which on a busy machine costs far more than the CPU share: under four busy
        # loops beside other jobs (load average 25-30 on 2 cores), no cell of 07 or 08 finished
        # for 240 s with two threads (their live-training cells, 4 s and 12 s quiet); with one,
        # 52 s and 129 s. The suite checks errors and sliders, which the thread count cannot change.
        OMP_NUM_THREADS="1",
    )
    port = _free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab",  # this venv's python; its "python" kernelspec resolves to it
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--PasswordIdentityProvider.hashed_password=",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.disable_check_xsrf=True",  # lets the fixture DELETE sessions over REST
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = base / "jupyterlab.log"
    with open(log, "wb") as out:
        # Its own session and process group, so _stop_server can signal the server and its
        # helpers at once, and a Ctrl-C in the terminal reaches only pytest (which tears down).
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    server = Lab(f"http://127.0.0.1:{port}", root, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s:\n"
                                f"{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        _stop_server(proc)


@pytest.fixture(scope="session")
def browser(chromium_path, teardown_on_sigterm):
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(chromium_path), headless=True,
                                      args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-screenshots")


@pytest.fixture
def lab_page(lab, browser):
    """A fresh browser tab; afterwards the tab is closed and every kernel shut down."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
        lab.shutdown_kernels()

"""Driving a notebook in JupyterLab the way a learner does: menus, then the keyboard on sliders.

Everything here reads the rendered page (prompts, output areas, slider handles), never the kernel,
so a passing test means a person would have seen the same thing.
"""

import json
import re
import time
import urllib.request
from dataclasses import dataclass, field

# Every wait below decides pass or fail. None bounds a whole notebook: a busy machine may make a run
# take many times longer than a quiet one and still be a good run. Run All Cells fails only when no
# cell has finished for STALL_TIMEOUT_S (a hang), however long the run as a whole takes; every other
# wait bounds one step (a kernel start, a key press, one redraw). Each is set far above what
# measured runs needed. The slowest cell seen: 08's live re-run of four short trainings (cell 16),
# 12 s when nbconvert last executed it, 129 s in the browser with four busy loops beside the other
# jobs (load average 20-27 on 2 cores). A wait that runs out says which one and how long it waited.
STALL_TIMEOUT_S = 600  # Run All Cells: no cell finished for this long is a hang; 4.6x the slowest cell under load
KERNEL_START_TIMEOUT_S = 120  # page load to an idle kernel: seconds when measured, kept generous
RUN_START_TIMEOUT_S = 20  # Run All Cells to the first prompt "[*]": well under 1 s measured; 3 tries
CLEAR_TIMEOUT_S = 30  # Clear Outputs to every prompt "[ ]": well under 1 s measured
VALUE_TIMEOUT_S = 10  # key press to a new slider value: 20x the slowest measured (0.47 s)
SLIDER_TIMEOUT_S = 60  # slider value to a redrawn, settled output: 23x the slowest measured (2.6 s)
POLL_S = 0.5

CELLS = ".jp-NotebookPanel .jp-Notebook .jp-Cell"
SLIDERS = ".jp-NotebookPanel .jp-Notebook .jp-Cell .jp-OutputArea [role='slider']"

# Kernel status and every code cell's prompt: "[3]:", "[*]:" (queued or running), "[ ]:" (not run).
_STATE_JS = """() => {
  const ind = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-CodeCell')]
    .map(c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '');
  return {status: ind ? ind.getAttribute('data-status') : null, prompts};
}"""

# Per cell: what its outputs show, minus every slider (handle, label, readout), so that a slider's
# own readout can never count as "the output changed".
# Digested in the page (cyrb53, a 53-bit string hash) so polls do not ship every image to Python.
_OUTPUTS_JS = """() => {
  const hash = (str) => {
    let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
    for (let i = 0; i < str.length; i++) {
      const ch = str.charCodeAt(i);
      h1 = Math.imul(h1 ^ ch, 2654435761); h2 = Math.imul(h2 ^ ch, 1597334677);
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16) + ':' + str.length;
  };
  return [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')].map(cell => {
    const area = cell.querySelector('.jp-OutputArea');
    if (!area) return null;
    const clone = area.cloneNode(true);
    clone.querySelectorAll('.widget-slider, .widget-readout, [role="slider"]').forEach(e => e.remove());
    return {
      text: hash(clone.textContent),
      images: hash([...clone.querySelectorAll('img')].map(i => i.getAttribute('src') || '').join('|')),
      svgs: hash([...clone.querySelectorAll('svg')].map(s => s.outerHTML).join('|')),
      canvases: hash([...area.querySelectorAll('canvas')].map(c => { try { return c.toDataURL(); } catch (e) { return ''; } }).join('|')),
    };
  });
}"""

# Error outputs (tracebacks render as application/vnd.jupyter.stderr) and widgets that failed.
_ERRORS_JS = """(skip) => {
  const errors = [];
  document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').forEach((cell, i) => {
    if (skip.includes(i)) return;
    cell.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').forEach(o => {
      const t = o.innerText;
      if (/Traceback|^\\s*\\w*(Error|Exception)\\b/m.test(t)) errors.push({cell: i, text: t.slice(-3000)});
    });
    cell.querySelectorAll('.jp-OutputArea-output').forEach(o => {
      if (/Error displaying widget|Error rendering output/.test(o.innerText)) errors.push({cell: i, text: o.innerText.slice(0, 500)});
    });
  });
  return errors;
}"""

_SLIDER_INFO_JS = """(h) => {
  const cell = h.closest('.jp-Cell');
  const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')];
  const box = h.closest('.widget-slider');
  const label = box && box.querySelector('.widget-label');
  return {cell: cells.indexOf(cell), label: label ? label.textContent.trim() : '',
          disabled: h.getAttribute('disabled') !== null || (box && box.classList.contains('mod-disabled'))};
}"""


@dataclass
class SliderMove:
    label: str
    cell: int
    key: str
    value_before: str
    value_after: str
    changed_cells: list = field(default_factory=list)
    changed_kinds: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    seconds: float = 0.0
    value_seconds: float = 0.0
    ran_out: str = ""  # the wait that ran out for this move, if one did


def notebook_cells(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["cells"]


def raises_exception_cells(path):
    """Indices of cells tagged raises-exception: their tracebacks are the lesson, not a failure."""
    return [i for i, c in enumerate(notebook_cells(path))
            if "raises-exception" in c.get("metadata", {}).get("tags", [])]


class WaitRanOut(TimeoutError):
    """A wait of this harness ran out: the message names the wait, its constant and its length."""


def _wait(predicate, timeout, what, name):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitRanOut(f"{what}: the wait ran out after {timeout} s ({name})")
        time.sleep(POLL_S)


def state(page):
    return page.evaluate(_STATE_JS)


def _kernel_connected(lab_url, relpath):
    """The notebook's kernel, by the server's REST API: started, idle, and the page's websocket on it."""
    with urllib.request.urlopen(f"{lab_url}/api/sessions", timeout=30) as resp:
        sessions = json.load(resp)
    kernels = [s["kernel"] for s in sessions if s.get("path") == relpath and s.get("kernel")]
    return any(k.get("execution_state") == "idle" and k.get("connections", 0) > 0 for k in kernels)


def open_notebook(page, lab_url, relpath):
    """Open in a fresh workspace (?reset: nothing else reopens) and wait for an idle kernel.

    The page's indicator reads "idle" for a moment before the kernel even exists (then
    initializing, connecting, idle), and a Run All Cells clicked in that moment is lost; so the
    server must first report the kernel idle with the page connected to it.
    """
    page.goto(f"{lab_url}/lab/tree/{relpath}?reset")
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=KERNEL_START_TIMEOUT_S * 1000)
    _wait(lambda: _kernel_connected(lab_url, relpath) and state(page)["status"] == "idle", KERNEL_START_TIMEOUT_S,
          f"kernel for {relpath} never became idle", "KERNEL_START_TIMEOUT_S")


def menu(page, top, item):
    """Click a main-menu entry, e.g. menu(page, 'Run', 'Run All Cells')."""
    page.locator(".lm-MenuBar-item", has=page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(top)}$"))).click()
    page.locator(".lm-Menu-item:visible", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$"))).click()


def run_all(page, stall_timeout=STALL_TIMEOUT_S):
    """Clear every output, Run All Cells, wait until nothing is queued and the kernel is idle.

    Fails (WaitRanOut) when no code cell has finished for `stall_timeout` seconds, never for the
    run's total length. Returns (seconds, prompts, slowest): `slowest` is the longest wait between
    two cells finishing (the first counted from the run's start), the margin the stall limit had.
    Clearing first makes "[ ]:" mean "never ran", so a run that stopped at an error is visible in
    the prompts, and every output on the page is a fresh one.
    """
    # Click into the notebook first: its commands are disabled unless it is the current widget.
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell .jp-InputPrompt").first.click()
    menu(page, "Edit", "Clear Outputs of All Cells")
    _wait(lambda: all(p.strip() in ("[ ]:", "") for p in state(page)["prompts"]), CLEAR_TIMEOUT_S,
          "outputs did not clear", "CLEAR_TIMEOUT_S")

    def started():
        prompts = state(page)["prompts"]
        return bool(prompts) and prompts[0].strip() not in ("[ ]:", "")

    start = time.monotonic()
    for attempt in range(3):  # a menu click that lands before the menu is live is lost; say so if all are
        menu(page, "Run", "Run All Cells")
        try:
            _wait(started, RUN_START_TIMEOUT_S, f"Run All Cells did not start (try {attempt + 1} of 3)",
                  "RUN_START_TIMEOUT_S")
            break
        except WaitRanOut:
            if attempt == 2:
                raise

    # The stall clock starts once the run has: a menu click that was lost and retried is not a cell.
    done_before, last_progress, slowest = 0, time.monotonic(), 0.0
    while True:
        s = state(page)
        now = time.monotonic()
        done = sum(bool(re.fullmatch(r"\[\d+\]:", p.strip())) for p in s["prompts"])
        if done > done_before:  # a cell finished: the clock starts again
            slowest = max(slowest, now - last_progress)
            done_before, last_progress = done, now
        if s["status"] == "idle" and not any("*" in p for p in s["prompts"]):
            break
        if now - last_progress > stall_timeout:
            running = [i for i, p in enumerate(s["prompts"]) if "*" in p]
            raise WaitRanOut(f"Run All Cells stalled: no cell finished for {stall_timeout} s (STALL_TIMEOUT_S) "
                             f"after {done} had, {now - start:.0f} s into the run; kernel {s['status']}, "
                             f"code cells still queued or running: {running}, prompts {s['prompts']}")
        time.sleep(POLL_S)
    seconds = time.monotonic() - start
    wait_settled(page)
    return seconds, state(page)["prompts"], slowest


def output_digests(page):
    """Per cell, a digest of each kind of output ({'text': .., 'images': ..}), None for no outputs."""
    return page.evaluate(_OUTPUTS_JS)


def wait_settled(page, timeout=SLIDER_TIMEOUT_S):
    """Until the kernel is idle and the outputs stayed the same for two polls in a row."""
    last = None

    def settled():
        nonlocal last
        if state(page)["status"] != "idle":
            last = None
            return False
        now = output_digests(page)
        same, last = now == last, now
        return same

    _wait(settled, timeout, "outputs did not settle (the kernel stayed busy or they kept changing)",
          "SLIDER_TIMEOUT_S")
    return last


def errors(page, skip=()):
    return page.evaluate(_ERRORS_JS, list(skip))


def slider_handles(page):
    return page.locator(SLIDERS)


def diff(before, after):
    cells, kinds = [], set()
    for i, (b, a) in enumerate(zip(before, after)):
        if b != a:
            cells.append(i)
            kinds |= {k for k in (a or {}) if (b or {}).get(k) != a.get(k)}
    return cells, sorted(kinds)


def move_slider(page, index, key, skip_errors=(), timeout=SLIDER_TIMEOUT_S):
    """Focus slider `index`'s handle, press `key`, wait for the outputs to change and settle.

    A move that leaves the value where it was (already at that end) returns value_before ==
    value_after; a move whose outputs do not change within `timeout` returns no changed_cells and
    says so in `ran_out`. Outputs that change but never settle raise WaitRanOut.
    """
    handle = slider_handles(page).nth(index)
    handle.scroll_into_view_if_needed()
    info = handle.evaluate(_SLIDER_INFO_JS)
    before = wait_settled(page)
    value_before = handle.get_attribute("aria-valuenow")
    start = time.monotonic()
    handle.focus()
    handle.press(key)
    move = SliderMove(info["label"], info["cell"], key, value_before, value_before)
    try:
        _wait(lambda: handle.get_attribute("aria-valuenow") != value_before, VALUE_TIMEOUT_S,
              f"value stayed {value_before}", "VALUE_TIMEOUT_S")
    except WaitRanOut as e:
        move.ran_out = str(e)  # expected at the end of the range; check() reports it if no key moved it
        return move
    move.value_after = handle.get_attribute("aria-valuenow")
    move.value_seconds = time.monotonic() - start
    try:
        _wait(lambda: output_digests(page) != before, timeout, "no output changed", "SLIDER_TIMEOUT_S")
        after = wait_settled(page, timeout)
    except WaitRanOut as e:
        if output_digests(page) != before:
            raise  # the outputs changed but did not settle
        move.ran_out, after = str(e), before
    move.seconds = time.monotonic() - start
    move.changed_cells, move.changed_kinds = diff(before, after)
    move.errors = errors(page, skip_errors)
    return move


def expects_widgets(path):
    """True when the notebook builds ipywidgets: its source imports them or its outputs hold views."""
    for cell in notebook_cells(path):
        if cell["cell_type"] != "code":
            continue
        if re.search(r"ipywidgets|\binteract(ive)?\(", "".join(cell["source"])):
            return True
        if any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.get("outputs", [])):
            return True
    return False


@dataclass
class NotebookReport:
    relpath: str
    run_seconds: float
    prompts: list
    errors: list
    widgets: int
    moves: list
    screenshots: list
    sliders: int = 0  # slider handles on the page after Run All Cells
    slowest_cell_seconds: float = 0.0  # longest wait for the next cell to finish (run_all)


def exercise(page, lab_url, relpath, source_path, shot_dir, slider_timeout=SLIDER_TIMEOUT_S,
             stall_timeout=STALL_TIMEOUT_S):
    """Open, Run All Cells, read errors, then move every slider to both ends; screenshots on the way.

    Only gathers facts; the tests decide what must hold.
    """
    stem = relpath.replace("/", "__").removesuffix(".ipynb")
    skip = raises_exception_cells(source_path)
    open_notebook(page, lab_url, relpath)
    try:
        seconds, prompts, slowest = run_all(page, stall_timeout)
    except WaitRanOut:
        page.screenshot(path=shot_dir / f"{stem}-timeout.png")
        raise
    report = NotebookReport(relpath, seconds, prompts, errors(page, skip),
                            page.locator(".jp-NotebookPanel .jp-OutputArea-output .jupyter-widgets").count(),
                            [], [], slowest_cell_seconds=slowest)
    shot = shot_dir / f"{stem}.png"
    # The first slider, else the first picture, is what a learner came to see.
    pictures = page.locator(".jp-NotebookPanel .jp-OutputArea-output img").filter(visible=True)
    for first in (slider_handles(page), pictures):
        if first.count():
            first.first.scroll_into_view_if_needed()
            break
    page.screenshot(path=shot)
    report.screenshots.append(shot)
    if report.errors:
        return report
    # End/Home first; arrows when End/Home leave the value be, which nouiSlider does after a slider's
    # range grew at run time (a learner's click or arrow key still works there).
    fallback = {"End": "ArrowRight", "Home": "ArrowLeft"}

    def press(i, key):
        move = move_slider(page, i, key, skip, slider_timeout)
        if move.value_after == move.value_before:
            move = move_slider(page, i, fallback[key], skip, slider_timeout)
        report.moves.append((i, move))
        if move.value_after != move.value_before:
            shot = shot_dir / f"{stem}-slider{i}-{move.key}.png"
            page.locator(CELLS).nth(move.cell).screenshot(path=shot)
            report.screenshots.append(shot)
        return move

    count = report.sliders = slider_handles(page).count()
    for i in range(count):
        for key in ("End", "Home"):
            if press(i, key).errors:
                return report
    # A slider whose range depends on another (heads per stage) may have had nothing to move to:
    # put each other slider at its far end and try again.
    for i in range(count):
        for other in (k for k in range(count) if k != i):
            if any(m.value_after != m.value_before for j, m in report.moves if j == i):
                break
            if press(other, "End").errors:
                return report
            for key in ("End", "Home"):
                if press(i, key).errors:
                    return report
    return report


def check(report, expect_widgets, sliders):
    """The assertions shared by the course notebooks and the harness's own fixture notebooks.

    `sliders`: how many slider handles the notebook must show, so one that lost its sliders (a
    widget that no longer renders, a cell that stopped displaying it) fails instead of passing
    with nothing moved.
    """
    where = report.relpath
    assert not report.errors, f"{where}: error output after Run All Cells:\n" + "\n\n".join(
        f"cell {e['cell']}:\n{e['text']}" for e in report.errors)
    not_run = [i for i, p in enumerate(report.prompts) if not re.fullmatch(r"\[\d+\]:", p.strip())]
    assert not not_run, f"{where}: code cells {not_run} did not run (prompts {report.prompts})"
    if expect_widgets:
        assert report.widgets, f"{where}: builds ipywidgets but none rendered (widget extension missing?)"
    labels = list({i: m.label for i, m in report.moves}.values())
    assert report.sliders == sliders, (f"{where}: expected {sliders} sliders after Run All Cells, found "
                                       f"{report.sliders} {labels}")
    by_slider = {}
    for i, move in report.moves:
        by_slider.setdefault(i, []).append(move)
        assert not move.errors, f"{where}: slider {move.label!r} {move.key} -> {move.value_after}: error output:\n" + \
            "\n\n".join(e["text"] for e in move.errors)
        if move.value_after != move.value_before:
            assert move.changed_cells, (f"{where}: slider {move.label!r} moved {move.value_before} -> "
                                        f"{move.value_after} ({move.key}) but no output other than its readout "
                                        f"changed ({move.ran_out})")
    for i, moves in by_slider.items():
        assert any(m.value_after != m.value_before for m in moves), (
            f"{where}: slider {i} ({moves[0].label!r}) did not move on End, Home or an arrow key, "
            f"with the other sliders where they were or at their far ends (each key: {moves[-1].ran_out})")

"""The harness tested on notebooks built here, so the course tests' checks are known to be able to fail.

One notebook has two sliders (one redraws a matplotlib figure, one prints text) and a cell that is
meant to raise; the others have an unexpected error, a slider that drives nothing but its own
readout, and a slider that is built but never shown. Each must be reported the way a person watching would report it.
Two more tell a hang from slow progress with a short stall limit: a cell that sleeps forever fails
once the limit has passed, and many slow cells that together take longer than the limit pass.
"""

import sys
import time

import nbformat
import pytest

import jlab

pytestmark = pytest.mark.browser

SLIDERS = """\
import ipywidgets as widgets
import matplotlib.pyplot as plt

def draw(n):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(range(n + 1), [i * i for i in range(n + 1)], "o-")
    ax.set_title(f"n = {n}")
    plt.show()

widgets.interact(draw, n=widgets.IntSlider(value=3, min=1, max=10, description="n"));
"""
TEXT_SLIDER = """\
widgets.interact(lambda word: print(word.upper() * 2),
                 word=widgets.SelectionSlider(options=["alpha", "beta", "gamma"], value="beta", description="word"));
"""
MISSING_SLIDER = """\
import ipywidgets as widgets
slider = widgets.IntSlider(value=5, min=0, max=10, description="never shown")
widgets.Label("a widget, but not the slider")
"""
DEAD_SLIDER = """\
import ipywidgets as widgets
widgets.IntSlider(value=5, min=0, max=10, description="dead")
"""


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    for cell in cells:
        nb.cells.append(cell if isinstance(cell, nbformat.NotebookNode) else nbformat.v4.new_code_cell(cell))
    return nb


@pytest.fixture
def write(lab):
    folder = lab.root / "selftest"
    folder.mkdir(exist_ok=True)

    def write(name, nb):
        nbformat.write(nb, folder / name)
        return f"selftest/{name}", folder / name
    return write


def test_sliders_drive_image_and_text(lab, lab_page, write, screenshot_dir):
    relpath, path = write("sliders.ipynb", notebook(
        "import sys; print(sys.prefix)",
        nbformat.v4.new_markdown_cell("A slider redrawing a figure, one printing text."),
        SLIDERS,
        nbformat.v4.new_code_cell("raise ValueError('shown on purpose')", metadata={"tags": ["raises-exception"]}),
        TEXT_SLIDER,
    ))
    report = jlab.exercise(lab_page, lab.url, relpath, path, screenshot_dir)
    jlab.check(report, expect_widgets=True, sliders=2)
    with pytest.raises(AssertionError, match=r"expected 3 sliders after Run All Cells, found 2 \['n', 'word'\]"):
        jlab.check(report, expect_widgets=True, sliders=3)
    # The kernel is this venv's python, so the course imports the installed segformer_lite.
    assert sys.prefix in lab_page.locator(jlab.CELLS).nth(0).locator(".jp-OutputArea").inner_text()
    moved = [(m.label, m.key, m.value_before, m.value_after, m.changed_kinds) for _, m in report.moves]
    assert moved == [
        ("n", "End", "3.0", "10.0", ["images"]),  # the title is drawn inside the figure
        ("n", "Home", "10.0", "1.0", ["images"]),
        ("word", "End", "1.0", "2.0", ["text"]),  # SelectionSlider values are option indices
        ("word", "Home", "2.0", "0.0", ["text"]),
    ], moved
    assert all(m.changed_cells == [2] for _, m in report.moves[:2])
    assert all(m.changed_cells == [4] for _, m in report.moves[2:])
    assert "ALPHAALPHA" in lab_page.locator(jlab.CELLS).nth(4).inner_text()


def test_unexpected_error_is_reported_and_stops_the_run(lab, lab_page, write, screenshot_dir):
    relpath, path = write("broken.ipynb", notebook("x = 1", "1 / 0", "y = 2"))
    report = jlab.exercise(lab_page, lab.url, relpath, path, screenshot_dir)
    assert [e["cell"] for e in report.errors] == [1]
    assert "ZeroDivisionError" in report.errors[0]["text"]
    assert [p.strip() for p in report.prompts] == ["[1]:", "[2]:", "[ ]:"]
    with pytest.raises(AssertionError, match="error output after Run All Cells"):
        jlab.check(report, expect_widgets=False, sliders=0)


def test_slider_that_changes_only_its_readout_fails(lab, lab_page, write, screenshot_dir):
    relpath, path = write("dead.ipynb", notebook(DEAD_SLIDER))
    report = jlab.exercise(lab_page, lab.url, relpath, path, screenshot_dir, slider_timeout=5)
    assert [(m.value_before, m.value_after, m.changed_cells) for _, m in report.moves] == [
        ("5.0", "10.0", []), ("10.0", "0.0", [])]
    with pytest.raises(AssertionError, match=r"no output other than its readout changed \(no output changed: "
                                             r"the wait ran out after 5 s \(SLIDER_TIMEOUT_S\)\)"):
        jlab.check(report, expect_widgets=True, sliders=1)


def test_notebook_whose_slider_is_missing_fails(lab, lab_page, write, screenshot_dir):
    # the slider is built but never displayed: the notebook runs cleanly, shows a widget, moves nothing
    relpath, path = write("missing.ipynb", notebook(MISSING_SLIDER))
    report = jlab.exercise(lab_page, lab.url, relpath, path, screenshot_dir)
    assert (report.sliders, report.moves, report.errors) == (0, [], []) and report.widgets
    with pytest.raises(AssertionError, match=r"expected 1 sliders after Run All Cells, found 0 \[\]"):
        jlab.check(report, expect_widgets=True, sliders=1)


STALL_S = 10  # a short stall limit, so the hang is found in seconds


def test_a_hanging_cell_fails_once_the_stall_limit_has_passed(lab, lab_page, write):
    relpath, _ = write("hang.ipynb", notebook("x = 1", "import time\ntime.sleep(10 ** 6)", "y = 2"))
    jlab.open_notebook(lab_page, lab.url, relpath)
    start = time.monotonic()
    with pytest.raises(jlab.WaitRanOut, match=rf"stalled: no cell finished for {STALL_S} s \(STALL_TIMEOUT_S\) "
                                             r"after 1 had, .* code cells still queued or running: \[1, 2\]"):
        jlab.run_all(lab_page, stall_timeout=STALL_S)
    seconds = time.monotonic() - start
    # the stall limit, plus at most the retried menu clicks that start the run, plus polling
    most = STALL_S + 3 * jlab.RUN_START_TIMEOUT_S + 10
    assert STALL_S < seconds < most < jlab.STALL_TIMEOUT_S, f"a hang was reported after {seconds:.0f} s"


def test_slow_cells_pass_however_long_the_whole_run(lab, lab_page, write, screenshot_dir):
    cells, each = 10, 3  # 30 s of sleeping in all, each cell well under the limit
    relpath, path = write("slow.ipynb", notebook(*[f"import time\ntime.sleep({each})\nprint({i})"
                                                   for i in range(cells)]))
    report = jlab.exercise(lab_page, lab.url, relpath, path, screenshot_dir, stall_timeout=STALL_S)
    jlab.check(report, expect_widgets=False, sliders=0)
    assert report.run_seconds > cells * each > 2 * STALL_S, report.run_seconds  # a total limit would have failed
    assert each <= report.slowest_cell_seconds < STALL_S, report.slowest_cell_seconds

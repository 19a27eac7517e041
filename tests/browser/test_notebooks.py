"""Every course notebook in JupyterLab + Chromium: Run All Cells without an error, every slider moved.

Parametrised over the top-level notebooks/*.ipynb present at collection time (not the exercises).
Sliders are found in the rendered page ([role=slider] handles inside output areas), never by
notebook name; each is moved to both ends from the keyboard, and some output other than its own
readout (a picture, a printed line) must change. Screenshots land in the session's
browser-screenshots temporary folder (pytest --basetemp=DIR keeps them in DIR).
"""

from pathlib import Path

import pytest

import jlab

pytestmark = pytest.mark.browser

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.timeout(jlab.RUN_TIMEOUT_S + 300)
@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs_and_sliders_respond(notebook, lab, lab_page, screenshot_dir):
    relpath = f"notebooks/{notebook.name}"
    stored = notebook.read_bytes()
    report = jlab.exercise(lab_page, lab.url, relpath, lab.root / relpath, screenshot_dir)
    assert notebook.read_bytes() == stored, f"running {relpath} in the browser changed the repo's copy"
    for i, m in report.moves:
        print(f"{relpath} slider {i} {m.label!r} {m.key}: {m.value_before} -> {m.value_after}, "
              f"changed {m.changed_kinds} in cells {m.changed_cells} ({m.seconds:.1f} s)")
    print(f"{relpath}: ran in {report.run_seconds:.1f} s; screenshots {[str(p) for p in report.screenshots]}")
    jlab.check(report, expect_widgets=jlab.expects_widgets(notebook))

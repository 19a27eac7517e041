"""Every course notebook in JupyterLab + Chromium: Run All Cells without an error, every slider moved.

Parametrised over the top-level notebooks/*.ipynb present at collection time (not the exercises).
Sliders are found in the rendered page ([role=slider] handles inside output areas), their number
checked against the table SLIDERS; each is moved to both ends from the keyboard, and some output other than its own
readout (a picture, a printed line) must change. Screenshots land in the session's
browser-screenshots temporary folder (pytest --basetemp=DIR keeps them in DIR).
"""

from pathlib import Path

import pytest

import jlab

pytestmark = pytest.mark.browser

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Slider handles each notebook shows after Run All Cells (README: 15 course sliders).
SLIDERS = {
    "00_why_efficient_attention": 0,
    "01_overlapping_patch_embedding": 3,  # kernel, stride, padding
    "02_tokens": 0,
    "03_efficient_self_attention": 4,  # query row, query col, sr_ratio, head
    "04_mix_ffn_and_block": 0,
    "05_mix_transformer_encoder": 4,  # query row, query col, block, head
    "06_all_mlp_decoder": 0,
    "07_train_and_look_inside": 4,  # query row, query col, block, head
    "08_do_the_parts_matter": 0,
}


# No time limit on the whole test: a busy machine may take many times longer than a quiet one. Each
# wait in jlab bounds one step (no cell finished for STALL_TIMEOUT_S, one slider redraw), so a hang
# still fails.
@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs_and_sliders_respond(notebook, lab, lab_page, screenshot_dir):
    assert notebook.stem in SLIDERS, f"{notebook.name}: add its slider count to SLIDERS in {Path(__file__).name}"
    relpath = f"notebooks/{notebook.name}"
    stored = notebook.read_bytes()
    report = jlab.exercise(lab_page, lab.url, relpath, lab.root / relpath, screenshot_dir)
    assert notebook.read_bytes() == stored, f"running {relpath} in the browser changed the repo's copy"
    for i, m in report.moves:
        print(f"{relpath} slider {i} {m.label!r} {m.key}: {m.value_before} -> {m.value_after}, "
              f"changed {m.changed_kinds} in cells {m.changed_cells} ({m.seconds:.1f} s, value after {m.value_seconds:.2f} s)")
    print(f"{relpath}: ran in {report.run_seconds:.1f} s, slowest cell {report.slowest_cell_seconds:.1f} s "
          f"(stall limit {jlab.STALL_TIMEOUT_S} s); screenshots {[str(p) for p in report.screenshots]}")
    jlab.check(report, expect_widgets=jlab.expects_widgets(notebook), sliders=SLIDERS[notebook.stem])

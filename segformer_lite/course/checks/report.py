"""A failed check as the learner sees it: the report, its hints and its rendering.

:class:`Report` is the ``AssertionError`` every checker raises; IPython shows it through its
``_render_traceback_`` (:func:`render`), so a wrong result is one short report and a crash shows
the learner's own frames (none from this package's checkers, torch or einops) after the hint. The
hints teach before they tell (:func:`hint_lines`): the first time a catalogued mistake is named,
the report says what it is and why it is one; the fix, as code, comes when the same mistake comes
back (:data:`SEEN` counts, per mistake id; :func:`reset` clears it).
"""
from __future__ import annotations

import contextlib
import sys
import traceback
from collections import Counter
from pathlib import Path

import torch

from .mistakes import MISTAKES, WHY


class Report(AssertionError):
    def _render_traceback_(self) -> list[str]:  # IPython shows these lines, not the checker's frames
        return render(self)


# --- hints: teach before telling -----------------------------------------------------------------

SEEN: Counter = Counter()  # mistake id -> how many reports have named it


def reset() -> None:
    """Forget which mistakes were named (tests call this; so can a learner)."""
    SEEN.clear()


def hint_lines(m_id: str, catalogue: dict = MISTAKES, whys: dict | None = None) -> list[str]:
    """The first time: the mistake and why it is one (from ``whys``, by default the layer
    exercises' ``WHY``); from the second time on, the fix too."""
    m = catalogue[m_id]
    SEEN[m_id] += 1
    lines = [f"Likely mistake: {m.title}."]
    why = (whys if whys is not None else WHY if catalogue is MISTAKES else {}).get(m_id)
    if why and SEEN[m_id] == 1:
        return lines + [f"  Why it is one: {why}.",
                        "  Put it right yourself and run the check again; if the same mistake comes back, "
                        "the check shows the fix."]
    return lines + [f"  How to fix: {m.fix}."]


# --- showing a failure --------------------------------------------------------------------------

# the checkers, the device and gradient passes they share with the hidden tests, torch and einops
_HIDDEN = [Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "grading.py",
           Path(torch.__file__).resolve().parent]
with contextlib.suppress(ImportError):
    import einops
    _HIDDEN.append(Path(einops.__file__).resolve().parent)


def _learners(tb) -> traceback.StackSummary:
    """The frames of ``tb`` outside this package's checkers, torch and einops."""
    frames = traceback.extract_tb(tb)
    keep = [f for f in frames if not any(str(Path(f.filename).resolve()).startswith(str(h)) for h in _HIDDEN)]
    return traceback.StackSummary.from_list(keep)


def _cell_names(frames: traceback.StackSummary) -> traceback.StackSummary:
    """Notebook cells named as IPython names them ("Cell In[3]"), not by their temporary file."""
    ipython = sys.modules.get("IPython")  # not loaded: no notebook is running
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return frames
    for f in frames:
        label = shell.compile.format_code_name(f.filename)
        if label:
            f.filename = " ".join(label)
    return frames


def render(report: BaseException) -> list[str]:
    """The lines IPython shows for a failed check: the report, then, when the learner's code
    raised, its own frames and the error."""
    lines = str(report).splitlines()
    cause = report.__cause__
    if cause is not None and cause.__traceback__ is not None:
        frames = _cell_names(_learners(cause.__traceback__))
        if frames:
            lines += ["", "Where your code raised it:", *"".join(frames.format()).rstrip("\n").splitlines()]
        lines += traceback.format_exception_only(type(cause), cause)[-1].rstrip("\n").splitlines()
    return lines

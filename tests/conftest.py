"""Fixtures shared by the package tests (helpers live in hf_reference.py)."""
from __future__ import annotations

import sys

import matplotlib
import pytest

from hf_reference import hf_segformer

matplotlib.use("Agg")  # headless: tests draw on Agg canvases, never open a window


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every pyplot figure a test opened, so figures do not pile up over the session."""
    yield
    if "matplotlib.pyplot" in sys.modules:  # only tests that drew through pyplot have any
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(autouse=True)
def _fresh_hints():
    """Every test starts with a checker that has named no mistake yet (hints teach before they
    tell: the fix comes the second time a mistake is named)."""
    if "segformer_lite.course.checks.localise" in sys.modules:
        sys.modules["segformer_lite.course.checks.localise"].reset()
    yield


@pytest.fixture(scope="session")
def hf_b0():
    """One shared MiT-B0 reference (transformers), for tests that need any small real model."""
    return hf_segformer("b0", seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one intra-op thread. On a small shared machine two threads per process
    oversubscribe the cores and big models slow down several-fold; results agree either way
    within the tolerances used here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_segformer():
    """``tiny_segformer(num_classes, **kwargs)``: a SegFormer with MiT-B0's encoder and a 16-wide
    decoder, the smallest model the tests train, save and load (a fresh one per call)."""
    import segformer_lite as sl

    def build(num_classes: int = 4, **kwargs):
        return sl.SegFormer(sl.mit_config("b0"), num_classes, decoder_dim=16, **kwargs)

    return build

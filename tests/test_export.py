"""Export at any input size: ONNX (onnxruntime, CPU) and torch.export match PyTorch at sizes the
export never saw, non-square and not multiples of 32; too-small images are refused before running.

The models are small (MiT-B0's strides, kernels and sequence-reduction ratios, so every grid is
B0's, with narrow single-block stages) so that the four exports take seconds, not minutes.
"""
import logging
import warnings

import numpy as np
import pytest
import torch

from segformer_lite import MiTConfig, MixTransformer, SegFormer, min_input_size, mit_config, stage_grid_sizes
from segformer_lite.export import (OnnxRunner, ProgramRunner, _quiet_exporter, example_input, export_min_size,
                                   export_onnx, export_program, main, output_names)

CFG = MiTConfig(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), depths=(1, 1, 1, 1))
B0 = mit_config("b0")
MIN_ONNX = min_input_size(CFG)  # 29: the model's own minimum
MIN_PROGRAM = export_min_size(CFG)  # 61: the traced range of torch.export
# (batch, height, width): non-square, not multiples of 32, the minimum sides themselves, a multiple of 32
SIZES = [(1, 61, 61), (3, 97, 130), (1, 200, 75), (2, 128, 96), (1, 61, 257)]
ONNX_ONLY_SIZES = [(1, 29, 29), (2, 33, 45), (1, 60, 100)]  # below torch.export's range, above the model's


def _model(kind):
    torch.manual_seed(0)
    model = SegFormer(CFG, num_classes=5, decoder_dim=32)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the head's eval mode is exercised
        model.decode_head.norm.running_mean.uniform_(-0.5, 0.5)
        model.decode_head.norm.running_var.uniform_(0.5, 2.0)
    model.train()  # exports must still trace eval mode
    return model if kind == "segformer" else model.encoder


@pytest.fixture(scope="module", params=["encoder", "segformer"])
def exported(request, tmp_path_factory):
    model = _model(request.param)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    pt2 = tmp_path_factory.mktemp("pt2") / f"{request.param}.pt2"
    torch.export.save(export_program(model), pt2)
    assert model.training, "export must give the model back in the mode it came in"
    return model.eval(), OnnxRunner(path), ProgramRunner(pt2)


def _images(b, h, w):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h * 1000 + w))


def _pairs(ours, model, images):
    with torch.no_grad():
        ref = model(images)
    ref = ref if isinstance(ref, list) else [ref]
    ours = ours if isinstance(ours, (list, tuple)) else [ours]
    assert len(ours) == len(ref)
    return [(np.asarray(a), r.numpy()) for a, r in zip(ours, ref)]


def test_minimum_sizes():
    assert (MIN_ONNX, MIN_PROGRAM) == (29, 61)
    assert export_min_size(B0) == 61 and min_input_size(B0) == 29
    # at 61 every key/value grid is at least 2x2; at 60 stage 1's is 15 // 8 = 1 wide
    assert stage_grid_sizes(CFG, 60, 60)[0] == (15, 15) and stage_grid_sizes(CFG, 61, 61)[0] == (16, 16)


def test_test_sizes_were_not_used_to_export():
    traced = tuple(example_input(CFG).shape)
    assert traced == (2, 3, 64, 80)
    assert all((b, 3, h, w) != traced for b, h, w in SIZES + ONNX_ONLY_SIZES)


def test_onnx_axes_are_symbolic(exported):
    model, onnx_runner, _ = exported
    assert onnx_runner.session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert [o.name for o in onnx_runner.session.get_outputs()] == output_names(model)
    for out in onnx_runner.session.get_outputs():
        assert out.shape[0] == "batch" and all(isinstance(d, str) for d in out.shape[2:]), out.shape


@pytest.mark.parametrize("size", SIZES + ONNX_ONLY_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_onnxruntime_matches_pytorch(exported, size):
    model, onnx_runner, _ = exported
    images = _images(*size)
    for ours, ref in _pairs(onnx_runner(images.numpy()), model, images):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_exported_program_matches_pytorch(exported, size):
    model, _, program_runner = exported
    images = _images(*size)
    with torch.no_grad():
        out = program_runner(images)
    for ours, ref in _pairs(out, model, images):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_too_small_is_refused_before_running(exported):
    _, onnx_runner, program_runner = exported
    onnx_runner.session, program_runner.module = None, None  # reaching either would raise AttributeError
    with pytest.raises(ValueError, match=r"28x40 is too small: the ONNX model needs at least 29x29"):
        onnx_runner(np.zeros((1, 3, 28, 40), np.float32))
    with pytest.raises(ValueError, match=r"64x60 is too small: the exported program needs at least 61x61"):
        program_runner(torch.zeros(1, 3, 64, 60))


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((3, 64, 64), np.float32), ValueError, r"4-D batch of images \(B, 3, H, W\), got shape \(3, 64, 64\)"),
    (np.zeros((1, 1, 64, 64), np.float32), ValueError, r"3 input channels"),
    (np.zeros((1, 3, 64, 64), np.float64), TypeError, r"float32 images, got float64"),
    (torch.zeros(1, 3, 64, 64), TypeError, r"numpy array .* \(use tensor.numpy\(\)\)"),
])
def test_onnx_runner_bad_input(exported, bad, error, match):
    with pytest.raises(error, match=match):
        exported[1](bad)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="expected a MixTransformer or a SegFormer to export, got Linear"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="ExportedProgram or a .pt2 path, got int"):
        ProgramRunner(3)
    with pytest.raises(TypeError, match=r"expected a torch.Tensor \(B, C, H, W\), got ndarray"):
        ProgramRunner.__call__(object.__new__(ProgramRunner), np.zeros((1, 3, 64, 64), np.float32))


TORCHVISION_NOTE = "torchvision is not installed. Skipping torchvision::nms"  # what torch's ONNX registry logs
LEAFSPEC_NOTE = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"


def _notes():
    logging.getLogger("torch.onnx._internal.exporter._registration").warning(TORCHVISION_NOTE)
    warnings.warn(LEAFSPEC_NOTE, FutureWarning)


def test_quiet_exporter_silences_those_two_notes_only_while_it_runs(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _quiet_exporter():
            _notes()
            warnings.warn("another FutureWarning", FutureWarning)  # anything else still shows
        assert caplog.messages == [] and [str(w.message) for w in caught] == ["another FutureWarning"]
        _notes()  # after it, both are back
    assert caplog.messages == [TORCHVISION_NOTE] and str(caught[-1].message) == LEAFSPEC_NOTE


@pytest.mark.slow
def test_command_exports_the_shipped_checkpoint(tmp_path, capfd, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["--out", str(tmp_path), "--format", "onnx", "--check-size", "71", "93", "--check-size", "29", "40"])
    out, err = capfd.readouterr()
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] + [str(w.message) for w in caught]
    assert err == "" and notes == [], (err, notes)  # nothing printed that a user cannot act on
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'segformer.onnx'}: exported in"), lines
    assert lines[0].endswith("smallest side 29"), lines
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  onnxruntime vs PyTorch at (1, 3, 71, 93)", "  onnxruntime vs PyTorch at (1, 3, 29, 40)"]
    assert all(float(line.split("max |diff| = ")[1]) < 1e-4 for line in lines[1:]), lines
    runner = OnnxRunner(tmp_path / "segformer.onnx")
    assert [o.name for o in runner.session.get_outputs()] == ["logits"]

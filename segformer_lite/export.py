"""Export MiT (the encoder) or the full SegFormer to ONNX and through ``torch.export``, at any input size.

Both exports keep the batch, the height and the width symbolic: one file serves every image size.
Three places could have fixed a size into the graph, and each is kept symbolic:

* the grid ``(H_i, W_i)`` that travels beside the tokens (``tokens_to_image`` keeps a symbolic size
  symbolic instead of calling ``int()`` on it, which would freeze the traced value);
* the key/value grid ``floor(H_i / sr) x floor(W_i / sr)`` of the sequence-reduction conv;
* the decoder's ``interpolate`` to stage 1's grid, whose size is read from the feature map.

Size 1 is where tracers specialise (a dimension of 1 has no meaningful stride), so the traced
range of ``torch.export`` starts at :func:`export_min_size`: the smallest side at which every
token grid and every key/value grid is at least 2 wide (61 px for MiT-B0). The ONNX graph has
no guards and is checked down to the model's own minimum, :func:`segformer_lite.grid.min_input_size`
(29 px for B0). The runners here refuse smaller images with a ValueError before anything runs.

    from segformer_lite import SegFormer, mit_config
    from segformer_lite.export import export_onnx, OnnxRunner
    export_onnx(SegFormer(mit_config("b0"), num_classes=5), "segformer.onnx")
    logits = OnnxRunner("segformer.onnx")(images)  # images: float32 (B, 3, H, W) numpy array

``segformer-lite export --out DIR`` exports the shipped checkpoint (see :func:`main`). ONNX needs
the ``export`` extra (onnx, onnxscript, onnxruntime): ``pip install ".[export]"`` in the checkout;
``torch.export`` needs nothing more than torch.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.export import Dim

from .config import VARIANTS, MiTConfig, mit_config
from .decoder import SegFormer
from .encoder import MixTransformer
from .grid import min_input_size, reduced_grid, stage_grid_sizes

__all__ = ["export_min_size", "example_input", "output_names", "export_program", "export_onnx",
           "ProgramRunner", "OnnxRunner", "main"]

_MIN_SIZE_KEY = "segformer_lite.min_size"  # ONNX metadata: the smallest side the graph is checked at
EXPORT_EXTRA = ("onnx", "onnxscript", "onnxruntime")  # what the ONNX path imports: pyproject's export extra
INSTALL_EXPORT_EXTRA = 'pip install ".[export]"'  # run in the checkout (the extra's three packages)


def _missing_export_extra(what: str, modules=EXPORT_EXTRA) -> str | None:
    """Why ``what`` cannot run here, naming the install command, or None when all ``modules`` import."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        return (f"{what} needs the export extra, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                f"not installed: {INSTALL_EXPORT_EXTRA}")
    return None


def _require_export_extra(what: str, modules=EXPORT_EXTRA) -> None:
    if message := _missing_export_extra(what, modules):
        raise ModuleNotFoundError(message)


def _config(model) -> MiTConfig:
    if isinstance(model, (MixTransformer, SegFormer)):
        return model.config
    raise TypeError(f"expected a MixTransformer or a SegFormer to export, got {type(model).__name__}")


def export_min_size(cfg: MiTConfig) -> int:
    """Smallest side of the traced range: every stage's token grid and every key/value grid
    (after the sequence-reduction conv) at least 2x2, so no axis is the size 1 that tracers specialise."""
    size = min_input_size(cfg)
    while any(min(reduced_grid(grid, sr)) < 2
              for grid, sr in zip(stage_grid_sizes(cfg, size, size), cfg.sr_ratios)):
        size += 1
    return size


def example_input(cfg: MiTConfig) -> torch.Tensor:
    """The tensor both exports trace with: batch 2, non-square, just above :func:`export_min_size`.
    Only its shape matters; tests run the exported models at other shapes."""
    side = export_min_size(cfg) + 3
    return torch.zeros(2, cfg.in_channels, side, side + 16)


def output_names(model) -> list[str]:
    """``["f1", ..., "f4"]`` for the encoder's feature maps, ``["logits"]`` for a SegFormer."""
    cfg = _config(model)
    return ["logits"] if isinstance(model, SegFormer) else [f"f{i + 1}" for i in range(cfg.num_stages)]


def _dynamic_shapes(cfg: MiTConfig) -> tuple[dict[int, Dim], ...]:
    side = export_min_size(cfg)
    return ({0: Dim("batch", min=1), 2: Dim("height", min=side), 3: Dim("width", min=side)},)


@contextmanager
def _quiet_exporter():
    """Silence what the exporters print that a user cannot act on, only while they run: torch's ONNX
    registry warns once per torchvision operator when torchvision is absent (a SegFormer uses none),
    and torch's own pytree code warns that it uses a deprecated LeafSpec check."""
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
            yield
    finally:
        registry.setLevel(level)


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """Export what inference runs (no dropout, BatchNorm's running statistics), then restore the mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def export_program(model: MixTransformer | SegFormer) -> torch.export.ExportedProgram:
    """``torch.export`` of the model in eval mode, batch, height and width symbolic
    (heights and widths from :func:`export_min_size` up). Save it with ``torch.export.save``."""
    cfg = _config(model)
    with _eval_mode(model), _quiet_exporter():
        return torch.export.export(model, (example_input(cfg),), dynamic_shapes=_dynamic_shapes(cfg))


def export_onnx(model: MixTransformer | SegFormer, path, opset_version: int | None = None) -> Path:
    """Write the model (eval mode) to an ONNX file with input ``images`` ``(batch, C, height, width)``
    and outputs :func:`output_names`, every batch, height and width symbolic. Uses torch's
    dynamo exporter (``torch.onnx.export(dynamo=True)``, which needs onnxscript); without the
    export extra, a ModuleNotFoundError that names the install command."""
    cfg = _config(model)
    _require_export_extra("export_onnx", ("onnx", "onnxscript"))
    path = Path(path)
    with _eval_mode(model), _quiet_exporter():
        program = torch.onnx.export(model, (example_input(cfg),), dynamo=True, external_data=False,
                                    dynamic_shapes=_dynamic_shapes(cfg), input_names=["images"],
                                    output_names=output_names(model), opset_version=opset_version,
                                    verbose=False)
    program.model.metadata_props[_MIN_SIZE_KEY] = str(min_input_size(cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path)
    return path


def _check_images(shape: tuple, dtype: str, channels: int, min_size: int, what: str) -> None:
    """The input checks the exported graphs cannot make readably, run before them."""
    if len(shape) != 4:
        raise ValueError(f"{what} expects a 4-D batch of images (B, {channels}, H, W), got shape {tuple(shape)}")
    if shape[1] != channels:
        raise ValueError(f"{what} expects {channels} input channels (B, {channels}, H, W), got shape {tuple(shape)}")
    if dtype != "float32":
        raise TypeError(f"{what} expects float32 images, got {dtype}")
    h, w = shape[-2:]
    if min(h, w) < min_size:
        raise ValueError(f"image of {h}x{w} is too small: {what} needs at least {min_size}x{min_size}")


class ProgramRunner:
    """Runs an ``ExportedProgram`` (or a ``.pt2`` file from ``torch.export.save``) on a float32
    tensor, after checking the input against the program's own traced range."""

    def __init__(self, program):
        if isinstance(program, (str, Path)):
            program = torch.export.load(str(program))
        if not isinstance(program, torch.export.ExportedProgram):
            raise TypeError(f"expected an ExportedProgram or a .pt2 path, got {type(program).__name__}")
        images = next(n for n in program.graph.nodes if n.op == "placeholder"
                      and n.name not in program.graph_signature.inputs_to_parameters
                      and n.name not in program.graph_signature.inputs_to_buffers)
        _, self.channels, height, width = images.meta["val"].shape
        self.min_size = max(int(program.range_constraints[d.node.expr].lower) for d in (height, width))
        self.module = program.module()

    def __call__(self, images: torch.Tensor):
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor (B, C, H, W), got {type(images).__name__}")
        _check_images(tuple(images.shape), str(images.dtype).removeprefix("torch."), self.channels,
                      self.min_size, "the exported program")
        return self.module(images)


class OnnxRunner:
    """Runs an exported ONNX file with onnxruntime (CPU) on a float32 array ``(B, C, H, W)``;
    returns the list of outputs (:func:`output_names`). Checks the input before onnxruntime sees it."""

    def __init__(self, path, threads: int | None = None):
        _require_export_extra("OnnxRunner", ("onnxruntime",))
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if _MIN_SIZE_KEY not in meta:
            raise ValueError(f"{path} was not written by segformer_lite.export.export_onnx "
                             f"(no {_MIN_SIZE_KEY} metadata)")
        self.min_size = int(meta[_MIN_SIZE_KEY])
        self.channels = self.session.get_inputs()[0].shape[1]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        if not isinstance(images, np.ndarray):
            raise TypeError(f"expected a numpy array (B, C, H, W), got {type(images).__name__}"
                            + (" (use tensor.numpy())" if isinstance(images, torch.Tensor) else ""))
        _check_images(images.shape, str(images.dtype), self.channels, self.min_size, "the ONNX model")
        return self.session.run(None, {"images": images})


def _max_abs_diff(ours, reference) -> float:
    ours = ours if isinstance(ours, (list, tuple)) else [ours]
    reference = reference if isinstance(reference, (list, tuple)) else [reference]
    return max(float(np.abs(np.asarray(a) - b.detach().numpy()).max()) for a, b in zip(ours, reference))


def main(argv: list[str] | None = None) -> None:
    """``export`` command: write DIR/NAME.onnx and DIR/NAME.pt2, then check both against PyTorch
    at sizes that were not used to export (max |difference| printed per size)."""
    parser = argparse.ArgumentParser(prog="segformer-lite export", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the files to")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, default=None,
                        help="a SegFormer file written by save_segformer (default: the shipped checkpoint)")
    source.add_argument("--variant", choices=list(VARIANTS),
                        help="export a freshly initialised MiT variant instead of a checkpoint")
    parser.add_argument("--num-classes", type=int, default=19, help="classes of a --variant SegFormer (default 19)")
    parser.add_argument("--encoder", action="store_true", help="export only the MiT encoder")
    parser.add_argument("--format", choices=["onnx", "torch", "both"], default="both")
    parser.add_argument("--check-size", type=int, nargs=2, action="append", metavar=("H", "W"),
                        help="image size of a parity check, repeatable (default: 97 130)")
    args = parser.parse_args(argv)


    def refuse(message: str):  # an expected failure: one line, exit 2, before anything is exported
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    if args.format in ("onnx", "both") and (message := _missing_export_extra("--format " + args.format)):
        refuse(message)
    if args.num_classes < 1:
        refuse(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.variant:
        model = SegFormer(mit_config(args.variant), args.num_classes).eval()
    else:
        from .checkpoint import load_segformer  # weights in: the one import outside the model modules
        try:
            model = load_segformer(args.checkpoint)
        except (OSError, ValueError) as e:  # no such file, not a SegFormer checkpoint
            refuse(str(e))
    if args.encoder:
        model = model.encoder
    smallest = min_input_size(model.config)
    for h, w in args.check_size or []:
        if min(h, w) < smallest:
            refuse(f"--check-size {h} {w}: an image of {h}x{w} is too small, the model needs at least "
                   f"{smallest}x{smallest}")
    name = "encoder" if args.encoder else "segformer"
    generator = torch.Generator().manual_seed(0)
    checks = [torch.randn(1, model.config.in_channels, h, w, generator=generator)
              for h, w in args.check_size or [(97, 130)]]
    with torch.no_grad():
        references = [model(images) for images in checks]
    for fmt, label, to_input in (("onnx", "onnxruntime", lambda t: t.numpy()), ("torch", "exported program", lambda t: t)):
        if args.format not in (fmt, "both"):
            continue
        start = time.perf_counter()
        if fmt == "onnx":
            path = export_onnx(model, args.out / f"{name}.onnx")
            runner = OnnxRunner(path)
        else:
            path = args.out / f"{name}.pt2"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.export.save(export_program(model), path)
            runner = ProgramRunner(path)
        print(f"{path}: exported in {time.perf_counter() - start:.1f} s; smallest side {runner.min_size}")
        for images, reference in zip(checks, references):
            h, w = images.shape[-2:]
            if min(h, w) < runner.min_size:
                print(f"  {label}: {h}x{w} is below its smallest side {runner.min_size}, not checked")
                continue
            with torch.no_grad():
                diff = _max_abs_diff(runner(to_input(images)), reference)
            print(f"  {label} vs PyTorch at {tuple(images.shape)}: max |diff| = {diff:.2e}")


if __name__ == "__main__":
    main()

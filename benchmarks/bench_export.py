"""onnxruntime (CPU) vs PyTorch on the same MiT weights: one process, interleaved repeats.

    .venv/bin/python benchmarks/bench_export.py                        # MiT-B0 encoder, 512x512, batch 1, 1 thread
    .venv/bin/python benchmarks/bench_export.py --model segformer --threads 2 --repeats 21

The model (random weights, seed 0) is exported with ``segformer_lite.export.export_onnx`` (traced at
a small size, so 512 px is a size the export never saw), and onnxruntime's outputs must match
PyTorch's within 1e-4 before anything is timed. Each repeat then runs both once, in alternating
order, so load from other processes hits both alike. Reported: medians, the median of the
per-repeat ratios onnxruntime / PyTorch with its interquartile range, and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segformer_lite import SegFormer, mit_config
from segformer_lite.export import OnnxRunner, export_onnx

TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--model", choices=["encoder", "segformer"], default="encoder")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SegFormer(mit_config(args.variant), num_classes=19).eval()
    model = model.encoder if args.model == "encoder" else model
    images = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        runner = OnnxRunner(export_onnx(model, Path(tmp) / "model.onnx"), threads=args.threads)
        export_s = time.perf_counter() - start
    x = images.numpy()

    def run_torch():
        with torch.inference_mode():
            out = model(images)
        return out if isinstance(out, list) else [out]

    diff = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(runner(x), run_torch()))
    if not diff <= TOLERANCE:
        raise SystemExit(f"onnxruntime and PyTorch differ by {diff:.2e} > {TOLERANCE}: not timing")

    runs = {"pytorch": (run_torch, []), "onnxruntime": (lambda: runner(x), [])}
    run_torch(), runner(x)  # warm-up: first-call allocations and kernel selection
    for i in range(args.repeats):
        for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            fn, times = runs[name]
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    ratios = [o / p for o, p in zip(runs["onnxruntime"][1], runs["pytorch"][1])]
    q1, _, q3 = statistics.quantiles(ratios, n=4)

    print(f"MiT-{args.variant.upper()} {args.model}, {args.size}x{args.size}, batch 1, {args.threads} thread(s), "
          f"{args.repeats} interleaved repeats; torch {torch.__version__}, onnxruntime {_ort_version()}; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"export {export_s:.1f} s; onnxruntime vs PyTorch max |diff| at {args.size} px: {diff:.2e}")
    for name, (_, times) in runs.items():
        print(f"{name:12s} median {1000 * statistics.median(times):8.1f} ms   fastest {1000 * min(times):8.1f} ms")
    print(f"ratio onnxruntime / pytorch: median {statistics.median(ratios):.3f} (IQR {q1:.3f}-{q3:.3f})")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()

"""The package's commands: ``segformer-lite COMMAND [options]`` (the console script pip installs),
or the same as ``python -m segformer_lite COMMAND [options]``.

    train        train a SegFormer or a local baseline on the synthetic shapes (training/train.py)
    evaluate     per-class IoU and mIoU of a trained model on held-out images (training/evaluate.py)
    experiments  the paper's claims tested on the context task (training/experiments.py)
    homework     the course notebooks as an nbgrader assignment (course/homework.py)
    export       the model to ONNX or torch.export, checked against PyTorch (export.py; pip install ".[export]")

``segformer-lite COMMAND --help`` gives each command's options.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"train": "segformer_lite.training.train", "evaluate": "segformer_lite.training.evaluate",
            "experiments": "segformer_lite.training.experiments", "homework": "segformer_lite.course.homework",
            "export": "segformer_lite.export"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"segformer-lite: unknown command {command!r}; choose from {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    status = importlib.import_module(COMMANDS[command]).main(rest)
    return status if isinstance(status, int) else 0  # evaluate's main returns the mIoU, not a status


if __name__ == "__main__":
    sys.exit(main())

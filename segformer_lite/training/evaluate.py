"""Per-class IoU and mIoU on held-out synthetic images:
``segformer-lite evaluate [--checkpoint PATH] [--seed S] [--images N] [--task T]``.

The checkpoint is any model ``segformer-lite train`` writes (SegFormer or a local
baseline); it is scored on the task recorded in its file unless ``--task`` says otherwise.

IoU of class ``c`` = pixels labelled ``c`` and predicted ``c`` / pixels labelled or predicted
``c``, summed over the whole set (the confusion-matrix definition mmseg and the paper use);
mIoU is the mean over the classes that occur, in the labels or the predictions (mmseg's
convention: a class with no pixel in either has no IoU and does not count). Predictions are the
logits upsampled to full resolution.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .baselines import BASELINES, ConvBaseline
from .data import CLASSES, TASKS, SyntheticShapes
from .model_files import load_model
from ..decoder import SegFormer

__all__ = ["HELD_OUT_SEED", "confusion_matrix", "iou_per_class", "mean_iou", "evaluate_model", "build_parser",
           "main"]

HELD_OUT_SEED = 2026  # the images every reported score uses: never a training seed


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts; row = true class, column = predicted class."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(target.shape)}")
    idx = target.reshape(-1) * num_classes + pred.reshape(-1)
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of every class from a confusion matrix: ``TP / (TP + FP + FN)``, NaN for a class
    absent from both labels and predictions (0 / 0: it has no IoU)."""
    tp = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - tp
    return tp / union


def mean_iou(ious: torch.Tensor) -> float:
    """mIoU as mmseg computes it: the mean over classes that have an IoU (absent ones, NaN, skipped)."""
    return float(ious.nanmean())


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset: SyntheticShapes, batch_size: int = 25,
                   progress: bool = True) -> torch.Tensor:
    """Per-class IoU of ``model`` (a SegFormer or a baseline) on ``dataset`` (eval mode; the
    model's mode is restored)."""
    if not isinstance(model, (SegFormer, ConvBaseline)):
        raise TypeError(f"expected a SegFormer or a baseline "
                        f"({', '.join(c.__name__ for c in BASELINES.values())}), got {type(model).__name__}")
    if model.num_classes != len(dataset.classes):
        raise ValueError(f"the model predicts {model.num_classes} classes but the data set has "
                         f"{len(dataset.classes)} ({', '.join(dataset.classes)})")
    was_training = model.training
    model.eval()
    k = model.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64)
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="evaluate", disable=not progress):
        images, labels = dataset.batch(range(start, min(start + batch_size, len(dataset))))
        confusion += confusion_matrix(model.predict(images), labels, k)
    model.train(was_training)
    return iou_per_class(confusion)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``segformer-lite evaluate``; every option shows its default once."""
    p = argparse.ArgumentParser(prog="segformer-lite evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="weights written by segformer-lite train, SegFormer or baseline (None: the shipped checkpoint)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="synthetic task to score on (None: the one the checkpoint records, else context)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the held-out images")
    p.add_argument("--images", type=int, default=200, help="number of held-out images")
    p.add_argument("--image-size", type=int, default=64, help="side of the square images in pixels")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> float:
    p = build_parser()
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, task = load_model(args.checkpoint)
    except (OSError, ValueError) as e:  # an expected failure (no such file, not a checkpoint): one line
        p.exit(2, f"{p.prog}: error: {e}\n")
    data = SyntheticShapes(args.images, args.image_size, args.seed, task=args.task or task or "context")
    ious = evaluate_model(model, data, progress=not args.quiet)
    for name, iou in zip(CLASSES, ious.tolist()):
        print(f"IoU {name:<12} " + ("absent (no pixel labelled or predicted)" if math.isnan(iou) else f"{iou:.4f}"))
    miou = mean_iou(ious)
    print(f"mIoU {miou:.4f}")
    return miou


if __name__ == "__main__":
    main()

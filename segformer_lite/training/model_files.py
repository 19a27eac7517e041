"""Files of the models the training command trains: a SegFormer or a local baseline, with the task
it was trained on (:func:`save_model` / :func:`load_model`), and the shipped baselines."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import (SHIPPED_CHECKPOINT, load_segformer, load_weights, on_meta, read_safetensors,
                          segformer_meta, write_safetensors)
from ..decoder import SegFormer
from .baselines import BASELINES
from .data import TASKS

__all__ = ["save_model", "load_model", "SHIPPED_BASELINES"]

# the local baselines trained on the context task at MiT's budget (docs/results.md)
SHIPPED_BASELINES = {kind: SHIPPED_CHECKPOINT.with_name(f"{kind}_context.safetensors") for kind in BASELINES}


def save_model(model: torch.nn.Module, path, task: str = "context", dtype: torch.dtype = torch.float32) -> Path:
    """Write a model that ``segformer-lite train`` trains (a :class:`SegFormer`, or a
    baseline: ``PixelMLP``, ``LocalCNN``) with its kind and the ``task`` it was trained on, as
    :func:`~segformer_lite.checkpoint.save_segformer` does; :func:`load_model` reads it back."""
    if isinstance(model, SegFormer):
        meta = segformer_meta(model)
    elif isinstance(model, tuple(BASELINES.values())):
        meta = {"model": model.kind, "num_classes": str(model.num_classes), "width": str(model.width)}
    else:
        raise TypeError(f"expected a SegFormer or a baseline ({', '.join(c.__name__ for c in BASELINES.values())}), "
                        f"got {type(model).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    return write_safetensors(model, path, {**meta, "task": task}, dtype)


def load_model(path=None) -> tuple[torch.nn.Module, str | None]:
    """``(model, task)`` from a file written by :func:`save_model` or
    :func:`~segformer_lite.checkpoint.save_segformer` (default: the shipped checkpoint): a
    :class:`SegFormer` or a baseline, in eval mode, and the task it was trained on (``None`` when
    the file records none, as :func:`~segformer_lite.checkpoint.save_segformer`'s do not)."""
    from safetensors import SafetensorError

    path = SHIPPED_CHECKPOINT if path is None else path
    try:
        meta, sd = read_safetensors(Path(path)) if isinstance(path, (str, Path)) else ({}, {})
    except (SafetensorError, OSError):
        meta, sd = {}, {}  # not readable: load_segformer says why, in its words
    kind, task = meta.get("model", "segformer"), meta.get("task")
    if kind == "segformer":
        return load_segformer(path), task
    if kind not in BASELINES or task not in TASKS:
        raise ValueError(f"{path}: unknown model kind {kind!r} or task {task!r} (expected one of "
                         f"segformer, {', '.join(BASELINES)} and one of {', '.join(TASKS)})")
    try:
        model = on_meta(BASELINES[kind], int(meta["num_classes"]), int(meta["width"]))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: the {kind} metadata is incomplete ({type(e).__name__}: {e})") from None
    load_weights(model, sd, str(path))
    return model.eval(), task

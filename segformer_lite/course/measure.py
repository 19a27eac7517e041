"""Measure how much tensor memory a piece of PyTorch code really holds at its peak.

CPU PyTorch has no ``torch.cuda.max_memory_allocated``; process RSS is blurred by the C
allocator's caching. Instead, ``peak_memory`` watches every operation through a
``TorchDispatchMode``: each tensor an operation creates is added to a running total, each storage
is dropped from it as soon as it is freed (a weak reference to the storage expires), and the
largest total is the peak. It counts what torch's operators allocate as tensors: not buffers an
operator keeps private (a fused kernel's scratch), not the Python process around it. The figure
is exact and repeatable: the same code gives the same bytes on any machine.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["peak_memory"]


class _PeakTensorMemory(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}  # storage id -> (weak ref, bytes)
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()  # storages freed since the last operation
        # an output that shares an input's storage (a view, an in-place op) allocated nothing
        inputs = {StorageWeakRef(t.untyped_storage()).cdata
                  for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            ref = StorageWeakRef(t.untyped_storage())
            if ref.cdata in inputs or ref.cdata in self.live:
                continue
            nbytes = t.untyped_storage().nbytes()
            self.live[ref.cdata] = (ref, nbytes)
            self.current += nbytes
        self.peak = max(self.peak, self.current)
        return out


def peak_memory(fn: Callable, *args, **kwargs) -> int:
    """Run ``fn(*args, **kwargs)`` and return the most bytes of tensor storage it held at once.

    Tensors that existed before the call (inputs, parameters) are not counted; everything the
    call allocates is, while it is alive, including what it returns.

    >>> peak_memory(lambda: torch.ones(1000) + 1)   # two 1000-float tensors alive at once
    8000
    """
    if not callable(fn):
        raise TypeError(f"peak_memory needs a callable, got {type(fn).__name__}")
    mode = _PeakTensorMemory()
    with mode:
        fn(*args, **kwargs)
    return mode.peak

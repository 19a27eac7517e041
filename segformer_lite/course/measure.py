"""Measure how much tensor memory a piece of PyTorch code really holds at its peak, and how long
it takes on a shared machine.

CPU PyTorch has no ``torch.cuda.max_memory_allocated``; process RSS is blurred by the C
allocator's caching. Instead, ``peak_memory`` watches every operation through a
``TorchDispatchMode``: each tensor an operation creates is added to a running total, each storage
is dropped from it as soon as it is freed (a weak reference to the storage expires), and the
largest total is the peak. It counts what torch's operators allocate as tensors: not buffers an
operator keeps private (a fused kernel's scratch), not the Python process around it. The figure
is exact and repeatable: the same code gives the same bytes on any machine.

Time is not: on a shared machine another job takes the CPU for a while, and every call timed in
that while is slow, by however long it waited. ``interleaved_times`` therefore times on one torch
thread by that thread's CPU time (``time.thread_time``), which does not count the waiting (with
several threads, one thread descheduled stalls the others at every barrier), and times several
functions in turn, block after block, so that what disturbance is left (caches, a shared core)
hits all of them alike. It keeps each block's fastest timing and reports the median over the
blocks, with the spread of the block minima as the noise. A timing whose spread exceeds
``max_spread`` of its median is flagged and measured again, up to ``max_rounds`` times, rather
than reported as if it were a figure.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["peak_memory", "Timing", "interleaved_times"]


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


@dataclass(frozen=True)
class Timing:
    """One function's time per call, from ``interleaved_times``."""
    seconds: float  # the median over the blocks of each block's fastest call
    spread: float  # (75th - 25th percentile of the block minima) / seconds: the noise, relative
    blocks: int  # how many blocks the figure comes from
    rounds: int  # how many rounds were measured to get it (1 if the first was stable)
    stable: bool  # spread <= max_spread; False only when max_rounds ran out

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


def interleaved_times(fns: dict[str, Callable[[], object]], *, blocks: int = 7, repeats: int = 5,
                      min_call_time: float = 0.01, max_spread: float = 0.1, max_rounds: int = 4,
                      threads: int | None = 1, clock: Callable[[], float] | None = None,
                      report: Callable[[str], None] = print) -> dict[str, Timing]:
    """Time every function of ``fns`` (name -> a call without arguments), interleaved.

    torch runs on ``threads`` threads meanwhile (``None``: as it is), and ``clock`` measures (by
    default the CPU time of this thread, ``time.thread_time``, when ``threads`` is 1, else the wall
    clock, ``time.perf_counter``). Each round runs ``blocks`` blocks; in each block every function
    (in an order that rotates from block to block) is timed ``repeats`` times, each time over
    ``number`` calls, chosen once so that a timing lasts at least ``min_call_time`` seconds. A block's figure is its fastest timing;
    a function's, the median of its block figures. A function whose spread (interquartile range of
    its block figures over their median) exceeds ``max_spread`` is reported through ``report`` and
    measured again in a new round, up to ``max_rounds`` rounds; if it never settles, its last
    round is returned with ``stable=False``.
    """
    if not isinstance(fns, dict) or not fns or not all(callable(f) for f in fns.values()):
        raise TypeError(f"interleaved_times needs a non-empty dict of name -> callable, got {fns!r}")
    for name, value in {"blocks": blocks, "repeats": repeats, "max_rounds": max_rounds}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if blocks < 4:
        raise ValueError(f"blocks must be at least 4 for a spread between quartiles, got {blocks}")
    if not 0 < max_spread:
        raise ValueError(f"max_spread must be positive, got {max_spread!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    if clock is None:
        clock = time.thread_time if threads == 1 else time.perf_counter
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _interleaved(fns, blocks, repeats, min_call_time, max_spread, max_rounds, clock, report)
    finally:
        torch.set_num_threads(before)


def _interleaved(fns, blocks, repeats, min_call_time, max_spread, max_rounds, clock, report) -> dict[str, Timing]:
    """interleaved_times' rounds, with its arguments checked and torch's threads set."""
    def timed(fn: Callable, number: int) -> float:
        start = clock()
        for _ in range(number):
            fn()
        return (clock() - start) / number

    numbers = {}
    for name, fn in fns.items():  # a warm-up call, which also sizes the timing
        once = max(timed(fn, 1), 1e-9)
        numbers[name] = int(min_call_time / once) + 1 if once < min_call_time else 1
    results: dict[str, Timing] = {}
    todo = list(fns)
    for round_ in range(1, max_rounds + 1):
        minima: dict[str, list[float]] = {name: [] for name in todo}
        for b in range(blocks):
            order = todo[b % len(todo):] + todo[:b % len(todo)]
            for name in order:
                minima[name].append(min(timed(fns[name], numbers[name]) for _ in range(repeats)))
        for name in list(todo):
            median = statistics.median(minima[name])
            q1, _, q3 = statistics.quantiles(minima[name], n=4)
            spread = (q3 - q1) / median if median > 0 else 0.0
            stable = spread <= max_spread
            results[name] = Timing(median, spread, blocks, round_, stable)
            if stable:
                todo.remove(name)
            elif round_ < max_rounds:
                report(f"{name}: spread {spread:.0%} of the median exceeds {max_spread:.0%}; measuring again "
                       f"(round {round_ + 1} of at most {max_rounds})")
            else:
                report(f"{name}: spread {spread:.0%} of the median still exceeds {max_spread:.0%} after "
                       f"{max_rounds} rounds: UNSTABLE, do not read this figure")
        if not todo:
            break
    return results

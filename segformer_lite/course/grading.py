"""Two promises of every exercise's contract that a forward comparison cannot see, as plain
assertions for the hidden tests: the answer trains like the package's part (:func:`trains_like`)
and keeps the input's device (:func:`keeps_device`).

The hidden tests of notebooks 01-06 call these after comparing outputs. The checkers compare
gradients with code of their own (``checks.passes.gradients``, which also names the likely
cause); ``tests/test_checks_contracts.py`` holds the two to the same verdict on every wrong answer
it knows. The device promise is tested here once, and the checkers report its failures
(``checks.passes.on_another_device``).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable

import torch
from torch import nn


def tensors(x: Any) -> list[torch.Tensor]:
    """Every tensor in ``x``, nested in tuples and lists too, in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in tensors(item)]
    return []


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], x: Any) -> Any:
    """``x`` with ``fn`` applied to every tensor, nested in tuples and lists too."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(map_tensors(fn, item) for item in x)
    return x


def leaves(x: Any) -> Any:
    """``x`` with every tensor (nested in tuples and lists too) replaced by a fresh copy, one that
    requires grad where it is floating-point."""
    return map_tensors(lambda t: t.detach().clone().requires_grad_(t.is_floating_point()), x)


def trains_like(mine: Callable, reference: Callable, *args: Any, rtol: float = 1e-4, atol: float = 1e-5) -> int:
    """Assert that one backward pass through ``mine`` gives ``reference``'s gradients, for every
    floating-point tensor in ``args`` and, where both are modules, every parameter of the
    reference (by name); return how many gradients were compared.

    Each gets fresh copies of ``args``. The loss weighs every value of every returned tensor by a
    fixed random number, so each value's gradient counts. A gradient is compared on its own scale
    (divided by its largest value when above 1): a weight's gradient sums over every position, so
    its rounding error grows with it. The pass runs in float64 (the modules go back to their dtype
    after): in float32 a ReLU whose input sits within a rounding error of zero lets the gradient
    through in one right answer and blocks it in another written in another order."""
    modules = (mine, reference) if isinstance(mine, nn.Module) and isinstance(reference, nn.Module) else ()
    dtypes = [next(m.parameters(), torch.empty(0)).dtype for m in modules]
    wide = map_tensors(lambda t: t.double() if t.is_floating_point() else t, args)
    try:
        for module in modules:
            module.double().zero_grad(set_to_none=True)
        return _compare_gradients(mine, reference, modules, wide, rtol, atol)
    finally:
        for module, dtype in zip(modules, dtypes):
            module.to(dtype)


def _compare_gradients(mine: Callable, reference: Callable, modules: tuple, args: tuple, rtol: float,
                       atol: float) -> int:
    mine_args, their_args = leaves(args), leaves(args)
    got, want = tensors(mine(*mine_args)), tensors(reference(*their_args))
    assert len(got) == len(want), f"forward returns {len(got)} tensors, the reference {len(want)}"
    g = torch.Generator().manual_seed(0)
    for i, (a, b) in enumerate(zip(got, want)):
        if b.requires_grad:
            assert a.requires_grad, (f"returned tensor {i} carries no gradient: .detach(), .data or torch.no_grad() "
                                     "in forward cuts it from autograd, so nothing before it could train")
    weights = [torch.randn(b.shape, generator=g, dtype=b.dtype) for b in want]
    for outs in (got, want):
        losses = [(t * w).sum() for t, w in zip(outs, weights) if t.requires_grad]
        if losses:
            sum(losses).backward()
    pairs = [(f"input {i}", a, b) for i, (a, b) in enumerate(zip(tensors(mine_args), tensors(their_args)))]
    if modules:
        params = dict(mine.named_parameters())
        pairs += [(name, params.get(name), p) for name, p in reference.named_parameters()]
    pairs = [(name, a, b) for name, a, b in pairs if b.grad is not None]
    for name, a, b in pairs:  # a path cut from the graph first: it names the layer behind it
        assert a is not None and a.grad is not None, f"no gradient reaches {name}"
    for name, a, b in pairs:
        scale = b.grad.abs().max().clamp(min=1)
        torch.testing.assert_close(a.grad / scale, b.grad / scale, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"the gradient of {name} differs: {m}")
    return len(pairs)


# torch's errors where tensors of two devices meet ("Expected all tensors to be on the same device",
# "Tensor on device cpu is not on the expected device meta!") or a meta tensor's values are copied
# to the CPU (.cpu(), .tolist(), a CPU tensor filled from it: "Cannot copy out of meta tensor")
_DEVICES_MIXED = re.compile(r"\bdevices?\b|copy out of meta tensor")


def keeps_device(mine: Callable, reference: Callable, *args: Any) -> bool:
    """Assert that ``mine`` keeps the input's device, without a GPU: copies of both modules moved to
    the meta device (as ``module.to(device)`` moves them: parameters and buffers, nothing else)
    run on meta copies of ``args``, tensors with shapes and no values. A tensor ``mine`` makes on
    the CPU (``torch.zeros(n)`` without ``device=``) meets a meta tensor and torch raises, as it
    would on a GPU; every tensor returned must be on the meta device with the reference's shape.

    Return False, asserting nothing, where ``mine`` raises for another reason (an operation that
    needs values, such as ``.item()``): the promise is untested then, not broken. Meta tensors are
    a stand-in: a few mixes they let pass (a CPU input into a convolution with meta weights) a
    GPU refuses, but the tensor such a step returns sits on the CPU and fails here later."""
    on_meta = lambda m: copy.deepcopy(m).to("meta") if isinstance(m, nn.Module) else m  # noqa: E731
    meta_args = map_tensors(lambda t: t.detach().to("meta"), args)
    with torch.no_grad():
        want = on_meta(reference)(*meta_args)
        try:
            got = on_meta(mine)(*meta_args)
        except Exception as e:
            if _DEVICES_MIXED.search(str(e)):
                raise AssertionError(f"forward mixes devices: {type(e).__name__}: {e}") from e
            return False
    got, want = tensors(got), tensors(want)
    assert len(got) == len(want), f"forward returns {len(got)} tensors, the reference {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.device == b.device and a.shape == b.shape, (
            f"returned tensor {i} is of shape {tuple(a.shape)} on the device {a.device}, the reference's of "
            f"shape {tuple(b.shape)} on {b.device}")
    return True

"""A shape tracer: run a model once and list every module call with its input and output shapes.

Forward hooks see each submodule's arguments and results as the model runs, so the table shows
what really flows through the network (including the ``(H, W)`` grid that travels beside the
tokens), not what the code is believed to do.
"""
from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ShapeTrace", "TraceRow", "trace_shapes", "describe_shapes"]


def _shapes(obj: Any) -> Any:
    """Replace every tensor in ``obj`` by its shape tuple; keep ints and int pairs such as
    ``(H, W)``; drop everything else (``None``, flags, strings) as ``None``."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, bool) or obj is None:
        return None
    if isinstance(obj, int):
        return obj
    if isinstance(obj, (tuple, list)):
        items = [_shapes(o) for o in obj]
        return [i for i in items if i is not None] if isinstance(obj, list) else \
            tuple(i for i in items if i is not None)
    if isinstance(obj, dict):
        items = {k: _shapes(v) for k, v in obj.items()}
        return {k: v for k, v in items.items() if v is not None}
    return None


def describe_shapes(shapes: Any, top: bool = True) -> str:
    """Readable text for the structure :func:`_shapes` returns.

    A tuple of several values at the top level (a module's arguments, or an output such as
    ``(tokens, (H, W))``) is written as a comma-separated list: ``(1, 3136, 32), (56, 56)``.
    Lists are written in brackets, one shape per item.
    """
    if shapes is None:  # no output recorded (the call raised) or nothing shape-like
        return ""
    if isinstance(shapes, int):
        return str(shapes)
    if isinstance(shapes, dict):
        return ", ".join(f"{k}={describe_shapes(v, top=False)}" for k, v in shapes.items())
    if isinstance(shapes, list):
        return "[" + ", ".join(describe_shapes(s, top=False) for s in shapes) + "]"
    if all(isinstance(s, int) for s in shapes):  # a tensor shape or an (H, W) pair
        return "(" + ", ".join(map(str, shapes)) + ("," if len(shapes) == 1 else "") + ")"
    inner = ", ".join(describe_shapes(s, top=False) for s in shapes)
    return inner if top else f"({inner})"


@dataclass(frozen=True)
class TraceRow:
    """One module call: where it sits, what it is, and the shapes that went in and came out."""

    name: str  # qualified name as in model.named_modules(); "" for the model itself
    type: str  # class name
    depth: int  # call nesting: 0 for the model, 1 for what it calls, 2 for what those call, ...
    input_shapes: Any  # tuple of the positional arguments' shapes (then a dict of keyword ones)
    output_shapes: Any

    @property
    def input(self) -> str:
        return describe_shapes(self.input_shapes)

    @property
    def output(self) -> str:
        return describe_shapes(self.output_shapes)


_HEADER = ("module", "type", "input", "output")


class ShapeTrace:
    """The result of :func:`trace_shapes`: ``rows`` in call order and the model's ``output``."""

    def __init__(self, rows: list[TraceRow], output: Any):
        self.rows = rows
        self.output = output

    def _cells(self) -> list[tuple[str, str, str, str]]:
        return [("  " * r.depth + (r.name or "(model)"), r.type, r.input, r.output) for r in self.rows]

    def __str__(self) -> str:
        cells = [_HEADER] + self._cells()
        widths = [max(len(row[i]) for row in cells) for i in range(3)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + " | " + row[3]
                 for row in cells]
        lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * len(_HEADER[3]))
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__  # a notebook cell ending in a trace shows the table

    def _repr_html_(self) -> str:
        cell = "<td style='text-align:left'>{}</td>"
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in _HEADER)
        body = "".join(
            f"<tr><td style='text-align:left; padding-left:{0.5 + 1.5 * r.depth}em'>"
            f"{html.escape(r.name or '(model)')}</td>"
            + "".join(cell.format(html.escape(c)) for c in (r.type, r.input, r.output)) + "</tr>"
            for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


def trace_shapes(model: nn.Module, *args, depth: int | None = None, **kwargs) -> ShapeTrace:
    """Run ``model(*args, **kwargs)`` once under ``torch.no_grad()`` and record, for every
    module call, its name, class, input shapes and output shapes, in call order (a module is
    listed before the modules it calls).

    ``depth`` limits how deeply nested a call may be to be listed (0: the model alone,
    1: also the modules it calls, ...; ``None``: everything). Containers that are never
    called themselves (``nn.ModuleList``) add no level. The hooks are removed afterwards, also
    when the forward pass raises.

    Example::

        trace = trace_shapes(encoder, images, depth=2)
        print(trace)    # aligned table: module | type | input | output
        trace.output    # what encoder(images) returned
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module to trace, got {type(model).__name__}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be None or an int >= 0, got {depth!r}")
    rows: list[TraceRow] = []
    running: list[int | None] = []  # the calls now in progress, outermost first: row index or None

    def before(name):
        def hook(module, args, kwargs):
            level = len(running)  # nesting of calls: a ModuleList, never called, adds no level
            if depth is not None and level > depth:
                running.append(None)
                return
            shapes = _shapes(args)
            if kwargs and _shapes(kwargs):
                shapes = shapes + (_shapes(kwargs),)
            running.append(len(rows))
            rows.append(TraceRow(name, type(module).__name__, level, shapes, None))
        return hook

    def after(module, args, output):
        i = running.pop()
        if i is not None:
            rows[i] = dataclasses.replace(rows[i], output_shapes=_shapes(output))

    handles = []
    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(before(name), with_kwargs=True))
            handles.append(module.register_forward_hook(after))
        with torch.no_grad():
            output = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return ShapeTrace(rows, output)

"""The checkers' harness: build the learner's module beside the reference, call it, compare the
outputs and, when they differ, name the planted variant that reproduces the learner's output."""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch import nn

from .mistakes import ALIASES, MISTAKES

ATOL, RTOL = 1e-5, 1e-4

Variants = dict[str, Callable[[], Any]]  # mistake id (or alias) -> its planted variant's output


class Unfinished(Exception):
    """The learner's code raised NotImplementedError."""


class Report(AssertionError):
    pass


def fail(title: str, what: str, mistakes: list[str] = (), extra: str = "") -> Report:
    lines = [f"{title}: {what}"]
    if mistakes:
        for m_id in dict.fromkeys(mistakes):
            m = MISTAKES[m_id]
            lines += [f"Likely mistake: {m.title}.", f"  How to fix: {m.fix}."]
    elif extra:
        lines.append(extra)
    else:
        lines.append("No catalogued mistake reproduces your output. Print the shape of every "
                     "intermediate tensor and compare with the notebook's shape trace.")
    return Report("\n".join(lines))


def run_check(title: str, body: Callable[[], str]) -> None:
    """Run one checker body; translate NotImplementedError into the "not implemented" note."""
    try:  # fork_rng: checking must not move the notebook's random stream
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            summary = body()
    except Unfinished:
        print(f"{title}: not implemented yet (forward raises NotImplementedError). "
              "Write it, then re-run this cell.", file=sys.stderr)
        return
    print(f"✓ {title}: {summary}")


def call(fn: Callable, *args, title: str, where: str, on_error: list[str] = ()):
    """Call the learner's code; NotImplementedError means unfinished, any other error fails."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise Unfinished from None
    except Exception as e:  # the learner's bug, reported with a hint instead of a traceback
        raise fail(title, f"raised {type(e).__name__} {where}: {e}", on_error) from e


def close(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=ATOL, rtol=RTOL)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


def matching(got: Any, variants: Variants) -> list[str]:
    """The ids of the catalogued mistakes whose planted variant's output equals ``got``."""
    found = []
    for m_id, make in variants.items():
        try:
            out = make()
        except Exception:  # a variant that cannot run on this input (e.g. sqrt(N) not whole)
            continue
        if close(got, out):
            found.append(ALIASES.get(m_id, m_id))
    return found


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return type(x).__name__ + " of " + ", ".join(describe(v) for v in x)
    return repr(x)


def diff(got: Any, expected: torch.Tensor) -> str:
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        return f"max |difference| {(got.float() - expected.float()).abs().max().item():.2e}"
    return f"expected a {describe(expected)}, got a {describe(got)}"


def build(Student: type, Reference: type, args: tuple, kwargs: dict, title: str,
          structural: Callable[[nn.Module], list[str]] | None = None):
    """Build both modules with the same arguments and give the learner the reference's weights."""
    torch.manual_seed(0)
    ref = Reference(*args, **kwargs)
    randomize(ref)
    try:
        student = Student(*args, **kwargs)
    except NotImplementedError:
        raise Unfinished from None
    except Exception as e:
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise fail(title, f"building {Student.__name__}({shown}) raised {type(e).__name__}: {e}",
                   extra=f"Keep the skeleton's constructor: it takes the same arguments as "
                         f"segformer_lite.{Reference.__name__}.") from e
    if not isinstance(student, nn.Module):
        raise fail(title, f"{Student.__name__} is not a torch.nn.Module",
                   extra="Subclass nn.Module and call super().__init__() first.")
    mistakes = structural(student) if structural else []
    if mistakes:
        raise fail(title, "the layers built in __init__ differ from the reference", mistakes)
    try:
        student.load_state_dict(ref.state_dict())
    except RuntimeError as e:
        raise fail(title, f"its parameters do not match segformer_lite.{Reference.__name__}'s:\n{e}",
                   extra="Keep the skeleton's layer names and shapes in __init__ "
                         "(only forward is yours to write).") from e
    return student.eval(), ref.eval()


@torch.no_grad()
def randomize(module: nn.Module) -> None:
    """Random LayerNorm affine parameters and biases, so that no mistake hides behind an
    identity scale or a zero bias."""
    g = torch.Generator().manual_seed(1)
    for name, p in module.named_parameters():
        if name.endswith("bias") or "norm" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "norm" in name and
                                                                name.endswith("weight") else 0.0))


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def compare(title: str, got: Any, expected: Any, where: str, variants: Variants,
            square_passed: bool, square: bool) -> None:
    if close(got, expected):
        return
    found = matching(got, variants)
    if not found and square_passed and not square:
        found = ["sqrt_hw"]  # right on square grids, wrong on this one: the grid was guessed
    what = f"wrong output {where} ({diff(got, expected)})"
    raise fail(title, what, found)


def compare_on_grids(title: str, student: Callable, reference: Callable, grids: list[tuple[int, int]],
                     case: Callable[[int, tuple[int, int]], tuple[tuple, str, Variants]], *,
                     sqrt_hw_on_error: bool = True, accept: Callable[[Any, Any, str], Any] | None = None,
                     then: Callable[[tuple, str], None] | None = None) -> int:
    """Compare ``student(*args)`` with ``reference(*args)`` on one input per grid (H, W), square and
    non-square, and return how many inputs were compared.

    ``case(seed, hw)`` makes the arguments, the "where" of the messages and the planted variants;
    ``accept(got, expected, where)`` vets the form of the learner's output before the comparison
    (returning it, normalised), ``then(args, where)`` checks more once the output matches. With
    ``sqrt_hw_on_error``, an error on a non-square grid names the guessed grid (``sqrt_hw``).
    """
    square_passed = False
    for seed, hw in enumerate(grids):
        square = hw[0] == hw[1]
        args, where, variants = case(seed, hw)
        got = call(student, *args, title=title, where=where,
                   on_error=["sqrt_hw"] if sqrt_hw_on_error and not square else [])
        expected = reference(*args)
        if accept:
            got = accept(got, expected, where)
        compare(title, got, expected, where, variants, square_passed, square)
        if then:
            then(args, where)
        square_passed |= square
    return len(grids)


def as_hw(hw: Any, title: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError):
        raise fail(title, f"the grid must be a pair of ints (H, W), got {hw!r}",
                   extra="Read it from the feature map: h, w = x.shape[-2:].") from None
    return h, w


def tokens_and_hw(got: Any, title: str, must: str, extra: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """The learner's ``(tokens, (H, W))``, or a failure saying what ``must`` be returned."""
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise fail(title, f"{must} return (tokens, (H, W)), got a {describe(got)}", extra=extra)
    return got[0], as_hw(got[1], title)

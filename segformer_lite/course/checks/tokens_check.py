"""The checkers of the tokens helpers (notebook 02): ``check_image_to_tokens``,
``check_tokens_to_image`` and ``check_tokens``, which runs both and then the round trip.

Both helpers only move numbers, so their outputs are compared exactly, on square and non-square
grids and one row of pixels, in float32, float64 and int64 (the input's dtype comes back); a grid that
does not fit the tokens must raise ``ValueError`` with a message that gives the sizes (the token
count N, and H and W or H*W). The learner's functions run with segformer_lite's finished
``image_to_tokens`` and ``tokens_to_image`` watched: handing them in, or calling them, is refused
(the exercise would be passed by the package's code). Beside the shared catalogue, this
exercise's own mistakes (a channels-last image, an image with H and W swapped by a transpose,
channels-first tokens, the tokens' sizes read as (B, C, N)) are named here, and the reports speak
of this exercise's two functions (no shape trace, no heads, no forward; a column-major
``tokens_to_image`` gets its own fix). The grids here (:data:`_GRIDS`) are the other checkers' too.
"""
from __future__ import annotations

import functools
import re
import sys
from typing import Any, Callable

import torch

from ...tokens import image_to_tokens, tokens_to_image
from . import localise, variants
from .harness import Unfinished, call, close, compare, fail, matching, randn, run_check, vet
from .mistakes import MISTAKES, WHY
from .passes import compare_on_grids
from .report import Report
from .tokens_words import (_FOR_A_FUNCTION, _ORDER, _SHAPE_ADVICE, _SQUARE_HW, _SQUARE_TOKENS,
                           _TO_IMAGE, _hint)

# first a grid whose sides differ from each other and from every width checked (so a wrong axis
# cannot hide), then a square one, then a non-square one with a square N (sqrt(N) runs, wrongly)
_GRIDS = [(6, 10), (8, 8), (4, 16)]

_TOKEN_GRIDS = _GRIDS + [(1, 9)]  # and one row of pixels
_DTYPES = (torch.float64, torch.int64)  # the tokens helpers' contract: the input's dtype comes back
_TOKENS_AND_GRID = ("the tokens", "the grid (H, W)")
_WRONG_GRIDS = [(8, 8), (6, 5)]  # for 60 tokens: 64 cells; 30 cells, which reshape(B, -1, 6, 5) fills

# --- the form of a result, in this exercise's words ------------------------------------------------

# the hints of harness.vet, in this exercise's words
_FORM_HINTS = {"dtype": "Where does {got} creep in? Moving numbers never needs a cast: no .float(), .double(), "
                        ".half() or .to(dtype), no torch.tensor(...) or numpy array mixed in.",
               "device": "No .to(), .cpu() or .cuda() of your own."}


def _tensor(title: str, got: Any, expected: torch.Tensor, where: str, name: str, verb: str) -> None:
    """One returned tensor: a tensor, with the input's dtype and device (``name`` and ``verb``:
    "the tokens", "are")."""
    vet(title, got, expected, where, name, verb=verb, kept=True,
        hints={**_FORM_HINTS, "tensor": f"Return {name} as one torch.Tensor."})


def _values(title: str, got: torch.Tensor, expected: torch.Tensor, where: str, name: str, verb: str) -> None:
    """Values off by a rounding error: something computed where numbers only move."""
    if got.shape == expected.shape and not torch.equal(got, expected) and close(got, expected):
        biggest = (got.double() - expected.double()).abs().max().item()
        raise fail(title, f"{name} {verb} off by up to {biggest:.1e} {where}: close, but a reshape moves numbers "
                   "and never changes one, so every value must come back exactly",
                   extra="Something in your function computes (a multiplication or division, a matmul, a cast "
                         "and back): only move the numbers.")


# each result's contract, and the other layouts of its axes that are this exercise's mistakes: (the
# contract, [(the permutation that gives the mistake's layout, that layout, what it holds, the mistake)])
_LAYOUTS = {"the tokens": ("(B, H·W, C)", [((0, 2, 1), "(B, C, N)", "the pixels' numbers, channels first",
                                            "tokens_channels_first")]),
            "the image": ("(B, C, H, W)", [((0, 2, 3, 1), "(B, H, W, C)", "the right picture, channels last",
                                            "image_channels_last"),
                                           ((0, 1, 3, 2), "(B, C, W, H)", "the right picture, transposed",
                                            "image_hw_transposed")])}


def _shape(title: str, got: torch.Tensor, want: torch.Tensor, where: str, name: str) -> None:
    """A shape unlike the contract's: this exercise's mistake when it is the contract's axes in
    another layout, else the shape advice."""
    contract, layouts = _LAYOUTS[name]
    have = f"{name} {'have' if name.endswith('s') else 'has'} shape {tuple(got.shape)} {where}"
    for dims, layout, holds, m_id in layouts:
        moved = want.permute(*dims)
        if got.shape == moved.shape:
            same = f" ({holds})" if torch.equal(got, moved) else ""
            raise fail(title, f"{have}: {layout}{same}, where the contract is {contract} = {tuple(want.shape)}",
                       extra=_hint(m_id))
    raise fail(title, f"{have}; the contract is {contract} = {tuple(want.shape)}", extra=_SHAPE_ADVICE)


def _a(kind: str) -> str:
    """'a float', 'an int'."""
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _judge_tokens(title: str, got: Any, expected: tuple, where: str, planted: dict) -> Any:
    """image_to_tokens's result before :func:`harness.compare`: its form, then the shapes that name
    a mistake of this exercise; what is left (a catalogued mistake, wrong values) goes on."""
    if isinstance(got, tuple) and len(got) != 2:
        raise fail(title, f"the result has {len(got)} items {where}; the contract is 2: the tokens and the "
                   "grid (H, W)", extra="Return exactly the pair (tokens, (H, W)).")
    if isinstance(got, tuple):
        _tensor(title, got[0], expected[0], where, "the tokens", "are")
        if not isinstance(got[1], tuple):
            raise fail(title, f"the grid is a {type(got[1]).__name__} {where}; the contract is a tuple of two Python "
                       "ints (H, W)", extra="A torch.Size (a tensor's .shape, or a slice of it) is such a tuple; a "
                                          "list or a tensor is not.")
        if len(got[1]) != 2:
            raise fail(title, f"the grid has {len(got[1])} items {where}; the contract is 2: (H, W)",
                       extra="The grid is the pair (H, W), the map's height and width, in that order.")
        kinds = [type(side).__name__ for side in got[1]]
        if kinds != ["int", "int"]:
            what = f"two {kinds[0]}s" if kinds[0] == kinds[1] else f"{_a(kinds[0])} and {_a(kinds[1])}"
            raise fail(title, f"the grid is {got[1]!r} {where}: H and W are {what}, where the contract is two "
                       "Python ints", extra="Read H and W from the image's shape, h, w = x.shape[-2:]: a shape "
                                            "holds Python ints (no tensor, no division).")
    vet(title, got, expected, where, "the result", _TOKENS_AND_GRID)
    if got[0].shape != expected[0].shape and not matching(got, planted):
        _shape(title, got[0], expected[0], where, "the tokens")
    _values(title, got[0], expected[0], where, "the tokens", "are")
    return got


def _judge_image(title: str, got: Any, expected: torch.Tensor, where: str, planted: dict) -> Any:
    """tokens_to_image's result before :func:`harness.compare` (as :func:`_judge_tokens`)."""
    _tensor(title, got, expected, where, "the image", "is")
    if got.shape != expected.shape and not matching(got, planted):
        _shape(title, got, expected, where, "the image")
    _values(title, got, expected, where, "the image", "is")
    return got


def _reworded(report: Report, title: str) -> Report:
    """A report of the shared harness in this exercise's words: no step-by-step line (a function
    has no steps; the first line says what differs, the learner's frames where it raised), the
    axis-order advice and the shape advice for two reshapes, a function's words where the harness
    speaks of forward and modules, tokens_to_image's own why and fix (:data:`_TO_IMAGE`), the
    arguments and the tuple's items by name."""
    lines = str(report).splitlines()
    named = any(line.startswith("Likely mistake:") for line in lines)
    own = {}
    if title == "tokens_to_image":
        for m_id, (why, fix) in _TO_IMAGE.items():
            own[f"  Why it is one: {WHY[m_id]}."] = f"  Why it is one: {why}."
            own[f"  How to fix: {MISTAKES[m_id].fix}."] = f"  How to fix: {fix}."
    kept = []
    for line in lines:
        if line.startswith("Step by step beside the reference"):
            if "the same numbers in another order" in line and not named:
                kept.append(_ORDER)
            continue
        line = own.get(line, _SHAPE_ADVICE if line == localise.SHAPE_ADVICE else line)
        kept.append(next((said for start, said in _FOR_A_FUNCTION.items() if line.startswith(start)), line))
    argument = {"image_to_tokens": "x", "tokens_to_image": "the tokens"}.get(title)
    if argument:  # the backward pass names its inputs by the learner's parameter names
        kept[0] = re.sub(r"(the gradient of|no gradient reaches) (\S+) (differs|for|where)", rf"\1 {argument} \3",
                         kept[0], count=1)
    kept[0] = re.sub(r"([(;] )?\[(0|1)\]: ", lambda m: (m.group(1) or "") + ("the tokens: ", "the grid: ")[int(m.group(2))],
                     kept[0].replace("([", "( [", 1))
    kept[0] = kept[0].replace("( the", "(the", 1)
    return Report("\n".join(kept))


def _run(title: str, body: Callable[[], str]) -> None:
    try:
        run_check(title, body)
    except Report as report:
        raise _reworded(report, title) from report.__cause__


# --- no shortcut through the package ---------------------------------------------------------------

_FINISHED = {image_to_tokens.__code__: "image_to_tokens", tokens_to_image.__code__: "tokens_to_image"}


def _own(fn: Callable, title: str) -> Callable:
    """``fn``, refused when it is, or calls, segformer_lite's finished ``image_to_tokens`` or
    ``tokens_to_image``: a profile hook records every call of their code while ``fn`` runs, however
    the learner reached them (``sl.image_to_tokens``, an import under another name, a lambda)."""
    @functools.wraps(fn)
    def own(*args, **kwargs):
        called: list[str] = []

        def profile(frame, event, arg):
            if event == "call" and frame.f_code in _FINISHED:
                called.append(_FINISHED[frame.f_code])
        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            out, error = fn(*args, **kwargs), None
        except Exception as e:  # judged below, once the package's calls are known
            out, error = None, e
        finally:
            sys.setprofile(previous)
        if called:
            itself = getattr(fn, "__code__", None) in _FINISHED
            what = f"{title} is segformer_lite.{called[0]} itself" if itself else \
                f"your {title} calls segformer_lite.{called[0]}"
            raise fail(title, f"{what}, the finished function this exercise asks you to write: the check "
                       "would grade the package's code, not yours",
                       extra="Write it yourself, with torch (or einops) operations, from the contract above the "
                             "exercise; segformer_lite's function is what the check compares yours with.")
        if error is not None:
            raise error
        return out
    return own


# --- the checks ------------------------------------------------------------------------------------

def check_image_to_tokens(image_to_tokens_fn: Callable) -> None:
    """Check ``image_to_tokens_fn(x (B, C, H, W)) -> (tokens (B, H*W, C), (H, W))``, a tuple whose
    grid is a tuple of two ints."""
    title = "image_to_tokens"
    mine = _own(image_to_tokens_fn, title)
    planted: dict = {}

    def case(seed, hw):
        x = randn(2, 5, *hw, seed=seed)
        h, w = hw
        planted.clear()
        planted.update({"flatten_no_permute": lambda: (variants.to_tokens(x, "reshape"), (h, w)),
                        "column_major": lambda: (variants.to_tokens(x, "column"), (h, w)),
                        "hw_swapped": lambda: (variants.to_tokens(x), (w, h))})
        return (x,), f"for x of shape {tuple(x.shape)}", dict(planted)

    def judged(got, expected, where):  # where "": the harness's own probes (one image of the batch)
        return _judge_tokens(title, got, expected, where, planted) if where else got

    def body() -> str:
        n = compare_on_grids(title, mine, image_to_tokens, _TOKEN_GRIDS, case, sqrt_hw_on_error=False,
                             accept=judged, exact=True, name="the result", items=_TOKENS_AND_GRID)
        for dtype in _DTYPES:  # the contract: the tokens keep the input's dtype
            x = randn(2, 5, 6, 10, seed=8).mul(4).to(dtype)
            where = f"for x of shape {tuple(x.shape)} and dtype {str(dtype).removeprefix('torch.')}"
            expected = image_to_tokens(x)
            got = _judge_tokens(title, call(mine, x, title=title, where=where), expected, where, {})
            compare(title, got, expected, where, {}, exact=True, name="the result", items=_TOKENS_AND_GRID)
        return (f"matches segformer_lite.image_to_tokens exactly on {n} grids (square, non-square, one row) "
                "and in float32, float64 and int64, gradients and the device kept")

    _run(title, body)


def _gives_the_sizes(message: str, n: int, hw: tuple[int, int]) -> bool:
    """Whether an error message gives the token count N and the grid: H and W, or H*W."""
    said = set(re.findall(r"\d+", message))
    h, w = hw
    return str(n) in said and (str(h * w) in said or {str(h), str(w)} <= said)


def _sizes_read_channels_first(report: Report, mine: Callable) -> Report | None:
    """The report again, naming the sizes read as (B, C, N), when the learner's tokens_to_image
    raised where no catalogued mistake explains it and is right on tokens with as many channels
    as tokens (where B, C, N = tokens.shape reads the right numbers)."""
    cause = report.__cause__
    if cause is None or isinstance(cause, Report) or "Likely mistake:" in str(report):
        return None
    if re.search(r"\(backward pass\)|on the meta device|in float64", str(report).splitlines()[0]):
        return None  # the forward passes were right: the sizes were read right too
    tokens = randn(*_SQUARE_TOKENS, seed=10)
    try:
        got = mine(tokens.clone(), _SQUARE_HW)
    except Exception:  # wrong there too: not (only) the sizes
        return None
    if not (isinstance(got, torch.Tensor) and close(got, tokens_to_image(tokens, _SQUARE_HW), exact=True)):
        return None
    return Report("\n".join([str(report).splitlines()[0], _hint("sizes_channels_first")]))


def check_tokens_to_image(tokens_to_image_fn: Callable) -> None:
    """Check ``tokens_to_image_fn(tokens (B, N, C), (H, W)) -> (B, C, H, W)``, and its ValueError
    (with the sizes in its message) for a grid that does not fit the tokens."""
    title = "tokens_to_image"
    mine = _own(tokens_to_image_fn, title)
    planted: dict = {}

    def case(seed, hw):
        t = randn(2, hw[0] * hw[1], 5, seed=seed)
        planted.clear()
        planted.update({m_id: (lambda how=how: variants.to_image(t, hw, how)) for m_id, how in
                        [("unflatten_no_permute", "reshape"), ("sqrt_hw", "sqrt"),
                         ("hw_swapped", "swap"), ("column_major", "column")]})
        return (t, hw), f"for tokens of shape {tuple(t.shape)} and hw={hw}", dict(planted)

    def judged(got, expected, where):
        return _judge_image(title, got, expected, where, planted) if where else got

    def body() -> str:
        try:
            n = compare_on_grids(title, mine, tokens_to_image, _TOKEN_GRIDS, case, accept=judged, exact=True,
                                 name="the image")
        except Report as report:
            raise _sizes_read_channels_first(report, mine) or report from report.__cause__
        for dtype in _DTYPES:  # the contract: the image keeps the tokens' dtype
            t = randn(2, 60, 5, seed=8).mul(4).to(dtype)
            where = f"for tokens of shape {tuple(t.shape)}, dtype {str(dtype).removeprefix('torch.')}, and hw=(6, 10)"
            expected = tokens_to_image(t, (6, 10))
            got = _judge_image(title, call(mine, t, (6, 10), title=title, where=where), expected, where, {})
            compare(title, got, expected, where, {}, exact=True, name="the image")
        t = randn(2, 60, 5, seed=9)
        for hw in _WRONG_GRIDS:
            where = f"for tokens of shape {tuple(t.shape)} and hw={hw}"
            try:
                mine(t, hw)
            except ValueError as e:
                if _gives_the_sizes(str(e), t.shape[1], hw):
                    continue
                raise fail(title, f"raised ValueError({str(e)!r}) {where}: right, but the contract asks for a "
                           f"message that gives the sizes, the token count N = {t.shape[1]} and the grid "
                           f"{hw[0]}x{hw[1]} ({hw[0] * hw[1]} cells)",
                           extra="Put the numbers in the message (an f-string): N, and H and W (or H·W), so that "
                                 "whoever passes the wrong grid reads what came and what was expected.") from None
            except NotImplementedError:
                raise Unfinished from None
            except Report:  # a refused shortcut
                raise
            except Exception as e:
                raise fail(title, f"raised {type(e).__name__}, not ValueError, {where}: {e}",
                           ["grid_not_checked"]) from e
            raise fail(title, f"accepted a grid that does not fit the tokens {where}", ["grid_not_checked"])
        return (f"matches segformer_lite.tokens_to_image exactly on {n} grids (square, non-square, "
                "one row) and in float32, float64 and int64, gradients and the device kept, and refuses grids that do not fit "
                "with a ValueError that gives the sizes")

    _run(title, body)


def check_tokens(image_to_tokens_fn: Callable, tokens_to_image_fn: Callable) -> None:
    """Check both helpers, then that they undo each other on a non-square image."""
    check_image_to_tokens(image_to_tokens_fn)
    check_tokens_to_image(tokens_to_image_fn)
    title = "image <-> tokens round trip"
    to_tokens, to_image = _own(image_to_tokens_fn, "image_to_tokens"), _own(tokens_to_image_fn, "tokens_to_image")

    def body() -> str:
        x = randn(2, 5, 6, 10, seed=7)
        tokens, hw = call(to_tokens, x, title=title, where="on a 6x10 image")
        back = call(to_image, tokens, hw, title=title, where="on a 6x10 image")
        vet(title, back, x, "on a 6x10 image", "tokens_to_image(*image_to_tokens(x))")
        if not close(back, x, exact=True):
            raise fail(title, "tokens_to_image(*image_to_tokens(x)) does not give x back",
                       extra="The two reshapes must be exact inverses (same token order).")
        return "tokens_to_image(*image_to_tokens(x)) == x on a 6x10 image"

    _run(title, body)

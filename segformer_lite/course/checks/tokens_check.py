"""The checkers of the tokens helpers (notebook 02): ``check_image_to_tokens``,
``check_tokens_to_image`` and ``check_tokens``, which runs both and then the round trip.

Both helpers only move numbers, so their outputs are compared exactly, on square and non-square
grids and one row of pixels, in float64 and int64 (the input's dtype comes back); a grid that
does not fit the tokens must raise ``ValueError``. The grids here (:data:`_GRIDS`) are the other
checkers' too.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...tokens import image_to_tokens, tokens_to_image
from . import variants
from .harness import Unfinished, call, close, compare, fail, randn, run_check, vet
from .passes import compare_on_grids

# first a grid whose sides differ from each other and from every width checked (so a wrong axis
# cannot hide), then a square one, then a non-square one with a square N (sqrt(N) runs, wrongly)
_GRIDS = [(6, 10), (8, 8), (4, 16)]

_TOKEN_GRIDS = _GRIDS + [(1, 9)]  # and one row of pixels
_DTYPES = (torch.float64, torch.int64)  # the tokens helpers' contract: the input's dtype comes back
_TOKENS_AND_GRID = ("the tokens", "the grid (H, W)")


def check_image_to_tokens(image_to_tokens_fn: Callable) -> None:
    """Check ``image_to_tokens_fn(x (B, C, H, W)) -> (tokens (B, H*W, C), (H, W))``, a tuple whose
    grid is a tuple of two ints."""
    title = "image_to_tokens"

    def case(seed, hw):
        x = randn(2, 5, *hw, seed=seed)
        h, w = hw
        planted = {"flatten_no_permute": lambda: (variants.to_tokens(x, "reshape"), (h, w)),
                   "column_major": lambda: (variants.to_tokens(x, "column"), (h, w)),
                   "hw_swapped": lambda: (variants.to_tokens(x), (w, h))}
        return (x,), f"for x of shape {tuple(x.shape)}", planted

    def body() -> str:
        n = compare_on_grids(title, image_to_tokens_fn, image_to_tokens, _TOKEN_GRIDS, case,
                             sqrt_hw_on_error=False, exact=True, name="the result", items=_TOKENS_AND_GRID)
        for dtype in _DTYPES:  # the contract: the tokens keep the input's dtype
            x = randn(2, 5, 6, 10, seed=8).mul(4).to(dtype)
            where = f"for x of shape {tuple(x.shape)} and dtype {str(dtype).removeprefix('torch.')}"
            compare(title, call(image_to_tokens_fn, x, title=title, where=where), image_to_tokens(x), where, {},
                    exact=True, name="the result", items=_TOKENS_AND_GRID)
        return (f"matches segformer_lite.image_to_tokens exactly on {n} grids (square, non-square, one row) "
                "and in float64 and int64, gradients included")

    run_check(title, body)


def check_tokens_to_image(tokens_to_image_fn: Callable) -> None:
    """Check ``tokens_to_image_fn(tokens (B, N, C), (H, W)) -> (B, C, H, W)``."""
    title = "tokens_to_image"

    def case(seed, hw):
        t = randn(2, hw[0] * hw[1], 5, seed=seed)
        planted = {m_id: (lambda how=how: variants.to_image(t, hw, how)) for m_id, how in
                   [("unflatten_no_permute", "reshape"), ("sqrt_hw", "sqrt"),
                    ("hw_swapped", "swap"), ("column_major", "column")]}
        return (t, hw), f"for tokens of shape {tuple(t.shape)} and hw={hw}", planted

    def body() -> str:
        n = compare_on_grids(title, tokens_to_image_fn, tokens_to_image, _TOKEN_GRIDS, case, exact=True)
        for dtype in _DTYPES:  # the contract: the image keeps the tokens' dtype
            t = randn(2, 60, 5, seed=8).mul(4).to(dtype)
            where = f"for tokens of shape {tuple(t.shape)}, dtype {str(dtype).removeprefix('torch.')}, and hw=(6, 10)"
            compare(title, call(tokens_to_image_fn, t, (6, 10), title=title, where=where),
                    tokens_to_image(t, (6, 10)), where, {}, exact=True)
        t = randn(2, 60, 5, seed=9)
        for hw in [(8, 8), (6, 5)]:  # 64 cells for 60 tokens; 30 cells, which reshape(B, -1, 6, 5) fills
            where = f"for tokens of shape {tuple(t.shape)} and hw={hw}"
            try:
                tokens_to_image_fn(t, hw)
            except ValueError:
                continue
            except NotImplementedError:
                raise Unfinished from None
            except Exception as e:
                raise fail(title, f"raised {type(e).__name__}, not ValueError, {where}: {e}",
                           ["grid_not_checked"]) from e
            raise fail(title, f"accepted a grid that does not fit the tokens {where}", ["grid_not_checked"])
        return (f"matches segformer_lite.tokens_to_image exactly on {n} grids (square, non-square, "
                "one row) and in float64 and int64, gradients included, and refuses grids that do not fit "
                "with ValueError")

    run_check(title, body)


def check_tokens(image_to_tokens_fn: Callable, tokens_to_image_fn: Callable) -> None:
    """Check both helpers, then that they undo each other on a non-square image."""
    check_image_to_tokens(image_to_tokens_fn)
    check_tokens_to_image(tokens_to_image_fn)
    title = "image <-> tokens round trip"

    def body() -> str:
        x = randn(2, 5, 6, 10, seed=7)
        tokens, hw = call(image_to_tokens_fn, x, title=title, where="on a 6x10 image")
        back = call(tokens_to_image_fn, tokens, hw, title=title, where="on a 6x10 image")
        vet(title, back, x, "on a 6x10 image", "tokens_to_image(*image_to_tokens(x))")
        if not close(back, x, exact=True):
            raise fail(title, "tokens_to_image(*image_to_tokens(x)) does not give x back",
                       extra="The two reshapes must be exact inverses (same token order).")
        return "tokens_to_image(*image_to_tokens(x)) == x on a 6x10 image"

    run_check(title, body)

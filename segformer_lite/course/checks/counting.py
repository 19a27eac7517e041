"""The checker of notebook 00's exercise: count the tokens, keys and scores of one stage-1
attention layer for an image, without building anything.

``count_attention(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4)`` takes an
image's size in pixels and returns ``(N, M, scores)``: the patch grid's tokens (the padded
patch-embedding conv), the keys and values left by sequence reduction, and the entries of the
score matrices of all heads (batch 1). The reference below is the package's grid arithmetic; the
catalogued mistakes are planted as independent re-counts, and every combination of them is tried,
so a learner who makes two of them hears about both. The hints teach before they tell, as the
layer exercises' do: the first report that names a mistake says why it is one (``COUNTING_WHY``),
the fix comes when the same mistake is named again.
"""
from __future__ import annotations

import itertools
import numbers
from typing import Callable

import torch

from ...grid import conv_output_size, reduced_grid
from .harness import Unfinished, fail, run_check
from .mistakes import Mistake
from .report import hint_lines

# (image height, width, sr_ratio, num_heads, patch_size, stride): square and non-square, sides
# that the stride or sr does not divide (75x203), several heads, and a stage-2 conv (k3 s2).
# Chosen so that every catalogued mistake changes at least one count (round() on the key grid only
# 300x451's: its 75x113 grid leaves 3 rows past the last whole window of 4). sr_ratio never exceeds a side
# of the patch grid: such a layer cannot run (the package raises ValueError), and notebook 00's
# contract says it is not asked. Notebook 00's hidden tests grade these same cases against a real
# Conv2d and a real attention layer.
CASES = [(512, 512, 8, 1, 7, 4), (224, 224, 8, 1, 7, 4), (75, 203, 8, 1, 7, 4),
         (300, 451, 4, 2, 7, 4), (61, 37, 2, 5, 7, 4), (64, 96, 2, 2, 3, 2)]

COUNTING_MISTAKES: dict[str, Mistake] = {m_id: Mistake(*text) for m_id, text in {
    "count_no_padding": ("the patch grid is counted without the conv's padding (k7 s4 turns 224 "
                         "pixels into 55 tokens that way, not 56)",
                         "the patch embedding pads by patch_size // 2: "
                         "H' = (H + 2 * (patch_size // 2) - patch_size) // stride + 1"),
    "count_floor_grid": ("the patch grid comes out rounded down, as H // stride gives it; padding counted "
                         "on one side only, (H + patch_size // 2 - patch_size) // stride + 1, gives the "
                         "same numbers for every MiT patch conv (k7 s4, k3 s2)",
                         "the padded conv rounds up: 75 pixels give 19 rows at stride 4, not 18; "
                         "use H' = (H + 2 * (patch_size // 2) - patch_size) // stride + 1, "
                         "both sides' padding counted"),
    "count_conv_no_plus_one": ("the conv's output size is missing its + 1: (H + 2p - k) // s counts the "
                               "steps between windows, not the windows",
                               "H' = (H + 2 * (patch_size // 2) - patch_size) // stride + 1"),
    "count_pixels": ("the pixels are counted as tokens",
                     "the tokens are the cells of the patch grid: N = H' * W'"),
    "count_keys_from_n": ("the keys are counted as N // sr**2, dividing the token count instead "
                          "of each side",
                          "the reduction conv shrinks each side and drops a partial window at the "
                          "edge: M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_keys_ceil": ("the keys include the partial windows at the edge (rounded up)",
                        "the reduction conv has no padding, so it rounds down: "
                        "M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_keys_no_plus_one": ("the reduction conv's output size is missing its + 1: (H' - sr_ratio) // "
                               "sr_ratio counts the strides between its windows, not the windows (one row "
                               "and one column of keys short)",
                               "with no padding and kernel = stride = sr_ratio, (H' - sr_ratio) // sr_ratio + 1 "
                               "is H' // sr_ratio: M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_keys_padded": ("the key grid comes out one row and one column too large, as a reduction conv "
                          "padded by sr_ratio // 2 gives it; H' // sr_ratio + 1 gives the same numbers for "
                          "every even sr_ratio (the checker's are 2, 4 and 8)",
                          "the reduction conv has no padding, and H' // sr_ratio already counts its windows "
                          "(it is (H' - sr_ratio) // sr_ratio + 1, the + 1 included): "
                          "M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_keys_round": ("the key grid is rounded to the nearest whole number, round(H' / sr_ratio), so "
                         "the partial window at the edge becomes a key when it is about half full or more",
                         "round down, each side on its own: M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_no_reduction": ("the keys are not reduced (M = N, sr_ratio ignored)",
                           "keys and values come from the grid shrunk by sr_ratio in each direction: "
                           "M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_sr_not_squared": ("the sequence is shrunk by sr_ratio instead of sr_ratio**2",
                             "sr_ratio shrinks both sides: M = (H' // sr_ratio) * (W' // sr_ratio), "
                             "about N / sr_ratio**2"),
    "count_keys_reduced_twice": ("the reduction is applied twice: each side is divided by sr_ratio and "
                                 "then by sr_ratio again",
                                 "one reduction conv, one division per side: "
                                 "M = (H' // sr_ratio) * (W' // sr_ratio)"),
    "count_full_scores": ("the scores are counted as N * N, as if there were no reduction",
                          "each of the N queries meets the M reduced keys: num_heads * N * M"),
    "count_no_heads": ("the scores of one head are counted, not of all heads",
                       "every head has its own N x M score matrix: num_heads * N * M"),
    "count_heads_twice": ("the heads are multiplied in twice (num_heads**2 score matrices)",
                          "each head has one N x M score matrix: num_heads * N * M, num_heads once"),
    "count_n_m_swapped": ("N and M are returned in each other's place",
                          "return the tokens first, then the keys: return n, m, scores"),
}.items()}

# why each is a mistake: the first report that names one says this, the fix comes when the same
# mistake is named again (the catalogue of the layer exercises does the same, report.hint_lines)
COUNTING_WHY: dict[str, str] = {
    "count_no_padding": "the patch embedding's conv pads the image before sliding its window, so more "
                        "windows fit along each side than on the bare image",
    "count_floor_grid": "the conv's output size is floor((n + 2p - k) / s) + 1 with the padding p on both "
                        "sides; for a side the stride does not divide, that is one row more than n // s",
    "count_conv_no_plus_one": "the first window sits at the very start of the padded side and takes no "
                              "stride; the quotient counts only the strides that follow it",
    "count_pixels": "the attention layers never see pixels: they see the tokens of the patch grid, one per "
                    "window of the patch-embedding conv",
    "count_keys_from_n": "the reduction conv works on the 2-D grid, one window of sr_ratio x sr_ratio tokens "
                         "per key, so each side is rounded on its own, not the product",
    "count_keys_ceil": "a window the grid's edge cuts off is not a window the conv can place: without "
                       "padding it leaves no key there",
    "count_keys_no_plus_one": "the reduction conv's first window sits at the very start of the grid and takes "
                              "no stride; the quotient counts only the strides that follow it",
    "count_keys_padded": "the reduction conv has no padding, so each of its windows, sr_ratio rows by "
                         "sr_ratio columns, lies wholly inside the grid; a padded side, or a + 1 added to a "
                         "count of whole windows, gives a key to a window that lies partly or wholly outside it",
    "count_keys_round": "the reduction conv has no padding, so it places a window only where all its "
                        "sr_ratio x sr_ratio tokens lie in the grid: the leftover rows and columns at the "
                        "edge leave no key, however many of them there are",
    "count_no_reduction": "the keys and values come from the reduced grid, not from the N tokens (only "
                          "the queries do)",
    "count_sr_not_squared": "sr_ratio is the reduction of each side of the grid, and the grid has two sides",
    "count_keys_reduced_twice": "one reduction conv with kernel = stride = sr_ratio shrinks each side by "
                                "sr_ratio, once",
    "count_full_scores": "a score pairs one query with one key, and the keys are the reduced ones",
    "count_no_heads": "scores counts the entries of all the heads' score matrices, and each head has its own",
    "count_heads_twice": "there is one score matrix per head, so the number of heads enters the count "
                         "once; N and M do not depend on it",
    "count_n_m_swapped": "the contract's order is (N, M, scores): tokens (the queries), then keys",
}

_TITLE = "count_attention"

# each way to count, the right one first; a planted variant picks one way per row
_GRID = {"right": lambda n, k, s: (n + 2 * (k // 2) - k) // s + 1,
         "count_no_padding": lambda n, k, s: (n - k) // s + 1,
         "count_floor_grid": lambda n, k, s: n // s,
         "count_conv_no_plus_one": lambda n, k, s: (n + 2 * (k // 2) - k) // s,
         "count_pixels": lambda n, k, s: n}
_KEYS = {"right": lambda h, w, sr: (h // sr) * (w // sr),
         "count_keys_from_n": lambda h, w, sr: (h * w) // (sr * sr),
         "count_keys_ceil": lambda h, w, sr: -(-h // sr) * -(-w // sr),
         "count_sr_not_squared": lambda h, w, sr: (h * w) // sr,
         "count_keys_reduced_twice": lambda h, w, sr: (h // sr // sr) * (w // sr // sr),
         "count_keys_no_plus_one": lambda h, w, sr: ((h - sr) // sr) * ((w - sr) // sr),
         # padded by sr // 2; for an even sr the same as h // sr + 1 (the entry names both)
         "count_keys_padded": lambda h, w, sr: (((h + 2 * (sr // 2) - sr) // sr + 1)
                                                * ((w + 2 * (sr // 2) - sr) // sr + 1)),
         "count_keys_round": lambda h, w, sr: round(h / sr) * round(w / sr),
         "count_no_reduction": lambda h, w, sr: h * w}
_SCORES = {"right": lambda n, m, heads: heads * n * m,
           "count_full_scores": lambda n, m, heads: heads * n * n,
           "count_no_heads": lambda n, m, heads: n * m,
           "count_heads_twice": lambda n, m, heads: heads * heads * n * m}
_ORDER = {"right": lambda n, m, scores: (n, m, scores),
          "count_n_m_swapped": lambda n, m, scores: (m, n, scores)}
_ROWS = (_GRID, _KEYS, _SCORES, _ORDER)


def planted_count(mistakes: tuple[str, ...] = ()) -> Callable[..., tuple[int, int, int]]:
    """A ``count_attention`` that makes the given catalogued mistakes (none: the right count)."""
    unknown = set(mistakes) - set(COUNTING_MISTAKES)
    if unknown:
        raise ValueError(f"unknown counting mistakes {sorted(unknown)}; known: {sorted(COUNTING_MISTAKES)}")
    grid, keys, scores, order = (next((f for m_id, f in ways.items() if m_id in mistakes), ways["right"])
                                 for ways in _ROWS)

    def count(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
        h, w = grid(height, patch_size, stride), grid(width, patch_size, stride)
        n, m = h * w, keys(h, w, sr_ratio)
        return order(n, m, scores(n, m, num_heads))
    return count


def _reference(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4) -> tuple[int, int, int]:
    h, w = (conv_output_size(v, patch_size, stride, patch_size // 2) for v in (height, width))
    kh, kw = reduced_grid((h, w), sr_ratio)
    return h * w, kh * kw, num_heads * h * w * kh * kw


def _combinations() -> list[tuple[str, ...]]:
    """Every choice of one way per row (grid, keys, scores, order) other than all right, fewest
    mistakes first: where two combinations count alike (no reduction and N * N scores), the simpler wins."""
    rows = [[m for m in ways if m != "right"] + [None] for ways in _ROWS]
    combos = [tuple(m for m in combo if m) for combo in itertools.product(*rows) if any(combo)]
    return sorted(combos, key=len)


def _as_counts(got, where: str) -> tuple[int, int, int]:
    """The learner's counts, or a failure naming the property of the contract (a tuple of three
    Python ints) they miss; the hidden tests assert the same."""
    if not (isinstance(got, tuple) and len(got) == 3):
        raise fail(_TITLE, f"{where} it returned {got!r} ({type(got).__name__}); the contract is a "
                   "tuple of three ints, (N, M, scores)", extra="End with return n, m, scores.")
    for name, v in zip(("N", "M", "scores"), got):
        if type(v) is not int:
            hint = (f"{name} is a whole number, but a {type(v).__name__}, not a Python int (np.prod and "
                    "tensors give those): convert it with int(...) before returning it." if _integer_not_int(v) else
                    "Counts are whole numbers: use // (floor division), not /, and round nothing by hand.")
            raise fail(_TITLE, f"{where} {name} is {v!r} ({type(v).__name__}); the contract is a "
                       "Python int", extra=hint)
    return got


def _integer_not_int(v) -> bool:
    """An integer that is not a Python int: numpy's (np.int64 from np.prod; numpy registers its
    integers as numbers.Integral) or a one-element integer tensor. A bool is no count."""
    if isinstance(v, torch.Tensor):
        return v.numel() == 1 and not (v.is_floating_point() or v.is_complex() or v.dtype == torch.bool)
    if isinstance(v, numbers.Integral):
        return not isinstance(v, bool)
    # a one-element numpy array of integers
    return getattr(getattr(v, "dtype", None), "kind", None) in ("i", "u") and getattr(v, "size", None) == 1


def _hints(found: tuple[str, ...]) -> str:
    """The hint lines for the mistakes ``found``, counted as for the layer exercises
    (report.hint_lines): the first time, what each is and why it is one; then the fix."""
    return "\n".join(line for m_id in found for line in hint_lines(m_id, COUNTING_MISTAKES, COUNTING_WHY))


def check_count_attention(count_fn: Callable) -> None:
    """Check ``count_fn(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4)``, which
    returns ``(N, M, scores)`` for one attention layer on an image of ``height x width`` pixels,
    on every case of ``CASES``."""
    title = _TITLE

    def body() -> str:
        got = []
        for h, w, sr, heads, k, s in CASES:
            where = (f"for a {h}x{w} image, sr_ratio={sr}, num_heads={heads}, patch_size={k}, "
                     f"stride={s},")
            try:
                out = count_fn(h, w, sr, num_heads=heads, patch_size=k, stride=s)
            except NotImplementedError:
                raise Unfinished from None
            except Exception as e:  # the learner's bug, reported with a hint, not a traceback
                raise fail(title, f"{where} it raised {type(e).__name__}: {e}",
                           extra="Keep the signature count_attention(height, width, sr_ratio, "
                                 "num_heads=1, patch_size=7, stride=4).") from e
            got.append((where, _as_counts(out, where)))
        expected = [_reference(*case) for case in CASES]
        if all(g == e for (_, g), e in zip(got, expected)):
            return f"right on {len(CASES)} images (square, non-square, sr_ratio 2 to 8, 1 to 5 heads, k7 s4 and k3 s2)"
        counts = [g for _, g in got]
        found = [combo for combo in _combinations()
                 if [planted_count(combo)(*case) for case in CASES] == counts]
        where, g, e = next((wh, g, e) for (wh, g), e in zip(got, expected) if g != e)
        first = ("N", "M", "scores")[next(i for i in range(3) if g[i] != e[i])]
        raise fail(title, f"wrong counts {where} (N, M, scores) = {g}, expected {e}",
                   extra=_hints(found[0]) if found else
                   f"No catalogued mistake reproduces your counts; {first} is the first that is wrong. "
                   "Compute the patch grid (H', W') first, then the key grid, then the scores, and print each.")

    run_check(title, body)

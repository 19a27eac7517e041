"""Notebook 02's own mistakes, in its own words: what each is, why it is one, and the fix (said
when it comes back), plus the shared harness's lines reworded for the two tokens functions (no
shape trace, no heads, no forward). :mod:`.tokens_check` uses them."""
from __future__ import annotations

from .report import SEEN

_SQUARE_TOKENS, _SQUARE_HW = (2, 6, 6), (2, 3)  # as many channels as tokens: the probe of sizes read as (B, C, N)

# --- this exercise's own mistakes: what, why it is one, and the fix (said when it comes back) -----

_MISTAKES = {
    "image_channels_last": (
        "the tokens were put on the grid channels last, (B, H, W, C), not (B, C, H, W)",
        "tokens (B, N, C) reshaped to (B, H, W, C) give the right picture in another layout, and the "
        "convolutions that read this image (nn.Conv2d) take the channels from axis 1",
        "move the channels to axis 1 as well: tokens.transpose(1, 2).reshape(B, C, H, W), or "
        "rearrange(tokens, 'b (h w) c -> b c h w', h=H, w=W)"),
    "tokens_channels_first": (
        "the tokens are (B, C, N): the grid was flattened, but the channels were not moved last",
        "a token is the C numbers of one pixel, so each row of (B, N, C) holds one pixel; a row of "
        "(B, C, N) holds one channel of every pixel",
        "after flattening the grid, move the channels last: x.flatten(2).transpose(1, 2), or "
        "rearrange(x, 'b c h w -> b (h w) c')"),
    "image_hw_transposed": (
        "H and W are swapped: the axes were moved to (B, C, W, H), not (B, C, H, W)",
        "a transpose swaps exactly the two axes it names: on (B, H, W, C), transpose(1, 3) (or "
        "permute(0, 3, 2, 1)) brings C to axis 1 but sends H to the end, so every row of the picture "
        "becomes a column",
        "move only the channels and keep H before W: x.permute(0, 3, 1, 2) on (B, H, W, C), or straight "
        "from the tokens, tokens.transpose(1, 2).reshape(B, C, H, W) or "
        "rearrange(tokens, 'b (h w) c -> b c h w', h=H, w=W)"),
    "sizes_channels_first": (
        "the tokens' sizes were read as if they were (B, C, N) (B, C, N = tokens.shape), but the tokens "
        f"are (B, N, C): your function gives the right image when C = N (tokens of shape {_SQUARE_TOKENS}, "
        f"hw={_SQUARE_HW}) and fails when they differ",
        "axis 1 of the tokens counts the tokens (N = H·W) and axis 2 the channels; read the other way "
        "round, N is the channel count, so the grid check or the reshape fails on a grid that fits",
        "unpack the sizes in the tokens' order, B, N, C = tokens.shape, and the grid as it came, H, W = hw"),
}

# tokens_to_image's words for a catalogued mistake whose catalogue words speak of image_to_tokens:
# (why, fix); the memory stays the catalogue's (one per mistake), so the fix fits a learner who met
# the mistake in image_to_tokens first and one who meets it here again
_TO_IMAGE = {"column_major": (
    "token n is pixel (n // W, n % W), rows first: image_to_tokens lays them out in that order, so "
    "tokens_to_image must read them back in it",
    "read the tokens back rows first, in the order image_to_tokens wrote them (token n is pixel "
    "(n // W, n % W)): rearrange(tokens, 'b (h w) c -> b c h w', h=H, w=W), or "
    "tokens.transpose(1, 2).reshape(B, C, H, W)")}


def _hint(m_id: str) -> str:
    """Teach before telling, as the shared catalogue's hints do: the first time, the mistake and
    why it is one; from the second time on, the fix."""
    what, why, fix = _MISTAKES[m_id]
    SEEN[m_id] += 1
    if SEEN[m_id] == 1:
        return (f"Likely mistake: {what}.\n  Why it is one: {why}.\n  Put it right yourself and run the "
                "check again; if the same mistake comes back, the check shows the fix.")
    return f"Likely mistake: {what}.\n  How to fix: {fix}."


_SHAPE_ADVICE = ("A shape differs: print the shape after each step of your function, on a small non-square "
                 "input, and compare it with the contract: x (B, C, H, W), tokens (B, H·W, C), the image "
                 "(B, C, H, W).")
# the shared harness's words for a module, said of a function (keyed by the start of the line)
_FOR_A_FUNCTION = {
    "Something in forward cuts it": (
        "Something in your function cuts it from autograd's graph: .detach(), .data, .item() or .numpy() "
        "turned back into a tensor, a new tensor built from the values (torch.tensor(...)), or torch.no_grad() / "
        "torch.inference_mode() inside it. Such a function runs, but no layer before it could train: keep "
        "every step differentiable."),
    "Something in forward changes": (
        "Something in your function changes how the gradient flows without changing the values: a .detach() "
        "on part of a sum, a custom autograd.Function, a value computed twice and mixed. Only move the numbers, "
        "with plain torch (or einops) operations.")}
_ORDER = ("The values are all there, in another order: the tokens are not in row-major order, or channels "
          "and positions are mixed (a reshape where the axes had to move, axes swapped in a transpose or an "
          "einops pattern, H and W swapped).")

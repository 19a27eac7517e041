"""The patch-grid view: its numbers against hand computation and against a real Conv2d, its
drawing on a headless (Agg) canvas, and the slider widget driven from code."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

from segformer_lite.course.widgets.patch_grid import draw_patch_grid, patch_grid, patch_grid_widget


# ---------------------------------------------------------------- hand-computed layouts

def test_vit_patches_tile_224_into_14x14():
    g = patch_grid((224, 224), 16, 16, 0)
    assert g.out_hw == (14, 14) and g.num_patches == 196
    assert (g.overlap, g.gap, g.max_views, g.coverage) == (0, 0, 1, 1.0)
    assert g.unseen_edge == (0, 0) and g.padding_only == 0


def test_segformer_stage1_gives_56x56_with_3px_overlap():
    g = patch_grid((224, 224), 7, 4, 3)
    assert g.out_hw == (56, 56) and g.num_patches == 3136
    # patches start at -3, 1, 5, ...: a 7-wide window shares 3 pixels with the next one, and an
    # interior pixel lies in ceil(7/4) = 2 windows per axis, so in 4 patches
    assert (g.overlap, g.gap, g.max_views) == (3, 0, 4)
    assert g.starts(0)[:3].tolist() == [-3, 1, 5]


def test_non_square_photo_grid():
    # (300 + 6 - 7) // 4 + 1 = 75 and (451 + 6 - 7) // 4 + 1 = 113
    assert patch_grid((300, 451), 7, 4, 3).out_hw == (75, 113)


def test_stride_larger_than_kernel_leaves_gaps():
    g = patch_grid((10, 10), 3, 5, 0)
    # windows cover rows 0-2 and 5-7: 6 of 10 rows, the same for columns -> 36 % of pixels
    assert g.out_hw == (2, 2) and g.gap == 2 and g.overlap == 0
    assert g.coverage == pytest.approx(0.36)
    assert g.unseen_edge == (2, 2)
    assert "gaps of 2 px" in g.message and "64%" in g.message


def test_kernel_one_is_a_pixel_grid():
    g = patch_grid((9, 7), 1, 1, 0)
    assert g.out_hw == (9, 7) and g.max_views == 1 and g.coverage == 1.0


def test_large_padding_creates_padding_only_patches():
    g = patch_grid((5, 5), 3, 1, 6)
    # 15 windows per axis start at -6 ... 8; a 3-wide window reaches pixels 0 ... 4 only if it
    # starts at -2 ... 4: 7 per axis touch the image, so 225 - 49 = 176 patches see only zeros
    assert g.out_hw == (15, 15)
    assert g.padding_only == 225 - 7 * 7
    assert "see only padding" in g.message


@pytest.mark.parametrize("hw, k, s, p", [((10, 10), 11, 1, 0), ((4, 30), 9, 2, 2), ((30, 4), 9, 2, 2)])
def test_kernel_that_does_not_fit_gives_a_message_not_an_exception(hw, k, s, p):
    g = patch_grid(hw, k, s, p)
    assert not g.valid and g.num_patches == 0 and g.boxes().shape == (0, 4)
    short = min(hw)
    assert "no output" in g.message and f"{short} + 2*{p} = {short + 2 * p}" in g.message


@pytest.mark.parametrize("args, error", [
    (((224, 224), 0, 4, 3), ValueError), (((224, 224), 7, 0, 3), ValueError),
    (((224, 224), 7, 4, -1), ValueError), (((224, 224), 7.0, 4, 3), TypeError),
    (((224, 224), True, 4, 3), TypeError), ((224, 7, 4, 3), TypeError), (((0, 224), 7, 4, 3), ValueError),
])
def test_bad_arguments_are_named(args, error):
    with pytest.raises(error, match=r"kernel|stride|padding|image"):
        patch_grid(*args)


# ---------------------------------------------------------------- against a real convolution

SETTINGS = [((224, 224), 16, 16, 0), ((224, 224), 7, 4, 3), ((300, 451), 7, 4, 3), ((57, 31), 3, 2, 1),
            ((10, 10), 3, 5, 0), ((13, 8), 1, 1, 0), ((5, 5), 3, 1, 6), ((20, 20), 32, 4, 0),
            ((20, 20), 32, 4, 6), ((7, 9), 8, 3, 0)]


@pytest.mark.parametrize("hw, k, s, p", SETTINGS)
def test_output_grid_matches_nn_conv2d(hw, k, s, p):
    g = patch_grid(hw, k, s, p)
    conv = torch.nn.Conv2d(1, 1, k, s, p)
    x = torch.zeros(1, 1, *hw)
    if g.valid:
        assert tuple(conv(x).shape[-2:]) == g.out_hw
    else:
        with pytest.raises(RuntimeError):
            conv(x)


def conv_reference(hw, k, s, p):
    """Coverage figures from autograd: with an all-ones kernel, d(sum of outputs)/d(pixel) is the
    number of patches that contain the pixel; the output on an all-ones image counts real pixels."""
    x = torch.ones(1, 1, *hw, requires_grad=True)
    out = F.conv2d(x, torch.ones(1, 1, k, k), stride=s, padding=p)
    out.sum().backward()
    views = x.grad[0, 0]
    # rows/columns after the last one any patch reaches (all of them when no patch reaches any)
    unseen = tuple(n - 1 - int(seen.max()) if len(seen) else n for n, seen in
                   zip(hw, (torch.nonzero(views.sum(1)).flatten(), torch.nonzero(views.sum(0)).flatten())))
    return (float((views > 0).float().mean()), int(views.max()), unseen, int((out == 0).sum()))


@pytest.mark.parametrize("hw, k, s, p", [c for c in SETTINGS if patch_grid(*c).valid and c[0][0] < 100])
def test_coverage_matches_conv_gradient(hw, k, s, p):
    g = patch_grid(hw, k, s, p)
    coverage, max_views, unseen, padding_only = conv_reference(hw, k, s, p)
    assert g.coverage == pytest.approx(coverage)
    assert (g.max_views, g.unseen_edge, g.padding_only) == (max_views, unseen, padding_only)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 24), k=st.integers(1, 12), s=st.integers(1, 12),
       p=st.integers(0, 8))
def test_any_layout_agrees_with_the_conv(h, w, k, s, p):
    g = patch_grid((h, w), k, s, p)
    fits = h + 2 * p >= k and w + 2 * p >= k
    assert g.valid == fits
    if fits:
        out = F.conv2d(torch.zeros(1, 1, h, w), torch.ones(1, 1, k, k), stride=s, padding=p)
        assert tuple(out.shape[-2:]) == g.out_hw
        coverage, max_views, unseen, padding_only = conv_reference((h, w), k, s, p)
        assert g.coverage == pytest.approx(coverage)
        assert (g.max_views, g.unseen_edge, g.padding_only) == (max_views, unseen, padding_only)


@pytest.mark.parametrize("hw, k, s, p", [((12, 10), 7, 4, 3), ((16, 16), 4, 4, 0), ((11, 9), 3, 5, 2)])
def test_boxes_are_the_windows_the_conv_reads(hw, k, s, p):
    """F.unfold returns, column by column, the exact window each output token is computed from;
    slicing the zero-padded image at our boxes must give the same pixels in the same order."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, *hw)
    cols = F.unfold(x, k, padding=p, stride=s)[0]  # (k*k, L), L in row-major token order
    padded = F.pad(x, (p, p, p, p))[0, 0]
    boxes = patch_grid(hw, k, s, p).boxes()
    assert boxes.shape == (cols.shape[1], 4)
    for n, (top, left, bottom, right) in enumerate(boxes):
        window = padded[top + p:bottom + p, left + p:right + p]
        torch.testing.assert_close(window.reshape(-1), cols[:, n])


# ---------------------------------------------------------------- drawing (Agg)

def photo(h=64, w=96):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def rectangles(ax):
    return [a for a in ax.patches if isinstance(a, Rectangle)]


def test_draw_outlines_every_patch_of_a_sparse_grid():
    fig, ax = plt.subplots()
    g = draw_patch_grid(ax, photo(64, 64), 16, 16, 0)
    assert g.out_hw == (4, 4)
    # 1 padding frame + 16 outlines + the 2x2 coloured block
    assert len(rectangles(ax)) == 1 + 16 + 4
    assert ax.get_title() == "k=16, s=16, p=0: 4x4 tokens"
    assert ax.get_xlim() == (-0.5, 63.5) and ax.get_ylim() == (63.5, -0.5)


def test_draw_marks_centres_of_a_dense_grid():
    fig, ax = plt.subplots()
    g = draw_patch_grid(ax, photo(), 7, 4, 3)
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == g.num_patches == 16 * 24
    # the first token's window spans pixels -3 ... 3, so its centre is pixel 0
    assert dots[0].get_offsets()[0].tolist() == [0.0, 0.0]
    assert ax.get_xlim() == (-3.5, 98.5)  # the padding is in view


def test_draw_window_zooms_and_only_draws_boxes_in_view():
    fig, ax = plt.subplots()
    draw_patch_grid(ax, photo(), 7, 4, 3, window=(-3, -3, 12, 12), block=(0, 0))
    assert ax.get_xlim() == (-3.5, 8.5)
    # windows starting at -3, 1, 5 reach into rows/cols -3 ... 8: 3x3 outlines + frame + block
    assert len(rectangles(ax)) == 1 + 9 + 4


def test_draw_survives_a_kernel_that_does_not_fit():
    fig, ax = plt.subplots()
    g = draw_patch_grid(ax, photo(20, 20), 32, 4, 0)
    assert not g.valid
    assert ax.get_title().endswith("no output")
    assert any("does not fit" in t.get_text() for t in ax.texts)


def test_draw_accepts_grey_and_tensor_images():
    fig, (a, b) = plt.subplots(1, 2)
    assert draw_patch_grid(a, photo()[..., 0], 8, 8).out_hw == (8, 12)
    assert draw_patch_grid(b, torch.rand(1, 3, 32, 48), 8, 8).out_hw == (4, 6)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        draw_patch_grid(a, np.zeros((4, 4, 5)), 2, 2)


# ---------------------------------------------------------------- the widget, headless

def test_widget_redraws_when_sliders_move():
    w = patch_grid_widget(photo(), max_kernel=32, max_stride=32, max_padding=16)
    s = w.controls
    assert set(s) == {"kernel", "stride", "padding"}
    assert (s["kernel"].value, s["stride"].value, s["padding"].value) == (7, 4, 3)
    assert w.shown.out_hw == (16, 24) and "16x24 grid = 384 tokens" in w.message.value
    first_png = w.image.value
    assert first_png[:8] == b"\x89PNG\r\n\x1a\n"

    s["stride"].value = 16
    s["kernel"].value = 16
    s["padding"].value = 0
    assert w.shown.out_hw == (4, 6) and "4x6 grid = 24 tokens" in w.message.value
    assert "without overlap" in w.message.value
    assert w.image.value != first_png


def test_widget_survives_extreme_slider_values():
    w = patch_grid_widget(photo(20, 20), max_kernel=32, max_stride=32, max_padding=16)
    s = w.controls
    for name, value in [("kernel", 1), ("stride", 1), ("padding", 0)]:  # a pixel grid
        s[name].value = value
    assert w.shown.out_hw == (20, 20)
    s["stride"].value = s["stride"].max  # stride 32 > kernel 1: one pixel seen out of every 32
    assert w.shown.gap == 31 and "never seen" in w.message.value
    s["kernel"].value = s["kernel"].max  # kernel 32 > 20 pixels and no padding: no output at all
    assert not w.shown.valid
    assert "no output" in w.message.value and "#b00020" in w.message.value
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    s["padding"].value = s["padding"].max  # padding 16 makes it fit again: 20 + 32 = 52 -> 1 + (52-32)//32 = 1
    assert w.shown.valid and w.shown.out_hw == (1, 1)
    assert "no output" not in w.message.value


def test_widget_clamps_slider_values_to_its_range():
    w = patch_grid_widget(photo(20, 20), max_kernel=8)
    s = w.controls
    s["kernel"].value = 100  # ipywidgets clamps to max
    assert s["kernel"].value == 8 and w.shown.kernel == 8


def test_widget_rejects_bad_input_early():
    with pytest.raises(ValueError, match="kernel"):
        patch_grid_widget(photo(), kernel=0)
    with pytest.raises(ValueError, match="image"):
        patch_grid_widget(np.zeros((3, 4, 4, 4)))


def test_widget_displays_as_its_box_of_sliders_message_and_picture():
    w = patch_grid_widget(photo())
    view = w._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == w.box.model_id
    sliders, message, image = w.box.children
    assert list(sliders.children) == list(w.controls.values()) and (message, image) == (w.message, w.image)

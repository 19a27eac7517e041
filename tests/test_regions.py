"""segformer_lite.course.regions against brute force: depths from explicit windows, regions from
a breadth-first search, key shares and weights from pixel loops."""
from collections import deque

import numpy as np
import pytest
import torch

import segformer_lite as sl
from segformer_lite.training.data import render_shapes
from segformer_lite.course import regions
from segformer_lite.course.widgets import attention_map as am


def brute_depth(mask):
    """Largest r such that the (2r+1)^2 window around the pixel lies in the mask and the image."""
    h, w = mask.shape
    depth = np.zeros((h, w), int)
    for y in range(h):
        for x in range(w):
            r = -1
            while (y - r - 1 >= 0 and x - r - 1 >= 0 and y + r + 1 < h and x + r + 1 < w
                   and mask[y - r - 1:y + r + 2, x - r - 1:x + r + 2].all()):
                r += 1
            depth[y, x] = max(r, 0)
    return depth


def bfs_region(mask, start):
    seen, todo = {start}, deque([start])
    while todo:
        y, x = todo.popleft()
        for n in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and n not in seen:
                seen.add(n)
                todo.append(n)
    out = np.zeros_like(mask)
    out[tuple(np.array(sorted(seen)).T)] = True
    return out


@pytest.mark.parametrize("index", range(4))
def test_depth_is_the_largest_window_inside(index):
    _, label = render_shapes(seed=7, index=index, size=48, task="context")
    for cls in np.unique(label):
        mask = label == cls
        assert (regions.interior_depth(mask) == brute_depth(mask)).all()


def test_depth_of_a_square_and_its_deepest_pixel():
    label = np.zeros((12, 12), int)
    label[2:9, 3:10] = 2  # a 7x7 box: its centre (5, 6) survives 3 erosions
    depth = regions.interior_depth(label == 2)
    assert depth.max() == 3 and depth[5, 6] == 3 and (depth == 3).sum() == 1
    assert regions.deepest_pixel(label, 2) == (5, 6)
    # the background touches the image's edge, which counts as outside: its deepest pixel is not on it
    r, c = regions.deepest_pixel(label, 0)
    assert 0 < r < 11 and 0 < c < 11


@pytest.mark.parametrize("index", range(3))
def test_connected_region_matches_breadth_first_search(index):
    _, label = render_shapes(seed=3, index=index, size=64, task="context")
    for cls in np.unique(label):
        mask = label == cls
        start = regions.deepest_pixel(label, cls)
        assert (regions.connected_region(mask, start) == bfs_region(mask, start)).all()


def test_two_blobs_of_one_class_are_two_regions():
    mask = np.zeros((6, 9), bool)
    mask[1:4, 1:3] = mask[2:5, 5:8] = True
    left = regions.connected_region(mask, (2, 1))
    assert left.sum() == 6 and not left[:, 4:].any()


def test_key_shares_and_region_weight_by_pixel_loops():
    torch.manual_seed(0)
    encoder = sl.MixTransformer(sl.mit_config("b0")).eval()
    image, label = render_shapes(seed=2026, index=0, size=96, task="context")
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    block = am.encoder_attention(encoder, x)[0]  # stage 1: 24x24 tokens, sr 8 -> 3x3 keys of 32 px
    amap = block.query((12, 12), 0)
    mask = label == label[48, 48]
    shares = regions.key_cell_shares(mask, amap.grid, amap.kv_grid, amap.sr_ratio)
    expected = np.zeros(amap.kv_grid)
    for y in range(96):
        for x_ in range(96):
            expected[y // 32, x_ // 32] += mask[y, x_] / 32 ** 2
    np.testing.assert_allclose(shares, expected)
    weight, even = regions.region_weight(amap, mask)
    assert weight == pytest.approx(sum(float(amap.weights[y // 32, x_ // 32]) / 32 ** 2
                                       for y in range(96) for x_ in range(96) if mask[y, x_]), rel=1e-6)
    assert even == pytest.approx(mask.mean())  # the cells tile the image: even attention sees its share


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="boolean"):
        regions.interior_depth(np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="class 3 has no pixel"):
        regions.deepest_pixel(np.zeros((4, 4), int), 3)
    with pytest.raises(ValueError, match="not inside the mask"):
        regions.connected_region(np.zeros((4, 4), bool), (1, 1))


def brute_chebyshev(mask):
    """Per pixel, the Chebyshev distance to the nearest mask pixel, by looping over all of them."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    out = np.full((h, w), -1)
    for y in range(h):
        for x in range(w):
            if len(ys):
                out[y, x] = np.max(np.abs(np.stack([ys - y, xs - x])), axis=0).min()
    return out


@pytest.mark.parametrize("index", range(3))
def test_dilate_band_and_distance_against_pixel_loops(index):
    _, label = render_shapes(seed=11, index=index, size=40, task="context")
    mask = label == label[20, 20]
    inside, outside = brute_chebyshev(mask), brute_chebyshev(~mask)
    assert (regions.outside_distance(mask) == inside).all()
    for steps in (0, 1, 3):
        assert (regions.dilate(mask, steps) == (inside <= steps)).all()
        # the band: mask pixels with an outside pixel within `steps`, outside pixels with a mask pixel within it
        assert (regions.outline_band(mask, steps) == np.where(mask, outside <= steps, inside <= steps)).all()


def test_band_of_a_box_by_hand():
    mask = np.zeros((12, 12), bool)
    mask[3:9, 3:9] = True  # a 6x6 box
    band = regions.outline_band(mask, 1)
    assert band.sum() == 8 * 8 - 4 * 4  # the ring from 2..9 minus the inner 4x4 (rows/cols 4..7)
    assert not band[4:8, 4:8].any() and band[2, 2] and band[3, 3] and not band[1, 1]
    assert regions.outline_band(mask, 0).sum() == 0


@pytest.mark.parametrize("index", range(4))
def test_deep_pixels_have_a_window_off_the_band(index):
    """Depth >= w + r: the (2r+1)^2 window lies inside the mask and off the band (the local CNN's
    guarantee in the erase test), checked window by window."""
    _, label = render_shapes(seed=5, index=index, size=64, task="context")
    mask = label == label[32, 32]
    depth = regions.interior_depth(mask)
    tight = 0
    for w, r in ((2, 3), (4, 3), (3, 1)):
        band = regions.outline_band(mask, w)
        for y, x in zip(*np.nonzero(depth >= w + r)):
            window = band[y - r:y + r + 1, x - r:x + r + 1]
            assert window.shape == (2 * r + 1, 2 * r + 1) and not window.any()
        # the bound is tight: a pixel one step shallower (its depth set by the outline, not the
        # image's edge, which the band does not count) has a band pixel in its window
        d = w + r - 1
        ys, xs = np.nonzero(depth == d)
        away = (ys > d) & (xs > d) & (ys < 63 - d) & (xs < 63 - d)
        for y, x in zip(ys[away], xs[away]):
            assert band[y - r:y + r + 1, x - r:x + r + 1].any()
        tight += away.sum()
    assert tight > 0


def test_nearest_ring():
    mask = np.zeros((10, 10), bool)
    mask[4:6, 4:6] = True
    ring = regions.nearest_ring(mask, gap=1, count=20)
    dist = brute_chebyshev(mask)
    assert ring.sum() == 20 and (dist[ring] == 2).all()  # the 5x5..6x6 shell at distance 2 has 20 pixels
    ring = regions.nearest_ring(mask, gap=1, count=25)
    assert (dist[ring] > 1).all() and (dist[ring] == 3).sum() == 5
    beyond = (dist > 1) & ~ring
    assert dist[ring].max() <= dist[beyond].min()  # nearest first
    first = np.flatnonzero(((dist == 3) & ring).ravel())
    assert (first == np.flatnonzero((dist == 3).ravel())[:5]).all()  # ties: row-major
    assert regions.nearest_ring(mask, gap=1, count=int((dist > 1).sum()) + 1) is None


def test_shape_queries():
    label = np.zeros((20, 20), int)
    label[2:13, 2:13] = 2  # depth 5 at its centre (7, 7)
    label[15:18, 15:18] = 3  # depth 1
    assert regions.shape_queries(label, 1) == {2: (7, 7), 3: (16, 16)}
    assert regions.shape_queries(label, 2) == {2: (7, 7)}
    assert regions.shape_queries(np.zeros((5, 5), int), 0) == {}


def test_bad_steps_and_shapes_are_named():
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        regions.dilate(np.zeros((4, 4), bool), -1)
    with pytest.raises(ValueError, match="boolean"):
        regions.outline_band(np.zeros((4, 4)), 1)

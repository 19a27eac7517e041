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

"""segformer_lite.course.attention_stats: maps read in one batched pass checked against the
widget's one-query path and regions.region_weight, tests on planted effects, sink measures
against pair loops and hand-made maps, the ratio drawing by its pixels."""
import itertools

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import segformer_lite as sl
from segformer_lite.course import attention_stats as ast
from segformer_lite.course import regions
from segformer_lite.course import attention as am
from segformer_lite.training.data import render_shapes


@pytest.mark.parametrize("size", [64, 96])
def test_query_maps_match_the_one_query_path(size):
    torch.manual_seed(0)
    encoder = sl.MixTransformer(sl.mit_config("b0")).eval()
    with torch.no_grad():  # sharper than the init, so the rows differ from uniform
        for block in (b for s in encoder.stages for b in s.blocks):
            block.attn.q.weight.mul_(30)
    pairs = [render_shapes(2026, i, size, "context") for i in range(3)]
    images = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in pairs])
    labels = np.stack([lab for _, lab in pairs])
    maps = ast.query_maps(am.encoder_attention(encoder, images), labels, min_depth=3)
    expected = [(i, c, rc) for i, lab in enumerate(labels) for c, rc in regions.shape_queries(lab, 3).items()]
    assert [(i, c, tuple(p)) for i, c, p in zip(maps.image, maps.cls, maps.pixel)] == expected
    for q, (i, c, rc) in enumerate(expected):
        blocks = am.encoder_attention(encoder, images[i:i + 1])
        shape = regions.connected_region(labels[i] == c, rc)
        for b, block in enumerate(blocks):
            for h in range(block.weights.shape[1]):
                amap = block.query(am.scale_query(rc, (size, size), block.grid), h)
                np.testing.assert_allclose(maps.weights[b][q, h], amap.weights.ravel(), atol=2e-5)  # batch of 3 vs 1
                weight, even = regions.region_weight(amap, shape)
                ratio = ast.own_shape_ratio(maps.weights[b][q:q + 1], maps.shares[b][q:q + 1])[0, h]
                assert ratio == pytest.approx(weight / even, rel=1e-4)
            r, col = amap.query  # the key cell holding the query's token
            assert maps.cell[b][q] == (r // block.sr_ratio) * block.kv_grid[1] + col // block.sr_ratio


def test_own_shape_ratio_by_hand():
    shares = np.array([[1.0, 0.0, 0.0, 0.0]])  # the shape fills key cell 0: a quarter of the image
    weights = np.array([[[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]]])  # (1, 3 heads, 4)
    np.testing.assert_allclose(ast.own_shape_ratio(weights, shares), [[1.0, 4.0, 0.0]])


def planted(rounds=500):
    """60 queries of 30 images, 4 keys. Each query's shape fills its own key cell and a tenth of the
    others. Head 0 attends to the query's own cell only, head 1 evenly, head 2 in proportion to
    the shape's shares with a shape-specific part (a random extra cell)."""
    rng = np.random.default_rng(0)
    q = 60
    cell = rng.integers(0, 4, size=q)
    extra = rng.integers(0, 4, size=q)
    shares = np.full((q, 4), 0.1)
    shares[np.arange(q), cell] = 1.0
    shares[np.arange(q), extra] = np.maximum(shares[np.arange(q), extra], 0.8)
    weights = np.zeros((q, 3, 4))
    weights[np.arange(q), 0, cell] = 1.0
    weights[:, 1] = 0.25
    weights[:, 2] = shares / shares.sum(1, keepdims=True)
    maps = ast.QueryMaps(np.repeat(np.arange(30), 2), np.zeros((q, 2), int), np.ones(q, int), (0,),
                         [weights], [shares], [cell])
    return maps, ast.own_shape_test(maps, rounds=rounds)[0]


def test_own_shape_test_on_planted_effects():
    maps, t = planted()
    ratio = ast.own_shape_ratio(maps.weights[0], maps.shares[0]).mean(0)
    np.testing.assert_allclose(t.ratio.value, ratio)
    assert (t.ratio.lo <= ratio).all() and (ratio <= t.ratio.hi).all()
    assert t.ratio.lo[0] > 1 and t.ratio.lo[2] > 1
    # the even head: every pairing gives 1
    assert t.ratio.value[1] == pytest.approx(1.0) and t.null_any[0][1] == pytest.approx(1.0)
    # the own-cell head prefers the shape against any other shape...
    assert t.p_any[0] < 0.01 and t.null_any[0][0] < ratio[0]
    # ...but not against a shape around the same cell: it attends to where it is, nothing more
    assert t.p_cell[0] > 0.2
    # the shape-following head also follows the shape-specific extra cell: beyond both nulls
    assert t.p_any[2] < 0.01 and t.p_cell[2] < 0.01
    assert t.block_ratio.value == pytest.approx(ratio.mean())
    assert t.block_p_any < 0.01


def test_same_image_null_separates_own_shape_from_any_shape_of_the_image():
    """Two queries per image, each image's two shapes in different cells. Head 0 attends to the
    cell of the image's first shape (wherever the query is), head 1 to the query's own shape's cell."""
    rng = np.random.default_rng(1)
    n_images = 40
    cells = np.stack([rng.choice(4, size=2, replace=False) for _ in range(n_images)])  # (images, 2)
    cell = cells.ravel()  # query 2i: shape in cell cells[i, 0], query 2i+1: cells[i, 1]
    shares = np.full((2 * n_images, 4), 0.05)
    shares[np.arange(2 * n_images), cell] = 1.0
    weights = np.zeros((2 * n_images, 2, 4))
    weights[np.arange(2 * n_images), 0, np.repeat(cells[:, 0], 2)] = 1.0
    weights[np.arange(2 * n_images), 1, cell] = 1.0
    maps = ast.QueryMaps(np.repeat(np.arange(n_images), 2), np.zeros((2 * n_images, 2), int),
                         np.ones(2 * n_images, int), (0,), [weights], [shares], [cell])
    t = ast.own_shape_test(maps, rounds=500)[0]
    assert t.ratio.value[0] > 1 and t.p_any[0] < 0.01  # head 0 beats the any-shape null...
    assert t.p_image[0] > 0.2  # ...but not the same-image one: it follows the image, not the query
    assert t.p_image[1] < 0.01 and t.p_any[1] < 0.01  # head 1 follows the query's own shape


def brute_same_argmax(weights):
    top = weights.argmax(-1)  # (B, heads, N)
    b, h, n = top.shape
    out = np.zeros((b, h))
    for i, j in itertools.product(range(b), range(h)):
        pairs = list(itertools.combinations(range(n), 2))
        out[i, j] = np.mean([top[i, j, x] == top[i, j, y] for x, y in pairs])
    return out


def test_same_argmax_share_against_pair_loops():
    w = torch.rand(2, 3, 7, 5).softmax(-1)
    np.testing.assert_allclose(ast.same_argmax_share(w), brute_same_argmax(w.numpy()))
    sink = torch.zeros(1, 1, 6, 4)
    sink[..., 2] = 1.0
    assert ast.same_argmax_share(sink)[0, 0] == 1.0
    torch.manual_seed(0)  # independent uniform argmaxes: 1 / M
    assert ast.same_argmax_share(torch.rand(1, 1, 2000, 8)).item() == pytest.approx(1 / 8, abs=0.01)


def test_common_key_fixed_key_and_focus_by_hand():
    m = 4
    uniform = torch.full((1, 1, 4, m), 1 / m)
    own = torch.eye(m)[None, None]  # query i attends to key i only
    sink = torch.zeros(1, 1, 4, m)
    sink[..., 3] = 1.0
    assert ast.common_key_weight(uniform).item() == pytest.approx(1.0)
    assert ast.common_key_weight(own).item() == pytest.approx(1.0)
    assert ast.common_key_weight(sink).item() == pytest.approx(m)
    mixed = torch.eye(m)[[2, 2, 0, 1]][None, None]  # queries 0 and 1 on key 2, the others on keys 0, 1
    both = torch.cat([sink, sink, mixed])
    assert ast.common_key(both)[:, 0].tolist() == [3, 3, 2]
    assert ast.common_key_weight(mixed).item() == pytest.approx(0.5 * m)
    assert ast.fixed_key_share(both).tolist() == [pytest.approx(2 / 3)]
    np.testing.assert_allclose(ast.focus(np.array([[0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])), [1.0, 2.8])


def test_head_summary_of_a_random_encoder():
    torch.manual_seed(0)
    encoder = sl.MixTransformer(sl.mit_config("b0")).eval()
    blocks = am.encoder_attention(encoder, torch.rand(3, 3, 64, 64))
    summary = ast.head_summary(blocks)
    assert len(summary) == 8 and [s["keys"] for s in summary] == [4] * 8
    assert [len(s["fixed_key"]) for s in summary] == [1, 1, 2, 2, 5, 5, 8, 8]
    for s, b in zip(summary, blocks):
        np.testing.assert_allclose(s["same_argmax"], brute_same_argmax(b.weights.numpy()).mean(0))
        assert 1.0 <= s["focus_mean"] <= s["focus_max"] <= 4.0


def test_draw_ratio_colours_log2_of_weight_times_m():
    weights = np.array([[0.5, 0.25], [0.2, 0.05]])
    amap = am.AttentionMap(weights, (8, 8), (2, 2), 4, (1, 6), 0)
    fig = Figure()
    ax = fig.add_subplot()
    im = ast.draw_ratio(ax, np.zeros((32, 32, 3), np.uint8), amap, limit=2.0, title="t")
    np.testing.assert_allclose(im.get_array(), np.log2([[2.0, 1.0], [0.8, 0.25]]))
    assert (im.norm.vmin, im.norm.vmax) == (-2.0, 2.0) and im.get_extent() == [0, 32, 32, 0]
    bar = ast.ratio_colorbar(im, ax, limit=2.0)
    assert [t.get_text() for t in bar.ax.get_yticklabels()] == ["1/4", "1/2", "1", "2", "4"]
    im = ast.draw_ratio(ax, np.zeros((32, 32, 3), np.uint8), amap, limit=1.0)
    assert im.get_array().min() == pytest.approx(-1.0)  # clipped to the panel's limit


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(B, heads, N, M\) with N >= 2"):
        ast.same_argmax_share(torch.rand(2, 4, 4))
    blocks = am.encoder_attention(sl.MixTransformer(sl.mit_config("b0")).eval(), torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="labels"):
        ast.query_maps(blocks, np.zeros((2, 64, 64), int))
    with pytest.raises(ValueError, match="no shape"):
        ast.query_maps(blocks, np.zeros((1, 64, 64), int))


def test_attend_split_over_channels_is_transformers_multi_head_attention():
    """Notebook 03's experiment helper, against an independent multi-head attention (torch's
    nn.MultiheadAttention on the same projections); the split over tokens is not order-free."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True, bias=True)
    w, b = mha.in_proj_weight, mha.in_proj_bias
    projections = [torch.nn.Linear(16, 16) for _ in range(3)]
    with torch.no_grad():
        for i, p in enumerate(projections):
            p.weight.copy_(w[16 * i:16 * (i + 1)])
            p.bias.copy_(b[16 * i:16 * (i + 1)])
        mha.out_proj.weight.copy_(torch.eye(16))
        mha.out_proj.bias.zero_()
        x = torch.randn(2, 12, 16)
        want, _ = mha(x, x, x, need_weights=False)
        got = am.attend_split(x, projections, "b n (h d) -> b h n d", heads=2)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        perm = torch.randperm(12)
        tokens = am.attend_split(x[:, perm], projections, "b (h t) e -> b h t e", heads=2)
        assert not torch.allclose(tokens, am.attend_split(x, projections, "b (h t) e -> b h t e", heads=2)[:, perm])

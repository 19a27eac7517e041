"""segformer_lite.course.widgets.attention_map: maps checked against a hand-written softmax(q.k) and
against transformers' own attention probabilities; the widget driven headless."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers  # pinned in requirements-test.txt: missing is an error, not a skip
from matplotlib.figure import Figure

import segformer_lite as sl
from segformer_lite.course.images import load_photo, photo_tensor
from segformer_lite.course.widgets import attention_map as am


def manual_query_weights(layer, x, query_rc, head):
    """softmax(q . k / sqrt(d)) for one query, written with torch primitives only."""
    _, C, H, W = x.shape
    d = C // layer.num_heads
    tokens = x.flatten(2).transpose(1, 2)[0]  # (N, C)
    q = tokens @ layer.q.weight.T + layer.q.bias
    if layer.sr_ratio > 1:
        red = F.conv2d(x, layer.sr.weight, layer.sr.bias, stride=layer.sr_ratio)
        kh, kw = red.shape[-2:]
        red = F.layer_norm(red.flatten(2).transpose(1, 2)[0], (C,), layer.norm.weight,
                           layer.norm.bias, layer.norm.eps)
    else:
        red, kh, kw = tokens, H, W
    k = (red @ layer.kv.weight.T + layer.kv.bias)[:, :C]  # the first C rows of kv are K
    cols = slice(head * d, (head + 1) * d)  # heads own a slice of the channels
    r, c = query_rc
    scores = k[:, cols] @ q[r * W + c, cols] / d ** 0.5
    return scores.softmax(0).reshape(kh, kw)


@pytest.mark.parametrize("sr_ratio", [1, 2, 3])
@pytest.mark.parametrize("query", [(0, 0), (2, 7), (5, 9)])
def test_layer_map_is_the_softmax_of_q_dot_k(sr_ratio, query):
    torch.manual_seed(0)
    layer = sl.EfficientSelfAttention(16, num_heads=2, sr_ratio=sr_ratio).eval()
    with torch.no_grad():  # larger weights than the init, so the softmax is far from uniform
        layer.q.weight.mul_(20)
    x = torch.randn(1, 16, 6, 10)  # non-square, and 10 is not a multiple of 3
    for head in (0, 1):
        amap = am.attention_for_query(layer, x, query, head=head)
        expected = manual_query_weights(layer, x, query, head)
        assert amap.weights.shape == tuple(expected.shape) == sl.reduced_grid((6, 10), sr_ratio)
        assert amap.kv_grid == (6 // sr_ratio, 10 // sr_ratio)
        torch.testing.assert_close(torch.from_numpy(amap.weights), expected, rtol=1e-4, atol=1e-6)
        assert amap.weights.sum() == pytest.approx(1.0, abs=1e-5)
        assert amap.weights.max() > 2.0 / amap.weights.size  # not the uniform map
        assert (amap.grid, amap.query, amap.head, amap.sr_ratio) == ((6, 10), query, head, sr_ratio)


def test_model_maps_equal_transformers_attention_probabilities():
    torch.manual_seed(0)
    hf_cfg = transformers.SegformerConfig(hidden_sizes=[16, 32, 40, 64], num_attention_heads=[1, 2, 5, 8],
                                          depths=[1, 2, 1, 1], decoder_hidden_size=32,
                                          attn_implementation="eager")
    hf = transformers.SegformerModel(hf_cfg).eval()
    with torch.no_grad():  # sharpen the random queries so each map is far from uniform
        for name, p in hf.named_parameters():
            if "q_proj.weight" in name or "query.weight" in name:
                p.mul_(30)
    ours = sl.from_transformers(hf)
    image = torch.randn(1, 3, 64, 96)  # non-square
    with torch.no_grad():
        probs = hf(image, output_attentions=True).attentions
    grids = [(16, 24), (8, 12), (8, 12), (4, 6), (2, 3)]  # per block (stage 2 has two blocks)
    kv_grids = [(2, 3), (2, 3), (2, 3), (2, 3), (2, 3)]  # sr 8, 4, 4, 2, 1
    for block, head, query in [(0, 0, (15, 23)), (1, 1, (3, 4)), (2, 0, (7, 11)), (3, 4, (0, 5)),
                               (4, 7, (1, 2))]:
        amap = am.attention_for_query(ours, image, query, head=head, block=block)
        h, w = grids[block]
        assert (amap.grid, amap.kv_grid) == ((h, w), kv_grids[block])
        expected = probs[block][0, head, query[0] * w + query[1]].reshape(kv_grids[block])
        torch.testing.assert_close(torch.from_numpy(amap.weights), expected, rtol=1e-4, atol=1e-6)
        assert amap.weights.max() - amap.weights.min() > 0.03  # a wrong query would not match
    blocks = am.encoder_attention(ours, image)  # one pass, every block
    assert [(b.stage, b.grid, b.kv_grid, b.sr_ratio) for b in blocks] == [
        (0, (16, 24), (2, 3), 8), (1, (8, 12), (2, 3), 4), (1, (8, 12), (2, 3), 4),
        (2, (4, 6), (2, 3), 2), (3, (2, 3), (2, 3), 1)]
    for b, p in zip(blocks, probs):
        torch.testing.assert_close(b.weights, p, rtol=1e-4, atol=1e-6)
    with pytest.raises(TypeError, match="expected a MixTransformer"):
        am.encoder_attention(sl.EfficientSelfAttention(8, 1), image)


def test_bad_queries_heads_and_inputs_get_clear_errors():
    layer = sl.EfficientSelfAttention(8, num_heads=2, sr_ratio=1)
    x = torch.randn(1, 8, 4, 5)
    with pytest.raises(ValueError, match=r"outside the 4x5 token grid"):
        am.attention_for_query(layer, x, (4, 0))
    with pytest.raises(ValueError, match=r"outside the 4x5 token grid"):
        am.attention_for_query(layer, x, (0, -1))
    with pytest.raises(TypeError, match="query_rc must be a"):
        am.attention_for_query(layer, x, 3)
    with pytest.raises(ValueError, match=r"head must be an int in 0..1"):
        am.attention_for_query(layer, x, (0, 0), head=2)
    with pytest.raises(ValueError, match=r"feature map \(1, C, H, W\)"):
        am.attention_for_query(layer, torch.randn(20, 8), (0, 0))
    with pytest.raises(TypeError, match="EfficientSelfAttention layer or a MixTransformer"):
        am.attention_for_query(torch.nn.Linear(2, 2), x, (0, 0))
    with pytest.raises(ValueError, match=r"sr_ratio=8 is larger than the 4x5"):
        am.attention_for_query(am.colour_position_attention(8), torch.randn(1, 24, 4, 5), (0, 0))
    model = sl.MixTransformer(sl.mit_config("b0")).eval()
    with pytest.raises(ValueError, match=r"block must be an int in 0..7"):
        am.attention_for_query(model, torch.randn(1, 3, 64, 64), (0, 0), block=8)


def test_scale_query_maps_a_token_to_the_one_covering_it():
    assert am.scale_query((55, 0), (56, 56), (7, 7)) == (6, 0)
    assert am.scale_query((10, 33), (56, 40), (14, 10)) == (2, 8)
    with pytest.raises(ValueError):
        am.scale_query((56, 0), (56, 56), (7, 7))


def test_hand_made_features_have_equal_norms_and_zero_mean():
    photo = load_photo("coffee", (60, 80))
    f = am.colour_position_features(photo, (12, 16))[0].flatten(1)  # (24, N)
    assert f.shape == (24, 12 * 16)
    torch.testing.assert_close(f.mean(0), torch.zeros(12 * 16), atol=1e-6, rtol=0)
    torch.testing.assert_close(f.norm(dim=0), torch.full((12 * 16,), 10 ** 0.5))


def two_colour_photo():
    photo = np.zeros((40, 40, 3), np.uint8)
    photo[:, :20] = (220, 30, 30)  # red left half
    photo[:, 20:] = (30, 30, 220)  # blue right half
    return photo


@pytest.mark.parametrize("sr_ratio", [1, 2, 4])
def test_colour_head_attends_to_the_same_colour_and_position_head_to_the_query(sr_ratio):
    feats = am.colour_position_features(two_colour_photo(), (8, 8))
    layer = am.colour_position_attention(sr_ratio)
    kh, kw = sl.reduced_grid((8, 8), sr_ratio)
    for cell in [(0, 0), (kh - 1, 0), (kh // 2, kw // 2 - 1)]:  # key cells in the red half
        # the query on the token the reduction hands on for this cell (its window's centre)
        query = (cell[0] * sr_ratio + sr_ratio // 2, cell[1] * sr_ratio + sr_ratio // 2)
        colour = am.attention_for_query(layer, feats, query, head=0)
        assert colour.weights[:, : kw // 2].sum() > 0.99  # red keys only
        position = am.attention_for_query(layer, feats, query, head=1)
        peak = np.unravel_index(position.weights.argmax(), position.kv_grid)
        assert tuple(int(p) for p in peak) == cell


def test_sharpness_can_differ_per_head():
    layer = am.colour_position_attention(1, sharpness=(3.0, 7.0))
    assert layer.q.weight.diagonal()[:12].eq(3.0).all() and layer.q.weight.diagonal()[12:].eq(7.0).all()
    assert am.colour_position_attention(1, sharpness=5.0).q.weight.diagonal().eq(5.0).all()


def test_draw_attention_covers_only_the_pooled_part_of_the_photo():
    photo = load_photo("chelsea", (70, 100))
    layer = am.colour_position_attention(3)
    amap = am.attention_for_query(layer, am.colour_position_features(photo, (7, 10)), (6, 9), head=1)
    fig = Figure()
    ax = fig.add_subplot()
    im = am.draw_attention(ax, photo, amap)
    # 2x3 keys pooled from 6x9 of the 7x10 tokens (10 photo pixels each)
    assert im.get_extent() == pytest.approx((0, 90, 60, 0))
    assert im.get_array().shape == (2, 3)
    assert "query (6, 9), head 1" in ax.get_title()
    assert ax.get_xlim() == (0, 100)


def test_maps_of_one_figure_share_one_fixed_log_scale_and_one_colour_bar():
    photo = load_photo("chelsea", (60, 90))
    features = am.colour_position_features(photo, (12, 18))
    fig = Figure()
    axes = fig.subplots(1, 3)
    maps = [am.attention_for_query(am.colour_position_attention(sr), features, (3, 4), head=head)
            for sr, head in [(1, 0), (2, 1), (6, 1)]]
    images = [am.draw_attention(ax, photo, amap) for ax, amap in zip(axes, maps)]
    maxima = [float(m.weights.max()) for m in maps]
    assert max(maxima) > 5 * min(maxima)  # maps this different would get different scales if each had its own
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {am.WEIGHT_RANGE}
    assert all(type(im.norm).__name__ == "LogNorm" for im in images)
    # the same weight gets the same colour in every panel
    assert images[0].norm(0.01) == pytest.approx(images[2].norm(0.01)) == pytest.approx(0.5)
    bar = am.attention_colorbar(images[0], axes)
    assert len(fig.axes) == 4 and bar.ax in fig.axes  # three panels and one colour bar
    assert "attention weight" in bar.ax.get_ylabel()
    assert (bar.norm.vmin, bar.norm.vmax) == am.WEIGHT_RANGE
    # weights below the floor (a log scale has no 0) are drawn at the floor, not left transparent
    tiny = am.AttentionMap(np.array([[0.0, 1.0]]), (1, 2), (1, 2), 1, (0, 0), 0)
    assert np.ma.count_masked(am.draw_attention(fig.add_subplot(), photo, tiny).get_array()) == 0


def test_widget_draws_its_map_with_a_colour_bar():
    w = am.attention_widget(load_photo("chelsea", (60, 90)), grid=(6, 9))
    fig = Figure()
    amap, message = w.draw(fig.add_subplot(), row=0, col=0, head=1, sr_ratio=1)
    assert len(fig.axes) == 2 and "attention weight" in fig.axes[1].get_ylabel()
    assert f"uniform: {1 / 54:.4f}" in message and amap.kv_grid == (6, 9)


def test_widget_without_model_redraws_and_survives_extremes():
    w = am.attention_widget(load_photo("chelsea", (60, 90)), grid=(6, 9))
    s = w.controls
    assert set(s) == {"row", "col", "sr_ratio", "head"}
    first = w.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    s["row"].value, s["col"].value = s["row"].max, s["col"].max  # the last token
    assert w.shown.query == (5, 8) and w.image.value != first
    s["head"].value = 1
    assert w.shown.head == 1
    s["sr_ratio"].value = 4
    assert w.shown.kv_grid == (1, 2) and "1x2 = 2 keys" in w.message.value
    before = w.image.value
    s["sr_ratio"].value = 8  # larger than the 6x9 grid: a message, not a traceback
    assert "larger than the 6x9 token grid" in w.message.value
    assert w.image.value == before and w.shown.sr_ratio == 4
    s["sr_ratio"].value = 1
    assert w.shown.kv_grid == (6, 9) and "cannot" not in w.message.value
    s["row"].value, s["col"].value = 0, 0
    assert w.shown.query == (0, 0)
    view = w._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == w.box.model_id  # a notebook shows the box: query sliders, extras, message, picture
    assert [list(row.children) for row in w.box.children[:2]] == [[s["row"], s["col"]], [s["sr_ratio"], s["head"]]]


def test_widget_with_a_model_follows_blocks_stages_and_heads():
    torch.manual_seed(0)
    model = sl.MixTransformer(sl.mit_config("b0")).eval()
    image = photo_tensor("astronaut", (64, 96))
    w = am.attention_widget(load_photo("astronaut", (64, 96)), model=model, image=image)
    s = w.controls
    assert set(s) == {"row", "col", "block", "head"} and (s["row"].max, s["col"].max) == (15, 23)
    s["row"].value, s["col"].value = 15, 23
    pictures = {w.image.value}
    for block, heads, grid in [(1, 1, (16, 24)), (3, 2, (8, 12)), (5, 5, (4, 6)), (7, 8, (2, 3))]:
        s["block"].value = block
        assert s["head"].max == 7 and w.shown.grid == grid  # b0's most heads, from the start
        assert w.shown.query == (grid[0] - 1, grid[1] - 1)  # bottom-right stays bottom-right
        s["head"].value = heads - 1
        assert w.shown.head == heads - 1
        pictures.add(w.image.value)
    s["block"].value = 0  # back to one head: head 7 does not exist there, head 0 is drawn
    assert s["head"].value == 7 and w.shown.head == 0
    assert "stage 1 has 1 head: showing head 0" in w.message.value
    s["head"].value = 0
    assert "showing head" not in w.message.value
    assert len(pictures) == 5
    with pytest.raises(ValueError, match="pass image="):
        am.attention_widget(load_photo("astronaut", (64, 96)), model=model)

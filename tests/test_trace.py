"""The shape tracer: shapes it reports against shapes worked out by hand; hooks never left behind."""
import pytest
import torch
from torch import nn

import segformer_lite as sl
from segformer_lite.course.trace import TraceRow, trace_shapes

# MiT-B0 on a 1x3x64x96 image, worked out by hand with floor((n + 2p - k) / s) + 1:
#   stage 1, k7 s4 p3: H (64 + 6 - 7) // 4 + 1 = 16,  W (96 + 6 - 7) // 4 + 1 = 24
#   stage 2, k3 s2 p1: H (16 + 2 - 3) // 2 + 1 = 8,   W (24 + 2 - 3) // 2 + 1 = 12
#   stage 3:           H (8 - 1) // 2 + 1 = 4,        W (12 - 1) // 2 + 1 = 6
#   stage 4:           H (4 - 1) // 2 + 1 = 2,        W (6 - 1) // 2 + 1 = 3
GRIDS = [(16, 24), (8, 12), (4, 6), (2, 3)]
WIDTHS = [32, 64, 160, 256]
# sequence reduction, kernel = stride = sr (8, 4, 2, 1): 16x24 -> 2x3, 8x12 -> 2x3, 4x6 -> 2x3
REDUCED = [(2, 3), (2, 3), (2, 3), None]


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return sl.MixTransformer(sl.mit_config("b0")).eval()


def _hooks_left(model: nn.Module) -> list[str]:
    return [name or "(model)" for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._forward_hooks_with_kwargs
            or m._forward_pre_hooks_with_kwargs]


def test_stage_shapes_match_hand_computed(b0):
    x = torch.randn(1, 3, 64, 96)
    trace = trace_shapes(b0, x)
    rows = {r.name: r for r in trace.rows}
    in_shapes = [(1, 3, 64, 96)] + [(1, c, h, w) for c, (h, w) in zip(WIDTHS, GRIDS)]
    for i, (c, (h, w)) in enumerate(zip(WIDTHS, GRIDS)):
        pe = rows[f"stages.{i}.patch_embed"]
        assert pe.type == "OverlapPatchEmbed"
        assert pe.input_shapes == (in_shapes[i],)
        assert pe.output_shapes == ((1, h * w, c), (h, w))
        assert pe.output == f"(1, {h * w}, {c}), ({h}, {w})"
        assert rows[f"stages.{i}.patch_embed.proj"].output_shapes == (1, c, h, w)
        assert rows[f"stages.{i}"].output_shapes == (1, c, h, w)
        block = rows[f"stages.{i}.blocks.0"]
        assert block.input_shapes == ((1, h * w, c), (h, w))
        assert block.input == f"(1, {h * w}, {c}), ({h}, {w})"
        if REDUCED[i] is not None:
            assert rows[f"stages.{i}.blocks.0.attn.sr"].output_shapes == (1, c) + REDUCED[i]
        else:
            assert f"stages.{i}.blocks.0.attn.sr" not in rows
    assert rows[""].output_shapes == [(1, c, h, w) for c, (h, w) in zip(WIDTHS, GRIDS)]
    for got, want in zip(trace.output, b0(x)):  # .output is what the model returned
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not _hooks_left(b0)


def test_rows_in_call_order_and_depth_limit(b0):
    x = torch.randn(1, 3, 64, 96)
    names = [r.name for r in trace_shapes(b0, x, depth=1).rows]
    assert names == ["", "stages.0", "stages.1", "stages.2", "stages.3"]
    assert [r.name for r in trace_shapes(b0, x, depth=0).rows] == [""]
    rows = trace_shapes(b0.stages[0].blocks[0], torch.randn(1, 384, 32), (16, 24)).rows
    # the block is listed before what it calls; each call once per call (drop_path twice)
    assert [r.name for r in rows] == ["", "norm1", "attn", "attn.q", "attn.sr", "attn.norm",
                                      "attn.kv", "attn.proj", "drop_path", "norm2", "ffn",
                                      "ffn.fc1", "ffn.dwconv", "ffn.fc2", "drop_path"]
    assert [r.depth for r in rows][:4] == [0, 1, 1, 2]
    assert rows[12].input_shapes == ((1, 128, 16, 24),)  # fc1 widens 32 -> 4 * 32 channels


def test_keyword_arguments_and_attention_maps(b0):
    trace = trace_shapes(b0, torch.randn(2, 3, 64, 96), return_attention=True, depth=0)
    feats, attns = trace.output
    assert len(feats) == 4 and len(attns) == 8
    # b0 heads (1, 2, 5, 8); every stage's keys come from a 2x3 grid: 6 tokens
    heads = [1, 1, 2, 2, 5, 5, 8, 8]
    grids = [g for g in GRIDS for _ in range(2)]
    assert trace.rows[0].output_shapes[1] == [(2, n, h * w, 6) for n, (h, w) in zip(heads, grids)]


def test_table_text_is_aligned(b0):
    text = str(trace_shapes(b0, torch.randn(1, 3, 64, 96), depth=2))
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["module", "type", "input", "output"]
    bars = {tuple(i for i, ch in enumerate(line) if ch == "|") for line in lines if "|" in line}
    assert len(bars) == 1, "every row puts its column separators at the same positions"
    assert "(1, 384, 32), (16, 24)" in text
    assert repr(trace_shapes(b0, torch.randn(1, 3, 64, 96), depth=1)).startswith("module")
    html = trace_shapes(b0, torch.randn(1, 3, 64, 96), depth=1)._repr_html_()
    assert html.count("<tr>") == 1 + 5 and "OverlapPatchEmbed" not in html


def test_hooks_removed_after_exception(b0):
    ffn = b0.stages[1].blocks[0].ffn

    def broken(x, hw):
        raise RuntimeError("boom inside stage 2")

    ffn.forward = broken  # an instance attribute: the module's hooks still run around it
    try:
        with pytest.raises(RuntimeError, match="boom inside stage 2"):
            trace_shapes(b0, torch.randn(1, 3, 64, 96))
    finally:
        del ffn.forward
    assert not _hooks_left(b0)
    assert trace_shapes(b0, torch.randn(1, 3, 64, 96), depth=0).rows[0].output_shapes[0] == (1, 32, 16, 24)


def test_no_grad_and_bad_arguments(b0):
    out = trace_shapes(b0, torch.randn(1, 3, 64, 96), depth=0).output
    assert not out[0].requires_grad
    with pytest.raises(TypeError, match="nn.Module"):
        trace_shapes(lambda x: x, torch.randn(1))
    with pytest.raises(ValueError, match="depth"):
        trace_shapes(b0, torch.randn(1, 3, 64, 96), depth=-1)


def test_row_text_for_odd_values():
    row = TraceRow("x", "T", 0, ((3,), 7, [(1, 2), (3, 4)]), None)
    assert row.input == "(3,), 7, [(1, 2), (3, 4)]"
    assert row.output == ""

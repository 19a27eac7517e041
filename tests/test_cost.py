"""The cost model against torch's own FLOP counter, hand-worked figures and measured tensors."""
import pytest
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

import segformer_lite as sl
from segformer_lite.course.cost import attention_cost, encoder_cost

# On CPU, F.scaled_dot_product_attention runs aten._scaled_dot_product_flash_attention_for_cpu,
# which torch's FlopCounterMode leaves out of its table (it counts the CUDA flash kernel only).
# Count it with torch's own formula for the flash kernel, so the fused path is measured too.
# (custom_mapping hands the formula shapes, not tensors)
_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
             lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)}


def counted_flops(fn, *args, **kwargs) -> tuple[int, dict]:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        fn(*args, **kwargs)
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), ops


# grids that are neither square nor multiples of sr, so the SR conv drops a partial window
@pytest.mark.parametrize("sr, grid", [(1, (7, 5)), (2, (9, 14)), (4, (19, 11)), (8, (13, 22))])
@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "return_attention"])
def test_efficient_attention_flops_match_flop_counter(sr, grid, explicit):
    torch.manual_seed(0)
    dim, heads, batch = 40, 2, 2
    attn = sl.EfficientSelfAttention(dim, heads, sr).eval()
    h, w = grid
    x = torch.randn(batch, h * w, dim)
    counted, ops = counted_flops(attn, x, grid, return_attention=explicit)
    # which kernel ran: the fused one, or explicit batched matmuls for Q K^T and A V
    assert ("aten._scaled_dot_product_flash_attention_for_cpu" in ops) != explicit
    assert ("aten.bmm" in ops) == explicit
    cost = attention_cost(h, w, dim, heads, sr, batch)
    assert cost.flops == counted
    assert cost.kv_tokens == (h // sr) * (w // sr)


def test_full_attention_flops_match_flop_counter():
    attn = sl.FullSelfAttention(24, 3).eval()
    x = torch.randn(1, 9 * 7, 24)
    for explicit in (False, True):
        counted, _ = counted_flops(attn, x, (9, 7), return_attention=explicit)
        cost = attention_cost(9, 7, 24, num_heads=3)
        assert cost.kv_tokens == cost.tokens == 63
        assert cost.flops == counted


@pytest.mark.parametrize("variant, size", [("b0", (97, 130)), pytest.param("b2", (130, 97), marks=pytest.mark.slow)])
@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "return_attention"])
def test_encoder_flops_match_flop_counter(variant, size, explicit):
    cfg = sl.mit_config(variant)
    model = sl.MixTransformer(cfg).eval()
    counted, ops = counted_flops(model, torch.randn(2, 3, *size), return_attention=explicit)
    cost = encoder_cost(cfg, *size, batch=2)
    assert cost.flops == counted
    assert cost.flops == sum(s.flops for s in cost.stages)
    # every multiply is a Linear (addmm), a conv or an attention product; nothing else counted
    assert set(ops) <= {"aten.addmm", "aten.convolution", "aten.bmm",
                        "aten._scaled_dot_product_flash_attention_for_cpu"}


def test_hand_computed_512_stage1():
    # 512x512 input, stage-1 conv k7 s4 p3: (512 + 6 - 7) // 4 + 1 = 128, so N = 128 * 128 = 16384;
    # sr = 8 turns the 128x128 grid into 16x16: M = 256. MiT-B0 stage 1: C = 32, one head.
    stage1 = encoder_cost(sl.mit_config("b0"), 512, 512).stages[0]
    a = stage1.attention
    assert stage1.grid == (128, 128)
    assert (a.tokens, a.kv_tokens) == (16384, 256)
    assert a.score_elements == 4_194_304  # 16384 * 256
    assert a.score_bytes == 16 * 2**20  # 16 MiB of fp32 ...
    full = attention_cost(128, 128, 32, num_heads=1, sr_ratio=1)
    assert full.score_bytes == 2**30  # ... where full attention would need 1 GiB (16384**2 * 4)
    assert a.reduction == 64.0
    # Q K^T and A V: 2 * 16384 * 256 * 32 FLOPs each
    assert a.score_flops == 2 * 268_435_456


def test_hand_computed_small_layer():
    # a 4x6 grid, C = 8, 2 heads, sr = 2: N = 24, M = 2 * 3 = 6
    #   q 2*24*8*8 = 3072, kv 2*6*8*16 = 1536, proj 3072, sr conv 2*6*8*8*4 = 3072,
    #   Q K^T 2*24*6*8 = 2304, A V 2304: 15360 in all
    c = attention_cost(4, 6, 8, num_heads=2, sr_ratio=2)
    assert (c.tokens, c.kv_tokens, c.score_elements) == (24, 6, 2 * 24 * 6)
    assert (c.projection_flops, c.score_flops, c.flops) == (10752, 4608, 15360)


@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.float64, 8)])
def test_score_bytes_match_the_stored_attention_matrix(dtype, nbytes):
    attn = sl.EfficientSelfAttention(40, 5, sr_ratio=4).eval().to(dtype)
    x = torch.randn(3, 21 * 10, 40, dtype=dtype)
    with torch.no_grad():
        _, scores = attn(x, (21, 10), return_attention=True)
    measured = scores.untyped_storage().nbytes()  # what was really allocated for the matrix
    assert measured == attention_cost(21, 10, 40, 5, 4, batch=3, bytes_per_element=nbytes).score_bytes


def test_encoder_attention_maps_bytes():
    cfg = sl.mit_config("b0")
    with torch.no_grad():
        _, attns = sl.MixTransformer(cfg).eval()(torch.randn(1, 3, 64, 96), return_attention=True)
    measured = sum(a.untyped_storage().nbytes() for a in attns)
    cost = encoder_cost(cfg, 64, 96)
    assert measured == sum(s.depth * s.attention.score_bytes for s in cost.stages)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sr_ratio=8 is larger than the 7x30 token grid"):
        attention_cost(7, 30, 32, sr_ratio=8)
    with pytest.raises(ValueError, match="must divide"):
        attention_cost(8, 8, 30, num_heads=4)
    with pytest.raises(ValueError, match="height must be a positive int"):
        attention_cost(0, 8, 32)
    with pytest.raises(ValueError, match="too small"):
        encoder_cost(sl.mit_config("b0"), 16, 512)
    with pytest.raises(TypeError, match="MiTConfig"):
        encoder_cost("b0", 512, 512)


@pytest.mark.parametrize("design", ["mit", "sr-1111", "sr-16842"])
def test_the_experiments_flop_count_is_encoder_cost(design):
    """The sr experiment counts FLOPs with FlopCounterMode on the meta device (training/ may not use
    course/cost.py): the same numbers as the formulas."""
    from segformer_lite.training.ablations import build_design
    from segformer_lite.training.experiments import encoder_flops

    config = build_design(design).encoder.config
    for size in (64, 100):
        assert encoder_flops(design, size) == encoder_cost(config, size, size).flops

"""segformer_lite.grid against torch itself: the shapes nn.Conv2d really produces and the key
count EfficientSelfAttention's reduction conv really leaves, on odd sizes that no stride divides."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import segformer_lite as sl

# MiT's own numbers, and a made-up config with even kernels and a stride-1 stage, whose grids are
# not ceil(H / stride)
CONFIGS = {"b0": sl.mit_config("b0"),
           "odd": sl.MiTConfig(patch_sizes=(4, 2, 5, 3), strides=(3, 2, 2, 1), sr_ratios=(5, 3, 2, 2))}


def conv_out(hw: tuple[int, int], k: int, s: int, p: int) -> tuple[int, int] | None:
    """The (H', W') a real 1-channel Conv2d gives, or None when torch refuses the input."""
    conv = nn.Conv2d(1, 1, kernel_size=k, stride=s, padding=p)
    try:
        with torch.no_grad():
            return tuple(conv(torch.zeros(1, 1, *hw)).shape[-2:])
    except RuntimeError:  # "Kernel size can't be greater than actual input size"
        return None


def stages_run_in_torch(cfg: sl.MiTConfig, side: int) -> bool:
    """Whether every patch conv and every sequence-reduction conv of ``cfg`` accepts a
    ``side x side`` image, run with real (1-channel) convolutions."""
    hw = (side, side)
    for k, s, r in zip(cfg.patch_sizes, cfg.strides, cfg.sr_ratios):
        hw = conv_out(hw, k, s, k // 2)
        if hw is None or conv_out(hw, r, r, 0) is None:
            return False
    return True


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), k=st.integers(1, 11), s=st.integers(1, 9),
       p=st.integers(0, 6))
def test_conv_output_size_is_what_conv2d_gives(h, w, k, s, p):
    ours = (sl.conv_output_size(h, k, s, p), sl.conv_output_size(w, k, s, p))
    measured = conv_out((h, w), k, s, p)
    if measured is None:  # the kernel does not fit in the padded input along some axis
        assert min(ours) <= 0
    else:
        assert ours == measured


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("hw", [(29, 45), (97, 31), (225, 451), (130, 131)])
def test_stage_grids_are_what_the_patch_convs_give(name, hw):
    cfg, expected, x = CONFIGS[name], [], hw
    for k, s in zip(cfg.patch_sizes, cfg.strides):
        x = conv_out(x, k, s, k // 2)
        expected.append(x)
    assert sl.stage_grid_sizes(cfg, *hw) == expected


def test_stage_grids_are_the_encoders_feature_maps():
    torch.manual_seed(0)
    model = sl.MixTransformer(CONFIGS["odd"]).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 37, 53))
    assert [tuple(f.shape[-2:]) for f in feats] == sl.stage_grid_sizes(model.config, 37, 53)


@pytest.mark.parametrize("hw, sr", [((7, 10), 3), ((9, 14), 2), ((13, 22), 8), ((19, 11), 4),
                                    ((8, 8), 8), ((5, 3), 1), ((31, 17), 5)])
def test_reduced_grid_is_the_key_count_of_efficient_self_attention(hw, sr):
    torch.manual_seed(0)
    layer = sl.EfficientSelfAttention(8, num_heads=2, sr_ratio=sr).eval()
    h, w = hw
    x = torch.randn(1, h * w, 8)
    kh, kw = sl.reduced_grid(hw, sr)
    with torch.no_grad():
        _, attn = layer(x, hw, return_attention=True)
        assert attn.shape == (1, 2, h * w, kh * kw)  # (B, heads, N, M)
        assert layer.reduce(x, hw).shape == (1, kh * kw, 8)
        if sr > 1:
            assert tuple(layer.sr(torch.zeros(1, 8, h, w)).shape[-2:]) == (kh, kw)


def test_key_count_is_not_n_over_sr_squared_when_sr_does_not_divide_the_grid():
    # 7x10 tokens, sr 3: floor(7/3) * floor(10/3) = 2 * 3 = 6 keys, not 70 // 9 = 7
    layer = sl.EfficientSelfAttention(8, num_heads=1, sr_ratio=3)
    with torch.no_grad():
        m = layer.reduce(torch.zeros(1, 70, 8), (7, 10)).shape[1]
    assert m == 6 == 2 * 3 != 70 // 3**2
    assert sl.reduced_grid((7, 10), 3) == (2, 3)


def test_reduced_grid_refuses_what_the_reduction_conv_refuses():
    assert sl.reduced_grid((56, 56), 8) == (7, 7)
    assert sl.reduced_grid((4, 4), 4) == (1, 1)
    layer = sl.EfficientSelfAttention(8, num_heads=1, sr_ratio=8)
    with torch.no_grad(), pytest.raises(RuntimeError):
        layer(torch.zeros(1, 6 * 9, 8), (6, 9))
    with pytest.raises(ValueError, match=r"sr_ratio=8 is larger than the 6x9 token grid.*sr_ratio <= 6"):
        sl.reduced_grid((6, 9), 8)
    for bad, error in ((0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="sr_ratio must be a positive int"):
            sl.reduced_grid((6, 6), bad)


@pytest.mark.parametrize("cfg", [CONFIGS["b0"], CONFIGS["odd"], sl.MiTConfig(sr_ratios=(4, 2, 1, 1)),
                                 sl.MiTConfig(sr_ratios=(1, 1, 1, 1))], ids=["b0", "odd", "4211", "1111"])
def test_min_input_size_is_the_smallest_side_torch_runs(cfg):
    need = sl.min_input_size(cfg)
    assert stages_run_in_torch(cfg, need)
    assert not any(stages_run_in_torch(cfg, side) for side in range(1, need))

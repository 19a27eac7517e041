"""Property tests (hypothesis): shapes and parity over random resolutions, batch sizes and configs.

Expected shapes are computed here from the convolution arithmetic, not with segformer_lite's
helpers: MiT's stage-1 conv (k7 s4 p3) and later convs (k3 s2 p1) give ceil(side / stride),
so stage i has a grid of ceil(H / 4 * 2**i) x ceil(W / 4 * 2**i); the sequence-reduction conv
(kernel = stride = r, no padding) floors.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segformer_lite as sl
from hf_reference import rel_err

SETTINGS = settings(deadline=None, max_examples=15, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.fixture(scope="module")
def b0_pair(hf_b0, one_thread):
    return hf_b0, sl.from_transformers(hf_b0)


@SETTINGS
@given(h=st.integers(29, 130), w=st.integers(29, 130), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_shapes_and_parity_at_any_resolution(b0_pair, h, w, batch, seed):
    hf, ours = b0_pair
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        feats, attns = ours(x, return_attention=True)
        ref = hf(x, output_hidden_states=True).hidden_states
    widths, heads, srs, depths = (32, 64, 160, 256), (1, 2, 5, 8), (8, 4, 2, 1), (2, 2, 2, 2)
    grids = [(ceil_div(h, 4 * 2**i), ceil_div(w, 4 * 2**i)) for i in range(4)]  # strides 4, 8, 16, 32
    assert sl.stage_grid_sizes(ours.config, h, w) == grids
    assert [tuple(f.shape) for f in feats] == [(batch, c, gh, gw) for c, (gh, gw) in zip(widths, grids)]
    expected_attn = [(batch, n, gh * gw, (gh // r) * (gw // r))
                     for n, (gh, gw), r, d in zip(heads, grids, srs, depths) for _ in range(d)]
    assert [tuple(a.shape) for a in attns] == expected_attn
    for r, f in zip(ref, feats):
        assert rel_err(r, f) < 1e-5


@st.composite
def small_configs(draw):
    n = draw(st.integers(1, 4))
    heads = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    head_dim = draw(st.sampled_from([2, 4]))
    patch = draw(st.lists(st.sampled_from([2, 3, 5, 7]), min_size=n, max_size=n))
    strides = [draw(st.integers(1, min(k, 4 if i == 0 else 2))) for i, k in enumerate(patch)]
    return sl.MiTConfig(
        embed_dims=tuple(h * head_dim for h in heads), num_heads=tuple(heads),
        depths=tuple(draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))),
        sr_ratios=tuple(draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=n, max_size=n))),
        patch_sizes=tuple(patch), strides=tuple(strides), mlp_ratios=tuple(draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))),
        in_channels=draw(st.integers(1, 4)), drop_path_rate=0.0)


def conv_side(size: int, k: int, s: int) -> int:
    return (size + 2 * (k // 2) - k) // s + 1  # torch.nn.Conv2d, padding k // 2


@SETTINGS
@given(cfg=small_configs(), extra=st.integers(0, 9), batch=st.integers(1, 2))
def test_minimum_size_is_exact_for_any_config(cfg, extra, batch):
    """At min_input_size (and above) the encoder runs and its maps follow the conv arithmetic;
    one pixel less is refused with a ValueError, where the raw stages would hit a RuntimeError."""
    torch.manual_seed(0)
    model = sl.MixTransformer(cfg).eval()
    need = sl.min_input_size(cfg)
    h, w = need, need + extra
    with torch.no_grad():
        feats = model(torch.randn(batch, cfg.in_channels, h, w))
    for i, f in enumerate(feats):
        k, s = cfg.patch_sizes[i], cfg.strides[i]
        h, w = conv_side(h, k, s), conv_side(w, k, s)
        assert tuple(f.shape) == (batch, cfg.embed_dims[i], h, w)
        assert min(h, w) >= cfg.sr_ratios[i] and torch.isfinite(f).all()
    if need > 1:
        small = torch.randn(batch, cfg.in_channels, need - 1, need + extra)
        with pytest.raises(ValueError, match=f"at least {need}x{need}"):
            model(small)
        with torch.no_grad(), pytest.raises(RuntimeError):
            for stage in model.stages:
                small = stage(small)

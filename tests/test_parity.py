"""Parity with Hugging Face transformers' SegformerModel for the six released variants.

The architecture of all six (parameter counts, configs, drop-path rates, LayerNorms) is compared
on the meta device: no memory, no weights. Outputs are compared where they add coverage: B0
(narrow), B1 (wide) and B2 (deeper stages); B3-B5 are B2 with more blocks of the same kind. Each
reference model is built once per module (random unit-scale weights, see hf_reference), copied
with ``sl.from_transformers`` and run on a square and a non-square batch whose sides are not
multiples of 32, so the ceil-like strides and the sequence-reduction floors both show.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import segformer_lite as sl
from hf_reference import HEADS, HF_VARIANTS, SR_RATIOS, hf_config, hf_segformer, images, rel_err

SIZES = [(67, 67), (45, 83)]  # (H, W): square and non-square, neither a multiple of 32
BATCH = 2
# encoder parameter counts of the released checkpoints (from the NVlabs code)
RELEASED_PARAMS = {"b0": 3_319_392, "b1": 13_151_424, "b2": 24_196_288, "b3": 44_072_128,
                   "b4": 60_842_688, "b5": 81_443_008}


FORWARD_VARIANTS = ["b0", "b1", "b2"]


@pytest.fixture(scope="module", params=list(HF_VARIANTS))
def meta_pair(request):
    """(variant, transformers' model, ours), both built on the meta device from the variant's name."""
    from transformers import SegformerModel

    with torch.device("meta"):
        return request.param, SegformerModel(hf_config(request.param)), sl.MixTransformer(sl.mit_config(request.param))


@pytest.fixture(scope="module", params=FORWARD_VARIANTS)
def pair(request, one_thread):
    """(variant, hf model, our copy, {size: (hf outputs, our eager outputs, our sdpa outputs)})."""
    variant = request.param
    hf = hf_segformer(variant, seed=10 + list(HF_VARIANTS).index(variant))
    ours = sl.from_transformers(hf)
    runs = {}
    with torch.no_grad():
        for i, (h, w) in enumerate(SIZES):
            x = images(BATCH, 3, h, w, seed=i)
            ref = hf(x, output_hidden_states=True, output_attentions=True)
            feats, attns = ours(x, return_attention=True)
            runs[(h, w)] = (ref, (feats, attns), ours(x))
    yield variant, hf, ours, runs


def test_parameter_count_is_the_released_one(meta_pair):
    variant, hf, ours = meta_pair
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == RELEASED_PARAMS[variant]
    assert n_ours == sum(p.numel() for p in hf.parameters())


def test_converted_config_differs_from_the_named_one_only_in_eps(pair):
    variant, _, ours, _ = pair
    # the copy of transformers' model differs from the named variant only in transformers' eps
    assert dataclasses.replace(ours.config, norm_eps=1e-6, embed_norm_eps=1e-5) == sl.mit_config(variant)
    assert (ours.config.norm_eps, ours.config.embed_norm_eps) == (1e-5, 1e-5)


def test_named_config_is_the_released_architecture(meta_pair):
    variant, _, _ = meta_pair
    cfg = sl.mit_config(variant)
    assert list(cfg.embed_dims) == HF_VARIANTS[variant]["hidden_sizes"]
    assert list(cfg.depths) == HF_VARIANTS[variant]["depths"]
    assert list(cfg.num_heads) == HEADS and list(cfg.sr_ratios) == SR_RATIOS
    assert cfg.patch_sizes == (7, 3, 3, 3) and cfg.strides == (4, 2, 2, 2)
    assert cfg.mlp_ratios == (4, 4, 4, 4) and cfg.hidden_act == "gelu" and cfg.qkv_bias is True
    assert (cfg.norm_eps, cfg.embed_norm_eps) == (1e-6, 1e-5)  # the official code's two eps


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_stage_output_matches_transformers(pair, size):
    _, _, _, runs = pair
    ref, (feats, _), _ = runs[size]
    assert len(ref.hidden_states) == len(feats) == 4
    for i, (r, f) in enumerate(zip(ref.hidden_states, feats)):
        assert f.shape == r.shape and f.shape[0] == BATCH
        assert rel_err(r, f) < 1e-5, f"stage {i + 1}"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_attention_maps_match_transformers_eager(pair, size):
    variant, _, _, runs = pair
    ref, (_, attns), _ = runs[size]
    assert len(attns) == len(ref.attentions) == sum(HF_VARIANTS[variant]["depths"])
    for i, (r, a) in enumerate(zip(ref.attentions, attns)):
        assert a.shape == r.shape, f"block {i}"
        # probabilities in [0, 1]; float32 softmax rounding, ~1.1e-6 measured at worst
        assert (a - r).abs().max().item() < 3e-6, f"block {i}"
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a[..., 0]))  # rows are softmaxes


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fused_attention_path_equals_eager_path(pair, size):
    """return_attention=False takes F.scaled_dot_product_attention; it must give the same maps."""
    _, _, _, runs = pair
    ref, (eager, _), fused = runs[size]
    for i, (r, e, f) in enumerate(zip(ref.hidden_states, eager, fused)):
        assert rel_err(e, f) < 1e-5, f"stage {i + 1}"
        assert rel_err(r, f) < 1e-5, f"stage {i + 1}"


def test_drop_path_rates_match_transformers(meta_pair):
    """Stochastic depth grows linearly from 0 to drop_path_rate over all blocks, as in both
    references; transformers keeps an Identity where the rate is 0."""
    _, hf, ours = meta_pair
    ref = [getattr(layer.drop_path, "drop_prob", 0.0) for stage in hf.stages for layer in stage.blocks]
    n = len(ref)
    assert ref == pytest.approx([0.1 * i / (n - 1) for i in range(n)])
    got = [block.drop_path.p for stage in ours.stages for block in stage.blocks]
    assert got == pytest.approx(ref, abs=1e-7)


def test_layer_norms_match_transformers_in_number_and_eps(pair):
    """A wrong block eps (1e-6 instead of transformers' 1e-5) moves the outputs by only ~5e-6
    relative, inside the tolerance above, so the eps are compared directly. transformers' eps are
    those of a converted model (1e-5 everywhere), so ours is the converted copy."""
    _, hf, ours, _ = pair
    ref = [m.eps for m in hf.modules() if isinstance(m, torch.nn.LayerNorm)]
    got = [m.eps for m in ours.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(got) == len(ref)  # also catches a missing sequence-reduction norm
    assert sorted(got) == sorted(ref) == [1e-5] * len(ref)

"""The all-MLP decode head and SegFormer against transformers' SegformerForSemanticSegmentation."""
import pytest
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

import segformer_lite as sl
from segformer_lite.training.data import CLASSES
from segformer_lite.checkpoint import SHIPPED_CHECKPOINT, load_segformer, save_segformer


def _hf_segformer(variant: str, decoder_dim: int, num_labels: int, seed: int = 0):
    cfg = sl.mit_config(variant)
    torch.manual_seed(seed)
    hf = SegformerForSemanticSegmentation(SegformerConfig(
        hidden_sizes=list(cfg.embed_dims), depths=list(cfg.depths), num_attention_heads=list(cfg.num_heads),
        sr_ratios=list(cfg.sr_ratios), decoder_hidden_size=decoder_dim, num_labels=num_labels)).eval()
    with torch.no_grad():  # BatchNorm at init is the identity: give it statistics worth checking
        bn = hf.decode_head.batch_norm
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.2)
    return hf


@pytest.mark.parametrize("variant, decoder_dim, size", [("b0", 256, (64, 96)),
                                                         pytest.param("b2", 768, (64, 64), marks=pytest.mark.slow)])
def test_logits_equal_transformers(variant, decoder_dim, size):
    hf = _hf_segformer(variant, decoder_dim, num_labels=7)
    model = sl.from_transformers(hf)
    assert isinstance(model, sl.SegFormer)
    assert (model.num_classes, model.decoder_dim) == (7, decoder_dim)
    assert not model.training
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        got = model(x)
    assert got.shape == expected.shape == (2, 7, size[0] // 4, size[1] // 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_from_transformers_state_dict_gives_segformer_too():
    hf = _hf_segformer("b0", 256, num_labels=3)
    model = sl.from_transformers(hf.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, rtol=1e-5, atol=1e-5)


def test_concatenation_order_is_deepest_first():
    """The fuse conv's first D input channels read stage 4, its last D stage 1 (released order)."""
    torch.manual_seed(0)
    d = 3
    head = sl.AllMLPDecoder((4, 5, 6, 7), num_classes=2, decoder_dim=d).eval()
    with torch.no_grad():
        for lin in head.linear_c:
            lin.bias.zero_()  # a zero feature map then projects to zero
        head.fuse.weight.zero_()
        head.fuse.weight[:, :d] = torch.eye(d)[:, :, None, None]  # keep only the first D channels
    fused = {}
    for stage in range(4):
        feats = [torch.zeros(1, c, 8 // 2 ** i, 8 // 2 ** i) for i, c in enumerate((4, 5, 6, 7))]
        feats[stage] = torch.randn_like(feats[stage])  # signal in one stage only
        seen = []
        head.fuse.register_forward_hook(lambda m, i, o: seen.append(o))
        with torch.no_grad():
            head(feats)
        head.fuse._forward_hooks.clear()
        fused[stage] = seen[0].abs().max().item()
    assert fused[3] > 0 and fused[0] == fused[1] == fused[2] == 0


def test_output_is_quarter_resolution_and_attention_passes_through():
    model = sl.SegFormer(sl.mit_config("b0"), num_classes=4, decoder_dim=32).eval()
    logits, attns = model(torch.rand(2, 3, 64, 128), return_attention=True)
    assert logits.shape == (2, 4, 16, 32)
    assert len(attns) == sum(model.config.depths)
    assert model.predict(torch.rand(1, 3, 64, 96)).shape == (1, 64, 96)


def test_bad_arguments(tiny_segformer):
    with pytest.raises(TypeError, match="MiTConfig"):
        sl.SegFormer("b0", 4)
    with pytest.raises(ValueError, match="num_classes"):
        sl.SegFormer(sl.mit_config("b0"), 0)
    with pytest.raises(TypeError, match="decoder_dim"):
        sl.SegFormer(sl.mit_config("b0"), 4, decoder_dim=2.5)
    model = tiny_segformer(4)
    with pytest.raises(ValueError, match="input channels"):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.rand(3, 64, 64))


def test_save_load_roundtrip(tiny_segformer, tmp_path):
    torch.manual_seed(0)
    model = tiny_segformer(5).eval()
    with torch.no_grad():
        model.decode_head.norm.running_mean.normal_()
    path = save_segformer(model, tmp_path / "m.safetensors")
    loaded = load_segformer(path)
    assert (loaded.num_classes, loaded.decoder_dim, loaded.config) == (5, 16, model.config)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_load_bad_files(tiny_segformer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no SegFormer checkpoint"):
        load_segformer(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ValueError, match="not a SegFormer checkpoint"):
        load_segformer(corrupt)
    truncated = tmp_path / "truncated.safetensors"
    save_segformer(tiny_segformer(4), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a SegFormer checkpoint"):
        load_segformer(truncated)
    with pytest.raises(TypeError, match="path"):
        load_segformer(42)


def test_shipped_checkpoint_is_small_and_loads():
    assert SHIPPED_CHECKPOINT.is_file(), "the trained checkpoint ships as package data"
    assert SHIPPED_CHECKPOINT.stat().st_size <= 15 * 2 ** 20
    model = load_segformer()
    assert model.num_classes == len(CLASSES)


@pytest.mark.parametrize("num_labels", [5, 1])
def test_loss_equals_transformers(num_labels):
    """``model(images, labels)`` gives transformers' loss: logits upsampled to the labels' size
    (here 2x the image, so the upsampling matters), 255 ignored; one label: BCE with a mask."""
    hf = _hf_segformer("b0", 64, num_labels=num_labels)
    model = sl.from_transformers(hf)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 64, 96, generator=g)
    labels = torch.randint(0, max(num_labels, 2), (2, 128, 192), generator=g)
    labels[:, :40] = 255  # a band of ignored pixels
    with torch.no_grad():
        expected = hf(pixel_values=x, labels=labels)
        loss, logits = model(x, labels)
    torch.testing.assert_close(logits, expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, expected.loss, rtol=1e-5, atol=1e-6)
    # and the ignored band does matter: the loss without it differs
    with torch.no_grad():
        unmasked = model(x, labels.clamp(max=max(num_labels, 2) - 1))[0]
    assert abs(unmasked.item() - loss.item()) > 1e-3


def test_loss_with_attention_and_bad_labels(tiny_segformer):
    model = tiny_segformer(4).eval()
    x, labels = torch.rand(1, 3, 64, 64), torch.randint(0, 4, (1, 64, 64))
    loss, logits, attns = model(x, labels, return_attention=True)
    assert loss.ndim == 0 and logits.shape == (1, 4, 16, 16) and len(attns) == sum(model.config.depths)
    loss.backward()  # a training loss: gradients reach the encoder
    assert model.encoder.stages[0].patch_embed.proj.weight.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="integer tensor"):
        model(x, labels.float())
    with pytest.raises(ValueError, match=r"\(B, H, W\) with B = 1"):
        model(x, labels[0])


def test_feature_maps_are_ordinary_tensors():
    """Like the official code and transformers, ``feats[i].view(B, -1)`` works: the maps are
    contiguous NCHW, not channels-last views."""
    enc = sl.MixTransformer(sl.mit_config("b0")).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = enc(x)
        with_attention, _ = enc(x, return_attention=True)
    for f, g in zip(feats, with_attention):
        assert f.is_contiguous() and g.is_contiguous()  # NCHW-contiguous: False for a channels-last view

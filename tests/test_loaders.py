"""Real checkpoints that differ from the six released variants: supported, or refused aloud.

transformers configs with another ``hidden_act``, per-stage ``mlp_ratios`` or another number of
stages are checked against transformers itself (random unit-scale weights, hf_reference); a
trained mmseg checkpoint's decode head against the official ``SegFormerHead.forward`` written
out below on the state dict's tensors. Weights a loader leaves unused must be named.
"""
from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import segformer_lite as sl
from hf_reference import hf_segformer, images, rel_err
from test_checkpoint import assert_parity, hf_outputs, no_warnings, official_state_dict, our_outputs

SIZE = (45, 83)


def check_both_ways(hf, tmp_path, size=SIZE, tol=1e-5):
    """from_transformers(hf) and save_pretrained + load_pretrained(dir) both give transformers'
    stage outputs, without a warning; returns the loaded model."""
    x = images(2, 3, *size, seed=1)
    ref = hf_outputs(hf, x)
    with no_warnings():
        direct = sl.from_transformers(hf)
        hf.save_pretrained(tmp_path)
        loaded = sl.load_pretrained(tmp_path)
    assert direct.config == loaded.config
    assert_parity(ref, our_outputs(direct, x), tol)
    assert_parity(ref, our_outputs(loaded, x), tol)
    return loaded


# ---------------------------------------------------------------- hidden_act

EXACT_GELU = {"gelu", "gelu_python"}


@pytest.mark.parametrize("act", list(sl.mix_ffn.ACTIVATIONS))
def test_every_supported_activation_matches_transformers(act, one_thread):
    hf = hf_segformer("b0", seed=50, hidden_act=act)
    x = images(2, 3, *SIZE, seed=1)
    ref = hf_outputs(hf, x)
    with no_warnings():
        model = sl.from_transformers(hf)
    assert model.config.hidden_act == act
    assert_parity(ref, our_outputs(model, x))
    if act not in EXACT_GELU:  # the activation shows: the same weights with GELU fail parity
        gelu = sl.MixTransformer(sl.MiTConfig(**{**vars(model.config), "hidden_act": "gelu"}))
        gelu.load_state_dict(model.state_dict())
        assert max(rel_err(r, g) for r, g in zip(ref, our_outputs(gelu.eval(), x))) > 5e-5


@pytest.mark.parametrize("act", ["relu", "gelu_new"])
def test_activation_comes_from_config_json(act, tmp_path, one_thread):
    assert check_both_ways(hf_segformer("b0", seed=50, hidden_act=act), tmp_path).config.hidden_act == act


@pytest.mark.parametrize("act", ["gelu_10", "laplace", "prelu"])
def test_other_activations_are_refused(act, hf_b0, tmp_path):
    hf = hf_segformer("b0", seed=51, hidden_act=act)
    with pytest.raises(ValueError, match=f"hidden_act='{act}' is not supported.*gelu_new"):
        sl.from_transformers(hf)
    hf_b0.save_pretrained(tmp_path)  # a GELU model whose config.json then names another activation
    text = (tmp_path / "config.json").read_text().replace('"hidden_act": "gelu"', f'"hidden_act": "{act}"')
    assert f'"hidden_act": "{act}"' in text
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=f"config.json: hidden_act='{act}' is not supported"):
        sl.load_pretrained(tmp_path)


# ---------------------------------------------------------------- mlp_ratios and stage counts

def test_per_stage_mlp_ratios(tmp_path, one_thread):
    """The paper's Table 6 ratios (8, 8, 4, 4): read off the weights, stage by stage."""
    hf = hf_segformer("b0", seed=52, mlp_ratios=[8, 8, 4, 4])
    model = check_both_ways(hf, tmp_path)
    assert model.config.mlp_ratios == (8, 8, 4, 4)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())
    # a lone weights file (no config.json): heads and strides from b0, ratios from the shapes
    x = images(2, 3, *SIZE, seed=1)
    assert_parity(hf_outputs(hf, x), our_outputs(sl.load_pretrained(tmp_path / "model.safetensors"), x))


STAGES = {
    3: dict(hidden_sizes=[32, 64, 160], depths=[2, 1, 2], num_attention_heads=[1, 2, 5],
            sr_ratios=[8, 4, 2], patch_sizes=[7, 3, 3], strides=[4, 2, 2], mlp_ratios=[4, 8, 4]),
    5: dict(hidden_sizes=[16, 32, 48, 64, 96], depths=[1, 2, 1, 1, 2], num_attention_heads=[1, 2, 3, 4, 6],
            sr_ratios=[8, 4, 2, 1, 1], patch_sizes=[7, 3, 3, 3, 3], strides=[4, 2, 2, 2, 2],
            mlp_ratios=[4, 4, 4, 2, 2]),
}


@pytest.mark.parametrize("n", sorted(STAGES))
def test_other_numbers_of_stages(n, tmp_path, one_thread):
    hf = hf_segformer("b0", seed=54, num_encoder_blocks=n, **STAGES[n])
    model = check_both_ways(hf, tmp_path, size=(70, 90))
    assert model.config.num_stages == n and model.config.strides == tuple(STAGES[n]["strides"])


def test_three_stage_segformer_logits(tmp_path, one_thread):
    seg = hf_segformer("b0", seed=55, cls_name="SegformerForSemanticSegmentation", num_labels=3,
                       num_encoder_blocks=3, decoder_hidden_size=48, **STAGES[3])
    x = images(2, 3, 64, 80, seed=2)
    with torch.no_grad():
        ref = seg(pixel_values=x).logits
    with no_warnings():
        model = sl.from_transformers(seg)
        seg.save_pretrained(tmp_path)
        loaded = sl.load_pretrained(tmp_path)
    for m in (model, loaded):
        assert isinstance(m, sl.SegFormer) and m.decode_head.fuse.in_channels == 3 * 48
        with torch.no_grad():
            assert rel_err(ref, m(x)) <= 1e-5


def test_a_lone_file_of_an_unknown_architecture_is_refused(tmp_path, one_thread):
    """Without config.json nothing tells the head counts and strides of a non-variant."""
    hf = hf_segformer("b0", seed=56, num_encoder_blocks=3, **STAGES[3])
    save_file(hf.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"\(32, 64, 160\).*match no MiT variant.*config\.json"):
        sl.load_pretrained(tmp_path / "model.safetensors")


# ---------------------------------------------------------------- image classification

def test_image_classification_model_is_refused_and_its_file_warns(tmp_path, one_thread):
    hf = hf_segformer("b0", seed=57, cls_name="SegformerForImageClassification", num_labels=10)
    with pytest.raises(TypeError, match=r"SegformerForImageClassification.*classifier.*"
                                        r"from_transformers\(model\.segformer\)"):
        sl.from_transformers(hf)
    with pytest.raises(ValueError, match=r"image classifier \(classifier\.\*"):
        sl.from_transformers(hf.state_dict())
    x = images(2, 3, *SIZE, seed=1)
    ref = hf_outputs(hf.segformer, x)
    with no_warnings():
        assert_parity(ref, our_outputs(sl.from_transformers(hf.segformer), x))
    # a file (nvidia/mit-b0 on the Hub is one): its encoder loads, the classifier is named
    hf.save_pretrained(tmp_path)
    unused = r"2 weights left unused: classifier\.bias, classifier\.weight \(the classifier of SegformerForImage"
    with pytest.warns(sl.UnusedWeightsWarning, match=unused):
        model = sl.load_pretrained(tmp_path)
    assert isinstance(model, sl.MixTransformer)
    assert_parity(ref, our_outputs(model, x))


# ---------------------------------------------------------------- mmseg checkpoints

def official_head_logits(sd: dict, feats: list[torch.Tensor]) -> torch.Tensor:
    """NVlabs ``SegFormerHead.forward`` (mmseg/models/decode_heads/segformer_head.py) in eval
    mode, on the checkpoint's own tensors: MLP = flatten + Linear per stage, back to a map,
    bilinear resize to c1's size, concat [c4, c3, c2, c1], ``linear_fuse`` = mmcv ConvModule
    (1x1 conv without bias, BN, ReLU), dropout (off), ``linear_pred`` 1x1 conv."""
    c1, c2, c3, c4 = feats
    n = c1.shape[0]

    def mlp(i, c):
        x = c.flatten(2).transpose(1, 2)  # (n, h*w, C_i)
        x = x @ sd[f"decode_head.linear_c{i}.proj.weight"].T + sd[f"decode_head.linear_c{i}.proj.bias"]
        return x.permute(0, 2, 1).reshape(n, -1, c.shape[2], c.shape[3])

    def resize(x):
        return F.interpolate(x, size=c1.shape[2:], mode="bilinear", align_corners=False)

    _c = torch.cat([resize(mlp(4, c4)), resize(mlp(3, c3)), resize(mlp(2, c2)), mlp(1, c1)], dim=1)
    _c = F.conv2d(_c, sd["decode_head.linear_fuse.conv.weight"])
    _c = F.batch_norm(_c, sd["decode_head.linear_fuse.bn.running_mean"], sd["decode_head.linear_fuse.bn.running_var"],
                      sd["decode_head.linear_fuse.bn.weight"], sd["decode_head.linear_fuse.bn.bias"],
                      training=False, eps=1e-5)  # SyncBN at eval: the running statistics
    return F.conv2d(F.relu(_c), sd["decode_head.linear_pred.weight"], sd["decode_head.linear_pred.bias"])


def mmseg_head(in_dims, dim: int, num_classes: int, seed: int) -> dict:
    """A trained-looking mmseg SegFormerHead state dict (conv_seg included, as mmseg saves it)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return torch.randn(*shape, generator=g) / math.sqrt(math.prod(shape[1:]))

    sd = {}
    for i, c in enumerate(in_dims, start=1):
        sd[f"decode_head.linear_c{i}.proj.weight"] = w(dim, c)
        sd[f"decode_head.linear_c{i}.proj.bias"] = 0.3 * torch.randn(dim, generator=g)
    sd["decode_head.linear_fuse.conv.weight"] = w(dim, 4 * dim, 1, 1)
    sd["decode_head.linear_fuse.bn.weight"] = 1 + 0.2 * torch.randn(dim, generator=g)
    sd["decode_head.linear_fuse.bn.bias"] = 0.2 * torch.randn(dim, generator=g)
    sd["decode_head.linear_fuse.bn.running_mean"] = 0.5 * torch.randn(dim, generator=g)
    sd["decode_head.linear_fuse.bn.running_var"] = 0.5 + 1.5 * torch.rand(dim, generator=g)
    sd["decode_head.linear_fuse.bn.num_batches_tracked"] = torch.tensor(160000)
    sd["decode_head.linear_pred.weight"] = w(num_classes, dim, 1, 1)
    sd["decode_head.linear_pred.bias"] = 0.3 * torch.randn(num_classes, generator=g)
    sd["decode_head.conv_seg.weight"] = w(num_classes, dim, 1, 1)
    sd["decode_head.conv_seg.bias"] = torch.zeros(num_classes)
    return sd


@pytest.fixture(scope="module")
def mmseg(hf_b0, one_thread):
    """(encoder, state dict) of an mmseg-style ADE20K checkpoint: the official encoder names, and
    those under backbone. beside a SegFormerHead with 150 classes."""
    encoder = official_state_dict(hf_b0.state_dict(), with_head=False)
    sd = {f"backbone.{k}": v for k, v in encoder.items()}
    sd.update(mmseg_head((32, 64, 160, 256), dim=64, num_classes=150, seed=58))
    return encoder, sd


def test_mmseg_checkpoint_loads_with_the_official_head(mmseg, tmp_path):
    encoder, sd = mmseg
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    torch.save({"meta": {"env_info": "mmseg", "iter": 160000}, "state_dict": sd}, path)
    unused = (r"2 weights left unused: decode_head\.conv_seg\.bias, decode_head\.conv_seg\.weight "
              r"\(mmseg's BaseDecodeHead\.conv_seg, which the released SegFormerHead never calls")
    with pytest.warns(sl.UnusedWeightsWarning, match=unused):
        model = sl.load_pretrained(path)
    assert isinstance(model, sl.SegFormer) and not model.training
    assert (model.num_classes, model.decoder_dim) == (150, 64)
    x = images(2, 3, 67, 93, seed=9)  # stage grids 17x24, 9x12, 5x6, 3x3: a real resize
    with torch.no_grad():
        feats = model.encoder(x)
        logits = model(x)
    assert rel_err(official_head_logits(sd, feats), logits) <= 1e-5
    # the encoder is exactly the one mit_b0.pth gives
    torch.save(encoder, tmp_path / "mit_b0.pth")
    with no_warnings():
        alone = sl.load_pretrained(tmp_path / "mit_b0.pth")
    for a, b in zip(feats, our_outputs(alone, x)):
        assert torch.equal(a, b)


def test_the_official_head_check_can_fail(mmseg, tmp_path):
    """The reference sees a wrong concatenation order: the fuse conv's input blocks reversed
    (what concatenating [c1, c2, c3, c4] would amount to) move the logits far."""
    _, sd = mmseg
    torch.save({"state_dict": sd}, tmp_path / "ade.pth")
    with pytest.warns(sl.UnusedWeightsWarning):
        model = sl.load_pretrained(tmp_path / "ade.pth")
    x = images(1, 3, 67, 93, seed=9)
    d = model.decoder_dim
    with torch.no_grad():
        ref = official_head_logits(sd, model.encoder(x))
        w = model.decode_head.fuse.weight
        w.copy_(torch.cat([w[:, 3 * d:], w[:, 2 * d:3 * d], w[:, d:2 * d], w[:, :d]], dim=1))
        assert rel_err(ref, model(x)) > 1e-2


def test_other_heads_load_the_encoder_and_are_named(mmseg, tmp_path):
    """An mmseg checkpoint with another decode head (UPerHead's names here) and an auxiliary
    head: the encoder loads, every head key is named in the warning."""
    encoder, _ = mmseg
    sd = {f"backbone.{k}": v for k, v in encoder.items()}
    sd["decode_head.lateral_convs.0.conv.weight"] = torch.zeros(8, 32, 1, 1)
    sd["decode_head.conv_seg.weight"] = torch.zeros(3, 8, 1, 1)
    sd["auxiliary_head.conv_seg.weight"] = torch.zeros(3, 8, 1, 1)
    torch.save({"state_dict": sd}, tmp_path / "upernet.pth")
    with pytest.warns(sl.UnusedWeightsWarning) as record:
        model = sl.load_pretrained(tmp_path / "upernet.pth")
    assert isinstance(model, sl.MixTransformer)
    message = str(record[0].message)
    assert "3 weights left unused" in message
    assert "decode_head.lateral_convs.0.conv.weight (a decode head other than SegFormer's" in message
    assert "decode_head.conv_seg.weight (mmseg's" in message
    assert "auxiliary_head.conv_seg.weight (an auxiliary head, used in training only)" in message


# ---------------------------------------------------------------- clean loads, wrong files

def test_clean_checkpoints_load_without_a_warning(hf_b0, tmp_path):
    with no_warnings():
        sl.load_segformer()
        sl.from_transformers(hf_b0)
        hf_b0.save_pretrained(tmp_path)
        sl.load_pretrained(tmp_path)
        torch.save(official_state_dict(hf_b0.state_dict(), with_head=False), tmp_path / "mit_b0.pth")
        sl.load_pretrained(tmp_path / "mit_b0.pth")


def test_a_segformer_state_dict_of_our_own_loads_as_a_segformer(tmp_path):
    model = sl.load_segformer()
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    with no_warnings():
        again = sl.load_pretrained(tmp_path / "mine.pth")
    assert isinstance(again, sl.SegFormer) and again.num_classes == model.num_classes
    x = images(1, 3, 64, 64, seed=3)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_a_save_segformer_file_points_to_load_segformer(tmp_path):
    with pytest.raises(ValueError, match=r"written by save_segformer: load it with load_segformer\(path\)"):
        sl.load_pretrained(sl.checkpoint.SHIPPED_CHECKPOINT)


def test_load_segformer_points_to_load_pretrained(hf_b0, tmp_path):
    hf_b0.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a SegFormer checkpoint written by save_segformer.*load_pretrained"):
        sl.load_segformer(tmp_path / "model.safetensors")


class Payload:
    def __reduce__(self):
        return (print, ("this would run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the plain pickle
@pytest.mark.parametrize("kind, reason", [
    ("code", "weights-only unpickling refused it: Unsupported global: GLOBAL print)"),
    ("pickle", "weights-only unpickling refused it: Unsupported operand"),
    ("bytes", "weights-only unpickling refused it: Unsupported operand")])
def test_unreadable_files_get_no_unsafe_advice(kind, reason, tmp_path):
    """torch's weights_only=True refusal advises weights_only=False, which would run the file's
    code: the message keeps only the diagnosis."""
    path = tmp_path / "x.pth"
    if kind == "code":
        torch.save({"w": torch.zeros(1), "p": Payload()}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        path.write_bytes(b"\x80\x02" + b"\xe3" * 64)  # protocol 2, then an opcode that does not exist
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        sl.load_pretrained(path)
    message = str(e.value)
    assert reason in message
    assert "weights_only" not in message and "trust" not in message and "\x1b" not in message

"""Checkpoint round trips: every on-disk layout load_pretrained promises, against transformers.

The legacy (transformers <= 5.8) and official (NVlabs mit_bX.pth) key names are written here
with rename tables of the test's own (after transformers' conversion_mapping.py and the NVlabs
mix_transformer.py), not with segformer_lite's, so a wrong table in the package cannot hide.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import save_file

import segformer_lite as sl
from hf_reference import hf_segformer, images, rel_err

SIZE = (45, 83)


def hf_outputs(hf, x):
    with torch.no_grad():
        return hf(x, output_hidden_states=True).hidden_states


def our_outputs(model, x):
    with torch.no_grad():
        return model(x)


def assert_parity(ref, got, tol=1e-5):
    assert len(got) == len(ref)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert rel_err(r, g) <= tol, f"stage {i + 1}"


@contextmanager
def no_warnings():
    """Any warning inside is an error: a clean checkpoint loads without a word."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# transformers >= 5.9 names (what SegformerModel.state_dict() gives) -> <= 5.8 names
_TO_LEGACY = [
    (r"^stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"^stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"^stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"\.layernorm_before\.", ".layer_norm_1."),
    (r"\.layernorm_after\.", ".layer_norm_2."),
]


def legacy_state_dict(sd: dict) -> dict:
    out = {}
    for key, value in sd.items():
        for pattern, repl in _TO_LEGACY:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def official_state_dict(sd: dict, with_head: bool = True) -> dict:
    """transformers >= 5.9 SegformerModel names -> NVlabs MixVisionTransformer names, K and V
    stacked into the fused ``attn.kv`` (K rows first), plus an ImageNet head like mit_bX.pth."""
    leaf = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.q_proj": "attn.q",
            "attention.o_proj": "attn.proj", "attention.sequence_reduction.sequence_reduction": "attn.sr",
            "attention.sequence_reduction.layer_norm": "attn.norm", "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv"}
    out = {}
    for key, value in sd.items():
        if m := re.fullmatch(r"stages\.(\d)\.patch_embeddings\.(proj|layer_norm)\.(\w+)", key):
            out[f"patch_embed{int(m[1]) + 1}.{'norm' if m[2] == 'layer_norm' else 'proj'}.{m[3]}"] = value
        elif m := re.fullmatch(r"stages\.(\d)\.layer_norm\.(\w+)", key):
            out[f"norm{int(m[1]) + 1}.{m[2]}"] = value
        elif m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            block = f"block{int(m[1]) + 1}.{m[2]}"
            if m[3] == "attention.k_proj":
                v = sd[key.replace("k_proj", "v_proj")]
                out[f"{block}.attn.kv.{m[4]}"] = torch.cat([value, v], dim=0)
            elif m[3] != "attention.v_proj":
                out[f"{block}.{leaf[m[3]]}.{m[4]}"] = value
        else:
            raise AssertionError(f"unexpected transformers key {key}")
    if with_head:  # the released ImageNet checkpoints carry their classifier
        width = sd["stages.3.layer_norm.weight"].shape[0]
        g = torch.Generator().manual_seed(5)
        out["head.weight"] = torch.randn(1000, width, generator=g)
        out["head.bias"] = torch.randn(1000, generator=g)
    return out


@pytest.fixture(scope="module")
def b0(hf_b0, one_thread):
    x = images(2, 3, *SIZE, seed=3)
    return hf_b0, x, hf_outputs(hf_b0, x)


@pytest.fixture(scope="module")
def b2(one_thread):
    """A variant with uneven depths (3, 4, 6, 3), so depth inference is exercised."""
    hf = hf_segformer("b2", seed=20)
    x = images(2, 3, 67, 67, seed=4)
    return hf, x, hf_outputs(hf, x)


@pytest.mark.parametrize("which", ["b0", "b2"])
def test_save_pretrained_directory(which, request, tmp_path):
    hf, x, ref = request.getfixturevalue(which)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model = sl.load_pretrained(tmp_path)
    assert not model.training
    assert model.config == sl.from_transformers(hf).config
    assert_parity(ref, our_outputs(model, x))


def test_legacy_table_is_what_transformers_reads(b0, tmp_path):
    """The test's own legacy names are the real thing: transformers loads them without a
    missing or unexpected key and gives the same numbers."""
    from transformers import SegformerModel

    hf, x, ref = b0
    torch.save(legacy_state_dict(hf.state_dict()), tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    again, info = SegformerModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    again.set_attn_implementation("eager")  # as the reference; from_pretrained picks sdpa
    assert_parity(ref, hf_outputs(again.eval(), x), tol=0)


@pytest.mark.parametrize("layout", ["new", "legacy"])
@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_transformers_directory_layouts(b0, tmp_path, layout, filename):
    hf, x, ref = b0
    sd = hf.state_dict() if layout == "new" else legacy_state_dict(hf.state_dict())
    assert ("stages.0.blocks.0.attention.q_proj.weight" in sd) == (layout == "new")
    assert ("encoder.block.0.0.attention.self.query.weight" in sd) == (layout == "legacy")
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / filename)
    else:
        torch.save(sd, tmp_path / filename)
    hf.config.to_json_file(tmp_path / "config.json")
    assert_parity(ref, our_outputs(sl.load_pretrained(tmp_path), x))
    # the same file alone (no config.json next to it): the variant is read off the shapes
    alone = tmp_path / "alone"
    alone.mkdir()
    (tmp_path / filename).rename(alone / filename)
    assert_parity(ref, our_outputs(sl.load_pretrained(alone / filename), x))


@pytest.mark.parametrize("layout", ["new", "legacy"])
def test_segformer_prefix_from_semantic_segmentation_model(tmp_path, layout, one_thread):
    """SegformerForSemanticSegmentation keeps the encoder under ``segformer.``; its encoder
    weights load on their own (decode head left out)."""
    seg = hf_segformer("b0", seed=30, cls_name="SegformerForSemanticSegmentation", num_labels=5)
    sd = {k: v for k, v in seg.state_dict().items() if k.startswith("segformer.")}
    assert sd and all(k.startswith("segformer.stages.") for k in sd)
    if layout == "legacy":
        sd = {"segformer." + k: v for k, v in
              legacy_state_dict({k.removeprefix("segformer."): v for k, v in sd.items()}).items()}
    save_file(sd, tmp_path / "encoder.safetensors")
    x = images(1, 3, 50, 70, seed=6)
    assert_parity(hf_outputs(seg.segformer, x), our_outputs(sl.load_pretrained(tmp_path / "encoder.safetensors"), x))


def test_semantic_segmentation_save_pretrained_directory(tmp_path, one_thread):
    """A whole SegformerForSemanticSegmentation saved by transformers (the encoder under
    segformer., decode head as decode_head.linear_c.N.proj, the names transformers writes):
    load_pretrained gives a SegFormer with transformers' logits, and nothing left unused."""
    seg = hf_segformer("b0", seed=31, cls_name="SegformerForSemanticSegmentation", num_labels=4)
    seg.save_pretrained(tmp_path)
    with no_warnings():
        model = sl.load_pretrained(tmp_path)
    assert isinstance(model, sl.SegFormer) and (model.num_classes, model.decoder_dim) == (4, 256)
    x = images(2, 3, 37, 61, seed=8)
    assert_parity(hf_outputs(seg.segformer, x), our_outputs(model.encoder, x))
    with torch.no_grad():
        assert rel_err(seg(pixel_values=x).logits, model(x)) <= 1e-5


def test_head_counts_come_from_config_json(tmp_path, one_thread):
    """Head counts leave no trace in the weights: a directory's config.json supplies them."""
    hf = hf_segformer("b0", seed=40, num_attention_heads=[1, 2, 4, 8])
    hf.save_pretrained(tmp_path)
    model = sl.load_pretrained(tmp_path)
    assert model.config.num_heads == (1, 2, 4, 8)
    x = images(2, 3, 40, 40, seed=7)
    assert_parity(hf_outputs(hf, x), our_outputs(model, x))


@pytest.mark.parametrize("with_head", [True, False], ids=["with-imagenet-head", "encoder-only"])
def test_official_layout_differs_from_transformers_only_in_eps(b0, tmp_path, with_head):
    hf, x, ref = b0
    path = tmp_path / "mit_b0.pth"
    torch.save(official_state_dict(hf.state_dict(), with_head=with_head), path)
    if with_head:  # the ImageNet classifier has no place in an encoder: named, not dropped silently
        with pytest.warns(sl.UnusedWeightsWarning,
                          match=r"2 weights left unused: head\.bias, head\.weight \(the ImageNet classifier"):
            model = sl.load_pretrained(path)
    else:
        with no_warnings():
            model = sl.load_pretrained(path)
    # the official code's eps: 1e-6 in block and stage norms, 1e-5 in patch-embed and SR norms
    eps = {name: m.eps for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    for name, value in eps.items():
        official = 1e-5 if name.endswith(("patch_embed.norm", "attn.norm")) else 1e-6
        assert value == official, name
    got = our_outputs(model, x)
    assert_parity(ref, got, tol=1e-4)  # close, the eps aside
    assert any(not torch.equal(g, f) for g, f in zip(got, our_outputs(sl.from_transformers(hf), x)))
    # with transformers' eps swapped in, the official weights give exactly the transformers copy
    same_eps = sl.MixTransformer(dataclasses.replace(model.config, norm_eps=1e-5, embed_norm_eps=1e-5))
    same_eps.load_state_dict(model.state_dict())
    swapped = our_outputs(same_eps.eval(), x)
    for g, f in zip(swapped, our_outputs(sl.from_transformers(hf), x)):
        assert torch.equal(g, f)
    assert_parity(ref, swapped)


def test_to_official_state_dict_matches_the_official_names(b0, tmp_path):
    hf, x, _ = b0
    ours = sl.from_transformers(hf)
    expected = official_state_dict(hf.state_dict(), with_head=False)
    got = sl.to_official_state_dict(ours)
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    torch.save(got, tmp_path / "mit_b0.pth")
    back = sl.load_pretrained(tmp_path / "mit_b0.pth")
    assert back.config == sl.mit_config("b0")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ours.state_dict().values()))


def test_training_script_wrappers_are_unwrapped(b0, tmp_path):
    hf, x, ref = b0
    torch.save({"state_dict": hf.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    assert_parity(ref, our_outputs(sl.load_pretrained(tmp_path / "ckpt.pth"), x))


def test_loading_never_unpickles_code(b0, tmp_path):
    """weights_only=True: a pickle that would run a function (here: create a file) is refused
    as a non-checkpoint, and the function never runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    sd = dict(official_state_dict(b0[0].state_dict()), payload=Payload())
    torch.save(sd, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        sl.load_pretrained(tmp_path / "evil.pth")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pth", weights_only=False)  # the payload is real: unsafe load runs it
    assert marker.exists()



def test_half_precision_checkpoint_loads_as_float32_on_the_cpu(b0, tmp_path):
    """The loaders build the model on the meta device and adopt the checkpoint's tensors: every
    parameter and buffer must come out real, on the CPU, in float32, trainable."""
    hf, x, ref = b0
    save_file({k: v.half() for k, v in hf.state_dict().items()}, tmp_path / "model.safetensors")
    model = sl.load_pretrained(tmp_path / "model.safetensors")
    tensors = list(model.parameters()) + list(model.buffers())
    assert {(t.device.type, t.dtype) for t in tensors} == {("cpu", torch.float32)}
    assert all(p.requires_grad for p in model.parameters())
    assert_parity(ref, our_outputs(model, x), tol=1e-2)  # float16 weights: ~1e-3 off


def test_from_transformers_shares_no_storage(b0):
    """The model owns copies: changing the transformers model afterwards changes nothing here."""
    hf, x, ref = b0
    model = sl.from_transformers(hf)
    ours = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    assert not ours & {t.untyped_storage().data_ptr() for t in hf.state_dict().values()}
    assert_parity(ref, our_outputs(model, x))

"""Bad input: a clear TypeError / ValueError (FileNotFoundError for a missing file) that names
what was expected and what came, never a raw torch RuntimeError; nothing on disk is touched."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import segformer_lite as sl
from hf_reference import hf_segformer


@pytest.fixture(scope="module")
def enc():
    return sl.MixTransformer(sl.mit_config("b0")).eval()


def raises(exc, *fragments):
    """pytest.raises that also demands every fragment (expected and received) in the message."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ---------------------------------------------------------------- images into the encoder

def test_three_d_tensor(enc):
    with raises(ValueError, "4-D", "(B, C, H, W)", "3-D", "(3, 64, 64)", "images[None]"):
        enc(torch.zeros(3, 64, 64))


def test_five_d_tensor(enc):
    with raises(ValueError, "4-D", "5-D", "(1, 2, 3, 64, 64)"):
        enc(torch.zeros(1, 2, 3, 64, 64))


def test_wrong_channel_count(enc):
    with raises(ValueError, "3 input channels", "(2, 1, 64, 64)"):
        enc(torch.zeros(2, 1, 64, 64))


def test_integer_image(enc):
    with raises(TypeError, "floating-point", "torch.uint8"):
        enc(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_float64_into_float32_model(enc):
    with raises(TypeError, "torch.float32", "torch.float64"):
        enc(torch.zeros(1, 3, 64, 64, dtype=torch.float64))


@pytest.mark.parametrize("images", [np.zeros((1, 3, 64, 64), np.float32), [[0.0]], None],
                         ids=["ndarray", "list", "None"])
def test_not_a_tensor(enc, images):
    with raises(TypeError, "torch.Tensor", type(images).__name__):
        enc(images)


def test_images_on_another_device(enc):
    with raises(ValueError, "device cpu", "meta"):
        enc(torch.zeros(1, 3, 64, 64, device="meta"))


def independent_min_size(strides=(4, 8, 16, 32), sr_ratios=(8, 4, 2, 1)) -> int:
    """Smallest side s at which every stage grid ceil(s / T_i) holds a whole sr_i window:
    ceil(s / T) >= r  <=>  s > (r - 1) * T."""
    return max((r - 1) * t + 1 for t, r in zip(strides, sr_ratios))


def test_minimum_size_is_stated_and_exact(enc):
    need = independent_min_size()
    assert need == 29
    assert all(sl.min_input_size(sl.mit_config(v)) == need for v in sl.VARIANTS)
    with torch.no_grad():
        feats = enc(torch.zeros(2, 3, need, need))  # the minimum itself works ...
        assert [f.shape[-1] for f in feats] == [8, 4, 2, 1]
        enc(torch.zeros(1, 3, need, 200))
    for h, w in [(need - 1, need - 1), (need - 1, 200), (200, need - 1)]:  # ... one less does not
        with raises(ValueError, "too small", f"{h}x{w}", f"{need}x{need}"):
            enc(torch.zeros(1, 3, h, w))


def test_the_size_check_is_needed():
    """Without the check, one pixel under the minimum ends in torch's own RuntimeError, both in
    transformers' model and in our stages run by hand."""
    hf = hf_segformer("b0", seed=0)
    x = torch.zeros(1, 3, 28, 28)
    with torch.no_grad(), pytest.raises(RuntimeError, match="[Kk]ernel size"):
        hf(x)
    ours = sl.from_transformers(hf)
    with torch.no_grad(), pytest.raises(RuntimeError):
        for stage in ours.stages:
            x = stage(x)


def test_custom_config_minimum_follows_its_sr_ratios():
    cfg = sl.MiTConfig(sr_ratios=(4, 2, 1, 1))
    assert sl.min_input_size(cfg) == independent_min_size(sr_ratios=(4, 2, 1, 1)) == 13
    model = sl.MixTransformer(cfg).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 13, 13))
        with raises(ValueError, "12x12", "13x13"):
            model(torch.zeros(1, 3, 12, 12))


def test_empty_batch_works(enc):
    with torch.no_grad():
        feats, attns = enc(torch.zeros(0, 3, 45, 83), return_attention=True)
    assert [tuple(f.shape) for f in feats] == [(0, 32, 12, 21), (0, 64, 6, 11), (0, 160, 3, 6), (0, 256, 2, 3)]
    assert len(attns) == 8 and tuple(attns[0].shape) == (0, 1, 12 * 21, 1 * 2)


# ---------------------------------------------------------------- configuration and modules

def test_unknown_variant_lists_the_valid_ones():
    with raises(ValueError, "'b7'", "b0, b1, b2, b3, b4, b5"):
        sl.mit_config("b7")
    with raises(TypeError, "str", "int"):
        sl.mit_config(0)


def test_num_heads_must_divide_the_width():
    with raises(ValueError, "num_heads=3", "160"):
        sl.MiTConfig(num_heads=(1, 2, 3, 8))
    with raises(ValueError, "num_heads=3", "dim=64"):
        sl.EfficientSelfAttention(64, 3)


@pytest.mark.parametrize("field, value, exc, fragments", [
    ("depths", (2, 2, 0, 2), ValueError, ["depths", "positive", "(2, 2, 0, 2)"]),
    ("depths", (2, 2, 2), ValueError, ["4 entries", "'depths': 3"]),
    ("depths", (True, 2, 2, 2), TypeError, ["depths", "ints", "(True, 2, 2, 2)"]),
    ("embed_dims", (32.0, 64, 160, 256), TypeError, ["embed_dims", "ints", "32.0"]),
    ("mlp_ratios", (4, 4, 0, 4), ValueError, ["mlp_ratios", "positive ints", "(4, 4, 0, 4)"]),
    ("mlp_ratios", (8, 8, 4), ValueError, ["4 entries", "'mlp_ratios': 3"]),
    ("hidden_act", "xielu", ValueError, ["hidden_act='xielu'", "not supported", "gelu_new", "relu"]),
    ("hidden_act", print, TypeError, ["hidden_act", "activation name", "print"]),
    ("in_channels", "3", TypeError, ["in_channels", "positive int", "'3'"]),
    ("norm_eps", 0.0, ValueError, ["norm_eps", "positive", "0.0"]),
    ("drop_path_rate", 1.0, ValueError, ["drop_path_rate", "[0, 1)", "1.0"])])
def test_config_fields_are_validated(field, value, exc, fragments):
    with raises(exc, *fragments):
        sl.MiTConfig(**{field: value})


def test_encoder_wants_a_config():
    with raises(TypeError, "MiTConfig", "str"):
        sl.MixTransformer("b0")


def test_token_count_must_match_the_grid():
    with raises(ValueError, "N=10", "3*4 = 12"):
        sl.tokens_to_image(torch.zeros(1, 10, 4), (3, 4))
    with raises(ValueError, "(B, N, C)", "4-D"):
        sl.tokens_to_image(torch.zeros(1, 1, 12, 4), (3, 4))
    with raises(TypeError, "(H, W)", "None"):
        sl.tokens_to_image(torch.zeros(1, 12, 4), None)
    with raises(ValueError, "(B, C, H, W)", "3-D"):
        sl.image_to_tokens(torch.zeros(3, 4, 4))


# ---------------------------------------------------------------- checkpoints

def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def load_refused(path, exc, *fragments):
    """load_pretrained(path) raises exc naming the fragments, and the file is left as it was."""
    before = digest(path)
    with raises(exc, *fragments):
        sl.load_pretrained(path)
    assert digest(path) == before


def test_random_bytes(tmp_path):
    for name in ("mit_b0.pth", "model.safetensors", "weights.bin"):
        (tmp_path / name).write_bytes(os.urandom(4096))
        load_refused(tmp_path / name, ValueError, name, "not a readable checkpoint", "state dict")


def test_text_file(tmp_path):
    (tmp_path / "mit_b0.pth").write_text("these are not the weights you are looking for\n")
    load_refused(tmp_path / "mit_b0.pth", ValueError, "mit_b0.pth", "not a readable checkpoint")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the plain pickle
def test_pickle_of_a_list(tmp_path):
    torch.save([1, 2, 3], tmp_path / "a.pth")
    load_refused(tmp_path / "a.pth", ValueError, "list", "not a state dict")
    with open(tmp_path / "b.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    load_refused(tmp_path / "b.pkl", ValueError, "b.pkl", "not a readable checkpoint")


@pytest.mark.parametrize("content, fragments", [
    ({1: torch.zeros(1)}, ["str keys and Tensor values", "1: Tensor"]),
    ({"a": 1}, ["str keys and Tensor values", "'a': int"]),
    ({}, ["not a SegFormer/MiT checkpoint", "no keys at all"]),
    ({"fc.weight": torch.zeros(2)}, ["patch_embed1.proj.weight", "fc.weight"])],
    ids=["int-keys", "non-tensor-value", "empty", "foreign-keys"])
def test_dicts_that_are_not_mit_state_dicts(tmp_path, content, fragments):
    torch.save(content, tmp_path / "x.pth")
    load_refused(tmp_path / "x.pth", ValueError, *fragments)


def test_missing_file_and_directory(tmp_path):
    with raises(FileNotFoundError, "nope.pth"):
        sl.load_pretrained(tmp_path / "nope.pth")
    with raises(FileNotFoundError, "nope"):
        sl.load_pretrained(tmp_path / "nope")
    with raises(FileNotFoundError, "model.safetensors", "pytorch_model.bin", str(tmp_path)):
        sl.load_pretrained(tmp_path)  # a directory without weights
    with raises(TypeError, "path", "int"):
        sl.load_pretrained(3)


@pytest.fixture(scope="module")
def official_sd(enc):
    return sl.to_official_state_dict(enc)


def test_missing_unexpected_and_misshaped_keys_are_listed(official_sd, tmp_path):
    sd = dict(official_sd)
    del sd["block2.1.mlp.fc2.bias"]
    sd["block1.0.attn.extra.weight"] = torch.zeros(3)
    sd["block3.0.mlp.fc1.weight"] = torch.zeros(7, 160)
    torch.save(sd, tmp_path / "mit_b0.pth")
    load_refused(tmp_path / "mit_b0.pth", ValueError,
                 "missing keys (1): stages.1.blocks.1.ffn.fc2.bias",
                 "unexpected keys (1): stages.0.blocks.0.attn.extra.weight",
                 "mis-shaped keys (1): stages.2.blocks.0.ffn.fc1.weight: expected (640, 160), got (7, 160)")


def test_long_key_lists_are_shortened(official_sd, tmp_path):
    """Every Mix-FFN but the first gone: the count is exact, the list stops at 20 names."""
    sd = {k: v for k, v in official_sd.items() if ".mlp." not in k or k.startswith("block1.0.")}
    torch.save(sd, tmp_path / "mit_b0.pth")
    with raises(ValueError, "mit_b0.pth", "does not fit", "missing keys (42): stages.0.blocks.1.ffn.", " ...") as e:
        sl.load_pretrained(tmp_path / "mit_b0.pth")
    assert str(e.value).count(".ffn.") == 20


def test_own_layout_with_stray_keys(enc, tmp_path):
    sd = dict(enc.state_dict(), **{"optimizer.step": torch.tensor(3)})
    torch.save(sd, tmp_path / "mine.pth")
    load_refused(tmp_path / "mine.pth", ValueError, "unexpected keys (1): optimizer.step")


def test_transformers_state_dict_with_bad_keys(hf_b0):
    sd = dict(hf_b0.state_dict())
    del sd["stages.0.blocks.0.attention.v_proj.weight"]  # K without its V cannot be fused
    sd["stages.3.blocks.1.mlp.fc2.weight"] = torch.zeros(256, 5)
    with raises(ValueError, "missing keys (1): stages.0.blocks.0.attn.kv.weight",
                "unexpected keys (1): stages.0.blocks.0.attn.k.weight",
                "stages.3.blocks.1.ffn.fc2.weight: expected (256, 1024), got (256, 5)"):
        sl.from_transformers(sd)


def test_truncated_checkpoint(official_sd, tmp_path):
    """A stage missing altogether: no variant has those widths and depths."""
    sd = {k: v for k, v in official_sd.items() if not k.startswith(("block4.", "patch_embed4.", "norm4."))}
    torch.save(sd, tmp_path / "mit_b0.pth")
    load_refused(tmp_path / "mit_b0.pth", ValueError, "(32, 64, 160)", "b0, b1, b2, b3, b4, b5")


def test_truncated_file(official_sd, tmp_path):
    torch.save(official_sd, tmp_path / "mit_b0.pth")
    data = (tmp_path / "mit_b0.pth").read_bytes()
    (tmp_path / "mit_b0.pth").write_bytes(data[: len(data) // 2])  # an interrupted download
    load_refused(tmp_path / "mit_b0.pth", ValueError, "not a readable checkpoint")


def test_broken_config_json(hf_b0, tmp_path):
    hf_b0.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    before = digest(tmp_path / "config.json")
    with raises(ValueError, "config.json", "JSONDecodeError"):
        sl.load_pretrained(tmp_path)
    assert digest(tmp_path / "config.json") == before
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": "many"}))
    with raises(ValueError, "num_attention_heads", "list of ints", "'many'"):
        sl.load_pretrained(tmp_path)


def test_from_transformers_wrong_things(official_sd):
    with raises(TypeError, "SegformerModel", "str"):
        sl.from_transformers("nvidia/mit-b0")
    with raises(TypeError, "Segformer", "Linear"):
        sl.from_transformers(torch.nn.Linear(2, 2))
    with raises(ValueError, "transformers-layout", "official"):
        sl.from_transformers(official_sd)


# ---------------------------------------------------------------- the shared argument checks
def test_check_int_takes_ints_and_names_what_is_wrong():
    from segformer_lite.config import check_int

    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("padding", 0, 0) == 0 and check_int("seed", -5, None) == -5
    for bad in (True, 2.0, "3", None):
        with raises(TypeError, "n must be a positive int", repr(bad)):
            check_int("n", bad)
    with raises(ValueError, "n must be a positive int", "0"):
        check_int("n", 0)
    with raises(ValueError, "padding must be an int >= 0", "-1"):
        check_int("padding", -1, 0)


def test_int_pair_takes_two_ints():
    from segformer_lite.tokens import int_pair

    assert int_pair("hw", (np.int64(2), 3)) == (2, 3) and int_pair("hw", torch.Size([4, 5])) == (4, 5)
    for bad in (3, (1, 2, 3), (True, 1), (1.0, 2), "ab"):
        with raises(TypeError, "hw must be a pair of ints (H, W)", repr(bad)):
            int_pair("hw", bad)


def test_image_to_tensor_scales_uint8_and_keeps_floats():
    from segformer_lite.tokens import image_to_tensor

    photo = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    x = image_to_tensor(photo)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(photo).permute(2, 0, 1).float() / 255)
    floats = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    assert torch.equal(image_to_tensor(floats), torch.from_numpy(floats).permute(2, 0, 1))
    for bad in (np.zeros((4, 5)), np.zeros((4, 5, 4)), torch.zeros(4, 5, 3)):
        with raises(ValueError, "(H, W, 3) image array"):
            image_to_tensor(bad)


# ---------------------------------------------------------------- the export command
# As evaluate's (tests/test_train.py): each expected failure is one line on stderr, exit status 2,
# refused before anything is exported (the output directory is never created).

HIDE_ONNXSCRIPT = "import sys; sys.modules['onnxscript'] = None"  # `import onnxscript` now fails


def export_command(tmp_path, *args, before=""):
    """``python -m segformer_lite export --out tmp_path/out ARGS`` in a subprocess; ``before`` runs
    first in that process (to hide a module, as a library-only install would lack it)."""
    out = tmp_path / "out"
    code = f"{before}\nimport sys\nfrom segformer_lite.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "export", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert not out.exists(), f"{args}: something was exported before the refusal: {sorted(out.iterdir())}"
    return proc


def refused_in_one_line(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("segformer-lite export: error: ") and "Traceback" not in proc.stderr
    assert all(f in proc.stderr for f in fragments), (fragments, proc.stderr)


def test_export_refuses_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "nonexistent.safetensors"
    proc = export_command(tmp_path, "--checkpoint", str(missing))
    refused_in_one_line(proc)
    assert proc.stderr == f"segformer-lite export: error: no SegFormer checkpoint at {missing}\n"


@pytest.mark.parametrize("name", ["weights.safetensors", "weights.pth", "weights"])
def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path, name):
    (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(4096))
    refused_in_one_line(export_command(tmp_path, "--checkpoint", str(tmp_path / name)),
                        name, "is not a SegFormer checkpoint")


@pytest.mark.parametrize("sizes, bad", [(["10", "10"], "10 10"), (["97", "130", "--check-size", "64", "28"], "64 28")])
def test_export_refuses_a_check_size_below_the_minimum(tmp_path, sizes, bad):
    refused_in_one_line(export_command(tmp_path, "--format", "torch", "--check-size", *sizes),
                        f"--check-size {bad}", "too small", "at least 29x29")


def test_export_without_the_export_extra_names_the_install_command(tmp_path):
    hidden = subprocess.run([sys.executable, "-c", HIDE_ONNXSCRIPT + "\nimport onnxscript"],
                            capture_output=True, text=True, timeout=60)
    assert "ModuleNotFoundError" in hidden.stderr  # the simulation holds: onnxscript cannot be imported
    for fmt in ("onnx", "both"):
        refused_in_one_line(export_command(tmp_path, "--format", fmt, before=HIDE_ONNXSCRIPT),
                            f"--format {fmt} needs the export extra", "onnxscript is not installed",
                            'pip install ".[export]"')
    from segformer_lite.export import export_onnx  # the library call says the same, as an ImportError
    sys.modules["onnxscript"], saved = None, sys.modules.get("onnxscript")
    try:
        with raises(ModuleNotFoundError, "export_onnx needs the export extra", 'pip install ".[export]"'):
            export_onnx(sl.SegFormer(sl.mit_config("b0"), 2), tmp_path / "x.onnx")
    finally:
        if saved is None:
            del sys.modules["onnxscript"]
        else:
            sys.modules["onnxscript"] = saved

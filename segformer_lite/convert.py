"""Foreign checkpoints in, foreign layouts out: Hugging Face transformers and the official NVlabs code.

:func:`from_transformers` and :func:`load_pretrained` convert transformers models and checkpoints
and the official ``mit_bX.pth`` files to :class:`MixTransformer`, and a checkpoint with SegFormer's
decode head (``SegformerForSemanticSegmentation``, a trained mmseg checkpoint) to :class:`SegFormer`;
:func:`to_official_state_dict` gives this package's weights the official names.

Three key layouts are understood, all renamed to this package's own names:

* transformers >= 5.9: ``stages.0.blocks.0.attention.q_proj.weight`` ...
* transformers <= 5.8: ``encoder.block.0.0.attention.self.query.weight`` ...
  (either may carry a ``segformer.`` prefix, as in ``SegformerForSemanticSegmentation``)
* official NVlabs: ``block1.0.attn.q.weight``, fused ``attn.kv`` (rows ``[:C]`` K, ``[C:]`` V);
  the trained mmseg checkpoints hold the same under ``backbone.`` beside ``decode_head.``

Weights a loader leaves unused (an ImageNet classifier, mmseg's ``conv_seg``, an auxiliary head)
are named in an :class:`UnusedWeightsWarning`; nothing is dropped silently.

transformers' separate K and V are stacked into the fused ``kv`` Linear. transformers' LayerNorm
eps is 1e-5 everywhere, the official code's 1e-6 in block and stage norms: each format keeps its own.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path

import torch

from .checkpoint import listed, load_weights, on_meta, read_safetensors, why_unreadable
from .config import VARIANTS, MiTConfig
from .decoder import SegFormer
from .encoder import MixTransformer
from .mix_ffn import ACTIVATIONS

__all__ = ["from_transformers", "load_pretrained", "to_official_state_dict", "canonical_state_dict",
           "detect_format", "infer_config", "UnusedWeightsWarning"]

_OFFICIAL = [
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.patch_embed."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".ffn.dwconv."),
    (r"\.mlp\.fc(\d)\.", r".ffn.fc\1."),
]
# transformers <= 5.8 names -> transformers >= 5.9 names (as transformers' own conversion map)
_HF_LEGACY = [
    (r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"layer_norm_1\.", "layernorm_before."),
    (r"layer_norm_2\.", "layernorm_after."),
]
# transformers >= 5.9 names -> ours (k_proj / v_proj become temporary .k / .v, fused below)
_HF = [
    (r"^stages\.(\d+)\.patch_embeddings\.layer_norm\.", r"stages.\1.patch_embed.norm."),
    (r"^stages\.(\d+)\.patch_embeddings\.proj\.", r"stages.\1.patch_embed.proj."),
    (r"^stages\.(\d+)\.layer_norm\.", r"stages.\1.norm."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.q_proj\.", ".attn.q."),
    (r"\.attention\.k_proj\.", ".attn.k."),
    (r"\.attention\.v_proj\.", ".attn.v."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".ffn.dwconv."),
    (r"\.mlp\.fc(\d)\.", r".ffn.fc\1."),
]
# transformers' decode-head names -> ours: >= 5.9 linear_projections, <= 5.8 (and the files
# save_pretrained writes) linear_c
_HF_HEAD = [
    (r"^decode_head\.(linear_projections|linear_c)\.(\d+)\.proj\.", r"decode_head.linear_c.\2."),
    (r"^decode_head\.linear_fuse\.", "decode_head.fuse."),
    (r"^decode_head\.batch_norm\.", "decode_head.norm."),
]
# the official (mmseg SegFormerHead) decode-head names -> ours
_OFFICIAL_HEAD = [
    (r"^decode_head\.linear_c(\d)\.proj\.", lambda m: f"decode_head.linear_c.{int(m[1]) - 1}."),
    (r"^decode_head\.linear_fuse\.conv\.", "decode_head.fuse."),  # mmcv ConvModule: conv, bn, ReLU
    (r"^decode_head\.linear_fuse\.bn\.", "decode_head.norm."),
    (r"^decode_head\.linear_pred\.", "decode_head.classifier."),
]
_HEAD_RULES = {"transformers": _HF_HEAD, "official": _OFFICIAL_HEAD, "segformer_lite": []}
# Keys no segformer_lite model holds, and why they are left out (the first matching prefix wins)
_UNUSED = [
    ("decode_head.conv_seg.", "mmseg's BaseDecodeHead.conv_seg, which the released SegFormerHead never "
                              "calls: linear_pred is its classifier"),
    ("decode_head.", "a decode head other than SegFormer's all-MLP head"),
    ("auxiliary_head.", "an auxiliary head, used in training only"),
    ("head.", "the ImageNet classifier of mit_bX.pth: segformer_lite has no classification head"),
    ("classifier.", "the classifier of SegformerForImageClassification: segformer_lite has no "
                    "classification head"),
]


class UnusedWeightsWarning(UserWarning):
    """A checkpoint holds weights that the model it was loaded into does not use (named)."""


def _rename(sd: dict, rules) -> dict:
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def detect_format(sd: dict) -> str:
    """``"transformers"``, ``"official"`` or ``"segformer_lite"`` from the key names."""
    keys = list(sd)
    if any(re.match(r"^(segformer\.)?(encoder\.block\.|stages\.\d+\.patch_embeddings\.)", k) for k in keys):
        return "transformers"
    if any(k.startswith(("patch_embed1.", "backbone.patch_embed1.")) for k in keys):
        return "official"
    if any(k.startswith(("stages.0.patch_embed.", "encoder.stages.0.patch_embed.")) for k in keys):
        return "segformer_lite"  # a MixTransformer's state dict, or a SegFormer's
    sample = ", ".join(keys[:5]) or "no keys at all"
    raise ValueError("not a SegFormer/MiT checkpoint: expected transformers keys "
                     "('stages.0.patch_embeddings.proj.weight' or 'encoder.block.0.0...'), official "
                     f"keys ('patch_embed1.proj.weight', 'block1.0.attn.q.weight') or segformer_lite keys; got {sample}")


def canonical_state_dict(sd: dict) -> tuple[str, dict, dict]:
    """Rename any supported layout to this package's names.

    Returns ``(format, encoder_state, other)`` where ``other`` holds the keys that are not part
    of the encoder (a decode head, a classifier), still under their original names.
    """
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise TypeError(f"expected a state dict (dict of str -> Tensor), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state dict values must be tensors; not tensors: {bad[:10]}")
    fmt = detect_format(sd)
    if fmt == "transformers":
        enc = {k.removeprefix("segformer."): v for k, v in sd.items()
               if not k.startswith("decode_head.") and not k.startswith("classifier.")}
        other = {k: v for k, v in sd.items() if k.startswith(("decode_head.", "classifier."))}
        enc = _fuse_kv(_rename(_rename(enc, _HF_LEGACY), _HF))
    elif fmt == "official":
        # mit_bX.pth ImageNet checkpoints also carry the classification head, and the trained
        # mmseg checkpoints keep the encoder under "backbone." beside a decode head: not encoder
        other = {k: v for k, v in sd.items() if k.startswith(("head.", "decode_head.", "auxiliary_head."))}
        enc = _rename({k.removeprefix("backbone."): v for k, v in sd.items() if k not in other}, _OFFICIAL)
    else:  # anything else than a head is left in the encoder, to be reported as unexpected
        other = {k: v for k, v in sd.items() if k.startswith(("head.", "decode_head."))}
        enc = {k.removeprefix("encoder."): v for k, v in sd.items() if k not in other}
    return fmt, enc, other


def _split_head(fmt: str, other: dict) -> tuple[dict, dict]:
    """:func:`canonical_state_dict`'s ``other`` -> ``(head, unused)``: SegFormer's all-MLP decode
    head under this package's names (``{}`` if there is none), and ``{key: why}`` for the rest."""
    keys = [k for k in other if k.startswith("decode_head.") and not k.startswith("decode_head.conv_seg.")]
    head = _rename({k: other[k] for k in keys}, _HEAD_RULES[fmt])
    if "decode_head.classifier.weight" not in head:  # another kind of head (or none): not ours
        keys, head = [], {}
    unused = {k: next(why for prefix, why in _UNUSED if k.startswith(prefix)) for k in other if k not in keys}
    return head, unused


def _warn_unused(unused: dict, source: str) -> None:
    """One :class:`UnusedWeightsWarning` naming every unused key (sorted, grouped by why); the
    warning points at the caller of the public loader that calls this."""
    if not unused:
        return
    groups = {}
    for key, why in unused.items():
        groups.setdefault(why, []).append(key)
    names = "; ".join(f"{listed(sorted(keys))} ({why})" for why, keys in groups.items())
    warnings.warn(f"{source}: {len(unused)} weights left unused: {names}", UnusedWeightsWarning, stacklevel=3)


def _fuse_kv(sd: dict) -> dict:
    """Stack transformers' separate K and V Linears into the fused ``kv`` (K rows first)."""
    out = {}
    for key, value in sd.items():
        m = re.match(r"^(.*\.attn)\.([kv])\.(weight|bias)$", key)
        if not m:
            out[key] = value
            continue
        prefix, which, kind = m.groups()
        other = f"{prefix}.{'v' if which == 'k' else 'k'}.{kind}"
        if other not in sd:
            out[key] = value  # left unfused: reported as unexpected by the loader
        elif which == "k":
            out[f"{prefix}.kv.{kind}"] = torch.cat([value, sd[other]], dim=0)
    return out


def infer_config(sd: dict, **overrides) -> MiTConfig:
    """An :class:`MiTConfig` from the shapes in a canonical (renamed) encoder state dict.

    The number of stages, widths, depths, kernel sizes, sr_ratios, per-stage mlp_ratios and
    qkv_bias are read off the shapes. Head counts, strides and the activation leave no trace in
    the weights: they come from ``overrides`` (a transformers config) or else from the MiT variant
    with the same widths and depths, with the released GELU.
    """
    try:
        n = 1 + max(int(m[1]) for k in sd if (m := re.match(r"^stages\.(\d+)\.", k)))
        dims, depths, kernels, srs, ratios = [], [], [], [], []
        for i in range(n):
            w = sd[f"stages.{i}.patch_embed.proj.weight"]
            dims.append(w.shape[0])
            kernels.append(w.shape[-1])
            depths.append(1 + max(int(m[1]) for k in sd
                                  if (m := re.match(rf"^stages\.{i}\.blocks\.(\d+)\.", k))))
            sr = sd.get(f"stages.{i}.blocks.0.attn.sr.weight")
            srs.append(1 if sr is None else sr.shape[-1])
            fc1 = sd.get(f"stages.{i}.blocks.0.ffn.fc1.weight")
            # a missing or odd Mix-FFN keeps the released ratio 4: the load then names the misfit
            whole = fc1 is not None and fc1.shape[0] >= dims[-1] and fc1.shape[0] % dims[-1] == 0
            ratios.append(fc1.shape[0] // dims[-1] if whole else 4)
        in_channels = sd["stages.0.patch_embed.proj.weight"].shape[1]
        qkv_bias = "stages.0.blocks.0.attn.q.bias" in sd
    except (KeyError, ValueError, IndexError) as e:
        raise ValueError(f"cannot read the MiT architecture off this checkpoint "
                         f"(missing or odd key: {e}); is it a complete encoder?") from None
    fields = dict(embed_dims=tuple(dims), depths=tuple(depths), patch_sizes=tuple(kernels),
                  sr_ratios=tuple(srs), mlp_ratios=tuple(ratios),
                  in_channels=in_channels, qkv_bias=qkv_bias)
    match = next((v for v in VARIANTS.values()
                  if v.embed_dims == fields["embed_dims"] and v.depths == fields["depths"]), None)
    if match is None and not {"num_heads", "strides"} <= overrides.keys():
        raise ValueError(f"widths {fields['embed_dims']} and depths {fields['depths']} match no MiT "
                         f"variant ({', '.join(VARIANTS)}), and head counts and strides cannot be read "
                         "from weights: load a transformers directory with its config.json, or the model "
                         "itself with from_transformers")
    if match is None:
        return MiTConfig(**fields, **overrides)
    return dataclasses.replace(match, **{**fields, **overrides})


def _build(cfg: MiTConfig, encoder_sd: dict, head_sd: dict, source: str) -> MixTransformer | SegFormer:
    """A :class:`MixTransformer` from a canonical encoder state dict, or a :class:`SegFormer` when
    a decode head (:func:`_split_head`) comes with it: class count and decoder width are read
    off the classifier's shape. Eval mode."""
    if not head_sd:
        model = on_meta(MixTransformer, cfg)
        load_weights(model, encoder_sd, source)
        return model.eval()
    num_classes, decoder_dim = head_sd["decode_head.classifier.weight"].shape[:2]
    model = on_meta(SegFormer, cfg, int(num_classes), int(decoder_dim))
    load_weights(model, {**{f"encoder.{k}": v for k, v in encoder_sd.items()}, **head_sd}, source)
    return model.eval()


def _config_from_hf(hf_config, sd: dict) -> MiTConfig:
    """The weights give the architecture; the transformers config what they cannot show."""
    return infer_config(sd, num_heads=tuple(hf_config.num_attention_heads), strides=tuple(hf_config.strides),
                        hidden_act=hf_config.hidden_act, drop_path_rate=float(hf_config.drop_path_rate),
                        norm_eps=1e-5, embed_norm_eps=1e-5)


def from_transformers(model_or_state_dict) -> MixTransformer | SegFormer:
    """A :class:`MixTransformer` with the weights of a transformers ``SegformerModel`` (or of its
    state dict), giving transformers' numbers exactly; a :class:`SegFormer` for a
    ``SegformerForSemanticSegmentation``. ``SegformerForImageClassification`` is refused: this
    package has no classification head (``from_transformers(model.segformer)`` takes its encoder).

    From a model, the config gives head counts, strides and ``hidden_act``; a bare state dict
    carries none, so it must be a released variant's (b0 ... b5) with GELU. Eval mode.
    """
    if isinstance(model_or_state_dict, torch.nn.Module):
        hf = model_or_state_dict
        if not hasattr(hf, "config") or not hasattr(hf.config, "hidden_sizes"):
            raise TypeError(f"expected a transformers Segformer model or a state dict, got "
                            f"{type(hf).__name__}")
        fmt, sd, other = canonical_state_dict(hf.state_dict())
        if any(k.startswith("classifier.") for k in other):
            raise TypeError(f"expected a SegformerModel or SegformerForSemanticSegmentation, got "
                            f"{type(hf).__name__} with an image classifier (classifier.*), which "
                            "segformer_lite has no counterpart for; from_transformers(model.segformer) "
                            "converts its encoder")
        cfg = _config_from_hf(hf.config, sd)
    elif isinstance(model_or_state_dict, dict):
        fmt, sd, other = canonical_state_dict(model_or_state_dict)
        if fmt != "transformers":
            raise ValueError(f"expected a transformers-layout state dict, got the {fmt} layout "
                             "(use load_pretrained for official checkpoints)")
        if any(k.startswith("classifier.") for k in other):
            raise ValueError("this state dict holds an image classifier (classifier.*, as in "
                             "SegformerForImageClassification), which segformer_lite has no counterpart "
                             "for; leave the classifier.* keys out to convert the encoder alone")
        cfg = dataclasses.replace(infer_config(sd), norm_eps=1e-5, embed_norm_eps=1e-5)
    else:
        raise TypeError(f"expected a transformers SegformerModel or a state dict, got "
                        f"{type(model_or_state_dict).__name__}")
    head, unused = _split_head(fmt, other)
    model = _build(cfg, sd, head, "from transformers")
    _warn_unused(unused, "from_transformers")
    return model


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            meta, sd = read_safetensors(path)
        else:
            meta = {}
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to parse means: this file is not a checkpoint
        raise ValueError(f"{path} is not a readable checkpoint: expected a torch.save'd or safetensors "
                         f"state dict ({type(e).__name__}: {why_unreadable(e)})") from None
    if {"config", "num_classes", "decoder_dim"} <= meta.keys():  # written by save_segformer
        raise ValueError(f"{path} is a SegFormer file written by save_segformer: load it with "
                         "load_segformer(path), which restores its exact architecture")
    for wrapper in ("state_dict", "model"):  # training scripts often wrap the weights
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict (dict of str -> Tensor)")
    odd = [f"{k!r}: {type(v).__name__}" for k, v in sd.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(f"{path} is not a state dict: expected str keys and Tensor values, got "
                         f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}")
    return sd


def _read_hf_config(path: Path) -> dict:
    """The architecture fields of a transformers ``config.json`` that weights cannot show."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable transformers config ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} should hold a JSON object (a transformers config), got {type(raw).__name__}")
    fields = {}
    for key, field in (("num_attention_heads", "num_heads"), ("strides", "strides")):
        value = raw.get(key)
        if value is None:
            continue  # not a Segformer config: fall back to the variant read off the shapes
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise ValueError(f"{path}: expected {key} to be a list of ints, got {value!r}")
        fields[field] = tuple(value)
    act = raw.get("hidden_act")
    if act is not None:
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise ValueError(f"{path}: hidden_act={act!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        fields["hidden_act"] = act
    return fields


def load_pretrained(path) -> MixTransformer | SegFormer:
    """Load a local checkpoint; the architecture is read off the weights' shapes.

    ``path`` is a transformers directory (``model.safetensors`` or ``pytorch_model.bin``,
    with its ``config.json`` when present) or a single ``.safetensors`` / ``.bin`` / ``.pth``
    file in the transformers, official or mmseg layout. Nothing is downloaded. Returns a
    :class:`MixTransformer`, or a :class:`SegFormer` when the checkpoint holds SegFormer's decode
    head (``SegformerForSemanticSegmentation``, a trained mmseg checkpoint); eval mode. Weights
    left unused are named in an :class:`UnusedWeightsWarning`. Without a ``config.json`` the head
    counts, strides and GELU of the released variant with the same widths are assumed.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"expected a path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    hf_fields = {}
    if path.is_dir():
        files = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
        if not files:
            raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in directory {path}")
        if (path / "config.json").is_file():
            hf_fields = _read_hf_config(path / "config.json")
        path = files[0]
    elif not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    fmt, sd, other = canonical_state_dict(_read_state_dict(path))
    head, unused = _split_head(fmt, other)
    overrides = {}
    if fmt == "transformers":
        overrides = dict(norm_eps=1e-5, embed_norm_eps=1e-5, **hf_fields)
    model = _build(infer_config(sd, **overrides), sd, head, str(path))
    _warn_unused(unused, str(path))
    return model


def to_official_state_dict(model: MixTransformer) -> dict:
    """This model's weights under the official NVlabs ``mit_bX.pth`` names."""
    out = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"^stages\.(\d+)\.patch_embed\.", lambda m: f"patch_embed{int(m[1]) + 1}.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}.", key)
        key = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", key)
        key = key.replace(".ffn.dwconv.", ".mlp.dwconv.dwconv.").replace(".ffn.fc", ".mlp.fc")
        out[key] = value
    return out

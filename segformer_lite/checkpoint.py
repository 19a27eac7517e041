"""This package's own weight files, and the file handling every writer and reader shares.

* :func:`save_segformer` / :func:`load_segformer`: a :class:`SegFormer` in a safetensors file with
  its architecture in the metadata; :data:`SHIPPED_CHECKPOINT`, the one trained on the synthetic
  shapes, is the default;
* :func:`atomic_write`: never a half-written file; :func:`read_safetensors`: the one reader of
  safetensors files; :func:`why_unreadable`: a reader's refusal in one sentence;
* :func:`load_weights`: a state dict into a model (built :func:`on_meta`), a misfit named key by key.

Checkpoints in other layouts (transformers, official NVlabs, mmseg) are converted by
:mod:`segformer_lite.convert`; the training command's files (baselines too) are
:mod:`segformer_lite.training.model_files`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path

import torch

from .config import MiTConfig
from .decoder import SegFormer

__all__ = ["save_segformer", "load_segformer", "SHIPPED_CHECKPOINT", "atomic_write", "read_safetensors",
           "write_safetensors", "segformer_meta", "why_unreadable", "load_weights", "on_meta", "listed"]

SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "segformer_shapes.safetensors"


def atomic_write(path, write) -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then ``os.replace`` it onto
    ``path``: a crash mid-write leaves the previous file intact, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def read_safetensors(path) -> tuple[dict, dict]:
    """Metadata and tensors of a safetensors file (raises safetensors' and the OS's errors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}


def write_safetensors(model: torch.nn.Module, path, meta: dict, dtype: torch.dtype = torch.float32) -> Path:
    """``model``'s state dict (floating tensors in ``dtype``) and the string ``meta`` in a safetensors
    file, written atomically."""
    from safetensors.torch import save_file

    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))


# the diagnosis inside torch's weights-only refusal, up to where its advice starts
_UNPICKLER_ERROR = r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\. Please|\n\n|$)"


def why_unreadable(error: Exception) -> str:
    """Why torch or safetensors could not read a file, in one short sentence. torch's refusals
    under weights_only=True run to paragraphs advising weights_only=False, which would run
    whatever code the file holds: only the diagnosis is kept."""
    text = str(error)
    if m := re.search(_UNPICKLER_ERROR, text, re.S):
        return f"weights-only unpickling refused it: {m[1].strip()}"
    first = (text.strip().splitlines() or [""])[0]
    return first.split(". ")[0][:200]


def load_weights(model: torch.nn.Module, sd: dict, source: str) -> None:
    """``load_state_dict(strict=True, assign=True)``; a checkpoint that does not fit is a
    ValueError naming ``source`` and listing the missing, unexpected and mis-shaped keys.

    assign=True makes the model adopt the tensors, so one built on the meta device (no memory,
    no throw-away random init) becomes a real one. The tensors are first copied to the CPU in
    the model's dtypes: the model never shares storage with its source (a transformers model).
    """
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    sd = {k: v.to("cpu", dtypes.get(k, v.dtype), copy=True) for k, v in sd.items()}
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {source} does not fit the model: {_misfit_report(e)}") from None


def _misfit_report(error: RuntimeError) -> str:
    """torch's load_state_dict error as one labelled, shortened list per kind of misfit."""
    found = {"missing keys": [], "unexpected keys": [], "mis-shaped keys": [], "other errors": []}
    for line in str(error).split("\n\t"):
        if line.startswith("Error(s) in loading state_dict"):
            continue
        if m := re.match(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)", line):
            found[f"{m[1].lower()} keys"] += re.findall(r'"([^"]*)"', m[2])
        elif m := re.match(r"size mismatch for (.+?): copying a param with shape torch\.Size\((.*?)\) "
                           r"from checkpoint, the shape in current model is torch\.Size\((.*?)\)", line):
            expected, got = (tuple(json.loads(shape)) for shape in (m[3], m[2]))  # "[640, 160]"
            found["mis-shaped keys"].append(f"{m[1]}: expected {expected}, got {got}")
        else:
            found["other errors"].append(line.strip())
    return "; ".join(f"{label} ({len(items)}): {listed(items)}" for label, items in found.items() if items)


def on_meta(module_class, *args) -> torch.nn.Module:
    """A module with no storage yet (on the meta device): its weights are about to be loaded."""
    with torch.device("meta"):
        return module_class(*args)


def listed(items: list) -> str:
    """Names, comma-separated, shortened past 20."""
    return ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")


def save_segformer(model: SegFormer, path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model``'s weights and architecture to a ``.safetensors`` file, atomically
    (a temporary file in the same folder, then ``os.replace``: never a half-written file)."""
    if not isinstance(model, SegFormer):
        raise TypeError(f"expected a SegFormer, got {type(model).__name__}")
    return write_safetensors(model, path, segformer_meta(model), dtype)


def segformer_meta(model: SegFormer) -> dict:
    """The metadata that lets :func:`load_segformer` rebuild ``model``'s exact architecture."""
    return {"config": json.dumps(_config_dict(model.config)), "num_classes": str(model.num_classes),
            "decoder_dim": str(model.decoder_dim)}


def load_segformer(path=None) -> SegFormer:
    """A :class:`SegFormer` from a file written by :func:`save_segformer` (default: the
    shipped checkpoint trained on the synthetic shapes). Returned in eval mode, float32."""
    from safetensors import SafetensorError

    path = SHIPPED_CHECKPOINT if path is None else path
    if not isinstance(path, (str, Path)):
        raise TypeError(f"expected a path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SegFormer checkpoint at {path}")
    try:
        meta, sd = read_safetensors(path)
    except (SafetensorError, OSError) as e:
        raise _not_a_segformer_file(path, e) from None
    if meta.get("model", "segformer") != "segformer":
        raise ValueError(f"{path} holds a {meta['model']} baseline, not a SegFormer: load it with segformer_lite.training.model_files.load_model(path)")
    try:
        cfg = MiTConfig(**_upgrade(json.loads(meta["config"])))
        num_classes, decoder_dim = int(meta["num_classes"]), int(meta["decoder_dim"])
    except (KeyError, ValueError, TypeError) as e:
        raise _not_a_segformer_file(path, e) from None
    model = on_meta(SegFormer, cfg, num_classes, decoder_dim)
    load_weights(model, sd, str(path))  # a float16 file comes back float32, the model's dtype
    return model.eval()


def _not_a_segformer_file(path: Path, error: Exception) -> ValueError:
    return ValueError(f"{path} is not a SegFormer checkpoint written by save_segformer "
                      f"({type(error).__name__}: {error}); transformers, official and mmseg checkpoints "
                      "load with load_pretrained")


def _upgrade(fields: dict) -> dict:
    """Files written before per-stage MLP ratios hold one ``mlp_ratio`` for every stage."""
    if "mlp_ratio" in fields:
        fields = dict(fields, mlp_ratios=[fields.pop("mlp_ratio")] * len(fields.get("embed_dims", ())))
    return fields


def _config_dict(cfg: MiTConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}

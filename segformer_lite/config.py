"""MiTConfig: every number that defines a Mix Transformer variant.

The values follow the released NVlabs code (``mix_transformer.py``), which is what the
published checkpoints were trained with. Where the paper's Table 6 differs (it lists
MLP expansion ratios 8, 8, 4, 4) the released code wins: every variant uses 4. Per-stage
ratios and other activations are still expressible, for custom transformers configs.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

from .mix_ffn import ACTIVATIONS

__all__ = ["MiTConfig", "mit_config", "VARIANTS", "check_int"]


def check_int(name: str, value, minimum: int | None = 1) -> int:
    """``value`` as an int (numpy ints too, never a bool, though Python counts ``True`` as 1) of at
    least ``minimum`` (``None``: any): else a TypeError (not an int) or ValueError (too small)
    naming ``name``. The package's one check of an integer argument."""
    want = "a positive int" if minimum == 1 else "an int" if minimum is None else f"an int >= {minimum}"
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return number


@dataclass(frozen=True)
class MiTConfig:
    in_channels: int = 3
    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)  # overlapping patch-embed kernel k
    strides: tuple[int, ...] = (4, 2, 2, 2)  # patch-embed stride s (padding is k // 2)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)  # Mix-FFN hidden width = ratio x stage width
    hidden_act: str = "gelu"  # Mix-FFN activation, a transformers ACT2FN name (see ACTIVATIONS)
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    # Two LayerNorm eps values, as in the official code: 1e-6 for the block and stage norms,
    # torch's default 1e-5 for the patch-embed norm and the sequence-reduction norm.
    # Hugging Face transformers uses 1e-5 for all of them.
    norm_eps: float = 1e-6
    embed_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in _PER_STAGE:
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, list) else value  # accept lists, store tuples
            try:
                if not isinstance(value, tuple):
                    raise TypeError
                object.__setattr__(self, name, tuple(check_int(name, v) for v in value))  # plain ints
            except (TypeError, ValueError) as e:
                raise type(e)(f"{name} must be a tuple of positive ints, got {value!r}") from None
        n = len(self.embed_dims)
        lengths = {name: len(getattr(self, name)) for name in _PER_STAGE[1:]}
        if any(length != n for length in lengths.values()):
            raise ValueError(f"every per-stage field needs {n} entries (one per stage of "
                             f"embed_dims={self.embed_dims}), got lengths {lengths}")
        for i, (dim, heads) in enumerate(zip(self.embed_dims, self.num_heads)):
            if dim % heads:
                raise ValueError(f"stage {i}: num_heads={heads} must divide the stage width "
                                 f"embed_dims[{i}]={dim} (heads split the channels)")
        object.__setattr__(self, "in_channels", check_int("in_channels", self.in_channels))
        if not isinstance(self.hidden_act, str):
            raise TypeError(f"hidden_act must be an activation name such as 'gelu', got {self.hidden_act!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        for name in ("norm_eps", "embed_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_stages(self) -> int:
        return len(self.embed_dims)

    @property
    def total_stride(self) -> tuple[int, ...]:
        """Cumulative stride of each stage's feature map: (4, 8, 16, 32) for MiT."""
        out, s = [], 1
        for stride in self.strides:
            s *= stride
            out.append(s)
        return tuple(out)


_PER_STAGE = ("embed_dims", "num_heads", "depths", "sr_ratios", "patch_sizes", "strides", "mlp_ratios")


_WIDE = (64, 128, 320, 512)
VARIANTS: dict[str, MiTConfig] = {
    "b0": MiTConfig(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": MiTConfig(embed_dims=_WIDE, depths=(2, 2, 2, 2)),
    "b2": MiTConfig(embed_dims=_WIDE, depths=(3, 4, 6, 3)),
    "b3": MiTConfig(embed_dims=_WIDE, depths=(3, 4, 18, 3)),
    "b4": MiTConfig(embed_dims=_WIDE, depths=(3, 8, 27, 3)),
    "b5": MiTConfig(embed_dims=_WIDE, depths=(3, 6, 40, 3)),
}


def mit_config(name: str) -> MiTConfig:
    """The configuration of MiT-B0 … MiT-B5 (``"b0"`` … ``"b5"``, also ``"mit_b2"``)."""
    if not isinstance(name, str):
        raise TypeError(f"variant name must be a str such as 'b0', got {type(name).__name__}")
    key = name.lower().removeprefix("mit_").removeprefix("mit-")
    if key not in VARIANTS:
        raise ValueError(f"unknown MiT variant {name!r}; valid names: {', '.join(VARIANTS)}")
    return VARIANTS[key]

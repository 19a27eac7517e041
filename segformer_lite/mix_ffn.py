"""Mix-FFN: the MLP with a depthwise 3x3 convolution between its two Linears."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .tokens import tokens_to_image

__all__ = ["MixFFN", "ACTIVATIONS"]


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# The activations a Mix-FFN can use, under transformers' names (SegformerConfig.hidden_act,
# looked up in its ACT2FN). Every released model uses "gelu"; the rest serve custom configs.
# transformers' parameterised or exotic entries (prelu, xielu, gelu_10, ...) are not offered.
ACTIVATIONS = {
    "gelu": F.gelu, "gelu_python": F.gelu,  # exact (erf) GELU
    "gelu_new": _tanh_gelu, "gelu_fast": _tanh_gelu,  # the tanh approximation, four names
    "gelu_pytorch_tanh": _tanh_gelu, "gelu_python_tanh": _tanh_gelu,
    "quick_gelu": _quick_gelu,
    "relu": F.relu, "relu6": F.relu6, "leaky_relu": F.leaky_relu,  # leaky: slope 0.01, as torch's
    "silu": F.silu, "swish": F.silu, "mish": F.mish, "hardswish": F.hardswish,
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "linear": _identity,
}


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 Conv2d -> GELU -> Linear.

    The depthwise conv mixes each channel with its 3x3 neighbourhood. Its zero padding lets
    tokens near the border "feel" the edge, which leaks enough position information that MiT
    needs no positional embedding and runs at any resolution.

    ``act`` names the activation (a key of :data:`ACTIVATIONS`); the released models use the
    exact (erf) GELU, ``"gelu"``.
    """

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu"):
        super().__init__()
        if not isinstance(act, str):
            raise TypeError(f"act must be an activation name such as 'gelu', got {type(act).__name__}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; supported: {', '.join(ACTIVATIONS)}")
        self.act = act  # the name, not the function: the module stays picklable
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.dwconv(tokens_to_image(self.fc1(x), hw))  # (B, hidden, H, W)
        x = rearrange(x, "b c h w -> b (h w) c")  # (B, N, hidden), a view: the conv kept channels last
        x = ACTIVATIONS[self.act](x)  # exact (erf) GELU by default, as the official code and transformers
        return self.fc2(x)  # (B, N, C)

    def extra_repr(self) -> str:
        return "" if self.act == "gelu" else f"act={self.act}"

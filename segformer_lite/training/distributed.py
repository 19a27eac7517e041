"""BatchNorm over the global batch of all DDP ranks, on the CPU.

The official SegFormer trains its decode head's BatchNorm as SyncBN: the batch statistics span
every GPU's images. torch's ``nn.SyncBatchNorm`` refuses CPU tensors, hence
:class:`SyncBatchNorm2d`, and :func:`sync_batchnorm` to swap it into a model.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["SyncBatchNorm2d", "sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks. Every rank's loss depends on every rank's input through the sum, so the
    backward pass sums the incoming gradients over ranks too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics span the global batch of all ranks: one
    all-reduce per forward (per-channel sums, sums of squares and the count in one tensor) and
    one per backward. Running statistics, ``momentum=None`` (cumulative average) and
    ``affine=False`` behave as in ``nn.BatchNorm2d``. Without a process group it is
    ``nn.BatchNorm2d`` on the local batch (as torch's ``nn.SyncBatchNorm`` is)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None):
        if not track_running_stats:
            raise ValueError("SyncBatchNorm2d needs track_running_stats=True, got False: without running "
                             "statistics evaluation would all-reduce batch statistics, and rank 0 "
                             "evaluating alone would wait for the other ranks forever")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)  # running statistics: nothing to synchronise
        self._check_input_dim(x)
        C = x.shape[1]
        x64 = x.double()  # E[x^2] - E[x]^2 cancels digits when |mean| >> std: float64 keeps them
        count = x64.new_tensor([x.numel() // C])  # values per channel on this rank
        stats = torch.cat([x64.sum((0, 2, 3)), x64.square().sum((0, 2, 3)), count])  # (2C + 1,)
        if dist.is_available() and dist.is_initialized():
            stats = _AllReduceSum.apply(stats)  # one all-reduce for all three
        total, total_sq, n = stats.split([C, C, 1])  # (C,), (C,), (1,)
        if n.item() < 2:  # n is global, so every rank raises together
            raise ValueError(f"SyncBatchNorm2d needs more than 1 value per channel over all ranks when "
                             f"training, got {int(n.item())} (input of shape {tuple(x.shape)} on this rank)")
        mean = total / n  # (C,)
        var = (total_sq / n - mean.square()).clamp_min(0)  # (C,), biased as BatchNorm's
        with torch.no_grad():  # running statistics as nn.BatchNorm2d keeps them (unbiased variance)
            self.num_batches_tracked += 1
            factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), factor)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        x = (x - mean.to(x.dtype)[:, None, None]) * scale[:, None, None]  # (B, C, H, W)
        if self.affine:
            x = x * self.weight[:, None, None] + self.bias[:, None, None]
        return x


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`SyncBatchNorm2d` holding the
    same settings, weights and statistics (in place; build the optimiser afterwards)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device="meta")
            sync.load_state_dict(child.state_dict(), assign=True)  # the child's tensors, dtype, device
            setattr(module, name, sync.train(child.training))
        else:
            sync_batchnorm(child)
    return module

"""SyncBatchNorm2d against torch's own nn.BatchNorm2d: outputs, input and parameter gradients and
running statistics, on one process (without and with a process group) and split over two gloo
processes, where the statistics and the backward pass must span both."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segformer_lite.training.distributed import SyncBatchNorm2d, sync_batchnorm
from hf_reference import free_port

SETTINGS = {"default": {}, "cumulative-average": {"momentum": None}, "no-affine": {"affine": False}}


def _batchnorm(**settings) -> torch.nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(6, **settings)
    if bn.affine:  # not the identity init, so a swapped weight and bias would show
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
    return bn


def _batches(n: int = 3, size: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(size, 6, 5, 4, generator=g) * (k + 2) + k - 1 for k in range(n)]


def _step(module, x: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    """Forward, and backward of a loss that weighs every output differently: the output, the
    input's gradient and the parameters' (accumulated) gradients."""
    x = x.clone().requires_grad_()
    y = module(x)
    (y * w).sum().backward()
    return [y.detach(), x.grad] + [p.grad.clone() for p in module.parameters()]


def _weights(x: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-1, 1, x.numel()).view_as(x)


@pytest.fixture
def one_rank_group(request):
    """A one-process gloo group when the test asks for one, else no group at all."""
    if request.param:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    if request.param:
        dist.destroy_process_group()


@pytest.mark.parametrize("one_rank_group", [False, True], ids=["no-group", "one-rank-gloo"], indirect=True)
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_one_rank_is_batchnorm(settings, one_rank_group):
    bn = _batchnorm(**settings)
    sync = sync_batchnorm(torch.nn.Sequential(_batchnorm(**settings)))[0]
    assert type(sync) is SyncBatchNorm2d and (sync.momentum, sync.affine) == (bn.momentum, bn.affine)
    for x in _batches():  # three steps: the cumulative average differs from momentum 0.1 by then
        for a, b in zip(_step(bn, x, _weights(x)), _step(sync, x, _weights(x)), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for key, value in bn.state_dict().items():  # running statistics and the batch counter
        torch.testing.assert_close(sync.state_dict()[key], value, msg=key)
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x), bn(x))


def test_large_mean_keeps_its_digits():
    # std 1 around 1000: in float32, E[x^2] - E[x]^2 would lose the variance to rounding
    # (measured: outputs up to 0.27 off); the sums are taken in float64 (4e-5, float32 rounding)
    x = torch.randn(4, 6, 8, 8, generator=torch.Generator().manual_seed(2)) + 1000
    bn = _batchnorm()
    sync = sync_batchnorm(torch.nn.Sequential(_batchnorm()))[0]
    torch.testing.assert_close(sync(x), bn(x), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(sync.running_var, bn.running_var)


def test_refusals():
    with pytest.raises(ValueError, match="track_running_stats=True"):
        SyncBatchNorm2d(6, track_running_stats=False)
    with pytest.raises(ValueError, match="track_running_stats=True"):
        sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(6, track_running_stats=False)))
    sync = SyncBatchNorm2d(6)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*got 1.*\(1, 6, 1, 1\)"):
        sync(torch.zeros(1, 6, 1, 1))
    assert sync.num_batches_tracked.item() == 0  # refused before touching the statistics
    with pytest.raises(ValueError, match="4D input"):  # BatchNorm2d's own check
        sync(torch.zeros(2, 6, 5))


# rank 0 holds 1 image, rank 1 holds 3: the count must be all-reduced with the sums
SPLIT = (slice(0, 1), slice(1, 4))


def _rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sync = sync_batchnorm(torch.nn.Sequential(_batchnorm()))[0]
        steps = [_step(sync, x[SPLIT[rank]], _weights(x)[SPLIT[rank]]) for x in _batches()]
        torch.save({"steps": steps, "state": sync.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_ranks_are_batchnorm_on_the_global_batch(tmp_path):
    """The sum of the two ranks' losses is the one-process loss on the whole batch, so each rank's
    input gradient is its slice of the whole batch's, and the parameter gradients add up to it.
    Without the all-reduce in the backward pass the input gradients would miss the other rank's
    share through the mean and the variance."""
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    bn = _batchnorm()
    for step, x in enumerate(_batches()):
        y, x_grad, w_grad, b_grad = _step(bn, x, _weights(x))
        r0, r1 = (r["steps"][step] for r in ranks)
        torch.testing.assert_close(torch.cat([r0[0], r1[0]]), y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.cat([r0[1], r1[1]]), x_grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r0[2] + r1[2], w_grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r0[3] + r1[3], b_grad, rtol=1e-5, atol=1e-5)
    for key, value in bn.state_dict().items():
        for r in ranks:
            torch.testing.assert_close(r["state"][key], value, msg=key)

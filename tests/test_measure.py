"""peak_memory against allocations whose size is known by hand."""
import pytest
import torch

import segformer_lite as sl
from segformer_lite.course.cost import attention_cost
from segformer_lite.course.measure import peak_memory


def test_counts_what_is_alive_at_once():
    def two_then_one():
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(1000, dtype=torch.float64)  # 8000 bytes, a still alive: 12000
        del a
        c = torch.ones(500)  # b + c = 10000 < 12000
        return b, c

    assert peak_memory(two_then_one) == 12_000


def test_freed_temporaries_make_room():
    def chain():
        x = torch.ones(1000)
        for _ in range(5):
            x = x + 1  # the old x dies when the name is rebound: at most two alive at once
        return x

    assert peak_memory(chain) == 8000


def test_views_and_in_place_ops_allocate_nothing():
    x = torch.randn(100, 100)
    assert peak_memory(lambda: x.t()) == 0
    assert peak_memory(lambda: x[:10].reshape(-1)) == 0
    assert peak_memory(lambda: x.mul_(1)) == 0
    assert peak_memory(lambda: x.contiguous()) == 0
    assert peak_memory(lambda: x.t().contiguous()) == 100 * 100 * 4


def test_inputs_and_parameters_are_not_counted():
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64)
    with torch.no_grad():
        assert peak_memory(lin, x) == 10 * 32 * 4  # only the output


def test_explicit_attention_holds_the_score_matrix():
    """The explicit path keeps a (B, heads, N, M) score matrix: the peak is at least the cost
    model's score bytes, and full attention's grows 16x when the grid side doubles."""
    torch.manual_seed(0)
    peaks = []
    for side in (16, 32):
        x = torch.randn(1, side * side, 32)
        attn = sl.EfficientSelfAttention(32, 2, sr_ratio=1).eval()
        with torch.no_grad():
            peak = peak_memory(attn, x, (side, side), return_attention=True)
        scores = attention_cost(side, side, 32, 2, 1).score_bytes
        assert scores <= peak < 3 * scores + 4 * x.nbytes
        peaks.append(peak)
    assert 12 < peaks[1] / peaks[0] <= 16


def test_rejects_non_callables():
    with pytest.raises(TypeError, match="callable"):
        peak_memory(torch.ones(3))

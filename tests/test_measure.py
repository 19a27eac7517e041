"""peak_memory against allocations whose size is known by hand."""
import pytest
import torch

import segformer_lite as sl
from segformer_lite.course.cost import attention_cost
from segformer_lite.course.measure import interleaved_times, peak_memory


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


class ScriptedClock:
    """A clock that only moves when a timed function runs: each call of a function advances it by
    the next duration scripted for that function (the last one repeats)."""

    def __init__(self, durations: dict[str, list[float]]):
        self.now, self.durations, self.calls = 0.0, durations, {name: 0 for name in durations}

    def __call__(self) -> float:
        return self.now

    def fn(self, name: str):
        def run():
            script = self.durations[name]
            self.now += script[min(self.calls[name], len(script) - 1)]
            self.calls[name] += 1
        return run


def test_interleaved_times_reports_the_median_of_block_minima():
    # "a" takes 1 ms, except a burst of slow calls (another job); "b" always 2 ms
    clock = ScriptedClock({"a": [1e-3] * 20 + [9e-3] * 5 + [1e-3], "b": [2e-3]})
    said = []
    t = interleaved_times({"a": clock.fn("a"), "b": clock.fn("b")}, blocks=7, repeats=3,
                          min_call_time=0, clock=clock, report=said.append)
    assert t["a"].seconds == pytest.approx(1e-3) and t["b"].seconds == pytest.approx(2e-3)
    assert t["a"].ms == pytest.approx(1.0)
    assert t["a"].stable and t["a"].spread == pytest.approx(0) and t["a"].rounds == 1 and t["a"].blocks == 7
    assert said == []  # the burst fell within blocks whose minimum it did not change
    # warm-up 1 call, then 7 blocks x 3 repeats x number 1 call each
    assert clock.calls == {"a": 22, "b": 22}


def test_a_noisy_timing_is_flagged_and_measured_again():
    # each block of "a" is 1 ms or 3 ms in turn (every call of a block alike): the block minima
    # disagree by far more than 10 %, so the first round is not kept; the second is steady
    script = [1e-3] * 4 + sum(([d] * 3 for d in [3e-3, 1e-3, 3e-3, 1e-3, 3e-3, 1e-3]), []) + [1e-3]
    clock = ScriptedClock({"a": script, "b": [2e-3]})
    said = []
    t = interleaved_times({"a": clock.fn("a"), "b": clock.fn("b")}, blocks=7, repeats=3,
                          min_call_time=0, max_spread=0.1, clock=clock, report=said.append)
    assert len(said) == 1 and said[0].startswith("a: spread") and "measuring again" in said[0], said
    assert t["a"].rounds == 2 and t["a"].stable and t["a"].seconds == pytest.approx(1e-3)
    assert t["b"].rounds == 1  # the steady one is not measured again


def test_a_timing_that_never_settles_is_returned_unstable():
    durations = [1e-3, 3e-3] * 1000  # with repeats=1 a block is one call: the minima alternate 1 ms, 3 ms
    clock = ScriptedClock({"a": durations})
    said = []
    t = interleaved_times({"a": clock.fn("a")}, blocks=4, repeats=1, min_call_time=0, max_rounds=3,
                          clock=clock, report=said.append)
    assert not t["a"].stable and t["a"].rounds == 3 and t["a"].spread > 0.1
    assert len(said) == 3 and "UNSTABLE" in said[-1], said


def test_interleaved_times_sizes_a_timing_to_the_clock():
    clock = ScriptedClock({"a": [1e-4]})
    interleaved_times({"a": clock.fn("a")}, blocks=4, repeats=1, min_call_time=1e-3, clock=clock, report=print)
    assert clock.calls["a"] == 1 + 4 * 11  # 1e-3 / 1e-4 = 10, rounded up past the limit: 11 calls a timing


@pytest.mark.parametrize("kwargs, error", [(dict(fns={}), TypeError), (dict(fns={"a": 3}), TypeError),
                                           (dict(fns={"a": print}, blocks=3), ValueError),
                                           (dict(fns={"a": print}, repeats=0), ValueError),
                                           (dict(fns={"a": print}, max_spread=0), ValueError),
                                           (dict(fns={"a": print}, threads=0), ValueError)])
def test_interleaved_times_refuses_bad_arguments(kwargs, error):
    with pytest.raises(error):
        interleaved_times(**kwargs)


def test_interleaved_times_runs_torch_on_the_threads_asked_and_restores_them():
    before, seen = torch.get_num_threads(), []
    t = interleaved_times({"a": lambda: seen.append(torch.get_num_threads())}, blocks=4, repeats=1, min_call_time=0)
    assert set(seen) == {1} and torch.get_num_threads() == before
    assert t["a"].seconds >= 0

"""Notebook 08's tables and figures, drawn from a results dict that experiments.report builds
from made-up runs (so the expected numbers are known here), on a headless (Agg) canvas."""
import numpy as np
import pytest
from matplotlib.colors import LogNorm

from segformer_lite.course import experiment_plots as ep
from segformer_lite.training import experiments as ex
from segformer_lite.training.ablations import DESIGNS

SEEDS = [0, 1, 2]
SIGMAS = (2.0, 5.0, 10.0, 30.0)  # made-up ERF widths of MiT's four stages


def fake_miou(design: str, seed: int, size: int) -> float:
    return 0.3 + 0.1 * DESIGNS.index(design) + 0.01 * seed - size / 10_000  # every run above the stall line


def gaussian(sigma: float, n: int = 64) -> list:
    yy, xx = np.mgrid[:n, :n] - n // 2
    return np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2)).tolist()


def local_square(n: int = 64, side: int = 7) -> list:
    """An ERF that is 1 on the centred side x side square and 0 elsewhere: 90 % within `side` px."""
    m = np.zeros((n, n))
    lo = n // 2 - side // 2
    m[lo:lo + side, lo:lo + side] = 1.0
    return m.tolist()


def fake_run(design: str, seed: int) -> dict:
    sizes = ex.SIZES if design in ex.EXPERIMENTS["position"]["designs"] else (64,)
    run = {"design": design, "seed": seed, "train_wall_s": 1.0, "train_cpu_s": 1.0,
           "miou": {str(s): fake_miou(design, seed, s) for s in sizes}}
    if design == "mit":
        run["erf"] = [gaussian(s + seed) for s in SIGMAS]
    elif design == "local-cnn":
        run["erf"] = [local_square()]
    elif design == "dilated-cnn":
        run["erf"] = [gaussian(4.0 + seed)]
    return run


@pytest.fixture(scope="module")
def results():
    runs = {(d, s, ex.experiment_recipe(n, ex.Recipe(steps=2))): fake_run(d, s)
            for n in ex.EXPERIMENTS for d in DESIGNS for s in SEEDS}
    with pytest.MonkeyPatch.context() as mp:  # timing real encoders at 512 px takes seconds
        mp.setattr(ex, "_time_encoders", lambda designs, size, batch: {d: 0.010 + 0.001 * i for i, d in enumerate(designs)})
        out = ex.report(list(ex.EXPERIMENTS), runs, dict.fromkeys(ex.EXPERIMENTS, SEEDS), ex.Recipe(steps=2),
                        eval_images=4)
    return out["experiments"]


def test_seed_table_prints_each_seed_the_mean_and_the_range():
    table = ep.seed_table({"a": [0.1, 0.2, 0.6], "longer label": [1.0, 1.0, 1.0]}, [0, 1, 7], digits=2)
    head, a, b = table.splitlines()
    assert head.split() == ["seed", "0", "seed", "1", "seed", "7", "mean", "min-max"]
    assert a.split() == ["a", "0.10", "0.20", "0.60", "0.30", "0.10-0.60"]
    assert b.split()[-2:] == ["1.00", "1.00-1.00"]
    with pytest.raises(ValueError, match="one value per seed"):
        ep.seed_table({"a": [0.1, 0.2]}, [0, 1, 2])


def test_comparison_table_and_explain_follow_the_numbers(results):
    decoder = results["decoder"]["comparisons"]
    lines = ep.comparison_table(decoder).splitlines()
    assert len(lines) == 1 + len(decoder)
    # all four stages ("mit") minus stage 4 alone: the made-up mIoUs differ by 0.1 x their design index
    expected = 0.1 * (DESIGNS.index("mit") - DESIGNS.index("head-stage4"))
    fields = lines[1][:lines[1].index(" disagrees [")].split()  # ... whose, mean, [low, high], +-
    assert fields[-4] == f"{expected:+.4f}" and decoder[0]["verdict"] == "disagrees"
    assert lines[1].endswith("disagrees [" + "; ".join(decoder[0]["qualifications"]) + "]")
    assert "confounded by resolution" in lines[1]
    assert "paper" in lines[1] and "course" in lines[2]
    erf = ep.comparison_table(results["erf"]["comparisons"])
    # MiT's stage-4 Gaussian is wider than its stage 1 and the CNN's; the CNN (sigma 4-6) is wider than
    # MiT's stage 1 (sigma 2-4): the claim that it stays as small disagrees
    assert " px" in erf and [c["verdict"] for c in results["erf"]["comparisons"]] == ["agrees", "agrees", "disagrees"]
    sr = ep.comparison_table(results["sr"]["comparisons"])
    assert sr.count("none claimed") == 2 and "agrees" not in sr  # the plan claims no direction there


@pytest.mark.parametrize("low, high, verdict, words", [
    (0.01, 0.03, "agrees", "lies above 0: the results agree"),
    (-0.03, -0.01, "disagrees", "lies below 0: the results contradict"),
    (-0.01, 0.03, "inconclusive", "contains 0: inconclusive"),
])
def test_explain_reads_the_interval_against_zero(low, high, verdict, words):
    c = {"comparison": "x minus y", "a_name": "x", "b_name": "y", "metric": "miou64", "whose": "paper",
         "n": 2, "mean": (low + high) / 2, "low": low, "high": high, "half": (high - low) / 2, "verdict": verdict}
    text = ep.explain(c)
    assert words in text and "over 2 seeds" in text and "the paper's claim is that x minus y > 0" in text
    assert "by a hair" not in text
    course = ep.explain(dict(c, whose="course"))
    assert "the course asks whether x minus y > 0" in course and "paper" not in course
    if verdict == "agrees":  # an interval that clears 0 by less than a tenth of its half-width is flagged
        assert "by a hair" in ep.explain(dict(c, low=0.0005, high=0.0405, half=0.02))


def test_erf_figure_shares_one_log_scale_and_a_colour_bar(results):
    maps = {d: v["erf"] for d, v in results["erf"]["designs"].items()}
    fig = ep.erf_figure(maps, vmin=1e-3)
    panels = [ax for ax in fig.axes if ax.images]
    colourbars = [ax for ax in fig.axes if not ax.images]
    norms = {id(ax.images[0].norm) for ax in panels}
    assert len(norms) == 1  # one colour scale for every map
    norm = panels[0].images[0].norm
    assert isinstance(norm, LogNorm) and (norm.vmin, norm.vmax) == (1e-3, 1.0)
    assert "log" in colourbars[0].get_ylabel()
    assert len(panels) == 4 + 2 and len(colourbars) == 1
    assert [ax.get_title() for ax in panels] == ["mit, stage 1", "mit, stage 2", "mit, stage 3", "mit, stage 4",
                                                 "dilated-cnn", "local-cnn"]
    assert panels[-1].get_xlabel() == "90 % within 7 px"  # the square local ERF of the fake runs
    centre = [line.get_xydata()[0].tolist() for line in panels[0].get_lines()]
    assert centre == [[32.0, 32.0]]
    with pytest.raises(ValueError, match="vmin"):
        ep.erf_figure(maps, vmin=0)
    with pytest.raises(ValueError, match="not finite"):
        ep.erf_figure({"flat": [np.full((8, 8), np.nan)]})


def test_decoder_figure_has_a_bar_per_design_at_the_mean(results):
    exp = results["decoder"]
    fig = ep.decoder_figure(exp, stall=ex.STALL_MIOU)
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    expected = [np.mean([fake_miou(d, s, 64) for s in SEEDS]) for d in exp["designs"]]
    assert heights == pytest.approx(expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(exp["designs"])
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(SEEDS) * len(exp["designs"])
    assert "mIoU" in ax.get_ylabel()
    medians = [line.get_ydata()[0] for line in ax.get_lines() if line.get_label() in ("median", "_child1", "_child2")
               or (len(line.get_xdata()) == 2 and line.get_xdata()[1] - line.get_xdata()[0] < 1)]
    assert medians == pytest.approx([np.median([fake_miou(d, s, 64) for s in SEEDS]) for d in exp["designs"]])
    title = ax.get_title()
    assert "43.1" in title and "45.4" in title and "confounded by resolution" in title


def test_decoder_figure_keeps_equal_values_visible():
    # three stalled seeds at the same mIoU: three dots side by side, not one
    exp = {"designs": {"head-stage4": {"miou": {"64": [0.47, 0.53, 0.175, 0.175, 0.175]}}}, "comparisons": []}
    ax = ep.decoder_figure(exp, stall=0.25).axes[0]
    points = ax.collections[0].get_offsets()
    assert len({(round(x, 6), round(y, 6)) for x, y in points}) == 5
    assert sorted(x for x, y in points if y == 0.175) == pytest.approx([-0.09, 0.0, 0.09])
    assert [line.get_ydata()[0] for line in ax.get_lines()] == pytest.approx([0.175, 0.25])  # median, stall line


def test_report_reads_stalled_runs_separately(tmp_path):
    # head-stage4 stalls on seeds 2 and 3: the verdict reads the two seeds where both designs trained
    base = ex.Recipe(steps=2)
    miou = {"mit": [0.70, 0.72, 0.71, 0.73], "head-stage4": [0.50, 0.55, 0.17, 0.18], "head-stage1": [0.4] * 4}
    runs = {(d, s, base): {"miou": {"64": v}, "train_cpu_s": 1.0} for d, vs in miou.items() for s, v in enumerate(vs)}
    exp = ex.report(["decoder"], runs, {"decoder": [0, 1, 2, 3]}, base, 2)["experiments"]["decoder"]
    c = exp["comparisons"][0]
    assert exp["designs"]["head-stage4"]["stalled"] == [2, 3] and c["stalled_runs"] == 2
    assert c["trained_seeds"] == [0, 1] and c["trained"]["diffs"] == pytest.approx([0.20, 0.17])
    half = 12.706 * np.std([0.20, 0.17], ddof=1) / np.sqrt(2)  # t with 1 degree of freedom
    assert (c["trained"]["low"], c["trained"]["high"]) == pytest.approx((0.185 - half, 0.185 + half))
    assert c["verdict_all_seeds"] == "agrees" and c["verdict"] == "inconclusive"
    assert c["qualifications"][0].startswith("2 of 4 head-stage4 runs stalled")
    assert any(q.startswith("underpowered") for q in c["qualifications"])
    assert "runs that trained: seeds 0, 1" in ep.comparison_table(exp["comparisons"])
    assert "which mixes 2 stalled run(s)" in ep.explain(c) and "[2 of 4 head-stage4" in ep.explain(c)


def test_sr_figure_puts_each_design_at_its_cost(results):
    exp = results["sr"]
    fig = ep.sr_figure(exp)
    assert len(fig.axes) == 2 * len(exp["cost"])  # GFLOPs and ms, per measured image size
    ax = fig.axes[2]  # 512 px, GFLOPs
    assert "GFLOPs" in ax.get_xlabel() and "512 px" in ax.get_xlabel() and ax.get_xlim()[0] == 0
    diamonds = sorted(line.get_xdata()[0] for line in ax.get_lines())
    assert diamonds == pytest.approx(sorted(exp["cost"]["512 px"]["gflops"].values()))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(exp["designs"])
    ms = sorted(line.get_xdata()[0] for line in fig.axes[1].get_lines())
    assert ms == pytest.approx([10.0, 11.0, 12.0])  # the fake timings, in ms


def test_forest_figure_draws_every_interval_on_one_scale_per_unit(results):
    fig = ep.forest_figure(results)
    miou_ax, px_ax = fig.axes[:2]
    comparisons = [c for exp in results.values() for c in exp["comparisons"]]
    px = [c for c in comparisons if c["metric"].startswith("erf")]
    assert len(miou_ax.get_yticklabels()) == len(comparisons) - len(px) and len(px_ax.get_yticklabels()) == len(px)
    # each row: its interval as a line from low to high, then its mean as a dot
    bars = [line.get_xdata() for line in px_ax.get_lines() if len(line.get_xdata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]]
    # shading: one band per row on its claimed side (the third ERF comparison claims a - b < 0), none
    # where no direction is claimed (the sr and the 64 px position comparisons)
    bands = [b.get_paths()[0].vertices[:, 0] for b in px_ax.collections]
    assert [(v.min() >= 0, v.max() <= 0) for v in bands] == [(True, False), (True, False), (False, True)]
    unclaimed = sum(c["direction"] is None for c in comparisons)
    assert unclaimed == 3 and len(miou_ax.collections) == len(comparisons) - len(px) - unclaimed
    assert [list(b) for b in bars] == [pytest.approx([c["low"], c["high"]]) for c in px]
    lo, hi = miou_ax.get_xlim()
    assert lo == -hi and hi >= max(max(abs(c["low"]), abs(c["high"])) for c in comparisons if c not in px)
    assert "(paper)" in miou_ax.get_yticklabels()[0].get_text()
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"agrees", "disagrees", "inconclusive"}
    with pytest.raises(ValueError, match="no comparisons"):
        ep.forest_figure({"x": {"comparisons": []}})


def test_drop_figure_joins_each_seeds_two_designs(results):
    exp = results["position"]
    fig = ep.drop_figure(exp)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["64 -> 96 px", "64 -> 128 px"]
    seed_lines = [line for line in panels[1].get_lines() if len(line.get_xdata()) == 2 and line.get_label().startswith("seed")
                  or len(line.get_xdata()) == 2 and line.get_marker() == "o"]
    assert len(seed_lines) == len(SEEDS)
    for k, line in enumerate(seed_lines):  # the drop is the mIoU at 64 px minus at 128 px, per design and seed
        expected = [fake_miou(d, k, 64) - fake_miou(d, k, 128) for d in exp["designs"]]
        assert list(line.get_ydata()) == pytest.approx(expected)
    lo, hi = panels[0].get_ylim()
    assert lo < 0 < hi  # no drop is on the axis

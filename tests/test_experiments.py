"""The ablation designs, the experiment loop, receptive fields, the paired statistics, and the
committed results file they produced."""
import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import segformer_lite as sl
from segformer_lite.training.data import CLASSES
from segformer_lite.training.model_files import load_model
from segformer_lite.training import experiments as ex
from segformer_lite.training import stats, train
from segformer_lite.training.erf import (effective_receptive_field, erf_extent, erf_radius,
                                         theoretical_receptive_field)
from segformer_lite.training.ablations import (DESIGNS, HeadOn, PlainMLP, PositionalEmbedding,
                                               build_design)
from segformer_lite.training.baselines import DilatedCNN, LocalCNN


def test_train_design_is_the_train_command(tmp_path, one_thread):
    # the experiments train with the same loop, data and schedule as the documented command
    out = tmp_path / "w.safetensors"
    train.train(train.parse_args(["--task", "context", "--steps", "3", "--batch-size", "2", "--lr", "2e-3",
                                  "--warmup", "2", "--dropout", "0", "--drop-path", "0", "--param-groups", "none",
                                  "--seed", "5", "--eval-every", "0", "--eval-images", "1", "--quiet",
                                  "--output", str(out)]))
    cli_model, task = load_model(out)
    assert task == "context"
    mine = ex.train_design("mit", 5, ex.Recipe(steps=3, batch_size=2, warmup=2))
    theirs = cli_model.state_dict()
    assert mine.state_dict().keys() == theirs.keys()
    for k, v in mine.state_dict().items():
        assert torch.equal(v, theirs[k]), k


@pytest.mark.slow
def test_every_design_builds_and_runs_at_other_sizes():
    torch.manual_seed(0)
    for design in DESIGNS:
        model = build_design(design).eval()
        for size in (64, 96):
            assert model(torch.rand(1, 3, size, size)).shape[1] == len(CLASSES), design
    with pytest.raises(ValueError, match="design must be one of"):
        build_design("vit")


def test_pos_embed_design_swaps_exactly_the_two_parts():
    torch.manual_seed(0)
    model = build_design("pos-embed")
    stages = model.encoder.stages
    assert all(isinstance(s.patch_embed, PositionalEmbedding) for s in stages)
    assert all(isinstance(b.ffn, PlainMLP) for s in stages for b in s.blocks)
    assert not any(isinstance(m, sl.MixFFN) for m in model.modules())
    assert [tuple(s.patch_embed.pos.shape[-2:]) for s in stages] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    # the swapped parts only: widths, heads and sr ratios stay MiT-B0's
    assert model.encoder.config == build_design("mit").encoder.config


def test_positional_embedding_adds_the_table_resized_bicubically():
    torch.manual_seed(0)
    embed = sl.OverlapPatchEmbed(3, 8, 7, 4)
    pe = PositionalEmbedding(embed, (4, 4))
    for size, grid in ((16, 4), (24, 6)):
        x = torch.rand(2, 3, size, size)
        tokens, hw = pe(x)
        plain, _ = embed(x)
        table = pe.pos if grid == 4 else F.interpolate(pe.pos, size=(grid, grid), mode="bicubic", align_corners=False)
        assert hw == (grid, grid)
        torch.testing.assert_close(tokens - plain, table.flatten(2).transpose(1, 2).expand(2, -1, -1))


def test_plain_mlp_mixes_no_tokens():
    torch.manual_seed(0)
    mlp = PlainMLP(8, 32)
    x = torch.rand(1, 16, 8)
    y = x.clone()
    y[0, 5] += 1.0
    changed = (mlp(y, (4, 4)) - mlp(x, (4, 4))).abs().sum(-1)[0] > 0
    assert changed.tolist() == [i == 5 for i in range(16)]
    mix = sl.MixFFN(8, 32)  # the control: its 3x3 depthwise conv reaches token 5's 8 grid neighbours
    assert int(((mix(y, (4, 4)) - mix(x, (4, 4))).abs().sum(-1)[0] > 0).sum()) == 9


def test_head_on_all_stages_is_the_released_head():
    # resizing before the per-pixel Linear equals resizing after it (what the released head does)
    torch.manual_seed(0)
    dims = (32, 64, 160, 256)
    head = HeadOn((0, 1, 2, 3), dims, 4, 16, 0.0).eval()
    released = sl.AllMLPDecoder(dims, 4, 16, 0.0).eval()
    released.load_state_dict({k.removeprefix("head."): v for k, v in head.state_dict().items()})
    feats = [torch.rand(2, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in enumerate(dims)]
    torch.testing.assert_close(head(feats), released(feats), atol=1e-5, rtol=1e-5)
    one = HeadOn((3,), dims, 4, 16, 0.0)
    assert one(feats).shape == (2, 4, 16, 16)  # decoded on stage 1's grid, from stage 4 only
    assert [lin.in_features for lin in one.head.linear_c] == [256]


def test_erf_of_the_local_cnn_stays_in_its_receptive_field():
    torch.manual_seed(0)
    cnn = LocalCNN(4).eval()
    (erf,) = effective_receptive_field(cnn, torch.rand(3, 3, 33, 33))
    rows, cols = torch.nonzero(erf > 0, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (13, 19, 13, 19)  # 7x7 around (16, 16)
    assert erf.max() == 1.0 and erf_extent(erf) <= 7


@pytest.mark.slow
def test_erf_of_mit_reaches_across_the_image():
    torch.manual_seed(0)
    maps = effective_receptive_field(build_design("mit").eval(), torch.rand(2, 3, 64, 64))
    assert [m.shape for m in maps] == [(64, 64)] * 4
    # attention (even sr-reduced) connects every token: every pixel reaches the centre of every stage
    assert all((m > 0).all() for m in maps)


def test_erf_extent_by_hand():
    delta = torch.zeros(9, 9)
    delta[4, 4] = 1.0
    assert erf_extent(delta) == 1
    assert erf_extent(torch.ones(64, 64)) == 61  # 61*61 / 64**2 = 0.908 >= 0.9 > 59*59 / 64**2
    ring = torch.zeros(9, 9)
    ring[4, 4], ring[4, 6] = 1.0, 9.0  # 90 % of the mass sits 2 px right of the centre
    assert erf_extent(ring) == 5


def test_theoretical_receptive_fields_by_architecture():
    torch.manual_seed(0)
    assert theoretical_receptive_field(LocalCNN(4).eval(), 33) == [7]  # three 3x3 convs
    assert theoretical_receptive_field(DilatedCNN(4).eval(), 80) == [63]  # 1 + 2 (1 + 2 + 4 + 8 + 16)
    # at 64 px every MiT stage reaches every pixel: attention gives each query every pooled key
    assert theoretical_receptive_field(build_design("mit").eval(), 64) == [64] * 4


def test_erf_radius_by_hand():
    delta = torch.zeros(9, 9)
    delta[4, 4] = 1.0
    assert erf_radius(delta) == 0.0
    two = torch.zeros(9, 9)
    two[4, 7], two[1, 4] = 1.0, 3.0  # 3 px right, 3 px up
    assert erf_radius(two) == pytest.approx(3.0)
    corners = torch.zeros(9, 9)
    corners[0, 0] = corners[8, 8] = 1.0  # (-4, -4) and (4, 4) from the centre
    assert erf_radius(corners) == pytest.approx(4 * math.sqrt(2))


def test_paired_interval_and_verdicts_by_hand():
    s = stats.paired([0.7, 0.8, 0.9], [0.5, 0.7, 0.6])  # differences 0.2, 0.1, 0.3: mean 0.2, sd 0.1
    half = 4.303 * 0.1 / math.sqrt(3)
    assert s["diffs"] == pytest.approx([0.2, 0.1, 0.3])
    assert (s["n"], s["sd"], s["t"], s["half"]) == pytest.approx((3, 0.1, 4.303, half))
    assert (s["mean"], s["low"], s["high"]) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    assert stats.verdict(s) == "inconclusive"  # all three seeds agree, but low = 0.2 - 0.248 < 0
    tight = stats.paired([0.5, 0.6, 0.7], [0.4, 0.5, 0.61])
    assert stats.verdict(tight) == "agrees"
    assert stats.verdict(stats.paired([0.4, 0.5, 0.61], [0.5, 0.6, 0.7])) == "disagrees"
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.paired([0.5], [0.4])
    with pytest.raises(ValueError, match="degrees of freedom"):
        stats.t975(11)


def test_unpaired_interval_by_hand_is_wider_when_seeds_move_both_designs():
    a, b = [0.50, 0.60, 0.70], [0.45, 0.56, 0.64]  # the seed moves both designs alike
    u = stats.unpaired(a, b)
    # pooled: t(4) = 2.776, sqrt((0.01 + 0.009633...) / 3)
    half = 2.776 * math.sqrt((statistics.variance(a) + statistics.variance(b)) / 3)
    assert (u["mean"], u["half"]) == pytest.approx((0.05, half))
    assert stats.paired(a, b)["half"] < u["half"] / 5


@pytest.mark.slow
def test_cli_runs_resumes_and_reports(tmp_path, capsys, one_thread):
    argv = ["decoder", "--steps", "1", "--eval-images", "2", "--seeds", "0", "1",
            "--work-dir", str(tmp_path / "runs"), "--output", str(tmp_path / "r.json")]
    ex.main(argv)
    out = capsys.readouterr().out
    assert "6 runs of 1 steps x 16 images for decoder: 0 done" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["experiments"]) == ["decoder"] and report["experiments"]["decoder"]["seeds"] == [0, 1]
    table = report["experiments"]["decoder"]
    assert set(table["designs"]) == {"mit", "head-stage1", "head-stage4"}
    assert [c["whose"] for c in table["comparisons"]] == ["paper", "course"]
    first = table["comparisons"][0]
    a, b = table["designs"][first["a"]]["miou"]["64"], table["designs"][first["b"]]["miou"]["64"]
    assert first["diffs"] == pytest.approx([x - y for x, y in zip(a, b)])
    assert not list((tmp_path / "runs").glob("*.claim"))
    ex.main(argv)  # resumed: nothing left to train, the same report
    assert "6 done" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["experiments"] == report["experiments"]
    ex.main(argv + ["--show"])  # the tables of the report, nothing trained
    shown = capsys.readouterr().out
    assert "runs of" not in shown and shown.startswith("## decoder: " + table["claim"])
    mean = statistics.fmean(a)
    assert "mit mIoU at 64 px" in shown and f"{mean:.4f}" in shown
    assert all(c["comparison"] in shown and c["verdict"] in shown for c in table["comparisons"])


@pytest.mark.slow
def test_cli_leaves_runs_claimed_by_another_process(tmp_path, capsys, one_thread):
    runs = tmp_path / "runs"
    runs.mkdir()
    for design in ("mit", "head-stage4"):
        for seed in (0, 1):
            (runs / f"{design}_s{seed}_1x16_2img.claim").touch()
    argv = ["decoder", "--steps", "1", "--eval-images", "2", "--seeds", "0", "1", "--work-dir", str(runs)]
    ex.main(argv)
    assert "4 runs are still being trained by another process" in capsys.readouterr().out
    assert not (runs / "report.json").exists()
    ex.main(argv + ["--partial"])  # head-stage1's two runs are done: a report that says what is missing
    report = json.loads((runs / "report.json").read_text())["experiments"]["decoder"]
    assert list(report["designs"]) == ["head-stage1"] and report["comparisons"] == []
    assert report["not_run"] == {"designs": ["mit", "head-stage4"],
                                 "comparisons": [c.label for c in ex.EXPERIMENTS["decoder"]["comparisons"]]}
    assert "not run: mit, head-stage4" in ex.show({"experiments": {"decoder": report}}, ["decoder"])


@pytest.mark.parametrize("name", list(ex.EXPERIMENTS))
def test_each_experiment_has_its_own_valid_training_seeds(name):
    seeds = ex.EXPERIMENTS[name]["seeds"]
    assert 3 <= len(seeds) == len(set(seeds)) <= 10 and ex.EVAL_SEED not in seeds


def test_cli_without_seeds_wants_each_experiments_own_seeds(tmp_path, capsys):
    # decoder: mit, head-stage4, head-stage1 over seeds 0-4 = 15 runs; position adds pos-embed over
    # seeds 0-2 = 3 (its mit runs are among the decoder's): 18 runs, counted by hand
    ex.main(["decoder", "position", "--partial", "--steps", "4500", "--threads", "0", "--work-dir", str(tmp_path)])
    assert "18 runs of 4500 steps x 16 images for decoder, position: 0 done" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())["experiments"]
    assert report["decoder"]["seeds"] == [0, 1, 2, 3, 4] and report["position"]["seeds"] == [0, 1, 2]
    assert report["decoder"]["not_run"]["designs"] == ["mit", "head-stage4", "head-stage1"]


def test_default_output_is_the_work_dir_never_the_committed_results():
    args = ex.build_parser().parse_args([])
    assert args.output is None  # main writes work_dir/report.json; the committed file only when named
    assert ex.RESULTS.is_file()


@pytest.mark.parametrize("argv, message", [
    (["vit"], "unknown experiment 'vit'"),
    (["--seeds", "0"], "at least 2 distinct seeds"),
    (["--seeds", "0", "2026"], "the held-out seed"),
    (["--steps", "0"], "must be >= 1"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        ex.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def _complete_in_runs(name: str) -> bool:
    """Whether every run file of experiment ``name`` (4500 steps, 200 images) is in the committed runs."""
    recipe = ex.experiment_recipe(name, ex.Recipe(steps=4500))
    return all(ex._run_file(ex.RUNS, d, s, recipe, 200).is_file()
               for d in ex.EXPERIMENTS[name]["designs"] for s in ex.EXPERIMENTS[name]["seeds"])


def test_committed_results_are_complete_and_consistent():
    results = ex.load_results()
    assert results["eval_images"] == 200 and results["recipe"]["steps"] == 4500
    # every experiment is in the results, but for one whose runs are still being trained (the amended
    # decoder runs): once all its run files are committed, the results must hold it too
    pending = {n for n in ex.EXPERIMENTS if not _complete_in_runs(n)}
    assert pending <= {"decoder-lr1e-3"}
    assert set(results["experiments"]) | pending == set(ex.EXPERIMENTS)
    for name, spec in ex.EXPERIMENTS.items():
        if name not in results["experiments"]:
            continue
        got = results["experiments"][name]
        assert got["recipe"] == dataclasses.asdict(ex.experiment_recipe(name, ex.Recipe(steps=4500)))
        for d, v in got["designs"].items():  # the stall rule, read off the table
            assert v["stalled"] == [s for s, x in zip(got["seeds"], v["miou"]["64"]) if x < ex.STALL_MIOU]
        assert got["seeds"] == list(spec["seeds"]) and len(got["seeds"]) >= 3 and ex.EVAL_SEED not in got["seeds"]
        assert list(got["designs"]) == list(spec["designs"]), f"{name}: not run {got['not_run']}"
        assert got["not_run"] == {"designs": [], "comparisons": []}
        assert [c["comparison"] for c in got["comparisons"]] == [c.label for c in spec["comparisons"]]
        for d in got["designs"].values():
            assert all(len(v) == len(got["seeds"]) for v in d["miou"].values())
        for c in got["comparisons"]:
            a, b = c["a_values"], c["b_values"]
            if c["metric"].startswith("miou"):  # recompute from the per-design table
                assert a == got["designs"][c["a"]]["miou"][c["metric"][4:]]
                assert b == got["designs"][c["b"]]["miou"][c["metric"][4:]]
            if c["metric"].startswith("erf"):
                k = int(c["metric"][3:]) - 1
                assert a == pytest.approx([r[min(k, len(r) - 1)] for r in got["designs"][c["a"]]["erf_radius"]])
            s = stats.paired(a, b)
            assert c["diffs"] == pytest.approx(s.pop("diffs"))
            assert {k: c[k] for k in s} == pytest.approx(s)
            spec_c = next(x for x in spec["comparisons"] if x.label == c["comparison"])
            assert c["direction"] == spec_c.direction and c["verdict_all_seeds"] == stats.verdict(s, spec_c.direction)
            stalled = set(got["designs"][c["a"]]["stalled"]) | set(got["designs"][c["b"]]["stalled"])
            if stalled:  # the verdict reads the seeds where both trained
                keep = [i for i, seed in enumerate(got["seeds"]) if seed not in stalled]
                t = stats.paired([a[i] for i in keep], [b[i] for i in keep])
                assert c["trained_seeds"] == [got["seeds"][i] for i in keep]
                assert (c["trained"]["low"], c["trained"]["high"]) == pytest.approx((t["low"], t["high"]))
                assert c["verdict"] == stats.verdict(t, spec_c.direction)
            else:
                assert c["verdict"] == c["verdict_all_seeds"]
            if spec_c.caveat:
                assert spec_c.caveat in c["qualifications"]
    position = results["experiments"]["position"]["designs"]
    assert all(set(d["miou"]) == {"64", "96", "128"} for d in position.values())
    erf = results["experiments"]["erf"]["designs"]
    assert len(erf["mit"]["erf"]) == 4 and erf["mit"]["theoretical_rf"] == [64] * 4
    with pytest.raises(FileNotFoundError, match="no experiment results"):
        ex.load_results("/nonexistent/r.json")


def _notebook_08_lines() -> list[str]:
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "08_do_the_parts_matter.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    return printed.splitlines()


def test_notebook_08_prints_the_committed_verdicts():
    """Every verdict sentence notebook 08 shows is generated from the committed results, and every
    comparison in them has its sentence and its summary line there (stored outputs, as learners
    read them on GitHub; nbval checks the outputs match a fresh run)."""
    lines = _notebook_08_lines()
    results = ex.load_results()
    comparisons = [(name, c) for name, exp in results["experiments"].items() for c in exp["comparisons"]]
    assert comparisons
    sentences = {"* " + stats.explain(c) for _, c in comparisons}
    assert {line for line in lines if line.startswith("* ")} == sentences
    for name, c in comparisons:
        assert f"{name:<14} {c['whose']:<7} {c['comparison']}: {stats.verdict_label(c)}" in lines


def _of(line: str, name: str, c: dict, results: dict) -> bool:
    """Whether a printed line that names comparison ``c`` speaks of experiment ``name``'s: two
    experiments (the decoder's first recipe and its re-run) share comparison names, so a line led by
    an experiment's name belongs to that one, and any other line (a table row, a sentence) to the
    experiment whose mean it prints (four decimals for mIoU, one for an ERF radius in pixels)."""
    led = [n for n in results["experiments"] if line.startswith((f"{n:<14} ", f"{n}: "))]
    digits = 1 if c["metric"].startswith("erf") else 4
    return led == [name] if led else f"{c['mean']:+.{digits}f}" in line


def test_notebook_08_prints_every_verdict_with_its_qualifications():
    """Wherever notebook 08 prints a comparison's verdict (tables, sentences, summary), the line
    carries every qualification the results file records for it, and a comparison that claims no
    direction is never printed with a verdict of agreement."""
    lines = _notebook_08_lines()
    results = ex.load_results()
    verdict_words = ("agrees", "disagrees", "inconclusive", "the results agree", "the results contradict", ": yes",
                     "no, the opposite")
    checked = 0
    for name, exp in results["experiments"].items():
        for c in exp["comparisons"]:
            mentions = [line for line in lines if c["comparison"] in line and _of(line, name, c, results)
                        and any(w in line for w in verdict_words + (stats.NONE_CLAIMED,))]
            assert mentions, c["comparison"]
            for line in mentions:
                for q in c["qualifications"]:
                    assert q in line, (c["comparison"], q, line)
                if c["direction"] is None:
                    assert stats.NONE_CLAIMED in line and not any(w in line for w in verdict_words[:3]), line
                checked += 1
    assert checked >= 3 * sum(len(exp["comparisons"]) for exp in results["experiments"].values())


def test_train_design_logs_the_training_curve(one_thread):
    curve = []
    recipe = ex.Recipe(steps=3, batch_size=2, warmup=2)
    model = ex.train_design("head-stage1", 0, recipe, curve)
    assert len(curve) == 1 and curve[0] > 0  # 3 steps: one block, shorter than CURVE_EVERY
    again = ex.train_design("head-stage1", 0, recipe)  # logging changes nothing in the training
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def test_amended_runs_have_their_own_files():
    base = ex.Recipe(steps=4500)
    first = ex._run_file(Path("r"), "mit", 0, ex.experiment_recipe("decoder", base), 200)
    amended = ex._run_file(Path("r"), "mit", 0, ex.experiment_recipe("decoder-lr1e-3", base), 200)
    assert first.name == "mit_s0_4500x16_200img.json" and amended.name == "mit_s0_4500x16_lr0.001_200img.json"
    order = ex._run_order("decoder-lr1e-3", (0, 1), ex.experiment_recipe("decoder-lr1e-3", base))
    assert [(d, s) for d, s, _ in order] == [("mit", 0), ("head-stage4", 0), ("mit", 1), ("head-stage4", 1),
                                             ("head-stage1", 0), ("head-stage1", 1)]


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.1, 0.2, "+", "agrees"), (0.1, 0.2, "-", "disagrees"), (-0.2, -0.1, "-", "agrees"),
    (-0.1, 0.2, "-", "inconclusive"), (0.1, 0.2, None, "none claimed"),
])
def test_verdict_by_direction(low, high, direction, expected):
    assert stats.verdict({"low": low, "high": high}, direction) == expected


def test_verdict_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="direction must be"):
        stats.verdict({"low": 0.1, "high": 0.2}, ">")


def test_a_seed_pairs_the_training_images_not_every_shared_weight():
    # the head designs build the same encoder first: every shared tensor starts equal
    equal, shared, first = ex.shared_initial_weights("mit", "head-stage4", 0)
    assert equal == shared and first is None
    # full attention builds no reduction conv, so the generator runs on from another place: the two
    # sr designs part at their very first weight
    equal, shared, first = ex.shared_initial_weights("sr-1111", "sr-16842", 0)
    assert equal < shared and first == "encoder.stages.0.patch_embed.proj.weight"


def test_notebook_08_asks_before_it_tells():
    """Each graded exercise of notebook 08 comes before any output that reveals what it grades, and
    the reveal comes after it: the predicted claims' verdicts (Exercise 1), the hand-computed
    interval's ends (Exercise 2), the smallest sr_ratio within the budget (Exercise 3)."""
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "08_do_the_parts_matter.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    outputs = ["".join("".join(o.get("text", "")) for o in c.get("outputs", [])) for c in cells]
    graded = {c["metadata"]["nbgrader"]["grade_id"]: i for i, c in enumerate(cells)
              if c["metadata"].get("nbgrader", {}).get("grade") and c["cell_type"] == "code"}
    results = ex.load_results()["experiments"]
    verdict_words = ("agrees", "disagrees", "inconclusive", "the results agree", "the results contradict")
    predicted = [c["comparison"] for n in ("position", "erf", "decoder") for c in results[n]["comparisons"]
                 if c["whose"] == "paper"]
    pos = results["position"]["comparisons"][1]
    reveals = {
        "predict_verdicts_check": lambda text: any(label in line and any(w in line for w in verdict_words)
                                                   for line in text.splitlines() for label in predicted),
        "hand_interval_check": lambda text: f"{pos['low']:+.4f}" in text and f"{pos['high']:+.4f}" in text,
        "sr_budget_check": lambda text: "smallest sr that fits" in text,
    }
    assert set(graded) == set(reveals)
    for grade_id, reveals_it in reveals.items():
        i = graded[grade_id]
        assert not any(reveals_it(text) for text in outputs[:i]), f"{grade_id}: revealed above its graded cell"
        assert any(reveals_it(text) for text in outputs[i + 1:]), f"{grade_id}: never revealed after it"

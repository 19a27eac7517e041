"""The paper's claims, and a few questions of the course's own, tested at small scale on the
``context`` shapes: ``segformer-lite experiments [NAME ...]`` (``--help`` for the options).

Every design of ``ablations.py`` is trained from scratch by the same loop as
``segformer-lite train`` (:func:`~segformer_lite.training.train.train_step`), with the
context recipe (batch 16, AdamW lr 2e-3, 200 warm-up steps, poly decay, one parameter group, no
dropout or drop-path) for ``--steps`` steps, once per training seed (each experiment's own,
``EXPERIMENTS[name]["seeds"]``, unless ``--seeds`` names others), and scored on the same
held-out images of a seed never used in training. Each run's numbers go to a small JSON file in
``--work-dir`` as soon as it ends, so an interrupted command resumes where it stopped, and the same
command started again beside it shares the runs (each process claims a run with a ``.claim``
file, so two cores train two runs at once). The report (every experiment's table, paired
differences and verdicts) goes to ``--output``, by default ``report.json`` in the work directory:
the committed results file that notebook 08 reads (:data:`RESULTS`) is only written when named.

The experiments (:data:`EXPERIMENTS`, defined with the rules their verdicts follow in
:mod:`.experiment_plan`, whose names this module re-exports), each comparison labelled with whose
claim it tests:

- ``position``: Mix-FFN vs a learned positional embedding, trained at 64 px, tested at 64, 96, 128.
- ``erf``: the effective receptive field of every stage, MiT vs a dilated CNN whose theoretical
  field spans the image (and the 7 px local CNN, bounded by its architecture).
- ``decoder``: the all-MLP head on all four stages, stage 4 alone, stage 1 alone (five seeds).
- ``sr``: sr_ratios (8, 4, 2, 1) vs full attention (1, 1, 1, 1) vs (16, 8, 4, 2), with FLOPs and time.

A verdict compares two designs seed by seed (:mod:`.stats`): the mean paired difference with its
95 % t-interval over the experiment's seeds; ``agrees`` when the interval lies above 0,
``disagrees`` below, ``inconclusive`` when it contains 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..checkpoint import atomic_write
from .ablations import build_design
from .data import SyntheticShapes
from .erf import effective_receptive_field, erf_extent, erf_radius, theoretical_receptive_field
from .evaluate import HELD_OUT_SEED as EVAL_SEED, evaluate_model, mean_iou
from .experiment_plan import (ERF_IMAGES, EXPERIMENTS, PLANNED_HALF, RESULTS, RUNS, SIZES, STALL_MIOU, Comparison,
                              _compare, experiment_recipe, load_results, metric, stalled)
from .stats import comparison_table, seed_table, t975, verdict_label
from .train import Recipe, param_groups, train_step

__all__ = ["Recipe", "Comparison", "EXPERIMENTS", "RESULTS", "RUNS", "STALL_MIOU", "PLANNED_HALF",
           "experiment_recipe", "stalled", "shared_initial_weights", "train_design", "score", "run_design", "metric",
           "encoder_flops", "report", "show", "load_results", "main"]

CURVE_EVERY = 50  # a run's training curve: its mean loss over each block of this many steps


def shared_initial_weights(a: str, b: str, seed: int, image_size: int = 64) -> tuple[int, int, str | None]:
    """How far a training seed pairs two designs' starting points: of the parameter tensors the two
    share (same name and shape), how many start equal when both are built after
    ``torch.manual_seed(seed)``, how many are shared, and the first one that starts different."""
    weights = {}
    for d in (a, b):
        torch.manual_seed(seed)
        weights[d] = dict(build_design(d, image_size).named_parameters())
    shared = [k for k, v in weights[a].items() if k in weights[b] and weights[b][k].shape == v.shape]
    differ = [k for k in shared if not torch.equal(weights[a][k], weights[b][k])]
    return len(shared) - len(differ), len(shared), differ[0] if differ else None


def train_design(design: str, seed: int, recipe: Recipe = Recipe(), curve: list | None = None) -> torch.nn.Module:
    """``design`` trained from seed ``seed`` on the context shapes, exactly as
    ``segformer-lite train --task context --param-groups none --dropout 0 --drop-path 0``
    trains it with the same recipe (same images, same steps); returned in eval mode. ``curve``, if
    given, gets the mean training loss of every block of :data:`CURVE_EVERY` steps appended."""
    torch.manual_seed(seed)
    model = build_design(design, recipe.image_size)
    opt = torch.optim.AdamW(param_groups(model, recipe.weight_decay, {}), lr=recipe.lr)
    data = SyntheticShapes(recipe.steps * recipe.batch_size, recipe.image_size, seed, "context")
    block = []
    for step in range(recipe.steps):
        block.append(train_step(model, opt, data, step, recipe).item())
        if curve is not None and (len(block) == CURVE_EVERY or step == recipe.steps - 1):
            curve.append(statistics.fmean(block))
            block = []
    return model.eval()


def score(model: torch.nn.Module, size: int, images: int, seed: int = EVAL_SEED) -> float:
    """mIoU on ``images`` held-out context images of ``size`` px (larger canvases hold more shapes
    of the same pixel size, see ``render_shapes``)."""
    return mean_iou(evaluate_model(model, SyntheticShapes(images, size, seed, "context"), progress=False))


def run_design(design: str, seed: int, recipe: Recipe = Recipe(), eval_images: int = 200) -> dict:
    """Train one design from one seed and measure what the experiments need of it."""
    t0, c0 = time.perf_counter(), time.process_time()
    curve = []
    model = train_design(design, seed, recipe, curve)
    out = {"design": design, "seed": seed, "recipe": dataclasses.asdict(recipe),
           "train_wall_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - c0,
           "loss_every": CURVE_EVERY, "loss": [round(v, 5) for v in curve]}
    sizes = SIZES if design in EXPERIMENTS["position"]["designs"] else (recipe.image_size,)
    out["miou"] = {str(s): score(model, s, eval_images) for s in sizes}
    if design in EXPERIMENTS["erf"]["designs"]:
        images, _ = SyntheticShapes(ERF_IMAGES, recipe.image_size, EVAL_SEED, "context").batch(range(ERF_IMAGES))
        out["erf"] = [m.tolist() for m in effective_receptive_field(model, images)]
    return out


def _time_encoders(designs, size: int, batch: int, repeats: int = 7) -> dict:
    """Median forward seconds of each design's encoder, the designs interleaved in each repeat."""
    torch.manual_seed(0)
    encoders = {d: build_design(d).encoder.eval() for d in designs}
    x = torch.rand(batch, 3, size, size)
    times = {d: [] for d in designs}
    with torch.no_grad():
        for d in designs:
            encoders[d](x)  # warm-up
        for _ in range(repeats):
            for d in designs:
                t0 = time.perf_counter()
                encoders[d](x)
                times[d].append(time.perf_counter() - t0)
    return {d: statistics.median(t) for d, t in times.items()}


def encoder_flops(design: str, size: int) -> int:
    """FLOPs of ``design``'s encoder on one ``size`` px image, as torch's FlopCounterMode counts them
    (two per multiply-add), on the meta device: shapes only, no memory, no time. There
    ``F.scaled_dot_product_attention`` runs as explicit matrix products, which the counter counts
    (``course/cost.py``'s formulas give the same numbers, tests/test_experiments.py checks)."""
    with torch.device("meta"):
        encoder, image = build_design(design).encoder.eval(), torch.empty(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(image)
    return counter.get_total_flops()


def _run_order(name: str, seeds, recipe: Recipe) -> list[tuple[str, int, Recipe]]:
    """The runs of experiment ``name`` in training order: first the designs of the paper's comparisons,
    seed by seed (so each seed's pair is complete before the next seed starts), then the others."""
    designs = EXPERIMENTS[name]["designs"]
    paper = {d for c in EXPERIMENTS[name]["comparisons"] if c.whose == "paper" for d in (c.a, c.b)}
    first, rest = [d for d in designs if d in paper], [d for d in designs if d not in paper]
    return [(d, s, recipe) for group in (first, rest) for s in seeds for d in group]


def _sr_cost(designs) -> dict:
    """GFLOPs (exact, multiply-adds counted as two) and measured encoder milliseconds per design."""
    return {f"{size} px": {"gflops": {d: encoder_flops(d, size) / 1e9 for d in designs},
                           "encoder_ms": {d: 1e3 * t for d, t in _time_encoders(designs, size, 1).items()},
                           "load_average": os.getloadavg()[0]}
            for size in (64, 512)}


def report(names, runs: dict, seeds: dict, recipe: Recipe, eval_images: int, sr_cost: dict | None = None) -> dict:
    """Every experiment's per-design table, comparisons and verdicts from the ``runs``
    (``{(design, seed, recipe): run}``), experiment ``name`` over the training seeds ``seeds[name]``
    with its own recipe (:func:`experiment_recipe` of ``recipe``). A design missing a seed is left
    out, and so is every comparison that needs it: both are listed under ``"not_run"``. ``sr_cost``:
    the sr experiment's encoder cost as already measured (default: measure it now)."""
    out = {"recipe": dataclasses.asdict(recipe), "eval_seed": EVAL_SEED,
           "eval_images": eval_images, "torch": torch.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "experiments": {}}
    for name in names:
        spec, exp_seeds, exp_recipe = EXPERIMENTS[name], list(seeds[name]), experiment_recipe(name, recipe)
        exp_runs = {(d, s): run for (d, s, r), run in runs.items() if r == exp_recipe}
        done = [d for d in spec["designs"] if all((d, s) in exp_runs for s in exp_seeds)]
        designs = {}
        for d in done:
            rs = [exp_runs[(d, s)] for s in exp_seeds]
            designs[d] = {"miou": {k: [r["miou"][k] for r in rs] for k in rs[0]["miou"]},
                          "train_cpu_s": [r["train_cpu_s"] for r in rs]}
            if all("loss" in r for r in rs):  # the training curves, per seed (runs of the amended recipe on)
                designs[d]["loss_every"], designs[d]["loss"] = rs[0]["loss_every"], [r["loss"] for r in rs]
            if name == "erf":
                maps = torch.tensor([r["erf"] for r in rs]).mean(0)  # (maps, H, W), mean over seeds
                designs[d]["erf"] = [[[round(v, 4) for v in row] for row in m] for m in maps.tolist()]
                torch.manual_seed(0)
                designs[d]["theoretical_rf"] = theoretical_receptive_field(build_design(d).eval(), recipe.image_size)
                for key, fn in (("erf_side", lambda m: erf_extent(m, 0.9)), ("erf_side50", lambda m: erf_extent(m, 0.5)),
                                ("erf_radius", erf_radius)):  # per seed, per map
                    designs[d][key] = [[fn(torch.tensor(m)) for m in r["erf"]] for r in rs]
        untrained = None
        if name == "erf":  # the same designs as initialised by each training seed, measured the same way
            images, _ = SyntheticShapes(ERF_IMAGES, exp_recipe.image_size, EVAL_SEED, "context").batch(range(ERF_IMAGES))
            untrained = {}
            for d in done:
                for s in exp_seeds:
                    torch.manual_seed(s)
                    untrained[(d, s)] = [erf_radius(m) for m in
                                         effective_receptive_field(build_design(d, exp_recipe.image_size).eval(), images)]
                designs[d]["erf_radius_untrained"] = [untrained[(d, s)] for s in exp_seeds]
        for d in done:
            designs[d]["stalled"] = [s for s in exp_seeds if stalled(exp_runs[(d, s)])]
        comparisons = [_compare(c, exp_runs, exp_seeds, untrained) for c in spec["comparisons"]
                       if c.a in done and c.b in done]
        not_run = {"designs": [d for d in spec["designs"] if d not in done],
                   "comparisons": [c.label for c in spec["comparisons"] if c.a not in done or c.b not in done]}
        out["experiments"][name] = {"claim": spec["claim"], "quote": spec["quote"], "paper": spec["paper"],
                                    "seeds": exp_seeds,
                                    "recipe": dataclasses.asdict(exp_recipe),
                                    "designs": designs, "comparisons": comparisons, "not_run": not_run}
        if name == "sr":
            out["experiments"][name]["cost"] = sr_cost or _sr_cost(spec["designs"])
    return out


def _run_file(work_dir: Path, design: str, seed: int, recipe: Recipe, eval_images: int) -> Path:
    """One run's file: the learning rate is in its name only where it is not the context recipe's."""
    lr = "" if recipe.lr == Recipe.lr else f"_lr{recipe.lr:g}"
    return work_dir / f"{design}_s{seed}_{recipe.steps}x{recipe.batch_size}{lr}_{eval_images}img.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segformer-lite experiments", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"experiments to run, of {', '.join(EXPERIMENTS)} (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds of every named experiment, at least 2 (default: each experiment's own)")
    p.add_argument("--steps", type=int, default=Recipe.steps, help="training steps per run")
    p.add_argument("--eval-images", type=int, default=200, help=f"held-out images of seed {EVAL_SEED} per score")
    p.add_argument("--work-dir", type=Path, default=Path("runs/experiments"), help="one JSON file per finished run")
    p.add_argument("--output", type=Path, default=None,
                   help="the report (default: report.json in --work-dir; name the committed results file "
                        f"{RESULTS.relative_to(RESULTS.parents[3])} to replace it); with --show, the file "
                        "to read (default: the committed results)")
    p.add_argument("--partial", action="store_true",
                   help="train nothing: write the report from the runs finished so far, listing the rest as not run")
    p.add_argument("--merge", action="store_true",
                   help="replace only the named experiments in --output, keeping the others it holds and the "
                        "sr experiment's measured encoder timings")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    p.add_argument("--show", action="store_true", help="train nothing: print the tables of the results in --output")
    return p


def show(results: dict, names) -> str:
    """The tables of ``results`` (a :func:`report`) for the experiments ``names``, as text: the
    paper's own numbers, per design and seed the held-out mIoU and which runs stalled (and the
    ERFs' mean radius, untrained and trained, and the sides of their 90 % and 50 % squares), then
    every comparison and its verdict with its qualifications, then what was not run."""
    out = []
    for name in names:
        exp = results["experiments"][name]
        seeds = exp["seeds"]
        rows = {f"{d} mIoU at {size} px": v for d, r in exp["designs"].items() for size, v in r["miou"].items()}
        out += [f"## {name}: {exp['claim']}"]
        if exp.get("paper"):
            out.append(f"the paper: {exp['paper']}")
        if exp.get("recipe"):
            out.append(f"recipe: lr {exp['recipe']['lr']:g}, {exp['recipe']['steps']} steps")
        out.append(seed_table(rows, seeds))
        stalls = {d: r["stalled"] for d, r in exp["designs"].items() if r.get("stalled")}
        for d, seeds_stalled in stalls.items():
            out.append(f"stalled (mIoU < {STALL_MIOU}): {d} seeds {', '.join(map(str, seeds_stalled))} "
                       f"({len(seeds_stalled)} of {len(seeds)} runs)")
        if not stalls and all("stalled" in r for r in exp["designs"].values()):  # the stall rate, zero included
            out.append(f"stalled (mIoU < {STALL_MIOU}): none of the {len(exp['designs']) * len(seeds)} runs")
        for key, what, digits in (("erf_radius", "ERF mean radius", 1), ("erf_radius_untrained", "untrained ERF radius", 1),
                                  ("erf_side", "ERF side (90 %)", 0),
                                  ("erf_side50", "ERF side (50 %)", 0)):
            table = {f"{d} {what}, map {k + 1}": [seed_maps[k] for seed_maps in r[key]]
                     for d, r in exp["designs"].items() if key in r for k in range(len(r[key][0]))}
            if table:
                out.append(seed_table(table, seeds, digits, " px"))
        if exp["comparisons"]:
            out.append(comparison_table(exp["comparisons"]))
        if exp["not_run"]["designs"]:
            out.append(f"not run: {', '.join(exp['not_run']['designs'])} "
                       f"(so not compared: {'; '.join(exp['not_run']['comparisons']) or 'nothing'})")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    names = list(dict.fromkeys(args.names)) or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiment {', '.join(map(repr, unknown))}; choose from {', '.join(EXPERIMENTS)}")
    if args.seeds is not None:
        if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds) or EVAL_SEED in args.seeds:
            p.error(f"--seeds needs at least 2 distinct seeds, none of them {EVAL_SEED} (the held-out seed), "
                    f"got {args.seeds}")
        try:
            t975(len(args.seeds) - 1)
            t975(2 * len(args.seeds) - 2)  # the unpaired interval beside it
        except ValueError:
            p.error(f"--seeds: 2 to 10 seeds, got {len(args.seeds)}")
    if args.steps < 1 or args.eval_images < 1:
        p.error(f"--steps and --eval-images must be >= 1, got {args.steps} and {args.eval_images}")
    if args.show:
        print(show(load_results(args.output), names))
        return
    output = args.output or args.work_dir / "report.json"
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe(steps=args.steps)
    seeds = {n: args.seeds or EXPERIMENTS[n]["seeds"] for n in names}
    wanted = list(dict.fromkeys(key for n in names for key in _run_order(n, seeds[n], experiment_recipe(n, recipe))))
    files = {key: _run_file(args.work_dir, *key, args.eval_images) for key in wanted}
    missing = [key for key in wanted if not files[key].is_file()]
    print(f"{len(wanted)} runs of {recipe.steps} steps x {recipe.batch_size} images for {', '.join(names)}: "
          f"{len(wanted) - len(missing)} done in {args.work_dir}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for key in [] if args.partial else missing:
        claim = files[key].with_suffix(".claim")
        try:  # another process running the same command may have taken this run
            claim.open("x").close()
        except FileExistsError:
            continue
        if files[key].is_file():  # finished by another process since this one listed what was missing
            claim.unlink()
            continue
        run = run_design(*key, args.eval_images)
        atomic_write(files[key], lambda tmp, run=run: Path(tmp).write_text(json.dumps(run)))
        claim.unlink()
        print(f"{key[0]} seed {key[1]} lr {key[2].lr:g}: mIoU {run['miou']} ({run['train_cpu_s']:.0f} CPU s)", flush=True)
    busy = [key for key in wanted if not files[key].is_file()]
    if busy and not args.partial:
        print(f"{len(busy)} runs are still being trained by another process (or left a stale .claim file "
              f"in {args.work_dir}): the report is written by the last process to finish")
        return
    runs = {key: json.loads(files[key].read_text()) for key in wanted if files[key].is_file()}
    kept = load_results(output) if args.merge and output.is_file() else None
    sr_cost = kept["experiments"].get("sr", {}).get("cost") if kept else None  # timings are not re-taken
    result = report(names, runs, seeds, recipe, args.eval_images, sr_cost)
    if kept:  # the other experiments as the file already has them
        kept["experiments"].update(result["experiments"])
        result = {**kept, "experiments": {n: kept["experiments"][n] for n in EXPERIMENTS if n in kept["experiments"]}}
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    for name in names:
        for c in result["experiments"][name]["comparisons"]:
            print(f"{name}: {c['comparison']}: {c['mean']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] {verdict_label(c)}")
    print(f"wrote {output}")

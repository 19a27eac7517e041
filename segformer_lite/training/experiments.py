"""The paper's claims, tested at small scale on the ``context`` shapes:
``python -m segformer_lite experiments [NAME ...]`` (``--help`` for the options).

Every design of ``ablations.py`` is trained from scratch by the same loop as
``python -m segformer_lite train`` (:func:`~segformer_lite.training.train.train_step`), with the
context recipe (batch 16, AdamW lr 2e-3, 200 warm-up steps, poly decay, one parameter group, no
dropout or drop-path) for ``--steps`` steps, once per training seed, and scored on held-out images
of a seed never used in training. Each run's numbers go to a small JSON file in ``--work-dir`` as
soon as it ends, so an interrupted command resumes where it stopped, and the same command
started again beside it shares the runs (each process claims a run with a ``.claim`` file, so two
cores train two runs at once); then the report (every experiment's table, paired differences
and verdict) is written to ``--output``, by default the committed results file that notebook 08
reads (:data:`RESULTS`).

The experiments (:data:`EXPERIMENTS`):

- ``position``: Mix-FFN vs a learned positional embedding, trained at 64 px, tested at 64, 96, 128.
- ``erf``: the effective receptive field of every stage (gradient of the centre feature with
  respect to the input pixels, averaged over held-out images), MiT vs the local CNN.
- ``decoder``: the all-MLP head on stage 1 alone, stage 4 alone, all four.
- ``sr``: sr_ratios (8, 4, 2, 1) vs full attention (1, 1, 1, 1) vs (16, 8, 4, 2), with FLOPs and time.

The statistics (paired differences, intervals, verdicts, the text tables) are ``stats.py``, the
effective receptive field ``erf.py``.
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
from .ablations import DESIGNS, build_design
from .data import SyntheticShapes
from .erf import effective_receptive_field, erf_extent
from .evaluate import HELD_OUT_SEED as EVAL_SEED, evaluate_model, mean_iou
from .stats import T975, comparison_table, paired, seed_table, verdict
from .train import Recipe, param_groups, train_step

__all__ = ["Recipe", "EXPERIMENTS", "RESULTS", "train_design", "score", "encoder_flops", "run_design", "report",
           "show", "load_results", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "experiments.json"
SIZES = (64, 96, 128)  # test sizes of the position experiment; training is at 64
ERF_IMAGES = 32


# Which designs each experiment trains, and the comparisons it makes: (name, a, b, claim, margin,
# metric). claim "greater": the claim is a > b; "within": a exceeds b by less than margin.
EXPERIMENTS = {
    "position": {
        "designs": ("mit", "pos-embed"),
        "claim": "Mix-FFN (a 3x3 depthwise conv, no positional embedding) loses less accuracy than "
                 "a learned positional embedding when the test resolution differs from training "
                 "(paper Table 1c).",
        "comparisons": [("drop 64->96 px: pos-embed minus Mix-FFN", "pos-embed", "mit", "greater", 0.0, "drop96"),
                        ("drop 64->128 px: pos-embed minus Mix-FFN", "pos-embed", "mit", "greater", 0.0, "drop128"),
                        ("mIoU at 64 px: Mix-FFN minus pos-embed", "mit", "pos-embed", "greater", 0.0, "miou64")],
    },
    "erf": {
        "designs": ("mit", "local-cnn", "dilated-cnn"),
        "claim": "MiT's effective receptive field is already wide in stage 1 and covers the image "
                 "by stage 4, where a CNN's stays local (paper Figure 3).",
        "comparisons": [("ERF side (90% of the mass), MiT stage 4 minus local CNN", "mit", "local-cnn",
                         "greater", 0.0, "erf4"),
                        ("ERF side (90% of the mass), MiT stage 1 minus local CNN", "mit", "local-cnn",
                         "greater", 0.0, "erf1")],
    },
    "decoder": {
        "designs": ("mit", "head-stage4", "head-stage1"),
        "claim": "The all-MLP head works because the encoder's deep stages see the whole image: "
                 "fed stage 1 alone it fails, the deep stages carry the context (paper Sec. 3.2).",
        "comparisons": [("all four stages minus stage 1 alone", "mit", "head-stage1", "greater", 0.0, "miou64"),
                        ("stage 4 alone minus stage 1 alone", "head-stage4", "head-stage1", "greater", 0.0, "miou64"),
                        ("all four stages minus stage 4 alone", "mit", "head-stage4", "greater", 0.0, "miou64")],
    },
    "sr": {
        "designs": ("mit", "sr-1111", "sr-16842"),
        "claim": "Sequence reduction (sr_ratios 8, 4, 2, 1) cuts attention's cost at little loss of "
                 "accuracy against full attention (paper Sec. 3.1); we take 'little' as < 0.02 mIoU.",
        "comparisons": [("full attention minus sr (8,4,2,1), claim: < 0.02", "sr-1111", "mit", "within", 0.02, "miou64"),
                        ("sr (8,4,2,1) minus sr (16,8,4,2)", "mit", "sr-16842", "greater", 0.0, "miou64")],
    },
}

def train_design(design: str, seed: int, recipe: Recipe = Recipe()) -> torch.nn.Module:
    """``design`` trained from seed ``seed`` on the context shapes, exactly as
    ``python -m segformer_lite train --task context --param-groups none --dropout 0 --drop-path 0``
    trains it with the same recipe (same images, same steps); returned in eval mode."""
    torch.manual_seed(seed)
    model = build_design(design, recipe.image_size)
    opt = torch.optim.AdamW(param_groups(model, recipe.weight_decay, {}), lr=recipe.lr)
    data = SyntheticShapes(recipe.steps * recipe.batch_size, recipe.image_size, seed, "context")
    for step in range(recipe.steps):
        train_step(model, opt, data, step, recipe)
    return model.eval()


def score(model: torch.nn.Module, size: int, images: int, seed: int = EVAL_SEED) -> float:
    """mIoU on ``images`` held-out context images of ``size`` px (larger canvases hold more shapes
    of the same pixel size, see ``render_shapes``)."""
    return mean_iou(evaluate_model(model, SyntheticShapes(images, size, seed, "context"), progress=False))


def run_design(design: str, seed: int, recipe: Recipe = Recipe(), eval_images: int = 200) -> dict:
    """Train one design from one seed and measure what the experiments need of it."""
    t0, c0 = time.perf_counter(), time.process_time()
    model = train_design(design, seed, recipe)
    out = {"design": design, "seed": seed, "train_wall_s": time.perf_counter() - t0,
           "train_cpu_s": time.process_time() - c0}
    sizes = SIZES if design in EXPERIMENTS["position"]["designs"] else (recipe.image_size,)
    out["miou"] = {str(s): score(model, s, eval_images) for s in sizes}
    if design in EXPERIMENTS["erf"]["designs"]:
        images, _ = SyntheticShapes(ERF_IMAGES, recipe.image_size, EVAL_SEED, "context").batch(range(ERF_IMAGES))
        out["erf"] = [m.tolist() for m in effective_receptive_field(model, images)]
    return out


def _metric(run: dict, metric: str) -> float:
    if metric.startswith("miou"):
        return run["miou"][metric[4:]]
    if metric.startswith("drop"):
        return run["miou"]["64"] - run["miou"][metric[4:]]
    stage = int(metric[3:])  # erfK: stage K's extent (the CNN has one map)
    maps = run["erf"]
    return erf_extent(torch.tensor(maps[min(stage, len(maps)) - 1]))


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


def report(names, runs: dict, seeds, recipe: Recipe, eval_images: int) -> dict:
    """Every experiment's per-design table, comparisons and verdicts from the ``runs``
    (``{(design, seed): run}``)."""
    out = {"recipe": dataclasses.asdict(recipe), "seeds": list(seeds), "eval_seed": EVAL_SEED,
           "eval_images": eval_images, "torch": torch.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "experiments": {}}
    for name in names:
        spec = EXPERIMENTS[name]
        designs = {}
        for d in spec["designs"]:
            rs = [runs[(d, s)] for s in seeds]
            designs[d] = {"miou": {k: [r["miou"][k] for r in rs] for k in rs[0]["miou"]},
                          "train_cpu_s": [r["train_cpu_s"] for r in rs]}
            if name == "erf":
                maps = torch.tensor([r["erf"] for r in rs]).mean(0)  # (maps, H, W), mean over seeds
                designs[d]["erf"] = [[[round(v, 4) for v in row] for row in m] for m in maps.tolist()]
                for key, mass in (("erf_side", 0.9), ("erf_side50", 0.5)):  # per seed, per map
                    designs[d][key] = [[erf_extent(torch.tensor(m), mass) for m in r["erf"]] for r in rs]
        comparisons = []
        for label, a, b, claim, margin, metric in spec["comparisons"]:
            stats = paired([_metric(runs[(a, s)], metric) for s in seeds],
                           [_metric(runs[(b, s)], metric) for s in seeds])
            comparisons.append({"comparison": label, "a": a, "b": b, "metric": metric, "claim": claim,
                                "margin": margin, **stats, "verdict": verdict(stats, claim, margin)})
        out["experiments"][name] = {"claim": spec["claim"], "designs": designs, "comparisons": comparisons}
        if name == "sr":
            out["experiments"][name]["cost"] = {
                f"{size} px": {"gflops": {d: encoder_flops(d, size) / 1e9
                                          for d in spec["designs"]},
                               "encoder_ms": {d: 1e3 * t for d, t in
                                              _time_encoders(spec["designs"], size, 1).items()},
                               "load_average": os.getloadavg()[0]}
                for size in (64, 512)}
    return out


def load_results(path=None) -> dict:
    """The committed experiment results (:data:`RESULTS`), or those at ``path``."""
    path = Path(RESULTS if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"no experiment results at {path} (run python -m segformer_lite experiments)")
    return json.loads(path.read_text())


def _run_file(work_dir: Path, design: str, seed: int, recipe: Recipe, eval_images: int) -> Path:
    return work_dir / f"{design}_s{seed}_{recipe.steps}x{recipe.batch_size}_{eval_images}img.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m segformer_lite experiments", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"experiments to run, of {', '.join(EXPERIMENTS)} (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (at least 2)")
    p.add_argument("--steps", type=int, default=Recipe.steps, help="training steps per run")
    p.add_argument("--eval-images", type=int, default=200, help=f"held-out images of seed {EVAL_SEED} per score")
    p.add_argument("--work-dir", type=Path, default=Path("runs/experiments"), help="one JSON file per finished run")
    p.add_argument("--output", type=Path, default=RESULTS, help="the report (default: the committed results file)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    p.add_argument("--show", action="store_true", help="train nothing: print the tables of the results in --output")
    return p


def show(results: dict, names) -> str:
    """The tables of ``results`` (a :func:`report`) for the experiments ``names``, as text: per design
    and seed the held-out mIoU (and the sides of the ERFs' 90 % and 50 % squares), then every comparison and its verdict."""
    seeds, out = results["seeds"], []
    for name in names:
        exp = results["experiments"][name]
        rows = {f"{d} mIoU at {size} px": v for d, r in exp["designs"].items() for size, v in r["miou"].items()}
        out += [f"## {name}: {exp['claim']}", seed_table(rows, seeds)]
        for key, mass in (("erf_side", 90), ("erf_side50", 50)):
            sides = {f"{d} ERF side ({mass} %), map {k + 1}": [seed_sides[k] for seed_sides in r[key]]
                     for d, r in exp["designs"].items() if key in r for k in range(len(r[key][0]))}
            if sides:
                out.append(seed_table(sides, seeds, 0, " px"))
        out += [comparison_table(exp["comparisons"]), ""]
    return "\n".join(out)


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    names = list(dict.fromkeys(args.names)) or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiment {', '.join(map(repr, unknown))}; choose from {', '.join(EXPERIMENTS)}")
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds) or EVAL_SEED in args.seeds:
        p.error(f"--seeds needs at least 2 distinct seeds, none of them {EVAL_SEED} (the held-out seed), "
                f"got {args.seeds}")
    if len(args.seeds) - 1 not in T975:
        p.error(f"--seeds: at most {max(T975) + 1} seeds, got {len(args.seeds)}")
    if args.steps < 1 or args.eval_images < 1:
        p.error(f"--steps and --eval-images must be >= 1, got {args.steps} and {args.eval_images}")
    if args.show:
        print(show(load_results(args.output), names))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe(steps=args.steps)
    designs = dict.fromkeys(d for n in names for d in EXPERIMENTS[n]["designs"])  # in the order named
    wanted = [(d, s) for d in designs for s in args.seeds]
    files = {key: _run_file(args.work_dir, *key, recipe, args.eval_images) for key in wanted}
    missing = [key for key in wanted if not files[key].is_file()]
    print(f"{len(wanted)} runs of {recipe.steps} steps x {recipe.batch_size} images for {', '.join(names)}: "
          f"{len(wanted) - len(missing)} done in {args.work_dir}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for key in missing:
        claim = files[key].with_suffix(".claim")
        try:  # another process running the same command may have taken this run
            claim.open("x").close()
        except FileExistsError:
            continue
        run = run_design(*key, recipe, args.eval_images)
        atomic_write(files[key], lambda tmp, run=run: Path(tmp).write_text(json.dumps(run)))
        claim.unlink()
        print(f"{key[0]} seed {key[1]}: mIoU {run['miou']} ({run['train_cpu_s']:.0f} CPU s)", flush=True)
    busy = [key for key in wanted if not files[key].is_file()]
    if busy:
        print(f"{len(busy)} runs are still being trained by another process (or left a stale .claim file "
              f"in {args.work_dir}): the report is written by the last process to finish")
        return
    runs = {key: json.loads(files[key].read_text()) for key in wanted}
    result = report(names, runs, args.seeds, recipe, args.eval_images)
    atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    for name in names:
        for c in result["experiments"][name]["comparisons"]:
            print(f"{name}: {c['comparison']}: {c['mean']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] {c['verdict']}")
    print(f"wrote {args.output}")

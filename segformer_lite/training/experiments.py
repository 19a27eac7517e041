"""The paper's claims, tested at small scale on the ``context`` shapes:
``python -m segformer_lite.experiments [NAME ...]`` (``--help`` for the options).

Every design of ``ablations.py`` is trained from scratch by the same loop as
``python -m segformer_lite.train`` (:func:`~segformer_lite.training.train.train_step`), with the
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

A verdict compares two designs seed by seed (same seed: same training images and the same
initialisation of every shared part): the mean paired difference with its 95 % t-interval over
the seeds. ``agrees`` when the interval lies on the claim's side, ``disagrees`` when it lies on
the other, ``inconclusive`` when it straddles the line: with this noise, the difference is not
resolved.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from .._files import atomic_write
from ..course.cost import encoder_cost
from .ablations import DESIGNS, build_design
from .data import SyntheticShapes
from .evaluate import HELD_OUT_SEED as EVAL_SEED, evaluate_model, mean_iou
from .train import param_groups, train_step

__all__ = ["Recipe", "EXPERIMENTS", "RESULTS", "train_design", "score", "effective_receptive_field",
           "erf_extent", "paired", "verdict", "run_design", "report", "show", "load_results", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "experiments.json"
SIZES = (64, 96, 128)  # test sizes of the position experiment; training is at 64
ERF_IMAGES = 32


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The context recipe of the README, ``steps`` long."""

    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    image_size: int = 64


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

# two-sided 95 % quantiles of Student's t by degrees of freedom (seeds - 1)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def train_design(design: str, seed: int, recipe: Recipe = Recipe()) -> torch.nn.Module:
    """``design`` trained from seed ``seed`` on the context shapes, exactly as
    ``python -m segformer_lite.train --task context --param-groups none --dropout 0 --drop-path 0``
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


def _feature_maps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The maps whose receptive field we measure: the encoder's four stages, or the local CNN's
    last hidden layer."""
    return model.encoder(images) if hasattr(model, "encoder") else [model.features(images)]


def effective_receptive_field(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per feature map, ``(H, W)``: ``|d (centre feature) / d pixel|``, summed over RGB, averaged over
    ``images`` and scaled to a maximum of 1: the effective receptive field of Luo et al. (2016) that
    the paper's Figure 3 draws. The centre feature is ``relu(f[:, :, h/2, w/2]).sum()``, as in
    RepLKNet's ERF script: a plain channel sum would cancel, since every MiT stage ends in a
    LayerNorm, whose outputs sum to a constant when its scale is 1 (as at initialisation)."""
    images = images.clone().requires_grad_(True)
    maps = _feature_maps(model, images)
    out = []
    for i, f in enumerate(maps):  # (B, C, h, w)
        centre = torch.relu(f[:, :, f.shape[-2] // 2, f.shape[-1] // 2]).sum()  # images independent in eval mode
        (grad,) = torch.autograd.grad(centre, images, retain_graph=i < len(maps) - 1)
        erf = grad.abs().sum(1).mean(0)  # (H, W)
        out.append(erf / erf.max())
    return out


def erf_extent(erf: torch.Tensor, mass: float = 0.9) -> int:
    """Side in pixels of the smallest square, centred on the image centre, that holds ``mass`` of
    the ERF's total (clipped at the image border)."""
    h, w = erf.shape
    total, cy, cx = float(erf.sum()), h // 2, w // 2
    for r in range(max(h, w)):
        if float(erf[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1].sum()) >= mass * total:
            return 2 * r + 1
    return max(h, w)


def paired(a: list[float], b: list[float]) -> dict:
    """Seed-by-seed differences ``a - b``: their mean and 95 % t-interval (Student, n - 1 dof)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 seeds, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    half = _T975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"diffs": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def verdict(stats: dict, claim: str = "greater", margin: float = 0.0) -> str:
    """``agrees`` / ``disagrees`` / ``inconclusive`` for the claim ``a - b > 0`` (``"greater"``) or
    ``a - b < margin`` (``"within"``), from :func:`paired`'s interval."""
    line = 0.0 if claim == "greater" else margin
    above, below = stats["low"] > line, stats["high"] < line
    if claim == "greater":
        return "agrees" if above else "disagrees" if below else "inconclusive"
    if claim == "within":
        return "agrees" if below else "disagrees" if above else "inconclusive"
    raise ValueError(f"claim must be 'greater' or 'within', got {claim!r}")


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
                f"{size} px": {"gflops": {d: encoder_cost(build_design(d).encoder.config, size, size).flops / 1e9
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
        raise FileNotFoundError(f"no experiment results at {path} (run python -m segformer_lite.experiments)")
    return json.loads(path.read_text())


def _run_file(work_dir: Path, design: str, seed: int, recipe: Recipe, eval_images: int) -> Path:
    return work_dir / f"{design}_s{seed}_{recipe.steps}x{recipe.batch_size}_{eval_images}img.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m segformer_lite.experiments", description=__doc__.split("\n")[0])
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
    from ..course.experiment_plots import comparison_table, seed_table  # plotting stays out of training

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
    if len(args.seeds) - 1 not in _T975:
        p.error(f"--seeds: at most {max(_T975) + 1} seeds, got {len(args.seeds)}")
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

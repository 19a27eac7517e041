"""The experiments' plan (docs/experiment-plan.md) as data and rules: which designs each experiment
trains (:data:`EXPERIMENTS`), what the paper says, the training seeds, each comparison and whose
claim it tests (:class:`Comparison`), the stall rule (:data:`STALL_MIOU`), the half-widths the plan
expected (:data:`PLANNED_HALF`), and how one comparison's verdict is read from the runs' numbers
(:func:`metric`, :func:`stalled`); with :func:`load_results`, the committed results file
(:data:`RESULTS`). Training, the report and the command are in :mod:`.experiments`, which
re-exports every name here.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import torch

from .erf import erf_radius
from .stats import paired, unpaired, verdict
from .train import Recipe

__all__ = ["Comparison", "EXPERIMENTS", "RESULTS", "RUNS", "STALL_MIOU", "PLANNED_HALF", "SIZES", "ERF_IMAGES",
           "experiment_recipe", "metric", "stalled", "load_results"]

RESULTS = Path(__file__).resolve().parent / "results" / "experiments.json"
RUNS = RESULTS.parent / "runs"  # the committed run files the results were computed from
# A run whose held-out mIoU at 64 px is below this has stalled (fixed before the amended decoder runs,
# docs/experiment-plan.md): predicting background everywhere scores 0.162 on the held-out images, and
# every run that trained so far scored 0.31 or more.
STALL_MIOU = 0.25
# The half-widths the plan expected its mIoU comparisons to resolve (docs/experiment-plan.md); a
# comparison whose measured half-width is wider is flagged as underpowered.
PLANNED_HALF = (0.005, 0.02)
SIZES = (64, 96, 128)  # test sizes of the position experiment; training is at 64
ERF_IMAGES = 32


class Comparison(NamedTuple):
    """``a - b`` seed by seed, of ``metric`` (``b_metric`` for ``b`` when it differs):
    ``mIoU{size}``, ``drop{size}`` (mIoU at 64 px minus at ``size``) or ``erf{stage}`` (the ERF's
    mean radius, :func:`~.erf.erf_radius`). ``whose``: ``"paper"`` for a claim of the paper,
    ``"course"`` for a question of the course's own. ``direction``: the side claimed, ``"+"``
    (``a - b > 0``), ``"-"`` (``a - b < 0``) or ``None`` (none claimed: a difference, no verdict).
    ``caveat``: a qualification that goes with its verdict wherever it is printed."""

    label: str
    a: str
    b: str
    metric: str
    whose: str
    b_metric: str | None = None
    direction: str | None = "+"
    caveat: str | None = None


# Which designs each experiment trains, what the paper says (with its place), its training seeds
# and the comparisons.
RESOLUTION = ("confounded by resolution: at 64 px stage 4 is a 2x2 grid (16x16 in the paper at 512 px)")
DECODER_PAPER = "Table 1d (ADE20K, MiT-B2): S4 43.1, S1-4 45.4 mIoU, a gap of 2.3 points"
EXPERIMENTS = {
    "position": {
        "designs": ("mit", "pos-embed"),
        "claim": "Without a positional embedding there is nothing to interpolate when the test "
                 "resolution differs from training, so accuracy holds up better (abstract; Sec. 3.1, "
                 "Mix-FFN; Table 1c, Cityscapes, inference at 768x768 with a sliding window and at "
                 "1024x2048 on the whole image).",
        "quote": "We argue that positional encoding is actually not necessary for semantic segmentation. "
                 "(Sec. 3.1)",
        "paper": "Table 1c: PE 77.3 -> 74.0, Mix-FFN 80.5 -> 79.8 mIoU (768x768 sliding window -> 1024x2048 "
                 "whole image), drops of 3.3 and 0.7 points",
        "seeds": (0, 1, 2),
        "comparisons": [Comparison("drop 64->96 px: pos-embed minus Mix-FFN", "pos-embed", "mit", "drop96", "paper"),
                        Comparison("drop 64->128 px: pos-embed minus Mix-FFN", "pos-embed", "mit", "drop128", "paper"),
                        Comparison("mIoU at 64 px: Mix-FFN minus pos-embed", "mit", "pos-embed", "miou64", "course",
                                   direction=None)],
    },
    "erf": {
        "designs": ("mit", "dilated-cnn", "local-cnn"),
        "claim": "Figure 3 (Sec. 3.2) in three parts: MiT's lower stages have local, convolution-like "
                 "effective receptive fields and its stage 4 a non-local one; MiT's stage 4 reaches wider "
                 "than a CNN's deepest stage; a CNN's ERF stays small even at its deepest stage.",
        "quote": "The ERF of DeepLabv3+ is relatively small even at Stage-4, the deepest stage. (Sec. 3.2)",
        "paper": "Figure 3: SegFormer beside DeepLabv3+ on Cityscapes, ERF averaged over 100 images",
        "seeds": (0, 1, 2),
        "comparisons": [Comparison("ERF radius, MiT stage 4 minus MiT stage 1", "mit", "mit", "erf4", "paper", "erf1"),
                        Comparison("ERF radius, MiT stage 4 minus dilated CNN (63 px field)", "mit", "dilated-cnn",
                                   "erf4", "paper", "erf1"),
                        Comparison("ERF radius, dilated CNN minus MiT stage 1 (the paper's 'local')", "dilated-cnn",
                                   "mit", "erf1", "paper", "erf1", direction="-",
                                   caveat="'small' read as no wider than MiT's stage 1, a test chosen after the "
                                          "results (amendment 2026-12-06)")],
    },
    "decoder": {
        "designs": ("mit", "head-stage4", "head-stage1"),
        "claim": "The all-MLP head fed stages 1-4 beats the same head fed stage 4 alone: the deep stage's "
                 "non-local context is not enough without the lower stages' local detail (Sec. 3.2; "
                 "Table 1d, 'S4' vs 'S1-4').",
        "quote": "Taking the non-local attention from Stage-4 alone is not enough to produce good results, "
                 "as will be verified in Table 1d. (Sec. 3.2)",
        "paper": DECODER_PAPER,
        # Five seeds, not the plan's three: added after seed 2 of head-stage4 failed to train and left
        # the 3-seed interval straddling 0 (docs/experiment-plan.md, "Amendment"); a second look.
        "seeds": (0, 1, 2, 3, 4),
        "comparisons": [Comparison("all four stages minus stage 4 alone", "mit", "head-stage4", "miou64", "paper",
                                   caveat=RESOLUTION + "; a second look: seeds 3-4 added after 3 seeds were read"),
                        Comparison("all four stages minus stage 1 alone", "mit", "head-stage1", "miou64", "course",
                                   caveat="a second look: seeds 3-4 added after 3 seeds were read")],
    },
    # The decoder experiment again, every design at lr 1e-3 instead of 2e-3 (docs/experiment-plan.md,
    # "Amendment, 2026-12-06"): declared before these runs, after three of five head-stage4 runs of
    # the first recipe stalled. Its runs carry their training curves; a run is stalled when its
    # held-out mIoU is below STALL_MIOU.
    "decoder-lr1e-3": {
        "designs": ("mit", "head-stage4", "head-stage1"),
        "recipe": {"lr": 1e-3},
        "seeds": (0, 1, 2, 3, 4),
        "comparisons": [Comparison("all four stages minus stage 4 alone", "mit", "head-stage4", "miou64", "paper",
                                   caveat=RESOLUTION + "; re-run after the first recipe's results were read"),
                        Comparison("all four stages minus stage 1 alone", "mit", "head-stage1", "miou64", "course",
                                   caveat="re-run after the first recipe's results were read")],
    },
    "sr": {
        "designs": ("mit", "sr-1111", "sr-16842"),
        "claim": "Sequence reduction cuts attention's cost (Sec. 3.1, Efficient Self-Attention: from "
                 "O(N^2) to O(N^2/R)); the paper has no accuracy ablation of the ratios, so the accuracy "
                 "comparisons here are the course's own questions, reported as differences.",
        "quote": "The computational complexity of this process is O(N^2), which is prohibitive for large image "
                 "resolutions. (Sec. 3.1)",
        "paper": "Sec. 3.1: R = [64, 16, 4, 1] from stage-1 to stage-4 (sr_ratio 8, 4, 2, 1); no accuracy ablation",
        "seeds": (0, 1, 2),
        "comparisons": [Comparison("full attention minus sr (8,4,2,1)", "sr-1111", "mit", "miou64", "course",
                                   direction=None),
                        Comparison("sr (8,4,2,1) minus sr (16,8,4,2)", "mit", "sr-16842", "miou64", "course",
                                   direction=None)],
    },
}
EXPERIMENTS["decoder-lr1e-3"].update({k: EXPERIMENTS["decoder"][k] for k in ("claim", "quote", "paper")})


def experiment_recipe(name: str, recipe: Recipe = Recipe()) -> Recipe:
    """``recipe`` with experiment ``name``'s own changes to it (its ``"recipe"``, if any)."""
    return dataclasses.replace(recipe, **EXPERIMENTS[name].get("recipe", {}))


def metric(run: dict, name: str) -> float:
    """One run's value of a comparison metric (see :class:`Comparison`)."""
    if name.startswith("miou"):
        return run["miou"][name[4:]]
    if name.startswith("drop"):
        return run["miou"]["64"] - run["miou"][name[4:]]
    if name.startswith("erf"):
        maps = run["erf"]  # a CNN has one map: its stage K is that map
        return erf_radius(torch.tensor(maps[min(int(name[3:]), len(maps)) - 1]))
    raise ValueError(f"metric must start with miou, drop or erf, got {name!r}")


def stalled(run: dict) -> bool:
    """Whether a run stalled: held-out mIoU at 64 px below :data:`STALL_MIOU` (the amendment's rule)."""
    return run["miou"]["64"] < STALL_MIOU


def _compare(c: Comparison, runs: dict, seeds, untrained: dict | None = None) -> dict:
    """One comparison over ``runs`` (one experiment's, by (design, seed)). Where runs stalled, the
    verdict reads the paired interval over the seeds where both designs trained (none below 2 such
    seeds), and the interval over all seeds is kept beside it. ``untrained``: the ERF radii of the
    same designs at initialisation, by (design, seed), for the same comparison before training.
    ``qualifications``: what goes with the verdict wherever it is printed."""
    a = [metric(runs[(c.a, s)], c.metric) for s in seeds]
    b = [metric(runs[(c.b, s)], c.b_metric or c.metric) for s in seeds]
    stats = paired(a, b)
    stage = lambda d, m: f"{d} stage {m[3:]}" if m.startswith("erf") and d == "mit" else d
    out = {"comparison": c.label, "whose": c.whose, "direction": c.direction, "a": c.a, "b": c.b,
           "metric": c.metric, "b_metric": c.b_metric or c.metric, "a_name": stage(c.a, c.metric),
           "b_name": stage(c.b, c.b_metric or c.metric), "a_values": a, "b_values": b, **stats,
           "unpaired": unpaired(a, b), "verdict_all_seeds": verdict(stats, c.direction)}
    quals = [c.caveat] if c.caveat else []
    stalls = {d: [s for s in seeds if stalled(runs[(d, s)])] for d in dict.fromkeys((c.a, c.b))}
    out["stalled_runs"] = sum(len(v) for v in stalls.values())
    answer = stats
    if out["stalled_runs"]:
        out["trained_seeds"] = [s for s in seeds if not any(s in v for v in stalls.values())]
        ta = [x for s, x in zip(seeds, a) if s in out["trained_seeds"]]
        tb = [x for s, x in zip(seeds, b) if s in out["trained_seeds"]]
        out["trained"] = answer = paired(ta, tb) if len(ta) >= 2 else None
        quals.insert(0, "; ".join(f"{len(v)} of {len(seeds)} {d} runs stalled" for d, v in stalls.items() if v)
                     + f" (mIoU < {STALL_MIOU}): verdict from the {len(out['trained_seeds'])} seeds where both trained")
    out["verdict"] = verdict(answer, c.direction) if answer is not None else (
        verdict(stats, None) if c.direction is None else "inconclusive")
    if answer is not None and c.metric[:4] in ("miou", "drop") and answer["half"] > PLANNED_HALF[1]:
        quals.append(f"underpowered: +-{answer['half']:.3f} against the plan's expected "
                     f"{PLANNED_HALF[0]}-{PLANNED_HALF[1]}")
    if untrained is not None:
        ua = [untrained[(c.a, s)][min(int(c.metric[3:]), len(untrained[(c.a, s)])) - 1] for s in seeds]
        b_stage = int((c.b_metric or c.metric)[3:])
        ub = [untrained[(c.b, s)][min(b_stage, len(untrained[(c.b, s)])) - 1] for s in seeds]
        u = paired(ua, ub)
        out["untrained"] = {"a_values": ua, "b_values": ub, **u, "verdict": verdict(u, c.direction)}
        if out["verdict"] == out["untrained"]["verdict"]:
            quals.append(f"untrained models give the same verdict ({u['mean']:+.1f} px): the architecture alone "
                         f"shows it")
    out["qualifications"] = quals
    return out


def load_results(path=None) -> dict:
    """The committed experiment results (:data:`RESULTS`), or those at ``path``."""
    path = Path(RESULTS if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"no experiment results at {path} (run segformer-lite experiments)")
    return json.loads(path.read_text())

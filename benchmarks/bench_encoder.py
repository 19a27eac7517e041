"""segformer_lite vs transformers' SegformerModel: same weights, same process, interleaved repeats.

    .venv/bin/python benchmarks/bench_encoder.py                 # MiT-B0 and B2, 512x512, batch 1
    .venv/bin/python benchmarks/bench_encoder.py --variants b0 --repeats 31 --threads 1

For each variant a randomly initialised transformers model (every bias and LayerNorm parameter
perturbed, so a misplaced one would show) is copied with ``sl.from_transformers``; the outputs of
all four stages must agree within 1e-5 relative (max |diff| / max |ref|) with both of transformers'
attention implementations before anything is timed. Then each repeat runs transformers-sdpa,
transformers-eager, segformer_lite and a 2048^3 fp32 GEMM once each, in a rotating order, so
load from other processes hits all of them alike. Reported: medians, the median of the
per-repeat ratios with its interquartile range (the noise), achieved GFLOP/s (FLOPs from
``encoder_cost``, checked against torch's FlopCounterMode) and that as a % of the GEMM's.
The same loops also run segformer_lite's stages without the final copy of each feature map to
contiguous NCHW (``forward`` returns ordinary tensors, so ``f.view(B, -1)`` works): the ratio of
the two is what the copies cost.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import time

import torch
from torch.utils import flop_counter

import segformer_lite as sl
from segformer_lite.course.cost import encoder_cost

TOLERANCE = 1e-5
GEMM_N = 2048


def hf_model(variant: str, seed: int, sr_ratios: tuple[int, ...] | None = None):
    """A transformers SegformerModel with the released MiT architecture (or other ``sr_ratios``:
    (1, 1, 1, 1) is full attention), random weights."""
    from transformers import SegformerConfig, SegformerModel

    cfg = sl.mit_config(variant)
    hf_cfg = SegformerConfig(hidden_sizes=list(cfg.embed_dims), depths=list(cfg.depths),
                             num_attention_heads=list(cfg.num_heads),
                             sr_ratios=list(sr_ratios or cfg.sr_ratios))
    torch.manual_seed(seed)
    model = SegformerModel(hf_cfg).eval()
    with torch.no_grad():  # random init leaves biases 0 and norms 1: make them informative
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def rel_err(ref: torch.Tensor, got: torch.Tensor) -> float:
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def counted_flops(model, x) -> int:
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                lambda q, k, v, *a, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v)}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        model(x)
    return counter.get_total_flops()


def stages_without_copies(model: sl.MixTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """``model(x)`` as it was before the feature maps were made contiguous (channels-last views),
    less the input checks."""
    feats = []
    for stage in model.stages:
        x = stage(x)
        feats.append(x)
    return feats


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


@torch.no_grad()
def bench_variant(variant: str, size: int, repeats: int, warmup: int, seed: int) -> dict:
    hf_sdpa = hf_model(variant, seed)
    hf_sdpa.set_attn_implementation("sdpa")
    hf_eager = copy.deepcopy(hf_sdpa)
    hf_eager.set_attn_implementation("eager")
    ours = sl.from_transformers(hf_sdpa).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))

    feats = ours(x)
    errors = {}
    for name, hf in (("sdpa", hf_sdpa), ("eager", hf_eager)):
        ref = hf(x, output_hidden_states=True).hidden_states
        errors[name] = max(rel_err(r, f) for r, f in zip(ref, feats))
        if errors[name] > TOLERANCE:
            raise SystemExit(f"{variant}: outputs differ from transformers-{name} by "
                             f"{errors[name]:.2e} relative (> {TOLERANCE}); not timing")
    flops = encoder_cost(ours.config, size, size).flops
    if flops != counted_flops(ours, x):
        raise SystemExit(f"{variant}: encoder_cost disagrees with FlopCounterMode")

    a = torch.randn(GEMM_N, GEMM_N)
    b = torch.randn(GEMM_N, GEMM_N)
    runs = {"transformers sdpa": lambda: hf_sdpa(x), "transformers eager": lambda: hf_eager(x),
            "segformer_lite": lambda: ours(x), "segformer_lite views": lambda: stages_without_copies(ours, x),
            "gemm": lambda: a @ b}
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            t = timed(runs[name])
            if r >= warmup:
                times[name].append(t)
    return dict(variant=variant, flops=flops, errors=errors, times=times)


def report(results: list[dict], size: int, repeats: int, load: tuple[float, float]) -> str:
    gemm_flops = 2 * GEMM_N ** 3
    lines = [
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} with {os.cpu_count()} CPUs (1-min load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{size}x{size}, batch 1, fp32, median of {repeats} interleaved repeats",
        "",
        "| variant | GFLOPs | transformers sdpa ms | transformers eager ms | segformer_lite ms "
        "| ratio vs faster (IQR) | segformer_lite GFLOP/s | % of GEMM | transformers best GFLOP/s (% of GEMM) "
        "| max rel. diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    gemm_rates = []
    for res in results:
        t = {k: statistics.median(v) for k, v in res["times"].items()}
        faster = min(("transformers sdpa", "transformers eager"), key=t.get)
        # ratio per repeat, against the implementation that is faster overall (same repeat)
        ratios = [o / h for o, h in zip(res["times"]["segformer_lite"], res["times"][faster])]
        q1, med, q3 = quartiles(ratios)
        gemm_rate = gemm_flops / t["gemm"] / 1e9
        gemm_rates.append(gemm_rate)
        ours_rate = res["flops"] / t["segformer_lite"] / 1e9
        hf_rate = res["flops"] / t[faster] / 1e9
        lines.append(
            f"| MiT-{res['variant'].upper()} | {res['flops'] / 1e9:.2f} "
            f"| {t['transformers sdpa'] * 1e3:.1f} | {t['transformers eager'] * 1e3:.1f} "
            f"| {t['segformer_lite'] * 1e3:.1f} | {med:.2f} ({q1:.2f}-{q3:.2f}) vs {faster.split()[1]} "
            f"| {ours_rate:.1f} | {100 * ours_rate / gemm_rate:.0f}% "
            f"| {hf_rate:.1f} ({100 * hf_rate / gemm_rate:.0f}%) "
            f"| {max(res['errors'].values()):.1e} |")
    lines += ["", f"GEMM {GEMM_N}x{GEMM_N} @ {GEMM_N}x{GEMM_N} fp32, measured in the same loops: "
              + ", ".join(f"{r:.1f}" for r in gemm_rates) + " GFLOP/s"]
    for res in results:
        q1, med, q3 = quartiles([o / v for o, v in zip(res["times"]["segformer_lite"],
                                                          res["times"]["segformer_lite views"])])
        lines.append(f"contiguous feature maps, MiT-{res['variant'].upper()}: segformer_lite / the same "
                     f"without the copies (channels-last views) {med:.3f} ({q1:.3f}-{q3:.3f}), medians "
                     f"{statistics.median(res['times']['segformer_lite']) * 1e3:.1f} vs "
                     f"{statistics.median(res['times']['segformer_lite views']) * 1e3:.1f} ms")
    # under load the fastest run is the best estimate of the uncontended time
    for res in results:
        best = {k: min(v) * 1e3 for k, v in res["times"].items()}
        lines.append(f"fastest run, MiT-{res['variant'].upper()}: transformers sdpa "
                     f"{best['transformers sdpa']:.1f} ms, eager {best['transformers eager']:.1f} ms, "
                     f"segformer_lite {best['segformer_lite']:.1f} ms, GEMM {best['gemm']:.1f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["b0", "b2"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # other processes' load is the main source of noise here
    results = [bench_variant(v, args.size, args.repeats, args.warmup, args.seed) for v in args.variants]
    print(report(results, args.size, args.repeats, (load_before, os.getloadavg()[0])))


if __name__ == "__main__":
    main()

"""How time and peak memory grow with the image: segformer_lite vs transformers, 256 to 2048 px.

    .venv/bin/python benchmarks/sweep.py                     # B0 and B2, writes benchmarks/sweep_results.json
    .venv/bin/python benchmarks/sweep.py --report            # the table of benchmarks/README.md from that file
    .venv/bin/python benchmarks/sweep.py --child --variant b0 --size 64 --impls ours sdpa eager full

Four implementations, batch 1, fp32: segformer_lite, transformers' SegformerModel with its
``sdpa`` and ``eager`` attention (same weights, built and copied as in ``bench_encoder.py``), and
segformer_lite with full attention (``sr_ratios`` 1, 1, 1, 1; its weights copied from a
transformers model with the same sr 1 architecture, against which it is checked).

The parent loops over variants and sizes; each (variant, size) runs in a fresh child process under
an address-space limit (``RLIMIT_AS``), so a wrong memory estimate fails that child, not the
machine. Before starting a child the parent estimates each implementation's memory from the cost
model (activations plus, for eager attention, the score matrices it stores) and its time from
its FLOPs (``encoder_cost``) at the GFLOP/s it reached one size smaller; a run estimated
above ``--max-gib`` is recorded as "does not fit", one above ``--max-seconds`` per forward as
"too slow", each with its estimate. The child first runs every implementation once under
``segformer_lite.course.measure.peak_memory`` (the most bytes of tensor storage alive at once,
the same measure for all four), checks its four stage outputs against transformers' within 1e-5
relative (else it stops), then times interleaved rounds in a rotating order and reports medians
and the per-round ratio to the faster transformers path.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import segformer_lite as sl
from segformer_lite.course.cost import encoder_cost
from bench_encoder import TOLERANCE, hf_model, quartiles, rel_err, timed
from segformer_lite.checkpoint import atomic_write
from segformer_lite.course.measure import peak_memory

RESULTS = Path(__file__).resolve().parent / "sweep_results.json"
IMPLS = {"ours": "segformer_lite", "sdpa": "transformers sdpa", "eager": "transformers eager",
         "full": "segformer_lite full attention (sr 1)"}
TRANSFORMERS = ("sdpa", "eager")
FULL_SR = (1, 1, 1, 1)
GIB = 2 ** 30
# a block holds a few (N, 4C) Mix-FFN buffers and (N, C) token copies at once: ~24 (N, C) arrays
ACTIVATION_ARRAYS = 24


def impl_config(variant: str, impl: str) -> sl.MiTConfig:
    cfg = sl.mit_config(variant)
    return dataclasses.replace(cfg, sr_ratios=FULL_SR) if impl == "full" else cfg


def estimate_bytes(variant: str, impl: str, size: int) -> int:
    """Peak tensor memory of one forward, from the cost model: the largest stage's activations,
    the four feature maps returned, and for eager attention a stored score matrix and its
    softmax alive at once (the fused kernels never store it)."""
    cfg = impl_config(variant, impl)
    stages = encoder_cost(cfg, size, size).stages
    tokens = [s.grid[0] * s.grid[1] * s.dim * 4 for s in stages]  # bytes of one (N, C) fp32 array
    scores = 2 * max(s.attention.score_bytes for s in stages) if impl == "eager" else 0
    return ACTIVATION_ARRAYS * max(tokens) + sum(tokens) + scores


def full_scores_if_stored(variant: str, size: int) -> int:
    """Bytes of the largest full-attention score matrix (stage 1): what sr 1 would store without
    a fused kernel."""
    stages = encoder_cost(impl_config(variant, "full"), size, size).stages
    return max(s.attention.score_bytes for s in stages)


# ---------------------------------------------------------------- child: one variant, one size

@torch.no_grad()
def build(variant: str, impls: list[str], seed: int) -> tuple[dict, dict]:
    """The models to time, and for each the transformers model its outputs are checked against."""
    hf_sdpa = hf_model(variant, seed)
    hf_sdpa.set_attn_implementation("sdpa")
    models = {"ours": sl.from_transformers(hf_sdpa).eval(), "sdpa": hf_sdpa}
    if "eager" in impls:
        models["eager"] = copy.deepcopy(hf_sdpa)
        models["eager"].set_attn_implementation("eager")
    references = {k: hf_sdpa for k in models}
    if "full" in impls:
        hf_full = hf_model(variant, seed, sr_ratios=FULL_SR)
        hf_full.set_attn_implementation("sdpa")
        models["full"] = sl.from_transformers(hf_full).eval()
        references["full"] = hf_full
    return {k: models[k] for k in impls}, {k: references[k] for k in impls}


def stage_outputs(model, x) -> list[torch.Tensor]:
    if isinstance(model, sl.MixTransformer):
        return model(x)
    return list(model(x, output_hidden_states=True).hidden_states)


@torch.no_grad()
def run_child(variant: str, size: int, impls: list[str], repeats: int, warmup: int, seed: int,
              save_outputs: Path | None = None) -> dict:
    models, references = build(variant, impls, seed)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    load_before = os.getloadavg()[0]
    results, saved = {}, {"x": x}
    ref_cache = {}
    # transformers sdpa first: its check run gives the reference for the others
    for key in sorted(models, key=lambda k: references[k] is not models[k]):
        model, out = models[key], {}
        peak = peak_memory(lambda: out.setdefault("feats", stage_outputs(model, x)))
        ref_model = references[key]
        if ref_model is model:  # transformers sdpa is its own reference
            ref_cache[id(ref_model)] = out["feats"]
        elif id(ref_model) not in ref_cache:  # transformers' outputs, computed once per model
            ref_cache[id(ref_model)] = stage_outputs(ref_model, x)
        ref = ref_cache[id(ref_model)]
        err = max(rel_err(r, f) for r, f in zip(ref, out["feats"]))
        if err > TOLERANCE:
            raise SystemExit(f"{variant} {size}px {IMPLS[key]}: outputs differ from transformers "
                             f"by {err:.2e} relative (> {TOLERANCE}); not timing")
        cfg = impl_config(variant, key)
        results[key] = dict(name=IMPLS[key], flops=encoder_cost(cfg, size, size).flops,
                            peak_bytes=peak, estimate_bytes=estimate_bytes(variant, key, size),
                            max_rel_err=err, times_s=[])
        saved[key] = out["feats"]
    if save_outputs is not None:
        saved["reference full"] = ref_cache.get(id(references.get("full")))
        torch.save(saved, save_outputs)
    del saved, ref_cache

    names = list(models)
    for r in range(warmup + repeats):
        for key in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            t = timed(lambda: models[key](x))
            if r >= warmup:
                results[key]["times_s"].append(t)
    for res in results.values():
        res["median_s"] = statistics.median(res["times_s"])
    child = dict(variant=variant, size=size, threads=torch.get_num_threads(), repeats=repeats,
                 load_before=load_before, load_after=os.getloadavg()[0], impls=results)
    hf = [k for k in TRANSFORMERS if k in results]
    if hf:
        faster = min(hf, key=lambda k: results[k]["median_s"])
        child["faster_transformers"] = faster
        for key in ("ours", "full"):
            if key in results:  # per round: both ran in the same round, under the same load
                ratios = [o / h for o, h in zip(results[key]["times_s"], results[faster]["times_s"])]
                q = quartiles(ratios) if len(ratios) > 1 else ratios * 3
                results[key]["time_ratio"] = dict(zip(("q1", "median", "q3"), q))
                results[key]["memory_ratio"] = results[key]["peak_bytes"] / results[faster]["peak_bytes"]
    return child


# ---------------------------------------------------------------- parent: the sweep

def limit_address_space(nbytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return apply


def plan(variant: str, size: int, impls: list[str], rates: dict, max_bytes: int,
         max_seconds: float) -> dict:
    """For each implementation: its estimates and whether to run it ("run", "does not fit",
    "too slow"). ``rates`` holds GFLOP/s measured one size smaller."""
    out = {}
    for key in impls:
        flops = encoder_cost(impl_config(variant, key), size, size).flops
        est = dict(estimate_bytes=estimate_bytes(variant, key, size),
                   estimate_s=flops / rates[key] if key in rates else None)
        if key == "full":
            est["full_scores_if_stored_bytes"] = full_scores_if_stored(variant, size)
        if est["estimate_bytes"] > max_bytes:
            est["status"] = "does not fit"
        elif est["estimate_s"] is not None and est["estimate_s"] > max_seconds:
            est["status"] = "too slow"
        else:
            est["status"] = "run"
        out[key] = est
    return out


def sweep(args) -> dict:
    meta = dict(date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                machine=f"{platform.machine()}, {os.cpu_count()} CPUs, "
                        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB",
                torch=torch.__version__, threads=args.threads, max_gib=args.max_gib,
                max_seconds=args.max_seconds, tolerance=TOLERANCE)
    runs = []
    t_start = time.perf_counter()
    for variant, sizes in (("b0", args.b0_sizes), ("b2", args.b2_sizes)):
        rates = {}  # GFLOP/s per implementation at the previous size
        for size in sizes:
            planned = plan(variant, size, args.impls, rates, int(args.max_gib * GIB), args.max_seconds)
            to_run = [k for k, p in planned.items() if p["status"] == "run"]
            # the child holds every model and one implementation's activations at a time
            limit = min(int(args.max_gib * GIB) + 2 * GIB,
                        2 * GIB + 2 * max([planned[k]["estimate_bytes"] for k in to_run] or [0]))
            entry = dict(variant=variant, size=size, address_space_limit_bytes=limit, impls=planned)
            if to_run:
                repeats = args.repeats if size <= 512 else args.repeats_large
                cmd = [sys.executable, __file__, "--child", "--variant", variant, "--size", str(size),
                       "--impls", *to_run, "--repeats", str(repeats), "--warmup", str(int(size <= 512)),
                       "--threads", str(args.threads), "--seed", str(args.seed)]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      preexec_fn=limit_address_space(limit))
                entry["wall_s"] = time.perf_counter() - t0
                if proc.returncode:
                    for k in to_run:
                        planned[k]["status"] = "failed"
                    entry["error"] = proc.stderr.strip().splitlines()[-3:]
                else:
                    child = json.loads(proc.stdout.strip().splitlines()[-1])
                    for k, res in child.pop("impls").items():
                        planned[k].update(res, status="ok")
                        rates[k] = res["flops"] / res["median_s"]
                    entry.update(child)
            runs.append(entry)
            print(f"{variant} {size}px: " + ", ".join(
                f"{k} {p['status']}" + (f" {p['median_s'] * 1e3:.0f} ms {p['peak_bytes'] / 2**20:.0f} MiB"
                                        if p["status"] == "ok" else "")
                for k, p in planned.items()) + f"  ({time.perf_counter() - t_start:.0f} s so far)",
                  flush=True)
    meta["wall_s"] = time.perf_counter() - t_start
    return dict(meta=meta, runs=runs)


def _cell(p: dict) -> str:
    if p["status"] == "ok":
        return f"{p['median_s'] * 1e3:,.0f} / {p['peak_bytes'] / 2**20:,.0f}"
    seconds = f"{p['estimate_s']:,.0f} s, " if p.get("estimate_s") else ""
    if p["status"] in ("does not fit", "too slow"):
        return f"{p['status']} (est. {seconds}{p['estimate_bytes'] / GIB:,.2f} GiB)"
    return p["status"]


def table(results: dict) -> str:
    meta = results["meta"]
    loads = [v for r in results["runs"] for v in (r.get("load_before"), r.get("load_after")) if v is not None]
    lines = [f"{meta['date']}, {meta['machine']}, torch {meta['torch']}, {meta['threads']} thread(s), "
             f"batch 1, fp32, 1-min load average {min(loads):.1f}-{max(loads):.1f}, "
             f"sweep wall time {meta['wall_s'] / 60:.1f} min",
             "",
             "| variant | size | " + " | ".join(f"{IMPLS[k]} ms / MiB" for k in IMPLS)
             + " | segformer_lite time vs faster transformers (IQR) | memory vs faster | max rel. diff |",
             "| --- | ---: | " + " | ".join("---:" for _ in IMPLS) + " | ---: | ---: | ---: |"]
    for r in results["runs"]:
        p = r["impls"]
        ours = p["ours"]
        ratio = (f"{ours['time_ratio']['median']:.2f} ({ours['time_ratio']['q1']:.2f}-"
                 f"{ours['time_ratio']['q3']:.2f}) vs {r['faster_transformers']}"
                 if "time_ratio" in ours else "-")
        memory = f"{ours['memory_ratio']:.2f}" if "memory_ratio" in ours else "-"
        err = max((q["max_rel_err"] for q in p.values() if q["status"] == "ok"), default=float("nan"))
        lines.append(f"| MiT-{r['variant'].upper()} | {r['size']} | "
                     + " | ".join(_cell(p[k]) if k in p else "-" for k in IMPLS)
                     + f" | {ratio} | {memory} | {err:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--child", action="store_true", help="run one variant and size, print JSON")
    parser.add_argument("--report", action="store_true", help=f"print the table from {RESULTS.name}")
    parser.add_argument("--variant", default="b0", help="child: MiT variant")
    parser.add_argument("--size", type=int, default=512, help="child: image side in pixels")
    parser.add_argument("--impls", nargs="+", choices=list(IMPLS), default=list(IMPLS),
                        help="implementations to run")
    parser.add_argument("--b0-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--b2-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds up to 512 px")
    parser.add_argument("--repeats-large", type=int, default=3, help="timed rounds above 512 px")
    parser.add_argument("--warmup", type=int, default=1, help="child: untimed rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-gib", type=float, default=16.0,
                        help="skip a run whose estimated peak memory is larger")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="skip a run whose estimated time per forward is longer")
    parser.add_argument("--save-outputs", type=Path, default=None,
                        help="child: torch.save the input and every implementation's stage outputs here")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_child(args.variant, args.size, args.impls, args.repeats, args.warmup,
                                   args.seed, args.save_outputs)))
        return
    if args.report:
        print(table(json.loads(args.out.read_text())))
        return
    results = sweep(args)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1) + "\n"))
    print(table(results))


if __name__ == "__main__":
    main()

"""benchmarks/sweep.py: its child at 64 px reports every field, and the four implementations'
outputs agree with transformers (compared here, from the tensors the child saved); its planner
refuses what would not fit or take too long. Timings themselves are not tested."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import segformer_lite as sl
from segformer_lite.course.cost import encoder_cost

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "benchmarks" / "sweep.py"
IMPLS = ["ours", "sdpa", "eager", "full"]


def rel(ref: torch.Tensor, got: torch.Tensor) -> float:
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    saved = tmp_path_factory.mktemp("sweep") / "outputs.pt"
    cmd = [sys.executable, str(SWEEP), "--child", "--variant", "b0", "--size", "64", "--impls", *IMPLS,
           "--repeats", "2", "--warmup", "0", "--threads", "1", "--save-outputs", str(saved)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), torch.load(saved)


@pytest.mark.slow
def test_child_reports_every_field(child):
    report, _ = child
    assert (report["variant"], report["size"], report["threads"], report["repeats"]) == ("b0", 64, 1, 2)
    assert report["faster_transformers"] in ("sdpa", "eager")
    assert sorted(report["impls"]) == sorted(IMPLS)
    full_cfg = dataclasses.replace(sl.mit_config("b0"), sr_ratios=(1, 1, 1, 1))
    for key, res in report["impls"].items():
        cfg = full_cfg if key == "full" else sl.mit_config("b0")
        assert res["flops"] == encoder_cost(cfg, 64, 64).flops
        assert len(res["times_s"]) == 2 and res["median_s"] > 0
        # at least the four returned feature maps: 32*16*16 + 64*8*8 + 160*4*4 + 256*2*2 floats
        assert res["peak_bytes"] >= 4 * (8192 + 4096 + 2560 + 1024)
        assert res["peak_bytes"] <= res["estimate_bytes"]
        assert 0 <= res["max_rel_err"] <= 1e-5
    for key in ("ours", "full"):
        ratio = report["impls"][key]["time_ratio"]
        assert ratio["q1"] <= ratio["median"] <= ratio["q3"]
        faster = report["impls"][report["faster_transformers"]]
        assert report["impls"][key]["memory_ratio"] == report["impls"][key]["peak_bytes"] / faster["peak_bytes"]


@pytest.mark.slow
def test_outputs_agree_with_transformers(child):
    report, out = child
    assert out["x"].shape == (1, 3, 64, 64)
    for key in ("ours", "eager"):  # same weights as transformers sdpa
        errors = [rel(r, f) for r, f in zip(out["sdpa"], out[key], strict=True)]
        assert max(errors) < 1e-5
        assert max(errors) == pytest.approx(report["impls"][key]["max_rel_err"], abs=1e-12)
    # full attention against transformers with the same sr 1 architecture and weights
    assert max(rel(r, f) for r, f in zip(out["reference full"], out["full"], strict=True)) < 1e-5
    # ... and it is a different model: no sequence reduction changes every stage's output
    assert [rel(o, f) > 1e-2 for o, f in zip(out["ours"], out["full"])] == [True, True, True, True]


@pytest.fixture(scope="module")
def sweep_module():
    sys.path.insert(0, str(SWEEP.parent))
    try:
        import sweep
    finally:
        sys.path.remove(str(SWEEP.parent))
    return sweep


def test_plan_refuses_what_would_not_fit_or_take_too_long(sweep_module):
    gib = 2 ** 30
    small = sweep_module.plan("b0", 256, IMPLS, {}, 16 * gib, 60.0)
    assert {k: p["status"] for k, p in small.items()} == dict.fromkeys(IMPLS, "run")
    # eager stores stage 1's scores: 1 head * 2048^2 queries * 256^2 keys * 4 bytes = 1 TiB at 8192 px
    big = sweep_module.plan("b0", 8192, ["eager", "ours"], {"ours": 1e10}, 16 * gib, 60.0)
    assert big["eager"]["status"] == "does not fit" and big["eager"]["estimate_bytes"] > 2 ** 40
    # the fused kernel stores no scores: it fits, but at 10 GFLOP/s one forward takes hours
    assert big["ours"]["estimate_bytes"] < 16 * gib
    flops = encoder_cost(sl.mit_config("b0"), 8192, 8192).flops
    assert big["ours"]["estimate_s"] == flops / 1e10 > 3600
    assert big["ours"]["status"] == "too slow"
    slow = sweep_module.plan("b0", 1024, ["full"], {"full": 1e9}, 16 * gib, 60.0)["full"]
    assert slow["status"] == "too slow"
    assert slow["full_scores_if_stored_bytes"] == (256 * 256) ** 2 * 4  # stage 1: N^2 floats, 1 head

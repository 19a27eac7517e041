"""One torch thread or two: the training command, the evaluation command and notebook 06's
training cell, each timed in a fresh process, the thread counts interleaved.

    .venv/bin/python benchmarks/bench_threads.py              # 2 rounds of 1, 2 threads
    .venv/bin/python benchmarks/bench_threads.py --rounds 3 --threads 1 2

Each timing is the work only (the child process times it after its imports). The round order
alternates (1, 2 then 2, 1) so a change in the machine's load hits both alike; the 1-minute load
average is printed before and after, since on a shared machine it decides the outcome.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {
    "train": "python -m segformer_lite train --steps 10 --eval-every 0 --eval-images 20",
    "evaluate": "python -m segformer_lite evaluate --images 50",
    "notebook 06 training cell": "train.train(...) with --steps 60 --eval-every 30 --eval-images 20",
}


def child(task: str, threads: int) -> float:
    """Run one task with ``threads`` torch threads in this process; returns its seconds."""
    from segformer_lite.training import evaluate, train

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "w.safetensors")
        t0 = time.perf_counter()
        if task == "train":
            train.main(["--steps", "10", "--eval-every", "0", "--eval-images", "20", "--quiet",
                        "--threads", str(threads), "--output", out])
        elif task == "evaluate":
            evaluate.main(["--images", "50", "--quiet", "--threads", str(threads)])
        else:  # notebook 06's cell, verbatim but for the thread count and a quiet bar
            train.train(train.parse_args([
                "--steps", "60", "--batch-size", "8", "--lr", "1.5e-3", "--eval-every", "30", "--warmup", "20",
                "--eval-images", "20", "--seed", "0", "--threads", str(threads), "--quiet", "--output", out]))
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="timings per task and thread count")
    p.add_argument("--threads", type=int, nargs=2, default=[1, 2], help="the two thread counts")
    p.add_argument("--child", choices=list(TASKS), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(f"SECONDS {child(args.child, args.threads[0]):.3f}")
        return
    load_before = os.getloadavg()
    times = {(task, t): [] for task in TASKS for t in args.threads}
    for r in range(args.rounds):
        for task in TASKS:
            for t in args.threads if r % 2 == 0 else args.threads[::-1]:
                proc = subprocess.run([sys.executable, __file__, "--child", task, "--threads", str(t), str(t)],
                                      capture_output=True, text=True, check=True)
                seconds = float(proc.stdout.rsplit("SECONDS", 1)[1])
                times[task, t].append(seconds)
                print(f"round {r + 1}: {task}, {t} thread(s): {seconds:.1f} s (load {os.getloadavg()[0]:.1f})",
                      flush=True)
    a, b = args.threads
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; median of {args.rounds} runs each\n")
    print(f"| task | {a} thread(s) s | {b} thread(s) s | {b} / {a} |\n| --- | ---: | ---: | ---: |")
    for task, command in TASKS.items():
        ta, tb = statistics.median(times[task, a]), statistics.median(times[task, b])
        print(f"| {task} (`{command}`) | {ta:.1f} | {tb:.1f} | {tb / ta:.2f} |")


if __name__ == "__main__":
    main()

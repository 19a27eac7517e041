"""Draw benchmarks/sweep_results.json as images/resolution_sweep.png: time and peak memory against
pixels, log-log, one line per implementation, with reference slopes 1 and 2.

    .venv/bin/python benchmarks/plot_sweep.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from segformer_lite.checkpoint import atomic_write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STYLE = {"ours": ("#2471a3", "o"), "sdpa": ("#e67e22", "s"), "eager": ("#c0392b", "^"),
         "full": ("#7d3c98", "D")}


def series(runs: list[dict], key: str, status: str, value) -> tuple[list, list]:
    points = [(r["size"] ** 2, value(r["impls"][key])) for r in runs
              if key in r["impls"] and r["impls"][key]["status"] == status]
    points = [(x, y) for x, y in points if y is not None]
    return [x for x, _ in points], [y for _, y in points]


def slopes(ax, x0: float, y0: float, x_max: float) -> None:
    """Dashed reference lines through (x0, y0): y grows like pixels (slope 1) and pixels^2 (slope 2)."""
    for power, style, label in ((1, "--", "slope 1: ∝ pixels"), (2, "-.", "slope 2: ∝ pixels²")):
        ax.plot([x0, x_max], [y0, y0 * (x_max / x0) ** power], style, color="#888888",
                linewidth=1, label=label)


def draw(results: dict) -> Figure:
    runs_by_variant: dict[str, list] = {}
    for r in results["runs"]:
        runs_by_variant.setdefault(r["variant"], []).append(r)
    fig = Figure(figsize=(12, 4.6 * len(runs_by_variant)))
    axes = fig.subplots(len(runs_by_variant), 2, squeeze=False)
    # a skipped run is drawn where its estimate broke the limit: time for "too slow", memory for "does not fit"
    quantities = [("time per forward (ms)", lambda p: p["median_s"] * 1e3, "too slow",
                   lambda p: p["estimate_s"] * 1e3),
                  ("peak tensor memory (MiB)", lambda p: p["peak_bytes"] / 2**20, "does not fit",
                   lambda p: p["estimate_bytes"] / 2**20)]
    for row, (variant, runs) in zip(axes, runs_by_variant.items()):
        x_max = max(r["size"] for r in runs) ** 2
        for ax, (ylabel, measured, skipped, estimated) in zip(row, quantities):
            for key, (colour, marker) in STYLE.items():
                xs, ys = series(runs, key, "ok", measured)
                if not xs:
                    continue
                name = runs[0]["impls"][key].get("name", key)
                largest = int(max(xs) ** 0.5)
                ax.plot(xs, ys, marker=marker, color=colour, label=f"{name} (completes up to {largest}²)")
                sx, sy = series(runs, key, skipped, estimated)
                ax.plot(sx, sy, marker="x", markersize=9, linestyle="none", color=colour)
            xs, ys = series(runs, "ours", "ok", measured)
            slopes(ax, xs[0], ys[0], x_max)
            if ylabel.startswith("peak"):  # the course's quadratic: what full attention would store
                xs, ys = zip(*[(r["size"] ** 2, r["impls"]["full"]["full_scores_if_stored_bytes"] / 2**20)
                               for r in runs if "full" in r["impls"]])
                ax.plot(xs, ys, ":", color=STYLE["full"][0],
                        label="full attention's stage-1 score matrix, if stored (cost model)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([r["size"] ** 2 for r in runs], [f"{r['size']}²" for r in runs])
            ax.minorticks_off()
            ax.set_xlabel("pixels (image side²), batch 1")
            ax.set_ylabel(ylabel)
            ax.set_title(f"MiT-{variant.upper()}: {ylabel.split(' (')[0]}", fontsize=11)
            ax.grid(True, which="major", alpha=0.3)
        row[0].legend(fontsize=7.5, loc="upper left")
        row[1].legend(fontsize=7.5, loc="upper left")
    meta = results["meta"]
    unfit = sum(p["status"] == "does not fit" for r in results["runs"] for p in r["impls"].values())
    fig.suptitle(f"Measured {meta['date']}, {meta['threads']} thread, fp32; × = skipped, drawn at its "
                 f"estimate: over {meta['max_seconds']:.0f} s per forward (time) or {meta['max_gib']:.0f} GiB "
                 f"(memory: {unfit} such run{'s' * (unfit != 1)})",
                 fontsize=9)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "sweep_results.json")
    parser.add_argument("--out", type=Path, default=ROOT / "images" / "resolution_sweep.png")
    args = parser.parse_args()
    fig = draw(json.loads(args.results.read_text()))
    # no version string in the PNG's metadata, so redrawing the same results is byte-identical
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))
    print("wrote", args.out)


if __name__ == "__main__":
    main()

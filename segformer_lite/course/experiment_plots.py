"""Tables and figures of the experiments' results for notebook 08.

Pure functions of the dict :func:`~segformer_lite.training.experiments.load_results` returns (one
experiment of its ``"experiments"``, or effective receptive fields): figures come back as new
matplotlib Figures; the text tables are :mod:`segformer_lite.training.stats`' (re-exported here). Every design is named as in the results file
(``training/ablations.py`` describes each).
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from ..training.erf import erf_extent
from ..training.stats import comparison_table, explain, seed_table, unit

__all__ = ["seed_table", "comparison_table", "explain", "forest_figure", "drop_figure",
           "erf_figure", "decoder_figure", "sr_figure"]

VERDICT_COLOURS = {"agrees": "tab:green", "disagrees": "tab:red", "inconclusive": "tab:grey"}


def _per_seed(ax, x: float, values: Sequence[float], colour, **kw) -> None:
    ax.scatter([x] * len(values), values, s=18, color=colour, alpha=0.6, zorder=3, **kw)


def forest_figure(experiments: Mapping[str, Mapping]):
    """Every comparison of every experiment as one row: the mean paired difference ``a - b`` (dot)
    and its 95 % interval (bar), coloured by verdict, the side the paper (or the course) expects
    shaded green. mIoU comparisons and ERF radii (pixels) get a panel each: one scale per unit."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [(name, c) for name, exp in experiments.items() for c in exp["comparisons"]]
    if not rows:
        raise ValueError("no comparisons to draw")
    groups = {"mIoU": [r for r in rows if not r[1]["metric"].startswith("erf")],
              "px": [r for r in rows if r[1]["metric"].startswith("erf")]}
    groups = {k: v for k, v in groups.items() if v}
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 0.45 * len(rows) + 1.6 * len(groups)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(v) for v in groups.values()]}, layout="constrained")
    for ax, (u, group) in zip(axes[:, 0], groups.items()):
        reach = max(max(abs(c["low"]), abs(c["high"])) for _, c in group) * 1.15
        ax.axvspan(0, reach, color="tab:green", alpha=0.08)
        ax.axvline(0, color="black", linewidth=0.8)
        for y, (name, c) in enumerate(group):
            colour = VERDICT_COLOURS[c["verdict"]]
            ax.plot([c["low"], c["high"]], [y, y], color=colour, linewidth=2.5)
            ax.plot(c["mean"], y, "o", color=colour, markersize=6)
        ax.set_yticks(range(len(group)), [f"{name}: {c['comparison']} ({c['whose']})" for name, c in group], fontsize=8)
        ax.set_ylim(len(group) - 0.5, -0.5)
        ax.set_xlim(-reach, reach)
        ax.set_xlabel(f"a minus b, seed by seed ({u}); 95 % t-interval")
    handles = [Line2D([], [], color=col, marker="o", linewidth=2.5, label=v) for v, col in VERDICT_COLOURS.items()]
    handles.append(Patch(color="tab:green", alpha=0.15, label="the side claimed (a - b > 0)"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=4)
    fig.suptitle("every comparison: mean paired difference and its 95 % interval")
    return fig


def drop_figure(experiment: Mapping, train_size: int = 64):
    """The position experiment seed by seed: each design's drop in mIoU from the training size to
    every larger test size, one line per seed joining its two designs (the pairs the verdicts
    compare). The axis includes 0 (no drop)."""
    import matplotlib.pyplot as plt

    designs = experiment["designs"]
    names = list(designs)
    sizes = sorted((s for s in next(iter(designs.values()))["miou"] if int(s) != train_size), key=int)
    base = str(train_size)
    drops = {d: {s: [b - v for b, v in zip(designs[d]["miou"][base], designs[d]["miou"][s])] for s in sizes}
             for d in names}
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.3 * len(sizes) + 0.5, 3.4), sharey=True,
                             squeeze=False, layout="constrained")
    values = [v for d in names for s in sizes for v in drops[d][s]]
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = 0.1 * (hi - lo or 1.0)
    for ax, s in zip(axes[0], sizes):
        ax.axhline(0, color="black", linewidth=0.8)
        for k in range(len(drops[names[0]][s])):
            ax.plot(range(len(names)), [drops[d][s][k] for d in names], "-o", color=f"C{k}",
                    label=f"seed {k}" if s == sizes[0] else None)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.4, len(names) - 0.6)
        ax.set_title(f"{train_size} -> {s} px")
        ax.set_ylim(lo - pad, hi + pad)
    axes[0, 0].set_ylabel(f"mIoU at {train_size} px minus at the test size")
    fig.legend(loc="outside right center", fontsize=8, title="training seed")
    fig.suptitle("drop in held-out mIoU when the test images grow (lines join a seed's two designs)")
    return fig


def erf_figure(maps: Mapping[str, Sequence], vmin: float = 1e-4, title: str | None = None):
    """Effective receptive fields as heat maps, one row per model and one panel per map (stage),
    all on ONE logarithmic colour scale from ``vmin`` to 1 (every map has its maximum at 1) with a
    colour bar. The cross marks the image centre, the dashed square the smallest centred square
    holding 90 % of the map's total (:func:`~segformer_lite.training.experiments.erf_extent`)."""
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    if not maps or not 0 < vmin < 1:
        raise ValueError(f"need at least one model's maps and 0 < vmin < 1, got {len(maps)} models, vmin {vmin}")
    cols = max(len(m) for m in maps.values())
    fig, axes = plt.subplots(len(maps), cols, figsize=(2.3 * cols + 1, 2.4 * len(maps)),
                             squeeze=False, layout="constrained")
    norm, drawn = LogNorm(vmin=vmin, vmax=1.0), []
    for row, (name, model_maps) in zip(axes, maps.items()):
        for k, ax in enumerate(row):
            if k >= len(model_maps):
                fig.delaxes(ax)  # this model has fewer maps
                continue
            m = np.asarray(model_maps[k], dtype=float)  # (H, W)
            if not np.isfinite(m).all():
                raise ValueError(f"{name}, map {k + 1}: not finite (an all-zero gradient scaled to max 1?)")
            h, w = m.shape
            im = ax.imshow(np.clip(m, vmin, 1.0), norm=norm, cmap="magma")  # 0 would be off a log scale
            side = erf_extent(torch.from_numpy(m))
            ax.add_patch(Rectangle((w // 2 - side / 2, h // 2 - side / 2), side, side, fill=False,
                                   edgecolor="cyan", linestyle="--", linewidth=1))
            ax.plot(w // 2, h // 2, "+", color="cyan", markersize=9)
            ax.set_title(f"{name}, stage {k + 1}" if len(model_maps) > 1 else name, fontsize=9)
            ax.set_xlabel(f"90 % within {side} px", fontsize=8)
            ax.set_xticks([]); ax.set_yticks([])
            drawn.append(ax)
    fig.colorbar(im, ax=drawn, shrink=0.8, label="|gradient| (max 1, log scale)")
    if title:
        fig.suptitle(title)
    return fig


def decoder_figure(experiment: Mapping, size: str = "64"):
    """One bar per design, the mean held-out mIoU at ``size`` px, with every seed as a dot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    for k, (design, d) in enumerate(experiment["designs"].items()):
        values = d["miou"][size]
        ax.bar(k, statistics.fmean(values), color=f"C{k}", alpha=0.5)
        _per_seed(ax, k, values, "black", label="one seed" if k == 0 else None)
    ax.set_xticks(range(len(experiment["designs"])), list(experiment["designs"]))
    ax.set_ylabel(f"held-out mIoU at {size} px")
    ax.set_title("bars: mean over seeds")
    ax.legend(fontsize=8)
    return fig


def sr_figure(experiment: Mapping, size: str = "64"):
    """Held-out mIoU at ``size`` px against the encoder's cost, per design: GFLOPs and measured
    milliseconds (the ``cost`` entry), at every image size the cost was measured at."""
    import matplotlib.pyplot as plt

    cost = experiment["cost"]
    fig, axes = plt.subplots(len(cost), 2, figsize=(8, 3 * len(cost)), squeeze=False,
                             sharey=True, layout="constrained")
    for row, (at, c) in zip(axes, cost.items()):
        for ax, key, xlabel in ((row[0], "gflops", "GFLOPs"), (row[1], "encoder_ms", "ms (measured)")):
            for k, (design, d) in enumerate(experiment["designs"].items()):
                x, values = c[key][design], d["miou"][size]
                _per_seed(ax, x, values, f"C{k}")
                ax.plot(x, statistics.fmean(values), "D", color=f"C{k}", markersize=7, label=design)
            ax.set_xlim(0, 1.25 * max(c[key].values()))  # from 0: distances read as cost ratios
            ax.set_xlabel(f"encoder {xlabel} for one {at} image")
        row[0].set_ylabel(f"held-out mIoU at {size} px")
    axes[0][0].legend(title="design", fontsize=8)  # a legend, not labels: close points overlap
    fig.suptitle("accuracy against cost (diamond: mean; dots: seeds)")
    return fig

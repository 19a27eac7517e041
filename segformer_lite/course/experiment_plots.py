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
from ..training.stats import NONE_CLAIMED, comparison_table, explain, seed_table, unit

__all__ = ["seed_table", "comparison_table", "explain", "forest_figure", "drop_figure",
           "erf_figure", "decoder_figure", "sr_figure"]

VERDICT_COLOURS = {"agrees": "tab:green", "disagrees": "tab:red", "inconclusive": "tab:grey",
                   NONE_CLAIMED: "tab:blue"}


def _per_seed(ax, x: float, values: Sequence[float], colour, **kw) -> None:
    ax.scatter([x] * len(values), values, s=18, color=colour, alpha=0.6, zorder=3, **kw)


def _answer(c: Mapping) -> Mapping:
    """The interval a comparison's verdict reads: over the runs that trained where some stalled."""
    return c["trained"] if c.get("stalled_runs") and c.get("trained") else c


def forest_figure(experiments: Mapping[str, Mapping]):
    """Every comparison of every experiment as one row: the mean paired difference ``a - b`` (dot)
    and its 95 % interval (bar), coloured by verdict, the side claimed shaded green on that row
    only (no shading where no direction is claimed). Where runs stalled, the bar is the interval over
    the runs that trained and a thin dashed bar is the one over all seeds. Each row's label carries
    the verdict's qualifications. mIoU comparisons and ERF radii (pixels) get a panel each."""
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [(name, c) for name, exp in experiments.items() for c in exp["comparisons"]]
    if not rows:
        raise ValueError("no comparisons to draw")
    groups = {"mIoU": [r for r in rows if not r[1]["metric"].startswith("erf")],
              "px": [r for r in rows if r[1]["metric"].startswith("erf")]}
    groups = {k: v for k, v in groups.items() if v}
    labels = {id(c): "\n".join([f"{name}: {c['comparison']} ({c['whose']})"]
                                + textwrap.wrap("; ".join(c.get("qualifications") or []), 70))
              for name, c in rows}
    heights = [sum(1 + 0.35 * labels[id(c)].count("\n") for _, c in group) for group in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 0.5 * sum(heights) + 1.6 * len(groups)), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    for ax, (u, group) in zip(axes[:, 0], groups.items()):
        reach = max(max(abs(c["low"]), abs(c["high"])) for _, c in group) * 1.15
        ax.axvline(0, color="black", linewidth=0.8)
        for y, (name, c) in enumerate(group):
            direction = c.get("direction", "+")
            if direction is not None:  # the claimed side, on this row only
                ax.fill_betweenx([y - 0.45, y + 0.45], 0, reach if direction == "+" else -reach,
                                 color="tab:green", alpha=0.1, linewidth=0)
            colour = VERDICT_COLOURS[c["verdict"]]
            read = _answer(c)
            if read is not c:
                ax.plot([c["low"], c["high"]], [y + 0.25, y + 0.25], color="grey", linewidth=1, linestyle="--")
            ax.plot([read["low"], read["high"]], [y, y], color=colour, linewidth=2.5)
            ax.plot(read["mean"], y, "o", color=colour, markersize=6)
        ax.set_yticks(range(len(group)), [labels[id(c)] for _, c in group], fontsize=7)
        ax.set_ylim(len(group) - 0.5, -0.5)
        ax.set_xlim(-reach, reach)
        ax.set_xlabel(f"a minus b, seed by seed ({u}); 95 % t-interval")
    handles = [Line2D([], [], color=col, marker="o", linewidth=2.5, label=v) for v, col in VERDICT_COLOURS.items()]
    handles.append(Line2D([], [], color="grey", linestyle="--", label="all seeds, where runs stalled"))
    handles.append(Patch(color="tab:green", alpha=0.2, label="the side claimed"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=3)
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


def _spread(values: Sequence[float], tolerance: float, step: float = 0.09) -> list[float]:
    """Horizontal offsets that set values within ``tolerance`` of each other side by side, so that
    equal values stay visible as separate dots."""
    offsets = [0.0] * len(values)
    order = sorted(range(len(values)), key=lambda i: values[i])
    groups, current = [], [order[0]]
    for i in order[1:]:
        if values[i] - values[current[-1]] <= tolerance:
            current.append(i)
        else:
            groups.append(current)
            current = [i]
    groups.append(current)
    for group in groups:
        for k, i in enumerate(group):
            offsets[i] = (k - (len(group) - 1) / 2) * step
    return offsets


def decoder_figure(experiment: Mapping, size: str = "64", stall: float | None = None):
    """One bar per design at the mean held-out mIoU at ``size`` px, a black line at the median, every
    seed as a dot (equal values set side by side, so none hides another) and, with ``stall``, the
    stall threshold. The title carries the paper's own numbers (``experiment["paper"]``) and every
    qualification of its comparisons that names a confound."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    designs = experiment["designs"]
    span = max(v for d in designs.values() for v in d["miou"][size]) or 1.0
    for k, (design, d) in enumerate(designs.items()):
        values = d["miou"][size]
        ax.bar(k, statistics.fmean(values), color=f"C{k}", alpha=0.45, label="mean" if k == 0 else None)
        ax.plot([k - 0.38, k + 0.38], [statistics.median(values)] * 2, color="black", linewidth=2,
                label="median" if k == 0 else None)
        xs = [k + o for o in _spread(values, 0.01 * span)]
        ax.scatter(xs, values, s=22, color="black", alpha=0.75, zorder=3, label="one seed" if k == 0 else None)
    if stall is not None:
        ax.axhline(stall, color="tab:red", linestyle=":", linewidth=1, label=f"stalled below {stall}")
    ax.set_xticks(range(len(designs)), list(designs))
    ax.set_ylabel(f"held-out mIoU at {size} px")
    confounds = dict.fromkeys(q for c in experiment["comparisons"] for part in c.get("qualifications") or []
                              for q in part.split("; ") if "confounded" in q)
    lines = ([f"the paper, {experiment['paper']}"] if experiment.get("paper") else []) + list(confounds)
    ax.set_title("\n".join(textwrap.fill(line, 80) for line in lines) or None, fontsize=8)
    ax.legend(fontsize=8, loc="upper right")
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

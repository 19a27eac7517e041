"""Figures of the experiments' results for notebook 08, and (from ``training/stats.py``) their tables.

Pure functions of the dict :func:`~segformer_lite.training.experiments.load_results` returns (one
experiment of its ``"experiments"``, or effective receptive fields): tables come back as strings,
figures as new matplotlib Figures. Every design is named as in the results file
(``training/ablations.py`` describes each).
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from ..training.erf import erf_extent
from ..training.stats import comparison_table, explain, seed_table  # the text tables, beside the figures

__all__ = ["seed_table", "comparison_table", "explain", "position_figure", "erf_figure",
           "decoder_figure", "sr_figure"]


def _per_seed(ax, x: float, values: Sequence[float], colour, **kw) -> None:
    ax.scatter([x] * len(values), values, s=18, color=colour, alpha=0.6, zorder=3, **kw)


def position_figure(experiment: Mapping, train_size: int = 64):
    """Held-out mIoU against the test size, per design: every seed a dot, the mean a line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    designs = experiment["designs"]
    for k, (design, d) in enumerate(designs.items()):
        sizes = sorted(d["miou"], key=int)
        colour = f"C{k}"
        offset = (k - (len(designs) - 1) / 2) * 1.5  # px: keeps the designs' dots apart
        for s in sizes:
            _per_seed(ax, int(s) + offset, d["miou"][s], colour)
        means = [statistics.fmean(d["miou"][s]) for s in sizes]
        ax.plot([int(s) + offset for s in sizes], means, "-o", color=colour, label=f"{design} (mean)")
    ax.axvline(train_size, color="0.6", linestyle=":", linewidth=1, label=f"training size ({train_size} px)")
    sizes = sorted({int(s) for d in designs.values() for s in d["miou"]})
    ax.set_xticks(sizes)
    ax.set_xlabel("test image size (px)")
    ax.set_ylabel("held-out mIoU")
    ax.set_title(f"trained at one size, tested at {len(sizes)} (dots: seeds)")
    ax.legend(fontsize=8)
    return fig


def erf_figure(maps: Mapping[str, Sequence], vmin: float = 1e-4, title: str | None = None):
    """Effective receptive fields as heat maps, one row per model and one panel per map (stage),
    all on ONE logarithmic colour scale from ``vmin`` to 1 (every map has its maximum at 1) with a
    colour bar. The cross marks the image centre, the dashed square the smallest centred square
    holding 90 % of the map's total (:func:`~segformer_lite.training.erf.erf_extent`)."""
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

"""Draw the README figures: the MiT-B0 encoder diagram (package data, notebook 05 shows it), the
attention cost curve and an attention map on a photo. Deterministic: no randomness, every number
from segformer_lite.

    python scripts/make_figures.py            # segformer_lite/course/figures/encoder_diagram.png,
                                              # images/cost_curve.png, images/attention_map.png
    python scripts/make_figures.py --out DIR  # all three in DIR
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

import segformer_lite as sl  # noqa: E402
from segformer_lite.course.cost import attention_cost, encoder_cost
from segformer_lite.course.images import load_photo
from segformer_lite.checkpoint import atomic_write  # noqa: E402
from segformer_lite.course.images import FIGURES_DIR  # noqa: E402
from segformer_lite.course.widgets import attention_map as am  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STAGE_COLOURS = ("#cfe3f7", "#d5ecd4", "#fbe3c9", "#ecd5ec")


def save(fig: Figure, path: Path, dpi: int = 110) -> None:
    """Write the PNG atomically; no version string in its metadata, so reruns are byte-identical."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}))


def _box(ax, x, y, w, h, text, colour, size=9, weight="normal"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor="#444444", linewidth=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight,
            linespacing=1.5)


def _arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#444444",
                                 linewidth=1.2))


def encoder_diagram(size: int = 512) -> Figure:
    """The four stages of MiT-B0 with the shapes of a ``size x size`` input."""
    cfg = sl.mit_config("b0")
    grids = sl.stage_grid_sizes(cfg, size, size)
    fig = Figure(figsize=(12, 5.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.4)
    ax.axis("off")
    ax.text(6, 5.1, f"MiT-B0 encoder on a {size}×{size} image", ha="center", fontsize=13, weight="bold")
    _box(ax, 0.1, 2.55, 1.2, 0.9, f"image\n3×{size}×{size}", "#eeeeee", size=9)
    x, prev = 1.75, (1.3, 3.0)
    width = 2.3
    for i, (h, w) in enumerate(grids):
        dim, heads, sr, depth = cfg.embed_dims[i], cfg.num_heads[i], cfg.sr_ratios[i], cfg.depths[i]
        kh, kw = sl.reduced_grid((h, w), sr)
        k, s = cfg.patch_sizes[i], cfg.strides[i]
        height = 3.0 - 0.35 * i  # the pyramid narrows stage by stage
        y = 3.0 - height / 2
        text = (f"patch embed k{k} s{s} p{k // 2}\n"
                f"→ {h}×{w} = {h * w:,} tokens, C={dim}\n"
                f"{depth} × Block\n"
                f"attention: {heads} head{'s' * (heads > 1)}, sr_ratio {sr}\n"
                f"→ {kh}×{kw} = {kh * kw} keys\n"
                f"Mix-FFN: {dim}→{4 * dim}→{dim}\n"
                f"LayerNorm")
        _box(ax, x, y, width, height - 0.35, text, STAGE_COLOURS[i], size=8.5)
        ax.add_patch(FancyBboxPatch((x, y + height - 0.35), width, 0.35,
                                    boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=STAGE_COLOURS[i], edgecolor="#444444", linewidth=1.0))
        ax.text(x + width / 2, y + height - 0.175, f"Stage {i + 1}", ha="center", va="center",
                fontsize=10, weight="bold")
        _arrow(ax, prev, (x, 3.0))
        # the feature map handed to the decoder
        _box(ax, x + 0.25, 0.15, width - 0.5, 0.6,
             f"F{i + 1}: {dim}×{h}×{w}  (1/{cfg.total_stride[i]})", "#ffffff", size=8.5, weight="bold")
        _arrow(ax, (x + width / 2, y), (x + width / 2, 0.75))
        prev = (x + width, 3.0)
        x += width + 0.3
    return fig


def cost_curve() -> Figure:
    """Full vs efficient attention as the image grows: stage 1's score memory, and the FLOPs of
    the whole MiT-B0 with and without sequence reduction (from segformer_lite.cost)."""
    cfg = sl.mit_config("b0")
    full_cfg = dataclasses.replace(cfg, sr_ratios=(1, 1, 1, 1))
    sides = list(range(128, 1024 + 1, 64))
    stage1 = [sl.stage_grid_sizes(cfg, s, s)[0] for s in sides]
    full_mb = [attention_cost(h, w, cfg.embed_dims[0], cfg.num_heads[0], 1).score_bytes / 2**20
               for h, w in stage1]
    eff_mb = [attention_cost(h, w, cfg.embed_dims[0], cfg.num_heads[0], cfg.sr_ratios[0]).score_bytes / 2**20
              for h, w in stage1]
    full_gflops = [encoder_cost(full_cfg, s, s).flops / 1e9 for s in sides]
    eff_gflops = [encoder_cost(cfg, s, s).flops / 1e9 for s in sides]

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, full, eff, ylabel, title in [
            (axes[0], full_mb, eff_mb, "score matrix per block (MB, float32)",
             "Stage 1 attention: memory of the scores"),
            (axes[1], full_gflops, eff_gflops, "GFLOPs per image", "Whole MiT-B0 encoder: compute")]:
        ax.plot(sides, full, "o-", color="#c0392b", label="full attention (R = 1 everywhere)")
        ax.plot(sides, eff, "o-", color="#2471a3", label="efficient (R = 8, 4, 2, 1)")
        ax.set_yscale("log")
        ax.set_xlabel("image side (pixels)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    i = sides.index(512)
    axes[0].annotate(f"{full_mb[i]:,.0f} MB vs {eff_mb[i]:,.0f} MB at 512²", (512, full_mb[i]),
                     xytext=(600, 0.15), fontsize=9, arrowprops=dict(arrowstyle="->"))
    axes[1].annotate(f"{full_gflops[i]:,.0f} vs {eff_gflops[i]:.1f} GFLOPs at 512²", (512, full_gflops[i]),
                     xytext=(600, 0.6), fontsize=9, arrowprops=dict(arrowstyle="->"))
    fig.tight_layout()
    return fig


def attention_figure() -> Figure:
    """One query on a photo through the hand-made colour/position attention layer
    (see notebook 03): each head at sr_ratio 1 and 8."""
    photo = load_photo("chelsea", (150, 225))
    features = am.colour_position_features(photo, (40, 60))
    query = (8, 30)
    fig = Figure(figsize=(13, 2.5), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (head, sr) in zip(axes, [(0, 1), (0, 8), (1, 1), (1, 8)]):
        amap = am.attention_for_query(am.colour_position_attention(sr), features, query, head=head)
        im = am.draw_attention(ax, photo, amap, title=f"{am.HEAD_NAMES[head]} head, sr_ratio {sr}: "
                                                      f"{amap.kv_grid[0]}×{amap.kv_grid[1]} keys")
    am.attention_colorbar(im, axes)  # one fixed scale for all four panels
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="one folder for all the PNGs")
    args = parser.parse_args(argv)
    for folder, name, make, dpi in [(FIGURES_DIR, "encoder_diagram.png", encoder_diagram, 100),
                                    (ROOT / "images", "cost_curve.png", cost_curve, 100),
                                    (ROOT / "images", "attention_map.png", attention_figure, 90)]:
        path = (args.out or folder) / name
        save(make(), path, dpi)
        print("wrote", path)


if __name__ == "__main__":
    main()

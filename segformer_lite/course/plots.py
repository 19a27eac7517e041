"""Small drawing helpers for the course notebooks (matplotlib only; they draw on the Axes given)."""
from __future__ import annotations

import numpy as np

__all__ = ["draw_tokens"]


def draw_tokens(ax, labels, colours=None, *, highlight=(), cmap: str = "Pastel1",
                fontsize: float | None = None) -> None:
    """Draw a grid of token cells, each with its label written in it.

    ``labels`` is a 2-D int array (a token grid ``(H, W)``, or ``(1, N)`` for a sequence);
    ``colours`` an int array of the same shape picking a colour from ``cmap`` for each cell
    (for example the image row a token came from); every cell whose label is in ``highlight``
    gets a thick outline.
    """
    import matplotlib
    from matplotlib.patches import Rectangle

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 2-D array (rows, cols), got shape {labels.shape}")
    colours = np.zeros(labels.shape, dtype=int) if colours is None else np.asarray(colours)
    if colours.shape != labels.shape:
        raise ValueError(f"colours must have the labels' shape {labels.shape}, got {colours.shape}")
    palette = matplotlib.colormaps[cmap]
    rows, cols = labels.shape
    size = fontsize if fontsize is not None else (10 if cols <= 12 else 7)
    marked = set(np.asarray(highlight).ravel().tolist())
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor=palette(int(colours[r, c]) % palette.N),
                                   edgecolor="0.3", linewidth=0.8))
            ax.text(c + 0.5, r + 0.5, str(labels[r, c]), ha="center", va="center", fontsize=size)
            if labels[r, c] in marked:
                ax.add_patch(Rectangle((c + 0.04, r + 0.04), 0.92, 0.92, fill=False, edgecolor="#b00020",
                                       linewidth=2.5, zorder=3))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_aspect("equal")
    ax.axis("off")

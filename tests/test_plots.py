"""The notebooks' drawing helpers, on a headless (Agg) canvas."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from segformer_lite.course.plots import draw_tokens


def test_draw_tokens_writes_each_label_in_its_cell():
    fig, ax = plt.subplots()
    labels = np.arange(12).reshape(3, 4)
    draw_tokens(ax, labels, colours=labels // 4)
    texts = {t.get_text(): t.get_position() for t in ax.texts}
    assert len(ax.texts) == 12
    # row-major: token 6 sits in row 1, column 2, drawn at the centre of that cell
    assert texts["6"] == (2.5, 1.5)
    assert ax.get_xlim() == (0, 4) and ax.get_ylim() == (3, 0)
    faces = [tuple(p.get_facecolor()) for p in ax.patches]
    assert faces[0] == faces[3] != faces[4]  # one colour per image row


def test_draw_tokens_outlines_the_highlighted_cells():
    fig, ax = plt.subplots()
    draw_tokens(ax, np.arange(24).reshape(1, 24), highlight=[7, 20])
    outlined = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert sorted(p.get_x() for p in outlined) == pytest.approx([7.04, 20.04])


def test_draw_tokens_rejects_bad_shapes():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="2-D"):
        draw_tokens(ax, np.arange(5))
    with pytest.raises(ValueError, match="colours"):
        draw_tokens(ax, np.zeros((2, 3), dtype=int), colours=np.zeros((3, 2), dtype=int))

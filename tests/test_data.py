"""The synthetic shapes data set, both tasks: reproducible from a seed, sane labels, clear errors."""
import numpy as np
import pytest
import torch

from segformer_lite.training.data import CLASSES, TASKS, SyntheticShapes, render_shapes

by_task = pytest.mark.parametrize("task", TASKS)


@by_task
def test_same_seed_same_images_different_seed_different_images(task):
    a, b, c = (SyntheticShapes(6, 64, seed=s, task=task) for s in (3, 3, 4))
    for i in range(6):
        (xa, ya), (xb, yb), (xc, yc) = a[i], b[i], c[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    assert not torch.equal(a[0][0], a[1][0])  # items differ within a set too


@by_task
def test_item_does_not_depend_on_access_order(task):
    ds = SyntheticShapes(10, 64, seed=0, task=task)
    late_first = ds[7]
    for i in range(7):
        ds[i]
    assert torch.equal(ds[7][0], late_first[0]) and torch.equal(ds[7][1], late_first[1])


@by_task
def test_shapes_dtypes_and_ranges(task):
    ds = SyntheticShapes(20, 64, seed=1, task=task)
    x, y = ds.batch(range(20))
    assert x.shape == (20, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (20, 64, 64) and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1
    assert set(y.unique().tolist()) == set(range(len(CLASSES)))  # every class appears
    assert len(ds) == 20 and ds.classes == CLASSES


@by_task
def test_labels_match_the_pixels(task):
    """Every labelled shape has its own colour: pixels of a labelled region differ from the
    background around it, and a class's region is a sizeable connected blob, not speckle."""
    image, label = render_shapes(seed=5, index=0, size=64, task=task)
    assert image.shape == (64, 64, 3) and label.shape == (64, 64)
    fg = label > 0
    assert 0.05 < fg.mean() < 0.95
    # the label map changes only where the image changes: along label edges the colour jumps
    dy_label = label[1:] != label[:-1]
    dy_image = np.abs(image[1:] - image[:-1]).sum(-1)
    assert dy_image[dy_label].mean() > 2 * dy_image[~dy_label].mean()


@by_task
def test_class_statistics_over_many_images(task):
    ds = SyntheticShapes(100, 64, seed=11, task=task)
    counts = np.zeros(len(CLASSES))
    for i in range(len(ds)):
        counts += np.bincount(ds[i][1].numpy().ravel(), minlength=len(CLASSES))
    share = counts / counts.sum()
    assert 0.4 < share[0] < 0.85  # background is common but not everything
    assert (share[1:] > 0.04).all()  # each shape class is well represented


def _label_edges_per_shape_pixel(size, task, n=20):
    """Label-boundary pixels (a neighbour below or to the right has another label) per shape pixel.

    Boundary grows with a shape's size, area with its square, so this is ~1 / shape size in pixels
    and independent of the canvas for shapes of a fixed pixel size (measured over 20 images of
    seed 0: 0.151 at 64, 0.162 at 128, 0.158 at 256); shapes scaled with the canvas halve it at 2x.
    """
    edges = shape_pixels = 0
    for i in range(n):
        y = render_shapes(0, i, size, task)[1]
        edges += (y[1:] != y[:-1]).sum() + (y[:, 1:] != y[:, :-1]).sum()
        shape_pixels += (y > 0).sum()
    return edges / shape_pixels


@by_task
def test_larger_canvas_holds_more_shapes_of_the_same_size(task):
    # coverage: a 2x canvas with 4x the shapes covers about the same share (a fixed shape count
    # would cover a quarter), but so would a 2x-upscaled render, hence the size check below
    small = np.mean([(render_shapes(0, i, 64, task)[1] > 0).mean() for i in range(20)])
    large = np.mean([(render_shapes(0, i, 128, task)[1] > 0).mean() for i in range(20)])
    assert abs(small - large) < 0.15, (small, large)
    # shape size in pixels: the same at 64 and 128 (ratio 1; shapes scaled with the canvas give 0.5)
    ratio = _label_edges_per_shape_pixel(128, task) / _label_edges_per_shape_pixel(64, task)
    assert 0.8 < ratio < 1.25, f"edge/area ratio 128 px vs 64 px canvas is {ratio:.2f}, expected ~1"
    _, y = render_shapes(0, 0, (64, 96), task)
    assert y.shape == (64, 96)


def test_bad_arguments():
    with pytest.raises(TypeError, match="num_images"):
        SyntheticShapes(2.5)
    with pytest.raises(ValueError, match="num_images"):
        SyntheticShapes(-1)
    with pytest.raises(ValueError, match="at least 32"):
        SyntheticShapes(4, image_size=16)
    with pytest.raises(TypeError, match="seed"):
        SyntheticShapes(4, seed="0")
    with pytest.raises(IndexError, match="out of range"):
        SyntheticShapes(4)[4]
    with pytest.raises(ValueError, match="task must be one of 'hints', 'context', got 'shapes'"):
        SyntheticShapes(4, task="shapes")
    with pytest.raises(ValueError, match="task must be one of"):
        render_shapes(0, 0, 64, task="Context")

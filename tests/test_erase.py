"""segformer_lite.course.erase: cases checked for what they promise, the fill by hand, the
bookkeeping through a model that recognises the images it is shown, the local CNN's guarantee
(and that it is tight), the summary by hand."""
import numpy as np
import pytest
import torch

from segformer_lite.course import erase, regions
from segformer_lite.training.baselines import LocalCNN
from segformer_lite.training.data import SyntheticShapes


@pytest.fixture(scope="module")
def data():
    images, labels = SyntheticShapes(12, 64, seed=2026, task="context").batch(range(12))
    return images, labels.numpy()


def test_cases_keep_their_promises(data):
    _, labels = data
    cases, skipped = erase.erase_cases(labels, (2, 4), margin=3)
    assert cases and skipped >= 0
    for case in cases:
        label = labels[case.image]
        cls = label[case.shape][0]
        assert (label[case.shape] == cls).all() and (case.shape == regions.connected_region(label == cls, np.argwhere(case.shape)[0])).all()
        depth = regions.interior_depth(case.shape)
        # the shape is the image's deepest: no shape pixel of the image lies deeper
        assert depth.max() == max(regions.interior_depth(label == c).max() for c in np.unique(label) if c)
        assert (case.measured == (depth >= case.width + 3)).all() and case.measured.any()
        assert (case.band == regions.outline_band(case.shape, case.width)).all()
        assert case.placebo.sum() == case.band.sum()
        assert not (case.placebo & regions.dilate(case.shape, case.width)).any()  # off the shape and its band
    per_image = {}
    for case in cases:
        per_image.setdefault(case.image, []).append(case.width)
    assert all(ws == sorted(set(ws)) for ws in per_image.values())


def test_noise_fill_by_hand():
    image = torch.arange(3 * 2 * 3, dtype=torch.float32).reshape(3, 2, 3)  # pixel (y, x) of channel c: 6c + 3y + x
    region = np.array([[True, False, False], [False, False, True]])
    out = erase.noise_fill(image, region, np.array([4, 0]))  # flat pixel 4 = (1, 1), pixel 0 = (0, 0)
    expected = image.clone()
    expected[:, 0, 0] = image[:, 1, 1]
    expected[:, 1, 2] = image[:, 0, 0]
    assert torch.equal(out, expected) and not torch.equal(out, image)
    with pytest.raises(ValueError, match="one source index per pixel"):
        erase.noise_fill(image, region, np.array([1]))


class Recogniser:
    """Predicts the true labels on the original images and background on any other image."""

    def __init__(self, images, labels):
        self.images, self.labels, self.shown = images, torch.as_tensor(labels), []

    def predict(self, batch):
        self.shown.append(batch.clone())
        out = torch.zeros(batch.shape[0], *batch.shape[-2:], dtype=torch.int64)
        for k, image in enumerate(batch):
            same = [i for i in range(len(self.images)) if torch.equal(image, self.images[i])]
            if same:
                out[k] = self.labels[same[0]]
        return out


def test_erase_test_bookkeeping(data):
    images, labels = data
    cases, _ = erase.erase_cases(labels, (2, 4))
    spy = Recogniser(images, labels)
    result = erase.erase_test(spy, images, labels, cases, batch_size=7)
    n = np.array([c.measured.sum() for c in cases])
    assert (result.measured == n).all() and (result.right_before == n).all()
    assert (result.right_erased == 0).all() and (result.changed_erased == n).all()
    assert (result.right_placebo == 0).all() and (result.changed_placebo == n).all()
    shown = torch.cat(spy.shown)[len(images):]  # the originals first, then erased, then placebo images
    for k, case in enumerate(cases):
        original = images[case.image]
        for picture, region in ((shown[k], case.band), (shown[len(cases) + k], case.placebo)):
            differs = (picture != original).any(0).numpy()
            assert not differs[~region].any()  # only the region is touched...
            pixels = original.reshape(3, -1).T
            for y, x in np.argwhere(region):  # ...and filled with the image's own pixels
                assert (pixels == picture[:, y, x]).all(1).any()
        assert torch.equal(shown[k][:, case.band], shown[len(cases) + k][:, case.placebo])  # the same noise
        erased, placebo = erase.case_images(original, case)  # what a figure redraws: the same images
        assert torch.equal(erased, shown[k]) and torch.equal(placebo, shown[len(cases) + k])
    with pytest.raises(ValueError, match="no cases"):
        erase.erase_test(spy, images, labels, [])


def sharp_cnn():
    torch.manual_seed(0)
    cnn = LocalCNN(4).eval()
    with torch.no_grad():
        for p in cnn.parameters():
            p.mul_(4)
    return cnn


def test_local_cnn_cannot_change_at_depth_w_plus_3_and_the_bound_is_tight(data):
    images, labels = data
    cnn = sharp_cnn()
    cases, _ = erase.erase_cases(labels, (2, 4), margin=3)
    result = erase.erase_test(cnn, images, labels, cases)
    assert result.measured.sum() > 0 and (result.changed_erased == 0).all() and (result.changed_placebo == 0).all()
    # one pixel shallower the window reaches the band: the logits there do change
    moved = 0.0
    for case in cases[:6]:
        shallow = torch.from_numpy(regions.interior_depth(case.shape) == case.width + 2)
        source = np.random.default_rng(0).integers(0, 64 * 64, size=int(case.band.sum()))
        erased = erase.noise_fill(images[case.image], case.band, source)
        with torch.no_grad():
            delta = cnn(torch.stack([images[case.image], erased])).diff(dim=0).abs()[0]  # (4, H, W)
        moved = max(moved, float(delta[:, shallow].max())) if shallow.any() else moved
    assert moved > 1e-3


def test_summary_by_hand():
    result = erase.EraseResult(image=np.array([0, 1, 0]), width=np.array([2, 2, 4]), measured=np.array([10, 30, 5]),
                               right_before=np.array([10, 30, 5]), right_erased=np.array([5, 27, 1]),
                               right_placebo=np.array([10, 29, 5]), changed_erased=np.array([5, 3, 4]),
                               changed_placebo=np.array([0, 1, 0]))
    s = erase.erase_summary(result, rounds=200)
    assert s[2]["images"] == 2 and s[2]["pixels"] == 40
    assert s[2]["changed_erased"].value == pytest.approx(8 / 40)  # pixel-weighted, not the mean of 0.5 and 0.1
    assert s[2]["changed_erased"].lo == pytest.approx(3 / 30) and s[2]["changed_erased"].hi == pytest.approx(5 / 10)
    assert s[2]["right_erased"].value == pytest.approx(32 / 40)
    assert s[4]["changed_erased"] == (0.8, 0.8, 0.8) and s[4]["right_placebo"].value == 1.0


def test_measured_distances_by_hand():
    mask = lambda *pixels: np.isin(np.arange(13 * 13).reshape(13, 13), [r * 13 + c for r, c in pixels])
    shape = mask(*[(r, c) for r in range(3, 10) for c in range(3, 10)])
    # measured: (6, 6); band at Chebyshev distance 2 and 3 from it; placebo at 5 and 6
    case = erase.EraseCase(0, 1, shape, band=mask((6, 8), (6, 9)), placebo=mask((6, 11), (6, 12)),
                           measured=mask((6, 6)))
    assert erase.measured_distances(case) == (2.5, 5.5)


def test_the_placebo_lies_outside_the_shape_and_farther_than_the_band(data):
    _, labels = data
    cases, _ = erase.erase_cases(labels, (2, 4, 6))
    for case in cases:
        band, placebo = erase.measured_distances(case)
        assert not (case.placebo & case.shape).any() and placebo > band


def test_closest_outside_by_hand():
    mask = lambda *pixels: np.isin(np.arange(13 * 13).reshape(13, 13), [r * 13 + c for r, c in pixels])
    shape = mask(*[(r, c) for r in range(3, 10) for c in range(3, 10)])
    # measured: (6, 6); the band holds (6, 8) and (6, 9). A placebo pixel may not lie in the shape
    # (rows and columns 3-9) nor touch the band (rows 5-7, columns 7-10). The nearest such pixels
    # lie at distance 4 from (6, 6): row 2 and column 2, columns or rows 2-10; the two nearest: 4, 4
    case = erase.EraseCase(0, 1, shape, band=mask((6, 8), (6, 9)), placebo=mask((6, 11), (6, 12)),
                           measured=mask((6, 6)))
    assert erase.closest_outside(case) == 4.0
    # a band of 18 pixels (rows 5-7, columns 4-9): of the 32 pixels at distance 4 from (6, 6) (rows
    # 2 and 10, columns 2 and 10), 27 lie outside the shape and off rows 4-8 of column 10, next to
    # the band: the 18 nearest are all at distance 4
    wide = mask(*[(r, c) for r in (5, 6, 7) for c in range(4, 10)])
    assert erase.closest_outside(erase.EraseCase(0, 1, shape, wide, wide, mask((6, 6)))) == 4.0
    everything = np.ones((13, 13), dtype=bool)
    assert erase.closest_outside(erase.EraseCase(0, 1, everything, everything, everything, mask((6, 6)))) is None


def test_closest_outside_bounds_every_placebo_that_keeps_off_the_band(data):
    """The bound is below the mean distance of two placebos built from the allowed pixels: the
    ring just beyond the band's neighbours, and a random draw of them."""
    _, labels = data
    cases, _ = erase.erase_cases(labels, (2, 4, 6))
    rng = np.random.default_rng(0)
    checked = 0
    for case in cases:
        bound, count = erase.closest_outside(case), int(case.band.sum())
        dist = regions.outside_distance(case.measured)
        free = ~case.shape & ~regions.dilate(case.band, 1)
        ring = regions.nearest_ring(case.shape, case.width + 1, count)  # the pixels just off the band's edge
        if bound is None or ring is None:
            continue
        assert not (ring & ~free).any()
        drawn = rng.choice(np.flatnonzero(free), size=count, replace=False)
        assert bound <= dist[ring].mean() and bound <= dist.ravel()[drawn].mean()
        assert bound >= dist[free].min()
        checked += 1
    assert checked >= len(cases) // 2

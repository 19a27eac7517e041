"""The erase-the-outline test of notebook 07: blank the band around a shape's outline and see
whether the prediction deep inside the shape changes.

* :func:`erase_cases`: per image, its most deeply interior shape and, per band width ``w``, the
  band (:func:`~segformer_lite.course.regions.outline_band`), a placebo band (as many pixels,
  the nearest ones beyond the band: :func:`~segformer_lite.course.regions.nearest_ring`), and
  the shape's pixels measured, those ``w + margin`` or more inside.
* :func:`noise_fill`: blank a region with pixels drawn at random from the image itself;
  :func:`case_images`: a case's image with its band, and with its placebo band, blanked.
* :func:`erase_test`: a model's predictions on the measured pixels before erasing, after
  erasing the band, and after erasing the placebo band (:class:`EraseResult`).
* :func:`erase_summary`: per width, the share of measured pixels whose class changes and the
  accuracy, with bootstrap intervals over images.
* :func:`measured_distances`: how far the band's pixels and the placebo's lie from the measured
  pixels. The placebo matches the band in pixel count only: it lies wholly outside the shape,
  farther from the measured pixels than the band. :func:`closest_outside`: the nearest that any
  placebo of the band's size, outside the shape and not touching the band, can lie on average
  (when it is farther than the band, no such placebo can match the band's distance).

A model whose output at a pixel depends only on the ``(2r+1) x (2r+1)`` window around it (the
local CNN: ``r = 3``) cannot change on pixels ``w + r`` or more inside: their windows hold no
erased pixel. With ``margin = r`` that is a check of the test, not a finding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .regions import (connected_region, deepest_pixel, dilate, interior_depth, nearest_ring, outline_band,
                      outside_distance)
from .resample import Interval, bootstrap_mean

__all__ = ["EraseCase", "erase_cases", "noise_fill", "case_images", "EraseResult", "erase_test", "erase_summary",
           "measured_distances", "closest_outside"]


@dataclass(frozen=True)
class EraseCase:
    """One image and band width: boolean ``(H, W)`` masks of the shape, the band erased around its
    outline, the placebo band (as many pixels, all beyond the band) and the pixels measured."""

    image: int
    width: int
    shape: np.ndarray
    band: np.ndarray
    placebo: np.ndarray
    measured: np.ndarray


def erase_cases(labels, widths, margin: int = 3) -> tuple[list[EraseCase], int]:
    """``(cases, skipped)`` for the label maps ``labels`` ``(B, H, W)``. Each image's shape is the
    connected region of the deepest shape pixel (over all shape classes); for each width ``w`` in
    ``widths`` it gives a case if some shape pixel has :func:`interior_depth` ``w + margin`` or more
    and enough pixels lie beyond the band for the placebo (``skipped`` counts those that have not)."""
    cases, skipped = [], 0
    for i, label in enumerate(np.asarray(labels)):
        classes = [int(c) for c in np.unique(label) if c != 0]
        if not classes:
            continue
        deepest = {c: deepest_pixel(label, c) for c in classes}
        depth_of = {c: interior_depth(label == c)[rc] for c, rc in deepest.items()}
        cls = max(classes, key=depth_of.get)  # the first class on a tie
        shape = connected_region(label == cls, deepest[cls])
        depth = interior_depth(shape)
        for w in widths:
            measured = depth >= w + margin
            if not measured.any():
                continue
            band = outline_band(shape, w)
            placebo = nearest_ring(shape, w, int(band.sum()))  # beyond the band's outer edge
            if placebo is None:
                skipped += 1
                continue
            cases.append(EraseCase(i, int(w), shape, band, placebo, measured))
    return cases, skipped


def noise_fill(image: torch.Tensor, region, source: np.ndarray) -> torch.Tensor:
    """A copy of ``image`` ``(3, H, W)`` whose ``region`` pixels (boolean ``(H, W)``, row-major
    order) are the image's own pixels at the flat indices ``source`` (one per region pixel): no
    new colour, and none of the image's layout."""
    region = torch.as_tensor(np.asarray(region))
    if region.dtype != torch.bool or region.shape != image.shape[-2:] or int(region.sum()) != len(source):
        raise ValueError(f"region must be a boolean {tuple(image.shape[-2:])} mask with one source index per "
                         f"pixel, got {region.dtype} {tuple(region.shape)} with {int(region.sum())} pixels "
                         f"for {len(source)} indices")
    out = image.clone()
    out[:, region] = image.reshape(image.shape[0], -1)[:, torch.as_tensor(source)]
    return out


def case_images(image: torch.Tensor, case: EraseCase, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(erased, placebo)``: ``image`` ``(3, H, W)`` with the case's band, and with its placebo band,
    filled by :func:`noise_fill` from the same source pixels, drawn uniformly with replacement by a
    generator seeded ``[seed, case.image, case.width]``."""
    rng = np.random.default_rng([seed, case.image, case.width])
    source = rng.integers(0, image.shape[-2] * image.shape[-1], size=int(case.band.sum()))
    return noise_fill(image, case.band, source), noise_fill(image, case.placebo, source)


@dataclass(frozen=True)
class EraseResult:
    """Per case (arrays ``(cases,)``): the image, the width, the measured pixels' count, how many
    of them the model gets right before, after erasing the band and after erasing the placebo, and
    how many change class in either."""

    image: np.ndarray
    width: np.ndarray
    measured: np.ndarray
    right_before: np.ndarray
    right_erased: np.ndarray
    right_placebo: np.ndarray
    changed_erased: np.ndarray
    changed_placebo: np.ndarray


@torch.no_grad()
def erase_test(model, images: torch.Tensor, labels, cases: list[EraseCase], seed: int = 0,
               batch_size: int = 50) -> EraseResult:
    """Run ``model.predict`` on ``images`` ``(B, 3, H, W)`` and on every case's :func:`case_images`
    (its image with the band erased, and with the placebo band erased)."""
    if not cases:
        raise ValueError("no cases to test (erase_cases found no shape deep enough)")
    labels = torch.as_tensor(np.asarray(labels))
    before = torch.cat([model.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    erased, placebo = zip(*(case_images(images[case.image], case, seed) for case in cases))
    stacked = torch.stack(erased + placebo)
    after = torch.cat([model.predict(stacked[i:i + batch_size]) for i in range(0, len(stacked), batch_size)])
    rows = {k: [] for k in ("measured", "right_before", "right_erased", "right_placebo",
                            "changed_erased", "changed_placebo")}
    for k, case in enumerate(cases):
        m = torch.from_numpy(case.measured)
        truth, b, e, p = labels[case.image][m], before[case.image][m], after[k][m], after[len(cases) + k][m]
        for key, value in (("measured", len(truth)), ("right_before", (b == truth).sum()),
                           ("right_erased", (e == truth).sum()), ("right_placebo", (p == truth).sum()),
                           ("changed_erased", (e != b).sum()), ("changed_placebo", (p != b).sum())):
            rows[key].append(int(value))
    return EraseResult(np.array([c.image for c in cases], dtype=np.int64), np.array([c.width for c in cases]),
                       **{k: np.array(v, dtype=np.int64) for k, v in rows.items()})


def erase_summary(result: EraseResult, rounds: int = 2000, seed: int = 0) -> dict[int, dict]:
    """Per width: ``images`` and ``pixels`` measured, and as :class:`Interval`\\ s (pixel-weighted
    shares, bootstrap over images) ``changed_erased``, ``changed_placebo``, ``right_before``,
    ``right_erased``, ``right_placebo``."""
    out = {}
    for w in np.unique(result.width):
        sel = result.width == w
        n = result.measured[sel]
        row = {"images": int(sel.sum()), "pixels": int(n.sum())}
        for key in ("changed_erased", "changed_placebo", "right_before", "right_erased", "right_placebo"):
            share = getattr(result, key)[sel] / n
            row[key] = Interval(*(float(v) for v in bootstrap_mean(share, result.image[sel], n, rounds, seed=seed)))
        out[int(w)] = row
    return out


def measured_distances(case: EraseCase) -> tuple[float, float]:
    """``(band, placebo)``: the mean distance of the band's pixels, and of the placebo's, to the
    nearest measured pixel (Chebyshev, in pixels: :func:`~segformer_lite.course.regions.outside_distance`)."""
    dist = outside_distance(case.measured)
    return float(dist[case.band].mean()), float(dist[case.placebo].mean())


def closest_outside(case: EraseCase) -> float | None:
    """The smallest mean distance to the nearest measured pixel (Chebyshev, as in
    :func:`measured_distances`) that a placebo of the band's size can have when it is made of
    pixels outside the shape that do not touch the band (neither in it nor next to it): the mean
    over the band's count of such pixels nearest to the measured ones. None if there are fewer."""
    free = ~case.shape & ~dilate(case.band, 1)
    count = int(case.band.sum())
    if free.sum() < count:
        return None
    return float(np.sort(outside_distance(case.measured)[free])[:count].mean())

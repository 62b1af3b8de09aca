"""Dice and surface distances against MONAI, closed forms and the numpy twin; the CURVAS row-wise Dice."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.metrics.overlap import (
    consensus_dice,
    curvas_dice,
    dice,
    surface,
    surface_distances,
    surface_distances_many,
    surface_numpy,
)

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")


def blob(seed: int, shape=(24, 40, 36), threshold=0.55, sigma=3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, threshold)


def monai_distances(a, b, spacing):
    ta, tb = torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None])
    sp = list(spacing)
    return (
        monai_metrics.compute_hausdorff_distance(ta, tb, percentile=95, spacing=sp).item(),
        monai_metrics.compute_hausdorff_distance(ta, tb, spacing=sp).item(),
        monai_metrics.compute_average_surface_distance(ta, tb, symmetric=True, spacing=sp).item(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_surface_distances_equal_monai_on_random_blobs(seed):
    a, b = blob(seed), blob(seed + 100)
    spacing = (2.5, 0.7, 0.8)
    got = surface_distances(a, b, spacing)
    ref = monai_distances(a, b, spacing)
    assert got.hd95.value == pytest.approx(ref[0], rel=1e-5)
    assert got.hd100.value == pytest.approx(ref[1], rel=1e-5)
    assert got.assd.value == pytest.approx(ref[2], rel=1e-5)


def test_masks_touching_the_border_and_single_voxels():
    a = np.zeros((10, 12, 14), bool)
    b = np.zeros_like(a)
    a[:, :5, :] = True  # fills to three image faces
    b[0, 0, 0] = True
    b[9, 11, 13] = True
    for x, y in ((a, b), (b, a)):
        got = surface_distances(x, y, (1.0, 2.0, 3.0))
        ref = monai_distances(x, y, (1.0, 2.0, 3.0))
        assert (got.hd95.value, got.hd100.value, got.assd.value) == pytest.approx(ref, rel=1e-5)


def test_closed_form_shifted_cubes():
    a = np.zeros((20, 20, 30), bool)
    a[5:15, 5:15, 5:15] = True
    b = np.roll(a, 3, axis=2)
    got = surface_distances(a, b, (1.0, 1.0, 0.8))
    # faces normal to x are 3 voxels apart; every other surface voxel has a partner at distance 0
    assert got.hd100.value == pytest.approx(2.4)
    identical = surface_distances(a, a, (1.0, 1.0, 0.8))
    assert identical.hd95.value == identical.hd100.value == identical.assd.value == 0.0


def test_real_totalsegmentator_livers_equal_monai(totalseg):
    a_img, b_img = nib.load(totalseg / "example_seg.nii.gz"), nib.load(totalseg / "example_seg_fast.nii.gz")
    spacing = tuple(float(v) for v in a_img.header.get_zooms()[:3])
    a = np.asarray(a_img.dataobj) == 5
    b = np.asarray(b_img.dataobj) == 5
    assert a.sum() > 1000 and b.sum() > 1000
    got = surface_distances(a, b, spacing)
    ref = monai_distances(a, b, spacing)
    assert (got.hd95.value, got.hd100.value, got.assd.value) == pytest.approx(ref, rel=1e-5)
    assert dice(a, b).value > 0.9


def test_dice_against_monai_and_brute_force():
    a, b = blob(5), blob(6)
    expected = 2 * np.sum(a & b) / (a.sum() + b.sum())
    assert dice(a, b).value == pytest.approx(expected, abs=1e-12)
    metric = monai_metrics.DiceMetric(include_background=True)
    metric(torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None]))
    assert dice(a, b).value == pytest.approx(metric.aggregate().item(), abs=1e-6)
    empty = np.zeros_like(a)
    assert dice(a, empty).value == 0.0
    both = dice(empty, empty)
    assert math.isnan(both.value) and "empty" in both.reason


def test_consensus_dice_ignores_dissensus():
    a, g = blob(7), blob(8)
    d = blob(9) & ~g
    keep = ~d
    expected = 2 * np.sum(a & keep & g) / (np.sum(a & keep) + np.sum(g & keep))
    assert consensus_dice(a, g, d).value == pytest.approx(expected)
    assert consensus_dice(a, g, d).value != pytest.approx(dice(a, g).value)


def test_empty_masks_give_nan_with_the_reason():
    a = blob(1)
    e = np.zeros_like(a)
    assert surface_distances(a, e, (1, 1, 1)).hd95.reason == "reference is empty"
    assert surface_distances(e, a, (1, 1, 1)).assd.reason == "prediction is empty"
    assert "prediction and reference" in surface_distances(e, e, (1, 1, 1)).hd100.reason
    with pytest.raises(GeometryMismatch):
        surface_distances(a, a[:-1], (1, 1, 1))
    with pytest.raises(InvalidInput, match="spacing"):
        surface_distances(a, a, (1, -1, 1))


def test_numba_surface_equals_scipy_twin():
    for seed in range(4):
        m = blob(seed, threshold=0.3)
        m[0] |= blob(seed + 9)[0]  # the border face
        np.testing.assert_array_equal(surface(m), surface_numpy(m))


def test_many_equals_one_by_one():
    a = blob(11)
    refs = [blob(12), blob(13), np.zeros_like(a)]
    many = surface_distances_many(a, refs, (1.5, 0.8, 0.8))
    for r, m in zip(refs, many, strict=True):
        one = surface_distances(a, r, (1.5, 0.8, 0.8))
        for x, y in zip(one, m, strict=True):
            assert x.reason == y.reason
            assert x.value == pytest.approx(y.value, nan_ok=True)


def _monai_curvas(pred, gt):
    metric = monai_metrics.DiceMetric(include_background=False, reduction="mean", get_not_nans=False, ignore_empty=True)
    metric(torch.from_numpy(pred.astype(np.uint8)), torch.from_numpy(gt.astype(np.uint8)))
    return metric.aggregate().item()


def test_curvas_dice_is_what_monai_computes_on_unbatched_arrays():
    for seed in range(3):
        a, b = blob(seed, threshold=0.7), blob(seed + 50, threshold=0.7)
        assert curvas_dice(a, b).value == pytest.approx(_monai_curvas(a, b), abs=1e-6)
        assert abs(curvas_dice(a, b).value - dice(a, b).value) > 1e-3  # row-wise, not volumetric
    empty = np.zeros((6, 8, 8), bool)
    some = empty.copy()
    some[2, 3, 3] = True
    assert curvas_dice(some, empty).value == _monai_curvas(some, empty) == 0.0
    only_row0 = empty.copy()
    only_row0[1, 0, :] = True  # row 0 is MONAI's "background channel": dropped
    assert curvas_dice(only_row0, only_row0).value == _monai_curvas(only_row0, only_row0) == 0.0


# ---------------------------------------------------------------------------------------------------- CURVAS 2025
def _official_2025(pred_soft, bin_pred, annotations, staple_gt, smooth=1e-6):
    """CURVAS-PDACVI 2025 `merged_dice_score`, rendered directly in numpy from its definition (float mean of the
    annotations, flattened arrays, the smoothed Dice, 1 where both thresholded masks are empty)."""
    avg = np.mean(np.stack([a.astype(np.float64) for a in annotations]), axis=0).reshape(-1)
    soft = pred_soft.reshape(-1)

    def d(a, b):
        return 2.0 * np.sum(a * b) / (np.sum(a) + np.sum(b) + smooth)

    scores = []
    for t in np.linspace(0.1, 0.8, 6):
        a, b = soft > t, avg > t
        scores.append(1.0 if not a.any() and not b.any() else d(a, b))
    return float(np.mean(scores)), float(d(bin_pred.astype(float), staple_gt.astype(float)))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_curvas_2025_dice_equal_a_direct_rendering_of_their_definition(k):
    import SimpleITK as sitk
    from scipy import ndimage

    from napari_segunc.metrics.overlap import staple_consensus, staple_dice, thresholded_dice

    rng = np.random.default_rng(k)
    zz, yy, xx = np.mgrid[:24, :40, :40]
    core = (zz - 12) ** 2 / 64 + (yy - 20) ** 2 / 120 + (xx - 20) ** 2 / 100
    masks = [
        ndimage.binary_dilation(core < 1, iterations=int(rng.integers(1, 3))) ^ (rng.random(core.shape) < 0.002)
        for _ in range(k)
    ]
    soft = np.clip(
        ndimage.gaussian_filter((core < 1.1).astype(np.float32), 1.5) + rng.normal(0, 0.02, core.shape), 0, 1
    ).astype(np.float32)
    pred = soft > 0.5
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    staple = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])) > 0.5
    want_thr, want_bin = _official_2025(soft, pred, masks, staple)
    assert thresholded_dice(soft, masks).value == pytest.approx(want_thr, abs=1e-12)
    assert staple_dice(pred, masks).value == pytest.approx(want_bin, abs=1e-12)
    np.testing.assert_array_equal(staple_consensus(masks), staple)
    assert 0.5 < want_thr < 1 and 0.5 < want_bin < 1
    # both empty at every threshold: 1 (thresholded); an empty prediction and consensus: 0 (the smoothed Dice)
    empty = np.zeros(core.shape, bool)
    assert thresholded_dice(np.zeros(core.shape, np.float32), [empty] * k).value == 1.0
    assert staple_dice(empty, [empty] * k).value == 0.0


def test_curvas_2025_rows_in_the_native_suite(phantom_case):
    from napari_segunc.metrics.overlap import staple_consensus
    from napari_segunc.metrics.suite import evaluate_case

    c = phantom_case
    ev = evaluate_case(c["probabilities"], c["raters"], spacing=c["spacing"], labels=c["labels"])
    p = c["probabilities"]
    pred = np.argmax(p, axis=0)
    for organ, value in c["labels"].items():
        masks = [r == value for r in c["raters"]]
        staple = staple_consensus(masks)  # on the whole image: the suite runs it in the ROI, same consensus here
        want_thr, want_bin = _official_2025(p[value], pred == value, masks, staple)
        assert ev.value("dice_staple", organ, "consensus") == pytest.approx(want_bin, abs=1e-12)
        assert ev.value("dice_thresholded", organ, "consensus") == pytest.approx(want_thr, abs=1e-12)

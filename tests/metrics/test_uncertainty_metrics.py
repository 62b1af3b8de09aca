"""Confidence on hand-built raters, NCC against numpy's corrcoef, entropy summaries against numpy means, and all
three on the ValUES toy data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.metrics import uncertainty_metrics as um
from napari_segunc.metrics.uncertainty_metrics import (
    ENTROPY_MAPS,
    Result,
    confidence,
    entropy_summaries,
    ncc,
    rater_variance_ncc,
)
from napari_segunc.uncertainty import EnsembleAccumulator, analyze_raters, rater_votes
from napari_segunc.volume import Volume


def values_ncc(a, b):
    """ValUES's definition through numpy's Pearson r: r · (N − 1)/N."""
    return np.corrcoef(a.ravel(), b.ravel())[0, 1] * (a.size - 1) / a.size


def three_raters():
    """Votes for label 3 along 8 voxels: 3 3 2 1 0 0 0 3 (other organs elsewhere do not matter)."""
    votes = np.array([3, 3, 2, 1, 0, 0, 0, 3])
    raters = [np.where(votes > k, 3, 0).astype(np.uint8).reshape(1, 2, 4) for k in range(3)]
    raters[0][0, 1, 0] = 5  # rater 1 calls a background voxel another organ: still "not label 3"
    p = np.array([0.9, 0.7, 1.0, 0.0, 0.1, 0.3, 0.2, 0.8], np.float32).reshape(1, 2, 4)
    return p, raters


def test_confidence_hand_built_three_raters():
    p, raters = three_raters()
    # G = voxels 0, 1, 7: mean p 0.8; B = voxels 4, 5, 6: mean p 0.2 → ½ (0.8 + 0.8); disputed voxels ignored
    got = confidence(p, raters, label=3)
    assert got == Result(pytest.approx(0.8, abs=1e-7), None)
    assert confidence(p, rater_votes(raters), label=3).value == got.value
    assert confidence(Volume(p), analyze_raters(raters, staple=False), label=3).value == got.value
    roi = np.ones(p.shape, bool)
    roi[0, 1, 3] = roi[0, 1, 2] = False  # drop voxels 7 (p 0.8) and 6 (p 0.2): G mean 0.8, B mean 0.2
    assert confidence(p, raters, label=3, roi=roi).value == pytest.approx(0.8, abs=1e-7)
    roi[0, 0, 0] = False  # G = {1}: p 0.7 → ½ (0.8 + 0.7)
    assert confidence(p, raters, label=3, roi=roi).value == pytest.approx(0.75, abs=1e-7)
    perfect = np.array([1, 1, 0.5, 0.5, 0, 0, 0, 1], np.float32).reshape(p.shape)
    assert confidence(perfect, raters, label=3).value == 1.0
    assert confidence(1 - perfect, raters, label=3).value == 0.0
    assert confidence(np.full(p.shape, 0.37), raters, label=3).value == pytest.approx(0.5)


def test_confidence_nan_cases():
    p, raters = three_raters()
    roi = np.zeros(p.shape, bool)
    roi.reshape(-1)[2:6] = True  # voxels 2..5: votes 2 1 0 0 → no unanimous organ voxel
    got = confidence(p, raters, label=3, roi=roi)
    assert math.isnan(got.value)
    assert got.reason == "no voxel in the region of interest where all 3 rater(s) drew label 3"
    roi.reshape(-1)[4:6] = False  # votes 2 1: neither
    both = confidence(p, raters, label=3, roi=roi).reason
    assert both.endswith("; no voxel in the region of interest where no rater drew label 3")
    everywhere = [np.full((2, 2, 2), 3, np.uint8), np.pad(np.full((2, 2, 1), 3, np.uint8), ((0, 0), (0, 0), (0, 1)))]
    got = confidence(np.full((2, 2, 2), 0.5), everywhere, label=3)
    assert math.isnan(got.value) and got.reason == "no voxel where no rater drew label 3"
    got = confidence(p, raters, label=9)  # nobody drew it: no G
    assert math.isnan(got.value) and "all 3 rater(s) drew label 9" in got.reason


def test_confidence_input_errors():
    p, raters = three_raters()
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        confidence(p + 1, raters, label=3)
    with pytest.raises(GeometryMismatch, match="same image grid"):
        confidence(p[:, :1], raters, label=3)
    with pytest.raises(InvalidInput, match="region of interest is empty"):
        confidence(p, raters, label=3, roi=np.zeros(p.shape, bool))


def test_ncc_equals_scaled_pearson():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, size=(6, 7, 8)).astype(np.float32)
    b = (0.6 * a + rng.normal(0, 1, a.shape)).astype(np.float32)
    got = ncc(a, b)
    assert got.reason is None
    assert got.value == pytest.approx(values_ncc(a.astype(np.float64), b.astype(np.float64)), rel=1e-9)
    roi = rng.random(a.shape) < 0.3
    assert ncc(a, b, roi=roi).value == pytest.approx(values_ncc(a[roi], b[roi]), rel=1e-9)
    assert ncc(a, 2 * a + 1).value == pytest.approx((a.size - 1) / a.size, rel=1e-12)  # not 1: ValUES's (N−1)/N
    assert ncc(a, -a).value == pytest.approx(-(a.size - 1) / a.size, rel=1e-12)
    c = a.copy()
    c[roi] = np.nan  # NaN voxels are left out
    assert ncc(c, b).value == pytest.approx(values_ncc(a[~roi], b[~roi]), rel=1e-9)


def test_ncc_in_slabs_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.random((9, 5, 4)), rng.random((9, 5, 4))
    whole = ncc(a, b).value
    monkeypatch.setattr(um, "_CHUNK", 40)  # 2 slices per slab, uneven last slab
    assert ncc(a, b).value == pytest.approx(whole, rel=1e-12)
    assert ncc(a, b).value == pytest.approx(values_ncc(a, b), rel=1e-12)


def test_ncc_nan_cases():
    rng = np.random.default_rng(2)
    a = rng.random((3, 4, 5))
    constant = np.full(a.shape, 0.1, np.float32)  # its float mean is not exactly 0.1: must still be "constant"
    got = ncc(a, constant)
    assert math.isnan(got.value) and got.reason.startswith("constant map") and "second map" in got.reason
    got = ncc(constant, constant)
    assert got.reason == "constant map: the first map and the second map are the same in every voxel used"
    roi = np.zeros(a.shape, bool)
    roi[0, 0, 0] = True
    got = ncc(a, a, roi=roi)
    assert math.isnan(got.value) and got.reason.startswith("fewer than 2 voxels")
    with pytest.raises(GeometryMismatch):
        ncc(a, a[:2])
    with pytest.raises(InvalidInput, match="infinite"):
        ncc(a, np.where(roi, np.inf, a))


def test_rater_variance_ncc():
    rng = np.random.default_rng(3)
    shape = (4, 6, 5)
    raters = [(rng.random(shape) < q).astype(np.uint8) * 2 for q in (0.3, 0.5, 0.7, 0.4)]
    entropy = rng.random(shape).astype(np.float32)
    p_bar = np.mean([r == 2 for r in raters], axis=0)
    variance = p_bar * (1 - p_bar)
    got = rater_variance_ncc(entropy, raters, label=2)
    assert got.reason is None and got.value == pytest.approx(values_ncc(entropy.astype(np.float64), variance))
    roi = rng.random(shape) < 0.5
    want = values_ncc(entropy[roi].astype(np.float64), variance[roi])
    assert rater_variance_ncc(entropy, rater_votes(raters), label=2, roi=roi).value == pytest.approx(want)
    same = ncc(entropy, analyze_raters(raters, staple=False).rater_variance[1])  # the raters' own variance map
    assert same.value == pytest.approx(got.value, rel=1e-6)
    one = rater_variance_ncc(entropy, raters[:1], label=2)
    assert math.isnan(one.value) and one.reason.startswith("constant map: the rater variance")


def ensemble_maps(seed=0, shape=(5, 6, 7)):
    rng = np.random.default_rng(seed)
    acc = EnsembleAccumulator()
    for i in range(4):
        p = rng.dirichlet([0.6, 0.6, 0.6], size=int(np.prod(shape))).T.reshape(3, *shape).astype(np.float32)
        acc.add(p, name=f"m{i}")
    return acc.result()


def test_entropy_summaries_equal_numpy_means():
    maps = ensemble_maps()
    roi = np.zeros(maps.entropy.shape, bool)
    roi[1:4, 2:5] = True
    got = entropy_summaries(maps, organ=2, roi=roi)
    assert set(got) == {f"mean_{m}_{r}" for m in ENTROPY_MAPS for r in ("roi", "organ")}
    organ = (maps.segmentation == 2) & roi
    for m in ENTROPY_MAPS:
        a = getattr(maps, m).astype(np.float64)
        assert got[f"mean_{m}_roi"] == Result(pytest.approx(a[roi].mean(), rel=1e-12), None)
        assert got[f"mean_{m}_organ"].value == pytest.approx(a[organ].mean(), rel=1e-12)
    whole = entropy_summaries(maps)
    assert set(whole) == {f"mean_{m}_roi" for m in ENTROPY_MAPS}
    assert whole["mean_entropy_roi"].value == pytest.approx(maps.entropy.astype(np.float64).mean(), rel=1e-12)
    # predictive entropy = expected entropy + mutual information (up to the MI clip at 0 and float32)
    assert whole["mean_entropy_roi"].value == pytest.approx(
        whole["mean_expected_entropy_roi"].value + whole["mean_mutual_information_roi"].value, abs=1e-5
    )


def test_entropy_summaries_nan_rules():
    maps = ensemble_maps(1)
    as_dict = {"entropy": maps.entropy.copy(), "segmentation": np.zeros(maps.entropy.shape, np.uint8)}
    as_dict["entropy"][0] = np.nan  # first slice not computed: left out
    got = entropy_summaries(as_dict, organ=1)
    assert got["mean_entropy_roi"].value == pytest.approx(maps.entropy[1:].astype(np.float64).mean(), rel=1e-12)
    assert got["mean_expected_entropy_roi"].reason == "the expected entropy map was not given"
    assert got["mean_entropy_organ"].reason == "the model predicts no voxel of class 1"
    assert math.isnan(got["mean_mutual_information_organ"].value)
    roi = np.zeros(maps.entropy.shape, bool)
    roi[0] = True
    assert entropy_summaries(as_dict, roi=roi)["mean_entropy_roi"].reason.startswith("every voxel")
    with pytest.raises(InvalidInput, match="segmentation"):
        entropy_summaries({"entropy": maps.entropy}, organ=1)
    with pytest.raises(InvalidInput, match="None of the maps"):
        entropy_summaries({})


def test_values_toy_case(values_toy):
    image = read_volume(values_toy / "imagesTr" / "0001.nii.gz")
    raters = [read_volume(values_toy / "labelsTr" / f"0001_0{k}.nii.gz") for k in range(3)]
    p = np.clip(image.data, 0, 1)  # the blurred sphere as a stand-in prediction
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.nan_to_num(-(p * np.log(p) + (1 - p) * np.log1p(-p)))  # binary entropy, nats
    masks = np.stack([r.data == 1 for r in raters])
    all_say, none_say = masks.all(axis=0), ~masks.any(axis=0)
    want = 0.5 * ((1 - p[none_say].mean()) + p[all_say].mean())
    got = confidence(p, raters)
    assert got.value == pytest.approx(want, rel=1e-12)
    assert 0.99 < got.value < 1  # the sphere is the smallest rater's shape: certain inside, certain outside
    p_bar = masks.mean(axis=0)
    got = rater_variance_ncc(entropy, raters)
    assert got.value == pytest.approx(values_ncc(entropy, p_bar * (1 - p_bar)), rel=1e-9)
    assert 0.85 < got.value < 0.95  # the blurred rim is where the raters disagree
    roi = np.zeros(p.shape, bool)
    roi[16:48, 16:48, :32] = True
    got = rater_variance_ncc(entropy, raters, roi=roi)
    assert got.value == pytest.approx(values_ncc(entropy[roi], (p_bar * (1 - p_bar))[roi]), rel=1e-9)

"""ECE / MCE / ACE / per-organ ECE against torchmetrics and ValUES, and the CURVAS ECE against torchmetrics itself."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from napari_segunc.metrics import calibration as cal

torch = pytest.importorskip("torch")
tmc = pytest.importorskip("torchmetrics.classification")
tm_ce = pytest.importorskip("torchmetrics.functional.classification.calibration_error")


def dirichlet(seed: int, c: int, shape=(6, 20, 25), concentration=0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([concentration] * c, size=shape).astype(np.float64)
    return np.moveaxis(p, -1, 0)


def raters_for(p: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Rater labels that follow the prediction with a confidence-dependent chance (a roughly calibrated model)."""
    rng = np.random.default_rng(seed)
    pred, conf = p.argmax(0), p.max(0)
    out = []
    for _ in range(k):
        other = rng.integers(0, p.shape[0], size=pred.shape)
        out.append(np.where(rng.random(pred.shape) < conf, pred, other).astype(np.uint8))
    return out


def tm_exact(p: np.ndarray, target: np.ndarray, norm: str) -> float:
    """torchmetrics' multiclass binning and reduction in float64 (the class itself computes in float32)."""
    flat = torch.from_numpy(p.reshape(p.shape[0], -1).T.copy())
    conf, acc = tm_ce._multiclass_calibration_error_update(flat, torch.from_numpy(target.ravel().astype(np.int64)))
    return tm_ce._ce_compute(conf.double(), acc.double(), 50, norm=norm).item()


@pytest.mark.parametrize(("c", "k"), [(2, 1), (4, 3), (4, 1), (2, 3)])
def test_top_label_ece_and_mce_equal_torchmetrics(c, k):
    p = dirichlet(c * 10 + k, c)
    raters = raters_for(p, k, seed=k)
    res = cal.top_label_calibration(p, raters)
    for r, e, m in zip(raters, res.ece_per_rater, res.mce_per_rater, strict=True):
        # torchmetrics' update casts the confidences to float32: agreement to float32 precision
        assert e == pytest.approx(tm_exact(p, r, "l1"), abs=1e-7)
        assert m == pytest.approx(tm_exact(p, r, "max"), abs=1e-7)
        # and the public metric class, whose float32 sums are fine at this size
        metric = tmc.MulticlassCalibrationError(num_classes=c, n_bins=50, norm="l1")
        flat = torch.from_numpy(p.reshape(c, -1).T.copy())
        assert e == pytest.approx(metric(flat, torch.from_numpy(r.ravel().astype(np.int64))).item(), abs=1e-5)
    assert res.ece.value == pytest.approx(np.mean(res.ece_per_rater))
    assert 0 < res.ece.value < 0.2


def test_confidence_one_goes_to_the_last_bin_not_a_bin_of_its_own():
    p = np.zeros((2, 1, 1, 10))
    p[1] = [1.0, 1.0, 1.0, 1.0, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99]
    p[0] = 1 - p[1]
    # two of the four 1.0 voxels are wrong (gap −0.5), the six 0.99 voxels are right (gap +0.01)
    target = np.array([1, 1, 0, 0, 1, 1, 1, 1, 1, 1], np.uint8).reshape(1, 1, 10)
    native = cal.top_label_calibration(p, [target]).ece.value
    # native: one bin [0.98, 1] with all ten: accuracy 0.8, confidence 0.994 → |0.8 − 0.994| = 0.194
    assert native == pytest.approx(0.194, abs=1e-12)
    # torchmetrics: 1.0 in a bin of its own: 0.4·|0.5 − 1| + 0.6·|1 − 0.99| = 0.206
    assert tm_exact(p, target, "l1") == pytest.approx(0.206, abs=1e-7)


def values_calib_stats(correct, confids):
    """ValUES evaluation/metrics/ace.py calib_stats + calc_ace, the same steps."""
    bins = np.linspace(0.0, 1.0 + 1e-8, 21)
    binids = np.digitize(confids, bins) - 1
    bin_sums = np.bincount(binids, weights=confids, minlength=len(bins))
    bin_true = np.bincount(binids, weights=correct, minlength=len(bins))
    bin_total = np.bincount(binids, minlength=len(bins))
    nonzero = bin_total != 0
    gaps = np.abs(bin_true[nonzero] / bin_total[nonzero] - bin_sums[nonzero] / bin_total[nonzero])
    return gaps.sum() / nonzero.sum()


def test_ace_equals_values_on_pooled_pairs():
    p = dirichlet(3, 4)
    raters = raters_for(p, 3, seed=9)
    pred, conf = p.argmax(0).ravel(), p.max(0).ravel()
    correct = np.concatenate([(r.ravel() == pred).astype(int) for r in raters])
    expected = values_calib_stats(correct, np.tile(conf, 3))
    assert cal.top_label_calibration(p, raters).ace.value == pytest.approx(expected, abs=1e-12)


def test_reliability_data_is_the_pooled_histogram():
    p = dirichlet(4, 3)
    raters = raters_for(p, 2, seed=1)
    res = cal.top_label_calibration(p, raters)
    conf, pred = p.max(0).ravel(), p.argmax(0).ravel()
    counts, _ = np.histogram(conf, bins=np.linspace(0, 1, 51))
    np.testing.assert_array_equal(res.bin_count, 2 * counts)
    assert res.bin_count.sum() == 2 * conf.size
    b = np.minimum((conf * 50).astype(int), 49)
    j = int(np.argmax(counts))
    hits = sum(np.sum((r.ravel() == pred)[b == j]) for r in raters)
    assert res.bin_accuracy[j] == pytest.approx(hits / (2 * counts[j]))
    assert res.bin_confidence[j] == pytest.approx(conf[b == j].mean())
    assert np.isnan(res.bin_accuracy[counts == 0]).all()


def test_organ_ece_equals_torchmetrics_binary():
    rng = np.random.default_rng(2)
    po = rng.beta(0.3, 0.3, size=(8, 20, 20))
    masks = [rng.random(po.shape) < po**1.3 for _ in range(3)]
    ece, mce = cal.organ_calibration(po, masks)
    ref_e = [
        tmc.BinaryCalibrationError(n_bins=50, norm="l1")(
            torch.from_numpy(po.ravel()), torch.from_numpy(m.ravel().astype(np.int64))
        ).item()
        for m in masks
    ]
    ref_m = [
        tmc.BinaryCalibrationError(n_bins=50, norm="max")(
            torch.from_numpy(po.ravel()), torch.from_numpy(m.ravel().astype(np.int64))
        ).item()
        for m in masks
    ]
    assert ece.value == pytest.approx(np.mean(ref_e), abs=1e-5)
    assert mce.value == pytest.approx(np.mean(ref_m), abs=1e-5)


def test_numba_kernels_equal_numpy_twins():
    p = dirichlet(8, 5).astype(np.float32)
    raters = raters_for(p, 3, seed=2)
    a = cal.top_label_calibration(p, raters, use_numba=True)
    b = cal.top_label_calibration(p, raters, use_numba=False)
    assert a.ece_per_rater == pytest.approx(b.ece_per_rater, abs=1e-12)
    assert a.ace.value == pytest.approx(b.ace.value, abs=1e-12)
    np.testing.assert_array_equal(a.bin_count, b.bin_count)
    masks = [r == 1 for r in raters]
    fast, twin = cal.organ_calibration(p[1], masks, use_numba=True), cal.organ_calibration(p[1], masks, use_numba=False)
    assert [r.value for r in fast] == pytest.approx([r.value for r in twin], abs=1e-12)


def official_ece(organ_probs: np.ndarray, rater: np.ndarray) -> float:
    """The CURVAS 2024 expected_calibration_error, run with torch and torchmetrics."""
    samples = torch.from_numpy(organ_probs)
    with_bg = torch.cat((1 - samples.sum(dim=0, keepdim=True), samples), dim=0)
    flat = with_bg.permute(1, 2, 3, 0).reshape(-1, with_bg.shape[0])
    metric = tmc.MulticlassCalibrationError(num_classes=with_bg.shape[0], n_bins=50)
    return float(metric(flat, torch.from_numpy(rater.astype(np.int64)).view(-1)))


def test_curvas_ece_reproduces_torchmetrics_float32_arithmetic():
    rng = np.random.default_rng(0)
    shape = (30, 64, 64)  # 122 880 voxels, most of them confident background: float32 bin sums drift
    organs = np.zeros((3, *shape), np.float32)
    organs[0, 10:20, 20:40, 20:40] = rng.uniform(0.6, 1.0, (10, 20, 20))
    organs[1] = rng.uniform(0, 0.0005, shape)
    organs[2, :, :8] = rng.uniform(0.3, 0.7, (30, 8, 64))
    organs[:, organs.sum(0) > 1] /= 1.0001
    rater = np.argmax(np.concatenate([1 - organs.sum(0, keepdims=True), organs]), axis=0).astype(np.uint8)
    rater[rng.random(shape) < 0.02] = 0
    got = cal.curvas_ece(organs, rater)
    assert got == pytest.approx(official_ece(organs, rater), rel=1e-6)
    exact = cal.top_label_calibration(np.concatenate([1 - organs.sum(0, keepdims=True), organs]), [rater]).ece.value
    assert got != pytest.approx(exact, rel=1e-3)  # float32 accumulation is visible at this size


def test_curvas_ece_softmax_quirk(caplog):
    rng = np.random.default_rng(1)
    organs = rng.dirichlet([0.5] * 4, size=(4, 10, 10)).astype(np.float32)[..., 1:]
    organs = np.moveaxis(organs, -1, 0).copy()
    organs[:, 0, 0, 0] = [0.5, 0.3, 0.2000001]  # sums just above 1: background −1e-7
    rater = rng.integers(0, 4, size=(4, 10, 10)).astype(np.uint8)
    with caplog.at_level(logging.WARNING):
        got = cal.curvas_ece(organs, rater)
    assert "softmax" in caplog.text
    assert got == pytest.approx(official_ece(organs, rater), rel=1e-5)
    clean = organs.copy()
    clean[:, 0, 0, 0] = [0.5, 0.3, 0.1]
    assert abs(cal.curvas_ece(clean, rater) - got) > 0.05  # one voxel changed the whole score
    multi = cal.curvas_multirater_ece(organs, [rater, rater, np.zeros_like(rater)])
    assert multi[0] == multi[1] == pytest.approx(got) and multi[2] != multi[0]

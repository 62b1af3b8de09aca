"""AUROC against sklearn on explicitly pooled pairs; AURC / E-AURC against the published rc_curve_stats loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_segunc.metrics import ranking as rk

sk_metrics = pytest.importorskip("sklearn.metrics")


def case(seed: int, n: int = 3000, k: int = 3, levels: int | None = None):
    """Entropy, prediction and K raters; errors likelier where the entropy is high; `levels` quantises (ties)."""
    rng = np.random.default_rng(seed)
    entropy = rng.gamma(1.0, 0.3, n).astype(np.float32)
    if levels:
        entropy = (np.round(entropy * levels) / levels).astype(np.float32)
    pred = rng.integers(0, 3, n).astype(np.uint8)
    raters = []
    for _ in range(k):
        wrong = rng.random(n) < np.clip(entropy, 0, 0.9)
        raters.append(np.where(wrong, (pred + 1) % 3, pred).astype(np.uint8))
    return entropy, pred, raters


def rc_curve_stats(risks, confids):
    """fd-shifts / ValUES rc_curve_stats, the published loop (test twin)."""
    coverages, selective_risks, weights = [], [], []
    n_samples = len(risks)
    idx_sorted = np.argsort(confids)
    coverage = n_samples
    error_sum = sum(risks[idx_sorted])
    coverages.append(coverage / n_samples)
    selective_risks.append(error_sum / n_samples)
    tmp_weight = 0
    for i in range(0, len(idx_sorted) - 1):
        coverage = coverage - 1
        error_sum = error_sum - risks[idx_sorted[i]]
        tmp_weight += 1
        if i == 0 or confids[idx_sorted[i]] != confids[idx_sorted[i - 1]]:
            coverages.append(coverage / n_samples)
            selective_risks.append(error_sum / (n_samples - 1 - i))
            weights.append(tmp_weight / n_samples)
            tmp_weight = 0
    if tmp_weight > 0:
        coverages.append(0)
        selective_risks.append(selective_risks[-1])
        weights.append(tmp_weight / n_samples)
    return coverages, selective_risks, weights


def aurc_ref(risks, confids):
    _, r, w = rc_curve_stats(risks, confids)
    return sum((r[i] + r[i + 1]) * 0.5 * w[i] for i in range(len(w)))


def eaurc_ref(risks, confids):
    n = len(risks)
    selective = np.sort(risks).cumsum() / np.arange(1, n + 1)
    return aurc_ref(risks, confids) - selective.sum() / n


@pytest.mark.parametrize(("k", "levels"), [(1, None), (2, 20), (3, None), (3, 5)])
def test_auroc_equals_sklearn_on_pooled_pairs(k, levels):
    entropy, pred, raters = case(k, k=k, levels=levels)
    y = np.concatenate([pred != r for r in raters])
    expected = sk_metrics.roc_auc_score(y, np.tile(entropy, k))
    got = rk.error_detection_auroc(entropy, pred, raters)
    assert got.value == pytest.approx(expected, abs=1e-12)
    assert got.value > 0.6  # errors do sit where the entropy is high


def test_auroc_from_probabilities_and_nan_cases():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=500).T
    entropy = -(p * np.log(p)).sum(0)
    pred = p.argmax(0)
    r = [np.where(rng.random(500) < 0.3, (pred + 1) % 3, pred)]
    assert rk.error_detection_auroc(entropy, p, r).value == rk.error_detection_auroc(entropy, pred, r).value
    none = rk.error_detection_auroc(entropy, pred, [pred])
    assert math.isnan(none.value) and "no error" in none.reason
    allwrong = rk.error_detection_auroc(entropy, pred, [(pred + 1) % 3])
    assert math.isnan(allwrong.value) and "no correct" in allwrong.reason


@pytest.mark.parametrize("levels", [None, 50, 4])
def test_aurc_and_curve_equal_the_published_loop(levels):
    entropy, pred, raters = case(7, n=5000, levels=levels)
    risk = np.mean([pred != r for r in raters], axis=0)
    confids = -entropy
    got = rk.aurc_from_maps(entropy, pred, raters)
    cov, sel, w = rc_curve_stats(risk, confids)
    np.testing.assert_allclose(got.coverage, cov, rtol=0, atol=1e-12)
    # running sums round differently (the loop subtracts, we cumsum): 1e-9 where few voxels are left
    np.testing.assert_allclose(got.selective_risk, sel, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.weights, w, rtol=0, atol=1e-12)
    assert got.aurc.value == pytest.approx(aurc_ref(risk, confids), abs=1e-12)
    assert got.eaurc.value == pytest.approx(eaurc_ref(risk, confids), abs=1e-12)
    assert 0 < got.eaurc.value < got.aurc.value
    auroc, curve = rk.error_ranking(entropy, pred, raters)  # the compiled one-pass version the suite uses
    np.testing.assert_allclose(curve.selective_risk, sel, rtol=0, atol=1e-12)  # same subtractions as the loop
    np.testing.assert_allclose(curve.weights, w, rtol=0, atol=1e-15)
    assert curve.aurc.value == pytest.approx(aurc_ref(risk, confids), abs=1e-12)
    assert curve.eaurc.value == pytest.approx(eaurc_ref(risk, confids), abs=1e-12)
    assert auroc.value == pytest.approx(rk.error_detection_auroc(entropy, pred, raters).value, abs=1e-12)


def test_risk_coverage_edge_cases_and_thinning():
    one = rk.risk_coverage([0.5], [1.0])
    assert one.aurc.value == aurc_ref(np.array([0.5]), np.array([1.0])) == 0
    same = rk.risk_coverage([0.0, 1.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0])  # one tie group: the loop's own quirk
    assert same.aurc.value == pytest.approx(aurc_ref(np.array([0.0, 1.0, 0.0, 1.0]), np.array([2.0] * 4)))
    entropy, pred, raters = case(3, n=20000)
    curve = rk.aurc_from_maps(entropy, pred, raters)
    x, y = curve.thinned(500)
    assert len(x) <= 500 and x[0] == 1.0 and x[-1] == curve.coverage[-1]

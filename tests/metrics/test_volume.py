"""Volume CRPS against the issue's constants, numerical integration, a transcription of the official CURVAS code
and hand-counted volumes on anisotropic grids and on the ValUES toy data."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.interpolate
import scipy.stats

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.metrics.volume import (
    CRPSMode,
    Result,
    VolumeUnit,
    crps_curvas,
    crps_gaussian,
    predicted_volume,
    rater_volumes,
    volume_crps,
    voxel_volume_ml,
)
from napari_segunc.uncertainty import rater_votes
from napari_segunc.volume import Volume

RATERS = (100.0, 110.0, 120.0)


def numerical_crps(v, mu, sigma):
    """∫ (Φ((x − μ)/σ) − 1{x ≥ v})² dx by adaptive quadrature, split at v (independent of the closed form)."""
    cdf = scipy.stats.norm(mu, sigma).cdf
    below, _ = scipy.integrate.quad(lambda x: cdf(x) ** 2, -np.inf, v, limit=200)
    above, _ = scipy.integrate.quad(lambda x: (1 - cdf(x)) ** 2, v, np.inf, limit=200)
    return below + above


def official_curvas_crps(v, volumes):
    """Transcription of CURVAS_2024/evaluation_metrics/metrics.py (calculate_volumes_distributions +
    crps_computation) with the libraries it uses: scipy.stats.norm, interp1d, quad."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # quad's IntegrationWarning, norm(scale=0)'s invalid values
        mean, std = np.mean(volumes), np.std(volumes)
        dist = scipy.stats.norm(loc=mean, scale=std)
        x = np.linspace(dist.ppf(0.01), dist.ppf(0.99), 100)
        cdf = scipy.interpolate.interp1d(x, dist.cdf(x), bounds_error=False, fill_value=(0, 1))
        value, _ = scipy.integrate.quad(
            lambda y: (cdf(y) - 0.5 * (np.sign(y - v) + 1)) ** 2, mean - 3 * std, mean + 3 * std
        )
    return value


def spread(mu, sigma):
    """Three volumes with mean μ and population standard deviation σ."""
    a = sigma * math.sqrt(1.5)
    return [mu - a, mu, mu + a]


@pytest.mark.parametrize(
    ("v", "curvas", "native"),
    [(110, 1.9081, 1.9081), (130, 15.4456, 15.4316), (140, 19.9427, 25.3939), (1000, 19.9427, 885.3934)],
)
def test_issue_constants(v, curvas, native):
    assert round(crps_curvas(v, RATERS), 4) == curvas
    assert round(crps_gaussian(v, RATERS), 4) == native


def test_closed_form_equals_numerical_integration():
    rng = np.random.default_rng(42)
    for _ in range(25):
        mu, sigma = rng.uniform(10, 2000), rng.uniform(0.5, 200)
        v = mu + sigma * rng.normal(0, 2.5)
        assert crps_gaussian(v, spread(mu, sigma)) == pytest.approx(numerical_crps(v, mu, sigma), rel=1e-7, abs=1e-9)


def test_curvas_equals_the_official_algorithm():
    rng = np.random.default_rng(7)
    cases = [(v, RATERS) for v in (0, 90, 104.2, 110, 125, 130, 134.49, 140, 1000)]
    cases += [(rng.uniform(0, 400), list(rng.uniform(50, 300, size=k))) for k in (2, 3, 3, 5, 8)]
    for v, vols in cases:
        assert crps_curvas(v, vols) == pytest.approx(official_curvas_crps(v, vols), rel=1e-9, abs=1e-12)


def test_curvas_saturates_beyond_three_sigma_but_native_keeps_growing():
    far = [crps_curvas(v, RATERS) for v in (135, 200, 1e6)]
    assert far[0] == pytest.approx(far[1], abs=1e-9) and far[1] == pytest.approx(far[2], abs=1e-9)
    assert crps_gaussian(200, RATERS) < crps_gaussian(1e6, RATERS)
    # symmetric: far below scores like far above
    assert crps_curvas(-1e6, RATERS) == pytest.approx(far[0], rel=1e-6)


def test_zero_spread(caplog):
    assert crps_gaussian(12.5, [10, 10, 10]) == 2.5
    assert crps_gaussian(7.0, [10.0]) == 3.0  # one rater: absolute volume error
    with caplog.at_level(logging.WARNING, logger="napari_segunc.metrics.volume"):
        assert crps_curvas(12.5, [10, 10, 10]) == 0.0  # the official range μ ± 3σ is empty
    assert "identical" in caplog.text
    assert official_curvas_crps(12.5, [10, 10, 10]) == 0.0


def test_crps_scales_with_the_unit():
    vols = np.array([11.0, 17.0, 29.0])
    for f in (crps_gaussian, crps_curvas):
        assert f(23.0 * 0.3, vols * 0.3) == pytest.approx(0.3 * f(23.0, vols), rel=1e-9)


def test_scalar_errors():
    with pytest.raises(InvalidInput, match="No rater volume"):
        crps_gaussian(1.0, [])
    with pytest.raises(InvalidInput, match="finite"):
        crps_curvas(float("nan"), RATERS)


def hand_case():
    """3 raters on a (4, 5, 6) grid with 10, 14 and 6 organ voxels (label 2) and a map summing to 9.5."""
    shape = (4, 5, 6)
    raters = []
    for n in (10, 14, 6):
        a = np.zeros(shape, np.uint8)
        a.reshape(-1)[:n] = 2
        a.reshape(-1)[-3:] = 1  # another organ, ignored
        raters.append(a)
    p = np.zeros(shape, np.float32)
    p.reshape(-1)[:9] = 1.0
    p.reshape(-1)[20:22] = 0.25  # 9 + 0.5 voxels
    return p, raters


def test_volume_crps_on_arrays_with_anisotropic_spacing():
    p, raters = hand_case()
    spacing = (2.5, 0.8, 0.7)  # 1.4 mm³ = 0.0014 ml per voxel
    ml = 0.0014
    assert voxel_volume_ml(spacing) == pytest.approx(ml)
    np.testing.assert_allclose(rater_volumes(raters, spacing=spacing, label=2), [10 * ml, 14 * ml, 6 * ml])
    assert predicted_volume(p, spacing=spacing) == pytest.approx(9.5 * ml)
    mu, sigma = 10 * ml, math.sqrt(32 / 3) * ml  # counts 10, 14, 6: mean 10, population variance 32/3
    got = volume_crps(p, raters, spacing=spacing, label=2)
    assert isinstance(got, Result) and got.reason is None
    assert got.value == pytest.approx(numerical_crps(9.5 * ml, mu, sigma), rel=1e-7)
    curvas = volume_crps(p, raters, spacing=spacing, label=2, mode="curvas")
    assert curvas.value == pytest.approx(official_curvas_crps(9.5 * ml, [10 * ml, 14 * ml, 6 * ml]), rel=1e-9)
    voxels = volume_crps(p, raters, spacing=spacing, label=2, mode=CRPSMode.CURVAS, unit=VolumeUnit.VOXELS)
    assert voxels.value == pytest.approx(official_curvas_crps(9.5, [10, 14, 6]), rel=1e-9)
    # quad stops on an absolute tolerance (1.5e-8), so the official numbers are not exactly unit-free
    assert curvas.value == pytest.approx(voxels.value * ml, rel=1e-6)
    vols = [Volume(a, spacing=spacing, kind="labels") for a in raters]
    assert volume_crps(Volume(p, spacing=spacing), vols, spacing=spacing, label=2).value == got.value


def test_volume_crps_roi_and_boolean_masks():
    p, raters = hand_case()
    roi = np.zeros(p.shape, bool)
    roi.reshape(-1)[:8] = True  # raters 8, 8, 6 voxels; prediction 8
    masks = [a == 2 for a in raters]
    got = volume_crps(p, masks, spacing=(1, 1, 1), roi=roi, unit="voxels")
    assert got.value == pytest.approx(numerical_crps(8.0, 22 / 3, np.std([8, 8, 6])), rel=1e-7)


def test_volume_crps_input_errors():
    p, raters = hand_case()
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        volume_crps(p * 3, raters, spacing=(1, 1, 1), label=2)
    bad = p.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        volume_crps(bad, raters, spacing=(1, 1, 1), label=2)
    with pytest.raises(GeometryMismatch, match="same image grid"):
        volume_crps(p[:, :, :5], raters, spacing=(1, 1, 1), label=2)
    with pytest.raises(InvalidInput, match="3 positive numbers"):
        volume_crps(p, raters, spacing=(1, 0, 1), label=2)
    with pytest.raises(InvalidInput, match="3 numbers"):
        volume_crps(p, raters, spacing=None, label=2)
    with pytest.raises(GeometryMismatch, match="spacing"):
        volume_crps(Volume(p, spacing=(2, 1, 1)), raters, spacing=(1, 1, 1), label=2)
    with pytest.raises(InvalidInput, match="No rater"):
        volume_crps(p, [], spacing=(1, 1, 1))
    with pytest.raises(InvalidInput, match="pooled votes"):
        volume_crps(p, rater_votes(raters), spacing=(1, 1, 1))
    with pytest.raises(InvalidInput, match="region of interest is empty"):
        volume_crps(p, raters, spacing=(1, 1, 1), roi=np.zeros(p.shape, bool))
    with pytest.raises(ValueError):
        volume_crps(p, raters, spacing=(1, 1, 1), mode="median")


def test_values_toy_case(values_toy):
    image = read_volume(values_toy / "imagesTr" / "0001.nii.gz")
    raters = [read_volume(values_toy / "labelsTr" / f"0001_0{k}.nii.gz") for k in range(3)]
    p = np.clip(image.data, 0, 1)  # the blurred sphere as a stand-in prediction
    spacing = image.spacing
    counts = [int((r.data == 1).sum()) for r in raters]
    assert counts == [1243, 6817, 12394]  # three raters: small, medium, large sphere
    ml = float(np.prod(spacing)) / 1000
    truth = np.array(counts) * ml
    v = float(p.sum()) * ml
    np.testing.assert_allclose(rater_volumes(raters, spacing=spacing), truth)
    assert predicted_volume(p, spacing=spacing) == pytest.approx(v, rel=1e-12)
    native = volume_crps(p, raters, spacing=spacing)
    curvas = volume_crps(p, raters, spacing=spacing, mode="curvas")
    assert native.value == pytest.approx(numerical_crps(v, truth.mean(), truth.std()), rel=1e-7)
    assert curvas.value == pytest.approx(official_curvas_crps(v, truth), rel=1e-9)
    # 7.55 ml predicted against raters 1.24 / 6.82 / 12.39 ml (σ = 4.55 ml): a good score, ~1.1 ml
    assert 1.0 < native.value < 1.2 and 1.0 < curvas.value < 1.2

"""Display window presets: fixed CT windows in HU, data percentiles for MR; the data never changes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segunc.display import WindowPreset, contrast_limits, default_preset
from napari_segunc.errors import InvalidInput
from napari_segunc.volume import Modality, Volume

CT_WINDOWS = {
    WindowPreset.ABDOMEN: (400, 40),
    WindowPreset.LIVER: (150, 30),
    WindowPreset.LUNG: (1500, -600),
    WindowPreset.BONE: (1800, 400),
    WindowPreset.BRAIN: (80, 40),
    WindowPreset.MEDIASTINUM: (350, 50),
}


@pytest.mark.parametrize(("preset", "wl"), CT_WINDOWS.items(), ids=lambda v: str(v))
def test_ct_presets_are_level_plus_minus_half_width(preset, wl):
    width, level = wl
    assert preset.window == (width, level)
    assert contrast_limits(preset) == (level - width / 2, level + width / 2)
    assert contrast_limits(preset.value) == contrast_limits(preset)  # names work too
    assert f"W{width}" in preset.label and f"L{level}" in preset.label


def test_known_windows():
    assert contrast_limits(WindowPreset.ABDOMEN) == (-160.0, 240.0)
    assert contrast_limits(WindowPreset.LUNG) == (-1350.0, 150.0)
    assert contrast_limits(WindowPreset.BONE) == (-500.0, 1300.0)


def test_percentile_ignores_nan_and_inf_and_leaves_data_unchanged():
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1000, size=(10, 20, 30)).astype(np.float32)
    data[0, 0, :5] = np.nan
    data[1, 0, 0] = np.inf
    before = data.copy()
    lo, hi = contrast_limits(WindowPreset.PERCENTILE, data)
    finite = data[np.isfinite(data)]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(finite, [0.5, 99.5])))
    assert 0 < lo < 10 and 990 < hi < 1000
    np.testing.assert_array_equal(data, before)  # NaN positions included
    assert data.dtype == np.float32


def test_percentile_of_integer_mr_data():
    data = np.arange(1000, dtype=np.uint16).reshape(10, 10, 10)
    lo, hi = contrast_limits("percentile", data)
    assert lo == pytest.approx(4.995) and hi == pytest.approx(994.005)


@pytest.mark.parametrize("value", [0.0, 7.0, -1000.0])
def test_percentile_of_constant_data_is_a_valid_range(value):
    lo, hi = contrast_limits(WindowPreset.PERCENTILE, np.full((3, 4, 5), value))
    assert lo < value < hi


def test_percentile_mostly_constant_data_still_spans_the_values():
    data = np.zeros((10, 10, 10))
    data[0, 0, 0] = 5.0
    lo, hi = contrast_limits(WindowPreset.PERCENTILE, data)
    assert (lo, hi) == (0.0, 5.0)


def test_percentile_all_nan_and_missing_data():
    assert contrast_limits(WindowPreset.PERCENTILE, np.full((2, 2, 2), np.nan)) == (0.0, 1.0)
    with pytest.raises(InvalidInput, match="needs the image data"):
        contrast_limits(WindowPreset.PERCENTILE)
    with pytest.raises(InvalidInput, match="Unknown display window 'soft'"):
        contrast_limits("soft")


def test_large_volume_is_sampled_but_close():
    rng = np.random.default_rng(1)
    data = rng.normal(100, 20, size=(40, 256, 512)).astype(np.float32)  # 5.2 M voxels
    lo, hi = contrast_limits(WindowPreset.PERCENTILE, data)
    exact = np.percentile(data, [0.5, 99.5])
    assert lo == pytest.approx(exact[0], abs=1.0) and hi == pytest.approx(exact[1], abs=1.0)


def test_default_preset_by_modality():
    data = np.zeros((2, 2, 2), np.int16)
    assert default_preset(Volume(data, modality=Modality.CT)) is WindowPreset.ABDOMEN
    assert default_preset(Volume(data, modality=Modality.MR)) is WindowPreset.PERCENTILE
    assert default_preset(Volume(data)) is WindowPreset.PERCENTILE

"""The input check against the models' training data: quiet on phantoms, warns on a real CT, an odd spacing, an image
not in Hounsfield units; its numbers are numpy's; ``segunc predict`` prints its warnings and writes ``qc.json``."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from napari_segunc.cli import main
from napari_segunc.inference.demo_models import DEMO_DIR, demo_ensemble_file
from napari_segunc.inference.input_qc import (
    FOREGROUND_HU,
    MAX_INTENSITY_SHIFT_HU,
    SYNTHETIC_PHANTOM,
    check_input,
    intensity_reference,
)
from napari_segunc.inference.nnunet import read_ensemble_file
from napari_segunc.io import read_volume
from napari_segunc.phantom import make_phantom

DEMO_MODELS = sorted(p for p in DEMO_DIR.glob("rater*") if p.is_dir())
TRAIN_SEEDS = range(1000, 1012)  # scripts/train_demo_ensemble.py


@pytest.fixture(scope="module")
def demo_dirs() -> list[str]:
    return [m.model_dir for m in read_ensemble_file(demo_ensemble_file())]


@pytest.fixture(scope="module")
def real_ct(totalseg):
    return read_volume(totalseg / "example_ct_sm.nii.gz")  # the 30-slice TotalSegmentator example


def test_demo_models_say_they_were_trained_on_the_phantom():
    assert len(DEMO_MODELS) == 6
    for d in DEMO_MODELS:
        spec = json.loads((d / "dataset.json").read_text())
        assert spec["segunc_training_data"] == SYNTHETIC_PHANTOM
        assert "synthetic phantom" in spec["description"] and "not meaningful" in spec["description"]


def test_the_stored_training_intensities_are_the_training_phantoms():
    """The demo models' reference is what `intensity_reference` computes from the phantoms they were trained on."""
    ref = intensity_reference(make_phantom(seed=s, n_raters=1).image for s in TRAIN_SEEDS)
    for d in DEMO_MODELS:
        stored = json.loads((d / "dataset.json").read_text())["segunc_training_intensities"]
        assert stored["percentiles"] == ref["percentiles"] and stored["voxels"] == ref["voxels"]
        np.testing.assert_allclose(stored["values"], ref["values"], atol=0.01)


@pytest.mark.parametrize("seed", [0, 3])
def test_a_phantom_passes_without_warning(demo_dirs, seed):
    qc = check_input(make_phantom(seed=seed, n_raters=1).image, demo_dirs)
    assert qc.ok and qc.warnings == [], qc.warnings
    assert len(qc.models) == 6
    for m in qc.models:  # every check was made, none was merely skipped
        assert m["intensity_range"]["checked"] and m["intensity_range"]["ok"]
        assert m["intensity_distribution"]["checked"] and m["intensity_distribution"]["ok"]
        assert m["intensity_distribution"]["mean_abs_difference_hu"] < MAX_INTENSITY_SHIFT_HU / 2
        assert m["spacing"]["checked"] and m["spacing"]["ok"] and m["spacing"]["basis"] == "plans.json median"


def test_the_real_ct_warns_about_intensity(real_ct, demo_dirs):
    qc = check_input(real_ct, demo_dirs)
    assert not qc.ok
    assert len(qc.warnings) == 2, qc.warnings  # one sentence each, not one per model
    assert "trained only on the napari-segunc synthetic phantom" in qc.warnings[0]
    assert "not meaningful" in qc.warnings[0]
    assert qc.warnings[1].startswith("The image's intensities differ from those of the training images")
    assert "median of 4 HU" in qc.warnings[1] and "-125 .. 134 HU in training" in qc.warnings[1]
    for m in qc.models:
        assert m["intensity_distribution"]["mean_abs_difference_hu"] > 1.5 * MAX_INTENSITY_SHIFT_HU  # 23.8 HU
        assert m["intensity_range"]["ok"]  # its organs' HU are those of the phantom's organs: the range passes
        assert m["spacing"]["ok"]  # 3 mm against the training median 3 × 2.5 × 2.5 mm


def test_a_spacing_four_times_the_median_warns(demo_dirs):
    image = make_phantom(seed=0, n_raters=1).image
    coarse = dataclasses.replace(image, spacing=(12.0, 2.5, 2.5))  # 4 × the training median along z
    qc = check_input(coarse, demo_dirs)
    assert qc.warnings == [
        "The image's voxel spacing (12 × 2.5 × 2.5 mm, in the model's axis order) is far from the training data's "
        "(training median 3 × 2.5 × 2.5 mm, half to twice that accepted); nnU-Net resamples the image to its "
        "training resolution, but its predictions on it may be unreliable."
    ]
    spacing = qc.models[0]["spacing"]
    assert spacing["image_spacing"] == [12.0, 2.5, 2.5] and spacing["accepted_max"] == [6.0, 5.0, 5.0]


def test_an_image_not_in_hounsfield_units_warns_about_the_range(demo_dirs):
    image = make_phantom(seed=0, n_raters=1).image
    shifted = image.with_data(image.data.astype(np.int32) + 2048)  # values that are not Hounsfield units
    qc = check_input(shifted, demo_dirs)
    assert "synthetic phantom" in qc.warnings[0]
    ranged = [w for w in qc.warnings if w.startswith("Only 0 % of the image's body voxels")]
    assert len(ranged) == 3, qc.warnings  # one per training range (the 3 raters' organs differ), models named
    assert "lie inside the intensity range of the training data (34 .. 183;" in ranged[0]
    assert ranged[0].endswith("on this image (models: rater1_seed112233, rater1_seed445566).")


def test_the_numbers_are_numpys(real_ct, demo_dirs, totalseg):
    import SimpleITK as sitk

    from napari_segunc.inference.nnunet import _source_array

    qc = check_input(real_ct, demo_dirs)
    record = json.loads(qc.to_json())
    assert record["ok"] is False and record["warnings"] == qc.warnings
    data = real_ct.data.astype(np.float64)
    body = data[data > FOREGROUND_HU]
    image = record["image"]
    assert image["sample_step"] == 1 and image["voxels_sampled"] == data.size
    assert image["body_voxels_sampled"] == body.size
    np.testing.assert_allclose(
        [image["body_p00_5"], image["body_median"], image["body_p99_5"]], np.percentile(body, [0.5, 50, 99.5])
    )
    np.testing.assert_allclose([image["p00_5"], image["p99_5"]], np.percentile(data, [0.5, 99.5]))
    # the spacing nnU-Net is given: SimpleITK's, reversed (the file's array order), as the predictor receives it
    spacing = list(sitk.ReadImage(str(totalseg / "example_ct_sm.nii.gz")).GetSpacing())[::-1]
    assert image["spacing_file_order"] == spacing == _source_array(real_ct)[1]["spacing"]
    for model, d in zip(record["models"], demo_dirs, strict=True):
        plans = json.loads((DEMO_DIR / d / "plans.json").read_text())
        props = plans["foreground_intensity_properties_per_channel"]["0"]
        lo, hi = props["percentile_00_5"], props["percentile_99_5"]
        rng = model["intensity_range"]
        assert rng["training_range"] == [lo, hi] and rng["source"] == "plans.json"
        assert rng["training_mean"] == props["mean"] and rng["training_std"] == props["std"]
        assert rng["fraction_in_range_body"] == pytest.approx(np.mean((body >= lo) & (body <= hi)), abs=1e-12)
        assert rng["fraction_in_range_all"] == pytest.approx(np.mean((data >= lo) & (data <= hi)), abs=1e-12)
        ref = json.loads((DEMO_DIR / d / "dataset.json").read_text())["segunc_training_intensities"]
        dist = model["intensity_distribution"]
        expected = np.percentile(body, ref["percentiles"])
        np.testing.assert_allclose(dist["image_values"], expected, rtol=0, atol=1e-9)
        assert dist["mean_abs_difference_hu"] == pytest.approx(np.mean(np.abs(expected - ref["values"])), abs=1e-9)
        assert model["spacing"]["training_median"] == plans["original_median_spacing_after_transp"]
        assert model["spacing"]["image_spacing"] == [spacing[i] for i in plans["transpose_forward"]]


def _model_copy(tmp_path, *, fingerprint=None, transpose=None, normalization=None):
    """A demo model's dataset.json and plans.json (no checkpoint: the check reads none), edited."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(DEMO_MODELS[0] / "dataset.json", folder / "dataset.json")
    plans = json.loads((DEMO_MODELS[0] / "plans.json").read_text())
    if transpose is not None:
        plans["transpose_forward"] = transpose
    if normalization is not None:
        plans["configurations"]["3d_fullres"]["normalization_schemes"] = [normalization]
    (folder / "plans.json").write_text(json.dumps(plans))
    if fingerprint is not None:
        (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    return folder


def test_the_fingerprints_spacings_in_the_models_axis_order(tmp_path):
    fingerprint = {
        "spacings": [[3.0, 2.5, 2.5], [8.0, 2.5, 2.5]],  # the training files' array order, before the transposition
        "foreground_intensity_properties_per_channel": {
            "0": {"percentile_00_5": -200.0, "percentile_99_5": 400.0, "mean": 60.0, "median": float("nan")}
        },
    }
    model = _model_copy(tmp_path, fingerprint=fingerprint, transpose=[2, 0, 1])
    image = dataclasses.replace(make_phantom(seed=0, n_raters=1).image, spacing=(7.0, 2.5, 2.5))
    qc = check_input(image, [model])
    spacing = qc.models[0]["spacing"]
    assert spacing["basis"] == "dataset_fingerprint.json" and spacing["ok"], qc.warnings
    assert spacing["image_spacing"] == [2.5, 7.0, 2.5]  # z moved to the middle, as nnU-Net transposes it
    assert spacing["training_min"] == [2.5, 3.0, 2.5] and spacing["training_max"] == [2.5, 8.0, 2.5]
    assert qc.models[0]["intensity_range"]["source"] == "dataset_fingerprint.json"
    assert qc.models[0]["intensity_range"]["training_range"] == [-200.0, 400.0]
    assert json.loads(qc.to_json())["models"][0]["intensity_range"]["training_median"] is None  # NaN: valid JSON
    assert qc.ok, qc.warnings

    coarser = dataclasses.replace(image, spacing=(10.5, 2.5, 2.5))  # beyond 8 mm × 1.25
    (warning,) = check_input(coarser, [model]).warnings
    assert "(2.5 × 10.5 × 2.5 mm, in the model's axis order)" in warning
    assert "training scans 2.5 × 3–8 × 2.5 mm, up to 25 % beyond that accepted" in warning

    (model / "dataset_fingerprint.json").unlink()  # the median alone: 7 mm is more than twice 3 mm
    (warning,) = check_input(image, [model]).warnings
    assert "(2.5 × 7 × 2.5 mm" in warning and "training median 3 × 2.5 × 2.5 mm" in warning


def test_a_z_score_model_does_not_compare_intensities(tmp_path, real_ct):
    model = _model_copy(tmp_path, normalization="ZScoreNormalization")
    spec = json.loads((model / "dataset.json").read_text())
    spec["channel_names"] = {"0": "T1"}
    for key in ("segunc_training_data", "segunc_training_intensities"):
        del spec[key]
    (model / "dataset.json").write_text(json.dumps(spec))
    qc = check_input(real_ct, [model])
    assert qc.ok and not qc.models[0]["intensity_range"]["checked"]
    assert "own mean and standard deviation" in qc.models[0]["intensity_range"]["reason"]


def test_predict_on_the_real_ct_warns_and_writes_qc_json(totalseg, tmp_path, capsys):
    import SimpleITK as sitk

    ct = tmp_path / "ct_crop.nii.gz"  # 80 × 80 × 30 voxels of the 30-slice CT: ~10 s for the 6 members here
    sitk.WriteImage(sitk.ReadImage(str(totalseg / "example_ct_sm.nii.gz"))[20:100, 10:90, :], str(ct))
    out = tmp_path / "maps"
    assert main(["predict", str(ct), "--out", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    said = [ln.removeprefix("segunc predict: warning: ") for ln in captured.err.splitlines() if "warning:" in ln]
    assert len(said) == 2 and "synthetic phantom" in said[0], captured.err
    assert said[1].startswith("The image's intensities differ from those of the training images")
    qc = json.loads((out / "qc.json").read_text())
    assert qc["ok"] is False and qc["warnings"] == said
    assert [m["model_dir"] for m in qc["models"]] == [str(DEMO_DIR / d.name) for d in DEMO_MODELS]
    assert all(m["training_data"] == SYNTHETIC_PHANTOM for m in qc["models"])
    assert qc["image"]["shape_zyx"] == [30, 80, 80]
    assert (out / "segmentation.nii.gz").is_file() and (out / "rater1" / "segmentation.nii.gz").is_file()
    assert "2 warning(s)" in captured.out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written left behind

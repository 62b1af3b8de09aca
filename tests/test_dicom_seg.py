"""DICOM SEG export (highdicom) on the shared 20-slice DICOM series and its labels: highdicom reads the file back,
its segments rebuilt on the source grid equal the labels voxel for voxel, every frame references its source slice,
segments carry SNOMED CT codes and the algorithm; FRACTIONAL SEG round trip within DICOM's 1/255 step; the source
files are never modified."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

hd = pytest.importorskip("highdicom")

from napari_segunc.cli import main  # noqa: E402
from napari_segunc.io import read_volume, write_probabilities  # noqa: E402
from napari_segunc.io.dicom_seg import read_dicom_seg_labels, source_datasets, write_dicom_seg  # noqa: E402

#: TotalSegmentator v2 values present in the shared segmentation
ORGANS = {"spleen": 1, "liver": 5, "stomach": 6, "pancreas": 7}


def _hashes(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def series(totalseg):
    image = read_volume(totalseg / "example_ct_dicom")
    labels = read_volume(totalseg / "example_seg_dicom.nii.gz", kind="labels")
    return image, labels


def test_binary_seg_round_trip_voxel_for_voxel(series, totalseg, tmp_path, capsys):
    image, labels = series
    before = _hashes(totalseg / "example_ct_dicom")
    out = tmp_path / "seg.dcm"
    args = ["export-dicom-seg", str(totalseg / "example_ct_dicom"), str(totalseg / "example_seg_dicom.nii.gz")]
    table = ",".join(f"{k}={v}" for k, v in ORGANS.items())
    assert main([*args, "--labels", table, "--model", "demo ensemble", "--out", str(out)]) == 0
    assert "DICOM SEG (binary, 4 organ(s)" in capsys.readouterr().out
    assert _hashes(totalseg / "example_ct_dicom") == before  # the source series is untouched

    seg = hd.seg.segread(str(out))
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    sources = source_datasets(image)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    referenced = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced <= {ds.SOPInstanceUID for ds in sources}
    descriptions = {d.SegmentLabel: d for d in seg.SegmentSequence}
    assert list(descriptions) == ["spleen", "liver", "stomach", "pancreas"]  # numbered by label value
    codes = {n: d.SegmentedPropertyTypeCodeSequence[0].CodeValue for n, d in descriptions.items()}
    assert codes == {"spleen": "78961009", "liver": "10200004", "stomach": "69695003", "pancreas": "15776009"}
    liver = descriptions["liver"]
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # Anatomical Structure
    assert liver.SegmentAlgorithmType == "SEMIAUTOMATIC" and liver.SegmentAlgorithmName == "napari-segunc"

    back, organs = read_dicom_seg_labels(out, image)
    expected = np.zeros(labels.shape, np.uint16)
    for number, value in enumerate(ORGANS.values(), start=1):
        expected[labels.data == value] = number
    assert organs == {"spleen": 1, "liver": 2, "stomach": 3, "pancreas": 4}
    assert np.array_equal(back, expected)
    assert int((back > 0).sum()) == int(np.isin(labels.data, list(ORGANS.values())).sum()) > 1000

    # never over an existing file without --overwrite, and only for DICOM images
    assert main([*args, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    nifti = [
        str(totalseg / "example_ct_sm.nii.gz"),
        str(totalseg / "example_seg.nii.gz"),
        "--out",
        str(tmp_path / "x.dcm"),
    ]
    assert main(["export-dicom-seg", *nifti]) == 2
    assert "is not a DICOM series" in capsys.readouterr().err


def test_fractional_seg_keeps_probabilities_to_dicoms_step(series, tmp_path):
    image, labels = series
    rng = np.random.default_rng(0)
    organ = np.stack([labels.data == v for v in ORGANS.values()]).astype(np.float32)
    soft = np.clip(organ * rng.uniform(0.5, 1.0, organ.shape).astype(np.float32), 0, 1)
    probs = np.concatenate([np.clip(1 - soft.sum(axis=0, keepdims=True), 0, 1), soft])
    out = write_dicom_seg(image, tmp_path / "frac.dcm", organs=ORGANS, probabilities=probs, automatic=True)
    seg = hd.seg.segread(str(out))
    assert seg.SegmentationType == "FRACTIONAL" and seg.MaximumFractionalValue == 255
    uids = [ds.SOPInstanceUID for ds in source_datasets(image)]
    got = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)  # (slices, rows, cols, 4)
    import SimpleITK as sitk

    for c in range(4):
        src = sitk.GetArrayFromImage(image.with_data(soft[c], kind="float_map").to_source_sitk())
        assert np.abs(got[..., c] - src).max() <= 1 / 255 / 2 + 1e-6
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"

    # the CLI writes the same from a probability file
    path = write_probabilities(probs, image, tmp_path / "probs.nii.gz")
    table = json.dumps(ORGANS)
    (tmp_path / "organs.json").write_text(table)
    dicom = str(image.source.path)
    assert (
        main(
            [
                "export-dicom-seg",
                dicom,
                "--probabilities",
                str(path),
                "--labels",
                str(tmp_path / "organs.json"),
                "--out",
                str(tmp_path / "frac_cli.dcm"),
            ]
        )
        == 0
    )
    again = hd.seg.segread(str(tmp_path / "frac_cli.dcm")).get_pixels_by_source_instance(
        uids, assert_missing_frames_are_empty=True
    )
    assert np.abs(again - got).max() <= 1 / 255 + 1e-6

"""Reading the real shared data: TotalSegmentator CTs and labels, a DICOM series, the VALUES toy volumes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.io import read_volume, write_volume
from napari_segunc.volume import FileFormat, Modality, VolumeKind, check_same_grid

# TotalSegmentator v2 class ids used below
SPLEEN, KIDNEY_R, KIDNEY_L, LIVER = 1, 2, 3, 5
LUNG_LOBES = (10, 11, 12, 13, 14)


def _nibabel_lps_zyx(path):
    """Independent reference: nibabel's closest-canonical RAS array turned into LPS (z, y, x)."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    ras = np.asarray(img.dataobj)
    return ras[::-1, ::-1, :].transpose(2, 1, 0), img.header.get_zooms()


def _centroid(mask):
    return np.array(np.nonzero(mask)).mean(axis=1)  # (z, y, x)


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "example_ct.nii.gz", "example_seg.nii.gz"])
def test_nifti_matches_nibabel_reference(totalseg, name):
    vol = read_volume(totalseg / name)
    ref, zooms = _nibabel_lps_zyx(totalseg / name)
    assert vol.source.orientation == "RAS"
    assert vol.orientation == "LPS"
    np.testing.assert_array_equal(vol.data, ref)
    assert vol.spacing == tuple(float(z) for z in zooms[::-1])
    assert vol.data.dtype == ref.dtype


def test_ct_shapes_kinds_and_modality(totalseg):
    small = read_volume(totalseg / "example_ct_sm.nii.gz")
    big = read_volume(totalseg / "example_ct.nii.gz")
    assert small.shape == (30, 101, 122) and big.shape == (112, 101, 122)
    for vol in (small, big):
        assert vol.kind is VolumeKind.INTENSITY and vol.modality is Modality.CT
        assert vol.data.min() < -1000 and vol.data.max() > 1000  # HU untouched
    assert small.data.dtype == np.int16 and big.data.dtype == np.int32


def test_label_maps_keep_integer_dtype_and_anatomy_is_lps(totalseg):
    ct = read_volume(totalseg / "example_ct_sm.nii.gz")
    seg = read_volume(totalseg / "example_seg.nii.gz")
    check_same_grid(ct, seg)
    assert seg.kind is VolumeKind.LABELS and seg.data.dtype == np.uint8
    labels = set(np.unique(seg.data).tolist())
    assert {SPLEEN, KIDNEY_R, KIDNEY_L, LIVER} <= labels
    # Radiological convention in the canonical grid: patient's right (liver, right kidney) at low x,
    # lungs superior (high z) to the liver, HU inside the liver soft tissue, inside lungs air-like.
    liver, spleen = _centroid(seg.data == LIVER), _centroid(seg.data == SPLEEN)
    assert liver[2] < spleen[2]
    assert _centroid(seg.data == KIDNEY_R)[2] < _centroid(seg.data == KIDNEY_L)[2]
    assert _centroid(np.isin(seg.data, LUNG_LOBES))[0] > liver[0]
    assert 0 < ct.data[seg.data == LIVER].mean() < 150
    assert ct.data[np.isin(seg.data, LUNG_LOBES)].mean() < -600


def test_two_totalseg_segmentations_are_two_raters_on_one_grid(totalseg):
    a = read_volume(totalseg / "example_seg.nii.gz")
    b = read_volume(totalseg / "example_seg_fast.nii.gz")
    check_same_grid(a, b)
    liver_a, liver_b = a.data == LIVER, b.data == LIVER
    dice = 2 * (liver_a & liver_b).sum() / (liver_a.sum() + liver_b.sum())
    assert 0.8 < dice < 1.0  # two different models: similar, not identical


def test_dicom_series_matches_simpleitk_and_its_label_map(totalseg):
    folder = totalseg / "example_ct_dicom"
    vol = read_volume(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    direct = reader.Execute()
    assert vol.source.format is FileFormat.DICOM and vol.modality is Modality.CT
    assert vol.source.size == direct.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(vol.source.spacing, direct.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(vol.source.origin, direct.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(vol.source.direction, direct.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(vol.data, sitk.GetArrayFromImage(direct))  # already LPS

    seg = read_volume(totalseg / "example_seg_dicom.nii.gz")
    assert seg.source.orientation == "LAS"  # stored flipped in y relative to the series
    check_same_grid(vol, seg, origin_tol_mm=1e-3, spacing_tol=1e-6)
    np.testing.assert_allclose(seg.origin, vol.origin, atol=1e-3)
    # After reorientation the labels sit on the right anatomy of the DICOM CT.
    liver = seg.data == LIVER
    assert liver.sum() > 1000
    assert 0 < vol.data[liver].mean() < 150
    flipped = seg.data[:, ::-1, :] == LIVER  # what a reader that ignored the direction would give
    assert vol.data[flipped].mean() < vol.data[liver].mean() - 50


def test_dicom_converts_to_nifti_with_the_series_geometry(totalseg, tmp_path):
    vol = read_volume(totalseg / "example_ct_dicom")
    out = write_volume(vol, tmp_path / "ct.nii.gz")
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == vol.source.size
    np.testing.assert_allclose(back.GetOrigin(), vol.source.origin, atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), vol.source.spacing, atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), vol.source.direction, atol=1e-6)
    np.testing.assert_array_equal(read_volume(out).data, vol.data)


def test_values_toy_volumes_are_lps_and_labels_are_integers(values_toy):
    image = read_volume(values_toy / "imagesTr" / "0000.nii.gz")
    assert image.source.orientation == "LPS" and image.shape == (64, 64, 64)
    raw = np.asarray(nib.load(str(values_toy / "imagesTr" / "0000.nii.gz")).dataobj)  # stored (x, y, z)
    np.testing.assert_array_equal(image.data, raw.transpose(2, 1, 0))  # LPS-stored: no flip needed
    raters = [read_volume(values_toy / "labelsTr" / f"0000_0{k}.nii.gz") for k in range(3)]
    for r in raters:
        check_same_grid(image, r)
        assert r.kind is VolumeKind.LABELS and r.data.dtype.kind == "i"
        assert set(np.unique(r.data).tolist()) == {0, 1}
        # the object the raters drew is the bright one in the image
        assert image.data[r.data == 1].mean() > image.data[r.data == 0].mean() + 0.2
    assert not np.array_equal(raters[0].data, raters[1].data)

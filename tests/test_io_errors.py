"""Bad input gets one clear sentence naming the file; nothing the user gave is modified."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.io import list_dicom_series, read_volume, versioned_path, write_volume
from napari_segunc.volume import Volume, VolumeKind, check_same_grid


def write_dicom_series(folder, series_uid, *, n=3, description="", value=0):
    """A tiny synthetic CT series written with SimpleITK (GDCM), for folder-handling tests."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        sl = sitk.GetImageFromArray(np.full((1, 8, 8), value + k, dtype=np.int16))
        sl.SetSpacing((0.8, 0.8, 2.0))
        tags = {
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{2.0 * k}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for key, val in tags.items():
            sl.SetMetaData(key, val)
        writer.SetFileName(str(folder / f"{series_uid[-4:]}_{k:03d}.dcm"))
        writer.Execute(sl)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match=r"missing\.nii\.gz does not exist"):
        read_volume(tmp_path / "missing.nii.gz")


def test_unsupported_extension(tmp_path):
    p = tmp_path / "photo.png"
    p.write_bytes(b"\x89PNG")
    with pytest.raises(InvalidInput, match=r"photo\.png has an unsupported extension '\.png'"):
        read_volume(p)


def test_truncated_gzip_names_file_and_fix(totalseg, tmp_path):
    data = (totalseg / "example_seg.nii.gz").read_bytes()
    p = tmp_path / "cut.nii.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput, match=r"cut\.nii\.gz is a truncated or corrupt gzip file; copy it again"):
        read_volume(p)
    assert p.read_bytes() == data[: len(data) // 2]  # untouched
    raw = gzip.decompress(data)
    q = tmp_path / "cut.nii"
    q.write_bytes(raw[: len(raw) - 1000])  # ITK alone would read this silently, padding with garbage
    with pytest.raises(InvalidInput, match=r"cut\.nii is truncated: it holds 381828 bytes .* announces 382828"):
        read_volume(q)


def test_empty_and_not_an_image(tmp_path):
    empty = tmp_path / "empty.nii"
    empty.touch()
    with pytest.raises(InvalidInput, match=r"empty\.nii is empty \(0 bytes\)"):
        read_volume(empty)
    text = tmp_path / "notes.nii.gz"
    text.write_text("this is a radiology report, not an image")
    with pytest.raises(InvalidInput, match=r"notes\.nii\.gz is named \.nii\.gz but is not gzip-compressed"):
        read_volume(text)
    gz = tmp_path / "report.nii.gz"
    gz.write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(InvalidInput, match=r"report\.nii\.gz decompresses but is not a readable NIfTI image"):
        read_volume(gz)
    mha = tmp_path / "bad.mha"
    mha.write_text("garbage")
    with pytest.raises(InvalidInput, match=r"bad\.mha is not a readable MetaImage image"):
        read_volume(mha)


def test_2d_and_4d_images_are_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(tmp_path / "slice.nii.gz"))
    with pytest.raises(InvalidInput, match=r"slice\.nii\.gz is a 2D image \(6, 5\); a 3D volume is needed"):
        read_volume(tmp_path / "slice.nii.gz")
    vols = [sitk.GetImageFromArray(np.full((3, 5, 6), c, np.float32)) for c in range(4)]
    sitk.WriteImage(sitk.JoinSeries(vols), str(tmp_path / "probs.nii.gz"))  # x, y, z, channel
    with pytest.raises(InvalidInput, match=r"probs\.nii\.gz is a 4D image \(4 volumes of \(6, 5, 3\)\)"):
        read_volume(tmp_path / "probs.nii.gz")


def test_dicom_folder_with_two_series_lists_them(tmp_path):
    folder = tmp_path / "study"
    write_dicom_series(folder, "1.2.826.0.1.3680043.2.1125.1001", description="arterial", n=3)
    write_dicom_series(folder, "1.2.826.0.1.3680043.2.1125.2002", description="venous", n=4, value=100)
    series = list_dicom_series(folder)
    assert sorted((s.description, s.n_files) for s in series) == [("arterial", 3), ("venous", 4)]
    with pytest.raises(InvalidInput, match=r"holds 2 DICOM series; choose one with its series id") as err:
        read_volume(folder)
    assert "arterial" in str(err.value) and "venous" in str(err.value) and "1125.2002" in str(err.value)
    venous = read_volume(folder, series_id="1.2.826.0.1.3680043.2.1125.2002")
    assert venous.shape == (4, 8, 8) and venous.source.series_id.endswith("2002")
    np.testing.assert_array_equal(venous.data[:, 0, 0], [100, 101, 102, 103])
    with pytest.raises(InvalidInput, match=r"has no DICOM series '9\.9'"):
        read_volume(folder, series_id="9.9")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InvalidInput, match="contains no DICOM series"):
        read_volume(tmp_path)


def test_writer_never_overwrites_without_flag_and_never_the_source(totalseg, tmp_path):
    src = tmp_path / "seg.nii.gz"
    shutil.copy(totalseg / "example_seg.nii.gz", src)
    original = src.read_bytes()
    vol = read_volume(src)
    with pytest.raises(InvalidInput, match="Refusing to write over the source image"):
        write_volume(vol, src, overwrite=True)
    out = write_volume(vol, tmp_path / "out.nii.gz")
    first = out.read_bytes()
    with pytest.raises(InvalidInput, match=r"out\.nii\.gz already exists; choose another name"):
        write_volume(vol.with_data(np.zeros_like(vol.data)), out)
    assert out.read_bytes() == first and src.read_bytes() == original
    write_volume(vol.with_data(np.zeros_like(vol.data)), out, overwrite=True)
    assert read_volume(out).data.max() == 0
    assert versioned_path(out).name == "out_v2.nii.gz"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_geometry_mismatch_message_names_both_files(totalseg):
    ct = read_volume(totalseg / "example_ct_sm.nii.gz")
    dicom_seg = read_volume(totalseg / "example_seg_dicom.nii.gz")
    with pytest.raises(
        GeometryMismatch, match=r"example_seg_dicom\.nii\.gz does not match the grid of .*example_ct_sm"
    ):
        check_same_grid(ct, dicom_seg)


def test_volume_validation():
    with pytest.raises(InvalidInput, match="a 3D volume is needed"):
        Volume(np.zeros((3, 3)))
    with pytest.raises(InvalidInput, match="spacing must be positive"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    labels = Volume(np.array([[[0.5]]]), kind=VolumeKind.LABELS, name="soft")
    with pytest.raises(InvalidInput, match="holds non-integer values"):
        write_volume(labels, "/tmp/never-written.nii.gz")

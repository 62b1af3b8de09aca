"""Probability maps on disk (nnU-Net .npz + .pkl, 4D NIfTI) land on the canonical grid of their image."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.io import read_probabilities, read_volume, write_probabilities
from napari_segunc.volume import array_to_canonical, check_same_grid

LIVER = 5


def one_hot_from_nibabel(path, labels=(0, LIVER, 2)):
    """Independent construction with nibabel: a 4D (x, y, z, C) one-hot map in the file's own voxel order."""
    img = nib.load(str(path))
    seg = np.asarray(img.dataobj)
    other = ~np.isin(seg, labels[1:])
    channels = [other if lab == 0 else seg == lab for lab in labels]
    return np.stack(channels, axis=-1).astype(np.float32), img.affine


def test_4d_nifti_built_with_nibabel_reads_onto_the_label_grid(totalseg, tmp_path):
    probs, affine = one_hot_from_nibabel(totalseg / "example_seg.nii.gz")
    nib.save(nib.Nifti1Image(probs, affine), str(tmp_path / "probs.nii.gz"))
    seg = read_volume(totalseg / "example_seg.nii.gz")
    pm = read_probabilities(tmp_path / "probs.nii.gz")
    check_same_grid(seg, pm.grid)
    assert pm.data.shape == (3, *seg.shape)
    np.testing.assert_array_equal(pm.data[1] == 1, seg.data == LIVER)
    np.testing.assert_array_equal(pm.data[2] == 1, seg.data == 2)
    np.testing.assert_allclose(pm.data.sum(axis=0), 1.0)


def test_write_then_read_restores_source_geometry(totalseg, tmp_path):
    ref = read_volume(totalseg / "example_seg_dicom.nii.gz")  # LAS-stored: not the canonical order
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=ref.data.size).T.reshape(3, *ref.shape).astype(np.float32)
    out = write_probabilities(probs, ref, tmp_path / "mean_probabilities.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (*ref.source.size, 3) and nib.aff2axcodes(img.affine) == ("L", "A", "S")
    back = read_probabilities(out, reference=ref)
    np.testing.assert_array_equal(back.data, probs)
    with pytest.raises(InvalidInput, match="already exists"):
        write_probabilities(probs, ref, out)
    # the first channel in the file's own order, as SimpleITK reads the reference
    src_channel0 = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg / "example_seg_dicom.nii.gz")))
    assert np.asarray(img.dataobj)[..., 0].transpose(2, 1, 0).shape == src_channel0.shape


def _nnunet_like_output(tmp_path, *, direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)):
    """Write what nnU-Net writes: the image, probabilities in its SimpleITK array order, and the .pkl."""
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, (6, 7, 8)).astype(np.int16))
    image.SetDirection(direction)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((100.0, -20.0, 35.0))
    sitk.WriteImage(image, str(tmp_path / "case.nii.gz"))
    probs = rng.dirichlet([1, 1, 1, 1], size=6 * 7 * 8).T.reshape(4, 6, 7, 8).astype(np.float16)
    np.savez_compressed(tmp_path / "case.npz", probabilities=probs)
    props = {"sitk_stuff": {"spacing": image.GetSpacing(), "origin": image.GetOrigin(), "direction": direction}}
    with open(tmp_path / "case.pkl", "wb") as fh:
        pickle.dump(props, fh)
    return probs


def test_nnunet_npz_with_reference_or_trusted_pickle(tmp_path):
    probs = _nnunet_like_output(tmp_path, direction=(0, 0, 1, -1, 0, 0, 0, -1, 0))
    ref = read_volume(tmp_path / "case.nii.gz")
    with_ref = read_probabilities(tmp_path / "case.npz", reference=ref)
    with_pkl = read_probabilities(tmp_path / "case.npz", trust_pickle=True)
    assert with_ref.data.dtype == np.float16 and with_ref.data.shape == (4, *ref.shape)
    np.testing.assert_array_equal(with_ref.data, with_pkl.data)
    check_same_grid(ref, with_pkl.grid)
    # channel 0 reoriented exactly as SimpleITK reorients an image with this geometry
    ch0 = sitk.GetImageFromArray(probs[0].astype(np.float32))
    ch0.SetDirection((0, 0, 1, -1, 0, 0, 0, -1, 0))
    np.testing.assert_array_equal(
        with_ref.data[0].astype(np.float32), sitk.GetArrayFromImage(sitk.DICOMOrient(ch0, "LPS"))
    )
    np.testing.assert_array_equal(with_ref.data, array_to_canonical(probs, (0, 0, 1, -1, 0, 0, 0, -1, 0)))


def test_npz_without_geometry_source_is_refused_without_unpickling(tmp_path, monkeypatch):
    _nnunet_like_output(tmp_path)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled without consent"))
    with pytest.raises(InvalidInput, match=r"carries no geometry.*--reference IMAGE.*--trust-pickle"):
        read_probabilities(tmp_path / "case.npz")


def test_bad_probability_files(tmp_path, totalseg):
    _nnunet_like_output(tmp_path)
    other = read_volume(totalseg / "example_seg.nii.gz")
    with pytest.raises(GeometryMismatch, match=r"case\.npz has probabilities on a \(8, 7, 6\) grid"):
        read_probabilities(tmp_path / "case.npz", reference=other)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InvalidInput, match=r"broken\.npz is not a readable \.npz file"):
        read_probabilities(tmp_path / "broken.npz", reference=other)
    np.savez(tmp_path / "wrongkey.npz", softmax=np.zeros((2, 2, 2, 2)))
    with pytest.raises(InvalidInput, match="has no 'probabilities' array"):
        read_probabilities(tmp_path / "wrongkey.npz", reference=other)
    with pytest.raises(InvalidInput, match="4D probability map"):
        read_probabilities(totalseg / "example_seg.nii.gz")

"""Resampling onto an image's grid (`io.resample`, `segunc resample`) against brute-force twins in numpy/scipy:
nearest neighbour for labels, linear for maps, linear + renormalised for class probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from napari_segunc.cli import main
from napari_segunc.io import read_probabilities, read_volume, write_probabilities, write_volume
from napari_segunc.io.resample import resample_like, resample_probabilities_like
from napari_segunc.phantom import make_phantom
from napari_segunc.volume import Volume, VolumeKind


@pytest.fixture(scope="module")
def grids():
    study = make_phantom(seed=3, n_raters=1)
    moving = study.truth
    # a finer grid, shifted by fractions of a voxel that never land on a half (no nearest-neighbour ties), poking
    # out of the moving volume at the top (z) and on the right (x)
    shape = (30, 70, 90)
    spacing = (2.3, 1.9, 1.7)
    origin = tuple(o + d for o, d in zip(moving.origin, (100.31, 7.31, -20.31), strict=True))
    reference = Volume(np.zeros(shape, np.int16), spacing, origin, moving.direction, name="reference")
    return study, moving, reference


def _continuous_index(moving: Volume, reference: Volume) -> np.ndarray:
    """Each reference voxel centre as a (fractional) index of the moving grid; both grids are LPS-aligned."""
    idx = np.indices(reference.shape).reshape(3, -1).T.astype(np.float64)
    mm = np.asarray(reference.origin) + idx * np.asarray(reference.spacing)
    return ((mm - np.asarray(moving.origin)) / np.asarray(moving.spacing)).T


def test_labels_are_resampled_by_nearest_neighbour(grids):
    _, moving, reference = grids
    assert np.allclose(np.asarray(moving.direction).reshape(3, 3), np.eye(3))
    got = resample_like(moving, reference)
    cont = _continuous_index(moving, reference)
    nearest = np.floor(cont + 0.5).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.asarray(moving.shape)[:, None]), axis=0)
    brute = np.zeros(cont.shape[1], moving.data.dtype)
    brute[inside] = moving.data[tuple(nearest[:, inside])]
    assert np.array_equal(got.data.ravel(), brute)
    assert got.data.dtype == moving.data.dtype and set(np.unique(got.data)) <= set(np.unique(moving.data))
    assert got.outside == pytest.approx(1 - inside.mean(), abs=2e-3) and 0.1 < got.outside < 0.9


def test_maps_are_resampled_linearly(grids):
    study, _, reference = grids
    image = study.image
    got = resample_like(image, reference)
    cont = _continuous_index(image, reference)
    inner = np.all((cont >= 0) & (cont <= np.asarray(image.shape)[:, None] - 1), axis=0)
    brute = ndimage.map_coordinates(image.data.astype(np.float64), cont[:, inner], order=1)
    np.testing.assert_allclose(got.data.ravel()[inner], brute, atol=1e-3)
    assert inner.mean() > 0.5


def test_probabilities_are_resampled_linearly_and_renormalised(grids):
    study, _, reference = grids
    rng = np.random.default_rng(1)
    p = rng.random((3, *study.image.shape))
    p /= p.sum(axis=0)
    got = resample_probabilities_like(p.astype(np.float32), study.image, reference)
    np.testing.assert_allclose(got.data.sum(axis=0), 1.0, atol=1e-5)
    cont = _continuous_index(study.image, reference)
    inner = np.all((cont >= 0) & (cont <= np.asarray(study.image.shape)[:, None] - 1), axis=0)
    lin = np.stack([ndimage.map_coordinates(c, cont[:, inner], order=1) for c in p])
    np.testing.assert_allclose(got.data.reshape(3, -1)[:, inner], lin / lin.sum(axis=0), atol=1e-4)
    outside = ~np.all((cont >= -0.5) & (cont < np.asarray(study.image.shape)[:, None] - 0.5), axis=0)
    assert np.all(got.data.reshape(3, -1)[0, outside] == 1.0)  # outside the map: background


def test_cli_resamples_labels_and_probability_maps_onto_an_image(grids, tmp_path, capsys):
    study, moving, reference = grids
    ref_path = write_volume(reference.with_data(np.zeros(reference.shape, np.int16)), tmp_path / "ref.nii.gz")
    labels_path = write_volume(moving, tmp_path / "labels.nii.gz")
    out = tmp_path / "labels_on_ref.nii.gz"
    assert main(["resample", str(labels_path), "--like", str(ref_path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "labels (nearest neighbour)" in captured.out and "lie outside" in captured.err
    back, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(ref_path))
    assert back.GetSize() == ref.GetSize() and np.allclose(back.GetSpacing(), ref.GetSpacing())
    assert np.allclose(back.GetOrigin(), ref.GetOrigin())
    got = read_volume(out, kind="labels").data
    assert np.array_equal(got, resample_like(read_volume(labels_path, kind="labels"), read_volume(ref_path)).data)

    p = np.stack([(moving.data == v) for v in range(6)]).astype(np.float32)
    probs_path = write_probabilities(p, study.image, tmp_path / "probs.nii.gz")
    out_p = tmp_path / "probs_on_ref.nii.gz"
    assert main(["resample", str(probs_path), "--like", str(ref_path), "--out", str(out_p)]) == 0
    assert "6 class probabilities" in capsys.readouterr().out
    moved = read_probabilities(out_p, reference=read_volume(ref_path))
    np.testing.assert_allclose(moved.data.sum(axis=0), 1.0, atol=1e-5)
    # never over an input, nor over an existing output without --overwrite
    assert main(["resample", str(labels_path), "--like", str(ref_path), "--out", str(labels_path)]) == 2
    assert main(["resample", str(labels_path), "--like", str(ref_path), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert VolumeKind(read_volume(out, kind="labels").kind) is VolumeKind.LABELS

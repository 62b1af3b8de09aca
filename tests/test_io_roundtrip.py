"""Property test: any geometry survives read → write → read exactly (the geometry rule of ARCHITECTURE.md)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_segunc.io import read_volume, write_volume
from napari_segunc.volume import Volume, VolumeKind

PERMS = list(itertools.permutations(range(3)))
SUFFIXES = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]
DTYPES = [np.uint8, np.int16, np.int32, np.float32, np.float64]


def _rotation(angles):
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@st.composite
def geometries(draw):
    perm = draw(st.sampled_from(PERMS))
    flips = draw(st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3))
    direction = np.zeros((3, 3))
    for col, (row, sign) in enumerate(zip(perm, flips, strict=True)):
        direction[row, col] = sign
    oblique = draw(st.booleans())
    if oblique:  # oblique acquisition: a small rotation on top of the permutation
        angle = st.floats(-0.35, 0.35, allow_nan=False)
        direction = _rotation((draw(angle), draw(angle), draw(angle))) @ direction
    spacing = draw(st.tuples(*[st.floats(0.3, 6.0, allow_nan=False)] * 3))
    origin = draw(st.tuples(*[st.floats(-500.0, 500.0, allow_nan=False)] * 3))
    size = draw(st.tuples(*[st.integers(2, 7)] * 3))
    return direction, spacing, origin, size, oblique


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    geom=geometries(),
    suffix=st.sampled_from(SUFFIXES),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_read_write_read_is_exact(tmp_path_factory, geom, suffix, dtype, seed):
    """Same format in and out: geometry within 1e-6 (mm, cosines), voxels identical."""
    _round_trip(tmp_path_factory, geom, suffix, suffix, dtype, seed, tol=lambda v: 1e-6)


@settings(max_examples=30, deadline=None)
@given(
    geom=geometries(),
    suffix=st.sampled_from(SUFFIXES),
    out_suffix=st.sampled_from(SUFFIXES),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_convert_between_formats(tmp_path_factory, geom, suffix, out_suffix, dtype, seed):
    """Across formats NIfTI stores geometry in float32, so allow 1e-6 relative to the value's magnitude."""
    _round_trip(tmp_path_factory, geom, suffix, out_suffix, dtype, seed, tol=lambda v: 1e-6 * max(1.0, abs(v)))


def _round_trip(tmp_path_factory, geom, suffix, out_suffix, dtype, seed, tol):
    direction, spacing, origin, size, oblique = geom
    tmp = tmp_path_factory.mktemp("rt")
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 6, size[::-1]) if np.dtype(dtype).kind in "iu" else rng.normal(size=size[::-1])
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetDirection(tuple(direction.ravel()))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    src = tmp / f"src{suffix}"
    sitk.WriteImage(img, str(src))
    on_disk = sitk.ReadImage(str(src))  # what the file really holds (NIfTI stores float32 geometry)

    first = read_volume(src)
    if not oblique:
        assert first.orientation == "LPS" and np.allclose(first.direction, np.eye(3).ravel())
    out = write_volume(first, tmp / f"out{out_suffix}")
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == on_disk.GetSize()
    for got, want in [
        (back.GetSpacing(), on_disk.GetSpacing()),
        (back.GetOrigin(), on_disk.GetOrigin()),
        (back.GetDirection(), on_disk.GetDirection()),
    ]:
        for g, w in zip(got, want, strict=True):
            assert abs(g - w) <= tol(w), (got, want)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(on_disk))

    second = read_volume(out)
    np.testing.assert_array_equal(second.data, first.data)
    assert second.data.dtype == first.data.dtype
    for got, want in [
        (second.spacing, first.spacing),
        (second.origin, first.origin),
        (second.direction, first.direction),
    ]:
        for g, w in zip(got, want, strict=True):
            assert abs(g - w) <= tol(w), (got, want)


def test_axis_aligned_nifti_round_trip_is_bit_exact(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = sitk.GetImageFromArray(arr)
    img.SetDirection((-1, 0, 0, 0, 0, 1, 0, -1, 0))  # a sagittal-ish permuted, flipped grid
    img.SetSpacing((0.7, 1.1, 2.5))
    img.SetOrigin((12.5, -40.25, 100.0))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    vol = read_volume(tmp_path / "a.nii.gz")
    assert vol.orientation == "LPS" and vol.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    out = sitk.ReadImage(str(write_volume(vol, tmp_path / "b.nii.gz")))
    src = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    assert out.GetOrigin() == src.GetOrigin() and out.GetDirection() == src.GetDirection()
    assert out.GetSpacing() == src.GetSpacing()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), arr)


def test_canonical_grid_places_voxels_at_the_same_physical_points(tmp_path):
    """Voxel (z, y, x) of the canonical array sits where SimpleITK puts the matching source voxel."""
    arr = np.random.default_rng(3).integers(0, 1000, (5, 6, 7)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    img.SetSpacing((1.5, 2.0, 3.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / "p.mha"))
    vol = read_volume(tmp_path / "p.mha")
    for idx in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        point = img.TransformIndexToPhysicalPoint(tuple(int(i) for i in idx[::-1]))
        value = arr[idx]
        # the canonical grid is axis-aligned LPS here: physical point = origin + index * spacing
        k = np.round((np.array(point)[::-1] - np.array(vol.origin)) / np.array(vol.spacing)).astype(int)
        assert vol.data[tuple(k)] == value


@pytest.mark.parametrize("kind", [VolumeKind.LABELS, VolumeKind.FLOAT_MAP])
def test_written_dtypes(tmp_path, kind):
    data = np.zeros((3, 4, 5), dtype=np.int64 if kind is VolumeKind.LABELS else np.float16)
    data[1, 2, 3] = 7
    vol = Volume(data, kind=kind, name="m")
    out = write_volume(vol, tmp_path / "m.nrrd")
    back = read_volume(out, kind=kind)
    assert back.data.dtype == (np.uint8 if kind is VolumeKind.LABELS else np.float32)
    assert back.data[1, 2, 3] == 7

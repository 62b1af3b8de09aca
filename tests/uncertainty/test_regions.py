"""Review regions and scores against hand-computed values, slow per-region numpy loops and scipy on its own."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
from scipy import ndimage

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.uncertainty import (
    REGION_COLUMNS,
    Connectivity,
    case_scores,
    find_regions,
    quantile_threshold,
    regions_to_rows,
    slice_scores,
    structure_scores,
    window_mean,
    write_regions_csv,
)

SPACING = (2.5, 0.8, 0.8)
ORIGIN = (10.0, -5.0, 100.0)


def three_blobs():
    """Blob A inside label 2 (two slices, the upper one hotter), B in background touching label 3, C isolated."""
    u = np.zeros((10, 20, 20), np.float32)
    seg = np.zeros(u.shape, np.uint8)
    u[2, 2:5, 2:6] = 1.0  # A: 2 × 3 × 4 = 24 voxels, total 12·1 + 12·2 = 36
    u[3, 2:5, 2:6] = 2.0
    seg[1:5, 1:7, 1:8] = 2
    u[6:8, 10:13, 10:12] = 0.5  # B: 2 × 3 × 2 = 12 voxels, total 6
    seg[6:8, 10:13, 12:15] = 3  # face-adjacent to B along x
    u[5, 15:19, 2:4] = 3.0  # C: 1 × 4 × 2 = 8 voxels, total 24
    return u, seg


def test_three_blobs_closed_form():
    u, seg = three_blobs()
    regions = find_regions(
        u, spacing=SPACING, threshold=0.1, segmentation=seg, labels={"liver": 2, "kidney": 3}, origin=ORIGIN
    )
    a, c, b = regions
    assert [r.rank for r in regions] == [1, 2, 3]
    assert (a.n_voxels, c.n_voxels, b.n_voxels) == (24, 8, 12)
    assert (a.total, c.total, b.total) == (36.0, 24.0, 6.0)
    assert (a.mean, a.max, c.mean, b.max) == (1.5, 2.0, 3.0, 0.5)
    voxel_ml = 2.5 * 0.8 * 0.8 / 1000
    assert a.volume_ml == pytest.approx(24 * voxel_ml) and b.volume_ml == pytest.approx(12 * voxel_ml)
    assert a.centroid_voxel == pytest.approx((2.5, 3.0, 3.5))
    assert a.centroid_mm == pytest.approx((10 + 2.5 * 2.5, -5 + 3 * 0.8, 100 + 3.5 * 0.8))
    assert b.centroid_voxel == pytest.approx((6.5, 11.0, 10.5))
    assert (a.bbox, b.bbox, c.bbox) == ((2, 2, 2, 3, 4, 5), (6, 10, 10, 7, 12, 11), (5, 15, 2, 5, 18, 3))
    assert (a.peak_slice, b.peak_slice, c.peak_slice) == (3, 6, 5)  # B: equal slices → lower z
    assert a.peak_voxel == (3, 2, 2)
    assert (a.label, a.structure) == (2, "liver")
    assert (b.label, b.structure) == (3, "kidney")  # found in the one-voxel dilation
    assert (c.label, c.structure) == (0, "background")
    no_seg = find_regions(u, spacing=SPACING, threshold=0.1)
    assert [(r.label, r.structure) for r in no_seg] == [(0, None)] * 3
    assert [r.bbox for r in no_seg] == [r.bbox for r in regions]


def test_min_voxels_max_regions_and_mask():
    u, _ = three_blobs()
    assert [r.n_voxels for r in find_regions(u, spacing=SPACING, threshold=0.1, min_voxels=10)] == [24, 12]
    top = find_regions(u, spacing=SPACING, threshold=0.1, max_regions=2)
    assert [(r.rank, r.total) for r in top] == [(1, 36.0), (2, 24.0)]
    mask = np.zeros(u.shape, bool)
    mask[:, 10:, :] = True  # B and C only
    assert [r.total for r in find_regions(u, spacing=SPACING, threshold=0.1, mask=mask)] == [24.0, 6.0]


def test_ties_larger_region_then_first_voxel():
    u = np.zeros((3, 10, 10))
    u[1, 0, 0:2] = 2.0  # Q: 2 voxels, total 4, first in raster order
    u[1, 5, 0:4] = 1.0  # P: 4 voxels, total 4 → ranked before Q
    u[1, 8, 0:2] = 2.0  # R: same total and size as Q, later → after Q
    regions = find_regions(u, spacing=(1, 1, 1), threshold=0.5)
    assert [r.bbox[1] for r in regions] == [5, 0, 8]


@pytest.mark.parametrize(("conn", "expected"), [(6, 3), (Connectivity.EDGES, 2), (26, 1), (Connectivity.FACES, 3)])
def test_connectivity(conn, expected):
    u = np.zeros((3, 3, 3), np.float32)
    u[0, 0, 0] = u[1, 1, 1] = u[1, 2, 2] = 1  # the first two share a corner, the last two an edge
    assert len(find_regions(u, spacing=(1, 1, 1), threshold=0.5, connectivity=conn)) == expected


def smooth_map(shape=(24, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32)


def blocky_labels(shape, seed=1):
    rng = np.random.default_rng(seed)
    small = rng.integers(1, 4, size=tuple(-(-n // 6) for n in shape))
    small[rng.random(small.shape) < 0.4] = 0
    return np.kron(small, np.ones((6, 6, 6), np.uint8))[tuple(slice(n) for n in shape)].astype(np.uint8)


def brute_region(u, seg, lab, i, structure):
    """Slow reference for one region: a full-volume mask and plain numpy."""
    mask = lab == i
    z, y, x = np.nonzero(mask)
    vals = u[mask].astype(np.float64)
    per_slice = np.array([u[k][mask[k]].astype(np.float64).sum() for k in range(u.shape[0])])
    per_slice[~mask.any(axis=(1, 2))] = -np.inf
    flat = np.where(mask, u, -np.inf).ravel()
    inside = seg[mask][seg[mask] != 0]
    if inside.size == 0:
        ring = ndimage.binary_dilation(mask, structure=structure) & ~mask
        inside = seg[ring][seg[ring] != 0]
    return {
        "n_voxels": int(mask.sum()),
        "total": vals.sum(),
        "mean": vals.mean(),
        "max": vals.max(),
        "centroid_voxel": (z.mean(), y.mean(), x.mean()),
        "bbox": (z.min(), y.min(), x.min(), z.max(), y.max(), x.max()),
        "peak_slice": int(np.argmax(per_slice)),
        "peak_voxel": tuple(int(v) for v in np.unravel_index(np.argmax(flat), u.shape)),
        "label": int(np.argmax(np.bincount(inside))) if inside.size else 0,
        "first": int(np.flatnonzero(mask)[0]),
    }


@pytest.mark.parametrize("conn", [1, 2, 3])
def test_matches_brute_force_per_region_loop(conn):
    u = smooth_map(seed=conn)
    seg = blocky_labels(u.shape, seed=conn)
    t = float(np.quantile(u, 0.85))
    structure = ndimage.generate_binary_structure(3, conn)
    lab, n = ndimage.label(u > t, structure=structure)
    assert n > 10
    ref = [brute_region(u, seg, lab, i, structure) for i in range(1, n + 1)]
    ref.sort(key=lambda r: (-r["total"], -r["n_voxels"], r["first"]))
    got = find_regions(u, spacing=(2.0, 1.0, 0.5), threshold=t, segmentation=seg, connectivity=conn)
    assert len(got) == n
    for rank, (g, r) in enumerate(zip(got, ref, strict=True), start=1):
        assert g.rank == rank
        assert g.n_voxels == r["n_voxels"] and g.bbox == r["bbox"] and g.peak_voxel == r["peak_voxel"]
        assert g.peak_slice == r["peak_slice"] and g.label == r["label"]
        assert g.structure == ("background" if r["label"] == 0 else f"label {r['label']}")
        np.testing.assert_allclose([g.total, g.mean, g.max], [r["total"], r["mean"], r["max"]], rtol=1e-12)
        np.testing.assert_allclose(g.centroid_voxel, r["centroid_voxel"], rtol=1e-12)
        np.testing.assert_allclose(g.centroid_mm, np.multiply(r["centroid_voxel"], (2.0, 1.0, 0.5)), rtol=1e-12)
        assert g.volume_ml == pytest.approx(r["n_voxels"] * 1e-3)
    labels_seen = {g.label for g in got}
    assert len(labels_seen) > 1  # the reference exercised inside, dilation and background cases


def test_quantile_equals_numpy_and_ignores_nan(caplog):
    u = smooth_map(seed=4)
    u[3:6, 10:20, 10:20] = np.nan
    mask = np.zeros(u.shape, bool)
    mask[:, :25, :] = True
    want = float(np.quantile(u[~np.isnan(u)], 0.95))
    assert quantile_threshold(u, 0.95) == want
    assert quantile_threshold(u, 0.9, mask=mask) == float(np.quantile(u[mask & ~np.isnan(u)], 0.9))
    regions = find_regions(u, spacing=(1, 1, 1), quantile=0.95)
    assert sum(r.n_voxels for r in regions) == int((u > want).sum())
    same = find_regions(u, spacing=(1, 1, 1), threshold=want)
    assert [(r.n_voxels, r.total) for r in same] == [(r.n_voxels, r.total) for r in regions]
    inside = find_regions(u, spacing=(1, 1, 1), quantile=0.9, mask=mask)
    assert all(r.bbox[4] < 25 for r in inside)
    assert all(not math.isnan(r.total) for r in regions)
    zeros = np.zeros((4, 5, 6), np.float32)
    zeros[0, 0, 0] = np.nan
    with caplog.at_level(logging.INFO, logger="napari_segunc.uncertainty.regions"):
        assert find_regions(zeros, spacing=(1, 1, 1), quantile=0.5) == []  # value > quantile, never ≥
        assert find_regions(np.full((2, 2, 2), np.nan), spacing=(1, 1, 1), quantile=0.5) == []
    assert "no review region" in caplog.text


def brute_window_mean(u, size):
    out = np.empty(u.shape)
    for i in np.ndindex(u.shape):
        box = tuple(slice(max(c - k // 2, 0), c + (k - 1) // 2 + 1) for c, k in zip(i, size, strict=True))
        vals = u[box][~np.isnan(u[box])]
        out[i] = vals.mean() if vals.size else np.nan
    return out


@pytest.mark.parametrize("size", [(3, 3, 3), (4, 4, 4), (2, 3, 5), (10, 10, 10)])
def test_window_mean_and_patch_max_brute_force(size):
    rng = np.random.default_rng(7)
    u = rng.random((6, 7, 8))
    u[0, :3, :3] = np.nan
    u[5, 5:, 6:] = np.nan
    ref = brute_window_mean(u, size)
    np.testing.assert_allclose(window_mean(u, patch_size=size), ref, atol=1e-12)
    np.testing.assert_allclose(
        window_mean(np.nan_to_num(u), patch_size=size), brute_window_mean(np.nan_to_num(u), size)
    )
    seg = np.zeros(u.shape, np.int16)
    seg[1:4, 1:4, 1:4] = 1
    seg[4:, 3:, 2:] = 5
    rows = structure_scores(u, seg, threshold=0.7, labels={"a": 1, "b": 5, "absent": 9}, patch_size=size)
    assert [(r["label"], r["structure"]) for r in rows] == [(1, "a"), (5, "b"), (9, "absent")]
    for row in rows[:2]:
        m = seg == row["label"]
        vals = u[m][~np.isnan(u[m])]
        assert row["n_voxels"] == vals.size and row["sum"] == pytest.approx(vals.sum(), rel=1e-12)
        assert row["mean"] == pytest.approx(vals.mean(), rel=1e-12)
        assert row["patch_max"] == pytest.approx(np.nanmax(ref[m]), rel=1e-12)
        assert row["n_above_threshold"] == (vals > 0.7).sum()
        assert row["mean_above_threshold"] == pytest.approx(vals[vals > 0.7].mean(), rel=1e-12)
    absent = rows[2]
    assert absent["n_voxels"] == 0 and math.isnan(absent["mean"]) and math.isnan(absent["patch_max"])


def test_scores_mean_above_threshold_nan_when_empty_and_case_slice():
    u = smooth_map(shape=(8, 12, 14), seed=9).astype(np.float64)
    u[2, 3:5, 4:9] = np.nan
    seg = blocky_labels(u.shape, seed=3)
    rows = structure_scores(u, seg, threshold=10.0)
    assert [r["label"] for r in rows] == sorted(set(np.unique(seg)) - {0})
    assert all(r["n_above_threshold"] == 0 and math.isnan(r["mean_above_threshold"]) for r in rows)
    whole = case_scores(u, threshold=0.0, patch_size=3)
    finite = u[~np.isnan(u)]
    assert whole["n_voxels"] == finite.size and whole["sum"] == pytest.approx(finite.sum(), rel=1e-12)
    assert whole["mean_above_threshold"] == pytest.approx(finite[finite > 0].mean(), rel=1e-12)
    assert whole["patch_max"] == pytest.approx(np.nanmax(brute_window_mean(u, (3, 3, 3))), rel=1e-12)
    mask = seg == rows[0]["label"]
    masked = case_scores(u, threshold=0.0, mask=mask.astype(np.uint8), patch_size=3)
    per_structure = structure_scores(u, seg, threshold=0.0, patch_size=3)[0]
    assert masked == {k: v for k, v in per_structure.items() if k not in ("label", "structure")}
    s = slice_scores(u)
    np.testing.assert_allclose(s["sum"], np.nansum(u, axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(s["mean"], np.nanmean(u, axis=(1, 2)), rtol=1e-12)
    sm = slice_scores(u, mask=mask)
    assert np.array_equal(sm["z"], np.arange(8))
    for z in range(u.shape[0]):
        vals = u[z][mask[z] & ~np.isnan(u[z])]
        assert sm["n_voxels"][z] == vals.size
        assert sm["sum"][z] == pytest.approx(vals.sum(), rel=1e-12)
        assert (math.isnan(sm["mean"][z]) and vals.size == 0) or sm["mean"][z] == pytest.approx(vals.mean())


def test_csv_round_trip_and_refusal(tmp_path):
    u, seg = three_blobs()
    regions = find_regions(u, spacing=SPACING, threshold=0.1, segmentation=seg, labels={"liver": 2}, origin=ORIGIN)
    path = write_regions_csv(regions, tmp_path / "queue.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(REGION_COLUMNS)
    want = regions_to_rows(regions)
    assert [r["structure"] for r in rows] == ["liver", "background", "label 3"]
    for got, exp in zip(rows, want, strict=True):
        for key in REGION_COLUMNS:
            if isinstance(exp[key], float):
                assert float(got[key]) == exp[key], key
            else:
                assert got[key] == str(exp[key]), key
    assert (rows[0]["bbox_z0"], rows[0]["bbox_x1"], rows[0]["centroid_x_mm"]) == ("2", "5", str(100 + 3.5 * 0.8))
    before = path.read_bytes()
    with pytest.raises(InvalidInput, match="already exists"):
        write_regions_csv(regions[:1], path)
    assert path.read_bytes() == before
    write_regions_csv([], path, overwrite=True)
    assert path.read_text(encoding="utf-8").strip() == ",".join(REGION_COLUMNS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.csv"]  # no temporary files left behind


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"uncertainty": np.zeros((4, 4))}, InvalidInput, "3D"),
        ({"uncertainty": np.zeros((2, 2, 2), int)}, InvalidInput, "floating-point"),
        ({"uncertainty": np.full((2, 2, 2), np.inf)}, InvalidInput, "infinite"),
        ({"spacing": (1, 0, 1)}, InvalidInput, "positive mm"),
        ({"spacing": (1, 1)}, InvalidInput, "3 positive"),
        ({"mask": np.ones((2, 2, 3), bool)}, GeometryMismatch, "same image grid"),
        ({"segmentation": np.ones((3, 2, 2), np.uint8)}, GeometryMismatch, "segmentation has shape"),
        ({"segmentation": np.ones((2, 2, 2))}, InvalidInput, "integer label map"),
        ({"segmentation": -np.ones((2, 2, 2), int)}, InvalidInput, "negative"),
        ({"labels": {"a": 1, "b": 1}}, InvalidInput, "share the value 1"),
        ({"quantile": 0.5}, InvalidInput, "exactly one"),
        ({"threshold": None}, InvalidInput, "exactly one"),
        ({"threshold": None, "quantile": 1.0}, InvalidInput, "strictly between 0 and 1"),
        ({"threshold": math.nan}, InvalidInput, "finite number"),
        ({"connectivity": 7}, InvalidInput, "6, 18, 26"),
    ],
)
def test_refuses_bad_input(kwargs, error, message):
    args = {"uncertainty": np.zeros((2, 2, 2), np.float32), "spacing": (1, 1, 1), "threshold": 0.5, **kwargs}
    with pytest.raises(error, match=message):
        find_regions(args.pop("uncertainty"), **args)


def test_scores_refuse_bad_input():
    u = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(GeometryMismatch):
        structure_scores(u, np.zeros((2, 3, 3), np.uint8), threshold=0.1)
    with pytest.raises(InvalidInput, match="at least 1 voxel"):
        case_scores(u, threshold=0.1, patch_size=0)
    with pytest.raises(GeometryMismatch):
        slice_scores(u, mask=np.ones((2, 3), bool))
    assert structure_scores(u, np.zeros(u.shape, np.uint8), threshold=0.1) == []


def test_views_float16_and_integer_masks_give_the_same_answers():
    u = smooth_map(shape=(16, 12, 10), seed=11)
    seg = blocky_labels(u.shape, seed=5)
    view, seg_view = np.asfortranarray(u)[:, ::-1][:, ::-1], np.asfortranarray(seg)  # non-C-contiguous
    t = float(np.quantile(u, 0.8))
    want = find_regions(u, spacing=(1, 1, 1), threshold=t, segmentation=seg)
    assert find_regions(view, spacing=(1, 1, 1), threshold=t, segmentation=seg_view) == want
    half = find_regions(u.astype(np.float16), spacing=(1, 1, 1), threshold=t, segmentation=seg)
    assert max(r.max for r in half) == float(np.float16(u.max()))
    assert structure_scores(view, seg_view, threshold=t) == structure_scores(u, seg, threshold=t)
    assert case_scores(u, threshold=t, mask=seg * 7) == case_scores(u, threshold=t, mask=seg > 0)
    assert window_mean(u.astype(np.float16), patch_size=3).dtype == np.float32

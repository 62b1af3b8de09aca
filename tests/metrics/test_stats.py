"""Organ statistics: volumes and RECIST diameters against closed forms on synthetic ellipsoids (within a voxel),
and against numpy on the phantom (HU mean/std, soft volume, members' and raters' volumes); `segunc stats`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_segunc.cli import main
from napari_segunc.errors import InvalidInput
from napari_segunc.io import write_probabilities, write_volume
from napari_segunc.metrics.stats import organ_statistics, recist_diameters
from napari_segunc.phantom import LABELS, make_phantom
from napari_segunc.uncertainty import EnsembleAccumulator

SPACING = (2.0, 0.8, 0.7)


def _ellipsoid(shape, centre_mm, semi_mm, angle=0.0):
    """Voxels whose centre lies inside an ellipsoid (z, and an in-plane ellipse rotated by `angle`)."""
    zz, yy, xx = np.indices(shape).astype(np.float64)
    z, y, x = (zz * SPACING[0] - centre_mm[0], yy * SPACING[1] - centre_mm[1], xx * SPACING[2] - centre_mm[2])
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    return (z / semi_mm[0]) ** 2 + (u / semi_mm[2]) ** 2 + (v / semi_mm[1]) ** 2 <= 1


@pytest.mark.parametrize("angle", [0.0, math.pi / 4, 0.3])
def test_ellipsoid_volume_and_diameters_match_the_closed_form(angle):
    semi = (14.0, 9.0, 22.0)  # z, short in-plane, long in-plane (mm)
    mask = _ellipsoid((24, 90, 110), (23.0, 36.0, 38.0), semi, angle)
    (d,) = recist_diameters(mask, SPACING)
    voxel = math.hypot(SPACING[1], SPACING[2])  # one in-plane voxel (its diagonal)
    assert abs(d.long_mm - 2 * semi[2]) <= voxel and abs(d.short_mm - 2 * semi[1]) <= voxel
    assert abs(d.z * SPACING[0] - 23.0) <= SPACING[0]  # the widest slice is the middle one
    (stats,) = organ_statistics(mask.astype(np.uint8), SPACING, {"lesion": 1})
    exact = 4 / 3 * math.pi * np.prod(semi) / 1000
    assert stats.volume_ml == pytest.approx(mask.sum() * np.prod(SPACING) / 1000)
    assert abs(stats.volume_ml - exact) / exact < 0.02


def test_components_are_measured_separately_largest_first():
    mask = _ellipsoid((20, 80, 80), (19, 30, 18), (10, 8, 8)) | _ellipsoid((20, 80, 80), (19, 30, 45), (6, 4, 4))
    comps = recist_diameters(mask, SPACING)
    assert len(comps) == 2 and comps[0].voxels > comps[1].voxels
    assert abs(comps[0].long_mm - 16) <= 1.1 and abs(comps[1].long_mm - 8) <= 1.1
    assert recist_diameters(np.zeros((3, 3, 3), bool), SPACING) == []
    single = np.zeros((3, 3, 3), bool)
    single[1, 1, 1] = True
    assert recist_diameters(single, SPACING)[0].long_mm == 0.0  # between voxel centres


def test_statistics_equal_numpy_on_the_phantom():
    study = make_phantom(seed=4, n_raters=3)
    truth, image = study.truth.data, study.image.data
    spacing = study.image.spacing
    voxel_ml = float(np.prod(spacing)) / 1000
    rng = np.random.default_rng(0)
    onehot = np.stack([truth == v for v in range(6)]).astype(np.float32)
    members = []
    for _ in range(3):
        p = onehot + rng.random(onehot.shape).astype(np.float32) * 0.9
        members.append(p / p.sum(axis=0))
    mean = np.mean(members, axis=0)
    raters = [r.data for r in study.raters]
    stats = organ_statistics(truth, spacing, LABELS, image=image, probabilities=mean, members=members, raters=raters)
    assert [s.organ for s in stats] == list(LABELS)
    for s in stats:
        v = LABELS[s.organ]
        inside = image[truth == v].astype(np.float64)
        assert s.mean == pytest.approx(inside.mean()) and s.std == pytest.approx(inside.std())
        assert s.soft_volume_ml == pytest.approx(float(mean[v].astype(np.float64).sum()) * voxel_ml, rel=1e-6)
        brute = [float((np.argmax(m, axis=0) == v).sum()) * voxel_ml for m in members]
        assert s.member_volumes_ml == pytest.approx(brute)
        assert s.rater_volumes_ml == pytest.approx([float((r == v).sum()) * voxel_ml for r in raters])
        row = s.row()
        assert row["member_volume_std_ml"] == pytest.approx(float(np.std(brute, ddof=1)))
        assert row["rater_volume_max_ml"] == pytest.approx(max(s.rater_volumes_ml))
    acc = EnsembleAccumulator()  # what an ensemble run keeps of its members: their label maps counted per class
    for i, m in enumerate(members):
        acc.add(m, name=f"m{i}")
    counted = organ_statistics(truth, spacing, LABELS, member_voxels=list(acc.result().member_voxels.values()))
    assert [s.member_volumes_ml for s in counted] == [s.member_volumes_ml for s in stats]
    with pytest.raises(InvalidInput, match="3 classes"):
        organ_statistics(truth, spacing, LABELS, member_voxels=[[1, 2, 3]])


def test_cli_writes_the_statistics(tmp_path, capsys):
    study = make_phantom(seed=4, n_raters=2)
    image = write_volume(study.image, tmp_path / "ct.nii.gz")
    labels = write_volume(study.truth, tmp_path / "labels.nii.gz")
    r1 = write_volume(study.raters[0], tmp_path / "r1.nii.gz")
    onehot = np.stack([study.truth.data == v for v in range(6)]).astype(np.float32)
    probs = write_probabilities(onehot, study.image, tmp_path / "p.nii.gz")
    out = tmp_path / "stats.json"
    args = ["stats", str(image), str(labels), "--labels", str(tmp_path / "none.json")]
    assert main(args + ["--out", str(out)]) == 2  # a missing labels file: one sentence
    capsys.readouterr()
    table = ",".join(f"{k}={v}" for k, v in LABELS.items())
    args = ["stats", str(image), str(labels), "--labels", table, "--probabilities", str(probs), "--rater", str(r1)]
    assert main([*args, "--member", str(probs), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["organ"] for r in rows] == list(LABELS) and rows[0]["raters"] == 1 and rows[0]["members"] == 1
    liver = next(s for s in organ_statistics(study.truth.data, study.image.spacing, LABELS) if s.organ == "liver")
    assert rows[0]["volume_ml"] == pytest.approx(liver.volume_ml) and rows[0]["soft_volume_ml"] == pytest.approx(
        liver.volume_ml
    )
    assert rows[0]["long_axis_mm"] == pytest.approx(liver.components[0].long_mm)
    assert "liver" in capsys.readouterr().out

"""The one-page PNG case report (`napari_segunc.report`): table values against brute force, key slices, the page's
pixels, and the never-overwrite rule. No GUI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.phantom import make_phantom
from napari_segunc.report import (
    PAGE_PIXELS,
    case_table,
    key_slices,
    label_colors,
    organ_volumes,
    write_case_report,
)


@pytest.fixture(scope="module")
def study():
    return make_phantom(seed=0, n_raters=1)


def test_organ_volumes_are_voxel_counts_times_the_voxel_volume():
    rng = np.random.default_rng(4)
    labels = rng.choice([0, 1, 2, 7], size=(6, 9, 11), p=[0.55, 0.2, 0.2, 0.05]).astype(np.uint8)
    spacing = (3.0, 0.8, 0.7)
    names = {"liver": 1, "spleen": 2, "pancreas": 5}  # pancreas absent; 7 present but unnamed
    rows = organ_volumes(labels, spacing, names)
    voxel_ml = 3.0 * 0.8 * 0.7 / 1000.0
    expected = {}
    for v in (1, 2, 5, 7):
        count = sum(1 for z in range(6) for y in range(9) for x in range(11) if labels[z, y, x] == v)
        expected[v] = count
    assert [r["label"] for r in rows] == [1, 2, 5, 7]
    assert [r["organ"] for r in rows] == ["liver", "spleen", "pancreas", "label_7"]
    for r in rows:
        assert r["voxels"] == expected[r["label"]]
        assert r["volume_ml"] == pytest.approx(expected[r["label"]] * voxel_ml, rel=1e-12)
    assert rows[2]["voxels"] == 0 and rows[2]["volume_ml"] == 0.0


def test_organ_volumes_refuse_bad_input():
    with pytest.raises(InvalidInput, match="integer labels"):
        organ_volumes(np.zeros((2, 2, 2), np.float32), (1, 1, 1))
    with pytest.raises(InvalidInput, match="spacing"):
        organ_volumes(np.zeros((2, 2, 2), np.uint8), (1, 0, 1))


def test_case_table_takes_the_mean_over_raters_then_the_consensus():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[0, 0, 0] = 2
    rows = [
        dict(organ="liver", metric="dice", rater="rater_1", value=0.5),
        dict(organ="liver", metric="dice", rater="mean", value=0.8),
        dict(organ="liver", metric="hd95", rater="mean", value=2.5),
        dict(organ="spleen", metric="dice", rater="consensus", value=0.6),
        dict(organ="spleen", metric="hd95", rater="rater_1", value=1.0),
        dict(organ="spleen", metric="hd95", rater="rater_2", value=3.0),  # two raters, no aggregate: n/a
    ]
    table = case_table(labels, (1, 1, 1), {"liver": 1, "spleen": 2}, rows)
    assert (table[0]["dice"], table[0]["hd95"]) == (0.8, 2.5)
    assert table[1]["dice"] == 0.6 and math.isnan(table[1]["hd95"])
    assert "dice" not in case_table(labels, (1, 1, 1), {"liver": 1})[0]
    # each organ's RECIST axes: the liver's 2×2 square slice: a diagonal of √2 voxels, and the other across it
    assert table[0]["long_mm"] == pytest.approx(math.sqrt(2)) and table[0]["short_mm"] == pytest.approx(math.sqrt(2))
    assert table[1]["long_mm"] == 0.0  # one voxel
    ct = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    with_hu = case_table(labels, (1, 1, 1), {"liver": 1, "spleen": 2}, image=ct)
    assert with_hu[0]["hu_mean"] == pytest.approx(float(ct[labels == 1].mean()))
    assert with_hu[0]["hu_std"] == pytest.approx(float(ct[labels == 1].std())) and with_hu[1]["hu_mean"] == 0.0
    # the Statistics' volume spread, matched by organ name: the members' and raters' lowest–highest volumes
    from napari_segunc.metrics.stats import organ_statistics
    from napari_segunc.report.table import table_text

    rater = labels.copy()
    rater[3, 3, 3] = 1
    counts = [[61, 2, 1], [60, 3, 1]]  # two members' own label maps counted per class
    stats = organ_statistics(labels, (1, 1, 1), {"liver": 1, "spleen": 2}, member_voxels=counts, raters=[rater])
    spread = case_table(labels, (1, 1, 1), {"liver": 1, "spleen": 2}, statistics=[s.row() for s in stats])
    assert (spread[0]["members"], spread[0]["member_volume_min_ml"], spread[0]["member_volume_max_ml"]) == (
        2,
        0.002,
        0.003,
    )
    assert spread[0]["rater_volume_max_ml"] == pytest.approx(0.009) and spread[1]["raters"] == 1
    columns, cells = table_text(spread, with_metrics=False)
    assert columns[4:6] == ["members (ml)", "raters (ml)"] and cells[0][4:6] == ["0–0", "0–0"]
    assert "members (ml)" not in table_text(with_hu, with_metrics=False)[0]


def test_key_slices_show_every_organ_near_its_largest_section(study):
    truth = study.truth.data
    for n in (3, 4):
        slices = key_slices(truth, n=n)
        assert len(slices) == n and slices == sorted(slices, reverse=True)  # superior first
        for value in study.labels.values():
            area = (truth == value).sum(axis=(1, 2))
            assert max(area[z] for z in slices) >= 0.5 * area.max()
    assert key_slices(np.zeros((10, 4, 4), np.uint8), n=3) == [7, 4, 2]


DICE_HD95 = (("dice", 0.9), ("hd95", 2.0))


def _near(rgb: np.ndarray, color, tol: float = 30.0) -> np.ndarray:
    return np.linalg.norm(rgb.astype(float) - 255 * np.asarray(color), axis=-1) < tol


def test_report_of_the_phantom_truth(study, tmp_path):
    truth = study.truth.data
    path = write_case_report(
        tmp_path / "case_report.png", study.image, truth, label_names=study.labels, title="phantom truth"
    )
    assert path == tmp_path / "case_report.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == PAGE_PIXELS
        rgb = np.asarray(img.convert("RGB"))
    height = rgb.shape[0]
    panels = rgb[int(0.1 * height) : int(0.45 * height)]  # the slice panels (legend and table below)
    colors = label_colors(study.labels.values())
    for name, value in study.labels.items():
        assert _near(panels, colors[value]).sum() > 20, f"no {name} colour in the slice panels"
    assert not _near(panels, label_colors([9])[9]).any()  # no colour of a label that is not there
    ct = panels[(panels[..., 0] == panels[..., 1]) & (panels[..., 1] == panels[..., 2])]
    assert (ct < 20).any() and (ct > 235).any()  # CT in a window: air black, bone white


def test_report_with_an_uncertainty_panel_and_metrics(study, tmp_path):
    truth = study.truth.data
    uncertainty = np.zeros(truth.shape, np.float32)
    z = truth.shape[0] // 2
    uncertainty[z, 30:60, 30:60] = 1.0  # a square, hottest slice z
    rows = [dict(organ=o, metric=m, rater="mean", value=v) for o in study.labels for m, v in DICE_HD95]
    path = write_case_report(
        tmp_path / "r.png",
        study.image,
        truth,
        uncertainty=uncertainty,
        label_names=study.labels,
        table_rows=rows,
        uncertainty_label="entropy (nats)",
    )
    with Image.open(path) as img:
        assert img.size == PAGE_PIXELS
        rgb = np.asarray(img.convert("RGB")).astype(int)
    h, w = rgb.shape[:2]
    last_panel = rgb[int(0.1 * h) : int(0.45 * h), int(0.76 * w) :]
    r, g, b = last_panel[..., 0], last_panel[..., 1], last_panel[..., 2]
    assert ((r > 220) & (g > 220) & (b > 120) & (b < 200)).sum() > 200  # inferno's pale yellow over the CT


def test_report_never_overwrites(study, tmp_path):
    path = write_case_report(tmp_path / "r.png", study.image, study.truth.data, label_names=study.labels)
    before = path.read_bytes()
    with pytest.raises(InvalidInput, match="already exists"):
        write_case_report(path, study.image, study.truth.data)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]  # no temporary file left
    write_case_report(path, study.image, study.truth.data, overwrite=True)


def test_report_refuses_maps_of_another_grid(study, tmp_path):
    with pytest.raises(GeometryMismatch, match="label map"):
        write_case_report(tmp_path / "r.png", study.image, study.truth.data[:-1])
    with pytest.raises(GeometryMismatch, match="uncertainty"):
        write_case_report(tmp_path / "r.png", study.image, study.truth.data, uncertainty=np.zeros((2, 2, 2)))
    assert not (tmp_path / "r.png").exists()


def test_an_export_set_shares_one_version_and_is_written_whole_or_not_at_all(study, tmp_path, monkeypatch):
    from napari_segunc.progress import run_job
    from napari_segunc.prompts import prompts_from_mask
    from napari_segunc.report import case

    export = case.CaseExport(
        image=study.image,
        case="pt 1",
        labels=study.truth.data,
        write_report=False,
        prompts=prompts_from_mask(study.truth.data, study.labels),
    )
    planned = case.plan_case_files(export, tmp_path)
    assert {k: p.name for k, p in planned.items()} == {"labels": "pt_1_labels.nii.gz", "prompts": "pt_1_boxes.json"}
    (tmp_path / "pt_1_boxes.json").write_text("someone else's file")
    again = case.plan_case_files(export, tmp_path)  # one name taken: the whole set moves to _v2
    assert {k: p.name for k, p in again.items()} == {"labels": "pt_1_labels_v2.nii.gz", "prompts": "pt_1_boxes_v2.json"}

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("napari_segunc.prompts.save_prompts", broken)
    with pytest.raises(
        InvalidInput,
        match=r"box prompts pt_1_boxes_v2.json to .*No space left on device\. Nothing was "
        r"exported",
    ):
        run_job(case.write_case_files(export, again))
    assert (tmp_path / "pt_1_boxes.json").read_text() == "someone else's file"
    # whole or not at all: the label map written before the failure is not left behind, nor the staging folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pt_1_boxes.json"]
    monkeypatch.undo()
    assert {k: p.name for k, p in run_job(case.write_case_files(export, again)).items()} == {
        "labels": "pt_1_labels_v2.nii.gz",
        "prompts": "pt_1_boxes_v2.json",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pt_1_boxes.json",
        "pt_1_boxes_v2.json",
        "pt_1_labels_v2.nii.gz",
    ]
    # a name taken while the set was being written is never overwritten
    third = case.plan_case_files(export, tmp_path)
    real_writer = case._writer

    def meanwhile(export_, key):
        if key == "prompts":
            (tmp_path / third[key].name).write_text("another export")
        return real_writer(export_, key)

    monkeypatch.setattr(case, "_writer", meanwhile)
    with pytest.raises(InvalidInput, match=r"pt_1_boxes_v3.json appeared while exporting; nothing was overwritten"):
        run_job(case.write_case_files(export, third))
    assert (tmp_path / "pt_1_boxes_v3.json").read_text() == "another export"
    assert not (tmp_path / "pt_1_labels_v3.nii.gz").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    with pytest.raises(InvalidInput, match="no label map"):
        case.CaseExport(image=study.image, case="x")


def test_dicom_seg_export_needs_an_image_from_dicom():
    from napari_segunc.report.case import CaseExport

    study = make_phantom(seed=1, n_raters=1)
    with pytest.raises(InvalidInput, match="DICOM SEG references the image's DICOM series: open the image from its"):
        CaseExport(image=study.image, case="c", labels=study.truth.data, write_dicom_seg=True)

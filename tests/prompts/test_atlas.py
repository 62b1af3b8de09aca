"""Box prompts from atlas registration (seed 004 §3.3.1): thresholds, identity, phantom atlases, failures,
parallel = serial, the real TotalSegmentator CT, and ``segunc atlas-prompts``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.cli import main
from napari_segunc.errors import InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.phantom import LABELS, make_phantom, write_phantom
from napari_segunc.prompts import load_prompts, prompts_from_mask, prompts_from_scores
from napari_segunc.prompts.atlas import (
    DEFAULT_THRESHOLDS,
    atlas_prompts,
    atlas_prompts_job,
    atlas_thresholds,
    parse_thresholds,
    score_volumes,
)
from napari_segunc.volume import Volume, VolumeKind

SMALL = {"shape": (24, 56, 72), "spacing": (6.0, 5.0, 5.0)}  # the phantom's field of view at half resolution
TOTALSEG = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5}  # TotalSegmentator v2 class ids


@pytest.fixture(scope="module")
def small():
    return {seed: make_phantom(seed=seed, n_raters=1, **SMALL) for seed in (0, 1, 2, 3)}


def _box_iou(box, organ2d) -> float:
    """IoU of a box with the bounding box of an organ's pixels on one slice (inclusive voxel bounds; 0 if absent)."""
    ys, xs = np.nonzero(organ2d)
    if ys.size == 0:
        return 0.0
    tx0, ty0, tx1, ty1 = xs.min(), ys.min(), xs.max(), ys.max()
    ix = max(0, min(box.x_max, tx1) - max(box.x_min, tx0) + 1)
    iy = max(0, min(box.y_max, ty1) - max(box.y_min, ty0) + 1)
    inter = ix * iy
    area = (box.x_max - box.x_min + 1) * (box.y_max - box.y_min + 1) + (tx1 - tx0 + 1) * (ty1 - ty0 + 1)
    return inter / (area - inter)


# ----------------------------------------------------------------------------------------------------- thresholds
def test_default_thresholds_are_table_2_3_by_name_and_alias(caplog):
    table = {
        "SPL": 0.6,
        "RKI": 0.6,
        "LKI": 0.4,
        "GBL": 0.3,
        "ESO": 0.2,
        "LIV": 0.2,
        "STO": 0.6,
        "AOR": 0.3,
        "IVC": 0.3,
        "PAN": 0.4,
        "RAG": 0.1,
        "LAG": 0.1,
        "DUO": 0.3,
        "BLA": 0.7,
        "PRO/UTE": 0.1,
    }
    assert atlas_thresholds(table) == table  # every AMOS22 abbreviation finds its Table 2.3 value
    assert len(DEFAULT_THRESHOLDS) == 15 and DEFAULT_THRESHOLDS["adrenal_gland_right"] == 0.1
    assert atlas_thresholds(["kidney_left", "RAG", "Spleen", "inferior vena cava"]) == {
        "kidney_left": 0.4,
        "RAG": 0.1,
        "Spleen": 0.6,
        "inferior vena cava": 0.3,
    }
    # user overrides, by plain name or abbreviation, win; the rest keep the table
    got = atlas_thresholds(LABELS, {"SPL": 0.25, "liver": 0})
    assert got == {"liver": 0.0, "kidney_right": 0.6, "kidney_left": 0.4, "spleen": 0.25, "pancreas": 0.4}
    assert parse_thresholds(" SPL=0.25 ,liver=0") == {"SPL": 0.25, "liver": 0.0} and parse_thresholds("") is None
    # an organ outside the table: the documented majority fallback, with a warning; or an error when asked
    with caplog.at_level(logging.WARNING, logger="napari_segunc.prompts.atlas"):
        assert atlas_thresholds({"heart": 7, "liver": 1}) == {"heart": 0.5, "liver": 0.2}
    assert "heart" in caplog.text
    with pytest.raises(InvalidInput, match="'heart' has no default atlas threshold"):
        atlas_thresholds(["heart"], fallback=None)
    for bad in ({"spleen": 1.0}, {"spleen": -0.1}, {"spleen": "high"}, {"spleen": True}, {"lung": 0.3}):
        with pytest.raises(InvalidInput):
            atlas_thresholds(LABELS, bad)
    for text in ("spleen", "spleen=high", "=0.3"):
        with pytest.raises(InvalidInput, match="--thresholds expects name=value"):
            parse_thresholds(text)


# ------------------------------------------------------------------------------------------- identity + averaging
def test_identity_registration_gives_score_one_inside_and_strictly_above_threshold(small):
    study = small[0]
    truth = study.truth.data
    cut = 12  # second atlas: the same image with the liver erased below slice `cut`
    half = truth.copy()
    half[:cut][half[:cut] == LABELS["liver"]] = 0
    atlases = [(study.image, study.truth), (study.image, study.truth.with_data(half))]
    reports = []
    result = atlas_prompts(study.image, atlases, LABELS, thresholds={"liver": 0.5}, workers=0, progress=reports.append)
    assert result.failed == [] and len(result.used) == 2
    assert [r.step for r in reports] == [1, 2, 3] and reports[-1].total == 3
    for name, value in LABELS.items():
        organ = truth == value
        score = result.score_maps[name]
        assert score.dtype == np.float32 and score.shape == truth.shape
        if name == "liver":
            np.testing.assert_array_equal(score[organ & (half == value)], 1.0)
            np.testing.assert_array_equal(score[organ & (half != value)], 0.5)
        else:
            np.testing.assert_array_equal(score[organ], 1.0)  # registered onto itself: exactly 1 inside the mask
        np.testing.assert_array_equal(score[~organ], 0.0)  # and exactly 0 everywhere else
    # liver: 0.5 is not strictly above 0.5, so only the slices where both atlases agree remain
    liver = result.prompts.organ("liver")
    assert liver.z_min == cut
    expected = prompts_from_mask(np.where(half == 1, 1, truth * (truth != 1)), LABELS)
    assert result.prompts.organs == expected.organs
    assert result.thresholds["liver"] == 0.5 and result.thresholds["spleen"] == 0.6
    layers = score_volumes(result, study.image)
    assert layers["spleen"].kind is VolumeKind.FLOAT_MAP and layers["spleen"].spacing == study.image.spacing


# ----------------------------------------------------------------------------------------- the phantom check
def test_phantom_atlases_give_boxes_holding_the_target_organs(small):
    """Seeds 1, 2, 3 as atlases for seed 0 (half-resolution phantoms), demons refinement, every organ at 0.2.

    Table 2.3's thresholds were tuned on AMOS22 with 15 atlases; with 3 atlases they demand 2 of 3 for the kidneys,
    spleen and pancreas, and the 2-10 voxel tips of those organs fall below that (the z ranges miss 1-2 slices, see
    docs/atlas.md), so this check uses 0.2 for every organ; the Table 2.3 result is printed for the record.
    """
    target = small[0]
    low = {name: 0.2 for name in LABELS}  # "at least one of the three atlases" (Table 2.3's liver value)
    atlases = [(small[seed].image, small[seed].truth) for seed in (1, 2, 3)]
    result = atlas_prompts(target.image, atlases, LABELS, thresholds=low, refine="demons", workers=0)
    truth = target.truth.data
    assert result.failed == [] and result.prompts.missing == ()
    for name, value in LABELS.items():
        organ = truth == value
        prompt = result.prompts.organ(name)
        zs = np.flatnonzero(organ.any(axis=(1, 2)))
        held = [
            organ[b.z, b.y_min : b.y_max + 1, b.x_min : b.x_max + 1].sum() / organ[b.z].sum()
            for b in prompt.boxes
            if organ[b.z].any()
        ]
        ious = [_box_iou(b, organ[b.z]) for b in prompt.boxes]
        print(
            f"{name:13s} z {prompt.z_min}..{prompt.z_max} (true {zs[0]}..{zs[-1]}), area held "
            f"{[round(float(h), 3) for h in held]}, box IoU {[round(float(i), 2) for i in ious]}"
        )
        assert prompt.z_min <= zs[0] and prompt.z_max >= zs[-1], name  # the z range covers the organ
        assert held and min(held) >= 0.90, name  # each box holds >= 90 % of the organ's area on its slice
        assert ious[len(ious) // 2] >= 0.5, name  # ... without being a box around the whole abdomen (middle box)
    table = prompts_from_scores(result.score_maps, LABELS, atlas_thresholds(LABELS))
    for prompt in table.organs:
        organ = truth == prompt.label
        zs = np.flatnonzero(organ.any(axis=(1, 2)))
        held = [
            organ[b.z, b.y_min : b.y_max + 1, b.x_min : b.x_max + 1].sum() / organ[b.z].sum()
            for b in prompt.boxes
            if organ[b.z].any()
        ]
        print(
            f"Table 2.3 {prompt.name:13s} z {prompt.z_min}..{prompt.z_max} (true {zs[0]}..{zs[-1]}), area held "
            f"{[round(float(h), 3) for h in held]}"
        )


# ------------------------------------------------------------------------------------------------------ failures
def test_failing_atlases_are_reported_and_skipped(small, tmp_path):
    target, good = small[0], small[1]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    flat = good.image.with_data(np.full(good.image.shape, 40, np.int16), name="flat")
    empty = good.truth.with_data(np.zeros_like(good.truth.data))
    other_grid = Volume(good.truth.data[:, :, :-1], spacing=good.truth.spacing, kind=VolumeKind.LABELS)
    atlases = [
        (flat, good.truth),
        (good.image, good.truth),
        (good.image, empty),
        (broken, good.truth),
        (good.image.with_data(good.image.data, name="cropped"), other_grid),
    ]
    result = atlas_prompts(target.image, atlases, LABELS, workers=0)
    assert result.used == ["phantom_ct"]
    reasons = dict(result.failed)
    assert list(reasons) == ["flat", "phantom_ct (atlas 3)", str(broken), "cropped"]
    assert "no contrast" in reasons["flat"]
    assert "none of the organs" in reasons["phantom_ct (atlas 3)"]
    assert str(broken) in reasons[str(broken)]
    assert "does not lie on its image's grid" in reasons["cropped"]
    assert result.prompts.source == "atlas:1 of 5 atlases" and len(result.prompts.organs) >= 4
    with pytest.raises(InvalidInput, match="Every atlas failed.*no contrast.*none of the organs"):
        atlas_prompts(target.image, [atlases[0], atlases[2]], LABELS, workers=0)
    with pytest.raises(InvalidInput, match="No atlas given"):
        atlas_prompts_job(target.image, [], LABELS)
    with pytest.raises(InvalidInput, match="label value of 1 or more"):
        atlas_prompts_job(target.image, atlases, {"liver": 0})


def test_closing_the_job_stops_it(small):
    study = small[0]
    job = atlas_prompts_job(study.image, [(study.image, study.truth)] * 3, LABELS, workers=0)
    first = next(job)
    assert (first.step, first.total) == (1, 4)
    job.close()  # what a widget's cancel does between two steps
    with pytest.raises(StopIteration):
        next(job)


# ------------------------------------------------------------------------------------------------ parallel = serial
def test_parallel_registrations_equal_serial_ones(small, tmp_path):
    paths = [write_phantom(small[seed], tmp_path / f"atlas{seed}") for seed in (1, 2)]
    atlases = [(p["image"], p["truth"]) for p in paths]  # files: read by the worker processes
    options = {"refine": "demons", "threads": 1}
    serial = atlas_prompts(small[0].image, atlases, LABELS, workers=0, **options)
    reports = []
    parallel = atlas_prompts(small[0].image, atlases, LABELS, workers=2, progress=reports.append, **options)
    assert serial.failed == parallel.failed == [] and serial.used == parallel.used
    for name in LABELS:
        np.testing.assert_array_equal(parallel.score_maps[name], serial.score_maps[name])
    assert parallel.prompts == serial.prompts
    assert sorted(r.step for r in reports) == [1, 2, 3]


# ------------------------------------------------------------------------------------------------------ real data
def test_totalseg_112_slice_atlas_gives_boxes_on_the_30_slice_ct(totalseg):
    """The 112-slice CT as atlas, the 30-slice CT as target; box IoU against the target's own segmentation.

    The shared data hold no segmentation of the 112-slice CT, but its slices 82-111 are the 30-slice CT voxel for
    voxel (while both headers put slice 0 at the same height, 246 mm apart from the truth). The atlas mask is
    therefore TotalSegmentator's *fast* model on those slices, placed on the 112-slice grid; the target's truth is
    the standard model (example_seg). The registration has to find the 246 mm offset on its own.
    IoU: for every box, the box against the bounding box of the true organ on the same slice (inclusive voxels).
    """
    big = read_volume(totalseg / "example_ct.nii.gz")
    target = read_volume(totalseg / "example_ct_sm.nii.gz")
    truth = read_volume(totalseg / "example_seg.nii.gz", kind="labels").data
    fast = read_volume(totalseg / "example_seg_fast.nii.gz", kind="labels").data
    offsets = [k for k in range(big.shape[0] - 29) if np.array_equal(big.data[k : k + 30], target.data)]
    assert offsets == [82]
    mask = np.zeros(big.shape, np.uint8)
    mask[82:] = fast
    atlas = big.with_data(mask, kind=VolumeKind.LABELS, name="atlas mask")
    misplaced = np.zeros(big.shape, np.uint8)
    misplaced[:30] = fast  # the organs 82 slices too low: outside the target once registered
    atlases = [(big, atlas), (big, atlas.with_data(misplaced))]
    result = atlas_prompts(target, atlases, TOTALSEG, workers=0)
    name = f"{totalseg / 'example_ct.nii.gz'} (atlas 2)"  # atlases are named by their image file
    assert result.failed == [(name, "After registration none of its organs falls inside the target image.")]
    for name, value in TOTALSEG.items():
        prompt, organ = result.prompts.organ(name), truth == value
        ious = [_box_iou(b, organ[b.z]) for b in prompt.boxes]
        zs = np.flatnonzero(organ.any(axis=(1, 2)))
        print(
            f"{name:13s} z {prompt.z_min}..{prompt.z_max} (true {zs[0]}..{zs[-1]}) box IoU "
            f"{[round(float(i), 3) for i in ious]}"
        )
        assert min(ious) >= 0.5, name


# ------------------------------------------------------------------------------------------------------------ CLI
def test_atlas_prompts_command(small, tmp_path, capsys):
    paths = {seed: write_phantom(small[seed], tmp_path / f"p{seed}") for seed in (0, 1, 2)}
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    out, maps = tmp_path / "boxes.json", tmp_path / "maps"
    args = [
        "atlas-prompts",
        str(paths[0]["image"]),
        "--atlas",
        str(paths[1]["image"]),
        str(paths[1]["truth"]),
        "--atlas",
        str(paths[2]["image"]),
        str(paths[2]["truth"]),
        "--atlas",
        str(broken),
        str(paths[1]["truth"]),
        "--labels",
        str(paths[0]["labels"]),
        "--thresholds",
        "SPL=0.3,pancreas=0.2",
        "--strategy",
        "A",
        "--workers",
        "0",
        "--out",
        str(out),
        "--score-maps",
        str(maps),
        "-q",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"atlas {broken} skipped:" in captured.err
    lines = {line.split()[0]: line for line in captured.out.splitlines()}
    assert "threshold 0.3," in lines["spleen"] and "threshold 0.2," in lines["pancreas"]
    assert "threshold 0.4," in lines["kidney_left"]
    assert captured.out.splitlines()[-1].startswith("5 organ(s) from 2 of 3 atlas(es), strategy A")
    prompts = load_prompts(out)
    assert prompts.source == "atlas:2 of 3 atlases" and all(len(o.boxes) == 1 for o in prompts.organs)
    # the score maps on disk are float32 on the target file's grid and give back exactly these boxes
    scores = {name: read_volume(maps / f"score_{name}.nii.gz", kind="float_map") for name in LABELS}
    on_disk = sitk.ReadImage(str(maps / "score_spleen.nii.gz"))
    source = sitk.ReadImage(str(paths[0]["image"]))
    assert on_disk.GetPixelID() == sitk.sitkFloat32 and on_disk.GetSize() == source.GetSize()
    np.testing.assert_allclose(on_disk.GetOrigin(), source.GetOrigin(), atol=1e-6)
    values = np.unique(np.concatenate([s.data.ravel() for s in scores.values()]))
    assert set(values.tolist()) <= {0.0, 0.5, 1.0} and 1.0 in values  # two atlases, nearest neighbour
    thresholds = atlas_thresholds(LABELS, {"spleen": 0.3, "pancreas": 0.2})
    again = prompts_from_scores({n: s.data for n, s in scores.items()}, LABELS, thresholds, strategy="A")
    assert again.organs == prompts.organs
    # never over existing files without --overwrite, and refused before any registration
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err

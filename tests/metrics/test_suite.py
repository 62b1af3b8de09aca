"""The whole suite on one case, every number checked against an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.metrics.suite import COLUMNS, evaluate_case

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")
torchmetrics_cls = pytest.importorskip("torchmetrics.classification")
sk_metrics = pytest.importorskip("sklearn.metrics")
tm_ce = pytest.importorskip("torchmetrics.functional.classification.calibration_error")

ORGANS = ("liver", "kidney_right", "kidney_left", "spleen", "pancreas")


@pytest.fixture(scope="module")
def native(phantom_case):
    c = phantom_case
    return evaluate_case(c["probabilities"], c["raters"], spacing=c["spacing"], labels=c["labels"], case="ph3")


def test_table_shape_and_reasons(native, phantom_case):
    rows = native.rows
    assert all(tuple(r) == COLUMNS for r in rows)
    metrics = {r["metric"] for r in rows}
    for m in (
        "dice_consensus",
        "dice",
        "hd95",
        "hd100",
        "assd",
        "confidence",
        "crps_volume",
        "ece_organ",
        "ncc",
        "ece",
        "mce",
        "ace",
        "auroc",
        "aurc",
        "eaurc",
        "mean_entropy",
        "dice_staple",
        "dice_thresholded",
        "qc_entropy_image",
        "qc_entropy_patch",
        "qc_entropy_foreground",
    ):
        assert m in metrics, m
    assert {r["organ"] for r in rows} == {*ORGANS, "all"}
    for r in rows:
        assert math.isnan(r["value"]) == (r["reason"] is not None), r
    # without ensemble members, the member-based summaries are NaN with a reason; the rest is defined
    nan_metrics = {r["metric"] for r in rows if math.isnan(r["value"])}
    assert nan_metrics == {
        "mean_expected_entropy",
        "mean_mutual_information",
        "qc_mutual_information_image",
        "qc_mutual_information_patch",
    }


def test_roi_is_padded_foreground_box(native, phantom_case):
    c = phantom_case
    fg = np.argmax(c["probabilities"], axis=0) > 0
    for r in c["raters"]:
        fg |= r > 0
    for axis, s in enumerate(native.roi):
        hit = np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != axis)))
        assert s.start == max(hit[0] - 20, 0)
        assert s.stop == min(hit[-1] + 21, fg.shape[axis])


def test_overlap_rows_match_brute_force_and_monai(native, phantom_case):
    c = phantom_case
    pred = np.argmax(c["probabilities"], axis=0)
    for organ in ("liver", "pancreas"):
        v = c["labels"][organ]
        for k, r in enumerate(c["raters"]):
            a, b = pred == v, r == v
            assert native.value("dice", organ, f"rater{k + 1}") == pytest.approx(
                2 * np.sum(a & b) / (a.sum() + b.sum()), abs=1e-12
            )
        # HD95 and ASSD of rater 2 against MONAI on the full image (the suite crops; MONAI must agree)
        a = torch.from_numpy((pred == v)[None, None])
        b = torch.from_numpy((c["raters"][1] == v)[None, None])
        hd95 = monai_metrics.compute_hausdorff_distance(a, b, percentile=95, spacing=list(c["spacing"])).item()
        assd = monai_metrics.compute_average_surface_distance(a, b, symmetric=True, spacing=list(c["spacing"])).item()
        assert native.value("hd95", organ, "rater2") == pytest.approx(hd95, rel=1e-5)
        assert native.value("assd", organ, "rater2") == pytest.approx(assd, rel=1e-5)
        # consensus Dice by its definition
        votes = sum((r == v).astype(int) for r in c["raters"])
        g, d = votes == 3, (votes > 0) & (votes < 3)
        p = (pred == v) & ~d
        assert native.value("dice_consensus", organ, "consensus") == pytest.approx(
            2 * np.sum(p & g) / (p.sum() + g.sum()), abs=1e-12
        )


def test_volume_confidence_and_ncc_rows(native, phantom_case):
    c = phantom_case
    ml = float(np.prod(c["spacing"])) / 1000
    v = c["labels"]["spleen"]
    vols = np.array([np.sum(r == v) * ml for r in c["raters"]])
    mu, sigma = vols.mean(), vols.std()
    pred_vol = float(c["probabilities"][v].sum(dtype=np.float64)) * ml
    z = (pred_vol - mu) / sigma
    closed = sigma * (z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert native.value("crps_volume", "spleen", "consensus") == pytest.approx(closed, rel=1e-9)

    votes = sum((r == v).astype(int) for r in c["raters"])[native.roi]
    p = c["probabilities"][v][native.roi].astype(np.float64)
    conf = 0.5 * ((1 - p[votes == 0].mean()) + p[votes == 3].mean())
    assert native.value("confidence", "spleen", "consensus") == pytest.approx(conf, rel=1e-6)

    ent = scipy.stats.entropy(c["probabilities"][(slice(None), *native.roi)].astype(np.float64), axis=0).ravel()
    frac = votes.ravel() / 3
    n = ent.size
    ncc = np.corrcoef(ent, frac * (1 - frac))[0, 1] * (n - 1) / n
    assert native.value("ncc", "spleen", "consensus") == pytest.approx(ncc, abs=1e-5)


def test_calibration_and_ranking_rows(native, phantom_case):
    c = phantom_case
    probs = c["probabilities"][(slice(None), *native.roi)]
    flat = torch.from_numpy(probs.reshape(probs.shape[0], -1).T.astype(np.float64).copy())
    eces = []
    for r in c["raters"]:
        # torchmetrics' own binning (MulticlassCalibrationError's update + compute), run in float64: the metric class
        # casts to float32 and its float32 bin sums are off by ~15 % at this size (see docs/metrics.md)
        target = torch.from_numpy(r[native.roi].ravel().astype(np.int64))
        conf, acc = tm_ce._multiclass_calibration_error_update(flat, target)
        eces.append(tm_ce._ce_compute(conf.double(), acc.double(), 50, norm="l1").item())
    for k, e in enumerate(eces):
        assert native.value("ece", "all", f"rater{k + 1}") == pytest.approx(e, abs=1e-6)
    assert native.value("ece", "all", "mean") == pytest.approx(np.mean(eces), abs=1e-6)

    ent = scipy.stats.entropy(probs.astype(np.float64), axis=0).ravel()
    pred = np.argmax(probs, axis=0).ravel()
    y = np.concatenate([pred != r[native.roi].ravel() for r in c["raters"]])
    auroc = sk_metrics.roc_auc_score(y, np.tile(ent, 3))
    assert native.value("auroc", "all", "pooled") == pytest.approx(auroc, abs=1e-6)
    assert 0.5 < auroc < 1.0  # entropy finds the rater disagreement better than chance
    aurc, eaurc = native.value("aurc", "all", "pooled"), native.value("eaurc", "all", "pooled")
    assert 0 <= eaurc < aurc
    assert len(native.calibration.bin_count) == 50
    assert native.calibration.bin_count.sum() == 3 * pred.size


def test_organ_channels_only_equals_background_first(native, phantom_case):
    c = phantom_case
    organs_only = evaluate_case(
        c["probabilities"][1:], c["raters"], spacing=c["spacing"], labels=c["labels"], case="ph3"
    )
    a = {(r["organ"], r["metric"], r["rater"]): r["value"] for r in native.rows}
    b = {(r["organ"], r["metric"], r["rater"]): r["value"] for r in organs_only.rows}
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True), key


def test_empty_organ_single_rater_absent_label(phantom_case):
    c = phantom_case
    labels = dict(c["labels"], ghost=9)  # no rater drew 9, the model never predicts it
    p = np.concatenate([c["probabilities"], np.zeros_like(c["probabilities"][:1])])
    ev = evaluate_case(p, c["raters"][:1], spacing=c["spacing"], labels=labels)
    ghost = {r["metric"]: r for r in ev.rows if r["organ"] == "ghost" and r["rater"] in ("consensus", "mean")}
    assert math.isnan(ghost["dice_consensus"]["value"]) and "empty" in ghost["dice_consensus"]["reason"]
    assert math.isnan(ghost["hd95"]["value"]) and "empty" in ghost["hd95"]["reason"]
    assert ghost["crps_volume"]["value"] == pytest.approx(0.0, abs=1e-9)  # nothing drawn, nothing predicted
    # one rater: no disagreement, so the rater-variance NCC is undefined, with its reason
    ncc = next(r for r in ev.rows if r["organ"] == "liver" and r["metric"] == "ncc")
    assert math.isnan(ncc["value"]) and "constant" in ncc["reason"]
    # a label absent from one rater only
    raters = [r.copy() for r in c["raters"]]
    raters[2][raters[2] == c["labels"]["pancreas"]] = 0
    ev = evaluate_case(c["probabilities"], raters, spacing=c["spacing"], labels=c["labels"])
    dice = {r["rater"]: r["value"] for r in ev.rows if r["organ"] == "pancreas" and r["metric"] == "dice"}
    assert dice["rater3"] == 0.0 and dice["rater1"] > 0.5
    assert dice["mean"] == pytest.approx(np.mean([dice["rater1"], dice["rater2"], 0.0]))
    hd = next(r for r in ev.rows if r["organ"] == "pancreas" and r["metric"] == "hd95" and r["rater"] == "rater3")
    assert math.isnan(hd["value"]) and "reference is empty" in hd["reason"]


def test_roi_clipped_at_image_border():
    shape = (20, 30, 30)
    rater = np.zeros(shape, np.uint8)
    rater[:4, 25:, :3] = 1  # touches three faces
    p = np.zeros((2, *shape), np.float32)
    p[1] = np.where(rater == 1, 0.9, 0.05)
    p[0] = 1 - p[1]
    ev = evaluate_case(p, [rater, rater], spacing=(2.0, 1.0, 1.0))
    assert ev.roi == (slice(0, 20), slice(5, 30), slice(0, 23))
    assert ev.value("dice", "label 1", "rater1") == 1.0
    assert ev.value("hd95", "label 1", "mean") == 0.0


def test_bad_inputs_are_refused_with_clear_messages(phantom_case):
    c = phantom_case
    with pytest.raises(GeometryMismatch, match="rater2"):
        evaluate_case(c["probabilities"], [c["raters"][0], c["raters"][1][:, :-1]], spacing=c["spacing"])
    bad = c["probabilities"].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        evaluate_case(bad, c["raters"], spacing=c["spacing"], labels=c["labels"])
    with pytest.raises(InvalidInput, match="not normalised"):
        evaluate_case(c["probabilities"] * 0.5, c["raters"], spacing=c["spacing"], labels=c["labels"])
    with pytest.raises(InvalidInput, match="channels"):
        evaluate_case(c["probabilities"][:3], c["raters"], spacing=c["spacing"], labels=c["labels"])
    with pytest.raises(InvalidInput, match="spacing"):
        evaluate_case(c["probabilities"], c["raters"], spacing=(1.0, 0.0, 1.0), labels=c["labels"])


# ---------------------------------------------------------------------------------------------------- curvas mode
def _official_style(ct, raters, organ_probs):
    """The CURVAS 2024 evaluation flow, rebuilt from its description with MONAI and torchmetrics."""
    from monai.metrics import DiceMetric
    from monai.transforms import CropForeground
    from torchmetrics.classification import MulticlassCalibrationError

    start, end = CropForeground(select_fn=lambda x: x > 0).compute_bounding_box(ct)
    crop = (Ellipsis, slice(start[0], end[0]), slice(start[1], end[1]))
    gts = np.stack([r[crop] for r in raters])
    probs = organ_probs[crop]
    background = 1 - probs.sum(axis=0, keepdims=True)
    pred = np.argmax(np.concatenate([background, probs]), axis=0)
    dice, conf = {}, {}
    for v in (1, 2, 3):
        agree = np.logical_and.reduce(gts == v, axis=0)
        agree_bg = np.logical_and.reduce(gts != v, axis=0)
        keep = agree | agree_bg
        metric = DiceMetric(include_background=False, reduction="mean", get_not_nans=False, ignore_empty=True)
        metric(torch.from_numpy(((pred == v) & keep).astype(np.uint8)), torch.from_numpy(agree.astype(np.uint8)))
        dice[v] = metric.aggregate().item()
        conf[v] = ((1 - probs[v - 1][agree_bg].mean()) + probs[v - 1][agree].mean()) / 2
    eces = []
    for g in gts:
        samples = torch.cat([torch.from_numpy(background), torch.from_numpy(probs)]).permute(1, 2, 3, 0).reshape(-1, 4)
        m = MulticlassCalibrationError(num_classes=4, n_bins=50)
        eces.append(float(m(samples, torch.from_numpy(g.astype(np.int64)).view(-1))))
    return dice, conf, eces


def test_curvas_mode_reproduces_the_official_flow(phantom_case):
    c = phantom_case
    lab = c["labels"]
    remap = np.zeros(max(lab.values()) + 1, np.uint8)
    remap[lab["pancreas"]], remap[lab["kidney_right"]], remap[lab["kidney_left"]], remap[lab["liver"]] = 1, 2, 2, 3
    raters = [remap[r] for r in c["raters"]]
    p = c["probabilities"]
    organ_probs = np.stack([p[lab["pancreas"]], p[lab["kidney_right"]] + p[lab["kidney_left"]], p[lab["liver"]]])
    ev = evaluate_case(
        organ_probs,
        raters,
        spacing=c["spacing"],
        labels={"panc": 1, "kidn": 2, "livr": 3},
        mode="curvas",
        image=c["image"],
    )
    dice, conf, eces = _official_style(c["image"], raters, organ_probs)
    for v, name in ((1, "panc"), (2, "kidn"), (3, "livr")):
        assert ev.value("dice_consensus", name, "consensus") == pytest.approx(dice[v], abs=1e-6)
        assert ev.value("confidence", name, "consensus") == pytest.approx(conf[v], abs=1e-6)
    for k, e in enumerate(eces):
        assert ev.value("ece", "all", f"rater{k + 1}") == pytest.approx(e, abs=1e-6)
    # the row-wise Dice differs from the volumetric one the native mode reports
    nat = evaluate_case(organ_probs, raters, spacing=c["spacing"], labels={"panc": 1, "kidn": 2, "livr": 3})
    assert abs(nat.value("dice_consensus", "panc", "consensus") - dice[1]) > 1e-3


def test_curvas_mode_evaluates_in_the_source_files_array_order(phantom_case, tmp_path):
    """A CT stored with permuted, flipped axes (SRA): the official flow on the arrays SimpleITK reads from the files
    gives the numbers of ``--mode curvas`` on the canonical arrays with the image read from that file."""
    import SimpleITK as sitk

    from napari_segunc.io import read_volume
    from napari_segunc.volume import VolumeKind

    c = phantom_case
    study, lab = c["study"], c["labels"]
    remap = np.zeros(max(lab.values()) + 1, np.uint8)
    remap[lab["pancreas"]], remap[lab["kidney_right"]], remap[lab["kidney_left"]], remap[lab["liver"]] = 1, 2, 2, 3
    raters = [remap[r] for r in c["raters"]]
    p = c["probabilities"]
    organ_probs = np.stack([p[lab["pancreas"]], p[lab["kidney_right"]] + p[lab["kidney_left"]], p[lab["liver"]]])

    def stored(data, kind):  # the array as SimpleITK reads it from a file stored in SRA order
        return sitk.GetArrayFromImage(sitk.DICOMOrient(study.image.with_data(data, kind=kind).to_sitk(), "SRA"))

    ct_file = tmp_path / "ct_sra.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(study.image.to_sitk(), "SRA"), str(ct_file))
    image = read_volume(ct_file)
    assert image.source.orientation == "SRA" and image.shape == study.image.shape
    np.testing.assert_array_equal(image.data, study.image.data)  # the same canonical arrays
    ct_raw = stored(study.image.data, VolumeKind.INTENSITY)
    assert ct_raw.shape != study.image.shape  # the file's own axis order
    labels = {"panc": 1, "kidn": 2, "livr": 3}
    ev = evaluate_case(organ_probs, raters, spacing=c["spacing"], labels=labels, mode="curvas", image=image)
    dice, conf, eces = _official_style(
        ct_raw,
        [stored(r, VolumeKind.LABELS) for r in raters],
        np.stack([stored(ch, VolumeKind.FLOAT_MAP) for ch in organ_probs]),
    )
    for v, name in ((1, "panc"), (2, "kidn"), (3, "livr")):
        assert ev.value("dice_consensus", name, "consensus") == pytest.approx(dice[v], abs=1e-6)
        assert ev.value("confidence", name, "consensus") == pytest.approx(conf[v], abs=1e-6)
    for k, e in enumerate(eces):
        assert ev.value("ece", "all", f"rater{k + 1}") == pytest.approx(e, abs=1e-6)
    # the same through `segunc evaluate` on files all stored in SRA order (written in the image's source geometry)
    import csv

    from napari_segunc.cli import main
    from napari_segunc.io import write_probabilities, write_volume

    files = [
        write_volume(image.with_data(r, kind=VolumeKind.LABELS), tmp_path / f"r{k}.nii.gz")
        for k, r in enumerate(raters)
    ]
    probs = write_probabilities(organ_probs, image, tmp_path / "organs.nii.gz")
    args = ["evaluate", "--mode", "curvas", "--image", str(ct_file), "--probabilities", str(probs)]
    args += [a for f in files for a in ("--rater", str(f))] + ["--labels", "panc=1,kidn=2,livr=3"]
    assert main([*args, "--out", str(tmp_path / "curvas.csv")]) == 0
    with open(tmp_path / "curvas.csv", newline="", encoding="utf-8") as fh:
        rows = {(r["organ"], r["metric"], r["rater"]): float(r["value"]) for r in csv.DictReader(fh)}
    assert rows[("panc", "dice_consensus", "consensus")] == pytest.approx(dice[1], abs=1e-6)
    assert rows[("all", "ece", "r0")] == pytest.approx(eces[0], abs=1e-6)  # raters named by their files
    # in the canonical order (what this mode did before) the row-wise Dice is another number
    canonical = evaluate_case(
        organ_probs, raters, spacing=c["spacing"], labels=labels, mode="curvas", image=study.image.data
    )
    assert abs(canonical.value("dice_consensus", "panc", "consensus") - dice[1]) > 1e-3


def test_suite_kernels_equal_their_numpy_twins():
    from napari_segunc.metrics import suite

    rng = np.random.default_rng(4)
    p = rng.dirichlet([0.3] * 5, size=(7, 9, 11)).astype(np.float32)
    p = np.ascontiguousarray(np.moveaxis(p, -1, 0))
    p[:, 0, 0, :3] = [[0.5], [0.5], [0], [0], [0]] * np.ones(3, np.float32)  # ties: first maximum wins
    np.testing.assert_array_equal(suite._argmax(p), np.argmax(p, axis=0))
    np.testing.assert_allclose(suite._entropy(p), scipy.stats.entropy(p.astype(np.float64), axis=0), atol=2e-6)
    sums = p.astype(np.float64).sum(axis=0)
    assert suite._probability_stats(p) == pytest.approx((p.min(), p.max(), sums.min(), sums.max()))
    view = p[:, 1:5, ::2]  # non-contiguous input, as the ROI crops are
    np.testing.assert_array_equal(suite._argmax(view), np.argmax(view, axis=0))
    bad = p.copy()
    bad[2, 3, 4, 5] = np.nan
    assert all(math.isnan(v) for v in suite._probability_stats(bad))

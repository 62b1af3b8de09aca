"""segunc evaluate / evaluate-cohort / compare on files: tables, plots, Dask cohort = serial, failures reported."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
import scipy.stats

from napari_segunc.cli import main
from napari_segunc.io import write_probabilities
from napari_segunc.metrics.cohort import evaluate_cohort, read_manifest
from napari_segunc.metrics.compare import compare_groups
from napari_segunc.metrics.suite import evaluate_case
from napari_segunc.phantom import LABELS, make_phantom, write_phantom

from .conftest import model_probabilities

N_CLASSES = max(LABELS.values()) + 1


def _case(folder, seed: int, sigmas=(1.0, 2.0)):
    """Phantom files + one probability file per model (blur sigma); returns (paths, study)."""
    study = make_phantom(seed=seed, n_raters=3, shape=(24, 64, 80))
    paths = write_phantom(study, folder)
    probs = {}
    for s in sigmas:
        p = model_probabilities(study.truth.data, N_CLASSES, sigma=s, shift=1)
        probs[s] = write_probabilities(p, study.image, folder / f"model_sigma{s}.nii.gz")
    return paths, probs, study


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    cases = {}
    for seed in (0, 1, 2):
        folder = root / f"case{seed}"
        cases[seed] = _case(folder, seed)
    return root, cases


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_writes_csv_json_and_plots(cohort, tmp_path, capsys):
    root, cases = cohort
    paths, probs, study = cases[0]
    raters = [str(paths[f"rater_{k}"]) for k in (1, 2, 3)]
    args = ["evaluate", "--probabilities", str(probs[1.0]), "--labels", str(paths["labels"]), "--case", "c0"]
    for r in raters:
        args += ["--rater", r]
    assert main([*args, "--out", str(tmp_path / "r.csv"), "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "dice_consensus" in out and "rows →" in out
    rows = _rows(tmp_path / "r.csv")
    assert {r["case"] for r in rows} == {"c0"} and {r["rater"] for r in rows} >= {"rater_1", "mean", "pooled"}
    # the file numbers are the in-memory numbers
    direct = evaluate_case(
        model_probabilities(study.truth.data, N_CLASSES, sigma=1.0, shift=1),
        [r.data for r in study.raters],
        spacing=study.image.spacing,
        labels=study.labels,
        rater_names=["rater_1", "rater_2", "rater_3"],
        case="c0",
    )
    for row, ref in zip(rows, direct.rows, strict=True):
        assert (row["organ"], row["metric"], row["rater"]) == (ref["organ"], ref["metric"], ref["rater"])
        value = float(row["value"]) if row["value"] else math.nan
        assert value == pytest.approx(ref["value"], rel=1e-6, nan_ok=True)
    for name in ("c0_reliability.png", "c0_risk_coverage.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data) == len(rows) and all(d["value"] is None or isinstance(d["value"], float) for d in data)
    # nothing is overwritten without --overwrite
    before = (tmp_path / "r.csv").read_bytes()
    assert main([*args, "--out", str(tmp_path / "r.csv")]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "r.csv").read_bytes() == before


def test_evaluate_with_members_fills_mutual_information(cohort, tmp_path):
    root, cases = cohort
    paths, probs, _ = cases[1]
    args = ["evaluate", "--member", str(probs[1.0]), "--member", str(probs[2.0]), "--labels", str(paths["labels"])]
    args += ["--rater", str(paths["rater_1"]), "--rater", str(paths["rater_2"]), "--out", str(tmp_path / "m.csv")]
    assert main(args) == 0
    mi = [r for r in _rows(tmp_path / "m.csv") if r["metric"] == "mean_mutual_information"]
    assert mi and all(float(r["value"]) > 0 for r in mi if r["value"])


def test_evaluate_refuses_a_rater_on_another_grid(cohort, tmp_path, capsys):
    root, cases = cohort
    paths, probs, _ = cases[0]
    img = nib.load(paths["rater_1"])
    other = tmp_path / "cropped_rater.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :-2], img.affine), other)
    rc = main(
        [
            "evaluate",
            "--probabilities",
            str(probs[1.0]),
            "--rater",
            str(paths["rater_1"]),
            "--rater",
            str(other),
            "--out",
            str(tmp_path / "x.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and str(other) in err and "grid" in err
    assert not (tmp_path / "x.csv").exists()


def _manifest(root, cases, broken: bool):
    lines = ["case,group,probabilities,rater1,rater2,rater3"]
    for seed, (paths, probs, _) in cases.items():
        for sigma, group in ((1.0, "sharp"), (2.0, "blurred")):
            raters = ",".join(str(paths[f"rater_{k}"].relative_to(root)) for k in (1, 2, 3))
            lines.append(f"case{seed},{group},{probs[sigma].relative_to(root)},{raters}")
    if broken:
        lines.append("case9,sharp,missing.nii.gz,case0/rater_1.nii.gz,,")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_cohort_on_two_dask_workers_equals_serial(cohort, tmp_path):
    root, cases = cohort
    manifest = _manifest(root, cases, broken=True)
    parsed = read_manifest(manifest)
    assert len(parsed) == 7 and parsed[-1].files.raters[0].endswith("rater_1.nii.gz")
    labels = json.loads((root / "case0" / "labels.json").read_text())
    serial = evaluate_cohort(parsed, labels=labels, workers=0)
    from distributed import LocalCluster

    # an existing scheduler (--scheduler ADDRESS) with two worker processes
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = evaluate_cohort(parsed, labels=labels, scheduler=cluster.scheduler_address)
    assert len(serial) == len(dask) > 6 * 50
    for a, b in zip(serial, dask, strict=True):
        assert {k: a[k] for k in a if k != "value"} == {k: b[k] for k in b if k != "value"}
        assert a["value"] == pytest.approx(b["value"], rel=1e-12, nan_ok=True)
    errors = [r for r in dask if r["metric"] == "error"]
    assert len(errors) == 1 and errors[0]["case"] == "case9" and "missing.nii.gz" in errors[0]["reason"]


def test_cohort_cli_and_compare(cohort, tmp_path, capsys):
    root, cases = cohort
    manifest = _manifest(root, cases, broken=False)
    out = tmp_path / "results.csv"
    labels = str(root / "case0" / "labels.json")
    # the default: a LocalCluster started and stopped by the command
    assert main(["evaluate-cohort", str(manifest), "--out", str(out), "--labels", labels, "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "6/6 cases evaluated" in captured.out and "6/6" in captured.err  # the progress bar
    assert main(["compare", str(out), "--metric", "ece", "--out", str(tmp_path / "cmp")]) == 0
    table = _rows(tmp_path / "cmp" / "mannwhitney_ece.csv")
    assert {(r["group_a"], r["group_b"]) for r in table} == {("sharp", "blurred"), ("blurred", "sharp")}
    rows = [r for r in _rows(out) if r["metric"] == "ece" and r["rater"] == "mean"]
    sharp = [float(r["value"]) for r in rows if r["group"] == "sharp"]
    blurred = [float(r["value"]) for r in rows if r["group"] == "blurred"]
    ref = scipy.stats.mannwhitneyu(sharp, blurred, alternative="less")
    row = next(r for r in table if r["group_a"] == "sharp")
    assert float(row["p_value"]) == pytest.approx(ref.pvalue) and float(row["u_statistic"]) == ref.statistic
    assert int(row["n_a"]) == 3 and float(row["median_a"]) == pytest.approx(np.median(sharp))
    png = (tmp_path / "cmp" / "violin_ece_all.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    # per-organ metrics give one violin per organ
    assert main(["compare", str(out), "--metric", "hd95", "--out", str(tmp_path / "cmp")]) == 0
    assert len(list((tmp_path / "cmp").glob("violin_hd95_*.png"))) == len(LABELS)


def test_compare_refuses_unknown_metric(cohort, tmp_path):
    rows = [{"case": "a", "group": "g", "organ": "all", "metric": "ece", "rater": "mean", "value": 0.1}]
    with pytest.raises(Exception, match="metrics present: ece"):
        compare_groups(rows, "dice")


def test_evaluate_on_the_values_toy_raters_matches_the_references(values_toy, tmp_path):
    """Real 3-rater data through the command: every checked number equals its reference library."""
    import importlib

    import torch
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage
    from sklearn.metrics import roc_auc_score

    from napari_segunc.io import read_volume

    tm_ce = importlib.import_module("torchmetrics.functional.classification.calibration_error")
    image = read_volume(values_toy / "imagesTr" / "0003.nii.gz")
    paths = [values_toy / "labelsTr" / f"0003_0{k}.nii.gz" for k in range(3)]
    raters = [read_volume(p, kind="labels").data for p in paths]
    soft = np.mean([r == 1 for r in raters], axis=0).astype(np.float32)
    fg = np.clip(ndimage.gaussian_filter(soft, 1.0) * 1.2, 0.001, 0.999).astype(np.float32)
    probs = np.stack([1 - fg, fg])
    prob_path = write_probabilities(probs, image, tmp_path / "p.nii.gz")
    args = ["evaluate", "--probabilities", str(prob_path), "--image", str(values_toy / "imagesTr" / "0003.nii.gz")]
    for p in paths:
        args += ["--rater", str(p)]
    assert main([*args, "--labels", "lesion=1", "--out", str(tmp_path / "r.csv")]) == 0
    rows = {(r["organ"], r["metric"], r["rater"]): r for r in _rows(tmp_path / "r.csv")}
    pred = probs.argmax(0)
    names = [p.name.removesuffix(".nii.gz") for p in paths]
    for name, r in zip(names, raters, strict=True):
        a, b = pred == 1, r == 1
        assert float(rows[("lesion", "dice", name)]["value"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
        hd = compute_hausdorff_distance(
            torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None]), percentile=95, spacing=list(image.spacing)
        ).item()
        assert float(rows[("lesion", "hd95", name)]["value"]) == pytest.approx(hd, rel=1e-5)
    # whole-ROI metrics on the ROI box (bounding box of everything drawn or predicted + 20 voxels)
    fgm = pred > 0
    for r in raters:
        fgm |= r > 0
    box = []
    for axis in range(3):
        hit = np.flatnonzero(fgm.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(hit[0] - 20, 0), min(hit[-1] + 21, fgm.shape[axis])))
    pc = probs[(slice(None), *box)]
    flat = torch.from_numpy(pc.reshape(2, -1).T.astype(np.float64).copy())
    eces = []
    for r in raters:
        conf, acc = tm_ce._multiclass_calibration_error_update(
            flat, torch.from_numpy(r[tuple(box)].ravel().astype(np.int64))
        )
        eces.append(tm_ce._ce_compute(conf.double(), acc.double(), 50, norm="l1").item())
    assert float(rows[("all", "ece", "mean")]["value"]) == pytest.approx(np.mean(eces), abs=1e-7)
    ent = scipy.stats.entropy(pc.astype(np.float64), axis=0).ravel()
    y = np.concatenate([pred[tuple(box)].ravel() != r[tuple(box)].ravel() for r in raters])
    auroc = roc_auc_score(y, np.tile(ent, 3))
    assert float(rows[("all", "auroc", "pooled")]["value"]) == pytest.approx(auroc, abs=1e-6)

"""`segunc uncertainty` end to end: members on disk → maps in the reference geometry + regions.csv."""

from __future__ import annotations

import csv

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from napari_segunc.cli import main
from napari_segunc.io import read_probabilities, read_volume, write_probabilities
from napari_segunc.uncertainty import EnsembleAccumulator


def soft_member(labels: np.ndarray, sigma: float) -> np.ndarray:
    """A plausible model output from a rater's binary mask: blurred foreground probability."""
    fg = ndimage.gaussian_filter(labels.astype(np.float32), sigma)
    return np.stack([1.0 - fg, fg]).astype(np.float32)


def test_uncertainty_command_on_toy_raters(values_toy, tmp_path, capsys):
    image = read_volume(values_toy / "imagesTr" / "0003.nii.gz")
    raters = [read_volume(values_toy / "labelsTr" / f"0003_0{k}.nii.gz").data for k in range(3)]
    args, members = [], []
    for k, lab in enumerate(raters):
        for s, sigma in enumerate((0.7, 1.5)):
            p = soft_member(lab, sigma)
            path = write_probabilities(p, image, tmp_path / f"r{k}_s{s}.nii.gz")
            args += ["--group", f"rater{k + 1}:{path}"]
            members.append((f"rater{k + 1}", p))
    out = tmp_path / "out"
    code = main(
        [
            "uncertainty",
            *args,
            "--reference",
            str(values_toy / "imagesTr" / "0003.nii.gz"),
            "--out",
            str(out),
            "--labels",
            "object=1",
            "--top-q",
            "0.999",
            "-q",
        ]
    )
    assert code == 0
    assert "all          6 member(s)" in capsys.readouterr().out
    expected = {
        "mean_probabilities",
        "variance",
        "segmentation",
        "entropy",
        "expected_entropy",
        "mutual_information",
        "mean_variance",
        "max_prob_uncertainty",
        "member_disagreement",
    }
    for folder in (out, out / "rater1", out / "rater2", out / "rater3"):
        assert {p.name.removesuffix(".nii.gz") for p in folder.glob("*.nii.gz")} == expected
        assert (folder / "regions.csv").exists()

    ref = EnsembleAccumulator()
    for i, (g, p) in enumerate(members):
        ref.add(p, name=str(i), group=g)
    for group, folder in (("all", out), ("rater2", out / "rater2")):
        want = ref.result(group)
        got = read_volume(folder / "mutual_information.nii.gz")
        np.testing.assert_allclose(got.data, want.mutual_information, atol=1e-6)
        np.testing.assert_array_equal(read_volume(folder / "segmentation.nii.gz").data, want.segmentation)
        mean = read_probabilities(folder / "mean_probabilities.nii.gz", reference=image)
        np.testing.assert_allclose(mean.data, want.mean_probabilities, atol=1e-6)
    # written in the reference's exact geometry
    a, b = sitk.ReadImage(str(values_toy / "imagesTr" / "0003.nii.gz")), sitk.ReadImage(str(out / "entropy.nii.gz"))
    assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection() and a.GetSpacing() == b.GetSpacing()
    # the raters' masks are nested (182 ⊂ 994 ⊂ 1806 voxels): the most uncertain voxels lie between the tightest and
    # the loosest outline, and the review queue's first region is there, on the object
    entropy = ref.result().entropy
    top = entropy > np.quantile(entropy, 0.999)
    tight, loose = raters[0] > 0, raters[2] > 0
    band = ndimage.binary_dilation(loose, iterations=2) & ~ndimage.binary_erosion(tight, iterations=1)
    assert (top & band).sum() / top.sum() > 0.95
    rows = list(csv.DictReader(open(out / "regions.csv")))
    assert rows[0]["rank"] == "1" and rows[0]["structure"] == "object"
    totals = [float(r["total"]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    z, y, x = (round(float(rows[0][f"centroid_{a}"])) for a in "zyx")
    assert band[z, y, x] or loose[z, y, x]


def test_uncertainty_command_errors(tmp_path, capsys):
    assert main(["uncertainty", "--out", str(tmp_path)]) == 2
    assert "at least one ensemble member" in capsys.readouterr().err
    assert main(["uncertainty", "--group", "nogroup.nii.gz", "--out", str(tmp_path)]) == 2
    assert "--group expects NAME:PATH" in capsys.readouterr().err


def test_raters_command_on_the_phantom(tmp_path, capsys):
    from napari_segunc.phantom import make_phantom, write_phantom
    from napari_segunc.uncertainty import analyze_raters

    study = make_phantom(seed=2, shape=(24, 56, 72))
    paths = write_phantom(study, tmp_path / "study")
    out = tmp_path / "agreement"
    raters = [str(paths[f"rater_{k}"]) for k in (1, 2, 3)]
    assert main(["raters", *raters, "--labels", str(paths["labels"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    kappa = {line.split()[0]: float(line.split()[-1]) for line in text.splitlines() if "Fleiss' kappa" in line}
    assert set(kappa) == set(study.labels) and kappa["liver"] > kappa["pancreas"] + 0.1
    names = {"soft_labels", "rater_variance", "vote_entropy", "consensus", "dissensus", "majority", "staple"}
    assert {p.name.removesuffix(".nii.gz") for p in out.glob("*.nii.gz")} == names
    ref = analyze_raters(study.raters, labels=study.labels)
    np.testing.assert_array_equal(read_volume(out / "dissensus.nii.gz").data, ref.dissensus)
    np.testing.assert_array_equal(read_volume(out / "staple.nii.gz").data, ref.staple)
    np.testing.assert_allclose(read_volume(out / "vote_entropy.nii.gz").data, ref.vote_entropy, atol=1e-7)
    soft = read_probabilities(out / "soft_labels.nii.gz", reference=read_volume(paths["rater_1"]))
    np.testing.assert_allclose(soft.data, ref.soft_labels, atol=1e-7)
    rows = list(csv.DictReader(open(out / "agreement.csv")))
    kinds = {r["kind"] for r in rows}
    assert kinds == {"dice", "fleiss_kappa", "staple_sensitivity", "staple_specificity"}
    dice = {o: [float(r["value"]) for r in rows if r["kind"] == "dice" and r["name"] == o] for o in study.labels}
    assert all(len(v) == 3 and 0 < min(v) and max(v) < 1 for v in dice.values())  # 3 pairs, partial agreement
    assert np.mean(dice["liver"]) > np.mean(dice["pancreas"]) + 0.1


def test_raters_command_refuses_a_single_rater(tmp_path, capsys, totalseg):
    assert main(["raters", str(totalseg / "example_seg.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "at least 2 raters are needed" in capsys.readouterr().err

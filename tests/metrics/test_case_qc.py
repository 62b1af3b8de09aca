"""Case-level QC: ValUES' image- and patch-level aggregations against scipy, and failure detection over cases
against the published fd-shifts / ValUES AURC loop and sklearn's AUROC; then `segunc qc` on an evaluated cohort."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import scipy.signal

from napari_segunc.errors import InvalidInput
from napari_segunc.metrics.case_qc import case_scores, cohort_cases, failure_detection, patch_max

from .test_ranking import aurc_ref, eaurc_ref

sk_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("shape", [(12, 15, 17), (6, 30, 11), (3, 4, 5)])
def test_patch_max_is_valus_patch_level_aggregation(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape).astype(np.float32) ** 3
    kernel = np.ones([min(10, n) for n in shape])  # an axis thinner than the patch: its whole extent
    want = scipy.signal.convolve(a.astype(np.float64), kernel, mode="valid").max()
    for use_numba in (True, False):  # the kernel and its numpy twin
        assert patch_max(a, use_numba=use_numba) == pytest.approx(want, rel=1e-10)
        assert patch_max(a, size=3, use_numba=use_numba) == pytest.approx(
            scipy.signal.convolve(a.astype(np.float64), np.ones((3, 3, 3)), mode="valid").max(), rel=1e-10
        )


def test_case_scores():
    rng = np.random.default_rng(0)
    e = rng.random((8, 12, 14)).astype(np.float32)
    seg = np.zeros(e.shape, np.uint8)
    seg[2:5, 3:8, 4:9] = 2
    mi = e * 0.3
    s = case_scores(e, seg, mi)
    assert s["entropy_image"].value == pytest.approx(float(e.astype(np.float64).sum()))
    assert s["entropy_foreground"].value == pytest.approx(float(e[seg != 0].astype(np.float64).mean()))
    assert s["mutual_information_patch"].value == pytest.approx(patch_max(mi))
    bare = case_scores(e, np.zeros_like(seg))
    assert math.isnan(bare["entropy_foreground"].value) and "foreground" in bare["entropy_foreground"].reason
    assert math.isnan(bare["mutual_information_image"].value) and "members" in bare["mutual_information_image"].reason


def test_failure_detection_equals_values_and_sklearn():
    rng = np.random.default_rng(3)
    n = 40
    dice = np.clip(rng.normal(0.82, 0.1, n), 0, 1)
    score = (1 - dice) * 5 + rng.normal(0, 0.3, n)  # uncertain where it failed, noisily
    score[:4] = score[4]  # ties
    (fd,) = failure_detection({"entropy_image": score}, dice, threshold=0.8)
    risks, confids = 1 - dice, -score
    assert fd.aurc == pytest.approx(aurc_ref(risks, confids), abs=1e-12)
    assert fd.eaurc == pytest.approx(eaurc_ref(risks, confids), abs=1e-12)
    assert fd.auroc.value == pytest.approx(sk_metrics.roc_auc_score(dice < 0.8, score), abs=1e-12)
    assert fd.failures == int((dice < 0.8).sum()) and fd.cases == n and fd.auroc.value > 0.8
    (none,) = failure_detection({"s": score}, np.ones(n), threshold=0.8)
    assert math.isnan(none.auroc.value) and none.auroc.reason == "no case failed"
    with pytest.raises(InvalidInput, match="one value per case"):
        failure_detection({"s": score[:-1]}, dice)


def test_segunc_qc_on_an_evaluated_cohort(tmp_path, capsys):
    from napari_segunc.cli import main
    from napari_segunc.io import write_probabilities
    from napari_segunc.phantom import make_phantom, write_phantom

    from .conftest import model_probabilities

    lines = ["case,group,probabilities,rater1,rater2"]
    for seed in range(6):  # the blur grows with the seed: worse cases, and more uncertain
        study = make_phantom(seed=seed, n_raters=2, shape=(20, 48, 64))
        paths = write_phantom(study, tmp_path / f"c{seed}")
        p = model_probabilities(study.truth.data, 6, sigma=0.6 + 0.5 * seed, shift=seed % 3)
        probs = write_probabilities(p, study.image, tmp_path / f"c{seed}" / "p.nii.gz")
        lines.append(f"c{seed},model,{probs},{paths['rater_1']},{paths['rater_2']}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    labels = tmp_path / "c0" / "labels.json"
    assert (
        main(
            [
                "evaluate-cohort",
                str(tmp_path / "m.csv"),
                "--out",
                str(tmp_path / "r.csv"),
                "--workers",
                "0",
                "--labels",
                str(labels),
                "--quiet",
            ]
        )
        == 0
    )
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cases = cohort_cases(rows)["model"]
    assert sorted(cases) == [f"c{s}" for s in range(6)] and all(0 < c["dice"] <= 1 for c in cases.values())
    threshold = float(np.median([c["dice"] for c in cases.values()]))
    assert main(["qc", str(tmp_path / "r.csv"), "--dice-threshold", str(threshold), "--out", str(tmp_path / "qc")]) == 0
    with open(tmp_path / "qc" / "qc.csv", newline="") as fh:
        table = {r["score"]: r for r in csv.DictReader(fh)}
    names = sorted(cases)
    dice = [cases[c]["dice"] for c in names]
    for score in ("entropy_image", "entropy_patch", "entropy_foreground"):
        (want,) = failure_detection({score: [cases[c][score] for c in names]}, dice, threshold=threshold)
        assert float(table[score]["aurc"]) == pytest.approx(want.aurc, rel=1e-9)
        assert float(table[score]["auroc"]) == pytest.approx(want.auroc.value, rel=1e-9)
    assert "mutual_information_image" not in table  # one model per case: no MI
    assert (tmp_path / "qc" / "qc_risk_coverage.png").stat().st_size > 10_000
    assert "AURC" in capsys.readouterr().out
    # again without --overwrite: refused, nothing replaced
    assert main(["qc", str(tmp_path / "r.csv"), "--out", str(tmp_path / "qc")]) == 2


def test_the_suite_scores_the_whole_image_with_the_ensembles_maps(phantom_case):
    from napari_segunc.metrics.suite import evaluate_case
    from napari_segunc.uncertainty import EnsembleAccumulator

    from .conftest import model_probabilities

    c = phantom_case
    acc = EnsembleAccumulator()
    for i, sigma in enumerate((0.8, 2.0)):
        acc.add(model_probabilities(c["truth"], 6, sigma=sigma, shift=i), name=f"m{i}")
    maps = acc.result()
    ev = evaluate_case(maps.mean_probabilities, c["raters"], spacing=c["spacing"], labels=c["labels"], ensemble=maps)
    mi = maps.mutual_information.astype(np.float64)
    assert ev.value("qc_mutual_information_image", "all", "case") == pytest.approx(mi.sum(), rel=1e-9)
    assert ev.value("qc_entropy_patch", "all", "case") == pytest.approx(patch_max(maps.entropy), rel=1e-9)
    fg = maps.segmentation != 0
    assert ev.value("qc_entropy_foreground", "all", "case") == pytest.approx(
        float(maps.entropy[fg].astype(np.float64).mean()), rel=1e-9
    )

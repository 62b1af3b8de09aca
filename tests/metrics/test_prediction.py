"""`evaluate_prediction` (segmentation with or without probabilities) and `organ_table`, as the Metrics widget uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.metrics.prediction import (
    NO_PROBABILITIES,
    SEGMENTATION_METRICS,
    evaluate_prediction,
    one_hot,
    organ_table,
)
from napari_segunc.metrics.suite import evaluate_case
from napari_segunc.uncertainty.layers import segmentation_layer


def test_one_hot_maps_labels_to_channels():
    seg = np.array([[[0, 1, 4, 7]]], np.uint8)  # 7 is not an organ: background
    p = one_hot(seg, [1, 4])
    assert p.shape == (3, 1, 1, 4) and p.dtype == np.float32
    np.testing.assert_array_equal(p.argmax(axis=0), [[[0, 1, 2, 0]]])
    np.testing.assert_array_equal(p.sum(axis=0), 1.0)


def test_segmentation_only_keeps_overlap_surface_volume(phantom_case):
    c = phantom_case
    seg, raters = c["raters"][0], c["raters"][1:]
    got = evaluate_prediction(seg, raters, spacing=c["spacing"], labels=c["labels"])
    assert not got.with_probabilities and "Segmentation only" in got.notes[0]
    assert got.evaluation.calibration is None and got.evaluation.risk_coverage is None
    reference = evaluate_case(
        one_hot(seg, sorted(c["labels"].values())), raters, spacing=c["spacing"], labels=c["labels"]
    )
    assert len(got.rows) == len(reference.rows)
    for row, ref in zip(got.rows, reference.rows, strict=True):
        if row["metric"] in SEGMENTATION_METRICS:
            assert row["value"] == ref["value"] or (math.isnan(row["value"]) and math.isnan(ref["value"]))
        else:
            assert math.isnan(row["value"]) and row["reason"] == NO_PROBABILITIES
    assert 0.5 < got.evaluation.value("dice", "liver") < 1.0
    # Without labels: every non-zero label present, named by value.
    unnamed = evaluate_prediction(seg, raters, spacing=c["spacing"])
    assert unnamed.labels == {f"label {v}": v for v in sorted(c["labels"].values())}


def test_with_probabilities_equals_the_suite_and_notes_an_edited_segmentation(phantom_case):
    c = phantom_case
    p = c["probabilities"]
    argmax = p.argmax(axis=0).astype(np.uint8)  # labels 1…5 are channels 1…5
    got = evaluate_prediction(argmax, c["raters"], spacing=c["spacing"], probabilities=p, labels=c["labels"])
    reference = evaluate_case(p, c["raters"], spacing=c["spacing"], labels=c["labels"])
    assert got.with_probabilities and not got.notes
    assert [r["value"] for r in got.rows if not math.isnan(r["value"])] == [
        r["value"] for r in reference.rows if not math.isnan(r["value"])
    ]
    edited = argmax.copy()
    edited[c["truth"] == 1] = 0
    notes = evaluate_prediction(edited, c["raters"], spacing=c["spacing"], probabilities=p, labels=c["labels"]).notes
    assert f"at {int(np.count_nonzero(edited != argmax))} voxel(s)" in notes[0]


def test_refusals(phantom_case):
    c = phantom_case
    seg = c["truth"]
    with pytest.raises(InvalidInput, match="at least one rater"):
        evaluate_prediction(seg, [], spacing=c["spacing"])
    with pytest.raises(GeometryMismatch, match="same image grid"):
        evaluate_prediction(seg, [seg[:-1]], spacing=c["spacing"])
    with pytest.raises(GeometryMismatch, match="probabilities have shape"):
        evaluate_prediction(seg, [seg], spacing=c["spacing"], probabilities=c["probabilities"][:, :-1])
    with pytest.raises(InvalidInput, match="float32 values"):
        evaluate_prediction(seg.astype(np.float32), [seg], spacing=c["spacing"])
    with pytest.raises(InvalidInput, match="no organ label"):
        evaluate_prediction(np.zeros_like(seg), [np.zeros_like(seg)], spacing=c["spacing"])


def test_organ_table_takes_one_aggregate_per_cell(phantom_case):
    c = phantom_case
    rows = evaluate_case(c["probabilities"], c["raters"], spacing=c["spacing"], labels=c["labels"]).rows
    metrics, table = organ_table(rows)
    assert metrics[:3] == ["dice_consensus", "dice", "hd95"] and "auroc" in metrics
    assert [organ for organ, _ in table] == [*c["labels"], "all"]
    liver = dict(table)["liver"]
    assert liver["dice"]["rater"] == "mean" and liver["dice_consensus"]["rater"] == "consensus"
    assert "dice" not in dict(table)["all"] and dict(table)["all"]["auroc"]["rater"] == "pooled"


def test_segmentation_layer_carries_probabilities(phantom_case):
    study = phantom_case["study"]
    p = phantom_case["probabilities"]
    _, kwargs, kind = segmentation_layer(study.truth.data, study.truth, labels=study.labels, probabilities=p)
    assert kind == "labels" and kwargs["metadata"]["segunc_probabilities"] is p
    _, kwargs, _ = segmentation_layer(study.truth.data, study.truth)
    assert "segunc_probabilities" not in kwargs["metadata"]

"""Layer tuples for napari: colormaps, contrast limits in nats, mm scale, no napari import needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_segunc.uncertainty import EnsembleAccumulator
from napari_segunc.uncertainty.layers import ensemble_layers, map_layer
from napari_segunc.volume import Volume


@pytest.fixture
def maps_and_grid():
    rng = np.random.default_rng(0)
    acc = EnsembleAccumulator()
    for i in range(3):
        p = rng.dirichlet([1, 1, 1], size=4 * 5 * 6).T.reshape(3, 4, 5, 6).astype(np.float32)
        acc.add(p, name=str(i), group="r1" if i < 2 else "r2")
    grid = Volume(np.zeros((4, 5, 6), np.int16), spacing=(3.0, 0.8, 0.7), origin=(-10.0, 20.0, 5.0))
    return acc, grid


def test_ensemble_layers(maps_and_grid):
    acc, grid = maps_and_grid
    layers = ensemble_layers(acc.result(), grid, labels={"liver": 1, "spleen": 2})
    kinds = [(kw["name"], t) for _, kw, t in layers]
    assert kinds == [
        ("segmentation", "labels"),
        ("predictive entropy", "image"),
        ("expected entropy (aleatoric)", "image"),
        ("mutual information (epistemic)", "image"),
    ]
    seg, ent, _, mi = layers
    assert ent[1]["colormap"] == "inferno" and mi[1]["colormap"] == "magma"
    assert ent[1]["contrast_limits"] == (0.0, pytest.approx(math.log(3)))
    assert 0 < mi[1]["contrast_limits"][1] <= math.log(3)
    assert ent[1]["blending"] == "additive" and ent[1]["scale"] == (3.0, 0.8, 0.7)
    assert ent[1]["translate"] == (-10.0, 20.0, 5.0) and ent[1]["metadata"]["segunc_unit"] == "nats"
    assert seg[1]["metadata"]["segunc_labels"] == {"liver": 1, "spleen": 2}
    group = ensemble_layers(acc.result("r1", normalized=True), grid, which=["member_disagreement"])
    assert [kw["name"] for _, kw, _ in group] == ["r1: segmentation", "r1: member disagreement"]
    assert group[1][1]["contrast_limits"] == (0.0, 1.0)


def test_normalized_limits_and_unknown_map(maps_and_grid):
    acc, grid = maps_and_grid
    _, kw, _ = map_layer("entropy", acc.result(normalized=True).entropy, grid, n_classes=3, normalized=True)
    assert kw["contrast_limits"] == (0.0, 1.0) and kw["metadata"]["segunc_unit"] == "normalised"
    with pytest.raises(ValueError, match="Unknown map 'nope'"):
        ensemble_layers(acc.result(), grid, which=["nope"])


def test_rater_layers_and_model_vs_raters_layer():
    from napari_segunc.phantom import make_phantom
    from napari_segunc.uncertainty import analyze_raters, model_vs_raters
    from napari_segunc.uncertainty.layers import model_vs_raters_layer, rater_layers

    study = make_phantom(seed=1, shape=(20, 40, 48))
    analysis = analyze_raters(study.raters, labels=study.labels)
    layers = rater_layers(analysis, study.image)
    assert [(kw["name"], t) for _, kw, t in layers] == [
        ("raters: rater vote entropy", "image"),
        ("raters: consensus", "labels"),
        ("raters: dissensus", "labels"),
        ("raters: majority vote", "labels"),
        ("raters: STAPLE", "labels"),
    ]
    assert layers[0][1]["contrast_limits"] == (0.0, pytest.approx(math.log(6)))
    assert layers[2][1]["metadata"]["segunc_labels"]["pancreas"] == 5
    codes = model_vs_raters(study.truth.data, analysis)
    data, kw, kind = model_vs_raters_layer(codes, study.image)
    assert kind == "labels" and kw["colormap"][1] == "red" and data is codes

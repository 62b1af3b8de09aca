"""End to end, as a reviewer works: open the phantom → run the demo ensemble → jump to the first region of the review
queue → a MedSAM2 box (randomly initialised MedSAM2-architecture model) → accept → undo → accept again → export; the
exported files are re-read and checked against what the viewer showed."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_segunc._qt._session import find_review  # noqa: E402
from napari_segunc._qt.ensemble import EnsembleWidget  # noqa: E402
from napari_segunc._qt.export import ExportWidget  # noqa: E402
from napari_segunc._qt.medsam2 import MedSAM2Widget  # noqa: E402
from napari_segunc._qt.open_study import OpenStudyWidget  # noqa: E402
from napari_segunc._qt.uncertainty import UncertaintyWidget  # noqa: E402
from napari_segunc.inference.medsam2 import build_model  # noqa: E402
from napari_segunc.io import read_volume  # noqa: E402
from napari_segunc.phantom import LABELS  # noqa: E402
from napari_segunc.prompts import load_prompts  # noqa: E402

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]


def test_a_whole_review_session(make_napari_viewer, qtbot, wait_idle, tmp_path):
    viewer = make_napari_viewer(show=True)

    # open
    study = OpenStudyWidget(viewer)
    viewer.window.add_dock_widget(study, name="Open study")
    study.load_phantom(seed=0)
    wait_idle(study)
    image_layer = study.image_layer
    assert image_layer.data.shape == (48, 112, 144)

    # ensemble
    ens = EnsembleWidget(viewer)
    viewer.window.add_dock_widget(ens, name="Ensemble")
    ens.device_combo.setCurrentIndex(ens.device_combo.findData("cpu"))
    ens.mirror_check.setChecked(False)
    ens.run()
    qtbot.waitUntil(lambda: not ens.busy and "ensemble predictive entropy" in viewer.layers, timeout=300_000)
    seg = np.asarray(viewer.layers["ensemble segmentation"].data)
    assert set(np.unique(seg)) == {0, *LABELS.values()}

    # review queue → jump to the most uncertain region
    unc = UncertaintyWidget(viewer)
    viewer.window.add_dock_widget(unc, name="Uncertainty & raters")
    unc.maps.map_combo.setCurrentText("ensemble predictive entropy")
    unc.find_regions()
    qtbot.waitUntil(lambda: not unc.busy and bool(unc.regions), timeout=60_000)
    first = unc.regions[0]
    unc.jump_to(0)
    assert viewer.dims.current_step[0] == first.peak_slice

    # MedSAM2: boxes for two organs from the ensemble's segmentation, run, accept, undo, accept one again
    torch.manual_seed(5)
    ckpt = tmp_path / "random_medsam2.pt"
    torch.save({"model": build_model("medsam2", image_size=64).state_dict()}, ckpt)
    med = MedSAM2Widget(viewer)
    viewer.window.add_dock_widget(med, name="MedSAM2")
    med.image_size = 64
    med.checkpoint_edit.setText(str(ckpt))
    med.device_combo.setCurrentText("cpu")
    med.boxes_from_mask("ensemble segmentation", labels={"spleen": 4, "kidney_left": 3}, strategy="B")
    med.run()
    wait_idle(med, timeout=120_000)
    qtbot.waitUntil(lambda: "medsam2 segmentation" in viewer.layers, timeout=10_000)
    result = np.asarray(viewer.layers["medsam2 segmentation"].data)
    organs = {"spleen": 4, "kidney_left": 3}
    found = [name for name, v in organs.items() if (result == v).any()]
    assert found, "the random model found no organ at all"
    med.accept()
    state = find_review(viewer, image_layer)
    accepted = np.asarray(state.layer.data).copy()
    for v in organs.values():
        assert np.array_equal(accepted == v, result == v)
    assert med.undo() == f"accept MedSAM2 {', '.join(found)}" and not np.asarray(state.layer.data).any()
    med.accept([found[0]])
    assert state.history.descriptions == ["boxes from ensemble segmentation", f"accept MedSAM2 {found[0]}"]
    final = np.asarray(state.layer.data).copy()
    assert np.array_equal(final > 0, result == organs[found[0]]) and final.any()

    # export, then read everything back
    exp = ExportWidget(viewer)
    viewer.window.add_dock_widget(exp, name="Export")
    planned = exp.export(tmp_path / "out")
    wait_idle(exp)
    assert exp.written == planned and all(p.exists() for p in planned.values())
    labels = read_volume(planned["labels"], kind="labels")
    assert np.array_equal(labels.data, final)
    assert labels.shape == image_layer.data.shape
    np.testing.assert_allclose(labels.spacing, image_layer.scale)
    entropy = next(p for k, p in planned.items() if k.startswith("map:") and "predictive entropy" in k)
    np.testing.assert_array_equal(read_volume(entropy).data, viewer.layers["ensemble predictive entropy"].data)
    boxes = load_prompts(planned["prompts"])
    assert [o.name for o in boxes.organs] == ["spleen", "kidney_left"] and boxes.organs == med.prompts().organs
    from PIL import Image as PILImage

    with PILImage.open(planned["report"]) as page:
        assert page.size[0] > 1000 and page.size[1] > 700
    # the autosaved session holds the same annotation
    state.store.flush()
    meta = json.loads((state.store.folder / "session.json").read_text())
    assert meta["history"][-1] == f"accept MedSAM2 {found[0]}"
    assert np.array_equal(state.store.load(state.annotation.grid)[0], final)

"""End to end, as a reviewer works, every dock opened from the Plugins menu (napari's `PublicOnlyProxy` viewer): open
the phantom → run the demo ensemble → analyse the raters → compare them side by side → jump to the first region of
the review queue → MedSAM2 boxes from the ensemble's segmentation (randomly initialised MedSAM2-architecture model)
→ accept → undo → redo → accept one organ again → export; the exported files are re-read and checked against the
annotation, and no dialog appears in a session that did not restart."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_segunc._qt._docks import open_dock  # noqa: E402
from napari_segunc._qt._session import find_review  # noqa: E402
from napari_segunc._qt._view import grid_of  # noqa: E402
from napari_segunc.inference.medsam2 import build_model  # noqa: E402
from napari_segunc.io import read_volume  # noqa: E402
from napari_segunc.phantom import LABELS  # noqa: E402
from napari_segunc.prompts import load_prompts  # noqa: E402

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]


def _no_dialogs(monkeypatch) -> list[str]:
    """Every modal dialog the docks could open fails the test (and is recorded)."""
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    asked: list[str] = []

    def refuse(*args, **_kwargs):
        asked.append(" | ".join(str(a) for a in args[1:3]))
        raise AssertionError(f"a dialog appeared: {asked[-1]}")

    for name in ("question", "warning", "information", "critical"):
        monkeypatch.setattr(QMessageBox, name, refuse)
    for name in ("getOpenFileName", "getOpenFileNames", "getExistingDirectory", "getSaveFileName"):
        monkeypatch.setattr(QFileDialog, name, refuse)
    return asked


def _cells(shot: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    rows, cols = shape
    h, w = shot.shape[0] // rows, shot.shape[1] // cols
    return [shot[r * h : (r + 1) * h, c * w : (c + 1) * w, :3] for r in range(rows) for c in range(cols)]


def test_a_whole_review_session(make_napari_viewer, qtbot, wait_idle, tmp_path, monkeypatch):
    asked = _no_dialogs(monkeypatch)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1600, 1000)

    # open
    _, study = open_dock(viewer, "Open study")
    study.load_phantom(seed=0)
    wait_idle(study)
    image_layer = study.image_layer
    assert image_layer.data.shape == (48, 112, 144)

    # ensemble
    _, ens = open_dock(viewer, "Ensemble")
    ens.device_combo.setCurrentIndex(ens.device_combo.findData("cpu"))
    ens.mirror_check.setChecked(False)
    ens.run()
    qtbot.waitUntil(lambda: not ens.busy and "ensemble predictive entropy" in viewer.layers, timeout=300_000)
    seg = np.asarray(viewer.layers["ensemble segmentation"].data)
    assert set(np.unique(seg)) == {0, *LABELS.values()}
    # readable by default: the CT, the raters' outlines, the segmentation's outlines and the predictive entropy
    shown = {x.name for x in viewer.layers if x.visible}
    assert shown == {
        "phantom_ct",
        "rater_1",
        "rater_2",
        "rater_3",
        "ensemble segmentation",
        "ensemble predictive entropy",
    }, shown
    assert viewer.layers["ensemble segmentation"].contour == 1 and viewer.layers["rater_2"].contour == 1
    assert viewer.layers["ensemble predictive entropy"].colorbar.visible
    assert "nats" in viewer.canvas.overlays["text"].text and "rater_2 magenta" in viewer.canvas.overlays["text"].text

    # raters: analysed (they are raters because they were loaded as raters), then side by side
    _, unc = open_dock(viewer, "Uncertainty & raters")
    assert unc.rater_list.checked() == ["rater_1", "rater_2", "rater_3"]
    assert unc.seg_combo.currentText() == "ensemble segmentation"
    unc.analyse_raters()
    qtbot.waitUntil(lambda: not unc.busy and "model vs raters" in viewer.layers, timeout=120_000)
    assert len([x for x in viewer.layers if x.visible]) <= 8
    unc.set_compare(True, names=["rater_1", "rater_2", "rater_3", "ensemble segmentation"])
    qtbot.wait(300)
    shape = tuple(grid_of(viewer).shape)
    assert grid_of(viewer).enabled and shape[0] * shape[1] >= 4
    cells = _cells(viewer.screenshot(canvas_only=True, flash=False), shape)
    assert all(cell.std() > 10 for cell in cells[:4]), [round(float(c.std()), 1) for c in cells]  # no black cell
    unc.set_compare(False)
    assert not grid_of(viewer).enabled and {x.name for x in viewer.layers if x.visible} >= shown

    # review queue → jump to the most uncertain region
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
    _, med = open_dock(viewer, "MedSAM2")
    med.image_size = 64
    med.checkpoint_edit.setText(str(ckpt))
    med.device_combo.setCurrentText("cpu")
    assert med.mask_combo.currentText() == "ensemble segmentation"  # the default: the model's output
    assert med.image_combo.currentText() == "phantom_ct"  # not a map, not a compare copy
    med.boxes_from_mask(labels={"spleen": 4, "kidney_left": 3}, strategy="B")
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
    assert med.redo() is not None and np.array_equal(np.asarray(state.layer.data), accepted)
    assert find_review(viewer, viewer.layers["phantom_ct"]).layer.name == state.layer.name  # one annotation
    assert med.undo() is not None and not np.asarray(state.layer.data).any()
    med.accept([found[0]])
    assert state.history.descriptions == ["boxes from ensemble segmentation", f"accept MedSAM2 {found[0]}"]
    assert len([x for x in viewer.layers if x.name.startswith("working annotation")]) == 1
    final = np.asarray(state.layer.data).copy()
    assert np.array_equal(final > 0, result == organs[found[0]]) and final.any()

    # export, then read everything back
    _, exp = open_dock(viewer, "Export")
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
    assert asked == []

"""The "MedSAM2" widget in a real napari viewer with a randomly initialised MedSAM2-architecture checkpoint (64 px):
boxes from a mask, run, rerun of the edited organ only, accept into the working annotation, undo/redo, autosave and
restore, the remembered checkpoint, bad input, and no GUI stall while MedSAM2 runs."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_segunc._qt._docks import open_dock  # noqa: E402
from napari_segunc._qt._session import find_review, review_for  # noqa: E402
from napari_segunc.inference.device import torch_threads  # noqa: E402
from napari_segunc.inference.medsam2 import build_model, load_model  # noqa: E402
from napari_segunc.io._npe2 import volume_layer_data  # noqa: E402
from napari_segunc.progress import run_job  # noqa: E402
from napari_segunc.prompts import Strategy, prompts_from_mask  # noqa: E402
from napari_segunc.prompts.cascade import MedSAM2Session  # noqa: E402
from napari_segunc.review import SessionStore  # noqa: E402
from napari_segunc.settings import get_setting  # noqa: E402

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]
KIDNEYS = {"kidney_right": 2, "kidney_left": 3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("medsam2_widget") / "random_medsam2.pt"
    torch.save({"model": build_model("medsam2", image_size=64).state_dict()}, path)
    return path


@pytest.fixture
def medsam2_widget(make_napari_viewer, phantom_study, checkpoint):
    def factory():
        viewer = make_napari_viewer(show=True)
        data, kwargs, _ = volume_layer_data(phantom_study.image)
        viewer.add_image(data, **kwargs)
        data, kwargs, _ = volume_layer_data(phantom_study.truth)
        kwargs["name"] = "truth"
        viewer.add_labels(data, **kwargs)
        _, widget = open_dock(viewer, "MedSAM2")
        widget.image_size = 64
        widget.checkpoint_edit.setText(str(checkpoint))
        widget.device_combo.setCurrentText("cpu")
        widget.image_combo.setCurrentText(phantom_study.image.name)
        return viewer, widget

    return factory


class _Gaps:
    """Longest gap between ticks of a 10 ms QTimer while a worker runs (the GUI thread's stalls)."""

    def __init__(self) -> None:
        self.last, self.worst, self.running = time.perf_counter(), 0.0, False
        self.log: list = []
        self.t0 = self.last
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def start_running(self) -> None:
        """The worker's first report reached the GUI thread: from now on every gap counts (the click's own
        response — disabling the controls, a repaint — is the 'starting' phase, measured separately)."""
        if not self.running:
            self.starting = time.perf_counter() - self.t0
            self._tick()
            self.running = True

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.running:
            self.worst = max(self.worst, now - self.last)
            if now - self.last > 0.05:
                self.log.append((round(now - self.t0, 3), round(now - self.last, 3)))
        self.last = now


def test_boxes_run_accept_undo_and_rerun(medsam2_widget, qtbot, wait_idle, phantom_study, checkpoint):
    viewer, widget = medsam2_widget()
    truth = phantom_study.truth.data
    widget.boxes_from_mask("truth", labels=KIDNEYS, strategy="B")
    expected = prompts_from_mask(truth, KIDNEYS, strategy=Strategy.B)
    assert [la.name for la in widget.organ_layers()] == ["boxes: kidney_right", "boxes: kidney_left"]
    assert widget.prompts().organs == expected.organs
    assert widget.organ_table.rowCount() == 2 and widget.organ_table.item(1, 3).text() == "3"
    # each organ's row shows its colour, the colour of its boxes (kidney_right: label 2 → green)
    assert widget.organ_table.item(0, 0).background().color().name() == "#3cb44b"
    assert (
        widget.organ_table.item(0, 0).background().color().name()
        != widget.organ_table.item(1, 0).background().color().name()
    )

    qtbot.wait(300)  # let napari finish drawing the new box layers: the probe measures the MedSAM2 job alone
    gaps = _Gaps()
    # ... and not the dock's own progress repaints: each is a recomposition of the whole window (45-90 ms with
    # software OpenGL at 1600x1000, whatever the job; `_jobs.DockJob` shows progress at most every 0.3 s, in one
    # repaint, see test_jobs.py). The reports are counted instead.
    reports = []
    widget._progressed = lambda report: (gaps.start_running(), reports.append(report))
    widget._done = _wrap(widget._done, lambda: setattr(gaps, "running", False), before=True)
    width = widget.width()
    widget.run()
    wait_idle(widget, timeout=120_000)
    gaps.timer.stop()
    # the progress messages did not widen the dock (that resizes napari's canvas: a redraw, 0.15 s in software GL)
    assert widget.width() == width
    assert gaps.worst < 0.1, f"the GUI thread stalled {gaps.worst * 1000:.0f} ms while MedSAM2 ran: {gaps.log}"
    assert gaps.starting < 1.0  # from the click to the first report: controls disabled, model loading started
    assert reports[0].message == "loading the model" and len(reports) > 10  # a report a slice and organ
    qtbot.waitUntil(lambda: "medsam2 segmentation" in viewer.layers, timeout=10_000)
    seg = np.asarray(viewer.layers["medsam2 segmentation"].data)
    # the same checkpoint through the engine directly gives the same labels
    model = load_model(checkpoint, image_size=64, device="cpu")
    with torch_threads(max(1, len(os.sched_getaffinity(0)) - 1)):  # as the widget's worker (same float sums)
        session = MedSAM2Session(model, phantom_study.image.data, window=(-160.0, 240.0))
        direct = run_job(session.cascade_job(expected, "B"))
    assert np.array_equal(seg, direct.final.fused.segmentation)
    entropy_layer = next(la for la in viewer.layers if la.name.startswith("medsam2") and "entropy" in la.name)
    np.testing.assert_allclose(entropy_layer.data, direct.final.fused.entropy, atol=1e-6)
    assert get_setting("medsam2_checkpoint") == str(checkpoint)

    # accept → the working annotation holds the kidneys; undo / redo
    widget.accept()
    state = find_review(viewer, viewer.layers[phantom_study.image.name])
    ann = np.asarray(state.layer.data)
    for label in KIDNEYS.values():
        assert np.array_equal(ann == label, seg == label)
    assert state.history.descriptions[-1] == "accept MedSAM2 kidney_right, kidney_left"
    assert widget.undo() == "accept MedSAM2 kidney_right, kidney_left" and not np.asarray(state.layer.data).any()
    assert widget.redo() is not None and np.array_equal(np.asarray(state.layer.data), ann)
    state.store.flush()
    saved, saved_prompts = state.store.load(state.annotation.grid)
    assert np.array_equal(saved, ann) and saved_prompts.organs == expected.organs

    # a box edit is one undo step; the rerun propagates that organ only and encodes nothing new
    runs = widget._holder["session"].cache.encoder_runs
    layer = widget.boxes.layer("kidney_left")
    before = [r.copy() for r in layer.data]
    moved = [r.copy() for r in layer.data]
    moved[1][:, 2] += 2
    layer.data = moved
    assert state.history.descriptions[-1] == "edit boxes"
    assert widget.prompts().organ("kidney_left").boxes[1].x_min == expected.organ("kidney_left").boxes[1].x_min + 2
    widget.run()
    wait_idle(widget, timeout=120_000)
    qtbot.waitUntil(lambda: "propagated kidney_left;" in widget.status.text(), timeout=10_000)
    assert widget._holder["session"].cache.encoder_runs == runs
    widget.run(run_all=True)  # every organ again, still no slice encoded again
    wait_idle(widget, timeout=120_000)
    qtbot.waitUntil(lambda: "propagated kidney_right, kidney_left;" in widget.status.text(), timeout=10_000)
    assert widget._holder["session"].cache.encoder_runs == runs
    assert widget.undo() == "edit boxes"
    assert all(np.array_equal(a, b) for a, b in zip(widget.boxes.layer("kidney_left").data, before, strict=True))

    # what a person sees: the kidney boxes (green edge for label 2) on the key slice
    for layer in viewer.layers:
        layer.visible = layer.name.startswith(("boxes", phantom_study.image.name))
    viewer.reset_view()
    viewer.dims.set_current_step(0, expected.organ("kidney_right").key_z)
    qtbot.wait(100)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    green = (shot[..., 1] > 150) & (shot[..., 0] < 120) & (shot[..., 2] < 120)
    assert green.sum() > 20


def test_restore_session_and_bad_input(medsam2_widget, qtbot, wait_idle, phantom_study, tmp_path):
    viewer, widget = medsam2_widget()
    image_layer = viewer.layers[phantom_study.image.name]
    state = review_for(viewer, image_layer)
    mask = phantom_study.truth.data == 1
    state.annotation.set_organ(mask, 1, description="accept liver")
    state.store.flush()
    assert SessionStore.for_image(state.annotation.grid).exists()

    # a second viewer on the same image is offered the session back
    viewer2, _ = medsam2_widget()
    asked = []
    restored = review_for(
        viewer2, viewer2.layers[phantom_study.image.name], ask_restore=lambda store: asked.append(store) or True
    )
    assert len(asked) == 1 and np.array_equal(np.asarray(restored.layer.data) == 1, mask)

    # no boxes: a clear message, nothing runs
    widget.run()
    assert not widget.busy and "Draw at least one box" in widget.status.text()
    # a corrupt checkpoint: the worker's error is shown and the widget is usable again
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    widget.checkpoint_edit.setText(str(bad))
    widget.boxes_from_mask("truth", labels={"spleen": 4}, strategy="A")
    widget.run()
    wait_idle(widget, timeout=60_000)
    assert "bad.pt is not a PyTorch checkpoint" in widget.status.text()
    assert widget.run_button.isEnabled()
    widget.accept()
    assert "Run MedSAM2 first" in widget.status.text()


def _wrap(method, hook, *, before: bool = False):
    def wrapped(*args, **kwargs):
        if before:
            hook()
        out = method(*args, **kwargs)
        if not before:
            hook()
        return out

    return wrapped


def test_cancel_changes_nothing(medsam2_widget, qtbot, wait_idle):
    viewer, widget = medsam2_widget()
    widget.boxes_from_mask("truth", labels={"liver": 1}, strategy="B")
    widget.run()
    assert widget.busy and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.status.text().startswith("MedSAM2: liver, slice"), timeout=60_000)
    widget.cancel()
    wait_idle(widget, timeout=60_000)
    assert widget.status.text() == "Cancelled: nothing changed."
    assert "medsam2 segmentation" not in viewer.layers and widget.result is None
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_boxes_from_atlas(medsam2_widget, qtbot, wait_idle, phantom_study):
    from napari_segunc.phantom import LABELS, make_phantom
    from napari_segunc.prompts.atlas import atlas_prompts

    viewer, widget = medsam2_widget()
    atlases = [(s.image, s.truth) for s in (make_phantom(seed=1, n_raters=1), make_phantom(seed=2, n_raters=1))]
    thresholds = dict.fromkeys(LABELS, 0.2)
    widget.boxes_from_atlas(atlases, dict(LABELS), thresholds=thresholds)
    assert widget.busy
    wait_idle(widget, timeout=120_000)
    expected = atlas_prompts(phantom_study.image, atlases, LABELS, thresholds=thresholds, workers=0)
    assert widget.prompts().organs == expected.prompts.organs
    scores = [la for la in viewer.layers if la.name.startswith("atlas score ")]
    assert [la.name for la in scores] == [f"atlas score {n}" for n in LABELS]
    for layer in scores:
        name = layer.metadata["segunc_atlas_score"]
        np.testing.assert_array_equal(layer.data, expected.score_maps[name])
        assert set(np.unique(layer.data)) <= {0.0, 0.5, 1.0}  # 2 atlases, nearest warp
    assert "from 2 atlas(es)" in widget.status.text()
    assert widget.undo() == "boxes from atlas" and widget.organ_layers() == []


def _press(viewer, qtbot, key, modifier=None):
    """A key pressed on napari's canvas, as a person presses it (the active layer's keys, then the viewer's)."""
    from qtpy.QtCore import Qt

    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, key, modifier if modifier is not None else Qt.KeyboardModifier.NoModifier)
    qtbot.wait(20)


def test_clicks_rerun_undo_accept_and_the_keys(medsam2_widget, qtbot, wait_idle, phantom_study, checkpoint):
    """Boxes, run, then the keyboard: P to click, T to flip the polarity, a click reruns that organ from its kept
    state (the same labels as the engine given the same prompts), Ctrl+Z / Ctrl+Shift+Z, G to the most uncertain
    place, Enter to accept; the ensemble disagreement map; the keys released when the dock closes."""
    from qtpy.QtCore import Qt

    from napari_segunc.prompts.corrections import Correction
    from napari_segunc.prompts.simulate import next_click
    from napari_segunc.uncertainty.layers import segmentation_layer

    viewer, widget = medsam2_widget()
    truth = phantom_study.truth.data
    ensemble = (truth == 3).astype(np.uint8) * 3  # an "ensemble segmentation" of the left kidney
    ensemble[:, :, : ensemble.shape[2] // 2] = 0
    data, kwargs, _ = segmentation_layer(ensemble, phantom_study.image, name="ensemble segmentation")
    viewer.add_labels(data, **kwargs)
    widget.boxes_from_mask("truth", labels={"kidney_left": 3}, strategy="A")
    assert widget.boxes.clicks_layer("kidney_left") is None  # made on the organ's first click (P)
    widget.run()
    wait_idle(widget, timeout=120_000)
    qtbot.waitUntil(lambda: widget.result is not None and "Most uncertain" in widget.status.text(), timeout=10_000)
    runs = widget._holder["session"].cache.encoder_runs
    first = widget.result.final.fused.segmentation.copy()

    # the ensemble-vs-MedSAM2 map: 1 where only the ensemble says kidney, 2 where only MedSAM2 does
    diff = np.asarray(viewer.layers["ensemble vs medsam2"].data)
    assert np.array_equal(diff == 1, (ensemble == 3) & (first != 3))
    assert np.array_equal(diff == 2, (first == 3) & (ensemble != 3))

    # G: to the organ's most uncertain slice
    viewer.layers.selection.active = viewer.layers[phantom_study.image.name]
    _press(viewer, qtbot, "g")
    z_uncertain = widget.next_place[0]
    assert viewer.dims.current_step[0] == z_uncertain

    # P: click mode on the organ's clicks layer (not napari's polygon tool of its boxes layer)
    widget.organ_table.selectRow(0)
    viewer.layers.selection.active = widget.boxes.layer("kidney_left")
    _press(viewer, qtbot, "p")
    clicks = viewer.layers.selection.active
    assert clicks.name == "clicks: kidney_left" and clicks.mode == "add"
    assert widget.boxes.layer("kidney_left").mode != "add_polygon"

    # the simulated annotator's click on this result; T when it must be negative
    click = next_click(first == 3, truth == 3)
    if not click.positive:
        _press(viewer, qtbot, "t")
    assert widget.boxes.positive == click.positive
    clicks.add([click.z, click.y, click.x])  # what napari's add mode does with a mouse click
    assert clicks.features["positive"].tolist() == [click.positive]
    state = find_review(viewer, viewer.layers[phantom_study.image.name])
    assert state.history.descriptions[-1] == "click on kidney_left"
    qtbot.waitUntil(lambda: widget.busy, timeout=5_000)  # the click reran the organ by itself
    wait_idle(widget, timeout=120_000)
    qtbot.waitUntil(lambda: "propagated kidney_left;" in widget.status.text(), timeout=10_000)
    assert widget._holder["session"].cache.encoder_runs == runs  # no slice encoded again
    corrected = widget.prompts()
    organ = corrected.organ("kidney_left")
    assert organ.corrections == (Correction(clicks=(click,)),)
    # the same prompts through the engine directly: the same labels
    model = load_model(checkpoint, image_size=64, device="cpu")
    with torch_threads(max(1, len(os.sched_getaffinity(0)) - 1)):
        direct = run_job(MedSAM2Session(model, phantom_study.image.data, window=(-160.0, 240.0)).segment_job(corrected))
    seg = np.asarray(viewer.layers["medsam2 segmentation"].data)
    assert np.array_equal(seg, direct.fused.segmentation)
    assert not np.array_equal(seg, first) or np.array_equal(direct.fused.segmentation, first)

    # a second click after the run is the next correction; Ctrl+Z removes it, Ctrl+Shift+Z puts it back
    widget.rerun_check.setChecked(False)
    clicks.add([click.z, max(click.y - 1, 0), click.x])
    assert len(widget.prompts().organ("kidney_left").corrections) == 2
    viewer.layers.selection.active = viewer.layers[phantom_study.image.name]
    _press(viewer, qtbot, "z", Qt.KeyboardModifier.ControlModifier)
    assert len(clicks.data) == 1 and len(widget.prompts().organ("kidney_left").corrections) == 1
    _press(viewer, qtbot, "z", Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert len(clicks.data) == 2
    _press(viewer, qtbot, "z", Qt.KeyboardModifier.ControlModifier)
    assert len(clicks.data) == 1

    # Enter: accept the corrected result into the annotation; the prompts with the click are autosaved
    _press(viewer, qtbot, Qt.Key.Key_Return)
    assert np.array_equal(np.asarray(state.layer.data) == 3, seg == 3)
    state.store.flush()
    _, saved = state.store.load(state.annotation.grid)
    assert saved.organ("kidney_left").corrections == (Correction(clicks=(click,)),)

    # M: the next organ, with the same tool (clicking)
    widget.add_organ("spleen", 4)
    widget.organ_table.selectRow(0)
    viewer.layers.selection.active = clicks
    _press(viewer, qtbot, "m")
    assert viewer.layers.selection.active.name == "clicks: spleen" and viewer.layers.selection.active.mode == "add"
    assert widget.organ_table.selectionModel().selectedRows()[0].row() == 1

    # the dock shows its keys, and releases them when it closes
    assert "P click" in widget.keys_label.text() and "T +/−" in widget.keys_label.text()
    assert any("T" in str(k) for k in viewer.keymap)
    viewer.window.remove_dock_widget("all")
    qtbot.wait(50)
    assert not any(str(k) in ("T", "G", "M") for k in viewer.keymap)
    assert not any(str(k) in ("P", "T") for k in clicks.keymap)


def test_an_organ_started_from_a_mask_slice(medsam2_widget, qtbot, wait_idle, phantom_study, checkpoint):
    """ "Ensemble first, then correct": an organ with no box starts from one slice of a labels layer (SAM2's mask
    prompt) over that layer's slice range; the run gives the engine's labels for the same prompts; undo removes it."""
    viewer, widget = medsam2_widget()
    truth = phantom_study.truth.data
    widget.add_organ("spleen", 4)
    widget.organ_table.selectRow(0)
    zs = np.flatnonzero((truth == 4).any(axis=(1, 2)))
    z = int(zs[len(zs) // 2])
    widget.rerun_check.setChecked(False)
    widget.start_from_mask_slice("truth", z=z)
    organ = widget.prompts().organ("spleen")
    (init,) = organ.corrections
    assert organ.boxes == () and init.mask is not None and init.z == z
    assert np.array_equal(init.mask.mask, truth[z] == 4) and (organ.z_min, organ.z_max) == (zs[0], zs[-1])
    state = find_review(viewer, viewer.layers[phantom_study.image.name])
    assert state.history.descriptions[-1] == f"start spleen from truth, slice {z}"
    widget.run()
    wait_idle(widget, timeout=120_000)
    qtbot.waitUntil(lambda: "propagated spleen;" in widget.status.text(), timeout=10_000)
    model = load_model(checkpoint, image_size=64, device="cpu")
    with torch_threads(max(1, len(os.sched_getaffinity(0)) - 1)):
        session = MedSAM2Session(model, phantom_study.image.data, window=(-160.0, 240.0))
        direct = run_job(session.segment_job(widget.prompts()))
    assert np.array_equal(np.asarray(viewer.layers["medsam2 segmentation"].data), direct.fused.segmentation)
    assert widget.undo() == f"start spleen from truth, slice {z}"
    assert "Draw at least one box or click" in _run_refused(widget)
    # a slice where the mask has no spleen: one sentence, nothing added
    widget.start_from_mask_slice("truth", z=0)
    assert "has no spleen (label 4) on slice 0" in widget.status.text()


def _run_refused(widget) -> str:
    widget.run()
    assert not widget.busy
    return widget.status.text()


def test_the_most_uncertain_place_equals_a_brute_force_search():
    from napari_segunc._qt._click_tools import MARGIN, most_uncertain_place
    from napari_segunc.prompts import Box, OrganPrompt

    rng = np.random.default_rng(7)
    entropy = rng.random((20, 40, 50)).astype(np.float32)
    seg = np.zeros((20, 40, 50), np.uint8)
    seg[5:12, 10:20, 15:30] = 3
    organ = OrganPrompt(3, "kidney_left", 4, 14, (Box(8, 14, 9, 31, 22),))
    z, y, x, total = most_uncertain_place(entropy, seg, organ)
    y0, y1 = max(0, 9 - MARGIN), min(40, 22 + MARGIN + 1)  # boxes and mask span y 9..22, x 14..31
    x0, x1 = max(0, 14 - MARGIN), min(50, 31 + MARGIN + 1)
    sums = {k: sum(float(entropy[k, i, j]) for i in range(y0, y1) for j in range(x0, x1)) for k in range(4, 15)}
    best = max(sums, key=sums.get)
    assert z == best and total == pytest.approx(sums[best], rel=1e-6)
    w = entropy[best, y0:y1, x0:x1].astype(np.float64)
    cy = sum(i * w[i - y0, j - x0] for i in range(y0, y1) for j in range(x0, x1)) / w.sum()
    cx = sum(j * w[i - y0, j - x0] for i in range(y0, y1) for j in range(x0, x1)) / w.sum()
    assert (y, x) == (round(cy), round(cx))
    assert most_uncertain_place(np.zeros_like(entropy), seg, organ) is None  # nothing uncertain: nowhere to go

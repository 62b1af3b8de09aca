"""The "Ensemble" widget in a real napari viewer: the shipped demo ensemble on the phantom, cancel, bad input."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_segunc._qt._docks import open_dock
from napari_segunc._qt._worker import NO_AUTOMATIC_FULL_COLLECTION
from napari_segunc._qt.ensemble import FILE, FOLDERS
from napari_segunc.inference.demo_models import demo_ensemble_file
from napari_segunc.inference.nnunet import predict_members, read_ensemble_file
from napari_segunc.io._npe2 import volume_layer_data
from napari_segunc.phantom import LABELS
from napari_segunc.progress import run_job
from napari_segunc.uncertainty.pipeline import accumulate

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]

MAP_NAMES = ["segmentation", "predictive entropy", "expected entropy (aleatoric)", "mutual information (epistemic)"]


@pytest.fixture
def ensemble_widget(make_napari_viewer, phantom_study):
    def factory(*, with_image: bool = True):
        viewer = make_napari_viewer()
        if with_image:
            data, kwargs, _ = volume_layer_data(phantom_study.image)
            viewer.add_image(data, **kwargs)
        _, widget = open_dock(viewer, "Ensemble")
        widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
        return viewer, widget

    return factory


class _StallProbe:
    """Gaps between ticks of a 10 ms QTimer (how long the GUI thread's event loop was held up), per phase: starting
    (the dock disables its controls: a repaint), running (from the worker's first report to its result: what the
    worker costs the GUI thread) and adding (the layers go in)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.gaps: dict[str, float] = {"starting": 0.0, "running": 0.0, "adding": 0.0}
        self.phase = "starting"
        self.t0 = self.last
        self.log: list = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self.last > 0.05:
            self.log.append((self.phase, round(now - self.t0, 3), round(now - self.last, 3)))
        self.gaps[self.phase] = max(self.gaps[self.phase], now - self.last)
        self.last = now

    def reported(self, progress) -> None:
        self.log.append((round(time.perf_counter() - self.t0, 3), progress.message[:30]))
        if self.phase == "starting":
            self._tick()
            self.phase = "running"

    def results_arrived(self, _result) -> None:
        self._tick()
        self.phase = "adding"

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        return self.gaps


def test_demo_ensemble_on_the_phantom(ensemble_widget, qtbot, phantom_study):
    viewer, widget = ensemble_widget()
    assert widget.image_combo.currentText() == phantom_study.image.name
    widget.groups_check.setChecked(True)
    widget.mirror_check.setChecked(False)
    # The dock compiles the accumulator's numba kernels in another process when it opens (a compilation in the
    # worker froze the window for 0.4 s on a fresh install); a reader takes longer than that to press Run.
    assert widget.warm_up is not None and widget.warm_up.wait(timeout=300) == 0
    probe = _StallProbe()
    done = widget._done  # the probe's "adding" phase starts where the dock gets the result (before its first layer)
    widget._done = lambda result: (probe.results_arrived(result), done(result))
    widget.run()
    widget._worker.yielded.connect(probe.reported)
    # (cheap to check: gc.get_freeze_count() walks every frozen object, ~0.15 s here)
    assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL_COLLECTION, "full collections are not put off during the job"
    assert widget.busy and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    stalls = probe.stop()
    assert "Ensemble done: 6 member(s), 3 groups" in widget.status.text(), widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    names = [layer.name for layer in viewer.layers][1:]
    expected = [f"ensemble {n}" for n in MAP_NAMES]
    for group in ("rater1", "rater2", "rater3"):
        expected += [f"ensemble {group}: {n}" for n in MAP_NAMES]
    assert names == expected

    # The widget adds exactly what the engine computes (the same members, the same settings).
    members = read_ensemble_file(demo_ensemble_file())
    runs = predict_members(phantom_study.image, members, device="cpu", mirroring=False)
    acc, _, _ = run_job(accumulate(runs, class_variance=False))
    for group, prefix in (("all", "ensemble "), ("rater2", "ensemble rater2: ")):
        maps = acc.result(group)
        np.testing.assert_array_equal(viewer.layers[prefix + "segmentation"].data, maps.segmentation)
        np.testing.assert_allclose(viewer.layers[prefix + "predictive entropy"].data, maps.entropy, atol=1e-6)
        np.testing.assert_allclose(
            viewer.layers[prefix + "mutual information (epistemic)"].data, maps.mutual_information, atol=1e-6
        )
    seg = viewer.layers["ensemble segmentation"]
    image = viewer.layers[0]
    np.testing.assert_allclose(seg.scale, image.scale)
    np.testing.assert_allclose(seg.translate, image.translate)
    assert seg.metadata["segunc_labels"]["liver"] == LABELS["liver"]
    assert seg.metadata["segunc_geometry"] == image.metadata["segunc_geometry"]
    # the overall segmentation carries the mean probabilities (what the Metrics dock calibrates); groups do not
    np.testing.assert_allclose(seg.metadata["segunc_probabilities"], acc.result("all").mean_probabilities, atol=1e-6)
    assert "segunc_probabilities" not in viewer.layers["ensemble rater2: segmentation"].metadata
    # ... and each member's own label map counted per class (the Statistics table's spread of members' volumes)
    counted = {m: list(c) for m, c in acc.result("all").member_voxels.items()}
    assert seg.metadata["segunc_member_voxels"] == counted and len(counted) == 6
    assert list(viewer.layers["ensemble rater2: segmentation"].metadata["segunc_member_voxels"]) == [
        m for m in counted if m.startswith("rater2")
    ]

    # It segments: the liver against the phantom's truth, and entropy ≥ expected entropy ≥ 0 (MI ≥ 0).
    truth = phantom_study.truth.data == LABELS["liver"]
    pred = seg.data == LABELS["liver"]
    assert 2 * np.sum(truth & pred) / (truth.sum() + pred.sum()) > 0.9
    h = viewer.layers["ensemble predictive entropy"].data
    eh = viewer.layers["ensemble expected entropy (aleatoric)"].data
    assert np.all(h >= eh - 1e-5) and np.all(eh >= 0)
    # The GUI thread stayed responsive while the members ran in the worker (loading checkpoints, nnU-Net's
    # preprocessing, the network, the accumulator, the maps) ...
    # No gap of 100 ms or more. Before the old objects were frozen (`hold_old_objects_from_gc`), full garbage
    # collections in the worker at member boundaries held the GIL for 0.13-0.55 s (traced with gc.callbacks).
    held = stalls["running"] * 1000
    assert held < 100, f"event loop held up for {held:.0f} ms while running; reports and gaps: {probe.log}"
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[2] != NO_AUTOMATIC_FULL_COLLECTION, "outlived the job"
    # ... and the 16 layers went in one per turn of the event loop: the longest wait is napari drawing one new layer
    # (0.1-0.5 s with Mesa's software OpenGL, mostly for a labels layer), not all 16 at once (1.7 s measured). The
    # start costs one repaint of the window (disabled controls; ~0.08 s in software).
    assert stalls["adding"] < 1.0, (
        f"event loop held up for {stalls['adding'] * 1000:.0f} ms while adding layers: {probe.log}"
    )
    assert stalls["starting"] < 0.3, f"event loop held up for {stalls['starting'] * 1000:.0f} ms when starting"

    # What a reader sees on the liver's middle slice: the entropy overlay (inferno, additive) changes the picture on
    # the organ boundaries and nowhere else much.
    viewer.window.show()  # shown only now: screenshots of a hidden window are blank under Xvfb
    for layer in viewer.layers:
        layer.visible = layer is image or layer.name == "ensemble predictive entropy"
    viewer.dims.set_current_step(0, int(np.flatnonzero(truth.any(axis=(1, 2))).mean()))
    viewer.reset_view()
    qtbot.wait(300)
    with_map = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    viewer.layers["ensemble predictive entropy"].visible = False
    qtbot.wait(300)
    without = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    assert without.std() > 10, "the CT itself is not drawn"
    lit = np.abs(with_map - without).max(axis=-1) > 30
    assert 200 < lit.sum() < 0.5 * lit.size, f"{lit.sum()} pixels changed by the entropy overlay"


def test_cancel_adds_nothing(ensemble_widget, qtbot):
    viewer, widget = ensemble_widget()
    widget.mirror_check.setChecked(False)
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.maximum() > 1, timeout=60_000)  # the job has reported its members
    widget.cancel()
    t = time.perf_counter()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert time.perf_counter() - t < 30
    assert widget.status.text() == "Cancelled: nothing was added."
    assert len(viewer.layers) == 1
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_bad_input_keeps_the_gui_alive(ensemble_widget, qtbot, tmp_path, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", shown.append)
    viewer, widget = ensemble_widget(with_image=False)
    widget.run()  # no image
    assert not widget.busy and "Open an image first" in shown[-1]

    viewer, widget = ensemble_widget()
    widget.set_source(FILE, [tmp_path / "missing.json"])
    assert widget.path_edit.isEnabled()
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "missing.json" in shown[-1] and "missing.json" in widget.status.text()

    (tmp_path / "not_a_model").mkdir()
    widget.set_source(FOLDERS, [tmp_path / "not_a_model"])
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "not_a_model" in shown[-1] and "dataset.json" in shown[-1]
    assert len(viewer.layers) == 1 and widget.run_button.isEnabled()


class Untrusted:
    """Not a tensor, number or plain container: torch.load(weights_only=True) refuses it."""


def test_a_checkpoint_that_needs_unpickling_runs_only_when_trusted(ensemble_widget, qtbot, tmp_path, monkeypatch):
    import shutil

    torch = pytest.importorskip("torch")
    from napari_segunc.inference.demo_models import DEMO_DIR

    shown: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", shown.append)
    model = tmp_path / "old_trainer_model"
    shutil.copytree(DEMO_DIR / "rater1_seed112233", model)
    checkpoint = next(model.rglob("checkpoint_final.pth"))
    torch.save({**torch.load(checkpoint, weights_only=True), "extra": Untrusted()}, checkpoint)
    viewer, widget = ensemble_widget()
    widget.mirror_check.setChecked(False)
    widget.set_source(FOLDERS, [model])
    assert not widget.trust_check.isChecked()  # off by default
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert str(checkpoint) in shown[-1] and "tick 'trust these checkpoints' in the Ensemble dock" in shown[-1]
    assert len(viewer.layers) == 1  # nothing was run, nothing added
    widget.trust_check.setChecked(True)
    widget.run()
    assert not widget.trust_check.isEnabled()  # an input: fixed while the job runs
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert "Ensemble done: 1 member(s)" in widget.status.text(), widget.status.text()
    assert len(shown) == 1 and (np.asarray(viewer.layers["ensemble segmentation"].data) > 0).any()


def test_an_image_outside_the_training_data_shows_the_input_check(make_napari_viewer, qtbot, monkeypatch):
    """A small CT-like image in real Hounsfield units (air -1000, soft tissue, bone 1200), through the Plugins menu:
    the dock shows the input check's warnings (its warning line and a napari warning) as soon as the worker has made
    it, before the layers arrive, and every result layer keeps the check in its metadata."""
    from napari_segunc.volume import Modality, Volume

    warned: list[str] = []
    monkeypatch.setattr("napari_segunc._qt.ensemble.show_warning", warned.append)
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:24, 0:48, 0:48]
    body = (y - 24) ** 2 + (x - 24) ** 2 < 20**2
    data = np.where(body, 40 + 10 * rng.standard_normal(body.shape), -1000 + 5 * rng.standard_normal(body.shape))
    data[body & ((y - 30) ** 2 + (x - 24) ** 2 < 5**2)] = 1200  # a spine
    image = Volume(np.rint(data).astype(np.int16), spacing=(3.0, 2.5, 2.5), modality=Modality.CT, name="ct_like")
    viewer = make_napari_viewer()
    layer_data, kwargs, _ = volume_layer_data(image)
    viewer.add_image(layer_data, **kwargs)
    _, widget = open_dock(viewer, "Ensemble")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.mirror_check.setChecked(False)
    assert not widget.qc_label.isVisible()
    at_result: list[str] = []
    done = widget._done
    widget._done = lambda result: (at_result.append(widget.qc_label.text()), done(result))
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)

    assert len(warned) == 1 and warned[0].startswith("Input check: ")
    text = widget.qc_label.text()
    assert widget.qc_label.isVisibleTo(widget) and at_result == [text]  # shown before the layers came
    assert "trained only on the napari-segunc synthetic phantom" in text
    assert "The image's intensities differ from those of the training images" in text
    assert "synthetic phantom" in warned[0] and "intensities differ" in warned[0]
    assert "Ensemble done: 6 member(s)" in widget.status.text() and "Input check: 2 warning(s)" in widget.status.text()
    for layer in list(viewer.layers)[1:]:
        qc = layer.metadata["input_qc"]
        assert qc["ok"] is False and len(qc["warnings"]) == 2 and qc["image"]["name"] == "ct_like"
        assert all(line.removeprefix("⚠ ") in qc["warnings"] for line in text.splitlines())

"""Regenerate the user guide's screenshots: every dock opened from the Plugins menu (tabbed together on the right of
a 1600×1000 window) and driven through its main path on the phantom study.

Run ``make screenshots`` (or ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py``
without a display). Writes ``docs/images/widget_*.png``. The MedSAM2 step uses a randomly initialised model of
MedSAM2's architecture (no checkpoint can be shipped), so its screenshot shows the boxes and the dock, not a result.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "images"


def wait(app, widget=None, until=None, timeout=600.0) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        app.processEvents()
        if (widget is None or not widget.busy) and (until is None or until()):
            break
        time.sleep(0.02)
    for _ in range(20):  # let the canvas catch up
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_segunc._qt._docks import DOCK_NAMES, open_dock
    from napari_segunc._qt._layers import LayerRole, role_of

    OUT.mkdir(exist_ok=True)
    # a fresh profile (settings, autosaved review sessions): a session left by an earlier run would be offered back
    # in a dialog when the phantom opens, and wait for a click
    os.environ["SEGUNC_CONFIG_DIR"] = tempfile.mkdtemp(prefix="segunc_screenshots_")
    viewer = napari.Viewer(show=True, title="napari-segunc")
    viewer.window.resize(1600, 1000)
    app = QApplication.instance()
    # every dock from the Plugins menu, tabbed together on the right, as a user opens them
    docks = {name: open_dock(viewer, name) for name in DOCK_NAMES}
    wait(app)

    def show(name):
        dock, widget = docks[name]
        dock.raise_()
        wait(app)
        return widget

    def shot(name):
        wait(app)
        path = OUT / f"widget_{name}.png"
        viewer.window.screenshot(path=str(path), flash=False, canvas_only=False)
        width, height = viewer.window._qt_window.width(), viewer.window._qt_window.height()
        print("wrote", path, f"(window {width}x{height})")

    study = show("Open study")
    study.load_phantom(seed=0)
    wait(app, study)
    shot("open_study")

    ens = show("Ensemble")
    ens.device_combo.setCurrentIndex(ens.device_combo.findData("cpu"))
    ens.mirror_check.setChecked(False)
    ens.run()
    wait(app, ens, until=lambda: "ensemble mutual information (epistemic)" in viewer.layers)
    shot("ensemble")

    unc = show("Uncertainty & raters")
    unc.analyse_raters()
    wait(app, unc)
    unc.find_regions()
    wait(app, unc, until=lambda: bool(unc.regions))
    unc.jump_to(0)
    shot("uncertainty")
    unc.set_compare(True, names=["rater_1", "rater_2", "rater_3", "ensemble segmentation"])
    wait(app, unc)
    shot("compare")
    unc.set_compare(False)
    wait(app, unc)

    met = show("Metrics")
    met.evaluate()  # its defaults: the ensemble's segmentation against the raters
    wait(app, met, until=lambda: met.result is not None)
    shot("metrics")
    met.tabs.setCurrentIndex(1)
    shot("metrics_reliability")
    met.tabs.setCurrentIndex(3)
    shot("metrics_statistics")

    import torch

    from napari_segunc.inference.medsam2 import build_model

    med = show("MedSAM2")
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    torch.save({"model": build_model("medsam2", image_size=64).state_dict()}, tmp / "random_medsam2.pt")
    med.checkpoint_edit.setText(str(tmp / "random_medsam2.pt"))
    med.boxes_from_mask(strategy="B")  # its default mask: the ensemble's segmentation
    for layer in viewer.layers:
        layer.visible = role_of(layer) in (LayerRole.IMAGE, LayerRole.BOXES) or layer.name == "ensemble segmentation"
    z = med.prompts().organ("liver").key_z
    viewer.reset_view()  # the whole slice (the review queue's jump zoomed in on a region)
    viewer.dims.set_current_step(0, z)
    shot("medsam2")

    # the click workflow: run, then a positive and a negative click on the liver where a simulated annotator puts
    # them (against the ensemble's labels); each click reruns the liver; the random model's masks stay hidden
    import numpy as np

    from napari_segunc.prompts.simulate import next_click

    med.image_size = 64
    med.device_combo.setCurrentText("cpu")
    med.run()
    wait(app, med, until=lambda: med.result is not None)
    reference = np.asarray(viewer.layers["ensemble segmentation"].data) == 1
    med.organ_table.selectRow(0)
    med.start_clicking()
    clicks = med.boxes.clicks_layer("liver")
    for positive in (True, False):
        if med.boxes.positive != positive:
            med.toggle_polarity()
        seg = med.result.final.fused.segmentation == 1
        click = next_click(seg, reference)
        if click.positive != positive:  # the annotator's click has the other sign: use its mirror on this slice
            ys, xs = np.nonzero(reference[z] == positive)
            click = type(click)(z, int(ys[len(ys) // 2]), int(xs[len(xs) // 2]), positive)
        clicks.add([z, click.y, click.x] if click.z != z else [click.z, click.y, click.x])
        wait(app, med, until=lambda: not med.busy)
        wait(app, med)
    for layer in viewer.layers:
        layer.visible = role_of(layer) in (LayerRole.IMAGE, LayerRole.BOXES, LayerRole.CLICKS)
    viewer.layers.selection.active = clicks
    viewer.dims.set_current_step(0, z)
    shot("medsam2_clicks")

    import shutil

    from napari_segunc._qt._session import review_for

    image_layer = viewer.layers["phantom_ct"]
    state = review_for(viewer, image_layer)
    state.annotation.replace_all(viewer.layers["ensemble segmentation"].data, description="start from the ensemble")
    for layer in viewer.layers:
        layer.visible = layer.name in (image_layer.name, state.layer.name)
    exp = show("Export")
    written = exp.export(tmp / "export")
    wait(app, exp)
    shot("export")
    report = next((p for k, p in written.items() if k == "report"), None)
    if report is not None and report.exists():
        shutil.copyfile(report, OUT / "report_example.png")
        print("wrote", OUT / "report_example.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

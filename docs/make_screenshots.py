"""Regenerate the user guide's screenshots: every dock widget driven through its main path on the phantom study.

Run ``make screenshots`` (or ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py``
without a display). Writes ``docs/images/widget_*.png``. The MedSAM2 step uses a randomly initialised model of
MedSAM2's architecture (no checkpoint can be shipped), so its screenshot shows the boxes and the dock, not a result.
"""

from __future__ import annotations

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
    from napari.layers import Image
    from qtpy.QtWidgets import QApplication

    from napari_segunc._qt.ensemble import EnsembleWidget
    from napari_segunc._qt.medsam2 import MedSAM2Widget
    from napari_segunc._qt.metrics import MetricsWidget
    from napari_segunc._qt.open_study import OpenStudyWidget
    from napari_segunc._qt.uncertainty import UncertaintyWidget

    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-segunc")
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    docks = []

    def dock(widget, name):
        for d in docks:
            viewer.window.remove_dock_widget(d)
        docks.clear()
        docks.append(viewer.window.add_dock_widget(widget, name=name, area="right"))
        wait(app)
        return widget

    def shot(name):
        wait(app)
        path = OUT / f"widget_{name}.png"
        viewer.window.screenshot(path=str(path), flash=False, canvas_only=False)
        print("wrote", path)

    study = dock(OpenStudyWidget(viewer), "Open study")
    study.load_phantom(seed=0)
    wait(app, study)
    shot("open_study")

    ens = dock(EnsembleWidget(viewer), "Ensemble")
    ens.device_combo.setCurrentIndex(ens.device_combo.findData("cpu"))
    ens.mirror_check.setChecked(False)
    ens.run()
    wait(app, ens, until=lambda: "ensemble mutual information (epistemic)" in viewer.layers)
    shot("ensemble")

    unc = dock(UncertaintyWidget(viewer), "Uncertainty & raters")
    unc.analyse_raters()
    wait(app, unc)
    unc.find_regions()
    wait(app, unc, until=lambda: bool(unc.regions))
    unc.jump_to(0)
    shot("uncertainty")
    unc.set_compare(True)
    wait(app, unc)
    shot("compare")
    unc.set_compare(False)
    wait(app, unc)

    met = dock(MetricsWidget(viewer), "Metrics")
    met.prediction_combo.setCurrentText("ensemble segmentation")
    met.set_raters([la.name for la in viewer.layers if la.name.startswith("rater_")])
    met.evaluate()
    wait(app, met, until=lambda: met.result is not None)
    shot("metrics")
    met.tabs.setCurrentIndex(1)
    shot("metrics_reliability")

    import torch

    from napari_segunc.inference.medsam2 import build_model

    med = dock(MedSAM2Widget(viewer), "MedSAM2")
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    torch.save({"model": build_model("medsam2", image_size=64).state_dict()}, tmp / "random_medsam2.pt")
    med.checkpoint_edit.setText(str(tmp / "random_medsam2.pt"))
    med.boxes_from_mask("ensemble segmentation", strategy="B")
    for layer in viewer.layers:
        layer.visible = (
            isinstance(layer, Image)
            and "segunc_map" not in layer.metadata
            or layer.name.startswith(("boxes", "ensemble segmentation"))
        )
    z = med.prompts().organ("liver").key_z
    viewer.dims.set_current_step(0, z)
    shot("medsam2")

    import shutil

    from napari_segunc._qt._session import review_for
    from napari_segunc._qt.export import ExportWidget

    image_layer = next(la for la in viewer.layers if isinstance(la, Image) and "segunc_geometry" in la.metadata)
    state = review_for(viewer, image_layer)
    state.annotation.replace_all(viewer.layers["ensemble segmentation"].data, description="start from the ensemble")
    for layer in viewer.layers:
        layer.visible = layer is image_layer or layer is state.layer
    exp = dock(ExportWidget(viewer), "Export")
    exp.rows_provider = lambda: met.result.rows if met.result is not None else None
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

"""``segunc demo``: the phantom study in napari, on a desktop or headless (a screenshot PNG under Xvfb).

With a display (``DISPLAY`` or ``WAYLAND_DISPLAY`` set) the viewer opens and stays until it is closed. Without
one, the demo re-runs itself under ``xvfb-run`` (a virtual X server with software OpenGL, see docs/HEADLESS.md),
draws the study off screen, saves a screenshot and exits. napari and Qt are imported inside functions only, so
importing this module (and the CLI) stays Qt-free.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import InvalidInput
from .io import atomic_write, versioned_path

__all__ = ["add_demo_arguments", "run_demo"]

log = logging.getLogger(__name__)

DEFAULT_SCREENSHOT = "demo_screenshot.png"
XVFB_SCREEN = "-screen 0 1600x1000x24"  # WINDOW_SIZE fits
_HEADLESS_ENV = "SEGUNC_DEMO_HEADLESS"  # set in the xvfb-run child: draw, save the screenshot, exit


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(
    *, out_dir: str | os.PathLike = "demo_data", screenshot: str | os.PathLike | None = None, seed: int = 0
) -> int:
    """Write the phantom study (once) and show it in napari with the Open study widget.

    Parameters
    ----------
    out_dir : path-like
        Folder for the study's files (image, truth, rater maps). Files already there are reused, never rewritten.
    screenshot : path-like, optional
        PNG to save of the canvas. Headless runs always save one (default ``demo_screenshot.png`` in the current
        folder); an existing file is never replaced: ``name_v2.png``, ``name_v3.png``... are used instead.
    seed : int
        Phantom seed.

    Returns
    -------
    int
        Exit code: 0 on success, 2 when there is no display and ``xvfb-run`` is not installed.
    """
    headless_child = os.environ.get(_HEADLESS_ENV) == "1"
    if not headless_child and not _has_display():
        return _rerun_under_xvfb(out_dir=out_dir, screenshot=screenshot, seed=seed)
    image_path, rater_paths = _study_files(Path(out_dir), seed)
    map_paths = _ensemble_maps(Path(out_dir), image_path)
    return _show(image_path, rater_paths, map_paths, screenshot=screenshot, interactive=not headless_child)


def _rerun_under_xvfb(*, out_dir, screenshot, seed: int) -> int:
    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run is None:
        print(
            "segunc demo: no display (DISPLAY/WAYLAND_DISPLAY unset) and xvfb-run is not installed. Install it "
            "(Debian/Ubuntu: apt-get install xvfb xauth, plus the Qt xcb libraries listed in docs/HEADLESS.md) "
            "or run the demo on a desktop.",
            file=sys.stderr,
        )
        return 2
    shot = versioned_path(Path(screenshot or DEFAULT_SCREENSHOT).expanduser().resolve())
    env = dict(os.environ, **{_HEADLESS_ENV: "1"})
    if env.get("QT_QPA_PLATFORM") == "offscreen":  # cannot draw the OpenGL canvas; Xvfb's xcb can
        env.pop("QT_QPA_PLATFORM")
    cmd = [xvfb_run, "-a", "-s", XVFB_SCREEN, sys.executable, "-m", "napari_segunc.demo"]
    cmd += ["--out-dir", str(Path(out_dir).expanduser().resolve()), "--screenshot", str(shot), "--seed", str(seed)]
    log.info("no display: running the demo under %s", " ".join(cmd))
    return subprocess.call(cmd, env=env)


def _study_files(out_dir: Path, seed: int) -> tuple[Path, list[Path]]:
    """Paths of the phantom's image and rater maps in `out_dir`, writing the study there when it is not yet."""
    from .phantom import make_phantom, write_phantom

    study = make_phantom(seed=seed)
    # write_phantom's file names: image.nii.gz, truth.nii.gz, rater_<k>.nii.gz, labels.json
    expected = {name: out_dir / f"{name}.nii.gz" for name in ("image", "truth", *(r.name for r in study.raters))}
    expected["labels"] = out_dir / "labels.json"
    existing = sorted(p.name for p in expected.values() if p.exists())
    if len(existing) == len(expected):
        print(f"phantom study: reusing the files in {out_dir}")
        paths = expected
    elif existing:
        raise InvalidInput(
            f"{out_dir} already holds some files of the phantom study ({', '.join(existing)}) but not all; "
            "choose another --out-dir (files there are never overwritten)."
        )
    else:
        paths = {name: Path(p) for name, p in write_phantom(study, out_dir).items()}
        print(f"phantom study (seed {seed}) written to {out_dir}")
    return paths["image"], [paths[r.name] for r in study.raters]


ENSEMBLE_MAPS = ("segmentation", "entropy", "mutual_information")


def _ensemble_maps(out_dir: Path, image_path: Path) -> list[Path]:
    """Run the shipped demo ensemble on the study once (``<out_dir>/ensemble/``); [] when it is not installed."""
    from .inference.demo_models import DEMO_DIR, demo_ensemble_file

    folder = out_dir / "ensemble"
    paths = [folder / f"{name}.nii.gz" for name in ENSEMBLE_MAPS]
    if all(p.exists() for p in paths):
        print(f"demo ensemble: reusing its maps in {folder}")
        return paths
    if not (DEMO_DIR / "ensemble.json").is_file():
        log.warning("the demo ensemble is not installed: showing the study without model outputs")
        return []
    from .inference.nnunet import predict_members, read_ensemble_file
    from .io import read_volume
    from .progress import run_job
    from .uncertainty.pipeline import accumulate, write_ensemble_outputs

    members = read_ensemble_file(demo_ensemble_file())
    started = time.monotonic()
    # one line for the step: its start now (it takes a minute on a CPU), how it ended once it has
    print(f"demo ensemble: running its {len(members)} nnU-Net models on the study …", end=" ", flush=True)
    try:
        runs = predict_members(read_volume(image_path), members, device="auto", mirroring=False)
        acc, grid, labels = run_job(accumulate(runs, class_variance=False), None)
        write_ensemble_outputs(acc.result(consume=True), grid, folder, labels=labels, overwrite=False)
    except BaseException:
        print("failed", flush=True)
        raise
    print(f"done in {time.monotonic() - started:.0f} s, maps written to {folder}", flush=True)
    return paths


#: The demo window (and its Xvfb screen): landscape, room for the canvas, the layer list and the docks.
WINDOW_SIZE = (1600, 1000)


def _show(image_path: Path, rater_paths: list[Path], map_paths: list[Path], *, screenshot, interactive: bool) -> int:
    try:  # triton (through torch's dynamo, which the Ensemble dock's nnU-Net loads) before Mesa's LLVM, which the
        import torch._dynamo  # noqa: F401  # first drawing loads: the other order crashes (docs/HEADLESS.md)
    except Exception:  # noqa: BLE001 - no torch or no usable triton: the dock copes (it disables triton)
        pass
    import napari

    # show=True even headless: under Xvfb the window is invisible, and a hidden canvas renders blank.
    viewer = napari.Viewer(title="napari-segunc demo: phantom study", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    _add_study_layers(viewer, image_path, rater_paths, map_paths)
    # the docks as a user opens them (Plugins ▸ SegUnc ▸ …), tabbed together on the right
    _dock, open_study = viewer.window.add_plugin_dock_widget("napari-segunc", "Open study")
    open_study.use_image_layer(open_study.viewer.layers[0])  # rater maps added from the dock are checked against it
    if map_paths:  # the demo ensemble is installed: its dock too, to rerun it (or other models) from the window
        viewer.window.add_plugin_dock_widget("napari-segunc", "Ensemble", tabify=True)
    _axial_view_on_organs(viewer)

    if screenshot is not None or not interactive:
        shot = versioned_path(Path(screenshot or DEFAULT_SCREENSHOT).expanduser().resolve())
        _save_png(_window_screenshot(viewer), shot)
        print(f"screenshot of the window saved to {shot}")
    if interactive:
        napari.run()
    else:
        viewer.close()
    return 0


def _add_study_layers(viewer, image_path: Path, rater_paths: list[Path], map_paths: list[Path]) -> None:
    """Bottom to top: the CT; the ensemble's predictive entropy over it (inferno, additive: black, i.e. the CT
    unchanged, where the models agree; napari's colour bar) and its mutual information (hidden); each rater as
    outlines in its own colour; the ensemble's segmentation as outlines in the organ colours; a legend on the
    canvas. The outlines lie above the additive maps so that their colours stay true. The layers are the ones the
    docks make (`_qt._layers.add_layer`)."""
    from ._qt._layers import add_layer
    from .io import read_volume
    from .io._npe2 import rater_layer_data, read_layers
    from .phantom import LABELS
    from .uncertainty.layers import map_layer, segmentation_layer

    for layer_data in read_layers([str(image_path)]):
        add_layer(viewer, layer_data)
    maps = {p.name.removesuffix(".nii.gz"): read_volume(p) for p in map_paths}
    for name in ("entropy", "mutual_information"):
        if name in maps:
            vol = maps[name]
            add_layer(viewer, map_layer(name, vol.data, vol, n_classes=len(LABELS) + 1, visible=name == "entropy"))
    for index, path in enumerate(rater_paths):
        add_layer(viewer, rater_layer_data(read_volume(path, kind="labels"), index))
    if "segmentation" in maps:
        seg = maps["segmentation"]
        add_layer(viewer, segmentation_layer(seg.data, seg, name="ensemble segmentation", labels=LABELS))
    entropy = [x for x in viewer.layers if x.metadata.get("segunc_map") == "entropy"]
    if entropy:
        viewer.layers.selection.active = entropy[0]  # its controls on the left


def _window_screenshot(viewer):
    """RGBA screenshot of the whole window (canvas, layer list, docks), once Qt has laid the docks out."""
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    return viewer.window.screenshot(canvas_only=False, flash=False)


def _axial_view_on_organs(viewer) -> None:
    """2D axial view on the slice where the first rater map has the most labelled voxels."""
    import numpy as np
    from napari.layers import Labels

    image = viewer.layers[0]
    viewer.dims.ndisplay = 2
    labels = [layer for layer in viewer.layers if isinstance(layer, Labels)]
    k = image.data.shape[0] // 2
    if labels:
        counts = np.count_nonzero(np.asarray(labels[0].data).reshape(labels[0].data.shape[0], -1), axis=1)
        if counts.any():
            k = int(np.argmax(counts))
    viewer.dims.set_point(0, float(image.translate[0] + k * image.scale[0]))
    viewer.reset_view()
    viewer.scene.camera.zoom *= 1.15  # the body, not the air around it, fills the canvas


def _save_png(rgba, path: Path) -> None:
    """Write atomically, never over an existing file."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, rgba, extension=".png"), overwrite=False)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options (``--out-dir``, ``--screenshot``, ``--seed``): `segunc demo` and this module's `main`."""
    parser.add_argument("--out-dir", default="demo_data", help="where the phantom study is written (default demo_data)")
    parser.add_argument("--screenshot", default=None, help="PNG path used when there is no display")
    parser.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_segunc.demo`` (what the headless re-run executes)."""
    parser = argparse.ArgumentParser(prog="python -m napari_segunc.demo", description=__doc__.splitlines()[0])
    add_demo_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_demo(out_dir=args.out_dir, screenshot=args.screenshot, seed=args.seed)
    except InvalidInput as exc:
        print(f"segunc demo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

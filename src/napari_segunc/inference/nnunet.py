"""nnU-Net v2 ensembles as a member source: what ``segunc predict`` and the Ensemble dock run.

Members are folds of nnU-Net v2 trained-model folders (``dataset.json``, ``plans.json``, ``fold_k/checkpoint_*.pth``):
the user's own or e.g. TotalSegmentator's. Each member is run by nnU-Net's own ``nnUNetPredictor`` (its
preprocessing, sliding window with Gaussian weighting, test-time mirroring and resampling back to the image's
geometry), one fold at a time. `predict_members` yields each member's class probabilities on the image's grid
(`napari_segunc.members.MemberProbabilities`) and lets go of them; `napari_segunc.uncertainty.pipeline.accumulate`
averages them (probabilities, never logits). Nothing is written per member.

Checkpoints are pickles. They are read with ``torch.load(weights_only=True)`` (tensors, numbers, strings and plain
containers only), which is enough for nnU-Net's own checkpoints; one that needs arbitrary unpickling is refused
unless the caller trusts it (``trust_checkpoint=True``, ``--trust-checkpoint``), because unpickling can run code.

The image goes to nnU-Net in its file's array order with its file's spacing (as ``nnUNetv2_predict`` would read it
with SimpleITK), and the probabilities come back on our canonical grid.

One responsibility, running nnU-Net members; kept in one module past 400 lines (checkpoint reading is in
`_checkpoint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import logging
import queue
import threading
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Cancelled, EngineFailed, InvalidInput, SegUncError
from ..members import MemberProbabilities, dataset_labels
from ..progress import Progress
from ..volume import Volume, array_to_canonical, array_to_source

__all__ = [
    "MC_GROUP",
    "TTA_GROUP",
    "Member",
    "discover_members",
    "load_member",
    "predict_members",
    "read_ensemble_file",
]

log = logging.getLogger(__name__)

TTA_GROUP = "tta"
MC_GROUP = "mc_dropout"


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member: a fold of an nnU-Net trained-model folder."""

    model_dir: str
    fold: str
    checkpoint: str = "checkpoint_final.pth"
    name: str = ""
    group: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{Path(self.model_dir).name}/fold_{self.fold}"

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.model_dir) / f"fold_{self.fold}" / self.checkpoint


# ---------------------------------------------------------------------------------------------------- members
def _folds(model_dir: Path, checkpoint: str) -> list[str]:
    found = sorted(p.name.removeprefix("fold_") for p in model_dir.glob("fold_*") if (p / checkpoint).is_file())
    numeric = sorted((f for f in found if f.isdigit()), key=int)
    return numeric or [f for f in found if not f.isdigit()]


def discover_members(
    model_dirs: Iterable[str | Path], *, folds: Sequence[str] | None = None, checkpoint: str = "checkpoint_final.pth"
) -> list[Member]:
    """Every fold of every model folder is one member (or the given `folds`), checked to exist."""
    members = []
    for d in model_dirs:
        d = Path(d).expanduser()
        _check_folder(d)
        use = [str(f) for f in folds] if folds else _folds(d, checkpoint)
        if not use:
            raise InvalidInput(f"{d} has no fold_*/{checkpoint}; is it a trained nnU-Net model folder?")
        for f in use:
            m = Member(str(d), f, checkpoint)
            if not m.checkpoint_path.is_file():
                raise InvalidInput(f"{m.checkpoint_path} does not exist (folds there: {_folds(d, checkpoint)}).")
            members.append(m)
    if not members:
        raise InvalidInput("No model was given.")
    return members


def read_ensemble_file(path: str | Path) -> list[Member]:
    """Members from a JSON or YAML file: ``{"members": [{"model": DIR, "folds": [...], "checkpoint": ..., "group":
    ..., "name": ...}, ...]}``; relative model paths are relative to the file."""
    from ..io.readers import read_mapping_file

    p = Path(path).expanduser()
    spec = read_mapping_file(p, "ensemble file")
    entries = spec.get("members") if isinstance(spec, dict) else None
    return members_from_entries(entries, base=p.parent, where=str(p))


def members_from_entries(entries: Any, *, base: Path, where: str) -> list[Member]:
    """Members from ``[{"model": DIR, "folds": [...], "checkpoint": ..., "group": ..., "name": ...}, ...]`` (an
    ensemble file's or a study file's list); relative model paths are relative to `base`; `where` names the file
    in messages."""
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"{where}: expected a 'members' list of {{model, folds, group, name}} entries.")
    members = []
    for i, e in enumerate(entries, start=1):
        if not isinstance(e, dict) or "model" not in e:
            raise InvalidInput(f"{where}: member {i} needs a 'model' folder.")
        model = Path(e["model"]).expanduser()
        model = model if model.is_absolute() else base / model
        found = discover_members([model], folds=e.get("folds"), checkpoint=e.get("checkpoint", "checkpoint_final.pth"))
        for m in found:
            name = e.get("name") or m.label
            if len(found) > 1:
                name = f"{name}/fold_{m.fold}"
            members.append(dataclasses.replace(m, name=name, group=e.get("group")))
    return members


def _check_folder(d: Path) -> None:
    if not d.is_dir():
        raise InvalidInput(f"{d} is not a folder; give an nnU-Net trained-model folder (with dataset.json).")
    missing = [f for f in ("dataset.json", "plans.json") if not (d / f).is_file()]
    if missing:
        raise InvalidInput(f"{d} lacks {', '.join(missing)}: not a complete nnU-Net trained-model folder.")


# ---------------------------------------------------------------------------------------------------- loading
#: the end of the message about a checkpoint that holds Python objects (only the trust option loads it)
TRUST_HINT = (
    "if you trust where it comes from, tick 'trust these checkpoints' in the Ensemble dock (command line: "
    "--trust-checkpoint)."
)


def _load_checkpoint(path: Path, trust: bool) -> dict:
    from ._checkpoint import load_weights

    # empty, truncated, corrupt and foreign files are refused with their own message, whatever `trust` says
    ckpt = load_weights(path, trust=trust, what="nnU-Net checkpoint", trust_hint=TRUST_HINT)
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise InvalidInput(f"{path} is not an nnU-Net checkpoint (no 'network_weights').")
    return ckpt


def load_member(
    member: Member,
    *,
    device: Any = None,
    trust_checkpoint: bool = False,
    use_mirroring: bool = True,
    perform_everything_on_device: bool = True,
    tile_step_size: float = 0.5,
):
    """An initialised ``nnUNetPredictor`` for one member (its network weights checked against its plans)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    d = Path(member.model_dir)
    _check_folder(d)
    if not member.checkpoint_path.is_file():
        raise InvalidInput(f"{member.checkpoint_path} does not exist.")
    dataset_json = json.loads((d / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((d / "plans.json").read_text()))
    ckpt = _load_checkpoint(member.checkpoint_path, trust_checkpoint)
    configuration = ckpt.get("init_args", {}).get("configuration")
    try:
        configuration_manager = plans_manager.get_configuration(configuration)
    except (KeyError, AssertionError, RuntimeError, ValueError):
        raise InvalidInput(
            f"{member.checkpoint_path} was trained with configuration '{configuration}', which {d / 'plans.json'} "
            "does not define."
        ) from None
    trainer_name = ckpt.get("trainer_name", "nnUNetTrainer")
    try:
        trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    except Exception:  # noqa: BLE001 - nnunetv2 raises a bare RuntimeError when the class is not installed
        trainer_class = None
    if trainer_class is None:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as trainer_class

        log.warning("trainer %s is not installed; building the network with nnUNetTrainer's architecture", trainer_name)
    n_in = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = trainer_class.build_network_architecture(
        plans_manager, configuration_manager, n_in, n_out, enable_deep_supervision=False
    )
    try:
        network.load_state_dict(ckpt["network_weights"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise InvalidInput(
            f"{member.checkpoint_path} does not fit the network described by {d / 'plans.json'} (wrong architecture or "
            f"another model's checkpoint): {' '.join(first)}"
        ) from None
    mirror_axes = ckpt.get("inference_allowed_mirroring_axes") or None  # () would break nnU-Net's predictor
    torch_device = torch.device(device or "cpu")
    on_cuda = torch_device.type == "cuda"  # nnU-Net keeps the sliding window's results on the device on CUDA only
    # nnU-Net 2.8 prints "perform_everything_on_device=True is only supported for cuda devices!" for every predictor
    # it builds on another device, whatever the flag: caught here, said once (debug log)
    with contextlib.redirect_stdout(io.StringIO()) as said:
        predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=use_mirroring and mirror_axes is not None,
            perform_everything_on_device=perform_everything_on_device and on_cuda,
            device=torch_device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
    _say_once(said.getvalue())
    predictor.manual_initialization(
        network,
        plans_manager,
        configuration_manager,
        [ckpt["network_weights"]],
        dataset_json,
        trainer_name,
        mirror_axes,
    )
    return predictor


_SAID: set[str] = set()


def _say_once(upstream: str) -> None:
    """Log what nnU-Net printed while building a predictor, once per distinct message (debug: nothing to act on)."""
    for line in filter(None, (ln.strip() for ln in upstream.splitlines())):
        if line not in _SAID:
            _SAID.add(line)
            if "perform_everything_on_device" in line:
                log.debug("nnU-Net keeps sliding-window results in RAM on a non-CUDA device (it said: %s)", line)
            else:
                log.info("nnU-Net: %s", line)


# ---------------------------------------------------------------------------------------------------- running
def _source_array(image: Volume) -> tuple[np.ndarray, dict, Any]:
    """The image in its file's array order, nnU-Net's properties, and the direction to come back with."""
    if image.source is not None:
        direction = image.source.direction
        data = array_to_source(image.data, direction)
        spacing = list(image.source.spacing)[::-1]
    else:
        direction = image.direction
        data, spacing = image.data, list(image.spacing)
    return np.ascontiguousarray(data, dtype=np.float32), {"spacing": spacing}, direction


def _tta_flips(kind: str | None) -> list[tuple[int, ...]]:
    if not kind:
        return [()]
    if kind != "flips":
        raise InvalidInput(f"Unknown test-time augmentation '{kind}'; the one available is 'flips'.")
    return [c for r in range(4) for c in itertools.combinations((0, 1, 2), r)]


def check_flips_allowed(predictor, member_label: str) -> None:
    """Test-time flips only for a model trained to be flip-invariant on all three axes (nnU-Net's mirroring axes).

    A model trained without mirroring on some axis (TotalSegmentator, the demo ensemble: left and right organs) reads
    a flipped image as another anatomy — a flipped right kidney is a left kidney — so the flips would measure that,
    not the model's uncertainty.
    """
    allowed = getattr(predictor, "allowed_mirroring_axes", None) or ()
    if set(allowed) != {0, 1, 2}:
        axes = ", ".join(str(a) for a in allowed) or "none"
        raise InvalidInput(
            f"Member {member_label} was trained without mirroring on every axis (allowed axes: {axes}): flipped, "
            "an image shows another anatomy to it (a right organ becomes a left one), so test-time flips would not "
            "measure its uncertainty. Use several members (seeds, folds) or MC dropout instead."
        )


def enable_mc_dropout(predictor, member_label: str) -> int:
    """Keep the network's dropout layers sampling at inference (hooks survive nnU-Net's ``eval()``); returns how
    many there are. A network without dropout raises `InvalidInput`: MC dropout would only repeat one prediction."""
    import torch

    layers = [m for m in predictor.network.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    if not layers:
        raise InvalidInput(
            f"{member_label} has no dropout layers (nnU-Net's default plans have none), so MC dropout would repeat "
            "the same prediction. Use an ensemble of models or --tta flips as the uncertainty source instead."
        )
    for layer in layers:
        layer.register_forward_pre_hook(_keep_sampling)
    return len(layers)


def _keep_sampling(module, args) -> None:
    module.train(True)  # returns None: a pre-hook's return value would replace the layer's input


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _TileCounter:
    """Wraps the predictor's per-tile network call: counts tiles for progress and stops when cancelled."""

    def __init__(self, predictor, events: queue.Queue, cancel: threading.Event) -> None:
        self.inner = predictor._internal_maybe_mirror_and_predict
        self.events, self.cancel, self.count = events, cancel, 0
        predictor._internal_maybe_mirror_and_predict = self

    def __call__(self, x):
        if self.cancel.is_set():
            raise Cancelled("prediction cancelled")
        out = self.inner(x)
        self.count += 1
        self.events.put(("tile", self.count))
        return out


def _run_member(predictor, data: np.ndarray, props: dict, flip: tuple[int, ...], events, cancel) -> np.ndarray:
    """Probabilities (C, z, y, x) in the input's array order; CUDA out-of-memory falls back step by step."""
    import torch

    counter = _TileCounter(predictor, events, cancel)
    x = np.flip(data, flip).copy() if flip else data
    for attempt in ("device", "host", "cpu"):
        try:
            _, probs = predictor.predict_single_npy_array(x[None], props, None, None, True)
            break
        except Exception as exc:
            if not _is_oom(exc) or attempt == "cpu":
                raise
            torch.cuda.empty_cache()
            if attempt == "device" and predictor.perform_everything_on_device:
                predictor.perform_everything_on_device = False
                events.put(("notice", "GPU out of memory: retrying with the sliding window results kept in RAM"))
            else:
                predictor.device = torch.device("cpu")
                predictor.network.to("cpu")
                predictor.perform_everything_on_device = False
                events.put(("notice", "GPU out of memory again: finishing this member on the CPU"))
    counter.count = 0
    probs = np.asarray(probs, dtype=np.float32)
    return np.flip(probs, tuple(a + 1 for a in flip)) if flip else probs


def _stop_member(thread: threading.Thread, cancel: threading.Event) -> None:
    """Stop the running member at its next sliding-window tile and wait for its thread to end.

    Waited for even through more Ctrl-C presses (at most one tile): a torch thread still running while the interpreter
    exits aborts it ("terminate called without an active exception").
    """
    cancel.set()
    while thread.is_alive():
        with contextlib.suppress(KeyboardInterrupt):
            thread.join()


def predict_members(
    image: Volume,
    members: Sequence[Member],
    *,
    device: str = "auto",
    tta: str | None = None,
    trust_checkpoint: bool = False,
    threads: int | None = None,
    mc_dropout: int = 0,
    mirroring: bool = True,
) -> Generator[Progress | MemberProbabilities, None, None]:
    """Run every member (and TTA flip, or MC-dropout sample) on `image`; a member source (`napari_segunc.members`).

    Yields `Progress` (member run i of M, tiles done) and, after each run, its `MemberProbabilities` on the image's
    canonical grid, with the label names of the model's ``dataset.json``. Close the generator to cancel: the running
    member stops at its next sliding-window tile. Groups: each member's own group, and ``tta`` for the flipped runs
    when `tta="flips"` (each flip of each member is a member of the ``tta`` group; mirroring inside nnU-Net is then
    off). ``mc_dropout=N`` runs each member N times with its dropout layers sampling (group ``mc_dropout``); a
    network without dropout is refused with a message. ``mirroring=False`` turns off nnU-Net's own test-time
    mirroring (8× fewer network evaluations; the demo uses it).

    Raises
    ------
    InvalidInput
        No member, TTA together with MC dropout, a model that cannot be loaded or does not allow the flips.
    EngineFailed
        nnU-Net itself failed on a member (the message names the member and nnU-Net's error).
    """
    from .device import select_device, torch_threads

    if not members:
        raise InvalidInput("No ensemble member was given.")
    flips = _tta_flips(tta)
    dev, notice = select_device(device)
    if mc_dropout and tta:
        raise InvalidInput("Use either test-time flips or MC dropout as the uncertainty source, not both at once.")
    samples = range(max(1, int(mc_dropout)))
    runs = [(m, f, s) for m in members for f in flips for s in samples]
    yield Progress(0, len(runs), notice)
    data, props, direction = _source_array(image)
    cancel = threading.Event()
    with torch_threads(threads):
        predictor, loaded = None, None
        for i, (member, flip, sample) in enumerate(runs):
            label = member.label + (f"/flip{''.join('zyx'[a] for a in flip)}" if flip else "")
            label += f"/sample{sample + 1}" if mc_dropout else ""
            if loaded != member:
                yield Progress(i, len(runs), f"loading {label}")
                predictor = load_member(
                    member, device=dev, trust_checkpoint=trust_checkpoint, use_mirroring=mirroring and not tta
                )
                if mc_dropout:
                    enable_mc_dropout(predictor, member.label)
                if tta:
                    check_flips_allowed(predictor, member.label)
                loaded = member
            events: queue.Queue = queue.Queue()
            result: dict[str, Any] = {}

            def work(predictor=predictor, flip=flip, events=events, result=result) -> None:
                try:
                    result["probs"] = _run_member(predictor, data, props, flip, events, cancel)
                except BaseException as exc:  # noqa: BLE001 - handed to the generator's thread
                    result["error"] = exc  # noqa: B023 - bound at once, in this call
                finally:
                    events.put(("done", None))

            thread = threading.Thread(target=work, name=f"nnunet-{i}", daemon=True)
            thread.start()
            try:
                while True:
                    kind, value = events.get()
                    if kind == "done":
                        break
                    if kind == "notice":
                        yield Progress(i, len(runs), str(value))
                    elif kind == "tile":
                        yield Progress(i, len(runs), f"{label}: sliding-window tile {value}")
            except BaseException:  # closed (GeneratorExit), Ctrl-C (KeyboardInterrupt) or any error while waiting
                _stop_member(thread, cancel)
                raise
            thread.join()
            if "error" in result:
                exc = result["error"]
                if isinstance(exc, SegUncError):
                    raise exc
                raise EngineFailed(f"nnU-Net failed on member {label}: {type(exc).__name__}: {exc}") from exc
            probs = np.ascontiguousarray(array_to_canonical(result.pop("probs"), direction))
            group = TTA_GROUP if tta else MC_GROUP if mc_dropout else member.group
            yield MemberProbabilities(label, probs, group=group, grid=image, labels=dataset_labels(member.model_dir))
            del probs  # the pipeline holds it only while adding it
    yield Progress(len(runs), len(runs), f"{len(runs)} member run(s) done")

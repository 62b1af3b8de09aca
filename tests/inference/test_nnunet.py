"""nnU-Net ensemble engine: equality with nnU-Net's own predictor, TTA un-flipping, safe loading, errors, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.cli import main
from napari_segunc.errors import InvalidInput
from napari_segunc.inference import nnunet
from napari_segunc.inference.demo_models import DEMO_DIR
from napari_segunc.inference.device import select_device, torch_threads
from napari_segunc.io import read_volume, write_volume
from napari_segunc.phantom import make_phantom
from napari_segunc.progress import run_job
from napari_segunc.uncertainty.pipeline import accumulate
from napari_segunc.volume import array_to_source

torch = pytest.importorskip("torch")
predict_mod = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")

MODEL_A = DEMO_DIR / "rater1_seed112233"
MODEL_B = DEMO_DIR / "rater2_seed112233"


@pytest.fixture(scope="module")
def flipped_image(tmp_path_factory):
    """A held-out phantom stored with a non-LPS direction, so file order ≠ canonical order."""
    folder = tmp_path_factory.mktemp("img")
    study = make_phantom(seed=77, n_raters=1, shape=(32, 64, 80))
    plain = write_volume(study.image, folder / "plain.nii.gz")
    img = sitk.ReadImage(str(plain))
    sitk.WriteImage(sitk.Flip(img, [True, False, True]), str(folder / "image.nii.gz"))
    return folder / "image.nii.gz"


@pytest.fixture(scope="module")
def one_tile_image(tmp_path_factory):
    """A phantom exactly one patch (32×64×64) large: no overlapping tiles, so nnU-Net's Gaussian weighting (its centre
    sits half a voxel off for even patch sizes) cancels and a flip-equivariant network is exactly equivariant."""
    folder = tmp_path_factory.mktemp("tile")
    study = make_phantom(seed=78, n_raters=1, shape=(32, 64, 64))
    return write_volume(study.image, folder / "image.nii.gz")


def predict(image, members, *, class_variance=True, **kwargs):
    """The one pipeline over nnU-Net's member source, as ``segunc predict`` runs it."""
    return accumulate(nnunet.predict_members(image, members, **kwargs), class_variance=class_variance)


def _run(job):
    """(accumulator, grid) of a finished pipeline."""
    return tuple(run_job(job, None)[:2])


def _nnunet_reference(model_dir, image_path):
    """nnU-Net alone: its reader, its own initialisation from the folder, predict_single_npy_array."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, props = SimpleITKIO().read_images([str(image_path)])
    predictor = predict_mod.nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=True,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=("all",))
    _, probs = predictor.predict_single_npy_array(data, props, None, None, True)
    return np.asarray(probs, np.float32)  # (C, z, y, x) in the file's array order


def test_ensemble_mean_equals_nnunet_own_predictions(flipped_image):
    image = read_volume(flipped_image)
    assert image.source.direction != image.direction  # the file order really differs from the canonical one
    members = nnunet.discover_members([MODEL_A, MODEL_B])
    assert [m.fold for m in members] == ["all", "all"]
    acc, grid = _run(predict(image, members, device="cpu"))
    ref_a, ref_b = _nnunet_reference(MODEL_A, flipped_image), _nnunet_reference(MODEL_B, flipped_image)
    mean = acc.result().mean_probabilities
    np.testing.assert_allclose(array_to_source(mean, image.source.direction), (ref_a + ref_b) / 2, atol=1e-5)
    # one member alone is nnU-Net's own prediction
    acc1, _ = _run(predict(image, members[:1], device="cpu"))
    np.testing.assert_allclose(
        array_to_source(acc1.result().mean_probabilities, image.source.direction), ref_a, atol=1e-5
    )
    assert acc.result().mutual_information.max() > 0  # two different models disagree somewhere


class _PointwiseDropout(torch.nn.Module):
    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, n_out, 1)
        self.drop = torch.nn.Dropout3d(0.5)

    def forward(self, x):
        return self.drop(self.conv(x))


class _Pointwise(torch.nn.Module):
    """A 1×1×1 network: equivariant to every flip, so TTA members must come back identical after un-flipping."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, n_out, 1)
        torch.nn.init.normal_(self.conv.weight, std=2.0)

    def forward(self, x):
        return self.conv(x)


def _loader_with(real_load, net_class, *, gaussian: bool):
    """load_member with the member's network swapped for a toy one (nnU-Net's predictor and plans kept)."""

    def load(member, **kwargs):
        predictor = real_load(member, **kwargs)
        torch.manual_seed(0)
        net = net_class(predictor.label_manager.num_segmentation_heads)
        predictor.network = net
        predictor.list_of_parameters = [net.state_dict()]
        # nnU-Net accumulates tile logits in float16 weighted by a Gaussian whose centre sits half a voxel off for
        # even patch sizes: that alone moves probabilities by up to 0.07 under a flip (see docs/inference.md). Plain
        # weights isolate what the TTA test checks: the flips and un-flips themselves.
        predictor.use_gaussian = gaussian
        return predictor

    return load


def _mirrored(load):
    """As if the member had been trained with nnU-Net's default mirroring on all three axes."""

    def wrapped(member, **kwargs):
        predictor = load(member, **kwargs)
        predictor.allowed_mirroring_axes = (0, 1, 2)
        return predictor

    return wrapped


def test_tta_flips_are_undone(one_tile_image, monkeypatch):
    image = read_volume(one_tile_image)
    # the demo models were trained without mirroring (left/right organs): flips are refused for them
    with pytest.raises(InvalidInput, match="trained without mirroring on every axis .allowed axes: none"):
        _run(predict(image, nnunet.discover_members([MODEL_A]), device="cpu", tta="flips"))
    real_load = _mirrored(nnunet.load_member)
    pointwise = _loader_with(real_load, _Pointwise, gaussian=False)
    monkeypatch.setattr(nnunet, "load_member", pointwise)
    acc, _ = _run(predict(image, nnunet.discover_members([MODEL_A]), device="cpu", tta="flips"))
    maps = acc.result("tta")
    assert maps.n_members == 8 and len(set(maps.members)) == 8
    assert float(maps.member_disagreement.max()) == 0.0
    assert float(maps.mutual_information.max()) < 1e-6
    # and the real (non-equivariant) network does disagree with itself under flips
    monkeypatch.setattr(nnunet, "load_member", real_load)
    acc, _ = _run(predict(image, nnunet.discover_members([MODEL_A]), device="cpu", tta="flips"))
    assert float(acc.result("tta").mutual_information.max()) > 1e-3


class Untrusted:
    """Not a tensor, number or plain container: torch.load(weights_only=True) refuses it."""


def test_checkpoint_loading_is_safe_and_errors_name_the_file(tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(MODEL_A, bad)
    ckpt_path = bad / "fold_all" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=True)
    torch.save({**ckpt, "extra": Untrusted()}, ckpt_path)
    member = nnunet.discover_members([bad])[0]
    with pytest.raises(InvalidInput, match="--trust-checkpoint"):
        nnunet.load_member(member)
    assert nnunet.load_member(member, trust_checkpoint=True).network is not None
    # a checkpoint of another architecture
    plans = json.loads((bad / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [4, 8, 16, 32]
    (bad / "plans.json").write_text(json.dumps(plans))
    torch.save(ckpt, ckpt_path)
    with pytest.raises(InvalidInput, match="does not fit the network"):
        nnunet.load_member(member)
    # incomplete folders and truncated files
    (bad / "plans.json").unlink()
    with pytest.raises(InvalidInput, match="plans.json"):
        nnunet.discover_members([bad])
    shutil.copyfile(MODEL_A / "plans.json", bad / "plans.json")
    ckpt_path.write_bytes(ckpt_path.read_bytes()[:1000])
    with pytest.raises(InvalidInput, match="checkpoint_final.pth"):
        nnunet.load_member(member)
    with pytest.raises(InvalidInput, match="fold_3"):
        nnunet.discover_members([MODEL_A], folds=["3"])


def test_device_choice_and_threads():
    dev, notice = select_device("auto")
    if not torch.cuda.is_available():
        assert dev.type in ("cpu", "mps") and ("CPU" in notice or "MPS" in notice)
        with pytest.raises(InvalidInput, match="CUDA"):
            select_device("cuda")
    with pytest.raises(InvalidInput, match="Unknown device"):
        select_device("tpu")
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_cancel_stops_between_tiles(flipped_image):
    image = read_volume(flipped_image)
    job = predict(image, nnunet.discover_members([MODEL_A, MODEL_B]), device="cpu")
    seen = []
    for progress in job:
        seen.append(progress.message)
        if "tile" in progress.message:
            job.close()  # what the widget's Cancel button does
            break
    assert any("tile 1" in m for m in seen)
    assert not any("rater2" in m for m in seen)  # the second member never started


def test_predict_command_and_ensemble_file(flipped_image, tmp_path, capsys):
    spec = {
        "members": [
            {"model": str(MODEL_A), "group": "rater1", "name": "r1"},
            {"model": str(MODEL_B), "group": "rater2", "name": "r2"},
        ]
    }
    (tmp_path / "ens.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(flipped_image),
                "--ensemble",
                str(tmp_path / "ens.json"),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--no-class-variance",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "rater1" in printed and "rater2" in printed
    for folder in (out, out / "rater1", out / "rater2"):  # every member at the top, one sub-folder per group
        assert (folder / "entropy.nii.gz").is_file() and (folder / "mutual_information.nii.gz").is_file()
    image = read_volume(flipped_image)
    seg = read_volume(out / "segmentation.nii.gz", kind="labels")
    assert seg.shape == image.shape and np.allclose(seg.spacing, image.spacing)
    assert main(["predict", str(flipped_image), "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_mc_dropout_needs_dropout_layers(flipped_image):
    image = read_volume(flipped_image)
    job = predict(image, nnunet.discover_members([MODEL_A]), device="cpu", mc_dropout=3)
    with pytest.raises(InvalidInput, match="no dropout layers"):
        _run(job)


def test_mc_dropout_samples_differ_when_the_network_has_dropout(flipped_image, monkeypatch):
    with_dropout = _loader_with(nnunet.load_member, _PointwiseDropout, gaussian=True)
    monkeypatch.setattr(nnunet, "load_member", with_dropout)
    image = read_volume(flipped_image)
    acc, _ = _run(predict(image, nnunet.discover_members([MODEL_A]), device="cpu", mc_dropout=3))
    maps = acc.result("mc_dropout")
    assert maps.n_members == 3 and float(maps.mutual_information.max()) > 1e-3


def test_cuda_out_of_memory_falls_back_step_by_step(flipped_image, monkeypatch):
    """An out-of-memory error from the network is retried with nnU-Net's results kept in RAM, then on the CPU, with a
    notice each time, and the member's probabilities come out the same (no GPU here: the errors are injected)."""
    image = read_volume(flipped_image)
    members = nnunet.discover_members([MODEL_A])
    acc, _ = _run(predict(image, members, device="cpu", class_variance=False))
    reference = acc.result().mean_probabilities

    # 1st error: nnU-Net's own fallback (results device → CPU) takes it; 2nd: ours, results kept in RAM; 3rd: ours,
    # the member finishes on the CPU.
    failures = {"left": 3}
    tile_call = nnunet._TileCounter.__call__

    def out_of_memory_twice(self, x):
        if failures["left"]:
            failures["left"] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return tile_call(self, x)

    load_member = nnunet.load_member

    def on_device(*args, **kwargs):  # as on a GPU: sliding-window results kept on the device
        predictor = load_member(*args, **kwargs)
        predictor.perform_everything_on_device = True
        return predictor

    monkeypatch.setattr(nnunet._TileCounter, "__call__", out_of_memory_twice)
    monkeypatch.setattr(nnunet, "load_member", on_device)
    messages: list[str] = []
    job = predict(image, members, device="cpu", class_variance=False)
    acc, _, _ = run_job(job, lambda report: messages.append(report.message))
    assert failures["left"] == 0
    assert any("retrying with the sliding window results kept in RAM" in m for m in messages), messages
    assert any("finishing this member on the CPU" in m for m in messages), messages
    np.testing.assert_allclose(acc.result().mean_probabilities, reference, atol=1e-6)

    failures["left"] = 4  # a fourth failure on the CPU is not an out-of-memory the fallbacks can fix: reported
    with pytest.raises(Exception, match="out of memory"):
        run_job(predict(image, members, device="cpu", class_variance=False))


def test_loading_members_on_the_cpu_prints_nothing(capsys, caplog):
    """nnU-Net 2.8 prints "perform_everything_on_device=True is only supported for cuda devices!" for every predictor
    built off CUDA: caught, the flag is off on the CPU, and it is said once at debug level, in our words."""
    member = nnunet.discover_members([MODEL_A])[0]
    with caplog.at_level("DEBUG", logger=nnunet.__name__):
        predictors = [nnunet.load_member(member, device="cpu") for _ in range(2)]
    assert capsys.readouterr().out == ""
    assert all(not p.perform_everything_on_device for p in predictors)
    said = [r for r in caplog.records if "sliding-window results in RAM" in r.getMessage()]
    assert len(said) <= 1 and all(r.levelname == "DEBUG" for r in said)  # once per process (maybe said earlier)


# ------------------------------------------------------------------------------------ the one pipeline, per source
def _tee(source, seen: list):
    """Pass a member source through, keeping a copy of every member's probabilities (what the pipeline avoids)."""
    from napari_segunc.members import MemberProbabilities

    for item in source:
        if isinstance(item, MemberProbabilities):
            seen.append((item.name, item.group, item.probabilities.astype(np.float64)))
        yield item


def _stacked_maps(members):
    """Reference maps from the stacked members, computed directly (scipy's entropy)."""
    import scipy.stats

    p = np.stack(members)
    mean = p.mean(axis=0)
    entropy = scipy.stats.entropy(mean, axis=0)
    expected = scipy.stats.entropy(p, axis=1).mean(axis=0)
    mutual_information = np.clip(entropy - expected, 0, None)
    return {
        "mean_probabilities": mean,
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": mutual_information,
        "segmentation": mean.argmax(axis=0),
    }


def _assert_pipeline_maps(acc, seen, group):
    chosen = [p for _name, g, p in seen if group == "all" or g == group]
    maps, ref = acc.result(group), _stacked_maps(chosen)
    assert maps.n_members == len(chosen) > 1
    for name, value in ref.items():
        np.testing.assert_allclose(getattr(maps, name), value, atol=1e-6, err_msg=f"{group}: {name}")


@pytest.mark.parametrize("source", ["ensemble", "tta", "mc_dropout"])
def test_each_nnunet_source_goes_through_the_one_pipeline(source, one_tile_image, monkeypatch):
    """nnU-Net members, TTA flips and MC-dropout samples: the source yields members (with the model's label names),
    the pipeline's maps equal the maps computed from the stacked members to 1e-6."""
    image = read_volume(one_tile_image)
    kwargs, group = {"mirroring": False}, {"ensemble": "rater1", "tta": "tta", "mc_dropout": "mc_dropout"}[source]
    members = nnunet.discover_members([MODEL_A, MODEL_B])
    if source == "ensemble":
        members = [dataclasses.replace(m, group=g) for m, g in zip(members, ["rater1", "rater2"], strict=True)]
    elif source == "tta":
        monkeypatch.setattr(nnunet, "load_member", _mirrored(nnunet.load_member))
        members, kwargs = members[:1], {"tta": "flips"}
    else:
        monkeypatch.setattr(nnunet, "load_member", _loader_with(nnunet.load_member, _PointwiseDropout, gaussian=True))
        members, kwargs = members[:1], {"mc_dropout": 3}
    seen: list = []
    acc, grid, labels = run_job(accumulate(_tee(nnunet.predict_members(image, members, device="cpu", **kwargs), seen)))
    assert grid is image and labels == {"liver": 1, "kidney_right": 2, "kidney_left": 3, "spleen": 4, "pancreas": 5}
    assert len(seen) == {"ensemble": 2, "tta": 8, "mc_dropout": 3}[source]
    assert all(p.shape == (6, *image.shape) for _n, _g, p in seen)
    _assert_pipeline_maps(acc, seen, "all")
    if source != "ensemble":
        _assert_pipeline_maps(acc, seen, group)
    assert acc.groups == ["all", *dict.fromkeys(g for _n, g, _p in seen)]

"""Checkpoints that cannot be loaded: one `InvalidInput` sentence naming the file and the fix for every kind of bad
file (empty, truncated, corrupt, not a checkpoint, holding code), for nnU-Net (with and without trust) and MedSAM2."""

from __future__ import annotations

import io
import pickle
import re
import shutil
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_segunc.cli import main
from napari_segunc.errors import InvalidInput
from napari_segunc.inference import medsam2, nnunet
from napari_segunc.inference.demo_models import DEMO_DIR

torch = pytest.importorskip("torch")

MODEL = DEMO_DIR / "rater1_seed112233"
CKPT = MODEL / "fold_all" / "checkpoint_final.pth"
MARKER = "segunc-test: the checkpoint's pickle called print"

EMPTY = r"is empty \(0 bytes\)"
TRUNCATED = r"is not a readable PyTorch checkpoint: it (is|looks) truncated or corrupt"
FOREIGN = r"is not a PyTorch checkpoint"
CODE = r"run code"


class _CallsPrint:
    """Unpickles as print(MARKER): a harmless stand-in for os.system."""

    def __reduce__(self):
        return (print, (MARKER,))


def _torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _damaged_data_pkl(good: bytes) -> bytes:
    """The checkpoint with 16 bytes in the middle of its data.pkl overwritten (the zip directory stays intact)."""
    info = next(i for i in zipfile.ZipFile(io.BytesIO(good)).infolist() if i.filename.endswith("/data.pkl"))
    name_len, extra_len = struct.unpack("<HH", good[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    return good[:start] + b"\xff" * 16 + good[start + 16 :]


def _zip_of_text() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes/readme.txt", "not weights")
    return buf.getvalue()


def _random_bytes() -> bytes:
    return b"\x13" + np.random.default_rng(7).integers(0, 256, 4095, dtype=np.uint8).tobytes()  # not PK, not 0x80


_LEGACY = {"network_weights": {"w": torch.zeros(64)}}

#: name → (bytes of the file, wording, holds code that the trust option could load)
CASES = {
    "empty": (lambda good: b"", EMPTY, False),
    "random-bytes": (lambda good: _random_bytes(), FOREIGN + r": it holds unrecognised binary data", False),
    "html-page": (
        lambda good: b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not Found</body></html>\n",
        FOREIGN + r": it holds an HTML page",
        False,
    ),
    "git-lfs-pointer": (
        lambda good: b"version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 4548697\n",
        FOREIGN + r".*git lfs pull",
        False,
    ),
    "zip-cut-at-10-bytes": (lambda good: good[:10], TRUNCATED, False),
    "zip-cut-in-half": (lambda good: good[: len(good) // 2], TRUNCATED, False),
    "zip-without-last-100-bytes": (lambda good: good[:-100], TRUNCATED, False),
    "zip-member-fails-crc": (_damaged_data_pkl, TRUNCATED + r".*checksum", False),
    "zip-not-from-torch": (lambda good: _zip_of_text(), FOREIGN + r".*zip archive of other files", False),
    "plain-pickle-of-numbers": (lambda good: pickle.dumps({"a": 1, "b": [2.0, 3.0]}), FOREIGN + r".*pickle", False),
    "plain-pickle-protocol-2": (lambda good: pickle.dumps({"a": 1}, protocol=2), FOREIGN + r".*pickle", False),
    "plain-pickle-with-reduce": (
        lambda good: pickle.dumps(_CallsPrint()),
        FOREIGN + r".*builtins\.print.*" + CODE,
        False,
    ),
    "legacy-cut-in-its-pickle": (lambda good: _torch_bytes(_LEGACY, legacy=True)[:40], TRUNCATED, False),
    "legacy-cut-in-its-tensors": (lambda good: _torch_bytes(_LEGACY, legacy=True)[:-20], TRUNCATED, False),
    "torch-save-with-reduce": (
        lambda good: _torch_bytes({**torch.load(CKPT, weights_only=True), "extra": _CallsPrint()}),
        r"holds Python objects besides tensors.*builtins\.print.*" + CODE,
        True,
    ),
    "legacy-torch-save-with-reduce": (
        lambda good: _torch_bytes({"extra": _CallsPrint()}, legacy=True),
        r"holds Python objects besides tensors.*builtins\.print.*" + CODE,
        True,
    ),
}


@pytest.fixture(scope="module")
def good_bytes() -> bytes:
    return CKPT.read_bytes()


@pytest.fixture()
def bad_file(request, good_bytes, tmp_path) -> tuple[Path, str, bool]:
    make, wording, code = CASES[request.param]
    path = tmp_path / f"{request.param}.pth"
    path.write_bytes(make(good_bytes))
    return path, wording, code


def _check(exc: pytest.ExceptionInfo, path: Path, wording: str) -> str:
    """Asserts the class, the path, the wording and one sentence; returns the message with the path as PATH."""
    assert exc.type is InvalidInput
    msg = str(exc.value)
    assert str(path) in msg, msg
    assert re.search(wording, msg), msg
    rest = msg.replace(str(path), "PATH")  # one sentence: no line break, no second sentence
    assert "\n" not in rest and ". " not in rest and rest.endswith("."), msg
    return rest


@pytest.mark.parametrize("bad_file", list(CASES), indirect=True)
def test_nnunet_checkpoint_errors(bad_file, capsys):
    path, wording, code = bad_file
    with pytest.raises(InvalidInput) as exc:
        nnunet._load_checkpoint(path, trust=False)
    msg = _check(exc, path, wording)
    assert ("--trust-checkpoint" in msg) is code
    assert ("Ensemble dock" in msg) is code
    assert MARKER not in capsys.readouterr().out  # nothing was unpickled


@pytest.mark.parametrize("bad_file", [k for k, v in CASES.items() if not v[2]], indirect=True)
def test_trust_does_not_rescue_a_broken_file(bad_file, capsys):
    """With trust, a truncated, corrupt or foreign file gets the same message (never a traceback)."""
    path, wording, _ = bad_file
    with pytest.raises(InvalidInput) as exc:
        nnunet._load_checkpoint(path, trust=True)
    msg = _check(exc, path, wording)
    assert "--trust-checkpoint" not in msg
    assert MARKER not in capsys.readouterr().out  # a plain pickle is not unpickled, even when trusted


@pytest.mark.parametrize("bad_file", list(CASES), indirect=True)
def test_medsam2_checkpoint_errors(bad_file, capsys):
    path, wording, code = bad_file
    with pytest.raises(InvalidInput) as exc:
        medsam2._read_state_dict(path)
    msg = _check(exc, path, wording)
    assert "--trust-checkpoint" not in msg and "trust" not in msg
    if code:
        assert "will not unpickle it" in msg and "state_dict" in msg
    assert MARKER not in capsys.readouterr().out


def test_trusted_code_bearing_checkpoint_is_unpickled_and_loads(good_bytes, tmp_path, capsys):
    """The code-bearing test file really runs code under weights_only=False (print, harmless), and only then."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    path = folder / "fold_all" / "checkpoint_final.pth"
    path.write_bytes(CASES["torch-save-with-reduce"][0](good_bytes))
    member = nnunet.discover_members([folder])[0]
    with pytest.raises(InvalidInput, match="--trust-checkpoint"):
        nnunet.load_member(member)
    assert MARKER not in capsys.readouterr().out
    assert nnunet.load_member(member, trust_checkpoint=True).network is not None
    assert MARKER in capsys.readouterr().out


def test_plain_pickle_with_code_is_never_unpickled(good_bytes, tmp_path, capsys):
    """torch.load(weights_only=False) would run the plain pickle's code and then fail anyway (no torch.save magic
    number): so it is refused, trusted or not, without unpickling."""
    path = tmp_path / "plain.pth"
    path.write_bytes(CASES["plain-pickle-with-reduce"][0](good_bytes))
    with pytest.raises(RuntimeError, match="magic number"):
        torch.load(path, weights_only=False)  # the proof, with a harmless callable
    assert MARKER in capsys.readouterr().out
    for trust in (False, True):
        with pytest.raises(InvalidInput, match="do not load it"):
            nnunet._load_checkpoint(path, trust=trust)
    assert MARKER not in capsys.readouterr().out


def test_trusted_checkpoint_that_fails_to_unpickle(tmp_path, monkeypatch):
    """A trusted checkpoint naming a class that is not installed here: InvalidInput, not the unpickler's error."""
    module = types.ModuleType("segunc_test_gone")

    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = module.__name__, "Thing"
    module.Thing = Thing
    path = tmp_path / "needs_module.pth"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, module.__name__, module)
        torch.save({"network_weights": {}, "extra": Thing()}, path)
    assert module.__name__ not in sys.modules
    with pytest.raises(InvalidInput, match="segunc_test_gone.Thing.*--trust-checkpoint"):
        nnunet._load_checkpoint(path, trust=False)
    with pytest.raises(InvalidInput) as exc:
        nnunet._load_checkpoint(path, trust=True)
    msg = _check(exc, path, r"could not be unpickled even as a trusted file .*segunc_test_gone.*not installed here")
    assert "--trust-checkpoint" not in msg


# ---------------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def phantom_image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    assert main(["phantom", str(folder)]) == 0
    return folder / "image.nii.gz"


@pytest.mark.parametrize(
    ("case", "extra", "wording"),
    [
        ("html-page", [], FOREIGN),
        ("zip-cut-in-half", ["--trust-checkpoint"], TRUNCATED),  # trusting a truncated file: still no traceback
    ],
)
def test_cli_predict_with_a_bad_checkpoint(case, extra, wording, phantom_image, good_bytes, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    path = folder / "fold_all" / "checkpoint_final.pth"
    path.write_bytes(CASES[case][0](good_bytes))
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["predict", str(phantom_image), "--model", str(folder), "--out", str(out), "-q", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "segunc predict: error: " in err and str(path) in err
    assert re.search(wording, err), err
    assert "Traceback" not in err and "--trust-checkpoint" not in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))

"""Loading PyTorch checkpoints safely, with one clear message for every way a file can fail to load.

`load_weights` reads a checkpoint with ``torch.load(weights_only=True)``. When that fails, for whatever reason, the
file itself is inspected (never only torch's error text) and the failure is told as one of: the file is empty; it is
truncated or corrupt (a zip whose directory or checksums are bad, a pickle stream that ends early); it is not a
PyTorch checkpoint at all (text, an HTML page, random bytes, a zip of something else, a plain ``pickle.dump``); or it
holds Python objects besides tensors (its pickle names classes or functions outside torch's weights-only allowlist),
whose unpickling can run code. Only that last case can be loaded by trusting the file (``weights_only=False``).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import dataclasses
import logging
import pickletools
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InvalidInput

__all__ = ["load_weights"]

log = logging.getLogger(__name__)

#: the first object of a legacy (pre-zip, torch < 1.6) ``torch.save`` stream
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_PICKLE_PROTO = 0x80
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
#: what torch.load(weights_only=True) accepts besides plain values, if torch's own list cannot be read
_FALLBACK_ALLOWED = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.device",
        "torch.FloatStorage",
        "torch.DoubleStorage",
        "torch.HalfStorage",
        "torch.BFloat16Storage",
        "torch.LongStorage",
        "torch.IntStorage",
        "torch.ShortStorage",
        "torch.CharStorage",
        "torch.ByteStorage",
        "torch.BoolStorage",
        "_codecs.encode",
        "builtins.set",
        "builtins.bytearray",
        "builtins.complex",
    }
)


@dataclasses.dataclass(frozen=True)
class _Verdict:
    """What the file is: ``kind`` in empty / damaged / foreign / code / unknown, with a phrase for the message."""

    kind: str
    detail: str = ""
    torch_format: bool = False  # a torch.save file (zip with data.pkl, or the legacy pickle stream)


def load_weights(path: str | Path, *, trust: bool, what: str, trust_hint: str) -> object:
    """The object in the checkpoint `path`, read with ``torch.load(weights_only=True)`` (memory-mapped if a zip).

    Every failure raises `InvalidInput` with one sentence naming the file and the fix. A file that holds Python
    objects besides tensors is loaded with ``weights_only=False`` only when `trust` is true; otherwise its message
    ends with `trust_hint` (what the user can do: the trust option, or re-saving the weights). `what` names the file
    in messages (e.g. "nnU-Net checkpoint"). A truncated, corrupt or foreign file is refused whatever `trust` says.
    """
    import torch

    path = Path(path)
    try:
        with _quiet_torch():
            # mmap: the weights stay in the page cache until the network copies them (a copy that releases the GIL);
            # a plain read fills fresh memory while holding it, which stalls napari's window
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 - torch raises almost anything on a bad file; the file is inspected next
        first = exc
    verdict = _inspect(path, first)
    if verdict.kind == "code" and verdict.torch_format and trust:
        log.warning("unpickling %s fully (trusted by the user)", path)
        try:
            with _quiet_torch():
                return torch.load(path, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(path))
        except Exception as exc:  # noqa: BLE001 - whatever the unpickled code raises
            raise InvalidInput(_trusted_failure(path, exc, what)) from None
    raise InvalidInput(_message(path, verdict, what, trust_hint)) from None


# ---------------------------------------------------------------------------------------------------- messages
def _message(path: Path, v: _Verdict, what: str, trust_hint: str) -> str:
    if v.kind == "unreadable":
        return f"{path} cannot be read ({v.detail}); check that the {what} exists and that you may read it."
    if v.kind == "empty":
        return f"{path} is empty (0 bytes): copy or download the {what} again."
    if v.kind == "damaged":
        return (
            f"{path} is not a readable PyTorch checkpoint: it is truncated or corrupt ({v.detail}); copy or download "
            f"the {what} again."
        )
    if v.kind == "foreign":
        return f"{path} is not a PyTorch checkpoint: it holds {v.detail}; check the path, or get the {what} again."
    if v.kind == "code" and not v.torch_format:
        return (
            f"{path} is not a PyTorch checkpoint but a plain Python pickle (not written by torch.save) that names "
            f"{v.detail}, so loading it could run code; do not load it, and get the {what} as saved by torch.save."
        )
    if v.kind == "code":
        return (
            f"{path} holds Python objects besides tensors and plain values ({v.detail}), so loading it means "
            f"unpickling, which can run code; {trust_hint}"
        )
    return (
        f"{path} is not a readable PyTorch checkpoint: it looks truncated or corrupt ({v.detail}); copy or download "
        f"the {what} again."
    )


def _trusted_failure(path: Path, exc: BaseException, what: str) -> str:
    detail = _short(exc)
    if isinstance(exc, ImportError | AttributeError):
        return (
            f"{path} could not be unpickled even as a trusted file ({detail}): it needs a Python module or class "
            f"that is not installed here; install the package that wrote the {what}, or re-save only its tensors."
        )
    return (
        f"{path} could not be unpickled even as a trusted file ({detail}); it is damaged or was written by an "
        f"incompatible program: copy or download the {what} again."
    )


def _short(exc: BaseException, limit: int = 160) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text.split(". ")[0].rstrip(".")  # its first sentence: the message stays one sentence
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _names(globals_: Iterable[str], limit: int = 3) -> str:
    names = list(dict.fromkeys(globals_))
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Hide torch's warning that a pickle uses another protocol than its own (nothing the user can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
        yield


# ---------------------------------------------------------------------------------------------------- inspection
def _inspect(path: Path, exc: BaseException) -> _Verdict:
    """Classify a file torch.load refused (`exc` only fills in the detail of a file that looks intact)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(1024)
    except OSError as err:
        return _Verdict("unreadable", err.strerror or type(err).__name__)
    if size == 0:
        return _Verdict("empty")
    if head.startswith(b"PK"):
        return _inspect_zip(path, exc)
    if head[0] == _PICKLE_PROTO:
        return _inspect_pickle(path, exc)
    return _Verdict("foreign", _describe_bytes(head))


def _describe_bytes(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace")
    printable = sum((c.isprintable() and c != "\ufffd") or c in "\r\n\t" for c in text)
    if printable < 0.95 * len(text):
        return "unrecognised binary data (neither a zip archive nor a pickle)"
    lower = text.lstrip().lower()
    if lower.startswith("version https://git-lfs"):
        return "a Git LFS pointer instead of the file itself (fetch it with 'git lfs pull')"
    if lower.startswith(("<!doctype html", "<html", "<?xml", "<head", "<body")) or "<html" in lower:
        return "an HTML page (a web page saved in place of the file?)"
    return "text, not weights"


def _inspect_zip(path: Path, exc: BaseException) -> _Verdict:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = next((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if pkl is None:
                listed = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
                return _Verdict("foreign", f"a zip archive of other files ({listed or 'empty'}), without data.pkl")
            bad = z.testzip()
            if bad is not None:
                return _Verdict("damaged", f"the zip member {bad} fails its checksum", torch_format=True)
            data = z.read(pkl)
    except zipfile.BadZipFile:
        return _Verdict("damaged", "its zip directory is missing or damaged, as when a copy stops early", True)
    except Exception as err:  # noqa: BLE001 - zlib.error, encrypted or oddly compressed members and the like
        return _Verdict("damaged", f"a zip member cannot be read: {_short(err, 80)}", torch_format=True)
    try:
        found = _globals(pickletools.genops(data))
    except Exception as err:  # noqa: BLE001 - pickletools raises ValueError, but an odd stream may raise others
        return _Verdict("damaged", f"its data.pkl is not a complete pickle: {_short(err, 80)}", torch_format=True)
    return _code_or_unknown(found, exc, torch_format=True)


def _inspect_pickle(path: Path, exc: BaseException) -> _Verdict:
    """A raw pickle stream: legacy torch.save (magic number, version, sys info, object, storage keys) or pickle.dump."""
    found: list[str] = []
    try:
        with path.open("rb") as f:
            first = list(pickletools.genops(f))
            magic = [arg for op, arg, _ in first if op.name in ("LONG1", "LONG4", "LONG", "INT")]
            found += _globals(first)
            legacy = magic == [_LEGACY_MAGIC] and not found
            if legacy:
                for _ in range(4):  # protocol version, sys info, the object, storage keys (then raw tensor bytes)
                    found += _globals(pickletools.genops(f))
    except Exception as err:  # noqa: BLE001 - pickletools raises ValueError ("pickle exhausted before seeing STOP")
        return _Verdict("damaged", f"its pickle stream breaks off or is damaged: {_short(err, 80)}", torch_format=True)
    if not legacy:
        if _not_allowed(found):
            return _Verdict("code", _names(_not_allowed(found)), torch_format=False)
        return _Verdict("foreign", "a plain Python pickle (pickle.dump), not a file written by torch.save")
    return _code_or_unknown(found, exc, torch_format=True)


def _code_or_unknown(found: list[str], exc: BaseException, *, torch_format: bool) -> _Verdict:
    odd = _not_allowed(found)
    if odd:
        return _Verdict("code", _names(odd), torch_format=torch_format)
    return _Verdict("unknown", _short(exc), torch_format=torch_format)


def _globals(ops: Iterable[tuple]) -> list[str]:
    """The ``module.name`` of every class or function a pickle refers to (GLOBAL, INST, STACK_GLOBAL, EXT*).

    STACK_GLOBAL takes its two strings from the stack; a small model of the stack and memo (strings only) finds them;
    one that cannot be followed is reported as ``?`` (and so counts as not allowed).
    """
    found: list[str] = []
    stack: list[object] = []
    memo: dict[object, object] = {}
    for op, arg, _ in ops:
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.append(_py3_name(*str(arg).split(" ", 1)))
        elif name == "STACK_GLOBAL":
            mod, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
            found.append(_py3_name(mod, attr) if isinstance(mod, str) and isinstance(attr, str) else "?")
        elif name in _EXT_OPS:
            found.append(f"?(extension code {arg})")
        if name in _STRING_OPS:
            stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name in _GET_OPS:
            stack.append(memo.get(arg))
        elif name in _PUT_OPS:
            memo[arg] = stack[-1] if stack else None
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif op.stack_after:
            stack.append(None)
        del stack[:-4]  # only the last two matter
    return found


def _py3_name(module: str, name: str = "") -> str:
    """``module.name`` as Python 3 unpickles it (protocol ≤ 2 pickles, torch.save's, say ``__builtin__.set``)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _not_allowed(found: Iterable[str]) -> list[str]:
    allowed = _allowed_globals()
    return [g for g in found if g not in allowed]


def _allowed_globals() -> frozenset[str]:
    """The globals torch.load(weights_only=True) accepts: torch's own list plus those added with add_safe_globals."""
    try:
        import torch
        from torch import _weights_only_unpickler as wu

        allowed = set(wu._get_allowed_globals())
        for entry in torch.serialization.get_safe_globals():
            if isinstance(entry, tuple):
                allowed.add(str(entry[1]))
            else:
                allowed.add(f"{getattr(entry, '__module__', '')}.{getattr(entry, '__qualname__', '')}")
        return frozenset(allowed)
    except Exception:  # noqa: BLE001 - a private torch API; fall back to the usual names
        return _FALLBACK_ALLOWED

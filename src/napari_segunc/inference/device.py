"""Where inference runs: ``auto`` → CUDA, else Apple MPS, else the CPU (with a notice), and torch's thread count."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from ..errors import InvalidInput

__all__ = ["select_device", "torch_threads"]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")


def select_device(name: str = "auto"):
    """(torch.device, notice): the device to use and a sentence for the user about the choice.

    ``auto`` takes CUDA when a GPU is usable, then MPS, then the CPU (slower: the notice says so). Asking for an
    unavailable device raises `InvalidInput` with what is available.
    """
    import torch

    name = (name or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InvalidInput(f"Unknown device '{name}'; use one of {', '.join(DEVICES)} (or cuda:N).")
    has_cuda = torch.cuda.is_available()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if has_cuda:
            dev = torch.device("cuda")
            return dev, f"Running on the GPU ({torch.cuda.get_device_name(dev)})."
        if has_mps:
            return torch.device("mps"), "Running on the Apple GPU (MPS)."
        return torch.device("cpu"), (
            f"No GPU found: running on the CPU with {torch.get_num_threads()} threads (expect minutes per model)."
        )
    if name.startswith("cuda") and not has_cuda:
        raise InvalidInput("CUDA was asked for but no usable NVIDIA GPU/driver was found; use --device cpu or auto.")
    if name == "mps" and not has_mps:
        raise InvalidInput("MPS was asked for but is not available on this machine; use --device cpu or auto.")
    dev = torch.device(name)
    return dev, f"Running on {dev}."


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (default: the CPUs this process may use), then restore it."""
    import torch

    before = torch.get_num_threads()
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

"""Where models run: ``--device cpu|cuda|cuda:N|mps|auto`` resolved once, checked up front.

``auto`` (the CLI default) is CUDA when ``torch.cuda.is_available()``, else the CPU (never
MPS implicitly: ask for it with ``mps``). A device that is not there is refused with one
line *before* any work starts (no data read, no model built, nothing written).

CPU-only machinery elsewhere in invlab (the glibc allocator setting and the per-cell thread
counts of the studies, :mod:`invlab.allocator`) applies only when the device is the CPU.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from invlab.errors import InvlabError

__all__ = ["DEVICE_CHOICES", "ENV", "DeviceError", "add_device_argument", "device_name",
           "model_device", "resolve_device", "set_study_device", "study_device"]

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"
_SPEC = re.compile(r"^(cpu|cuda|mps|auto)(:\d+)?$")


class DeviceError(InvlabError, ValueError):
    """A device that is misspelt or not present on this machine (one-line message)."""


def resolve_device(spec: Any = "auto", *, where: str = "--device") -> torch.device:
    """``torch.device`` for ``spec`` (a string, a ``torch.device`` or None = ``auto``).

    Raises:
        DeviceError: unknown spelling, CUDA/MPS not available, or ``cuda:N`` with ``N``
            at least the number of visible CUDA devices.
    """
    if spec is None:
        spec = "auto"
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str) or not _SPEC.match(spec.strip().lower()):
        raise DeviceError(f"{where} {spec!r}: expected {DEVICE_CHOICES}")
    s = spec.strip().lower()
    kind, _, index = s.partition(":")
    if kind == "auto":
        if index:
            raise DeviceError(f"{where} {spec!r}: expected {DEVICE_CHOICES}")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{where} {spec}: CUDA is not available on this machine "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is "
                              f"False); use --device cpu or auto")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise DeviceError(f"{where} {spec}: this machine has {count} CUDA device(s) "
                              f"(cuda:0 .. cuda:{count - 1})")
        return torch.device(s)
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise DeviceError(f"{where} {spec}: MPS (Apple GPU) is not available on this machine; "
                          f"use --device cpu or auto")
    return torch.device(s)


def device_name(device: torch.device) -> str:
    """``cpu``, ``cuda:0 (NVIDIA H100 ...)`` or ``mps``: what results and stores record."""
    if device.type == "cuda":
        i = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return str(device)


def add_device_argument(p: Any, what: str = "the model") -> None:
    """``--device`` on an argparse parser (default ``auto``)."""
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help=f"where {what} runs: {DEVICE_CHOICES} (default auto: CUDA when "
                        "available, else cpu)")


ENV = "INVLAB_DEVICE"
"""Environment variable holding the device studies run their cells on (set by ``invlab study
--device``; inherited by the worker processes of the process executor)."""


def study_device() -> torch.device:
    """The device study cells train and measure on: ``$INVLAB_DEVICE`` (default ``cpu``)."""
    return resolve_device(os.environ.get(ENV) or "cpu", where=f"${ENV}")


def set_study_device(spec: Any) -> torch.device:
    """Resolve ``spec`` (one-line :class:`DeviceError` when absent) and make it the device of
    the study cells run by this process and the workers it starts."""
    dev = resolve_device(spec)
    os.environ[ENV] = str(dev)
    return dev


def model_device(model: Any) -> torch.device:
    """Where ``model``'s first parameter (or buffer) is; the CPU for a model without any."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")

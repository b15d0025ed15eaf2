"""Inference device strings: the one place they are parsed and checked.

A device is written ``auto`` (CUDA when this machine has it, else the CPU), ``cpu``,
``cuda`` (the current CUDA device) or ``cuda:N``. :func:`check_device` checks the
spelling only (no torch, no hardware: ROS parameter checks and CLI parsing use it);
:func:`resolve_device` also checks that the device exists here and returns the
``torch.device`` to run on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["DEVICE_CHOICES_TEXT", "DeviceError", "check_device", "cpu_count", "resolve_device"]

DEVICE_CHOICES_TEXT = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device string is misspelt, or names a device this machine does not have."""


def check_device(device: object) -> str:
    """Return ``device`` when it is spelt ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else raise DeviceError."""
    if isinstance(device, str):
        if device in ("auto", "cpu", "cuda"):
            return device
        if device.startswith("cuda:") and device[5:].isdigit():
            return device
    raise DeviceError(f"device must be {DEVICE_CHOICES_TEXT}; got {device!r}")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (must exist here).

    Raises DeviceError naming the problem: a misspelt device, CUDA asked for on a machine
    without it (or a PyTorch build without CUDA), or a CUDA index beyond the devices present.
    """
    device = check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} requested but CUDA is not available here "
            f"(no CUDA GPU or driver, or a CPU-only PyTorch build); use device 'cpu' or 'auto'"
        )
    dev = torch.device(device)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"device {device!r} requested but this machine has {count} CUDA device(s)")
    return dev


def cpu_count() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup (container) CPU quota.

    ``os.cpu_count()`` counts the host's CPUs, which over-subscribes a container limited
    to fewer; the network's thread pools are sized from this instead.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity count stands
    return max(1, n)

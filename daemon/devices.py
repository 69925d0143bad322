"""Which torch device the engine runs on: CUDA, then Apple's MPS, then the CPU, unless told."""

from __future__ import annotations

import torch

from .imaging import EngineError


class DeviceError(EngineError):
    """A device was asked for that this machine does not have, or does not exist."""


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """`None` or "auto": the best device here; else the named one, checked to exist."""
    if name is None or str(name).strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(str(name).strip().lower())
    except (RuntimeError, ValueError):
        raise DeviceError(
            f"unknown device {str(name)!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device cuda was asked for, but no CUDA GPU is usable here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {device} was asked for, but only {count} CUDA GPU(s) exist")
    elif device.type == "mps":
        if not mps_available():
            raise DeviceError("device mps was asked for, but Apple's MPS is not usable here")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {str(name)!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def describe(device: torch.device) -> str:
    """A short human name: "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)", "mps"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type

"""Device names as users type them: ``auto`` (CUDA when torch sees it, else CPU), ``cpu``, ``cuda``,
``cuda:N``. One function so every command and API accepts and refuses the same names."""

from __future__ import annotations

import torch

from genfoundry.errors import DeviceError

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The `torch.device` for `device`; a clear `DeviceError` for a name torch cannot run here."""
    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise DeviceError(f"device {device!r}: expected cuda:N with N a GPU index, e.g. cuda:0")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if index_text and int(index_text) >= count:
            raise DeviceError(f"device {device!r}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
        return torch.device(name)
    raise DeviceError(f"unknown device {device!r}; expected {DEVICE_HELP}")

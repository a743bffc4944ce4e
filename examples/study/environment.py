"""The software and hardware a run used, for the report's reproducibility section."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

__all__ = ["environment"]

_PACKAGES = ("advkit", "torch", "torchvision", "numpy", "pillow", "matplotlib", "tqdm")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(device: torch.device) -> dict[str, Any]:
    """Python, package versions, platform, CPU and accelerator of this run."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in _PACKAGES},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info

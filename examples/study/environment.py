"""The software and hardware a run used, for the report's reproducibility section."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

from advkit.evaluation import compute_settings

__all__ = ["environment"]

_PACKAGES = ("advkit", "torch", "torchvision", "numpy", "pillow", "matplotlib", "tqdm")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    """Python, package versions, platform, CPU and accelerator of this run."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in _PACKAGES},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Thread count and determinism switches: the numbers of a run depend on them.
        "compute_settings": compute_settings(),
        "device": str(device),
    }
    if hasattr(os, "getloadavg"):  # timings mean little without the machine's load
        info["load_average_1_5_15_min"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info

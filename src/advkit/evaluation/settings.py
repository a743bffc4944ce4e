"""The torch settings that change computed numbers: thread count and determinism switches.

Results computed on the CPU depend on torch's intra-op thread count (a reduction split over
another number of threads adds its floats in another order, and one flipped prediction changes
a training run from then on), and on a GPU on the determinism and TF32 switches. Every results
file the study and the benchmarks write records :func:`compute_settings`, so two runs that
disagree can be told apart from a bug.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["compute_settings"]


def compute_settings() -> dict[str, Any]:
    """torch's settings that decide float rounding in this process, as a JSON-ready dict.

    Returns:
        ``torch_threads`` (:func:`torch.get_num_threads`), ``interop_threads``,
        ``deterministic_algorithms`` (:func:`torch.are_deterministic_algorithms_enabled`) and
        ``deterministic_warn_only``, ``cudnn_enabled``, ``cudnn_deterministic``,
        ``cudnn_benchmark``, ``cudnn_allow_tf32``, ``matmul_allow_tf32``,
        ``float32_matmul_precision`` and ``cpu_capability`` (the instruction set torch's CPU
        kernels use, e.g. ``"AVX2"``).

    Example:
        >>> import torch
        >>> from advkit.evaluation import compute_settings
        >>> settings = compute_settings()
        >>> settings["torch_threads"] == torch.get_num_threads()
        True
    """
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu_capability": capability,
    }

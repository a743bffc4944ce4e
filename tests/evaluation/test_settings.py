"""compute_settings: the thread count and determinism switches, read from torch as they are."""

from __future__ import annotations

import json

import torch

from advkit.evaluation import compute_settings


def test_compute_settings_follow_torch() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        settings = compute_settings()
        assert settings["torch_threads"] == 1
        assert settings["deterministic_algorithms"] is True
        assert settings["deterministic_warn_only"] is True
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    settings = compute_settings()
    assert settings["torch_threads"] == threads
    assert settings["deterministic_algorithms"] is False
    assert settings["cudnn_deterministic"] is torch.backends.cudnn.deterministic
    assert json.loads(json.dumps(settings)) == settings  # JSON-ready as it is

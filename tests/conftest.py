"""Shared fixtures: one tiny model and seeded, learnable image data for every test."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import Tensor, nn

from advkit.attacks import ModelWork

settings.register_profile(
    "advkit", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("advkit")

# The tests' models are tiny: a second thread costs more in synchronization than it saves, and
# on a shared machine it makes the suite's run time erratic.
torch.set_num_threads(1)

NUM_CLASSES = 4
IMAGE_SIZE = 8


class RowCounter(nn.Module):
    """The model, counting the rows of its forward passes (with and without input gradients)
    and of the backward passes through it: an independent count of the model work advkit
    reports (``ModelWork``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_rows = self.gradient_rows = self.backward_rows = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_rows += x.shape[0]

            def hook(grad: Tensor, rows: int = x.shape[0]) -> None:
                self.backward_rows += rows

            out.register_hook(hook)
        else:
            self.forward_rows += x.shape[0]
        return out

    def counted(self) -> ModelWork:
        """The rows counted so far."""
        return ModelWork(self.forward_rows, self.gradient_rows, self.backward_rows)


def tiny_model(num_classes: int = NUM_CLASSES, channels: int = 8, seed: int = 0) -> nn.Module:
    """Conv -> BatchNorm -> ReLU -> pool -> linear: every layer kind the library must handle."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


def blob_images(
    n: int, *, num_classes: int = NUM_CLASSES, size: int = IMAGE_SIZE, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images in ``[0, 1]`` whose class is a faint colour-and-position pattern plus noise.

    Learnable in a few seconds, yet small perturbations can flip it: a fair target for attacks.
    """
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 3, size, size, generator=gen)
    labels = torch.arange(n) % num_classes
    noise = torch.rand(n, 3, size, size, generator=gen)
    images = 0.5 * patterns[labels] + 0.5 * noise
    return images.clamp(0, 1), labels


def train_tiny(
    model: nn.Module, images: Tensor, labels: Tensor, epochs: int = 30, lr: float = 0.02
) -> nn.Module:
    """Full-batch Adam on the blobs; reaches ~100% training accuracy in about a second.

    Trained in float64 and returned in float32: this training is chaotic in float32 (a
    1e-7 relative change of the initial weights moves how many samples FGSM at 4/255 fools
    from 2 to 19 of 64), so the kernels of another CPU gave another model, and tests that need
    some samples fooled and some not failed there. In float64 the result is the same to float32
    precision for changes up to 1e-12.
    """
    model.double()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images.double()), labels).backward()
        optimizer.step()
    model.eval().float()
    for param in model.parameters():
        param.grad = None
    return model


@pytest.fixture
def model() -> nn.Module:
    """A fresh, untrained tiny model in eval mode."""
    return tiny_model().eval()


@pytest.fixture
def batch() -> tuple[Tensor, Tensor]:
    """Sixteen seeded images and labels."""
    return blob_images(16)


@pytest.fixture
def reference_case() -> tuple[nn.Module, Tensor, Tensor]:
    """The untrained model (seed 3, eval mode) and 32 blob images the attacks are compared on
    against the papers' formulas and torchattacks."""
    images, labels = blob_images(32, seed=3)
    return tiny_model(seed=3).eval(), images, labels


def shared_trained_model() -> tuple[nn.Module, Tensor, Tensor]:
    """The model of ``trained_model_and_data``, trained anew, with its 256 blob images."""
    images, labels = blob_images(256)
    model = train_tiny(tiny_model(), images, labels, epochs=60, lr=0.005)
    return model, images, labels


@pytest.fixture(scope="session")
def trained_model_and_data() -> tuple[nn.Module, Tensor, Tensor]:
    """A tiny model trained on 256 blob images (shared: tests must not modify it)."""
    return shared_trained_model()


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def load_benchmark() -> Iterator[Callable[[str], ModuleType]]:
    """``load_benchmark("attack_loop")`` imports ``benchmarks/attack_loop.py``.

    The scripts import each other by their bare names (as a script's folder is on
    ``sys.path``); those modules are dropped again afterwards, so no test sees another's.
    """
    before = set(sys.modules)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None) or ""
            if Path(path).parent == BENCHMARKS:
                del sys.modules[name]


def free_port() -> int:
    """A TCP port free on this machine now (for a two-process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_two_ranks(
    worker: Path, out_dir: Path, *, env: dict[str, str] | None = None, timeout: float = 180
) -> list[dict]:
    """Run ``worker out_dir`` in two processes started the way torchrun starts them (RANK,
    WORLD_SIZE, MASTER_ADDR/PORT, gloo); return what each saved as ``rank<R>.pt``."""
    port = free_port()
    processes = []
    for rank in range(2):
        rank_env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(worker), str(out_dir)],
                env=rank_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"the {worker.name} processes did not finish within {timeout:g} s")
    for rank, process in enumerate(processes):
        assert process.returncode == 0, f"rank {rank} failed:\n{outputs[rank][-4000:]}"
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]

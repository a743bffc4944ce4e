"""Three small classifiers of real handwritten digits for the AutoAttack tests.

``standard`` is trained on clean images, ``pgd`` adversarially (PGD, eps 0.1, the issue's
setting), ``masked`` behind an input quantization ``round(x * 4) / 4`` whose gradient is zero
almost everywhere: a gradient-masking defense that is not robust.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from advkit.attacks import PGD

EPS = 0.1
"""The L-inf radius of the tests, on digits scaled to ``[0, 1]``."""


def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sklearn's 8x8 digits in ``[0, 1]``: 1297 training and 500 test images, a fixed split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return images[500:], labels[500:], images[:500], labels[:500]


class Quantized(nn.Module):
    """Input quantization to ``levels + 1`` grey levels in front of a model (no gradient)."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def _train(
    model: nn.Module, images: Tensor, labels: Tensor, epochs: int, adversarial: bool
) -> nn.Module:
    """Adam on minibatches of 128; with ``adversarial``, on PGD-5 examples at :data:`EPS`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    attack = PGD(eps=EPS, steps=5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        order = torch.randperm(labels.shape[0], generator=gen)
        for start in range(0, labels.shape[0], 128):
            x, y = images[order[start : start + 128]], labels[order[start : start + 128]]
            if adversarial:
                x = attack(model, x, y, generator=gen)
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    for param in model.parameters():
        param.grad = None
    return model


@functools.cache
def trained(kind: str) -> nn.Module:
    """The ``"standard"``, ``"pgd"`` or ``"masked"`` model, trained once per session."""
    x, y, _, _ = digits()
    if kind == "standard":
        return _train(_cnn(0), x, y, epochs=10, adversarial=False)
    if kind == "pgd":
        return _train(_cnn(0), x, y, epochs=15, adversarial=True)
    if kind == "masked":
        return _train(Quantized(_cnn(0)), x, y, epochs=10, adversarial=False)
    raise ValueError(f"unknown model kind {kind!r}")

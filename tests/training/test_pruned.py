"""A physically pruned model (filters removed, parameters replaced) trains with a factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from training_helpers import adam, loader, one_thread, quiet_trainer, split_blobs  # noqa: F401

from conftest import tiny_model

KEEP = 5  # of the 8 filters of the first convolution


@torch.no_grad()
def _prune_first_conv(model: nn.Sequential, keep: int) -> None:
    """Remove the first conv's filters of least L1 norm, in place, as a structured pruner would.

    The conv, its BatchNorm (weights and running statistics) and the next conv's input channels
    are sliced into new, smaller modules: the model keeps its identity, its parameters do not.
    """
    conv, bn, consumer = model[0], model[1], model[3]
    kept = conv.weight.abs().sum(dim=(1, 2, 3)).topk(keep).indices.sort().values
    new_conv = nn.Conv2d(conv.in_channels, keep, conv.kernel_size, padding=conv.padding)
    new_conv.weight.copy_(conv.weight[kept])
    new_conv.bias.copy_(conv.bias[kept])
    new_bn = nn.BatchNorm2d(keep)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).copy_(getattr(bn, name)[kept])
    new_consumer = nn.Conv2d(keep, consumer.out_channels, consumer.kernel_size, padding=1)
    new_consumer.weight.copy_(consumer.weight[:, kept])
    new_consumer.bias.copy_(consumer.bias)
    model[0], model[1], model[3] = new_conv, new_bn, new_consumer


@pytest.fixture(scope="module")
def blobs() -> tuple:
    return split_blobs(256, 128)


def test_pruned_model_fine_tunes_with_an_optimizer_factory(blobs: tuple) -> None:
    train_set, val_set = blobs
    model = tiny_model()
    quiet_trainer(model, adam(0.01)).fit(loader(train_set, batch_size=16, shuffle=True), epochs=6)
    before = sum(p.numel() for p in model.parameters())

    _prune_first_conv(model, KEEP)
    trainer = quiet_trainer(model, adam(0.01))
    history = trainer.fit(loader(train_set, batch_size=16, shuffle=True), loader(val_set), epochs=6)

    held = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters()}
    assert model[0].weight.shape == (KEEP, 3, 3, 3) and model[3].weight.shape[1] == KEEP
    assert sum(p.numel() for p in model.parameters()) < before
    # It trains: the loss falls, and the pruned model classifies well. Adam at lr 0.01 makes
    # the validation accuracy swing by 10-20 points between epochs, and where the swing lands
    # depends on the CPU's float order (0.875 in the last epoch on an AVX2 CPU, >= 0.9 on an
    # AVX-512 one), so the best epoch is checked, not the last.
    losses = [epoch["train_loss"] for epoch in history.epochs]
    assert losses[-1] < losses[0], losses
    assert max(epoch["val_accuracy"] for epoch in history.epochs) >= 0.9, history.epochs


def test_an_optimizer_built_before_pruning_is_refused(blobs: tuple) -> None:
    train_set, _ = blobs
    model = tiny_model()
    stale = torch.optim.SGD(model.parameters(), lr=0.1)
    _prune_first_conv(model, KEEP)
    with pytest.raises(ValueError, match=r"not parameters of the model \(was the model pruned"):
        quiet_trainer(model, stale)

    # Pruned after the trainer was made: fit notices before training on stale tensors.
    model = tiny_model()
    trainer = quiet_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1))
    _prune_first_conv(model, KEEP)
    with pytest.raises(ValueError, match="Build a new optimizer"):
        trainer.fit(loader(train_set), epochs=1)

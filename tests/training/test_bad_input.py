"""Bad input gets a clear error naming what was expected and what came."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from training_helpers import loader, one_thread, quiet_trainer  # noqa: F401

from advkit import PGD
from advkit.training import Trainer
from conftest import blob_images, tiny_model


@pytest.fixture(scope="module")
def data() -> TensorDataset:
    return TensorDataset(*blob_images(16))


def test_empty_loaders_are_refused(data: TensorDataset) -> None:
    empty = DataLoader(TensorDataset(torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)))
    trainer = quiet_trainer(tiny_model())
    with pytest.raises(ValueError, match=r"train_loader is empty \(0 batches\)"):
        trainer.fit(empty, epochs=1)
    with pytest.raises(ValueError, match=r"val_loader is empty \(0 batches\)"):
        trainer.fit(loader(data), empty, epochs=1)
    with pytest.raises(ValueError, match=r"loader is empty \(0 batches\)"):
        trainer.evaluate(empty)
    # drop_last with fewer samples than a batch: empty too, a common slip.
    with pytest.raises(ValueError, match="check the dataset and drop_last"):
        trainer.fit(DataLoader(data, batch_size=32, drop_last=True), epochs=1)
    # A loader without len() is only found empty after iterating it.
    with pytest.raises(ValueError, match="train_loader yielded no batches"):
        trainer.fit(_Unsized([]), epochs=1)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        trainer.evaluate(_Unsized([]))
    assert trainer.epoch == 0 and len(trainer.history) == 0


class _Unsized:
    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ({"image": torch.rand(2, 3, 8, 8), "label": torch.zeros(2)}, TypeError, "got a dict"),
        ((torch.rand(2, 3, 8, 8),), TypeError, "got a tuple of length 1"),
        ((torch.rand(2, 3, 8, 8), torch.zeros(2), None), TypeError, "got a tuple of length 3"),
        (torch.rand(2, 3, 8, 8), TypeError, "got a Tensor"),
        ((torch.rand(2, 3, 8, 8), [0, 1]), TypeError, r"tensors, got \(Tensor, list\)"),
        (
            (torch.rand(2, 3, 8, 8), torch.zeros(3, dtype=torch.long)),
            ValueError,
            r"\[2, 3, 8, 8\] and \[3\]",
        ),
        (
            (torch.rand(2, 3, 8, 8), torch.zeros(2, 1, dtype=torch.long)),
            ValueError,
            "labels \\[N\\]",
        ),
    ],
)
def test_loaders_must_yield_input_label_pairs(batch, error: type, match: str) -> None:
    trainer = quiet_trainer(tiny_model())
    with pytest.raises(error, match=r"^train_loader must yield .*" + match):
        trainer.fit([batch], epochs=1)
    with pytest.raises(error, match=r"^loader must yield.*" + match):
        trainer.evaluate([batch])


@pytest.mark.parametrize("adv_weight", [-0.1, 1.5, float("nan"), float("inf")])
def test_adv_weight_outside_the_unit_interval(adv_weight: float) -> None:
    with pytest.raises(ValueError, match=r"adv_weight must be in \[0, 1\], got"):
        quiet_trainer(tiny_model(), attack=PGD(eps=0.03, steps=2), adv_weight=adv_weight)


def test_options_of_the_wrong_type_or_range(data: TensorDataset) -> None:
    model = tiny_model()
    with pytest.raises(TypeError, match=r"adv_weight must be a float, got str"):
        quiet_trainer(model, adv_weight="0.5")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got function"):
        quiet_trainer(lambda x: x)
    with pytest.raises(TypeError, match="attack must be an advkit Attack or None, got function"):
        quiet_trainer(model, attack=lambda m, x, y: x)
    with pytest.raises(TypeError, match="val_attack must be an advkit Attack"):
        quiet_trainer(model, val_attack="pgd")
    with pytest.raises(ValueError, match="eps_warmup_epochs must be finite and >= 0, got -1"):
        quiet_trainer(model, eps_warmup_epochs=-1)
    with pytest.raises(ValueError, match="scheduler_interval must be 'epoch' or 'step'"):
        quiet_trainer(model, scheduler_interval="batch")
    with pytest.raises(ValueError, match=r"amp_dtype must be torch.float16 or torch.bfloat16"):
        quiet_trainer(model, amp_dtype=torch.float32)
    with pytest.raises(ValueError, match="best_metric needs a checkpoint_dir"):
        quiet_trainer(model, best_metric="val_accuracy")
    with pytest.raises(ValueError, match=r"device must be a torch.device or a string"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), device="gpu:zero")
    with pytest.raises(ValueError, match="distributed=True needs several processes"):
        quiet_trainer(model, distributed=True)
    trainer = quiet_trainer(model)
    for epochs in (0, -1):
        with pytest.raises(ValueError, match=f"epochs must be >= 1, got {epochs}"):
            trainer.fit(loader(data), epochs=epochs)
    for epochs in (2.0, True):
        with pytest.raises(TypeError, match=f"epochs must be an int, got {type(epochs).__name__}"):
            trainer.fit(loader(data), epochs=epochs)
    with pytest.raises(TypeError, match="train_loader must be an iterable"):
        trainer.fit(42, epochs=1)
    with pytest.raises(TypeError, match="attack must be an advkit Attack or None, got str"):
        trainer.evaluate(loader(data), attack="pgd")


def test_optimizer_must_fit_the_model() -> None:
    model, other = tiny_model(), tiny_model()
    with pytest.raises(TypeError, match=r"optimizer must be a torch.optim.Optimizer or a factory"):
        quiet_trainer(model, optimizer=0.1)
    with pytest.raises(TypeError, match=r"factory must return a torch.optim.Optimizer, got list"):
        quiet_trainer(model, optimizer=lambda params: list(params))
    with pytest.raises(ValueError, match="10 tensors that are not parameters of the model"):
        quiet_trainer(model, torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(
        ValueError, match=r"does not hold 2 trainable parameters.*8\.weight, 8\.bias"
    ):
        quiet_trainer(model, torch.optim.SGD(list(model.parameters())[:-2], lr=0.1))
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(ValueError, match="the model has no trainable parameters"):
        quiet_trainer(model, lambda params: torch.optim.SGD(params, lr=0.1))


def test_scheduler_must_drive_the_trainer_optimizer() -> None:
    model = tiny_model()
    foreign = torch.optim.SGD(tiny_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="the scheduler drives a different optimizer"):
        quiet_trainer(model, scheduler=torch.optim.lr_scheduler.StepLR(foreign, 1))
    with pytest.raises(TypeError, match="scheduler must be a learning-rate scheduler or a factory"):
        quiet_trainer(model, scheduler=3)


def test_loss_must_be_a_scalar(data: TensorDataset) -> None:
    per_sample = torch.nn.CrossEntropyLoss(reduction="none")
    trainer = quiet_trainer(tiny_model(), loss_fn=per_sample)
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor, got \[16\]"):
        trainer.fit(loader(data), epochs=1)


def test_amp_on_the_cpu_warns_and_does_nothing(data: TensorDataset) -> None:
    with pytest.warns(UserWarning, match="amp=True has no effect on cpu"):
        trainer = quiet_trainer(tiny_model(), amp=True)
    assert not trainer.amp
    assert len(trainer.fit(loader(data), epochs=1)) == 1


def test_model_must_return_logits(data: TensorDataset) -> None:
    flat = torch.nn.Sequential(tiny_model(), torch.nn.Flatten(0))  # [N * C] instead of [N, C]
    trainer = quiet_trainer(flat)
    with pytest.raises(ValueError, match=r"logits of shape \[N, C\] = \[16, C\], got \[64\]"):
        trainer.fit(loader(data), epochs=1)
    with pytest.raises(ValueError, match=r"logits of shape \[N, C\] = \[16, C\], got \[64\]"):
        trainer.evaluate(loader(data))

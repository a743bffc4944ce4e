"""Every pass iterates a data loader exactly once, with or without progress bars (issue 20, #2)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advkit import training
from advkit._progress import Progress
from advkit.attacks import FGSM, IFGSM
from advkit.evaluation import accuracy, evaluate_grid, robust_accuracy, transfer_matrix
from conftest import blob_images, tiny_model


class CountingLoader(DataLoader):
    """A DataLoader that counts how often ``iter()`` is called on it."""

    iterations = 0

    def __iter__(self):  # type: ignore[override]
        type(self).iterations += 1
        return super().__iter__()


def counting_loader(workers: int = 0, shuffle: bool = False) -> CountingLoader:
    CountingLoader.iterations = 0
    data = TensorDataset(*blob_images(16))
    generator = torch.Generator().manual_seed(1)
    return CountingLoader(
        data, batch_size=4, shuffle=shuffle, generator=generator, num_workers=workers
    )


@pytest.mark.parametrize("progress", [False, True])
def test_each_evaluation_iterates_once(progress: bool) -> None:
    model = tiny_model().eval()
    runs = {
        "accuracy": lambda ld: accuracy(model, ld, progress=progress),
        "robust_accuracy": lambda ld: robust_accuracy(
            model, ld, IFGSM(eps=0.01, steps=1), progress=progress
        ),
        "evaluate_grid": lambda ld: evaluate_grid(
            model, ld, IFGSM(eps=0.01, steps=1), eps=[0.01], steps=[1], progress=progress
        ),
        "transfer_matrix": lambda ld: transfer_matrix(
            [model], [model], ld, FGSM(eps=0.01), progress=progress
        ),
    }
    for name, run in runs.items():
        loader = counting_loader()
        run(loader)
        assert CountingLoader.iterations == 1, name


@pytest.mark.parametrize("progress", [False, True])
def test_trainer_iterates_once_per_pass(progress: bool) -> None:
    loader = counting_loader()
    trainer = training.Trainer(
        tiny_model(), lambda p: torch.optim.SGD(p, lr=0.01), device="cpu", progress=progress
    )
    trainer.fit(loader, loader, epochs=2)  # 2 train + 2 validation passes
    assert CountingLoader.iterations == 4
    trainer.evaluate(loader)
    assert CountingLoader.iterations == 5


def test_worker_processes_start_once_per_pass() -> None:
    loader = counting_loader(workers=1)
    trainer = training.Trainer(
        tiny_model(), lambda p: torch.optim.SGD(p, lr=0.01), device="cpu", progress=True
    )
    trainer.fit(loader, epochs=2)
    assert CountingLoader.iterations == 2


class Recorder(training.Callback):
    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on_batch_start(self, trainer, index, batch) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(batch[1].clone())


@pytest.mark.parametrize("progress", [False, True])
def test_fit_sees_the_order_of_a_plain_loop(progress: bool) -> None:
    plain = [labels for _, labels in counting_loader(shuffle=True)]
    recorder = Recorder()
    trainer = training.Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.01),
        device="cpu",
        progress=progress,
        callbacks=[recorder],
    )
    trainer.fit(counting_loader(shuffle=True), epochs=1)
    assert len(recorder.seen) == len(plain)
    for got, expected in zip(recorder.seen, plain, strict=True):
        assert torch.equal(got, expected)


def test_progress_closes_its_bar_when_the_loop_breaks() -> None:
    progress = Progress(range(5), description="t", enabled=True)
    for item in progress:
        if item == 2:
            break
    assert progress._bar.n == 2
    assert progress._bar.disable  # tqdm's mark of a closed bar

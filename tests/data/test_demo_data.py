"""The synthetic demo set: labelled synthetic, deterministic, split cleanly, and only learnable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit.data import DEMO_CLASSES, SyntheticAnimals10, render_synthetic

SMALL = {"image_size": 16, "num_images": 100, "progress": False}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine, two OpenMP threads mostly wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_items_are_float_images_in_unit_range_with_the_demo_classes() -> None:
    for split, count in (("train", 80), ("val", 20)):
        data = SyntheticAnimals10(split, **SMALL)  # type: ignore[arg-type]
        assert len(data) == count and len(data.targets) == count
        for index in range(len(data)):
            image, label = data[index]
            assert type(image) is torch.Tensor
            assert image.shape == (3, 16, 16) and image.dtype == torch.float32
            assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
            assert isinstance(label, int) and label == data.targets[index]
        assert data.classes == DEMO_CLASSES and len(set(DEMO_CLASSES)) == 10


def test_it_says_it_is_synthetic_everywhere() -> None:
    data = SyntheticAnimals10("val", **SMALL)
    assert data.synthetic is True and SyntheticAnimals10.synthetic is True
    assert data.description.startswith("SYNTHETIC demo data (procedural shapes")
    assert "val split: 20 images, 10 classes, 16x16, seed 0" in data.description
    assert "synthetic=True" in repr(data)
    assert "SYNTHETIC" in (SyntheticAnimals10.__doc__ or "")


def test_same_seed_same_images_other_seed_other_images() -> None:
    images, labels = SyntheticAnimals10("train", **SMALL).tensors()
    again, again_labels = SyntheticAnimals10("train", **SMALL).tensors()
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    other, _ = SyntheticAnimals10("train", seed=1, **SMALL).tensors()
    assert (other - images).abs().mean() > 0.1


def test_splits_are_disjoint_complete_balanced_and_hold_different_images() -> None:
    train = SyntheticAnimals10("train", **SMALL)
    val = SyntheticAnimals10("val", **SMALL)
    assert not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(100))
    assert [train.targets.count(c) for c in range(10)] == [8] * 10
    assert [val.targets.count(c) for c in range(10)] == [2] * 10
    train_images, _ = train.tensors()
    val_images, _ = val.tensors()
    distances = torch.cdist(val_images.flatten(1), train_images.flatten(1))
    assert float(distances.min()) > 1.0  # no validation image repeats a training image


def test_an_image_depends_only_on_seed_index_and_size() -> None:
    val = SyntheticAnimals10("val", **SMALL)
    some = [val.indices[3], val.indices[0]]
    images, labels = render_synthetic(some, image_size=16, seed=0)
    expected, expected_labels = val.tensors()
    assert torch.equal(images.float() / 255, expected[[3, 0]])
    assert labels.tolist() == [expected_labels[3], expected_labels[0]] == [i % 10 for i in some]
    bigger = SyntheticAnimals10("val", image_size=16, num_images=300, progress=False)
    position = bigger.indices.index(val.indices[3])
    assert torch.equal(bigger.tensors()[0][position], expected[3])


def test_chunking_does_not_change_the_images() -> None:
    whole, _ = render_synthetic(list(range(12)), image_size=16, seed=2)
    pieces, _ = render_synthetic(list(range(12)), image_size=16, seed=2, chunk=5)
    assert torch.equal(whole, pieces)


def test_every_size_shows_the_same_scene() -> None:
    small, _ = render_synthetic(list(range(20)), image_size=16, seed=0)
    large, _ = render_synthetic(list(range(20)), image_size=64, seed=0)
    shrunk = F.avg_pool2d(large.float(), 4)
    same = (shrunk - small.float()).abs().mean((1, 2, 3))
    other = (shrunk - small.float().roll(1, 0)).abs().mean((1, 2, 3))
    assert bool((same < other / 2).all())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"indices": [0, -1]}, ValueError, "indices must be >= 0, got -1"),
        ({"indices": [0.5]}, TypeError, "indices must be an int, got float"),
        ({"chunk": 0}, ValueError, "chunk must be >= 1, got 0"),
        ({"seed": "1"}, TypeError, "seed must be an int, got str"),
    ],
)
def test_render_rejects_bad_arguments(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {"indices": [0], "image_size": 8, "seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        render_synthetic(**arguments)  # type: ignore[arg-type]


def test_pixels_are_8_bit_like_decoded_photographs() -> None:
    images, _ = SyntheticAnimals10("val", **SMALL).tensors()
    assert torch.equal(images * 255, (images * 255).round())


@pytest.mark.parametrize("size", [8, 33, 224])
def test_any_image_size_renders(size: int) -> None:
    data = SyntheticAnimals10("val", image_size=size, num_images=30, progress=False)
    image, _ = data[0]
    assert image.shape == (3, size, size)
    assert float(image.std()) > 0.05  # not blank


def test_only_training_items_are_flipped() -> None:
    train = SyntheticAnimals10("train", **SMALL)
    plain = train.tensors()[0][0]
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(40)]
    flipped = sum(torch.equal(d, plain.flip(-1)) for d in draws)
    assert flipped + sum(torch.equal(d, plain) for d in draws) == 40
    assert 5 < flipped < 35
    val = SyntheticAnimals10("val", **SMALL)
    assert all(torch.equal(val[2][0], val.tensors()[0][2]) for _ in range(20))
    custom = SyntheticAnimals10("train", transform=lambda x: x * 0, **SMALL)
    assert float(custom[0][0].abs().max()) == 0.0


def _nearest_centroid_accuracy(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor
) -> float:
    centroids = torch.stack([train[train_labels == c].mean(0) for c in range(10)])
    predictions = torch.cdist(test, centroids).argmin(1)
    return float((predictions == test_labels).float().mean())


def _small_cnn_accuracy(train: Tensor, train_labels: Tensor, test: Tensor, labels: Tensor) -> float:
    torch.manual_seed(0)

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
        )

    model = nn.Sequential(
        block(3, 16), block(16, 32), block(32, 32), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )  # fmt: skip
    epochs, batch = 6, 32
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    steps = epochs * -(-len(train) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.01, total_steps=steps)
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(len(train)).split(batch):
            optimizer.zero_grad()
            F.cross_entropy(model(train[rows]), train_labels[rows]).backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        return float((model(test).argmax(1) == labels).float().mean())


def test_class_is_in_the_shapes_not_in_colour_or_single_pixels() -> None:
    options = {"image_size": 24, "num_images": 1500, "progress": False}
    train, train_labels = SyntheticAnimals10("train", **options).tensors()  # type: ignore[arg-type]
    val, val_labels = SyntheticAnimals10("val", **options).tensors()  # type: ignore[arg-type]
    mean_colour = _nearest_centroid_accuracy(
        train.mean((2, 3)), train_labels, val.mean((2, 3)), val_labels
    )
    per_pixel = _nearest_centroid_accuracy(
        train.flatten(1), train_labels, val.flatten(1), val_labels
    )
    cnn = _small_cnn_accuracy(train, train_labels, val, val_labels)
    # Chance is 0.1; the colour and pixel baselines stay near it, a small CNN learns shapes.
    assert mean_colour < 0.2 and per_pixel < 0.2
    assert cnn > 0.45
    assert cnn > 2.5 * max(mean_colour, per_pixel)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"split": "test"}, ValueError, "split must be 'train' or 'val', got 'test'"),
        ({"num_images": 9}, ValueError, "num_images must be >= 10, got 9"),
        (
            {"split": "val", "num_images": 20},
            ValueError,
            "the 'val' split of 20 images with val_fraction 0.2 is",
        ),
        ({"num_images": 100.0}, TypeError, "num_images must be an int, got float"),
        ({"image_size": 0}, ValueError, "image_size must be >= 1, got 0"),
        ({"val_fraction": 0}, ValueError, r"val_fraction must be in \(0, 1\), got 0"),
        ({"seed": 1.0}, TypeError, "seed must be an int, got float"),
        ({"transform": 3}, TypeError, "transform must be callable, got int"),
    ],
)
def test_bad_arguments_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SyntheticAnimals10(**{"progress": False, **kwargs})  # type: ignore[arg-type]

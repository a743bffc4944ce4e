"""Bad input that used to end in obscure crashes now gets a clear error (issue 20, item 7)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, check_gradient_masking
from advkit.certification import Smooth
from advkit.evaluation import accuracy, robust_accuracy
from advkit.models import resnet18
from advkit.pruning import Pruner, PruningPlan, load_pruned, save_pruned
from advkit.training import Trainer
from conftest import blob_images, tiny_model


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_integer_labels_of_any_dtype_work(dtype: torch.dtype) -> None:
    model = tiny_model().eval()
    images, labels = blob_images(8)
    small = labels.to(dtype)
    for attack in (FGSM(eps=0.03), PGD(eps=0.03, steps=2), MIFGSM(eps=0.03, steps=2)):
        result = attack.run(model, images, small, generator=torch.Generator().manual_seed(0))
        expected = attack.run(model, images, labels, generator=torch.Generator().manual_seed(0))
        assert torch.equal(result.adversarial, expected.adversarial)
    loader = [(images, small)]
    assert (
        accuracy(model, loader, progress=False).correct
        == accuracy(model, [(images, labels)], progress=False).correct
    )
    robust_accuracy(model, loader, IFGSM(eps=0.03, steps=1), progress=False)
    trainer = Trainer(
        tiny_model(), lambda p: torch.optim.SGD(p, lr=0.1), device="cpu", progress=False
    )
    trainer.fit(DataLoader(TensorDataset(images, small), batch_size=4), epochs=1)
    trainer.evaluate(DataLoader(TensorDataset(images, small), batch_size=4))


@pytest.mark.parametrize("value", [1e39, 3.5e38, 1e300])
def test_eps_that_overflows_float32_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="eps must be finite in float32"):
        IFGSM(eps=value, steps=2)
    with pytest.raises(ValueError, match="alpha must be finite in float32"):
        IFGSM(eps=0.1, steps=2, alpha=value)


def test_eps_that_overflows_the_inputs_dtype_is_refused() -> None:
    model = tiny_model().eval().half()
    images, labels = blob_images(4)
    with pytest.raises(
        ValueError, match=r"eps=100000 is infinite in the inputs' dtype torch\.float16"
    ):
        IFGSM(eps=1e5, steps=2, bounds=(0.0, 1e6))(model, images.half(), labels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_inputs_and_model_of_different_dtypes_is_a_clear_error(dtype: torch.dtype) -> None:
    model = tiny_model().eval()
    images, labels = blob_images(4)
    images = images.to(dtype)
    message = rf"inputs are {dtype} but the model's parameters are torch\.float32"
    with pytest.raises(TypeError, match=message):
        IFGSM(eps=0.03, steps=2)(model, images, labels)
    with pytest.raises(TypeError, match=message):
        accuracy(model, [(images, labels)], progress=False)
    trainer = Trainer(model, lambda p: torch.optim.SGD(p, lr=0.1), device="cpu", progress=False)
    with pytest.raises(TypeError, match=message):
        trainer.fit(DataLoader(TensorDataset(images, labels), batch_size=4), epochs=1)


@pytest.fixture(scope="module")
def plan_data() -> dict:
    plan = Pruner(ratio=0.5, targets="0").plan(tiny_model(), torch.rand(1, 3, 8, 8))
    return plan.to_dict()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("targets", "conv1", "targets must be a list"),
        ("targets", [1], r"targets\[0\] must be a string"),
        ("ratio", float("nan"), r"ratio must be in \[0, 1\)"),
        ("ratio", 7, r"ratio must be in \[0, 1\)"),
        ("ratio", "0.5", "ratio must be a number"),
        ("params_after", -1, "params_after must be an integer >= 0"),
        ("input_shapes", [[1, 0]], r"input_shapes\[0\]\[\] must be an integer >= 1"),
        ("skipped", [["a"]], r"skipped\[0\] must be a \[name, reason\] pair"),
        ("groups", {"a": 1}, "groups must be a list"),
    ],
)
def test_plan_fields_are_validated(plan_data: dict, key: str, value: object, message: str) -> None:
    data = json.loads(json.dumps(plan_data))
    data[key] = value
    with pytest.raises(ValueError, match=message):
        PruningPlan.from_json(json.dumps(data))


def test_plan_group_fields_are_validated(plan_data: dict) -> None:
    for change, message in (
        (lambda g: g.update(channels=0), r"groups\[0\]\.channels must be an integer >= 1"),
        (lambda g: g["uses"][0].update(expansion=True), r"uses\[0\]\.expansion must be"),
        (lambda g: g["uses"][0].update(module=3), r"uses\[0\]\.module must be a string"),
        (lambda g: g.update(keep="01"), r"groups\[0\]\.keep must be a list"),
    ):
        data = json.loads(json.dumps(plan_data))
        change(data["groups"][0])
        with pytest.raises(ValueError, match=message):
            PruningPlan.from_dict(data)


def test_deeply_nested_plan_json_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        PruningPlan.from_json("[" * 100_000 + "]" * 100_000)


def test_resnet18_weights_from_a_non_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not weights\n" * 10)
    with pytest.raises(ValueError, match=r"notes\.pth.*not a weights file"):
        resnet18(weights=path)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match=r"other\.pth.*does not hold ResNet-18 weights"):
        resnet18(weights=other)


def test_a_crafted_pruned_file_cannot_ask_for_a_huge_allocation(tmp_path: Path) -> None:
    path = tmp_path / "pruned.pt"
    save_pruned(tiny_model(), path)
    payload = torch.load(path, weights_only=True)
    payload["shapes"]["0"]["out_channels"] = 2**40  # 211 TB of conv weights if allocated
    del payload["checksum"]  # crafted from scratch: as a version 1 file it needs none
    payload["version"] = 1
    torch.save(payload, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"pruned\.pt.*layer '0'.*ask for 0\.weight"):
            load_pruned(path, tiny_model())


_PASSED_A_CLASS = [
    ("accuracy", lambda m: accuracy(m, [(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))])),
    ("Trainer", lambda m: Trainer(m, lambda params: torch.optim.SGD(params, lr=0.1))),
    ("Pruner.prune", lambda m: Pruner(ratio=0.5, targets="0").prune(m, torch.rand(1, 3, 8, 8))),
    ("save_pruned", lambda m: save_pruned(m, "unused.pt")),
    ("Smooth", lambda m: Smooth(m, 0.25)),
    (
        "check_gradient_masking",
        lambda m: check_gradient_masking(m, torch.rand(2, 4), torch.tensor([0, 1])),
    ),
]


@pytest.mark.parametrize(("surface", "call"), _PASSED_A_CLASS, ids=[s for s, _ in _PASSED_A_CLASS])
def test_a_model_class_instead_of_a_model_is_named_as_such(surface: str, call: object) -> None:
    # One check (advkit._checks.check_model) for every surface: the message says the class
    # itself was passed (the common slip of resnet18 for resnet18()), not "got type".
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got the class Linear"):
        call(torch.nn.Linear)  # type: ignore[operator]

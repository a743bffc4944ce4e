"""A pruned model is an ordinary nn.Module: it trains, traces, scripts, saves and loads."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from pruning_cases import VGGStyle, randomize_batchnorm
from torch import fx, nn

from advkit.models import resnet18
from advkit.pruning import (
    ChannelTracer,
    Pruner,
    count_parameters,
    load_pruned,
    rebuild_optimizer,
    save_pruned,
)

SMALL = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([1, 7])


@pytest.fixture(scope="module")
def pruned_resnet() -> nn.Module:
    """ResNet-18 with 20% of each layer4 conv1 removed (shared: tests must not modify it)."""
    torch.manual_seed(0)
    model = randomize_batchnorm(resnet18(num_classes=10)).eval()
    pruner = Pruner(ratio=0.2, targets="backbone.layer4.*.conv1")
    return pruner.apply(model, pruner.plan(model, SMALL[:1]))


def test_one_optimizer_step_changes_the_loss() -> None:
    torch.manual_seed(0)
    original = resnet18(num_classes=10)
    optimizer = torch.optim.SGD(original.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    pruner = Pruner(ratio=0.4, targets="backbone.layer4.*.conv1")
    model = pruner.apply(original, pruner.plan(original, SMALL[:1])).train()
    optimizer = rebuild_optimizer(optimizer, model)
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {
        id(p) for p in model.parameters()
    }
    images = SMALL.repeat(2, 1, 1, 1)
    labels = LABELS.repeat(2)
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert model.backbone.layer4[0].conv1.weight.grad.shape == (307, 256, 3, 3)
    assert F.cross_entropy(model(images), labels).item() != pytest.approx(loss.item(), abs=1e-6)


def test_rebuild_keeps_every_groups_settings() -> None:
    original = VGGStyle()
    groups = [
        {"params": list(original.features.parameters()), "lr": 0.1},
        {"params": list(original.classifier.parameters()), "lr": 0.01, "weight_decay": 0.5},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1.0, betas=(0.8, 0.9))
    pruner = Pruner(ratio=0.5, targets="features.0")
    model = pruner.apply(original, pruner.plan(original, torch.rand(1, 3, 16, 16)))
    with pytest.raises(ValueError, match="has 2 parameter groups; pass original="):
        rebuild_optimizer(optimizer, model)
    rebuilt = rebuild_optimizer(optimizer, model, original=original)
    assert type(rebuilt) is torch.optim.AdamW
    assert [g["lr"] for g in rebuilt.param_groups] == [0.1, 0.01]
    assert [g["weight_decay"] for g in rebuilt.param_groups] == [0.01, 0.5]
    assert rebuilt.param_groups[0]["betas"] == (0.8, 0.9)
    assert rebuilt.param_groups[0]["params"][0] is model.features[0].weight
    assert rebuilt.param_groups[1]["params"][0] is model.classifier[0].weight
    with pytest.raises(ValueError, match="same parameter names"):
        rebuild_optimizer(optimizer, model, original=VGGStyle())
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        rebuild_optimizer("sgd", model)


def test_traces_with_fx(pruned_resnet: nn.Module) -> None:
    traced = fx.symbolic_trace(pruned_resnet.backbone)
    whole = fx.GraphModule(pruned_resnet, ChannelTracer().trace(pruned_resnet))
    with torch.no_grad():
        expected = pruned_resnet(SMALL)
        torch.testing.assert_close(whole(SMALL), expected, rtol=0, atol=0)
        torch.testing.assert_close(traced(pruned_resnet.normalize(SMALL)), expected, rtol=0, atol=0)


def test_scripts_with_torchscript(pruned_resnet: nn.Module) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        scripted = torch.jit.script(pruned_resnet.backbone)
    inputs = pruned_resnet.normalize(SMALL)
    with torch.no_grad():
        torch.testing.assert_close(scripted(inputs), pruned_resnet.backbone(inputs))


def test_exports_with_torch_export() -> None:
    model = VGGStyle().eval()
    pruner = Pruner(ratio=0.5, targets="features.*")
    pruned = pruner.apply(model, pruner.plan(model, torch.rand(1, 3, 16, 16)))
    inputs = torch.rand(2, 3, 16, 16)
    exported = torch.export.export(pruned, (inputs,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(inputs), pruned(inputs))


def test_save_and_load_round_trip(pruned_resnet: nn.Module, tmp_path) -> None:
    path = tmp_path / "pruned.pt"
    save_pruned(pruned_resnet, path)
    payload = torch.load(path, weights_only=True)  # plain tensors, ints and strings only
    assert payload["shapes"]["backbone.layer4.1.conv1"]["out_channels"] == 410
    fresh = resnet18(num_classes=10)
    fresh_state = {k: v.clone() for k, v in fresh.state_dict().items()}
    loaded = load_pruned(path, fresh)
    assert count_parameters(loaded) == 9_536_178
    assert all(torch.equal(v, fresh_state[k]) for k, v in fresh.state_dict().items())
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(SMALL), pruned_resnet(SMALL))


def test_save_replaces_atomically_and_checks_folder(pruned_resnet: nn.Module, tmp_path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    save_pruned(pruned_resnet, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    with pytest.raises(ValueError, match="does not exist"):
        save_pruned(pruned_resnet, tmp_path / "missing" / "model.pt")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        save_pruned(pruned_resnet.state_dict(), path)


def test_load_rejects_pickled_objects_and_wrong_files(tmp_path) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save(VGGStyle(), pickled)  # a whole pickled module: refused by weights_only
    with pytest.raises(ValueError, match="loads with weights_only=True"):
        load_pruned(pickled, VGGStyle())
    plain = tmp_path / "state.pt"
    torch.save(VGGStyle().state_dict(), plain)
    with pytest.raises(ValueError, match="not a pruned-model file written by save_pruned"):
        load_pruned(plain, VGGStyle())
    with pytest.raises(ValueError, match="file not found"):
        load_pruned(tmp_path / "nothing.pt", VGGStyle())
    with pytest.raises(TypeError, match=r"architecture must be a torch\.nn\.Module"):
        load_pruned(plain, "VGGStyle")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="loads with weights_only=True"):
        load_pruned(corrupt, VGGStyle())


def test_load_rejects_another_architecture(tmp_path) -> None:
    model = VGGStyle(width=8)
    pruner = Pruner(ratio=0.5, targets="features.*")
    path = tmp_path / "vgg.pt"
    save_pruned(pruner.apply(model, pruner.plan(model, torch.rand(1, 3, 16, 16))), path)
    assert load_pruned(path, VGGStyle(width=5)).features[0].out_channels == 4
    with pytest.raises(ValueError, match=r"has no layer 'features\.0' that the file has"):
        load_pruned(path, nn.Sequential())
    other = VGGStyle()
    other.features[1] = nn.GroupNorm(1, 8)
    with pytest.raises(ValueError, match=r"'features\.1' is GroupNorm in the architecture"):
        load_pruned(path, other)

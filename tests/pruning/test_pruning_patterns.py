"""Architectures beyond ResNets: concat, grouped/depthwise convs, gates, shuffles, ConvNeXt, ViT."""

from __future__ import annotations

import copy

import pytest
import torch
from pruning_cases import WithConcat, WithGroups, randomize_batchnorm, silence_removed_channels
from torch import Tensor, nn
from torchvision.models import VisionTransformer
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.models.shufflenetv2 import InvertedResidual
from torchvision.ops import SqueezeExcitation

from advkit.pruning import (
    Pruner,
    PruningPlan,
    analyze,
    apply_plan,
    count_flops,
    count_parameters,
    load_pruned,
    save_pruned,
)
from advkit.pruning.graph import trace, unreached_layers


class GatedDepthwise(nn.Module):
    """MobileNetV3/EfficientNet style: expand, depthwise, squeeze-excitation gate, project."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.SiLU()
        )
        self.gate = SqueezeExcitation(16, 8)
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.project(self.gate(self.depthwise(self.expand(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class GroupedBottleneck(nn.Module):
    """ResNeXt/RegNet style: 1x1, grouped 3x3, 1x1, with a residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(16, 12, 1), nn.BatchNorm2d(12), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=3), nn.BatchNorm2d(12))
        self.restore = nn.Sequential(nn.Conv2d(12, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.restore(torch.relu(self.grouped(self.reduce(x)))))
        return self.head(x.mean((2, 3)))


class Shuffle(nn.Module):
    """Two ShuffleNetV2 blocks: a down-sampling one, then one that splits and shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = InvertedResidual(8, 16, 2)
        self.block = InvertedResidual(16, 16, 1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.down(self.stem(x))).mean((2, 3)))


class TinyConvNeXt(nn.Module):
    """A ConvNeXt stem (conv + channels-first LayerNorm2d) and two blocks with layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8))
        self.blocks = nn.Sequential(CNBlock(8, 0.5, 0.0), CNBlock(8, 0.5, 0.0))
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def tiny_vit() -> nn.Module:
    return VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
        num_classes=3,
    )  # fmt: skip


def randomized(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and non-trivial layer scales, so that silencing shows."""
    torch.manual_seed(0)
    model = randomize_batchnorm(model).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layer_scale"):
                param.uniform_(0.5, 1.5)
    return model


def assert_exact(model: nn.Module, pruner: Pruner, inputs: Tensor) -> tuple[PruningPlan, nn.Module]:
    """Pruning equals the unpruned model with the removed channels silenced, to 1e-5."""
    model = randomized(model)
    plan = pruner.plan(model, inputs)
    pruned = apply_plan(model, plan)
    silent = silence_removed_channels(copy.deepcopy(model), plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(inputs), silent(inputs), rtol=1e-5, atol=1e-5)
    assert count_parameters(pruned) == plan.params_after < plan.params_before
    return plan, pruned


# (model, targets, input): each pattern pruned where pruning is exact.
PATTERNS = {
    "concat": (WithConcat, "*", 8),
    "grouped": (GroupedBottleneck, "*", 8),
    "depthwise+gate": (GatedDepthwise, "*", 8),
    "shuffle": (Shuffle, "*", 16),
    "convnext-mlp": (TinyConvNeXt, "blocks.*.block.3", 16),
    "vit-mlp": (tiny_vit, "encoder.layers.*.mlp.0", 16),
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_pattern_is_exact_round_trips_and_reloads(pattern: str, tmp_path) -> None:
    build, targets, size = PATTERNS[pattern]
    inputs = torch.rand(2, 3, size, size)
    plan, pruned = assert_exact(build(), Pruner(ratio=0.5, targets=targets, strict=False), inputs)
    assert plan.groups
    assert PruningPlan.from_json(plan.to_json()) == plan
    save_pruned(pruned, tmp_path / "pruned.pt")
    loaded = load_pruned(tmp_path / "pruned.pt", build()).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), pruned(inputs))


def test_concat_consumer_reads_each_producer_at_its_offset() -> None:
    graph = analyze(WithConcat(), torch.rand(1, 3, 8, 8))
    for layer, offset in (("left", 0), ("right", 4)):
        reads = [u for u in graph.group_of(layer).uses if u.module == "mixed"]
        assert [(u.role, u.offset, u.index) for u in reads] == [("in", offset, None)]


@pytest.mark.parametrize("build", [WithGroups, GroupedBottleneck])
def test_grouped_convolution_keeps_equal_group_widths(build) -> None:
    model = randomized(build())
    plan = Pruner(ratio=0.4, targets="*", strict=False).plan(model, torch.rand(1, 3, 8, 8))
    pruned = apply_plan(model, plan)
    for name, conv in pruned.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.groups > 1:
            original = model.get_submodule(name)
            assert conv.groups == original.groups  # every group keeps channels
            assert conv.in_channels == conv.out_channels < original.out_channels
            assert conv.weight.shape[1] == conv.in_channels // conv.groups


def test_shuffle_prunes_the_split_and_shuffled_channels() -> None:
    model = Shuffle()
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(model, torch.rand(1, 3, 16, 16))
    pruned = {layer for group in plan.groups for layer in group.layers}
    assert {"block.branch2.0", "down.branch1.2", "down.branch2.5"} <= pruned


def test_convnext_prunes_the_stream_with_its_layer_norms_and_layer_scales() -> None:
    model = TinyConvNeXt().eval()
    plan = Pruner(ratio=0.5, targets="stem.0").plan(model, torch.rand(1, 3, 16, 16))
    (group,) = plan.groups
    modules = {u.module for u in group.uses}
    assert {"stem.1", "blocks.0.block.2", "blocks.0.layer_scale", "head"} <= modules
    pruned = apply_plan(model, plan)
    assert pruned.blocks[1].layer_scale.shape == (4, 1, 1)
    assert pruned.stem[1].normalized_shape == (4,)
    assert pruned(torch.rand(1, 3, 16, 16)).shape == (1, 3)


def test_vit_freezes_the_embedding_and_says_why() -> None:
    model = tiny_vit()
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(model, torch.rand(1, 3, 16, 16))
    reasons = dict(plan.skipped)
    assert "reshape to a fixed channel count" in reasons["conv_proj"]
    assert "MultiheadAttention" in reasons["encoder.layers.encoder_layer_0.self_attention.out_proj"]
    assert plan.kept_filters()["encoder.layers.encoder_layer_0.mlp.0"] == 8


@pytest.mark.parametrize("pattern", ["grouped", "depthwise+gate", "convnext-mlp", "vit-mlp"])
def test_pruned_copy_shares_no_memory_and_leaves_the_model_as_it_was(pattern: str) -> None:
    build, targets, size = PATTERNS[pattern]
    model = randomized(build())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = Pruner(ratio=0.5, targets=targets, strict=False).plan(
        model, torch.rand(1, 3, size, size)
    )
    pruned = apply_plan(model, plan)
    memory = {t.untyped_storage().data_ptr() for t in model.state_dict().values() if t.numel()}
    assert not [
        k for k, t in pruned.state_dict().items() if t.untyped_storage().data_ptr() in memory
    ]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


class TrainOnlyAux(nn.Module):
    """GoogLeNet style: an auxiliary head that runs (and is returned) in train mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Conv2d(8, 2, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x = torch.relu(self.conv(x))
        out = self.head(x.mean((2, 3)))
        return (out, self.aux(x).mean((2, 3))) if self.training else out


def test_model_traced_in_train_mode_with_a_train_only_branch() -> None:
    model, inputs = TrainOnlyAux().train(), torch.rand(1, 3, 8, 8)
    plan = Pruner(ratio=0.5, targets="conv").plan(model, inputs)
    assert plan.flops_before == count_flops(model, inputs)
    pruned = apply_plan(model, plan)
    assert pruned.aux.in_channels == 4  # the train-only reader is sliced too
    assert [t.shape for t in pruned(inputs)] == [(1, 3), (1, 2)]


def test_model_in_eval_mode_with_a_train_only_branch_is_pruned_for_training_too() -> None:
    model, inputs = TrainOnlyAux().eval(), torch.rand(1, 3, 8, 8)
    rng = torch.get_rng_state()
    pruned, plan = Pruner(ratio=0.5, targets="conv").prune(model, inputs)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and not plan.skipped
    assert plan.flops_before == count_flops(model, inputs)  # the eval pass: no auxiliary head
    assert pruned.aux.in_channels == 4  # sliced, although it does not run in eval mode
    assert [t.shape for t in pruned.train()(inputs)] == [(1, 3), (1, 2)]
    silenced = copy.deepcopy(model)
    removed = sorted(set(range(8)) - set(plan.groups[0].keep))
    with torch.no_grad():
        silenced.conv.weight[removed] = 0.0
        silenced.conv.bias[removed] = 0.0
    for mode in (False, True):
        torch.testing.assert_close(pruned.train(mode)(inputs), silenced.train(mode)(inputs))


def test_only_layers_the_eval_graph_never_uses_make_it_trace_in_train_mode() -> None:
    # ConvNeXt's LayerNorm2d is traced into (its parameters are read), not called: it is used.
    for model, unused in ((TinyConvNeXt(), []), (TrainOnlyAux(), ["aux"])):
        model.eval()
        assert unreached_layers(trace(model), model) == unused


class BufferShift(nn.Module):
    """A per-channel shift kept as a buffer (a frozen statistic, a fixed offset), read
    through a view after the layer that makes the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.register_buffer("shift", torch.randn(8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x) + self.shift.view(1, -1, 1, 1)).mean((2, 3))


def test_a_buffer_read_through_a_view_is_sliced_with_its_channels(tmp_path) -> None:
    # Regression: the tracer made the buffer's view a constant of the graph, so the buffer
    # kept 8 entries and the pruned model failed on the example inputs.
    model = BufferShift().eval()
    x = torch.rand(2, 3, 8, 8)
    plan = Pruner(ratio=0.5, targets="conv").plan(model, x)
    silenced = silence_removed_channels(copy.deepcopy(model), plan)
    pruned = apply_plan(silenced, plan)
    assert pruned.shift.shape == (4,) and pruned.conv.out_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), silenced(x), rtol=1e-5, atol=1e-5)
    save_pruned(pruned, tmp_path / "shift.pt")
    loaded = load_pruned(tmp_path / "shift.pt", BufferShift())
    assert torch.equal(loaded.shift, pruned.shift)

"""Small networks and helpers shared by the pruning tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import SwinTransformer, VisionTransformer

from advkit.pruning import PruningPlan
from advkit.pruning.registry import find_handler


class VGGStyle(nn.Module):
    """Three conv-BN-ReLU-pool stages, then flatten of a 2x2 map into a two-layer classifier."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(
            *stage(3, width), *stage(width, 2 * width), *stage(2 * width, 2 * width)
        )
        self.classifier = nn.Sequential(
            nn.Linear(2 * width * 2 * 2, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, num_classes)
        )

    def forward(self, inputs: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(inputs), 1))


class DepthwiseSeparable(nn.Module):
    """Pointwise -> depthwise -> pointwise, MobileNet style, then a pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.bn2 = nn.BatchNorm2d(12)
        self.project = nn.Conv2d(12, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, inputs: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.expand(inputs)))
        x = nn.functional.relu6(self.bn2(self.depthwise(x)))
        x = self.project(x).mean((2, 3))
        return self.head(x)


class WithConcat(nn.Module):
    """A channel concatenation: the consumer's input channels map to both producers."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)
        self.mixed = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, inputs: Tensor) -> Tensor:
        x = torch.cat([self.left(inputs), self.right(inputs)], dim=1)
        return self.head(self.mixed(x).mean((2, 3)))


class WithUnknownOp(WithConcat):
    """A cumulative sum along the channels, which the analysis does not follow: it must freeze."""

    def forward(self, inputs: Tensor) -> Tensor:
        x = torch.cumsum(torch.cat([self.left(inputs), self.right(inputs)], dim=1), dim=1)
        return self.head(self.mixed(x).mean((2, 3)))


class WithGroups(nn.Module):
    """A grouped (not depthwise) convolution reading a plain conv's channels."""

    def __init__(self, c_out: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, c_out, 3, padding=1, groups=2)
        self.head = nn.Linear(c_out, 2)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(self.grouped(self.conv(inputs)).mean((2, 3)))


class SharedConv(nn.Module):
    """One conv applied twice: both calls must be pruned with the same channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, inputs: Tensor) -> Tensor:
        x = self.shared(torch.relu(self.stem(inputs)))
        x = self.shared(torch.relu(x))
        return self.head(x.view(x.size(0), x.size(1), -1).mean(-1))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def removed_positions(group, use) -> list[int]:
    """The positions of ``use``'s layer that hold channels the plan removes."""
    removed = set(group.removed)
    return [
        use.offset + k * use.expansion + j
        for k, unit in enumerate(use.units(group.channels))
        if unit in removed
        for j in range(use.expansion)
    ]


def silence_removed_channels(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Zero the removed filters, their BatchNorm scale and shift and any per-channel parameter
    they pass through (ConvNeXt's layer scale), in place.

    Every removed channel then outputs exactly zero, so removing it cannot change the output
    (unless a LayerNorm normalizes over it: its statistics include every channel).
    """
    with torch.no_grad():
        for group in plan.groups:
            for use in group.uses:
                if use.role == "in":
                    continue
                positions = torch.tensor(removed_positions(group, use), dtype=torch.long)
                try:
                    module = model.get_submodule(use.module)
                except AttributeError:  # a parameter or buffer used directly
                    owner, _, attr = use.module.rpartition(".")
                    tensor = getattr(model.get_submodule(owner), attr)
                    tensor.index_fill_(use.dim, positions, 0.0)
                    continue
                handler = find_handler(module)
                if handler is not None and handler.heads:  # a head is silent without values
                    dim = handler.head_dim(module)
                    for owner, name, first in handler.head_values(module):
                        rows = first + (positions[:, None] * dim + torch.arange(dim)).flatten()
                        getattr(owner, name)[rows] = 0.0
                    continue
                for name in ("weight", "bias"):
                    tensor = getattr(module, name, None)
                    if tensor is not None:
                        tensor[positions] = 0.0
    return model


class SelfAttention(nn.Module):
    """A bare nn.MultiheadAttention between two linear layers."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 12)
        self.attention = nn.MultiheadAttention(12, 4, batch_first=batch_first)
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(-2))


def tiny_vit() -> nn.Module:
    return VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=4, hidden_dim=16, mlp_dim=16,
        num_classes=3,
    )  # fmt: skip


def tiny_swin() -> nn.Module:
    # 16x16 -> 4x4 tokens in windows of 2 (stage 1 shifts by 1: masks), then 2x2 tokens.
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 4], window_size=[2, 2],
        stochastic_depth_prob=0.0, num_classes=3,
    )  # fmt: skip

"""Model helpers that fix advkit's input-space contract: models take pixels in ``[0, 1]``.

Normalization (mean/std) is the first layer of the model, so attacks measure eps in pixel space
and never un-normalize. :func:`resnet18` builds the study's network this way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.fx
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights
from torchvision.models import resnet18 as _tv_resnet18
from torchvision.models.resnet import BasicBlock, ResNet

from advkit._checks import check_int, describe

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageClassifier", "Normalize", "resnet18"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel (R, G, B) mean of ImageNet pixels in ``[0, 1]``, as torchvision's weights use."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel (R, G, B) standard deviation of ImageNet pixels in ``[0, 1]``."""


@torch.jit.unused
def _check_images(inputs: Tensor, channels: int) -> None:
    if inputs.ndim != 4 or inputs.shape[1] != channels:
        raise ValueError(
            f"expected inputs of shape [N, {channels}, H, W], got {list(inputs.shape)}"
        )


# A leaf for torch.fx: the check is recorded as one call, not traced through its shape tests.
torch.fx.wrap("_check_images")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a layer, so a model can take raw pixels.

    Args:
        mean: One mean per channel.
        std: One standard deviation per channel, each > 0.

    Raises:
        ValueError: If ``mean`` and ``std`` differ in length, are empty, or a std is not > 0.

    Example:
        >>> layer = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
        >>> layer(torch.full((1, 3, 2, 2), 0.75))[0, :, 0, 0]
        tensor([1., 1., 1.])

    For a pretrained model, :meth:`from_weights` reads the mean and std its weights were
    trained with.
    """

    @classmethod
    def from_weights(cls, weights: object) -> Normalize:
        """The normalization a pretrained model's weights expect, read from the weights.

        Args:
            weights: A torchvision weights enum member (such as
                ``torchvision.models.ResNet50_Weights.IMAGENET1K_V2``: its ``transforms()``
                holds ``mean`` and ``std``; nothing is downloaded), or a timm model's pretrained
                config (``model.pretrained_cfg``, a dict with ``"mean"`` and ``"std"``, or any
                object with ``mean`` and ``std`` attributes).

        Returns:
            A :class:`Normalize` with those per-channel mean and std.

        Raises:
            TypeError: If ``weights`` is none of these.
            ValueError: If the mean or std found is invalid (see :class:`Normalize`).

        Example:
            >>> from torchvision.models import ResNet50_Weights
            >>> Normalize.from_weights(ResNet50_Weights.IMAGENET1K_V2)
            Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
            >>> Normalize.from_weights({"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
            Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
        """
        source: object = weights
        if isinstance(weights, Mapping):
            if "mean" in weights and "std" in weights:
                return cls(weights["mean"], weights["std"])
            raise TypeError(
                "weights as a dict must be a timm pretrained_cfg with 'mean' and 'std' keys, "
                f"got keys {sorted(map(str, weights))}"
            )
        transforms = getattr(weights, "transforms", None)
        if callable(transforms) and not isinstance(weights, type):
            source = transforms()  # torchvision's preset: no download, just the settings
        mean, std = getattr(source, "mean", None), getattr(source, "std", None)
        if mean is None or std is None:
            raise TypeError(
                "weights must be a torchvision weights enum member (e.g. "
                "ResNet50_Weights.IMAGENET1K_V2) or a timm pretrained_cfg with mean and std, "
                f"got {describe(weights)}"
            )
        return cls(mean, std)

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.numel() != std_t.numel():
            raise ValueError(
                "mean and std must have the same non-zero length, got "
                f"{mean_t.numel()} and {std_t.numel()}"
            )
        if not bool(torch.all(std_t > 0)):
            raise ValueError(f"every std must be > 0, got {std_t.tolist()}")
        # Buffers, not parameters: they move with .to() and are saved, but are never trained.
        self.register_buffer("mean", mean_t.view(-1, 1, 1))
        self.register_buffer("std", std_t.view(-1, 1, 1))

    def forward(self, inputs: Tensor) -> Tensor:
        """Normalize ``inputs`` of shape ``[N, C, H, W]``."""
        if not torch.jit.is_scripting():
            _check_images(inputs, self.mean.shape[0])
        return (inputs - self.mean.to(inputs.dtype)) / self.std.to(inputs.dtype)

    def extra_repr(self) -> str:
        def short(values: Tensor) -> list[float]:  # float32 0.48500001430511475 -> 0.485
            return [float(f"{value:.6g}") for value in values.flatten().tolist()]

        return f"mean={short(self.mean)}, std={short(self.std)}"


class ImageClassifier(nn.Module):
    """A classifier whose ``forward`` takes pixels: ``normalize`` then ``backbone``.

    The backbone keeps its own module names, so ``model.backbone.layer4`` of a ResNet is
    reachable for pruning and inspection.

    Args:
        backbone: The network that maps normalized images to logits.
        normalize: The input normalization, or ``None`` for the identity.
    """

    def __init__(self, backbone: nn.Module, normalize: nn.Module | None = None) -> None:
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.backbone = backbone

    def forward(self, inputs: Tensor) -> Tensor:
        """Return the logits for pixel inputs."""
        return self.backbone(self.normalize(inputs))


WeightsArg = str | os.PathLike[str] | ResNet18_Weights | None


def _load_imagenet_backbone(weights: ResNet18_Weights) -> nn.Module:
    try:
        return _tv_resnet18(weights=weights)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise RuntimeError(
            f"could not fetch the ImageNet weights {weights} ({err}). Offline, download "
            f"{weights.url} on another machine and pass its path as "
            "resnet18(weights='path/to/file.pth'), or place it in "
            "$TORCH_HOME/hub/checkpoints/, or use weights=None for random initialization."
        ) from err


def _load_local_backbone(path: Path) -> nn.Module:
    if not path.is_file():
        raise ValueError(f"weights file not found: {str(path)!r}")
    backbone = _tv_resnet18(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # The weights-only unpickler of a damaged or foreign file raises many types
    # (UnpicklingError, RuntimeError, IndexError, ...): each means "not such a file".
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} is not a weights file that torch.load(weights_only=True) reads "
            f"(expected a ResNet-18 state dict saved with torch.save): {type(err).__name__}"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"expected a state dict of tensors in {str(path)!r}, got {type(state).__name__}"
        )
    try:
        backbone.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} does not hold ResNet-18 weights: {err}") from err
    return backbone


def _narrow(backbone: ResNet, width: int) -> ResNet:
    """Rebuild ``backbone``'s layers with ``width, 2 width, 4 width, 8 width`` channels.

    The module names and the block structure stay torchvision's, so everything that knows a
    ResNet-18 by its layer names (pruning targets, state dicts) works unchanged; the new layers
    are initialized as torchvision initializes a ResNet (He normal convolutions, BatchNorm at
    weight 1 and bias 0).
    """
    backbone.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    backbone.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for index in range(4):
        planes, stride = width * 2**index, 1 if index == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        blocks = [BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        setattr(backbone, f"layer{index + 1}", nn.Sequential(*blocks))
        inplanes = planes
    backbone.fc = nn.Linear(inplanes, backbone.fc.out_features)
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return backbone


def resnet18(
    *,
    num_classes: int = 10,
    weights: WeightsArg = None,
    normalize: bool = True,
    width: int = 64,
) -> ImageClassifier:
    """ResNet-18 that takes images in ``[0, 1]``, with the ImageNet normalization inside.

    Args:
        num_classes: Size of the new classification head.
        weights: ``None`` for random initialization; ``"imagenet"`` or a
            :class:`torchvision.models.ResNet18_Weights` member for the ImageNet backbone
            (downloaded by torchvision); or the path of a torchvision ResNet-18 state dict,
            for offline use. The 1000-class head is always replaced by a ``num_classes`` head.
        normalize: Put the ImageNet mean/std normalization in front of the backbone.
        width: Channels of the first stage (64 in He et al.; the four stages have ``width``,
            ``2 width``, ``4 width`` and ``8 width``). Narrower networks train and are attacked
            several times faster on a CPU; only 64 can load pretrained weights.

    Returns:
        An :class:`ImageClassifier` with the torchvision network as ``model.backbone``.

    Raises:
        ValueError: If ``num_classes < 1`` or ``width < 1``, ``weights`` is an unknown string
            or a missing file, or ``weights`` are given with a ``width`` other than 64.
        TypeError: If ``weights`` has an unsupported type.
        RuntimeError: If the ImageNet weights cannot be fetched; the message names the
            offline alternative.

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.

    Example:
        >>> model = resnet18(num_classes=10)
        >>> model(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """
    check_int(num_classes, "num_classes", minimum=1)
    check_int(width, "width", minimum=1)
    if weights is not None and width != 64:
        raise ValueError(f"pretrained weights need width 64, got width={width}")
    if weights is None:
        backbone = _tv_resnet18(weights=None)
        if width != 64:
            backbone = _narrow(backbone, width)
    elif isinstance(weights, ResNet18_Weights):
        backbone = _load_imagenet_backbone(weights)
    elif isinstance(weights, str) and weights.lower() in {"imagenet", "default"}:
        backbone = _load_imagenet_backbone(ResNet18_Weights.DEFAULT)
    elif isinstance(weights, str | os.PathLike):
        if isinstance(weights, str) and not weights.endswith((".pth", ".pt")):
            raise ValueError(
                "weights must be None, 'imagenet', a ResNet18_Weights member or a path to a "
                f".pth/.pt state dict, got {weights!r}"
            )
        backbone = _load_local_backbone(Path(weights))
    else:
        raise TypeError(
            "weights must be None, 'imagenet', a ResNet18_Weights member or a path, "
            f"got {type(weights).__name__}"
        )
    backbone.fc = nn.Linear(backbone.fc.in_features, num_classes)
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else None
    return ImageClassifier(backbone, norm)

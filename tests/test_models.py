"""Normalize and the resnet18 builder: pixels in, ImageNet normalization inside."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import ResNet18_Weights

from advkit import ImageClassifier, Normalize, resnet18
from advkit import models as models_module
from advkit.models import IMAGENET_MEAN, IMAGENET_STD


def test_normalize_matches_torchvision() -> None:
    from torchvision.transforms.functional import normalize

    x = torch.rand(2, 3, 5, 5)
    expected = normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(Normalize(IMAGENET_MEAN, IMAGENET_STD)(x), expected)


def test_normalize_is_not_trainable_but_is_saved() -> None:
    layer = Normalize([0.5], [0.5])
    assert not list(layer.parameters())
    assert set(layer.state_dict()) == {"mean", "std"}
    assert "mean=[0.5], std=[0.5]" in repr(layer)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.5, 0.5], [0.5], "same non-zero length, got 2 and 1"),
        ([], [], "same non-zero length, got 0 and 0"),
        ([0.5], [0.0], r"every std must be > 0, got \[0.0\]"),
    ],
)
def test_normalize_bad_arguments(mean, std, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)


def test_normalize_bad_input_shape() -> None:
    with pytest.raises(
        ValueError, match=r"expected inputs of shape \[N, 3, H, W\], got \[2, 1, 4, 4\]"
    ):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.rand(2, 1, 4, 4))


def test_resnet18_structure_and_parameter_count() -> None:
    model = resnet18(num_classes=10)
    assert isinstance(model, ImageClassifier)
    assert isinstance(model.normalize, Normalize)
    assert model.backbone.layer4[0].conv1.out_channels == 512
    assert model.backbone.fc.out_features == 10
    assert sum(p.numel() for p in model.parameters()) == 11_181_642
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_normalization_is_inside() -> None:
    with_norm = resnet18(num_classes=3).eval()
    without = resnet18(num_classes=3, normalize=False).eval()
    without.load_state_dict(with_norm.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(with_norm(x), without(norm(x)))


def test_resnet18_loads_a_local_state_dict(tmp_path) -> None:
    from torchvision.models import resnet18 as tv_resnet18

    reference = tv_resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = resnet18(num_classes=4, weights=str(path))
    torch.testing.assert_close(
        model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight
    )
    assert model.backbone.fc.out_features == 4


def test_imagenet_weights_go_through_torchvision(monkeypatch) -> None:
    seen = []

    def fake(*, weights):
        seen.append(weights)
        from torchvision.models import resnet18 as tv_resnet18

        return tv_resnet18(weights=None)

    monkeypatch.setattr(models_module, "_tv_resnet18", fake)
    resnet18(weights="imagenet")
    resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    assert seen == [ResNet18_Weights.DEFAULT, ResNet18_Weights.IMAGENET1K_V1]


def test_unreachable_weights_name_the_offline_alternative(monkeypatch) -> None:
    def offline(*, weights):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(models_module, "_tv_resnet18", offline)
    with pytest.raises(
        RuntimeError, match=r"could not fetch the ImageNet weights.*path/to/file.pth"
    ):
        resnet18(weights="imagenet")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes must be >= 1, got 0"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be an int, got float"),
        ({"weights": "imagenet21k"}, ValueError, "weights must be None, 'imagenet'"),
        ({"weights": "missing.pth"}, ValueError, "weights file not found: 'missing.pth'"),
        ({"weights": 3}, TypeError, "weights must be None, 'imagenet'.*got int"),
    ],
)
def test_resnet18_bad_arguments(kwargs, error, match: str) -> None:
    with pytest.raises(error, match=match):
        resnet18(**kwargs)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_whole_model_traces_and_scripts() -> None:
    """Normalize's input check must not block torch.fx tracing or TorchScript."""
    model = resnet18(num_classes=3).eval()
    x = torch.rand(2, 3, 32, 32)
    traced = torch.fx.symbolic_trace(model)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(traced(x), model(x))
    torch.testing.assert_close(scripted(x), model(x))
    with pytest.raises(ValueError, match=r"expected inputs of shape \[N, 3, H, W\]"):
        traced(torch.rand(2, 1, 32, 32))


def test_width_scales_every_stage_and_keeps_the_layer_names() -> None:
    standard, narrow = resnet18(num_classes=7), resnet18(num_classes=7, width=16)
    assert [n for n, _ in standard.named_modules()] == [n for n, _ in narrow.named_modules()]
    for stage, channels in zip(range(1, 5), (16, 32, 64, 128), strict=True):
        block = getattr(narrow.backbone, f"layer{stage}")
        assert block[0].conv1.out_channels == channels
        assert block[1].conv2.out_channels == channels
    assert narrow.backbone.conv1.out_channels == 16 and narrow.backbone.fc.in_features == 128
    assert narrow(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    # He et al.'s ResNet-18 at width w has about (w / 64)^2 of its weights.
    ratio = sum(p.numel() for p in narrow.parameters()) / sum(
        p.numel() for p in standard.parameters()
    )
    assert 0.05 < ratio < 0.07


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"width": 0}, ValueError, "width must be >= 1, got 0"),
        ({"width": 32.0}, TypeError, "width must be an int, got float"),
        ({"width": 32, "weights": "imagenet"}, ValueError, "pretrained weights need width 64"),
    ],
)
def test_bad_width_is_rejected(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        resnet18(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "weights",
    [
        "ResNet50_Weights.IMAGENET1K_V2",
        "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1",
        "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
    ],
)
def test_normalize_from_torchvision_weights_reads_their_transforms(weights: str) -> None:
    import torchvision.models

    enum_name, member = weights.split(".")
    chosen = getattr(getattr(torchvision.models, enum_name), member)
    preset = chosen.transforms()  # what torchvision's own preprocessing uses; no download
    layer = Normalize.from_weights(chosen)
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor(preset.mean).view(-1, 1, 1)) / torch.tensor(preset.std).view(
        -1, 1, 1
    )
    torch.testing.assert_close(layer(x), expected)


def test_normalize_from_a_timm_pretrained_cfg() -> None:
    # The shape of timm's model.pretrained_cfg (a dict); timm itself is not needed.
    cfg = {
        "url": "",
        "input_size": (3, 224, 224),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "num_classes": 1000,
    }
    layer = Normalize.from_weights(cfg)
    torch.testing.assert_close(layer(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))

    class PretrainedCfg:  # timm's dataclass form: mean and std attributes
        mean = (0.48145466, 0.4578275, 0.40821073)
        std = (0.26862954, 0.26130258, 0.27577711)

    assert repr(Normalize.from_weights(PretrainedCfg())) == (
        "Normalize(mean=[0.481455, 0.457828, 0.408211], std=[0.26863, 0.261303, 0.275777])"
    )


@pytest.mark.parametrize(
    ("weights", "error", "match"),
    [
        ({"mean": (0.5,)}, TypeError, r"'mean' and 'std' keys, got keys \['mean'\]"),
        ("imagenet", TypeError, "torchvision weights enum member .* got str"),
        (ResNet18_Weights, TypeError, "got the class ResNet18_Weights itself"),
        (None, TypeError, "got NoneType"),
        ({"mean": (0.5, 0.5), "std": (0.5,)}, ValueError, "same non-zero length, got 2 and 1"),
    ],
)
def test_normalize_from_weights_bad_input(weights, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Normalize.from_weights(weights)


def test_normalize_repr_is_rounded() -> None:
    assert repr(Normalize(IMAGENET_MEAN, IMAGENET_STD)) == (
        "Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])"
    )

"""Pruning timm's architectures (random weights, tiny inputs), and the patterns they taught
the channel analysis, checked on plain modules too."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from pruning_cases import randomize_batchnorm, silence_removed_channels
from torch import Tensor, nn

from advkit.attacks import APGD, AutoAttack
from advkit.evaluation import robust_accuracy
from advkit.pruning import Pruner, apply_plan, count_parameters, load_pruned, save_pruned
from advkit.training import Trainer

timm = pytest.importorskip("timm")

# name -> (input size, create_model keywords); BatchNorm-normalized, so that zeroing the
# removed channels must leave the output exactly as it was (a LayerNorm over pruned channels
# counts them in its statistics: see test_layer_norm_models_run_with_their_output_shape).
# The last entry: the least share of parameters removed (at ratio 0.3 a network pruned
# throughout loses about half; MobileViT's untraceable blocks stay whole).
EXACT = {
    "resnet18": (32, {}, 0.45),
    "mobilenetv3_small_050": (32, {}, 0.4),
    "levit_128s": (32, {"img_size": 32}, 0.35),  # BN-linear layers (reshape_as), attention
    "pvt_v2_b0": (32, {}, 0.2),  # reshapes sized from another tensor's channels; heads
    "mobilevit_xxs": (32, {}, 0.2),  # branches on shapes, followed for the example inputs
}


def create(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def inputs_of(size: int, n: int = 1) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(EXACT))
def test_pruned_timm_model_equals_the_original_with_removed_channels_zeroed(name: str) -> None:
    size, kwargs, least = EXACT[name]
    model = randomize_batchnorm(create(name, **kwargs)).eval()
    x = inputs_of(size)
    # Planned on a copy: LeViT caches its attention biases on the first eval pass, and the
    # plan check in apply_plan cannot trace the cached path (see the note for issue 30).
    plan = Pruner(ratio=0.3, targets="*", strict=False).plan(copy.deepcopy(model), x)
    silence_removed_channels(model, plan)
    pruned = apply_plan(model, plan)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)
    assert count_parameters(pruned) == plan.params_after < plan.params_before
    assert 1 - plan.params_after / plan.params_before >= least


def test_layer_norm_models_run_with_their_output_shape() -> None:
    """ConvNeXt's layer scale (``gamma.reshape(1, -1, 1, 1)``) and ViT's class token
    (``cls_token.expand(B, -1, -1)``, concatenated with the tokens) are sliced with the
    stream, which is then pruned deep (they froze it before)."""
    for name, size, kwargs in (
        ("convnext_atto", 32, {}),
        ("vit_tiny_patch16_224", 32, {"img_size": 32}),
    ):
        model = create(name, **kwargs)
        x = inputs_of(size, 2)
        pruned, plan = Pruner(ratio=0.3, targets="*", strict=False).prune(model, x)
        assert pruned(x).shape == (2, 10)
        assert plan.params_after < 0.6 * plan.params_before, name
    assert pruned.cls_token.shape[-1] == pruned.patch_embed.proj.out_channels < 192


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "pvt_v2_b0"])
def test_pruned_timm_model_saves_and_loads_weights_only(tmp_path, name: str) -> None:
    model = create(name)
    x = inputs_of(32, 2)
    pruned, _ = Pruner(ratio=0.3, targets="*", strict=False).prune(model, x)
    save_pruned(pruned, tmp_path / "pruned.pt")
    loaded = load_pruned(tmp_path / "pruned.pt", create(name)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned.eval()(x))


def test_pvt_attention_loses_whole_heads_and_keeps_its_stream() -> None:
    model = randomize_batchnorm(create("pvt_v2_b0")).eval()
    x = inputs_of(32, 2)
    plan = Pruner(ratio=0.3, targets="*", strict=False).plan(copy.deepcopy(model), x)
    attn = model.stages[3].blocks[0].attn  # 8 heads of 32 features, width 256
    assert (attn.num_heads, attn.head_dim, attn.q.in_features) == (8, 32, 256)
    silence_removed_channels(model, plan)
    pruned = apply_plan(model, plan)
    narrow = pruned.stages[3].blocks[0].attn
    assert (narrow.num_heads, narrow.head_dim) == (6, 32)  # round(0.3 * 8) = 2 heads gone
    assert (narrow.q.out_features, narrow.kv.out_features, narrow.proj.in_features) == (
        192,
        384,
        192,
    )
    assert narrow.q.in_features == narrow.proj.out_features == 256  # the stream stays
    assert isinstance(narrow, type(attn)) and type(narrow) is not type(attn)
    # timm's unfused path (explicit softmax) and its fused one agree with the silenced model.
    for fused in (True, False):
        for module in (*model.modules(), *pruned.modules()):
            if hasattr(module, "fused_attn"):
                module.fused_attn = fused
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)


def test_pruned_timm_model_fine_tunes_and_is_evaluated_by_autoattack() -> None:
    model = create("mobilenetv3_small_050")
    x = inputs_of(32, 4)
    labels = torch.tensor([0, 1, 2, 3])
    pruned, _ = Pruner(ratio=0.3, targets="*", strict=False).prune(model, x[:1])
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    trainer = Trainer(pruned, lambda p: torch.optim.SGD(p, lr=0.1), device="cpu", progress=False)
    trainer.fit([(x, labels)], epochs=1)
    assert any(not torch.equal(v, before[k]) for k, v in pruned.state_dict().items())
    attack = AutoAttack(eps=4 / 255, version="custom", attacks=[APGD(eps=4 / 255, steps=2)])
    result = robust_accuracy(pruned.eval(), [(x, labels)], attack, progress=False)
    assert result.robust.correct <= result.clean.correct <= 4


class LayerScaleNet(nn.Module):
    """A per-channel factor read through a view: ``x * factor[:, None, None]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.factor = nn.Parameter(torch.rand(8) + 0.5)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x) * self.factor[:, None, None])


class SizedFromOther(nn.Module):
    """pvt_v2's pattern: a layer's output reshaped with the channel count of another tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 1)
        self.sr = nn.Conv2d(8, 8, 2, stride=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        channels = x.shape[1]
        y = self.sr(x).reshape(x.shape[0], channels, -1)
        return self.head(y.mean(-1))


class Untraceable(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Conv2d(8, 8, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:
            return self.inner(x)
        return x


class WithUntraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.odd = Untraceable()
        self.mid = nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.mid(self.odd(self.stem(x)))))


class PadsToPatches(nn.Module):
    """MobileViT's pattern: pad the map to a multiple of the patch size, in a Python branch on
    the input's shape (which torch.fx cannot follow by itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn(self.embed(x)))
        height, width = x.shape[-2:]
        if height % 4 != 0 or width % 4 != 0:
            x = F.pad(x, (0, (4 - width % 4) % 4, 0, (4 - height % 4) % 4))
        return self.head(x).mean((2, 3))


class CachesByDevice(nn.Module):
    """LeViT's and TinyViT's pattern: a bias computed once per device in eval mode and kept
    in a dict, which tracing fills with a traced value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.offset = nn.Parameter(torch.zeros(4))
        self.head = nn.Linear(4, 2)
        self.cache: dict[str, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        key = str(x.device)
        if key not in self.cache:
            self.cache[key] = 2 * self.offset
        return self.head((self.conv(x) + self.cache[key][:, None, None]).mean((2, 3)))


@pytest.mark.parametrize(("build", "targets"), [(LayerScaleNet, "*"), (SizedFromOther, "sr")])
def test_plain_module_patterns_prune_exactly(build: type[nn.Module], targets: str) -> None:
    model = build().eval()
    x = inputs_of(8, 2)
    plan = Pruner(ratio=0.5, targets=targets, strict=False).plan(model, x)
    assert plan.groups, plan.skipped
    silenced = silence_removed_channels(copy.deepcopy(model), plan)
    pruned = apply_plan(silenced, plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), silenced(x), rtol=1e-5, atol=1e-5)
    if build is SizedFromOther:  # the reshape reads embed's channel count: pruned together
        assert pruned.embed.out_channels == pruned.sr.out_channels == 4


def test_layer_scale_view_is_sliced_with_its_channels() -> None:
    pruned, _ = Pruner(ratio=0.5, targets="conv").prune(LayerScaleNet(), inputs_of(8))
    assert pruned.factor.shape == (4,) and pruned.conv.out_channels == 4


def test_untraceable_submodule_is_kept_whole_and_the_rest_pruned() -> None:
    model = WithUntraceable()
    x = inputs_of(4) + 0.1  # the positive branch
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(model, x)
    assert plan.kept_filters() == {"mid": 3}
    skipped = dict(plan.skipped)
    assert "'odd' (Untraceable)" in skipped["stem"]
    pruned = apply_plan(model, plan)
    assert pruned(x).shape == (1, 2, 4, 4)


@pytest.mark.parametrize("size", [6, 8])  # padded, and not
def test_a_branch_on_the_input_shape_is_followed_and_pruned_exactly(size: int) -> None:
    model = randomize_batchnorm(PadsToPatches()).eval()
    x = inputs_of(size, 2)
    plan = Pruner(ratio=0.5, targets="embed").plan(model, x)
    assert plan.kept_filters() == {"embed": 4} and not plan.skipped
    silenced = silence_removed_channels(copy.deepcopy(model), plan)
    pruned = apply_plan(silenced, plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), silenced(x), rtol=1e-5, atol=1e-5)


def test_a_branch_on_tensor_values_is_not_followed() -> None:
    # Which branch runs depends on the data, not the shape: no example input may decide it.
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(WithUntraceable(), inputs_of(4))
    assert "'odd' (Untraceable)" in dict(plan.skipped)["stem"]


def test_tracing_leaves_no_traced_value_in_the_model() -> None:
    model = CachesByDevice().eval()
    x = inputs_of(4)
    pruned, _ = Pruner(ratio=0.5, targets="conv").prune(model, x)
    assert not any(isinstance(v, torch.fx.Proxy) for v in model.cache.values())
    assert not any(isinstance(v, torch.fx.Proxy) for v in pruned.cache.values())
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape == (1, 2)


class FixedSlice(nn.Module):
    """DPN's pattern: ``x[:, :8]`` and ``x[:, 8:]`` cut the channels at a position written in
    the code, which pruning would not move."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.left = nn.Conv2d(8, 2, 1)
        self.right = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return self.left(y[:, :8]) + self.right(y[:, 8:])


def test_fixed_channel_slice_freezes_the_channels_it_cuts() -> None:
    with pytest.raises(ValueError, match=r"conv: its channels are frozen: .*fixed position"):
        Pruner(ratio=0.5, targets="*", strict=False).plan(FixedSlice(), inputs_of(4))

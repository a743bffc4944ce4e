"""Layer handlers for timm's building blocks (registered by class name: timm is optional and
advkit never imports it).

* ``Scale`` (MetaFormer's residual and layer scales, ``x * scale.view(self.shape)``): one
  factor per channel, channels first or last; the pruned layer keeps ``shape`` in step.
* ``GlobalResponseNorm`` (ConvNeXt V2): channel-wise apart from the mean of the channels'
  norms in the divisor. A removed channel that outputs zero adds nothing to the norms' sum
  but counts in the mean, so the kept channels' ``weight`` is multiplied by ``C / C_kept``:
  the pruned layer then computes what the unpruned one computes with the removed channels
  zeroed (up to ``eps``, 1e-6).
* ``StdConv2d`` / ``ScaledStdConv2d`` (NF-nets): weight-standardized convolutions. Their
  filters (with ``gain``) are pruned; their *input* channels are not, since each filter is
  standardized over all its inputs: removing one changes every filter's mean and variance.
* PVT v2's ``Attention`` (spatial-reduction attention: queries from the tokens, keys and
  values from the tokens reduced by a strided convolution or pooling): pruned by whole heads
  like torchvision's attention layers (rows ``h * d .. h * d + d - 1`` of ``q``, of both halves
  of ``kv`` and the same columns of ``proj``). Its forward reshapes keys and values to the
  literal ``num_heads`` and ``head_dim`` and its output to the embedding width, so traced into
  it freezes the model's whole residual stream; kept as one call it loses heads and keeps the
  stream. The pruned layer's forward is timm's with the output reshaped to ``num_heads *
  head_dim`` (:func:`_pvt_attention_forward`).

References:
    Yu, Si, Zhou, Yu, Zhou, Feng and Yan, "MetaFormer Baselines for Vision", TPAMI 2023.
    Woo, Debnath, Hu, Chen, Liu, Kweon and Xie, "ConvNeXt V2", CVPR 2023.
    Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021. Wang, Xie, Li, Fan, Song, Liang, Lu, Luo and Shao, "PVT v2:
    Improved Baselines with Pyramid Vision Transformer", Computational Visual Media 2022.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit.pruning._heads import _head_filters, _HeadsHandler, _rows
from advkit.pruning.registry import (
    _BY_NAME,
    _LINEAR,
    LayerHandler,
    _ConvHandler,
    _empty,
    _param,
    _sliced,
)


class _ChannelwiseHandler(LayerHandler):
    """A channel-wise timm layer, channels first or last, whose size is saved as ``"dim"``."""

    channelwise = True

    def __init__(self, channel_dim: int) -> None:
        self.channel_dim = channel_dim

    def in_channels(self, module: Any) -> int:
        return self.out_channels(module)

    def shape(self, module: Any) -> dict[str, int]:
        return {"dim": self.out_channels(module)}


class _ScaleHandler(_ChannelwiseHandler):
    def out_channels(self, module: Any) -> int:
        return module.scale.shape[0]

    def slice_out(self, module: Any, keep: Tensor) -> None:
        module.scale = _sliced(module.scale, keep)
        module.shape = (len(keep), *module.shape[1:])

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        module.scale = _empty(module.scale, shape["dim"])
        module.shape = (shape["dim"], *module.shape[1:])


class _GlobalResponseNormHandler(_ChannelwiseHandler):
    def out_channels(self, module: Any) -> int:
        return module.weight.shape[0]

    def slice_out(self, module: Any, keep: Tensor) -> None:
        factor = module.weight.shape[0] / max(len(keep), 1)  # the mean's divisor shrinks
        module.weight = _param(module.weight, module.weight[keep] * factor)
        module.bias = _sliced(module.bias, keep)

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        module.weight = _empty(module.weight, shape["dim"])
        module.bias = _empty(module.bias, shape["dim"])


class _StdConvHandler(_ConvHandler):
    def problem(self, module: nn.Module, role: str) -> str | None:
        conv: Any = module
        if role == "in" or (role == "through" and conv.groups != conv.in_channels):
            return (
                f"{type(module).__name__} standardizes each filter over all its input "
                "channels: removing one would change every filter"
            )
        return super().problem(module, role)

    def slice_out(self, module: Any, keep: Tensor) -> None:
        super().slice_out(module, keep)
        if getattr(module, "gain", None) is not None:
            module.gain = _sliced(module.gain, keep)

    def slice(self, module: nn.Module, role: str, keep: Tensor) -> None:
        super().slice(module, role, keep)
        gain = getattr(module, "gain", None)
        if role == "through" and gain is not None:
            module.gain = _sliced(gain, keep)  # type: ignore[assignment]

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        super().resize(module, shape)
        if getattr(module, "gain", None) is not None:
            module.gain = _empty(module.gain, shape["out_channels"], 1, 1, 1)


def _pvt_attention_forward(self: Any, x: Tensor, feat_size: list[int]) -> Tensor:
    """timm's ``pvt_v2.Attention.forward`` (Apache-2.0, Ross Wightman) for fewer heads: the
    attention's output is reshaped to ``num_heads * head_dim`` instead of the input's width."""
    batch, tokens, channels = x.shape
    height, width = feat_size
    q = self.q(x).reshape(batch, tokens, self.num_heads, -1).permute(0, 2, 1, 3)
    if self.sr is not None:  # the spatial reduction acts on the embedding width, which stays
        x = x.permute(0, 2, 1).reshape(batch, channels, height, width)
        x = self.sr(x if self.pool is None else self.pool(x))
        x = self.norm(x.reshape(batch, channels, -1).permute(0, 2, 1))
        x = x if self.act is None else self.act(x)
    kv = self.kv(x).reshape(batch, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    k, v = kv.unbind(0)
    if self.fused_attn:
        dropout = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    else:
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        x = attn @ v
    x = x.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
    return self.proj_drop(self.proj(x))


_NARROW_PVT: dict[type[nn.Module], type[nn.Module]] = {}


def _narrow_pvt(cls: type[nn.Module]) -> type[nn.Module]:
    """The subclass of timm's PVT v2 ``Attention`` class ``cls`` with the narrow forward
    (``cls`` itself if it is one)."""
    if cls in _NARROW_PVT.values():
        return cls
    if cls not in _NARROW_PVT:
        attrs = {"forward": _pvt_attention_forward, "__module__": __name__}
        _NARROW_PVT[cls] = type(f"Narrow{cls.__name__}", (cls,), attrs)
    return _NARROW_PVT[cls]


class _PvtAttentionHandler(_HeadsHandler):
    base_name = "Attention"

    def in_channels(self, module: Any) -> int:
        return module.q.in_features

    def head_dim(self, module: Any) -> int:
        return module.head_dim

    def head_values(self, module: Any) -> list[tuple[nn.Module, str, int]]:
        first = module.num_heads * module.head_dim  # keys, then values
        names = ["weight"] + (["bias"] if module.kv.bias is not None else [])
        return [(module.kv, name, first) for name in names]

    def problem(self, module: nn.Module, role: str) -> str | None:
        attn: Any = module
        width = attn.num_heads * attn.head_dim
        if attn.q.out_features != width or attn.kv.out_features != 2 * width:
            return f"{type(module).__name__} whose q and kv are not num_heads * head_dim wide"
        return super().problem(module, role)

    def filter_weights(self, module: Any) -> Tensor:
        qkv = torch.cat([module.q.weight, module.kv.weight])  # q's rows, then k's and v's
        return _head_filters(module.num_heads, module.head_dim, qkv, module.proj.weight)

    def slice_out(self, module: Any, keep: Tensor) -> None:
        dim = module.head_dim
        width = module.num_heads * dim
        _LINEAR.slice_out(module.q, _rows(keep, dim, width, 1))
        _LINEAR.slice_out(module.kv, _rows(keep, dim, width, 2))
        _LINEAR.slice_in(module.proj, _rows(keep, dim, width, 1))
        self._narrow(module, len(keep), dim)

    def narrow_class(self, module: nn.Module) -> type[nn.Module]:
        return _narrow_pvt(type(module))  # made from timm's class: advkit does not import it

    def shape(self, module: Any) -> dict[str, Any]:
        return {
            "type": self.base_name,
            "dim": self.in_channels(module),
            "num_heads": module.num_heads,
            "head_dim": module.head_dim,
        }

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        # q, kv and proj are layers of their own, resized from their own saved sizes
        self._narrow(module, shape["num_heads"], shape["head_dim"])

    def expected_tensor(self, module: Any, sizes: dict[str, int]) -> tuple[str, tuple[int, ...]]:
        return "kv.weight", (2 * sizes["num_heads"] * sizes["head_dim"], sizes["dim"])


_SCALE = {1: _ScaleHandler(1), -1: _ScaleHandler(-1)}
_GRN = {1: _GlobalResponseNormHandler(1), -1: _GlobalResponseNormHandler(-1)}
_STD_CONV = _StdConvHandler()
_PVT_ATTENTION = _PvtAttentionHandler()

_BY_NAME.update(
    {
        "timm.models.metaformer.Scale": lambda m: _SCALE[1 if len(m.shape) > 1 else -1],
        "timm.layers.grn.GlobalResponseNorm": lambda m: _GRN[1 if m.channel_dim == 1 else -1],
        "timm.layers.std_conv.StdConv2d": lambda m: _STD_CONV,
        "timm.layers.std_conv.StdConv2dSame": lambda m: _STD_CONV,
        "timm.layers.std_conv.ScaledStdConv2d": lambda m: _STD_CONV,
        "timm.layers.std_conv.ScaledStdConv2dSame": lambda m: _STD_CONV,
        "timm.models.pvt_v2.Attention": lambda m: _PVT_ATTENTION,
    }
)

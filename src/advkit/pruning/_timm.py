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

References:
    Yu, Si, Zhou, Yu, Zhou, Feng and Yan, "MetaFormer Baselines for Vision", TPAMI 2023.
    Woo, Debnath, Hu, Chen, Liu, Kweon and Xie, "ConvNeXt V2", CVPR 2023.
    Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from advkit.pruning.registry import (
    _BY_NAME,
    LayerHandler,
    _ConvHandler,
    _empty,
    _param,
)


class _ScaleHandler(LayerHandler):
    channelwise = True

    def __init__(self, channel_dim: int) -> None:
        self.channel_dim = channel_dim

    def out_channels(self, module: Any) -> int:
        return module.scale.shape[0]

    in_channels = out_channels

    def slice_out(self, module: Any, keep: Tensor) -> None:
        module.scale = _param(module.scale, module.scale[keep])
        module.shape = (len(keep), *module.shape[1:])

    def shape(self, module: Any) -> dict[str, int]:
        return {"dim": self.out_channels(module)}

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        module.scale = _empty(module.scale, shape["dim"])
        module.shape = (shape["dim"], *module.shape[1:])


class _GlobalResponseNormHandler(LayerHandler):
    channelwise = True

    def __init__(self, channel_dim: int) -> None:
        self.channel_dim = channel_dim

    def out_channels(self, module: Any) -> int:
        return module.weight.shape[0]

    in_channels = out_channels

    def slice_out(self, module: Any, keep: Tensor) -> None:
        factor = module.weight.shape[0] / max(len(keep), 1)  # the mean's divisor shrinks
        module.weight = _param(module.weight, module.weight[keep] * factor)
        module.bias = _param(module.bias, module.bias[keep])

    def shape(self, module: Any) -> dict[str, int]:
        return {"dim": self.out_channels(module)}

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
            module.gain = _param(module.gain, module.gain[keep])

    def slice(self, module: nn.Module, role: str, keep: Tensor) -> None:
        super().slice(module, role, keep)
        gain = getattr(module, "gain", None)
        if role == "through" and gain is not None:
            module.gain = _param(gain, gain[keep])  # type: ignore[assignment]

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        super().resize(module, shape)
        if getattr(module, "gain", None) is not None:
            module.gain = _empty(module.gain, shape["out_channels"], 1, 1, 1)


_SCALE = {1: _ScaleHandler(1), -1: _ScaleHandler(-1)}
_GRN = {1: _GlobalResponseNormHandler(1), -1: _GlobalResponseNormHandler(-1)}
_STD_CONV = _StdConvHandler()

_BY_NAME.update(
    {
        "timm.models.metaformer.Scale": lambda m: _SCALE[1 if len(m.shape) > 1 else -1],
        "timm.layers.grn.GlobalResponseNorm": lambda m: _GRN[1 if m.channel_dim == 1 else -1],
        "timm.layers.std_conv.StdConv2d": lambda m: _STD_CONV,
        "timm.layers.std_conv.StdConv2dSame": lambda m: _STD_CONV,
        "timm.layers.std_conv.ScaledStdConv2d": lambda m: _STD_CONV,
        "timm.layers.std_conv.ScaledStdConv2dSame": lambda m: _STD_CONV,
    }
)

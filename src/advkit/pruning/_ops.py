"""The operations the channel pass knows, by how they treat channels."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

try:  # torchvision's stochastic depth scales whole samples: channel-wise
    from torchvision.ops import stochastic_depth as _stochastic_depth
except ImportError:  # pragma: no cover - torchvision is a dependency
    _stochastic_depth = None

# Layers and functions that act on every channel on its own and keep the channel dims.
CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d,
    nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
CHANNELWISE_FUNCTIONS: frozenset[Any] = frozenset({
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu,
    F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, torch.tanh,
    F.sigmoid, F.tanh, F.softplus, torch.abs, operator.neg, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.clamp,
    F.interpolate, F.pad, torch.nn.functional.gelu,
} | ({_stochastic_depth} if _stochastic_depth is not None else set()))  # fmt: skip
CHANNELWISE_METHODS = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "abs", "neg", "clamp", "clamp_",
    "contiguous", "clone", "detach", "float", "double", "half", "to",
})  # fmt: skip
# Element-wise binary arithmetic: joins the channels of two same-shape tensors.
ELEMENTWISE_FUNCTIONS: frozenset[Any] = frozenset({
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
})  # fmt: skip
ELEMENTWISE_METHODS = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"})
# Reading a tensor's metadata does not depend on which channels it holds.
METADATA_METHODS = frozenset({"size", "dim", "numel", "ndimension", "type", "is_contiguous"})
METADATA_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda"})
REDUCTIONS = frozenset(
    {"mean", "sum", "amax", "amin", torch.mean, torch.sum, torch.amax, torch.amin}
)
RESHAPE_METHODS = frozenset({"view", "reshape", "flatten"})
RESHAPE_FUNCTIONS = frozenset({torch.reshape, torch.flatten})
PERMUTES = frozenset({"permute", "transpose", "swapaxes", torch.permute, torch.transpose})
CAT = frozenset({torch.cat, torch.concat})
SPLITS = frozenset({"split", "chunk", torch.split, torch.chunk})
# Operations that, applied to a parameter alone, give a view of it the channel pass follows
# (when they only add, drop or broadcast dimensions of size 1), or act on each entry.
PARAM_VIEWS: frozenset[Any] = frozenset({
    "view", "reshape", "unsqueeze", "squeeze", "expand", "flatten", torch.reshape,
    torch.unsqueeze, torch.squeeze, torch.flatten, operator.getitem,
    "exp", torch.exp, "sigmoid", torch.sigmoid, "abs", torch.abs, "to", "float", "type_as",
    "contiguous", "clone", operator.neg, operator.mul, operator.add, operator.sub,
    operator.truediv, operator.pow, torch.pow, "pow", "sqrt", torch.sqrt, F.softplus,
})  # fmt: skip

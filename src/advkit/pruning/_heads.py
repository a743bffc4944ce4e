"""Layer handlers that prune whole attention heads (registered when advkit.pruning loads).

An attention layer's prunable "channels" are its heads: the analysis makes them a group of
their own (the layer's ``"out"`` use), freezing the embedding width around it. Removing head
``h`` removes rows ``h * d .. h * d + d - 1`` of each of q, k and v (``d = head_dim``), the same
columns of the output projection and, for Swin, column ``h`` of the relative position bias
table; the layer becomes the matching class of :mod:`advkit.pruning.attention`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from advkit.pruning.attention import NarrowMultiheadAttention, NarrowShiftedWindowAttention
from advkit.pruning.registry import (
    _LINEAR,
    LayerHandler,
    _empty,
    _slice_present,
    _sliced,
    register_layer,
)

HEAD_TYPES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, ShiftedWindowAttention)


def _rows(keep: Tensor, dim: int, width: int, parts: int) -> Tensor:
    """Rows of kept heads in each of ``parts`` stacked blocks of ``width`` rows (q, k, v)."""
    one = (keep[:, None] * dim + torch.arange(dim, device=keep.device)).reshape(-1)
    return torch.cat([one + p * width for p in range(parts)])


def _head_filters(heads: int, dim: int, qkv: Tensor, out: Tensor) -> Tensor:
    """Each head's rows of the stacked q, k, v weight ``qkv`` and its columns of the output
    projection's weight ``out``, one row per head."""
    qkv = qkv.detach().reshape(3, heads, dim, -1).transpose(0, 1)
    out = out.detach().reshape(-1, heads, dim).transpose(0, 1)
    return torch.cat([qkv.reshape(heads, -1), out.reshape(heads, -1)], dim=1)


class _HeadsHandler(LayerHandler):
    """Shared by the attention handlers: heads are the ``"out"`` channels; nothing else."""

    heads = True
    channel_dim = -1
    narrow: type[nn.Module]
    base_name: str

    def out_channels(self, module: Any) -> int:
        return module.num_heads

    def problem(self, module: nn.Module, role: str) -> str | None:
        if role != "out":
            return f"{type(module).__name__} is pruned by whole heads only, not as {role!r}"
        return None

    def slice_in(self, module: nn.Module, keep: Tensor) -> None:
        raise TypeError(f"{type(module).__name__}'s embedding width is not pruned")

    def narrow_class(self, module: nn.Module) -> type[nn.Module]:
        """The class ``module`` takes once it has lost heads (its own, if it has it)."""
        return self.narrow

    def _narrow(self, module: nn.Module, heads: int, dim: int) -> None:
        module.num_heads, module.head_dim = heads, dim  # type: ignore[assignment]
        narrow = self.narrow_class(module)
        if not isinstance(module, narrow):
            module.__class__ = narrow  # adds no state: the same parameters, narrower


class _MultiheadAttentionHandler(_HeadsHandler):
    narrow = NarrowMultiheadAttention
    base_name = "MultiheadAttention"

    def in_channels(self, module: Any) -> int:
        return module.embed_dim

    def head_dim(self, module: Any) -> int:
        return module.head_dim

    def head_values(self, module: Any) -> list[tuple[nn.Module, str, int]]:
        first = 2 * module.num_heads * module.head_dim  # q, k, then v rows
        names = ["in_proj_weight"] + (["in_proj_bias"] if module.in_proj_bias is not None else [])
        return [(module, name, first) for name in names]

    def problem(self, module: nn.Module, role: str) -> str | None:
        mha: Any = module
        if not mha._qkv_same_embed_dim:
            return "MultiheadAttention with kdim/vdim other than embed_dim"
        if mha.bias_k is not None or mha.add_zero_attn:
            return "MultiheadAttention with add_bias_kv or add_zero_attn"
        return super().problem(module, role)

    def filter_weights(self, module: Any) -> Tensor:
        return _head_filters(
            module.num_heads, module.head_dim, module.in_proj_weight, module.out_proj.weight
        )

    def slice_out(self, module: Any, keep: Tensor) -> None:
        dim, width = module.head_dim, module.num_heads * module.head_dim
        _slice_present(module, ("in_proj_weight", "in_proj_bias"), _rows(keep, dim, width, 3))
        _LINEAR.slice_in(module.out_proj, _rows(keep, dim, width, 1))
        self._narrow(module, len(keep), dim)

    def shape(self, module: Any) -> dict[str, Any]:
        return {
            "type": self.base_name,
            "embed_dim": module.embed_dim,
            "num_heads": module.num_heads,
            "head_dim": module.head_dim,
        }

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        if shape["embed_dim"] != module.embed_dim:
            raise ValueError(f"embed_dim {shape['embed_dim']} != the layer's {module.embed_dim}")
        rows = 3 * shape["num_heads"] * shape["head_dim"]
        module.in_proj_weight = _empty(module.in_proj_weight, rows, module.embed_dim)
        module.in_proj_bias = _empty(module.in_proj_bias, rows)
        self._narrow(module, shape["num_heads"], shape["head_dim"])

    def expected_tensor(self, module: Any, sizes: dict[str, int]) -> tuple[str, tuple[int, ...]]:
        rows = 3 * sizes["num_heads"] * sizes["head_dim"]
        return "in_proj_weight", (rows, sizes["embed_dim"])


class _WindowAttentionHandler(_HeadsHandler):
    narrow = NarrowShiftedWindowAttention
    base_name = "ShiftedWindowAttention"

    def in_channels(self, module: Any) -> int:
        return module.qkv.in_features

    def head_dim(self, module: Any) -> int:
        return getattr(module, "head_dim", module.qkv.in_features // module.num_heads)

    def head_values(self, module: Any) -> list[tuple[nn.Module, str, int]]:
        first = 2 * module.num_heads * self.head_dim(module)  # q, k, then v rows
        names = ["weight"] + (["bias"] if module.qkv.bias is not None else [])
        return [(module.qkv, name, first) for name in names]

    def problem(self, module: nn.Module, role: str) -> str | None:
        attn: Any = module
        if hasattr(attn, "logit_scale") or type(attn) not in (ShiftedWindowAttention, self.narrow):
            return f"{type(module).__name__} (only Swin V1's ShiftedWindowAttention)"
        if attn.qkv.out_features != 3 * attn.num_heads * self.head_dim(attn):
            return f"{type(module).__name__} whose qkv is not 3 * num_heads * head_dim wide"
        return super().problem(module, role)

    def filter_weights(self, module: Any) -> Tensor:
        heads, dim = module.num_heads, self.head_dim(module)
        return _head_filters(heads, dim, module.qkv.weight, module.proj.weight)

    def slice_out(self, module: Any, keep: Tensor) -> None:
        dim = self.head_dim(module)
        width = module.num_heads * dim
        _LINEAR.slice_out(module.qkv, _rows(keep, dim, width, 3))
        _LINEAR.slice_in(module.proj, _rows(keep, dim, width, 1))
        table = module.relative_position_bias_table
        module.relative_position_bias_table = _sliced(table, keep, 1)
        self._narrow(module, len(keep), dim)

    def shape(self, module: Any) -> dict[str, Any]:
        return {
            "type": self.base_name,
            "num_heads": module.num_heads,
            "head_dim": self.head_dim(module),
        }

    def resize(self, module: Any, shape: dict[str, int]) -> None:
        table = module.relative_position_bias_table
        module.relative_position_bias_table = _empty(table, table.shape[0], shape["num_heads"])
        self._narrow(module, shape["num_heads"], shape["head_dim"])

    def expected_tensor(self, module: Any, sizes: dict[str, int]) -> tuple[str, tuple[int, ...]]:
        rows = module.relative_position_bias_table.shape[0]
        return "relative_position_bias_table", (rows, sizes["num_heads"])


register_layer(nn.MultiheadAttention, _MultiheadAttentionHandler())
register_layer(ShiftedWindowAttention, _WindowAttentionHandler())

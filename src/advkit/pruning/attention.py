"""Attention layers that keep fewer heads than their embedding width holds.

``nn.MultiheadAttention`` and torchvision's ``ShiftedWindowAttention`` (Swin) tie the width of
their queries, keys and values to the embedding width: ``num_heads * head_dim == embed_dim``.
Removing whole heads breaks that tie, so the pruner turns a layer that loses heads into one of
the subclasses below, in place. They hold the same parameters under the same names, only
narrower (q, k and v ``num_heads * head_dim`` rows each, the output projection as many
columns), and compute the same function as their base class over the heads kept: the embedding
width, ``head_dim`` (and so the ``head_dim ** -0.5`` scaling), the masks, dropout and Swin's
shifted windows are unchanged. The output projection is applied with ``F.linear``, as in the
base classes, so forward hooks on it do not fire and :func:`~advkit.pruning.count_flops` counts
neither, as before pruning.

References:
    Michel, Levy and Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019.
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017. Liu et al., "Swin Transformer:
    Hierarchical Vision Transformer using Shifted Windows", ICCV 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

__all__ = ["NarrowMultiheadAttention", "NarrowShiftedWindowAttention"]


class NarrowMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with ``num_heads * head_dim`` below ``embed_dim``.

    Made by the pruner from an ``nn.MultiheadAttention`` that loses heads (it adds no state:
    ``in_proj_weight`` is ``[3 * num_heads * head_dim, embed_dim]``, ``out_proj`` reads
    ``num_heads * head_dim`` features). Supports what the pruner accepts: packed projections
    (``kdim == vdim == embed_dim``), no ``add_bias_kv``, no ``add_zero_attn``. ``forward``
    takes the base class's arguments; a 3-D ``attn_mask`` must have ``N * num_heads`` (the
    heads kept) in its first dimension, and averaged attention weights average the heads kept.

    Example:
        >>> mha = nn.MultiheadAttention(8, 2, batch_first=True)
        >>> mha.__class__ = NarrowMultiheadAttention  # two heads of 4: the same function
        >>> x = torch.rand(1, 3, 8)
        >>> torch.allclose(mha(x, x, x)[0], nn.MultiheadAttention.forward(mha, x, x, x)[0],
        ...                atol=1e-6)
        True
    """

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The base class's attention over the heads kept; see ``nn.MultiheadAttention``."""
        # Written for TorchScript too: no closures, generators or identity tests.
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        # Now [L, N, E] as in F.multi_head_attention_forward.
        length, batch = query.shape[0], query.shape[1]
        heads, dim = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q: Tensor | None = None
        b_k: Tensor | None = None
        b_v: Tensor | None = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = _split_heads(query, w_q, b_q, batch, heads, dim)  # [N, heads, L, dim]
        k = _split_heads(key, w_k, b_k, batch, heads, dim)
        v = _split_heads(value, w_v, b_v, batch, heads, dim)
        scores = (q * dim**-0.5) @ k.transpose(-2, -1)  # [N, heads, L, S]
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            if attn_mask.dim() == 3:
                attn_mask = attn_mask.view(batch, heads, length, -1)
            scores = _apply_mask(scores, attn_mask)
        if key_padding_mask is not None:
            scores = _apply_mask(scores, key_padding_mask.view(batch, 1, 1, -1))
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        out = (weights @ v).permute(2, 0, 1, 3).reshape(length, batch, heads * dim)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if unbatched:
            out = out.squeeze(1)
            weights = weights.squeeze(0)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            return out, weights.mean(dim=-3)
        return out, weights


def _split_heads(
    x: Tensor, w: Tensor, b: Tensor | None, batch: int, heads: int, dim: int
) -> Tensor:
    """``[L, N, E]`` projected by ``w``, ``b`` -> ``[N, heads, L, dim]``."""
    return F.linear(x, w, b).view(x.shape[0], batch, heads, dim).permute(1, 2, 0, 3)


def _apply_mask(scores: Tensor, mask: Tensor) -> Tensor:
    """A boolean mask hides (``-inf``) where it is true; a float mask is added."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


class NarrowShiftedWindowAttention(ShiftedWindowAttention):
    """torchvision's Swin ``ShiftedWindowAttention`` with fewer heads than ``dim // head_dim``.

    Made by the pruner from a ``ShiftedWindowAttention`` that loses heads: ``qkv`` makes
    ``3 * num_heads * head_dim`` features, ``proj`` reads ``num_heads * head_dim``, and
    ``relative_position_bias_table`` keeps the kept heads' columns. Windows, the cyclic
    shift, its mask, padding and dropout are torchvision's ``shifted_window_attention``.

    Attributes:
        head_dim: Features per head (the unpruned layer's ``dim // num_heads``).
    """

    # ``head_dim`` is set by the pruner; no class annotation, which TorchScript cannot read
    # under ``from __future__ import annotations``.

    def forward(self, x: Tensor) -> Tensor:
        """Attention in (shifted) windows of ``x``, ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        batch, height, width, channels = x.shape
        wh, ww = self.window_size
        pad_r, pad_b = (ww - width % ww) % ww, (wh - height % wh) % wh
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, pad_h, pad_w, _ = x.shape
        shift = [0 if wh >= pad_h else self.shift_size[0], 0 if ww >= pad_w else self.shift_size[1]]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = (pad_h // wh) * (pad_w // ww)
        x = x.view(batch, pad_h // wh, wh, pad_w // ww, ww, channels)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch * windows, wh * ww, channels)

        heads, dim = self.num_heads, self.head_dim
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias)
        qkv = qkv.reshape(x.size(0), x.size(1), 3, heads, dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * dim**-0.5).matmul(k.transpose(-2, -1)) + self.get_relative_position_bias()
        if sum(shift) > 0:
            attn = attn.view(batch, windows, heads, x.size(1), x.size(1))
            attn = attn + _shift_mask(x, pad_h, pad_w, (wh, ww), shift).unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, heads, x.size(1), x.size(1))
        attn = F.dropout(attn.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), heads * dim)
        x = F.linear(x, self.proj.weight, self.proj.bias)
        x = F.dropout(x, p=self.dropout, training=self.training)

        x = x.view(batch, pad_h // wh, pad_w // ww, wh, ww, channels)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, pad_h, pad_w, channels)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :height, :width, :].contiguous()


def _shift_mask(
    x: Tensor, pad_h: int, pad_w: int, window: tuple[int, int], shift: list[int]
) -> Tensor:
    """``[windows, L, L]``: -100 between tokens from different regions of a shifted window."""
    wh, ww = window
    regions = x.new_zeros((pad_h, pad_w))
    h_slices = ((0, -wh), (-wh, -shift[0]), (-shift[0], None))
    w_slices = ((0, -ww), (-ww, -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            regions[h[0] : h[1], w[0] : w[1]] = count
            count += 1
    regions = regions.view(pad_h // wh, wh, pad_w // ww, ww).permute(0, 2, 1, 3)
    regions = regions.reshape(-1, wh * ww)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

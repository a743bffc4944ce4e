"""From a plan to slices: the positions each layer keeps, checked before anything changes."""

from __future__ import annotations

import copy
import copyreg
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advkit._checks import check_model
from advkit.pruning._plan_fields import MAX_INPUT_ELEMENTS
from advkit.pruning.functional import layer_size, slice_layer, slice_parameter
from advkit.pruning.graph import ChannelGraph, ChannelUse, analyze
from advkit.pruning.plan import PruningPlan
from advkit.pruning.registry import check_group_widths, find_handler

__all__ = [
    "carry_out",
    "check_plan_fits",
    "copy_model",
    "lean_copy",
    "plan_slices",
    "predicted_parameters",
    "unshare",
]

SliceKey = tuple[str, str, int | None]
"""``(layer, role, None)`` for a layer; ``(parameter, "through", dim)`` for a parameter."""


def plan_slices(model: nn.Module, plan: PruningPlan) -> dict[SliceKey, Tensor]:
    """The positions every layer (or parameter) in ``plan`` keeps, in each role it is sliced.

    Raises:
        ValueError: If the plan does not fit ``model``: invalid indices, a layer the model
            lacks or cannot slice that way, positions beyond its size or claimed twice, a
            layer left without channels, or a grouped convolution whose groups would keep
            different widths.
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    removed: dict[SliceKey, list[np.ndarray]] = {}
    claimed: dict[SliceKey, list[np.ndarray]] = {}
    for group in plan.groups:
        keep, channels = group.keep, group.channels
        if not keep or list(keep) != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= channels:
            raise ValueError(
                f"plan for {group.layers}: keep must be distinct increasing indices in "
                f"[0, {channels}), got {len(keep)} indices"
            )
        kept = np.zeros(channels, dtype=bool)
        kept[list(keep)] = True
        for use in group.uses:
            layer = use.module in modules or not _has_tensor(modules, use.module)
            key: SliceKey = (use.module, use.role, None if layer else use.dim)
            units = np.asarray(use.units(channels), dtype=np.int64)
            # Before the positions are allocated: a crafted expansion or offset asks for more
            # positions than the layer has (the size is known without allocating anything).
            needed = use.offset + len(units) * use.expansion
            size = _size(modules, use.module, use.role, key[2])
            if needed > size:
                kind = type(modules[use.module]).__name__ if layer else "the tensor"
                raise ValueError(
                    f"plan does not fit layer {use.module!r}: {kind} has {size} channels as "
                    f"{use.role!r}, the plan needs {needed}"
                )
            bad = units[(units < 0) | (units >= channels)]
            if bad.size:
                raise ValueError(f"plan maps {use.module!r} to channel {bad[0]} of {channels}")
            # Unit k covers positions offset + k * expansion + j, 0 <= j < expansion.
            positions = (
                use.offset
                + np.arange(len(units))[:, None] * use.expansion
                + np.arange(use.expansion)
            )
            claimed.setdefault(key, []).append(positions.reshape(-1))
            removed.setdefault(key, []).append(positions[~kept[units]].reshape(-1))
    slices: dict[SliceKey, Tensor] = {}
    for key, pieces in claimed.items():
        name, role, dim = key
        taken = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        if _repeats(taken):
            raise ValueError(f"plan slices {name!r} as {role!r} twice")
        size = _size(modules, name, role, dim)
        if taken.size and taken.max() >= size:
            kind = type(modules[name]).__name__ if name in modules else "the tensor"
            raise ValueError(
                f"plan does not fit layer {name!r}: {kind} has {size} channels as {role!r}, "
                f"the plan needs {taken.max() + 1}"
            )
        gone = np.concatenate(removed[key])
        if not gone.size:
            continue
        mask = np.ones(size, dtype=bool)
        mask[gone] = False
        keep_positions = torch.from_numpy(np.flatnonzero(mask))
        if not len(keep_positions):
            raise ValueError(f"plan removes every channel of {name!r} as {role!r}")
        module = modules.get(name) if dim is None else None
        if role == "through" and isinstance(module, nn.modules.conv._ConvNd):
            try:
                check_group_widths(module.out_channels, module.groups, keep_positions)
            except ValueError as err:
                raise ValueError(f"plan does not fit layer {name!r}: {err}") from None
        slices[key] = keep_positions
    return slices


def check_plan_fits(
    model: nn.Module, plan: PruningPlan, leaf_types: Iterable[type[nn.Module]] = ()
) -> None:
    """Check ``plan``'s groups against ``model``'s own analysis, before anything changes.

    The model is analyzed on zero inputs of the plan's ``input_shapes`` (the model's dtype and
    device), and every group of the plan must be a prunable group of that analysis: the same
    channel count and exactly the same layer uses (none dropped, none added, the same index
    maps). The plan's ``params_before`` must be the model's parameter count. A model that
    fails on floating-point zeros is tried on integer ones (token ids).

    Raises:
        ValueError: Naming the group and what differs.
    """
    shapes = plan.input_shapes
    if not shapes:
        raise ValueError("the plan has no input_shapes to check it against the model with")
    elements = sum(math.prod(shape) for shape in shapes)
    if elements > MAX_INPUT_ELEMENTS:
        raise ValueError(
            f"the plan's input_shapes {[list(s) for s in shapes]} hold {elements} elements, "
            f"above the limit of {MAX_INPUT_ELEMENTS} for checking a plan"
        )
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    try:
        graph = _analyze_zeros(model, shapes, dtype, device, leaf_types)
    except (TypeError, ValueError) as err:
        try:  # a model reading token ids (an embedding) takes integer inputs
            graph = _analyze_zeros(model, shapes, torch.long, device, leaf_types)
        except (TypeError, ValueError):
            raise ValueError(
                f"cannot check the plan against the model, whose analysis on zero inputs of "
                f"the plan's input_shapes fails: {err}"
            ) from err
    seen: dict[int, int] = {}
    for g, group in enumerate(plan.groups):
        where = f"plan group {g} ({list(group.layers) or 'no layer'})"
        if not group.layers:
            raise ValueError(f"{where} removes no layer's filters: it has no 'out' use")
        found = graph.group_of(group.layers[0])
        if found is None:
            raise ValueError(
                f"{where}: the model has no group of channels created by {group.layers[0]!r}"
            )
        if id(found) in seen:
            raise ValueError(f"{where} prunes the same channels as plan group {seen[id(found)]}")
        seen[id(found)] = g
        if found.frozen:
            raise ValueError(f"{where} cannot be pruned in this model: {'; '.join(found.frozen)}")
        if found.channels != group.channels:
            raise ValueError(
                f"{where} has {group.channels} channels, but in this model "
                f"{list(found.producers)} make {found.channels}: the plan is for another model"
            )
        missing = [u for u in found.uses if u not in group.uses]
        extra = [u for u in group.uses if u not in found.uses]
        if missing or extra:
            raise ValueError(
                f"{where} does not match the model's channels: uses the plan lacks "
                f"{_brief_uses(missing)}, uses the model lacks {_brief_uses(extra)}"
            )
    if plan.params_before != (count := sum(p.numel() for p in model.parameters())):
        raise ValueError(
            f"the plan was made for a model of {plan.params_before} parameters, this one has "
            f"{count}: the plan is for another model (or its statistics were edited)"
        )


def _analyze_zeros(
    model: nn.Module,
    shapes: tuple[tuple[int, ...], ...],
    dtype: torch.dtype,
    device: torch.device,
    leaf_types: Iterable[type[nn.Module]],
) -> ChannelGraph:
    inputs = tuple(torch.zeros(shape, dtype=dtype, device=device) for shape in shapes)
    return analyze(model, inputs, leaf_types=leaf_types)


def _brief_uses(uses: list[ChannelUse]) -> str:
    shown = [
        f"{u.module}:{u.role}"
        + (f"[index of {len(u.index)}]" if u.index is not None else "")
        + (f"x{u.expansion}" if u.expansion != 1 else "")
        for u in uses[:4]
    ]
    return "[" + ", ".join(shown) + (", ..." if len(uses) > 4 else "") + "]"


def predicted_parameters(model: nn.Module, slices: dict[SliceKey, Tensor]) -> int | None:
    """The parameter count ``model`` will have after ``slices``, without changing it.

    Each sliced layer is copied alone and sliced (one layer's memory at a time); a sliced
    parameter is counted from its shape. ``None`` when sliced layers nest (the copies would
    not add up), so the count can only be taken after slicing.
    """
    layers = sorted({name for name, _, dim in slices if dim is None})
    owners = [name.rpartition(".")[0] for name, _, dim in slices if dim is not None]
    if "" in layers or any(
        other.startswith(name + ".") for name in layers for other in (*layers, *owners)
    ):
        return None
    count = sum(p.numel() for p in model.parameters())
    for name in layers:
        module = model.get_submodule(name)
        clone = copy.deepcopy(module)
        for (layer, role, dim), keep in slices.items():
            if layer == name and dim is None:
                slice_layer(clone, role, keep)
        count += sum(p.numel() for p in clone.parameters())
        count -= sum(p.numel() for p in module.parameters())
    for (name, _, dim), keep in slices.items():
        if dim is not None and isinstance(tensor := _tensor(model, name), nn.Parameter):
            count += tensor.numel() // tensor.shape[dim] * len(keep) - tensor.numel()
    return count


def carry_out(model: nn.Module, plan: PruningPlan, *, inplace: bool = False) -> nn.Module:
    """Slice ``model`` as ``plan`` says (a copy unless ``inplace``), checking the slices only.

    For plans made from this model's own analysis; :func:`advkit.pruning.apply_plan` also
    checks the plan against the model first.
    """
    slices = plan_slices(model, plan)
    target = model if inplace else lean_copy(model, slices)
    for (name, role, dim), keep in slices.items():
        if dim is None:
            slice_layer(target.get_submodule(name), role, keep)
        else:
            slice_parameter(target, name, dim, keep)
    if not inplace:
        unshare(target, model)
    return target


def _repeats(positions: np.ndarray) -> bool:
    if positions.size < 2:
        return False
    if positions.min() >= 0:
        return bool(np.bincount(positions).max() > 1)
    return len(np.unique(positions)) != len(positions)


def _has_tensor(modules: dict[str, nn.Module], name: str) -> bool:
    owner, _, attr = name.rpartition(".")
    return owner in modules and isinstance(getattr(modules[owner], attr, None), Tensor)


def _size(modules: dict[str, nn.Module], name: str, role: str, dim: int | None) -> int:
    if dim is not None:
        owner, _, attr = name.rpartition(".")
        tensor = getattr(modules[owner], attr)
        if dim >= tensor.ndim:
            raise ValueError(f"plan slices dim {dim} of {name!r}, which has {tensor.ndim} dims")
        return int(tensor.shape[dim])
    if name not in modules:
        raise ValueError(f"plan names layer {name!r}, which the model lacks")
    size = layer_size(modules[name], role)  # type: ignore[arg-type]
    if isinstance(size, str):
        raise ValueError(f"plan does not fit layer {name!r}: {size}")
    return size


def lean_copy(model: nn.Module, slices: dict[SliceKey, Tensor]) -> nn.Module:
    """A deep copy of ``model`` that does not copy the tensors the slices will replace.

    The tensors held directly by each sliced layer with a built-in handler (and each sliced
    parameter) are shared with ``model`` instead of copied: the built-in handlers replace
    them with new, smaller tensors and never write to them. Call :func:`unshare` after
    slicing, to copy whatever of them was not replaced (a bias when only input channels go).
    """
    memo: dict[int, Any] = {}
    for name, _, dim in slices:
        if dim is not None:
            tensor = _tensor(model, name)
            memo[id(tensor)] = tensor
            continue
        module = model.get_submodule(name)
        handler = find_handler(module)
        if handler is None or not type(handler).__module__.startswith("advkit.pruning"):
            continue  # a user's handler might write into the tensors: copy them
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            memo[id(tensor)] = tensor
    return copy_model(model, memo)


def copy_model(model: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """``copy.deepcopy(model, memo)``, several times faster on models of many small layers.

    ``deepcopy`` rebuilds each of the ~15 hook dicts every module holds through the pickle
    protocol; here a module whose class copies the default way (nn.Module's own
    ``__getstate__``/``__setstate__``, no ``__deepcopy__``, ``__reduce__`` or slots) gets its
    attribute dict copied directly: empty dicts and sets made new, immutable values shared,
    submodules copied the same way, and everything else (tensors, non-empty hook dicts, a
    user's attributes) through ``copy.deepcopy`` with the same ``memo``, so ties, shared
    submodules and tensors given in ``memo`` come out as ``deepcopy`` makes them. Other
    modules are deep-copied as they are.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
    """
    check_model(model)
    memo = {} if memo is None else memo
    return _copy_module(model, memo, {})


_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_EMPTY_CONTAINERS = (dict, OrderedDict, set)


def _copy_module(module: nn.Module, memo: dict[int, Any], plain: dict[type, bool]) -> nn.Module:
    found = memo.get(id(module))
    if found is not None:
        return found
    cls = type(module)
    if cls not in plain:
        plain[cls] = _copies_plainly(cls)
    if not plain[cls]:
        return copy.deepcopy(module, memo)
    clone = cls.__new__(cls)
    memo[id(module)] = clone
    originals: list[Any] = memo.setdefault(id(memo), [])  # as deepcopy keeps them alive
    originals.append(module)
    state = module.__getstate__()
    for key, value in state.items():
        if type(value) in _ATOMS:
            continue  # deepcopy shares immutable values too
        if id(value) in memo:
            state[key] = memo[id(value)]
        elif key == "_modules" and type(value) is dict:
            state[key] = memo[id(value)] = {
                name: None if sub is None else _copy_module(sub, memo, plain)
                for name, sub in value.items()
            }
            originals.append(value)
        elif type(value) in _EMPTY_CONTAINERS and not value:
            state[key] = memo[id(value)] = type(value)()
            originals.append(value)
        else:
            state[key] = copy.deepcopy(value, memo)
    clone.__setstate__(state)
    return clone


def _copies_plainly(cls: type) -> bool:
    """Whether ``copy.deepcopy`` copies instances of the module class ``cls`` through
    nn.Module's own ``__getstate__`` and ``__setstate__`` and nothing else."""
    return (
        getattr(cls, "__deepcopy__", None) is None
        and cls not in copyreg.dispatch_table
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and cls.__getstate__ is nn.Module.__getstate__
        and cls.__setstate__ is nn.Module.__setstate__
        and not issubclass(cls, (list, dict))
        and not any("__slots__" in vars(base) for base in cls.__mro__[:-1])
    )


def unshare(target: nn.Module, model: nn.Module) -> None:
    """Replace every tensor ``target`` still shares with ``model`` by a deep copy (ties kept)."""
    originals = {id(t) for t in (*model.parameters(), *model.buffers())}
    copies: dict[int, Any] = {}
    for named in (target.named_parameters, target.named_buffers):
        for name, tensor in list(named(remove_duplicate=False)):
            if id(tensor) in originals:
                owner, _, attr = name.rpartition(".")
                setattr(target.get_submodule(owner), attr, copy.deepcopy(tensor, copies))


def _tensor(model: nn.Module, name: str) -> Tensor:
    owner, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(owner), attr)

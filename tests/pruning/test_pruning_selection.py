"""Selecting what to prune without guessing: ignore lists, layer types, errors that suggest
strict=False; save_pruned/load_pruned with file objects as torch.save/torch.load take."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from advkit.pruning import Pruner, load_pruned, save_pruned
from conftest import tiny_model

EXAMPLE = torch.rand(2, 3, 8, 8)


def test_every_layer_names_the_frozen_output_and_suggests_strict_false() -> None:
    with pytest.raises(ValueError, match=r"(?s)frozen.*strict=False.*ignore=\['8'\]"):
        Pruner(ratio=0.5, targets="*").plan(tiny_model(), EXAMPLE)


def test_ignore_leaves_layers_out_by_pattern() -> None:
    plan = Pruner(ratio=0.5, targets="*", ignore="8").plan(tiny_model(), EXAMPLE)
    assert plan.kept_filters() == {"0": 4, "3": 4} and plan.skipped == ()
    only_first = Pruner(ratio=0.5, targets="*", ignore=["3", "8"]).plan(tiny_model(), EXAMPLE)
    assert only_first.kept_filters() == {"0": 4}


def test_layer_types_select_convolutions_only() -> None:
    plan = Pruner(ratio=0.5, targets="*", layer_types=nn.Conv2d).plan(tiny_model(), EXAMPLE)
    assert plan.kept_filters() == {"0": 4, "3": 4}
    assert Pruner(ratio=0.25, targets="*", layer_types=[nn.Conv2d]).plan(
        tiny_model(), EXAMPLE
    ).kept_filters() == {"0": 6, "3": 6}


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ignore": 3}, TypeError, "ignore must be a string or a sequence of strings"),
        (
            {"layer_types": nn.ReLU},
            TypeError,
            "layer_types must be conv, linear or attention layer types",
        ),
        (
            {"layer_types": ()},
            TypeError,
            "layer_types must be conv, linear or attention layer types",
        ),
        ({"ignore": "*"}, ValueError, r"select no layer of the types .* outside ignore=\['\*'\]"),
        ({"layer_types": nn.Conv1d}, ValueError, r"select no layer of the types \(Conv1d\)"),
    ],
)
def test_bad_selection_is_refused(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Pruner(ratio=0.5, targets="*", **options).plan(tiny_model(), EXAMPLE)


def _pruned() -> nn.Module:
    pruner = Pruner(ratio=0.5, targets=["0", "3"])
    return pruner.apply(tiny_model(), pruner.plan(tiny_model(), EXAMPLE)).eval()


def test_save_and_load_pruned_take_file_objects(tmp_path: Path) -> None:
    pruned = _pruned()
    buffer = io.BytesIO()
    save_pruned(pruned, buffer)
    buffer.seek(0)
    loaded = load_pruned(buffer, tiny_model())
    assert torch.equal(loaded.eval()(EXAMPLE), pruned(EXAMPLE))
    with open(tmp_path / "pruned.pt", "wb") as file:
        save_pruned(pruned, file)
    with open(tmp_path / "pruned.pt", "rb") as file:
        assert torch.equal(load_pruned(file, tiny_model()).eval()(EXAMPLE), pruned(EXAMPLE))
    with pytest.raises(TypeError, match="path must be a path or a binary file object, got int"):
        save_pruned(pruned, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be a path or a binary file object, got int"):
        load_pruned(3, tiny_model())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a pruned-model file"):
        load_pruned(io.BytesIO(b"not torch"), tiny_model())

"""The public surface: every exported name exists, is documented, and the version is set."""

from __future__ import annotations

import importlib
import inspect

import pytest

import advkit

SUBPACKAGES = [
    "attacks",
    "certification",
    "data",
    "evaluation",
    "models",
    "pruning",
    "recipes",
    "training",
]


def test_version() -> None:
    from importlib.metadata import version

    assert advkit.__version__ == version("advkit")


@pytest.mark.parametrize("package", ["advkit", *(f"advkit.{name}" for name in SUBPACKAGES)])
def test_every_public_name_resolves_and_has_a_docstring(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    undocumented = [
        name
        for name in module.__all__
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert not undocumented


def test_top_level_names_are_the_subpackages_objects() -> None:
    assert advkit.PGD is advkit.attacks.PGD
    assert advkit.Pruner is advkit.pruning.Pruner
    assert advkit.Trainer is advkit.training.Trainer
    assert advkit.evaluate_grid is advkit.evaluation.evaluate_grid
    assert advkit.SyntheticAnimals10 is advkit.data.SyntheticAnimals10


def test_py_typed_is_shipped() -> None:
    from importlib.resources import files

    assert files("advkit").joinpath("py.typed").is_file()


def test_the_recipes_are_in_advkit_recipes_and_no_longer_in_pruning() -> None:
    moved = {"FineTune", "iterative_prune", "robust_prune", "AdversarialTaylor", "ScoredNetwork"}
    assert moved <= set(advkit.recipes.__all__)
    assert not moved & set(advkit.pruning.__all__)
    assert advkit.recipes.robust_prune.__module__ == "advkit.recipes.pipeline"

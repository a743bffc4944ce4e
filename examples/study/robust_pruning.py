"""Robust pruning: the best adversarially fine-tuned model pruned by L1 and by adversarial Taylor.

The study pruned a non-robust model by L1 norm; here the most robust model of the defenses
(highest robust accuracy at ``--recipe-eps``) is pruned at the study's ratios, once by L1 norm
(Li et al. 2017) and once by the robustness-aware importance of
:class:`advkit.recipes.AdversarialTaylor` (Molchanov et al. 2019's Taylor criterion on
adversarial examples), each then fine-tuned with that model's own recipe. What each keeps,
clean and robust, is in the report's section 5.4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from advkit.attacks import PGD
from advkit.evaluation import accuracy
from advkit.pruning import Pruner, PruningPlan, count_parameters
from advkit.recipes import AdversarialTaylor

from .cache import StageCache
from .config import StudyConfig
from .data import StudyData
from .processes import from_main, is_main
from .training import (
    MODEL_FILE,
    TrainedModel,
    _drop_checkpoint,
    _fit,
    _load,
    _optimizer_settings,
    _store,
    adversarial_recipes,
)

__all__ = [
    "IMPORTANCES",
    "best_defense",
    "robust_prune_name",
    "train_all_robust_pruned",
    "train_robust_pruned",
]

IMPORTANCES = ("l1", "taylor")
"""The importance criteria compared: L1 filter norm and adversarial Taylor."""


def robust_prune_name(importance: str, ratio: float) -> str:
    """Stage and model name (``"rp_taylor_40"``)."""
    return f"rp_{importance}_{round(100 * ratio):d}"


def best_defense(evaluations: dict[str, dict[str, Any]], config: StudyConfig) -> str:
    """The adversarially fine-tuned model with the most robust images at ``--recipe-eps``."""
    eps = config.recipe_eps if config.recipe_eps in config.attack_eps else max(config.attack_eps)

    def robust(name: str) -> int:
        item = next(r for r in evaluations[name]["robust"] if abs(r["eps"] * 255 - eps) < 1e-6)
        return int(item["robust"]["correct"])

    names = [n for n in evaluations if n.startswith("adv_")]
    return max(names, key=robust)


def train_robust_pruned(
    base: TrainedModel,
    importance: str,
    ratio: float,
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
    device: torch.device,
) -> TrainedModel:
    """Prune ``base`` at ``ratio`` by ``importance``, then fine-tune it with its own recipe."""
    name = robust_prune_name(importance, ratio)
    classes = len(data.classes)
    recipe = next(r for r in adversarial_recipes(config) if r.name == base.name)
    example = torch.rand(1, 3, config.image_size, config.image_size, device=device)
    eps = config.recipe_eps / 255

    def compute(folder: Path) -> dict[str, Any]:
        source = _load(stages.folder(base.name), config, classes, device)
        if importance == "taylor":
            loader, _ = data.training_loaders(config, config.adv_images)
            criterion: Any = AdversarialTaylor(
                PGD(eps=eps, steps=config.recipe_steps, random_start=True),
                loader,
                batches=config.taylor_batches,
            )
            pruner = Pruner(ratio=ratio, targets=config.prune_targets, importance=criterion)
        else:
            pruner = Pruner(ratio=ratio, targets=config.prune_targets)
        # Adversarial Taylor scores come from each process's share of the data: every
        # process prunes with rank 0's plan, so all hold the same model.
        plan = PruningPlan.from_json(from_main(pruner.plan(source, example).to_json()))
        if is_main():
            (folder / "plan.json").write_text(plan.to_json(), encoding="utf-8")
        model = pruner.apply(source, plan)
        before = accuracy(model, data.val_loader(config), progress=config.progress)
        history = _fit(
            model,
            folder,
            name,
            config.robust_prune_epochs,
            config,
            data,
            device,
            objective=recipe.objective,
            images=config.adv_images,
        )
        _store(model, folder)
        _drop_checkpoint(folder)
        return {
            "base": base.name,
            "importance": importance,
            "ratio": ratio,
            "targets": config.prune_targets,
            "kept_filters": plan.kept_filters(),
            "params_before": plan.params_before,
            "params_after": plan.params_after,
            "flops_before": plan.flops_before,
            "flops_after": plan.flops_after,
            "accuracy_before_finetuning": before.to_dict(),
            "epochs": config.robust_prune_epochs,
            "history": history,
        }

    settings = {
        "importance": importance,
        "ratio": ratio,
        "targets": config.prune_targets,
        "taylor_batches": config.taylor_batches if importance == "taylor" else None,
        "recipe": recipe.settings,
        "epochs": config.robust_prune_epochs,
        "images": config.adv_images,
        "optimizer": _optimizer_settings(config),
    }
    info, key = stages.run(name, settings, compute, parents=(base.key,), files=(MODEL_FILE,))
    model = _load(stages.folder(name), config, classes, device)
    if count_parameters(model) != info["params_after"]:
        raise RuntimeError(f"{name}: the loaded model does not match its pruning plan")
    label = f"{base.label}, {'L1' if importance == 'l1' else 'adv. Taylor'} {round(100 * ratio)}%"
    return TrainedModel(name, label, key, model, info)


def train_all_robust_pruned(
    models: list[TrainedModel],
    evaluations: dict[str, dict[str, Any]],
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
    device: torch.device,
) -> list[TrainedModel]:
    """The best defense pruned by every importance at every ``--prune-ratios`` ratio."""
    by_name = {m.name: m for m in models}
    base = by_name[best_defense(evaluations, config)]
    return [
        train_robust_pruned(base, importance, ratio, config, data, stages, device)
        for ratio in config.prune_ratios
        for importance in IMPORTANCES
    ]

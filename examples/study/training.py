"""The training stages: baselines, pruning with fine-tuning, and adversarial fine-tuning.

Each stage trains with advkit's :class:`~advkit.training.Trainer`, writes a Trainer checkpoint
after every epoch (so an interrupted stage resumes there) and stores its final model with
:func:`~advkit.pruning.save_pruned`, which also records the smaller layer sizes of a pruned
model. The short baseline is the long one's first epochs: with a constant learning rate and the
same seed, training 4 epochs and training 20 epochs share their first 4 epochs exactly (the
Trainer resumes bit for bit), so the long baseline continues the short one's checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkit.attacks import IFGSM, PGD
from advkit.evaluation import accuracy
from advkit.models import resnet18
from advkit.pruning import (
    Pruner,
    PruningPlan,
    count_flops,
    count_parameters,
    load_pruned,
    save_pruned,
)
from advkit.training import (
    MART,
    TRADES,
    Callback,
    FastAT,
    MixedCE,
    Objective,
    OverfittingGuard,
    Trainer,
    load_checkpoint,
    load_weights,
)

from .cache import StageCache
from .config import StudyConfig
from .data import StudyData
from .processes import is_main

__all__ = ["TrainedModel", "train_all"]

logger = logging.getLogger("study")

MODEL_FILE = "model.pt"
CHECKPOINT = "checkpoint/last.pt"


@dataclass
class TrainedModel:
    """A model of the study, with the key of the stage that made it.

    Attributes:
        name: Short identifier, used in file and JSON names (``"base_long"``).
        label: Name for tables and plots (``"baseline, 20 epochs"``).
        key: Key of the stage that produced it (evaluations build on it).
        model: The network, in eval mode, on the study's device.
        info: What its stage recorded (training history, pruning plan, settings).
    """

    name: str
    label: str
    key: str
    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


def _architecture(config: StudyConfig, classes: int) -> nn.Module:
    """An unpruned ResNet-18 of the study's shape, to load stored weights into."""
    return resnet18(num_classes=classes, weights=None, width=config.width)


def _initial_model(config: StudyConfig, classes: int) -> nn.Module:
    weights = None if config.weights.lower() == "none" else config.weights
    return resnet18(num_classes=classes, weights=weights, width=config.width)


def _seed_for(config: StudyConfig, stage: str) -> int:
    """A per-stage seed, so that no two stages share flips or random starts."""
    digest = hashlib.sha256(f"{config.seed}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _sgd(config: StudyConfig) -> Any:
    def factory(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )

    return factory


def _fit(
    model: nn.Module,
    folder: Path,
    stage: str,
    epochs: int,
    config: StudyConfig,
    data: StudyData,
    device: torch.device,
    *,
    objective: Objective | None = None,
    warmup_epochs: float = 0.0,
    callbacks: tuple[Callback, ...] = (),
    start_from: Path | None = None,
    images: int = 0,
    scheduler: Any = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place to ``epochs`` epochs, resuming from a checkpoint if one exists.

    ``start_from`` is another stage's checkpoint to continue (the long baseline continues the
    short one); this stage's own checkpoint, left by an interrupted run, takes precedence.
    """
    own = folder / CHECKPOINT
    resume = own if own.is_file() else start_from
    if resume is not None:
        state = load_checkpoint(resume)
        if int(state["epoch"]) >= epochs:  # stopped after its last epoch: nothing to train
            load_weights(model, resume)
            return list(state["history"]["epochs"])
    torch.manual_seed(_seed_for(config, stage))  # flips and random starts; resume restores it
    train_loader, val_loader = data.training_loaders(config, images)
    trainer = Trainer(
        model,
        _sgd(config),
        objective=objective,
        eps_warmup_epochs=warmup_epochs,
        callbacks=callbacks,
        scheduler=scheduler,
        device=device,
        checkpoint_dir=own.parent,
        progress=config.progress,
    )
    if resume is not None:
        logger.info("stage %s: resuming from %s", stage, resume)
    history = trainer.fit(train_loader, val_loader, epochs=epochs, resume_from=resume)
    return [dict(record) for record in history]


def _load(folder: Path, config: StudyConfig, classes: int, device: torch.device) -> nn.Module:
    model = load_pruned(folder / MODEL_FILE, _architecture(config, classes))
    return model.to(device).eval()


def _store(model: nn.Module, folder: Path) -> None:
    if is_main():  # under torchrun every process holds the same model; rank 0 writes it
        save_pruned(model, folder / MODEL_FILE)


def _drop_checkpoint(folder: Path) -> None:
    """Remove a finished stage's Trainer checkpoint (the model file holds what is needed)."""
    if is_main():
        (folder / CHECKPOINT).unlink(missing_ok=True)


def _settle(config: StudyConfig) -> Any:
    """The baselines' schedule: the learning rate times ``settle_factor`` in the last epoch of
    each baseline, so each ends on settled weights; the same function of the epoch for both,
    so the long baseline still continues the short one exactly."""
    last = {config.short_epochs - 1, config.long_epochs - 1}

    def factor(epoch: int) -> float:
        return config.settle_factor if epoch in last else 1.0

    def build(optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    return build


def train_baselines(
    config: StudyConfig, data: StudyData, stages: StageCache, device: torch.device
) -> tuple[TrainedModel, TrainedModel]:
    """Experiment 1: the short and the long baseline (the study: 4 and 20 epochs)."""
    classes = len(data.classes)
    common = {
        "data": _data_settings(config),
        "weights": config.weights,
        "optimizer": _optimizer_settings(config),
        "settle": [config.settle_factor, config.short_epochs, config.long_epochs],
        "seed": config.seed,
    }

    def short(folder: Path) -> dict[str, Any]:
        torch.manual_seed(_seed_for(config, "init"))  # the new head (and the whole net if random)
        model = _initial_model(config, classes)
        history = _fit(
            model,
            folder,
            "base_short",
            config.short_epochs,
            config,
            data,
            device,
            scheduler=_settle(config),
        )
        _store(model, folder)
        return {"epochs": config.short_epochs, "history": history}

    short_info, short_key = stages.run(
        "base_short",
        {**common, "epochs": config.short_epochs},
        short,
        files=(MODEL_FILE, CHECKPOINT),
    )

    def long(folder: Path) -> dict[str, Any]:
        model = _initial_model(config, classes)
        start = stages.folder("base_short") / CHECKPOINT
        history = _fit(
            model,
            folder,
            "base_long",
            config.long_epochs,
            config,
            data,
            device,
            start_from=start,
            scheduler=_settle(config),
        )
        _store(model, folder)
        _drop_checkpoint(folder)
        return {"epochs": config.long_epochs, "history": history}

    long_info, long_key = stages.run(
        "base_long", {"epochs": config.long_epochs}, long, parents=(short_key,), files=(MODEL_FILE,)
    )
    return (
        TrainedModel(
            "base_short",
            f"baseline, {config.short_epochs} ep.",
            short_key,
            _load(stages.folder("base_short"), config, classes, device),
            short_info,
        ),
        TrainedModel(
            "base_long",
            f"baseline, {config.long_epochs} ep.",
            long_key,
            _load(stages.folder("base_long"), config, classes, device),
            long_info,
        ),
    )


def prune_name(ratio: float) -> str:
    """Stage and model name of the pruned model at ``ratio`` (``0.2`` -> ``"prune20"``)."""
    return f"prune{round(100 * ratio):d}"


def train_pruned(
    parent: TrainedModel,
    ratio: float,
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
    device: torch.device,
) -> TrainedModel:
    """Experiment 3: remove ``ratio`` of the target filters by L1 norm, then fine-tune."""
    name = prune_name(ratio)
    classes = len(data.classes)
    example = torch.rand(1, 3, config.image_size, config.image_size, device=device)

    def compute(folder: Path) -> dict[str, Any]:
        pruner = Pruner(ratio=ratio, targets=config.prune_targets)
        plan = pruner.plan(parent.model, example)
        if is_main():
            (folder / "plan.json").write_text(plan.to_json(), encoding="utf-8")
        model = pruner.apply(parent.model, plan)
        before = accuracy(model, data.val_loader(config), progress=config.progress)
        history = _fit(model, folder, name, config.prune_epochs, config, data, device)
        _store(model, folder)
        _drop_checkpoint(folder)
        return {
            "ratio": ratio,
            "targets": config.prune_targets,
            "kept_filters": plan.kept_filters(),
            "params_before": plan.params_before,
            "params_after": plan.params_after,
            "flops_before": plan.flops_before,
            "flops_after": plan.flops_after,
            "flops_input": [1, 3, config.image_size, config.image_size],
            "accuracy_before_finetuning": before.to_dict(),
            "epochs": config.prune_epochs,
            "history": history,
        }

    settings = {
        "ratio": ratio,
        "targets": config.prune_targets,
        "epochs": config.prune_epochs,
        "optimizer": _optimizer_settings(config),
    }
    info, key = stages.run(name, settings, compute, parents=(parent.key,), files=(MODEL_FILE,))
    model = _load(stages.folder(name), config, classes, device)
    plan = PruningPlan.from_json((stages.folder(name) / "plan.json").read_text(encoding="utf-8"))
    # The stored counts are the plan's; check the loaded model really is that small.
    if count_parameters(model) != plan.params_after:
        raise RuntimeError(f"{name}: the loaded model does not match its pruning plan")
    info = {**info, "flops_check": count_flops(model, example) == plan.flops_after}
    return TrainedModel(name, f"pruned {round(100 * ratio)}% + FT", key, model, info)


@dataclass(frozen=True)
class AdversarialRecipe:
    """One adversarial fine-tuning run: the Trainer objective and the schedule.

    ``settings`` is what identifies the recipe in the stage cache (JSON, no object reprs).
    """

    name: str
    label: str
    objective: Objective
    epochs: int
    warmup_epochs: float
    description: str
    settings: dict[str, Any]
    guard: bool = False


def _mixed(name: str, label: str, attack: Any, lam: float, epochs: int, warmup: float,
           description: str, kind: str) -> AdversarialRecipe:  # fmt: skip
    settings = {"objective": kind, "attack": repr(attack), "lam": lam}
    return AdversarialRecipe(
        name, label, MixedCE(attack, adv_weight=lam), epochs, warmup, description, settings
    )


def adversarial_recipes(config: StudyConfig) -> list[AdversarialRecipe]:
    """The study's light and strong I-FGSM recipes, then the defenses of the field.

    PGD-AT, TRADES, MART and fast AT all start from the same pruned model and train for
    ``recipe_epochs`` at ``recipe_eps`` (the study's recipes for ``adv_epochs``).
    """
    eps, steps = config.recipe_eps / 255, config.recipe_steps
    epochs, warmup = config.recipe_epochs, config.recipe_warmup_epochs
    ramp = f", eps ramped up over {warmup:g} epochs" if warmup else ""
    return [
        _mixed(
            "adv_light",
            "adv. FT light",
            IFGSM(eps=config.light_eps / 255, steps=config.light_steps),
            config.light_lam,
            config.adv_epochs,
            0.0,
            f"the study's light recipe: I-FGSM eps {config.light_eps:g}/255, "
            f"{config.light_steps} iterations, lam {config.light_lam:g}",
            "mixed",
        ),
        _mixed(
            "adv_strong",
            "adv. FT strong",
            IFGSM(eps=config.strong_eps / 255, steps=config.strong_steps),
            config.strong_lam,
            config.adv_epochs,
            0.0,
            f"the study's strong recipe: I-FGSM eps {config.strong_eps:g}/255, "
            f"{config.strong_steps} iterations, lam {config.strong_lam:g}",
            "mixed",
        ),
        _mixed(
            "adv_pgd",
            "PGD-AT",
            PGD(eps=eps, steps=steps, random_start=True),
            config.recipe_lam,
            epochs,
            warmup,
            f"PGD-AT (Madry et al. 2018): PGD eps {config.recipe_eps:g}/255 in pixel space, "
            f"{steps} steps of 2.5 eps/steps from a random start, crafted in eval mode, lam "
            f"{config.recipe_lam:g}, the whole network trained{ramp}",
            "pgd-at",
        ),
        AdversarialRecipe(
            "adv_trades",
            "TRADES",
            TRADES(eps=eps, steps=steps, beta=config.trades_beta),
            epochs,
            warmup,
            f"TRADES (Zhang et al. 2019): cross-entropy plus beta {config.trades_beta:g} times "
            f"the KL divergence to a {steps}-step inner maximization at eps "
            f"{config.recipe_eps:g}/255{ramp}",
            {"objective": "trades", "eps": eps, "steps": steps, "beta": config.trades_beta},
        ),
        AdversarialRecipe(
            "adv_mart",
            "MART",
            MART(eps=eps, steps=steps, beta=config.mart_beta),
            epochs,
            warmup,
            f"MART (Wang et al. 2020): boosted cross-entropy on {steps}-step PGD examples at eps "
            f"{config.recipe_eps:g}/255 plus beta {config.mart_beta:g} times the "
            f"misclassification-weighted KL term{ramp}",
            {"objective": "mart", "eps": eps, "steps": steps, "beta": config.mart_beta},
        ),
        AdversarialRecipe(
            "adv_fast",
            "fast AT",
            FastAT(eps=eps),
            epochs,
            warmup,
            f"fast AT (Wong et al. 2020): one FGSM step of 1.25 eps from a random start at eps "
            f"{config.recipe_eps:g}/255, guarded against catastrophic overfitting (PGD-{steps} "
            f"on held-out images every epoch, rollback on a drop of 0.2){ramp}",
            {"objective": "fast-at", "eps": eps, "alpha": 1.25 * eps, "guard_steps": steps},
            guard=True,
        ),
    ]


def _guard(recipe: AdversarialRecipe, config: StudyConfig, data: StudyData) -> Callback:
    """Wong et al.'s check: PGD accuracy on held-out images, rollback when it collapses."""
    inputs, labels = data.held_out_batch(config.batch_size, config)
    attack = PGD(eps=config.recipe_eps / 255, steps=config.recipe_steps, random_start=True)
    return OverfittingGuard(inputs, labels, attack, action="rollback")


def train_adversarial(
    base: TrainedModel,
    recipe: AdversarialRecipe,
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
    device: torch.device,
) -> TrainedModel:
    """Experiments 4 and 5: adversarial fine-tuning of a pruned model, every layer trained."""
    classes = len(data.classes)

    def compute(folder: Path) -> dict[str, Any]:
        model = _architecture(config, classes)
        model = load_pruned(stages.folder(base.name) / MODEL_FILE, model).to(device)
        guard = _guard(recipe, config, data) if recipe.guard else None
        history = _fit(
            model,
            folder,
            recipe.name,
            recipe.epochs,
            config,
            data,
            device,
            objective=recipe.objective,
            warmup_epochs=recipe.warmup_epochs,
            callbacks=() if guard is None else (guard,),
            images=config.adv_images,
        )
        _store(model, folder)
        _drop_checkpoint(folder)
        info: dict[str, Any] = {
            "base": base.name,
            **recipe.settings,
            "epochs": recipe.epochs,
            "warmup_epochs": recipe.warmup_epochs,
            "images": config.adv_images or len(data.train),  # type: ignore[arg-type]
            "description": recipe.description,
            "history": history,
        }
        if isinstance(guard, OverfittingGuard):
            info["guard"] = {
                "checks": [list(check) for check in guard.history],
                "collapsed_at": guard.collapsed_at,
                "rolled_back": guard.rolled_back,
            }
        return info

    settings = {
        **recipe.settings,
        "epochs": recipe.epochs,
        "warmup_epochs": recipe.warmup_epochs,
        "images": config.adv_images,
        "optimizer": _optimizer_settings(config),
    }
    info, key = stages.run(recipe.name, settings, compute, parents=(base.key,), files=(MODEL_FILE,))
    model = _load(stages.folder(recipe.name), config, classes, device)
    return TrainedModel(recipe.name, recipe.label, key, model, info)


def train_all(
    config: StudyConfig, data: StudyData, stages: StageCache, device: torch.device
) -> list[TrainedModel]:
    """Every model of the study, in the order of the report."""
    short, long = train_baselines(config, data, stages, device)
    pruned = [train_pruned(long, r, config, data, stages, device) for r in config.prune_ratios]
    base = next(p for p in pruned if p.name == prune_name(config.adv_base_ratio))
    adversarial = [
        train_adversarial(base, recipe, config, data, stages, device)
        for recipe in adversarial_recipes(config)
    ]
    return [short, long, *pruned, *adversarial]


def _data_settings(config: StudyConfig) -> dict[str, Any]:
    return {
        "width": config.width,
        "source": "synthetic-demo" if config.data is None else str(Path(config.data).resolve()),
        "image_size": config.image_size,
        "demo_images": config.demo_images if config.data is None else None,
        "val_fraction": config.val_fraction,
        "batch_size": config.batch_size,
    }


def _optimizer_settings(config: StudyConfig) -> dict[str, Any]:
    return {
        "name": "SGD",
        "lr": config.lr,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
    }

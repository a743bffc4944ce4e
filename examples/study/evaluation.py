"""The evaluation stages: the I-FGSM grid, the strongest evaluation, transfer, and examples.

All numbers come from :mod:`advkit.evaluation`, which runs the model in eval mode, counts a
sample as robust only if no iterate of the attack fooled it, attaches Wilson intervals, and runs
its sanity checks (eval mode, eps = 0 changes nothing, monotone in eps and steps, every
adversarial example inside the box and the eps-ball). The I-FGSM grid, the study's own
experiment, runs on the models of the study's sections (:data:`GRID_MODELS`); every model gets
the robust accuracy of :func:`study.robust.robust_attack` at every ``--attack-eps``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from advkit.attacks import IFGSM, MIFGSM
from advkit.evaluation import accuracy, evaluate_grid, robust_accuracy, transfer_matrix

from .cache import StageCache
from .config import StudyConfig
from .data import StudyData
from .formatting import attack_text
from .processes import is_main
from .robust import robust_attack
from .training import TrainedModel

__all__ = ["GRID_MODELS", "TRANSFER_MODELS", "evaluate_models", "example_images", "transfer"]

GRID_MODELS = ("base_short", "base_long", "prune20", "prune40", "adv_light", "adv_strong")
"""Models of the study's own sections 2-4 (pruned models by any ratio), which get the grid."""

TRANSFER_MODELS = (*GRID_MODELS, "adv_pgd")
"""Models of the transfer matrix: the study's and PGD-AT."""


def in_study(name: str) -> bool:
    """Whether model ``name`` is one of the study's own (it gets the I-FGSM grid)."""
    return name in GRID_MODELS or name.startswith("prune")


EXAMPLES_FILE = "examples.pt"


def _generator(config: StudyConfig, name: str, device: torch.device) -> torch.Generator:
    """A seeded generator for random starts, one per evaluation, on the model's device."""
    digest = hashlib.sha256(f"{config.seed}/eval/{name}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:4], "little"))


def _pixels(values: Sequence[float]) -> list[float]:
    return [v / 255 for v in values]


def _evaluation_settings(config: StudyConfig) -> dict[str, Any]:
    return {
        "eval_size": config.eval_size,
        "grid_eps": list(config.grid_eps),
        "grid_steps": list(config.grid_steps),
        "attack_eps": list(config.attack_eps),
        "robust_eval": config.robust_eval,
        "robust_attacks": [repr(robust_attack(config, e)) for e in config.attack_eps],
        "attack_batch": config.attack_batch,  # PGD's random starts follow the batch layout
        "eval_batch": config.eval_batch,
        "seed": config.seed,
    }


def evaluate_models(
    models: Sequence[TrainedModel],
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """Clean accuracy (whole validation split) and robust accuracies of every model.

    Returns:
        By model name: ``clean`` (an accuracy), ``ifgsm`` (the eps x steps grid, for the
        study's models only), ``robust`` (one robust accuracy per ``attack_eps``, from the
        strongest evaluation) and ``zero_eps`` (I-FGSM at eps 0, a sanity check), each in its
        advkit ``to_dict`` form.
    """
    results: dict[str, dict[str, Any]] = {}
    settings = _evaluation_settings(config)
    for trained in models:

        def compute(folder: Path, trained: TrainedModel = trained) -> dict[str, Any]:
            model, progress = trained.model, config.progress
            loader = data.attack_loader(config.eval_size, config)
            clean = accuracy(model, data.val_loader(config), progress=progress)
            result: dict[str, Any] = {"clean": clean.to_dict()}
            if in_study(trained.name):
                result["ifgsm"] = evaluate_grid(
                    model,
                    loader,
                    IFGSM,
                    eps=_pixels(config.grid_eps),
                    steps=list(config.grid_steps),
                    progress=progress,
                    max_batch=config.attack_batch,
                ).to_dict()
            generator = _generator(config, trained.name, device)
            result["robust"] = [
                robust_accuracy(
                    model, loader, robust_attack(config, eps), generator=generator,
                    progress=progress,
                ).to_dict()
                for eps in config.attack_eps
            ]  # fmt: skip
            zero = robust_accuracy(model, loader, IFGSM(eps=0.0, steps=1), progress=progress)
            result["zero_eps"] = zero.to_dict()
            return result

        key = settings if in_study(trained.name) else {**settings, "grid": False}
        results[trained.name], _ = stages.run(
            f"eval_{trained.name}", key, compute, parents=(trained.key,)
        )
    return results


def transfer(
    models: Sequence[TrainedModel],
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
) -> dict[str, Any]:
    """The black-box transfer matrix: MI-FGSM crafted on each model, judged on every model.

    Only :data:`TRANSFER_MODELS` take part (the study's models and PGD-AT), to bound its cost.
    """
    attack = MIFGSM(eps=config.transfer_eps / 255, steps=config.transfer_steps)
    models = [m for m in models if m.name in TRANSFER_MODELS or m.name.startswith("prune")]

    def compute(folder: Path) -> dict[str, Any]:
        named = {m.label: m.model for m in models}
        loader = data.attack_loader(config.transfer_size, config)
        matrix = transfer_matrix(named, named, loader, attack, progress=config.progress)
        return {
            "names": [m.name for m in models],
            "description": attack_text("MIFGSM", config.transfer_eps, config.transfer_steps),
            **matrix.to_dict(),
        }

    settings = {
        "attack": repr(attack),
        "size": config.transfer_size,
        "labels": [m.label for m in models],
        "seed": config.seed,
    }
    result, _ = stages.run("transfer", settings, compute, parents=tuple(m.key for m in models))
    return result


def example_images(
    baseline: TrainedModel,
    robust: TrainedModel,
    config: StudyConfig,
    data: StudyData,
    stages: StageCache,
    device: torch.device,
) -> tuple[dict[str, Any], Path]:
    """Adversarial examples of a few validation images against two models, for the picture.

    The attack is I-FGSM at the strong radius with the grid's largest iteration count. Images
    the baseline classifies correctly are preferred, since an attack on a misclassified image
    shows nothing.

    Returns:
        The stage's summary and the path of the tensors file (clean images, adversarial
        images per model, labels and predictions), loadable with ``weights_only=True``.
    """
    attack = IFGSM(eps=config.strong_eps / 255, steps=max(config.grid_steps))

    def compute(folder: Path) -> dict[str, Any]:
        loader = data.attack_loader(config.eval_size, config)
        images, labels = next(iter(loader))
        images, labels = images.to(device), labels.to(device)
        with torch.no_grad():
            right = baseline.model(images).argmax(1) == labels
        order = torch.cat([right.nonzero().flatten(), (~right).nonzero().flatten()])
        chosen = order[: config.example_images]
        clean, truth = images[chosen], labels[chosen]
        tensors: dict[str, torch.Tensor] = {"clean": clean.cpu(), "labels": truth.cpu()}
        summary: dict[str, Any] = {
            "attack": repr(attack),
            "description": attack_text("IFGSM", config.strong_eps, max(config.grid_steps)),
            "models": {},
        }
        for trained in (baseline, robust):
            result = attack.run(trained.model, clean, truth)
            with torch.no_grad():
                before = trained.model(clean).argmax(1)
            tensors[f"{trained.name}_adversarial"] = result.adversarial.cpu()
            tensors[f"{trained.name}_clean_pred"] = before.cpu()
            tensors[f"{trained.name}_adv_pred"] = result.logits.argmax(1).cpu()
            summary["models"][trained.name] = {
                "label": trained.label,
                "clean_predictions": before.tolist(),
                "adversarial_predictions": result.logits.argmax(1).tolist(),
            }
        summary["labels"] = truth.tolist()
        if is_main():
            torch.save(tensors, folder / EXAMPLES_FILE)
        return summary

    settings = {"attack": repr(attack), "count": config.example_images, "seed": config.seed}
    summary, _ = stages.run(
        "examples",
        settings,
        compute,
        parents=(baseline.key, robust.key),
        files=(EXAMPLES_FILE,),
    )
    return summary, stages.folder("examples") / EXAMPLES_FILE

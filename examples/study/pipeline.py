"""The whole study in order: data, training stages, evaluations, then results, plots and report."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .cache import StageCache, write_json
from .config import StudyConfig
from .data import StudyData, load_data
from .environment import environment
from .evaluation import evaluate_models, example_images, in_study, transfer
from .plots import make_plots
from .processes import barrier, is_main, pick_device, world_size
from .report import STUDY_REFERENCE, write_report
from .robust_pruning import train_all_robust_pruned
from .sanity import collect_checks
from .training import TrainedModel, train_all

__all__ = ["resolve_device", "run_study"]

logger = logging.getLogger("study")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; otherwise the named device, checked.

    Raises:
        ValueError: If the name is not a device, or CUDA is asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA, but torch sees no CUDA device")
    return device


def _data_summary(data: StudyData, config: StudyConfig) -> dict[str, Any]:
    return {
        "synthetic": data.synthetic,
        "description": data.description,
        "classes": list(data.classes),
        "train_images": len(data.train),  # type: ignore[arg-type]
        "val_images": len(data.val),  # type: ignore[arg-type]
        "attacked_images": min(config.eval_size, len(data.val)),  # type: ignore[arg-type]
        "transfer_images": min(config.transfer_size, len(data.val)),  # type: ignore[arg-type]
    }


def _sections(
    models: list[TrainedModel],
    evaluations: dict[str, dict[str, Any]],
    matrix: dict[str, Any],
    examples: dict[str, Any],
) -> dict[str, Any]:
    """Arrange the stage results by the report's sections."""
    by_name = {m.name: m for m in models}

    def entry(name: str) -> dict[str, Any]:
        model = by_name[name]
        return {"label": model.label, **model.info, "clean": evaluations[name]["clean"]}

    pruned = [m.name for m in models if m.name.startswith("prune")]
    adversarial = ["adv_light", "adv_strong"]
    defenses = [m.name for m in models if m.name.startswith("adv_")]
    return {
        "models": {m.name: {"label": m.label, "stage_key": m.key} for m in models},
        "baselines": {name: entry(name) for name in ("base_short", "base_long")},
        "ifgsm": {name: evaluations[name]["ifgsm"] for name in by_name if in_study(name)},
        "robust": {name: evaluations[name]["robust"] for name in by_name},
        "pruning": {name: entry(name) for name in pruned},
        "adversarial_finetuning": {name: entry(name) for name in adversarial},
        "beyond_the_study": {
            "transfer": matrix,
            "defenses": {name: entry(name) for name in defenses},
            "robust_pruning": {m.name: entry(m.name) for m in models if m.name.startswith("rp_")},
            "examples": examples,
        },
        "sanity_checks": {
            "zero_eps": {name: evaluations[name]["zero_eps"] for name in by_name},
            **collect_checks({m.name: m.label for m in models}, evaluations, matrix),
        },
    }


def run_study(config: StudyConfig) -> Path:
    """Run (or resume) every stage of the study and write the outputs to ``config.out``.

    Under ``torchrun --nproc_per_node N`` the N processes train together (the Trainer's DDP)
    and share every evaluation (advkit's sharded evaluation, exact global results); rank 0
    alone writes the stages, plots and report while the others wait at a barrier.

    Returns:
        The path of ``report.md``.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    out = Path(config.out)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device) or resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    logger.info("results folder %s, device %s", out, device)
    stages = StageCache(out)

    loading, loading_cpu = time.perf_counter(), time.process_time()
    data = load_data(config)
    data_seconds, data_cpu = time.perf_counter() - loading, time.process_time() - loading_cpu
    logger.info("data: %s", data.description)

    models = train_all(config, data, stages, device)
    evaluations = evaluate_models(models, config, data, stages, device)
    pruned = train_all_robust_pruned(models, evaluations, config, data, stages, device)
    evaluations |= evaluate_models(pruned, config, data, stages, device)
    models = [*models, *pruned]
    matrix = transfer(models, config, data, stages)
    by_name = {m.name: m for m in models}
    examples, examples_file = example_images(
        by_name["base_long"], by_name["adv_pgd"], config, data, stages, device
    )

    if not is_main():  # rank 0 writes the results; the others wait for it, then stop
        barrier()
        return out / "report.md"
    results: dict[str, Any] = {
        "title": "ResNet-18 / Animals-10 adversarial robustness study (advkit)",
        "data": _data_summary(data, config),
        "settings": {
            **dataclasses.asdict(config),
            "device_used": str(device),
            "processes": world_size(),
        },
        "study_reference": STUDY_REFERENCE,
        **_sections(models, evaluations, matrix, examples),
        "environment": environment(device),
    }
    plots_start, plots_cpu = time.perf_counter(), time.process_time()
    results["plots"] = make_plots(results, examples_file, out, dpi=config.dpi)
    results["stages"] = {
        "data": {
            "status": "built",
            "seconds": round(data_seconds, 2),
            "cpu_seconds": round(data_cpu, 2),
        },
        **stages.summary(),
        "plots": {
            "status": "drawn",
            "seconds": round(time.perf_counter() - plots_start, 2),
            "cpu_seconds": round(time.process_time() - plots_cpu, 2),
        },
        "total_seconds": round(time.perf_counter() - start, 2),
        "total_cpu_seconds": round(time.process_time() - start_cpu, 2),
    }
    write_json(results, out / "results.json")
    report = write_report(results, out)
    logger.info("study finished in %.1f s", time.perf_counter() - start)
    barrier()
    return report

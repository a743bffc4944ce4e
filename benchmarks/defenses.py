"""Benchmark: the Trainer's defenses on real training, PGD-AT against TRADES and MART and more.

Three questions, each answered by training small models with :class:`advkit.training.Trainer`
(one ``objective=`` argument apart) on two small real-image data sets at 32x32: the embedded
SYNTHETIC demo set of the study (``advkit.data.SyntheticAnimals10``: procedural shapes and
textures, ten classes) and scikit-learn's handwritten digits upsampled to 32x32
(``_harness.digits_32``). The model is ``advkit.models.resnet18(width=16)`` (a narrow ResNet-18,
0.7 M parameters), trained from scratch, SGD with momentum 0.9, weight decay 5e-4, batch 128
and a triangular learning rate (0 -> ``lr`` over the first 40% of the steps -> 0, per step,
Wong et al.'s schedule); no augmentation.

1. ``defenses``: PGD-AT (``MixedCE(PGD, adv_weight=1)``), TRADES (beta 6) and MART (beta 6),
   each with the same eps (8/255), the same number of inner steps ``--steps`` and step size
   (``2.5 * eps / steps``) and the same epochs; clean accuracy and AutoAttack robust accuracy
   (:class:`advkit.attacks.AutoAttack`, ``version="custom"`` with APGD-CE, APGD-T, FAB-T and
   Square at *reduced* budgets, given in the table) on the first ``--eval-samples`` test
   images, each with its 95% Wilson interval (``advkit.evaluation.robust_accuracy``).
2. ``fast``: catastrophic overfitting. Plain FGSM training (one FGSM step of size eps from the
   clean input, in train mode, as Wong et al.'s baseline) against fast AT (``FastAT``:
   FGSM from a uniform random start, step 1.25 eps) with and without its
   ``OverfittingGuard`` (PGD-5 on a held-out batch of 128 training images every epoch,
   ``action="rollback"``), at a large eps (``--fast-eps-255``, 16/255 by default) and a higher
   learning rate; PGD-10 accuracy on ``--curve-samples`` test images after every epoch.
3. ``free``: the cost of free AT (``FreeAT``, m=4) against PGD-AT with 1 to 3 steps, in
   gradient computations (a forward and a backward pass of one sample through the model,
   counted by a forward hook on every gradient-enabled pass during training); PGD-10
   accuracy after every epoch, and how many gradient computations each PGD-AT run needs to
   reach free AT's final robust accuracy.

Usage::

    python benchmarks/defenses.py                 # all parts (~22 min on a shared 2-vCPU VM)
    python benchmarks/defenses.py --parts fast    # one part
    python benchmarks/defenses.py --quick         # smoke test: tiny sizes, seconds

Writes ``benchmarks/results/defenses.json`` and ``.md`` (``_quick`` added with ``--quick``),
or into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from _harness import RESULTS, digits_32, environment, result_paths, write_json, write_text
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advkit.attacks import APGD, APGDT, FAB, FGSM, PGD, AutoAttack, Square
from advkit.data import SyntheticAnimals10
from advkit.evaluation import robust_accuracy, wilson_interval
from advkit.models import resnet18
from advkit.training import (
    MART,
    TRADES,
    Callback,
    FastAT,
    FreeAT,
    MixedCE,
    Objective,
    OverfittingGuard,
    Trainer,
)

PARTS = ("defenses", "fast", "free")
DATASETS = ("demo", "digits")


@dataclass(frozen=True)
class Config:
    """Everything that determines the benchmark's numbers."""

    quick: bool = False
    datasets: tuple[str, ...] = DATASETS
    parts: tuple[str, ...] = PARTS
    width: int = 16
    batch_size: int = 128
    lr: float = 0.1
    eps_255: float = 8.0
    demo_eps_255: float = 4.0
    steps: int = 3
    beta: float = 6.0
    epochs: int = 15
    demo_images: int = 2500
    eval_samples: int = 500
    aa_steps: int = 20
    aa_targets: int = 3
    aa_queries: int = 300
    fast_eps_255: float = 16.0
    fast_epochs: int = 10
    fast_lr: float = 0.2
    fast_dataset: str = "digits"
    fast_schedule: str = "triangle"
    fast_alpha: float = 1.25
    fast_width: int = 0
    free_replays: int = 4
    free_epochs: int = 5
    free_pgd_steps: tuple[int, ...] = (1, 2, 3)
    free_dataset: str = "digits"
    curve_samples: int = 300
    threads: int = 1
    seed: int = 0


QUICK = Config(
    quick=True,
    width=4,
    batch_size=32,
    steps=2,
    epochs=1,
    demo_images=120,
    eval_samples=16,
    aa_steps=2,
    aa_targets=1,
    aa_queries=5,
    fast_epochs=2,
    free_epochs=1,
    free_pgd_steps=(1,),
    curve_samples=16,
    threads=1,
)


# -- data and model ------------------------------------------------------------------------------


Data = tuple[Tensor, Tensor, Tensor, Tensor]


def load(name: str, config: Config) -> Data:
    """``(train_x, train_y, test_x, test_y)`` of one data set, in memory, at 32x32."""
    if name == "digits":
        data = digits_32("cpu")
        if config.quick:
            return data[0][:96], data[1][:96], data[2], data[3]
        return data
    if name != "demo":
        raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
    common = {
        "image_size": 32,
        "num_images": config.demo_images,
        "seed": config.seed,
        "transform": lambda image: image,  # no augmentation, as for the digits
        "progress": False,
    }
    train = SyntheticAnimals10("train", **common)
    test = SyntheticAnimals10("val", **common)

    def stacked(split: SyntheticAnimals10) -> tuple[Tensor, Tensor]:
        images, labels = zip(*(split[i] for i in range(len(split))), strict=True)
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    # The val split is in class order: shuffle it once so a prefix holds every class.
    test_x, test_y = stacked(test)
    order = torch.randperm(test_y.shape[0], generator=torch.Generator().manual_seed(0))
    return (*stacked(train), test_x[order], test_y[order])


def model_for(config: Config) -> nn.Module:
    """A freshly seeded narrow ResNet-18 (ImageNet normalization inside)."""
    torch.manual_seed(config.seed)
    return resnet18(num_classes=10, width=config.width)


class GradientCounter:
    """Counts samples through gradient-enabled forward passes of a model (while active)."""

    def __init__(self, model: nn.Module) -> None:
        self.samples = 0
        self.active = False
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.active and torch.is_grad_enabled():
            self.samples += int(args[0].shape[0])


class Curve(Callback):
    """Clean, FGSM and PGD-10 accuracy on held-out images after every epoch (not counted)."""

    def __init__(self, x: Tensor, y: Tensor, eps: float, counter: GradientCounter) -> None:
        self.loader = DataLoader(TensorDataset(x, y), batch_size=256)
        self.attack = PGD(eps=eps, steps=10)
        self.fgsm = FGSM(eps=eps)
        self.counter = counter
        self.points: list[dict[str, float]] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Any) -> None:
        """Measure, with gradient counting paused."""
        self.counter.active = False
        result = trainer.evaluate(self.loader, attack=self.attack)
        fgsm = trainer.evaluate(self.loader, attack=self.fgsm)
        self.counter.active = True
        self.points.append(
            {
                "epoch": epoch + 1,
                "gradients": self.counter.samples,
                "clean": result["accuracy"],
                "pgd10": result["robust_accuracy"],
                "fgsm": fgsm["robust_accuracy"],
                "train_adv_accuracy": metrics.get("train_adv_accuracy", math.nan),
            }
        )


def train(
    config: Config,
    objective: Objective,
    data: Data,
    *,
    epochs: int,
    lr: float,
    callbacks: Callable[[GradientCounter], Sequence[Callback]] = lambda counter: (),
    schedule: str = "triangle",
) -> tuple[nn.Module, Trainer, GradientCounter, float]:
    """Train a fresh model with ``objective``; returns it, its trainer, the counter and seconds.

    ``schedule``: ``"triangle"`` (0 -> ``lr`` over the first 40% of the steps -> 0) or
    ``"constant"`` (``lr`` throughout).
    """
    if schedule not in ("triangle", "constant"):
        raise ValueError(f"schedule must be 'triangle' or 'constant', got {schedule!r}")
    train_x, train_y = data[0], data[1]
    model = model_for(config)
    counter = GradientCounter(model)
    loader = DataLoader(
        TensorDataset(train_x, train_y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    total = max(1, epochs * len(loader) * objective.replays)
    peak = max(1, int(0.4 * total))

    def triangle(step: int) -> float:
        if schedule == "constant":
            return 1.0
        return step / peak if step < peak else max(0.0, (total - step) / (total - peak))

    trainer = Trainer(
        model,
        lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4),
        objective=objective,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, triangle),
        scheduler_interval="step",
        callbacks=list(callbacks(counter)),
        device="cpu",
        progress=False,
    )
    counter.active = True
    start = time.perf_counter()
    trainer.fit(loader, epochs=epochs)
    seconds = time.perf_counter() - start
    counter.active = False
    return model, trainer, counter, seconds


def interval(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"correct": k, "total": n, "value": k / n, "low": low, "high": high}


# -- part 1: PGD-AT, TRADES, MART ------------------------------------------------------------------


def autoattack(config: Config, eps: float) -> AutoAttack:
    """AutoAttack's four members at the reduced budgets of ``config``."""
    steps, targets = config.aa_steps, config.aa_targets
    members = [
        APGD(eps=eps, steps=steps),
        APGDT(eps=eps, steps=steps, n_target_classes=targets),
        FAB(eps=eps, steps=steps, n_target_classes=targets),
        Square(eps=eps, n_queries=config.aa_queries, p_init=0.8),
    ]
    return AutoAttack(eps=eps, version="custom", attacks=members, seed=config.seed)


def dataset_eps(config: Config, name: str) -> float:
    """The training and evaluation radius on data set ``name``."""
    return (config.demo_eps_255 if name == "demo" else config.eps_255) / 255


def defense_objectives(config: Config, eps: float) -> dict[str, Objective]:
    steps = config.steps
    return {
        f"PGD-AT (PGD-{steps})": MixedCE(PGD(eps=eps, steps=steps), adv_weight=1.0),
        f"TRADES (beta {config.beta:g}, {steps} steps)": TRADES(
            eps=eps, steps=steps, beta=config.beta
        ),
        f"MART (beta {config.beta:g}, {steps} steps)": MART(eps=eps, steps=steps, beta=config.beta),
    }


def run_defenses(config: Config, name: str, data: Data, log: Callable[[str], None]) -> list[dict]:
    eps = dataset_eps(config, name)
    n = min(config.eval_samples, data[3].shape[0])
    eval_loader = DataLoader(TensorDataset(data[2][:n], data[3][:n]), batch_size=250)
    rows = []
    for label, objective in defense_objectives(config, eps).items():
        model, _, counter, seconds = train(
            config, objective, data, epochs=config.epochs, lr=config.lr
        )
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = robust_accuracy(
                model, eval_loader, autoattack(config, eps), progress=False, distributed=False
            )
        eval_seconds = time.perf_counter() - start
        row = {
            "dataset": name,
            "eps_255": eps * 255,
            "defense": label,
            "objective": repr(objective),
            "train_samples": int(data[1].shape[0]),
            "epochs": config.epochs,
            "gradients": counter.samples,
            "train_seconds": seconds,
            "eval_seconds": eval_seconds,
            "clean": interval(result.clean.correct, result.clean.total),
            "robust": interval(result.robust.correct, result.robust.total),
            "after_member": [[m, a.correct] for m, a in result.members],
            "checks_failed": [c.name for c in result.checks if c.passed is False],
            "warnings": sorted({str(w.message)[:200] for w in caught}),
        }
        rows.append(row)
        log(
            f"{name} {label}: clean {row['clean']['value']:.3f} robust "
            f"{row['robust']['value']:.3f} (train {seconds:.0f}s, AA {eval_seconds:.0f}s)"
        )
    return rows


# -- part 2: plain FGSM against fast AT and its guard ---------------------------------------------


def run_fast(config: Config, data: Data, log: Callable[[str], None]) -> list[dict]:
    eps = config.fast_eps_255 / 255
    held = 128 if not config.quick else 16
    train_data = (data[0][:-held], data[1][:-held], data[2], data[3])
    guard_x, guard_y = data[0][-held:], data[1][-held:]
    n = min(config.curve_samples, data[3].shape[0])
    fast_config = dataclasses.replace(config, width=config.fast_width or config.width)
    variants: dict[str, tuple[Objective, bool]] = {
        "plain FGSM (zero init, step eps)": (
            MixedCE(FGSM(eps=eps, model_mode="train"), adv_weight=1.0),
            False,
        ),
        "fast AT (FGSM-RS, step 1.25 eps)": (FastAT(eps=eps, clean_accuracy=False), False),
        "fast AT + OverfittingGuard (rollback)": (FastAT(eps=eps, clean_accuracy=False), True),
    }
    if config.fast_alpha != 1.25:  # a larger step, more prone to catastrophic overfitting
        alpha = config.fast_alpha * eps
        variants[f"fast AT (FGSM-RS, step {config.fast_alpha:g} eps)"] = (
            FastAT(eps=eps, alpha=alpha, clean_accuracy=False),
            False,
        )
        variants[f"fast AT (step {config.fast_alpha:g} eps) + OverfittingGuard (rollback)"] = (
            FastAT(eps=eps, alpha=alpha, clean_accuracy=False),
            True,
        )
    rows = []
    for label, (objective, guarded) in variants.items():
        guard = OverfittingGuard(guard_x, guard_y, PGD(eps=eps, steps=5)) if guarded else None

        def callbacks(
            counter: GradientCounter, guard: OverfittingGuard | None = guard
        ) -> list[Callback]:
            curve = Curve(data[2][:n], data[3][:n], eps, counter)
            return [curve] if guard is None else [curve, guard]  # curve: before a rollback

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, trainer, _, seconds = train(
                fast_config,
                objective,
                train_data,
                epochs=config.fast_epochs,
                lr=config.fast_lr,
                callbacks=callbacks,
                schedule=config.fast_schedule,
            )
        curve = next(cb for cb in trainer.callbacks if isinstance(cb, Curve))
        final = trainer.evaluate(
            DataLoader(TensorDataset(data[2][:n], data[3][:n]), batch_size=256),
            attack=PGD(eps=eps, steps=10),
        )
        row = {
            "variant": label,
            "eps_255": config.fast_eps_255,
            "epochs_run": trainer.epoch,
            "train_seconds": seconds,
            "curve": curve.points,
            "final_clean": final["accuracy"],
            "final_pgd10": final["robust_accuracy"],
            "final_pgd10_interval": interval(round(final["robust_accuracy"] * n), n),
            "guard": None
            if guard is None
            else {
                "collapsed_at_step": guard.collapsed_at,
                "rolled_back": guard.rolled_back,
                "checks": guard.history,
            },
            "warnings": sorted({str(w.message)[:200] for w in caught}),
        }
        rows.append(row)
        log(
            f"{label}: PGD-10 (FGSM) per epoch "
            + " ".join(f"{p['pgd10']:.2f} ({p['fgsm']:.2f})" for p in curve.points)
            + f"; final {row['final_pgd10']:.3f}"
        )
    return rows


# -- part 3: free AT against PGD-AT, in gradient computations ------------------------------------


def run_free(config: Config, data: Data, log: Callable[[str], None]) -> dict[str, Any]:
    eps = config.eps_255 / 255
    n = min(config.curve_samples, data[3].shape[0])
    runs: dict[str, tuple[Objective, int]] = {
        f"free AT (m={config.free_replays})": (
            FreeAT(eps=eps, replays=config.free_replays, clean_accuracy=False),
            config.free_epochs,
        )
    }
    for k in config.free_pgd_steps:
        # The same gradient budget as free AT: (k + 1) computations per sample and epoch.
        epochs = math.ceil(config.free_epochs * config.free_replays / (k + 1))
        runs[f"PGD-AT (PGD-{k})"] = (MixedCE(PGD(eps=eps, steps=k), adv_weight=1.0), epochs)
    rows = []
    for label, (objective, epochs) in runs.items():
        _, trainer, counter, seconds = train(
            config,
            objective,
            data,
            epochs=epochs,
            lr=config.lr,
            callbacks=lambda counter: [Curve(data[2][:n], data[3][:n], eps, counter)],
        )
        curve = next(cb for cb in trainer.callbacks if isinstance(cb, Curve))
        rows.append(
            {
                "run": label,
                "epochs": epochs,
                "gradients": counter.samples,
                "gradients_per_sample_epoch": counter.samples / (epochs * data[1].shape[0]),
                "train_seconds": seconds,
                "curve": curve.points,
            }
        )
        log(f"{label}: " + " ".join(f"{p['gradients']}:{p['pgd10']:.2f}" for p in curve.points))
    target = rows[0]["curve"][-1]["pgd10"]
    for row in rows:
        reached = next((p for p in row["curve"] if p["pgd10"] >= target), None)
        row["reaches_free_at"] = None if reached is None else reached["gradients"]
    return {"curve_samples": n, "free_final_pgd10": target, "runs": rows}


# -- report ----------------------------------------------------------------------------------------


def pct(entry: dict[str, Any]) -> str:
    return f"{100 * entry['value']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"


def to_markdown(payload: dict[str, Any]) -> str:
    config, env = payload["config"], payload["environment"]
    lines = ["# Defenses trained with the Trainer", ""]
    if config["quick"]:
        lines += ["**Quick mode: a smoke test with tiny sizes, not a measurement.**", ""]
    lines += [
        f"advkit.models.resnet18(width={config['width']}), trained from scratch at 32x32: SGD "
        f"(momentum 0.9, weight decay 5e-4), batch {config['batch_size']}, triangular learning "
        "rate per step, no augmentation. Machine: "
        f"{env['cpu']}, {env['threads']} threads, torch {env['torch']}, advkit "
        f"{env['advkit']} ({env['advkit_commit']}), {env['date_utc']}; total "
        f"{payload['seconds'] / 60:.1f} min.",
        "",
    ]
    if payload.get("defenses"):
        lines += [
            "## PGD-AT, TRADES and MART",
            "",
            f"L-inf eps {config['eps_255']:g}/255 on digits and {config['demo_eps_255']:g}/255 "
            f"on the SYNTHETIC demo set, the same for training and evaluation; "
            f"{config['epochs']} epochs each, {config['steps']} inner steps of "
            f"2.5 eps / {config['steps']}. Accuracy on the first {config['eval_samples']} test "
            "images, in %, with 95% Wilson intervals. Robust: **reduced AutoAttack** "
            f"(APGD-CE and APGD-T with {config['aa_steps']} steps, APGD-T and FAB-T with "
            f"{config['aa_targets']} target classes and {config['aa_steps']} steps, Square "
            f"with {config['aa_queries']} queries; the standard one has 100 steps, 9 targets and "
            "5000 queries).",
            "",
            "| data | eps | defense | clean acc. | AutoAttack (reduced) acc. | gradient passes "
            "| train (s) |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for row in payload["defenses"]:
            lines.append(
                f"| {row['dataset']} | {row['eps_255']:g}/255 | {row['defense']} | "
                f"{pct(row['clean'])} | "
                f"{pct(row['robust'])} | {row['gradients']} | {row['train_seconds']:.0f} |"
            )
        lines.append("")
    if payload.get("fast"):
        fast = payload["fast"]
        lines += [
            f"## Catastrophic overfitting: plain FGSM against fast AT, eps "
            f"{config['fast_eps_255']:g}/255",
            "",
            f"{config['fast_dataset']}, width {config.get('fast_width') or config['width']}, "
            f"{config['fast_epochs']} epochs, {config.get('fast_schedule', 'triangle')} "
            f"learning rate, peak {config['fast_lr']:g}. PGD-10 and (in brackets) FGSM "
            f"accuracy (%) on {config['curve_samples']} test images after each epoch (before a "
            "rollback), and of the final model.",
            "",
            "| run | PGD-10 (FGSM) acc. after each epoch | final clean | final PGD-10 | guard |",
            "|---|---|---:|---:|---|",
        ]
        for row in fast:
            guard = row["guard"]
            guard_text = (
                "-"
                if guard is None
                else (
                    "no collapse"
                    if guard["collapsed_at_step"] is None
                    else f"collapse at step {guard['collapsed_at_step']}, "
                    + ("rolled back" if guard["rolled_back"] else "not rolled back")
                )
            )
            curve = " ".join(
                f"{100 * p['pgd10']:.0f} ({100 * p.get('fgsm', math.nan):.0f})"
                for p in row["curve"]
            )
            lines.append(
                f"| {row['variant']} | {curve} | {100 * row['final_clean']:.1f} | "
                f"{pct(row['final_pgd10_interval'])} | {guard_text} |"
            )
        lines.append("")
    if payload.get("free"):
        free = payload["free"]
        lines += [
            f"## Free AT (m={config['free_replays']}) against PGD-AT, in gradient computations",
            "",
            f"{config['free_dataset']}, eps {config['eps_255']:g}/255. Gradient computations: "
            "samples through a forward+backward pass during training (counted). PGD-10 "
            f"accuracy (%) on {free['curve_samples']} test images after each epoch; free AT's "
            f"final: {100 * free['free_final_pgd10']:.1f}%.",
            "",
            "| run | epochs | gradient computations | PGD-10 acc. after each epoch | "
            "computations to reach free AT's final |",
            "|---|---:|---:|---|---:|",
        ]
        for row in free["runs"]:
            curve = " ".join(f"{100 * p['pgd10']:.0f}" for p in row["curve"])
            reach = row["reaches_free_at"]
            lines.append(
                f"| {row['run']} | {row['epochs']} | {row['gradients']} | {curve} | "
                f"{'not reached' if reach is None else reach} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    defaults = Config()
    for field in dataclasses.fields(Config):
        if field.name in ("quick", "parts", "datasets") or field.type not in (
            "int",
            "float",
            "str",
        ):
            continue
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type={"int": int, "float": float, "str": str}[field.type],
            default=None,
            help=f"default {getattr(defaults, field.name)}",
        )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else defaults
    changes = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Config)
        if getattr(args, field.name, None) is not None and field.name not in ("parts", "datasets")
    }
    config = dataclasses.replace(
        base, **changes, parts=tuple(args.parts), datasets=tuple(args.datasets)
    )
    torch.set_num_threads(config.threads)

    start = time.perf_counter()
    log = print
    payload: dict[str, Any] = {"benchmark": "defenses", "config": asdict(config)}
    cache: dict[str, Data] = {}

    def data(name: str) -> Data:
        if name not in cache:
            cache[name] = load(name, config)
        return cache[name]

    if "defenses" in config.parts:
        payload["defenses"] = [
            row for name in config.datasets for row in run_defenses(config, name, data(name), log)
        ]
    if "fast" in config.parts:
        payload["fast"] = run_fast(config, data(config.fast_dataset), log)
    if "free" in config.parts:
        payload["free"] = run_free(config, data(config.free_dataset), log)
    payload["seconds"] = time.perf_counter() - start
    payload["environment"] = environment("cpu", calibrate=not config.quick)
    stem = "defenses"
    if config.parts != PARTS:  # a partial run never overwrites the full record
        stem += "_" + "_".join(config.parts)
    if "defenses" in config.parts and config.datasets != DATASETS:
        stem += "_" + "_".join(config.datasets)
    json_path, md_path = result_paths(stem, quick=config.quick, out_dir=args.output_dir)
    write_json(json_path, payload)
    markdown = to_markdown(json.loads(json_path.read_text()))
    write_text(md_path, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: an eps x steps I-FGSM grid on ResNet-18, plain per-cell loop vs batched grid.

Trains ResNet-18 briefly on seeded, learnable synthetic 64x64 images (an undefended but
*trained* model: an untrained one is mostly wrong already, which would flatter early stopping),
then evaluates the 4 x 4 grid eps in {1, 2, 4, 8}/255 x steps in {1, 3, 5, 10} three ways:

- ``plain``: one :func:`advkit.evaluation.robust_accuracy` call per cell, no early stopping;
- ``batched``: :func:`advkit.evaluation.evaluate_grid`, all eps values of a row in one attack;
- ``batched_early_stop``: the same, dropping samples from the attack once they are fooled.

It does so for two I-FGSM step sizes: the default ``eps / steps`` (the study's), where a cell
rides on the trajectory of a cell with the same step size, more steps and a larger eps
(1/255 x 5 on 2/255 x 10), and Kurakin et al.'s fixed ``1/255``, where the cells of an eps
column share one trajectory (the grid attacks only the longest row). It reports wall time and
the
forward+backward passes (batched calls and sample-passes) of each, checks that all modes give
identical accuracies, and writes ``robustness_grid.json`` and ``robustness_grid.md`` to
``--out`` (default ``benchmarks/results``). ``--quick`` is a smoke test of a few seconds on a
tiny configuration (it writes ``robustness_grid_quick.*``). The three modes are timed with the
shared harness (``_harness.py``), round-robin: one round by default (``--repeats`` for more,
each speed-up then the median over rounds of the in-round ratio); the images are the harness's
learnable synthetic batches.

What early stopping saves depends on the model: a sample leaves the attack once it is fooled,
and with I-FGSM's step ``eps / steps`` it cannot be fooled before ``k * eps / steps`` reaches
its smallest adversarial perturbation. Samples that stay robust (many at 1/255 and 2/255 here)
pay every step of every trajectory they are on, in every mode: the report gives that floor,
and the speed-up it leaves room for, next to the measured one.

Usage::

    python benchmarks/robustness_grid.py            # the full benchmark (CPU, minutes)
    python benchmarks/robustness_grid.py --quick --out /tmp/grid
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _harness import (  # benchmarks/ is on sys.path when a script runs
    RESULTS,
    Clock,
    environment,
    paired_ratio,
    result_paths,
    round_robin,
    synthetic_batch,
    write_json,
    write_text,
)
from torch import Tensor, nn

from advkit.attacks import IFGSM
from advkit.evaluation import (
    GridResult,
    WorkCount,
    accuracy,
    attacked_cells,
    evaluate_grid,
    robust_accuracy,
)
from advkit.models import resnet18

Loader = list[tuple[Tensor, Tensor]]
TARGET_SPEEDUP = 3.0


@dataclass(frozen=True)
class Config:
    """Everything that determines the benchmark's numbers."""

    image_size: int = 64
    num_classes: int = 10
    train_samples: int = 2048
    eval_samples: int = 256
    batch_size: int = 128
    train_batch_size: int = 64
    train_epochs: int = 3
    learning_rate: float = 2e-3
    eps_255: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    steps: tuple[int, ...] = (1, 3, 5, 10)
    # I-FGSM step sizes in 1/255; None is the default eps / steps.
    alpha_255: tuple[float | None, ...] = (None, 1.0)
    max_batch: int | None = 512
    repeats: int = 1  # timed rounds of the three modes
    seed: int = 0
    device: str = "cpu"


QUICK = Config(
    image_size=32,
    train_samples=384,
    eval_samples=32,
    batch_size=32,
    train_batch_size=32,
    train_epochs=2,
    eps_255=(1.0, 8.0),
    steps=(1, 3),
    max_batch=48,
)


def synthetic_images(n: int, config: Config, *, split_seed: int) -> tuple[Tensor, Tensor]:
    """The harness's learnable images: a faint class colour layout under nuisances and noise.

    The layouts depend only on ``config.seed``; ``split_seed`` draws the samples, so train and
    test share a distribution (see ``_harness.synthetic_batch``).
    """
    return synthetic_batch(
        n,
        config.image_size,
        num_classes=config.num_classes,
        seed=config.seed,
        split=split_seed,
        learnable=True,
    )


def batches(images: Tensor, labels: Tensor, batch_size: int) -> Loader:
    return [
        (images[i : i + batch_size], labels[i : i + batch_size])
        for i in range(0, images.shape[0], batch_size)
    ]


def train(model: nn.Module, config: Config) -> dict[str, float]:
    """A short, plain (non-adversarial) training run: Adam, cross-entropy, seeded shuffles."""
    images, labels = synthetic_images(config.train_samples, config, split_seed=1)
    images, labels = images.to(config.device), labels.to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    order_gen = torch.Generator().manual_seed(config.seed + 7)
    model.train()
    start, loss = time.perf_counter(), torch.zeros(())
    for _ in range(config.train_epochs):
        order = torch.randperm(images.shape[0], generator=order_gen).to(config.device)
        for i in range(0, images.shape[0], config.train_batch_size):
            index = order[i : i + config.train_batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()
    model.eval()
    for param in model.parameters():
        param.grad = None
    train_accuracy = accuracy(model, batches(images, labels, 256), progress=False)
    return {
        "seconds": time.perf_counter() - start,
        "final_batch_loss": float(loss.detach()),
        "train_accuracy": train_accuracy.value,
    }


def plain_loop(
    model: nn.Module,
    loader: Loader,
    eps: list[float],
    steps: tuple[int, ...],
    alpha: float | None,
) -> tuple[list[list[int]], WorkCount]:
    """The per-cell evaluation: one robust_accuracy call per (steps, eps) cell."""
    counts, work = [], WorkCount()
    for s in steps:
        row = []
        for e in eps:
            cell = robust_accuracy(
                model, loader, IFGSM(eps=e, steps=s, alpha=alpha), early_stop=False, progress=False
            )
            row.append(cell.robust.correct)
            work += cell.work
        counts.append(row)
    return counts, work


def grid_counts(grid: GridResult) -> list[list[int]]:
    return [[cell.correct for cell in row] for row in grid.robust]


def cells_attacked(config: Config, alpha: float | None) -> set[tuple[int, int]]:
    """The ``(steps, eps_index)`` cells the grid attacks; the others ride on one of them."""
    eps = [e / 255 for e in config.eps_255]
    return attacked_cells(IFGSM, eps=eps, steps=config.steps, attack_kwargs={"alpha": alpha})


def robust_floor(
    counts: list[list[int]], steps: tuple[int, ...], correct: int, attacked: set[tuple[int, int]]
) -> int:
    """Sample-passes that samples robust at the end of a trajectory cannot avoid.

    The first gradient, at the clean inputs, is paid once per correct sample. A sample that no
    iterate of an attacked cell's trajectory fools pays every later step of it, early stopping
    or not. (Fooled samples add at least the pass of the step that fools them.)
    """
    return correct + sum(
        count * (s - 1)
        for s, row in zip(steps, counts, strict=True)
        for j, count in enumerate(row)
        if (s, j) in attacked
    )


def step_rule(
    model: nn.Module, loader: Loader, config: Config, alpha_255: float | None, correct: int
) -> dict[str, Any]:
    """The three modes for one I-FGSM step size, with the floor of the robust samples' work."""
    eps = [e / 255 for e in config.eps_255]
    alpha = None if alpha_255 is None else alpha_255 / 255
    outputs: dict[str, Any] = {}

    def plain() -> None:
        outputs["plain"] = plain_loop(model, loader, eps, config.steps, alpha)

    def batched(name: str, early_stop: bool) -> None:
        outputs[name] = evaluate_grid(
            model,
            loader,
            IFGSM,
            eps=eps,
            steps=list(config.steps),
            attack_kwargs={"alpha": alpha},
            early_stop=early_stop,
            max_batch=config.max_batch,
            progress=False,
        )

    times = round_robin(
        {
            "plain": plain,
            "batched": lambda: batched("batched", False),
            "batched_early_stop": lambda: batched("batched_early_stop", True),
        },
        Clock(config.device),
        repeats=config.repeats,
    )
    plain_counts, plain_work = outputs["plain"]
    modes: dict[str, dict[str, Any]] = {
        "plain": {"work": plain_work.to_dict(), "counts": plain_counts}
    }
    grids: dict[str, GridResult] = {}
    for name in ("batched", "batched_early_stop"):
        grids[name] = grid = outputs[name]
        modes[name] = {"work": grid.work.to_dict(), "counts": grid_counts(grid)}
    for name, mode in modes.items():
        mode["seconds"] = statistics.median(times[name])
        mode["speedup"] = paired_ratio(times["plain"], times[name])  # plain's over the mode's
        mode["sample_pass_ratio"] = plain_work.grad_samples / max(1, mode["work"]["grad_samples"])
    identical = all(mode["counts"] == plain_counts for mode in modes.values())
    attacked = cells_attacked(config, alpha)
    floor = robust_floor(plain_counts, config.steps, correct, attacked)
    return {
        "alpha_255": alpha_255,
        "step_size": "eps/steps" if alpha_255 is None else f"{alpha_255:g}/255",
        "modes": modes,
        "identical_accuracies": identical,
        "target_met": identical and modes["batched_early_stop"]["speedup"] >= TARGET_SPEEDUP,
        "attacked_cells": sorted(attacked),
        "robust_floor": floor,
        "sample_pass_ceiling": plain_work.grad_samples / max(1, floor),
        "grid": grids["batched_early_stop"].to_dict(),
    }


def run(config: Config, *, calibrate: bool = True) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    model = resnet18(num_classes=config.num_classes).to(config.device)
    training = train(model, config)
    images, labels = synthetic_images(config.eval_samples, config, split_seed=2)
    images, labels = images.to(config.device), labels.to(config.device)
    loader = batches(images, labels, config.batch_size)
    clean = accuracy(model, loader, progress=False)
    with torch.no_grad():  # warm-up, so the first timed mode pays no one-off setup cost
        model(images[: config.batch_size])
    rules = [step_rule(model, loader, config, a, clean.correct) for a in config.alpha_255]
    return {
        "benchmark": "robustness_grid",
        "config": asdict(config),
        "environment": environment(config.device, calibrate=calibrate),
        "training": training,
        "clean_accuracy": clean.to_dict(),
        "target_speedup": TARGET_SPEEDUP,
        "identical_accuracies": all(rule["identical_accuracies"] for rule in rules),
        "step_rules": rules,
    }


def rule_markdown(rule: dict[str, Any], target: float) -> list[str]:
    cells = len(rule["grid"]["eps"]) * len(rule["grid"]["steps"])
    plain = rule["modes"]["plain"]["work"]["grad_samples"]
    rows = [
        f"| {name} | {mode['seconds']:.2f} | {mode['work']['grad_calls']} | "
        f"{mode['work']['grad_samples']} | {mode['speedup']:.2f}x |"
        for name, mode in rule["modes"].items()
    ]
    return [
        f"## Step size {rule['step_size']}"
        + (" (I-FGSM's default)" if rule["alpha_255"] is None else " (fixed)")
        + f": {len(rule['attacked_cells'])} of the {cells} cells attacked, the others ride on"
        " their trajectories",
        "",
        "| mode | wall time (s) | fwd+bwd calls | fwd+bwd sample-passes | speedup |",
        "| :-- | --: | --: | --: | --: |",
        *rows,
        "",
        f"Identical accuracies in all modes: {rule['identical_accuracies']}. "
        f"Target (batched + early stop >= {target:g}x): "
        f"{'met' if rule['target_met'] else 'NOT met'}. "
        f"Floor: the samples robust at the end of a trajectory pay {rule['robust_floor']} of the "
        f"{plain} sample-passes whatever is skipped, which leaves room for at most "
        f"{rule['sample_pass_ceiling']:.2f}x fewer.",
        "",
        GridResult.from_dict(rule["grid"]).to_markdown(),
    ]


def to_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    clean = report["clean_accuracy"]
    lines = [
        f"# Robustness grid: plain per-cell loop vs batched grid ({config['device']})",
        "",
        f"ResNet-18 at {config['image_size']}x{config['image_size']}, trained for "
        f"{config['train_epochs']} epoch(s) on {config['train_samples']} synthetic images "
        f"(train accuracy {100 * report['training']['train_accuracy']:.1f}%); "
        f"{config['eval_samples']} test images, clean accuracy "
        f"{100 * clean['value']:.1f}% [{100 * clean['low']:.1f}, {100 * clean['high']:.1f}]. "
        f"I-FGSM, eps {list(config['eps_255'])}/255 x steps {list(config['steps'])}, "
        f"max_batch {config['max_batch']}; torch {report['environment']['torch']}, "
        f"{report['environment']['threads']} threads.",
        "",
    ]
    for rule in report["step_rules"]:
        lines += rule_markdown(rule, report["target_speedup"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test configuration")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="directory for robustness_grid.json and robustness_grid.md",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds of the modes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="writes *_cuda.* on CUDA"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda needs a CUDA device; none is available")
        # Identical accuracies across batch layouts need exact fp32 kernels: no TF32, and
        # deterministic cuDNN algorithms.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    config = QUICK if args.quick else Config()
    config = Config(
        **{**asdict(config), "seed": args.seed, "device": args.device, "repeats": args.repeats}
    )
    report = run(config, calibrate=not args.quick)
    stem = "robustness_grid" + ("_cuda" if args.device == "cuda" else "")
    json_path, md_path = result_paths(stem, quick=args.quick, out_dir=args.out)
    write_json(json_path, report)
    markdown = to_markdown(report)
    write_text(md_path, markdown + "\n")
    print(markdown)
    return 0 if report["identical_accuracies"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

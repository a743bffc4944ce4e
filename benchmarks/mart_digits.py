"""Benchmark: MART against PGD-AT and TRADES on real 8x8 digits, with the authors' recipe.

The issue's setting: scikit-learn's handwritten digits (8x8 grey images in ``[0, 1]``, 1297
training and 500 test images, shuffled with a fixed seed), a small CNN trained from scratch for
8 epochs, L-inf eps 0.1, evaluated under APGD-CE + APGD-T (``AutoAttack(version="custom")``).

Recipes (every run: SGD with momentum 0.9, batch 64, 10 inner steps, no augmentation):

* ``common``: one recipe for all three defenses (lr 0.1 with the triangular per-step schedule
  of ``defenses.py``, weight decay 5e-4, inner step ``2.5 * eps / steps``, beta 6);
* ``authors``: the recipe of YisenWang/MART ``train_wideresnet.py`` scaled to 8 epochs: lr 0.1
  held constant and divided by 10 for the last epoch (76 epochs there, decay at epoch 75),
  weight decay 2e-4, inner step ``0.007 / 0.031 * eps`` (0.226 eps), beta 6; and beta 5;
* ``authors' ResNet``: their ``train_resnet.py`` (the smaller network's script): lr 0.01 (same
  schedule), weight decay 3.5e-3, beta 5, with PGD-AT on the same recipe.

Usage::

    python benchmarks/mart_digits.py --eval-samples 300 --aa-steps 25   # the recorded run
    python benchmarks/mart_digits.py --quick    # smoke test

Writes ``benchmarks/results/mart_digits.json`` and ``.md`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from _harness import environment, result_paths, write_json, write_text
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advkit.attacks import APGD, APGDT, PGD, AutoAttack
from advkit.training import MART, TRADES, MixedCE, Objective, Trainer

EPS = 0.1
STEPS = 10


def digits_8x8() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits in ``[0, 1]`` at 8x8: ``(train_x, train_y, test_x, test_y)``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return images[500:], labels[500:], images[:500], labels[:500]


def small_cnn(seed: int) -> nn.Module:
    """Two 3x3 convolutions (32, 64 channels), a 2x2 max-pool and two linear layers."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def schedule(kind: str, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate factor per optimizer step."""
    total = epochs * steps_per_epoch
    peak = max(1, int(0.4 * total))
    if kind == "triangle":
        return lambda s: s / peak if s < peak else max(0.0, (total - s) / (total - peak))
    # the authors': constant, divided by 10 for the last epoch (epoch 75 of 76 there)
    return lambda s: 1.0 if s < (epochs - 1) * steps_per_epoch else 0.1


def peak_lr(name: str) -> float:
    """0.1, or 0.01 for the authors' ResNet-18 script (train_resnet.py: lr 0.01, wd 3.5e-3)."""
    return 0.01 if "ResNet" in name else 0.1


def train(
    objective: Objective,
    data: tuple[Tensor, ...],
    *,
    epochs: int,
    kind: str,
    wd: float,
    seed: int,
    lr: float = 0.1,
) -> nn.Module:
    model = small_cnn(seed)
    loader = DataLoader(
        TensorDataset(data[0], data[1]),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = Trainer(
        model,
        lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd),
        objective=objective,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, schedule(kind, epochs, len(loader))
        ),
        scheduler_interval="step",
        device="cpu",
        progress=False,
    )
    torch.manual_seed(seed)
    trainer.fit(loader, epochs=epochs)
    return model.eval()


def evaluate(model: nn.Module, x: Tensor, y: Tensor, aa_steps: int) -> tuple[float, float]:
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    attack = AutoAttack(
        eps=EPS,
        version="custom",
        attacks=[APGD(eps=EPS, steps=aa_steps), APGDT(eps=EPS, steps=aa_steps)],
        seed=0,
        check_large_eps=False,
    )
    adv = attack(model, x, y)
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
    return clean, robust


def runs(quick: bool) -> dict[str, tuple[Objective, str, float]]:
    """``name -> (objective, schedule, weight decay)``; the peak lr is :func:`peak_lr`."""
    common = 2.5 * EPS / STEPS
    authors = 0.007 / 0.031 * EPS
    return {
        "PGD-AT (common)": (MixedCE(PGD(eps=EPS, steps=STEPS), adv_weight=1.0), "triangle", 5e-4),
        "TRADES beta 6 (common)": (
            TRADES(eps=EPS, steps=STEPS, beta=6.0, alpha=common),
            "triangle",
            5e-4,
        ),
        "MART beta 6 (common)": (
            MART(eps=EPS, steps=STEPS, beta=6.0, alpha=common),
            "triangle",
            5e-4,
        ),
        "PGD-AT (authors' schedule)": (
            MixedCE(PGD(eps=EPS, steps=STEPS, alpha=authors), adv_weight=1.0),
            "authors",
            2e-4,
        ),
        "MART beta 6 (authors')": (
            MART(eps=EPS, steps=STEPS, beta=6.0, alpha=authors),
            "authors",
            2e-4,
        ),
        "PGD-AT (authors' ResNet schedule)": (
            MixedCE(PGD(eps=EPS, steps=STEPS, alpha=authors), adv_weight=1.0),
            "authors",
            3.5e-3,
        ),
        "MART beta 5 (authors' ResNet)": (
            MART(eps=EPS, steps=STEPS, beta=5.0, alpha=authors),
            "authors",
            3.5e-3,
        ),
        "MART beta 5 (authors')": (
            MART(eps=EPS, steps=STEPS, beta=5.0, alpha=authors),
            "authors",
            2e-4,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", nargs="+", default=None, help="run names (default: all)")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--aa-steps", type=int, default=50)
    parser.add_argument("--tag", default="", help="suffix of the result files' name")
    args = parser.parse_args(argv)
    data = digits_8x8()
    epochs, aa_steps, eval_n = (1, 5, 64) if args.quick else (8, args.aa_steps, args.eval_samples)
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows: list[dict[str, Any]] = []
    for name, (objective, kind, wd) in runs(args.quick).items():
        if args.runs is not None and name not in args.runs:
            continue
        for seed in seeds:
            start = time.perf_counter()
            model = train(
                objective, data, epochs=epochs, kind=kind, wd=wd, seed=seed, lr=peak_lr(name)
            )
            clean, robust = evaluate(model, data[2][:eval_n], data[3][:eval_n], aa_steps)
            row = {
                "run": name,
                "seed": seed,
                "clean": clean,
                "robust": robust,
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            print(f"{name:32s} seed {seed}: clean {100 * clean:.1f} robust {100 * robust:.1f}")
            sys.stdout.flush()
    payload = {
        "environment": environment("cpu"),
        "config": {
            "eps": EPS,
            "steps": STEPS,
            "epochs": epochs,
            "aa_steps": aa_steps,
            "eval_samples": eval_n,
        },
        "rows": rows,
    }
    json_path, md_path = result_paths("mart_digits" + args.tag, quick=args.quick)
    write_json(json_path, payload)
    lines = [
        "# MART on 8x8 digits (SmallCNN, eps 0.1, APGD-CE + APGD-T)",
        "",
        "| run | seed | clean % | robust % |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['run']} | {r['seed']} | {100 * r['clean']:.1f} | {100 * r['robust']:.1f} |"
        for r in rows
    ]
    write_text(md_path, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: which filter importance keeps the most robust accuracy when pruning a robust model.

Starts from a PGD-adversarially-trained small ResNet on the SYNTHETIC demo data
(``advkit.data.SyntheticAnimals10`` at 32x32: procedural shapes, not animals), prunes 30%, 50%
and 70% of the filters of every group of ``layer3`` and ``layer4`` with four importances
(random, L1 norm, adversarial Taylor, learned robust scores), each followed by the same short
PGD adversarial fine-tune, and reports clean and robust accuracy with 95% Wilson intervals and
the cost of each importance. Robust accuracy is under the per-sample worst case of two PGD
runs (the strongest attack advkit has at the time of writing; no APGD/AutoAttack yet).

The model is a CIFAR-style ResNet with one torchvision ``BasicBlock`` per stage and widths
8/16/32/64 (not ResNet-18: the whole run has to fit in minutes on two shared CPU cores), trained
on 440 images and evaluated on 110; the intervals are correspondingly wide.

Usage::

    python benchmarks/robust_pruning.py                 # the recorded run
    python benchmarks/robust_pruning.py --quick --out /tmp/rp   # smoke test, seconds

Writes ``robust_pruning.json`` and ``robust_pruning.md`` to ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models.resnet import BasicBlock

from advkit.attacks import PGD, WorstCase
from advkit.data import SyntheticAnimals10
from advkit.evaluation import robust_accuracy
from advkit.models import ImageClassifier
from advkit.pruning import (
    AdversarialTaylor,
    ChannelGroup,
    FineTune,
    RobustScoreLearner,
    count_flops,
    count_parameters,
    iterative_prune,
    l1_filter_norm,
)
from advkit.training import MixedCE, Trainer

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("backbone.layer3.*", "backbone.layer4.*")
EPS = 8 / 255


@dataclass(frozen=True)
class Config:
    num_images: int
    image_size: int
    train_epochs: int
    finetune_epochs: int
    score_epochs: int
    taylor_batches: int
    train_steps: int
    eval_steps: int
    ratios: tuple[float, ...]
    batch_size: int = 64


FULL = Config(550, 32, 4, 1, 1, 2, 2, 10, (0.3, 0.5, 0.7))
QUICK = Config(60, 16, 1, 1, 1, 1, 1, 2, (0.5,), batch_size=16)


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, one BasicBlock per stage, widths 8/16/32/64."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (8, 16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, width = [], widths[0]
        for index, out in enumerate(widths):
            stride = 1 if index == 0 else 2
            down = None
            if stride != 1 or width != out:
                down = nn.Sequential(
                    nn.Conv2d(width, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
                )
            stages.append(nn.Sequential(BasicBlock(width, out, stride, down)))
            width = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def random_importance(seed: int):
    """Uniform random scores (seeded by the group's layer names), the baseline."""

    def random_scores(group: ChannelGroup, model: nn.Module) -> Tensor:
        key = sum(ord(ch) for ch in ",".join(group.producers))
        gen = torch.Generator().manual_seed(seed * 100_003 + key)
        return torch.rand(group.channels, generator=gen, dtype=torch.float64)

    return random_scores


def eval_attack(cfg: Config) -> WorstCase:
    return WorstCase(
        [
            PGD(eps=EPS, steps=cfg.eval_steps),
            PGD(eps=EPS, steps=cfg.eval_steps, random_start=False),
        ]
    )


def train_attack(cfg: Config) -> PGD:
    return PGD(eps=EPS, steps=cfg.train_steps, alpha=2.5 * EPS / cfg.train_steps)


def run(cfg: Config, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    train = SyntheticAnimals10(
        "train", image_size=cfg.image_size, num_images=cfg.num_images, seed=seed, progress=False
    )
    val = SyntheticAnimals10(
        "val", image_size=cfg.image_size, num_images=cfg.num_images, seed=seed, progress=False
    )
    loader = DataLoader(
        train, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    val_loader = DataLoader(val, batch_size=128)
    example = torch.rand(1, 3, cfg.image_size, cfg.image_size)

    model = ImageClassifier(SmallResNet())
    tic = time.perf_counter()
    trainer = Trainer(
        model,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        attack=train_attack(cfg),
        adv_weight=1.0,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.train_epochs),
        progress=False,
    )
    trainer.fit(loader, epochs=cfg.train_epochs)
    train_seconds = time.perf_counter() - tic
    model.eval()

    attack = eval_attack(cfg)

    def evaluate(net: nn.Module) -> dict[str, Any]:
        result = robust_accuracy(net, val_loader, attack, progress=False)
        return {"clean": result.clean.to_dict(), "robust": result.robust.to_dict()}

    tic = time.perf_counter()
    baseline = {
        "params": count_parameters(model),
        "flops": count_flops(model, example),
        **evaluate(model),
    }
    eval_seconds = time.perf_counter() - tic

    finetune = FineTune(
        loader,
        epochs=cfg.finetune_epochs,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4),
        attack=train_attack(cfg),
        adv_weight=1.0,
    )
    importances = {
        "random": random_importance(seed),
        "L1": l1_filter_norm,
        "adversarial Taylor": AdversarialTaylor(
            train_attack(cfg), loader, batches=cfg.taylor_batches
        ),
        "learned (HYDRA-style)": RobustScoreLearner(
            loader, MixedCE(train_attack(cfg), adv_weight=1.0), epochs=cfg.score_epochs
        ),
    }
    rows = []
    for ratio in cfg.ratios:
        for name, importance in importances.items():
            torch.manual_seed(seed)  # the same fine-tune randomness for every importance
            pruned, schedule = iterative_prune(
                model,
                example,
                ratio=ratio,
                targets=list(TARGETS),
                importance=importance,
                steps=1,
                finetune=finetune,
            )
            pruned.eval()
            rows.append(
                {
                    "ratio": ratio,
                    "importance": name,
                    "params": schedule.params_after,
                    "flops": schedule.flops_after,
                    "widths": schedule.final_widths,
                    "importance_seconds": schedule.seconds["importance"],
                    "finetune_seconds": schedule.seconds["finetune"],
                    **evaluate(pruned),
                }
            )
    return {
        "baseline": baseline,
        "rows": rows,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "data": val.description,
        "train_images": len(train),
        "attack": repr(attack),
    }


def _pct(entry: dict[str, Any]) -> str:
    return f"{100 * entry['value']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"


def to_markdown(report: dict[str, Any]) -> str:
    base = report["results"]["baseline"]
    lines = [
        "| ratio | importance | params | FLOPs | clean acc. (%) | robust acc. (%) | "
        "importance cost (s) |",
        "|---|---|---:|---:|---|---|---:|",
        f"| 0 | (unpruned) | {base['params']:,} | {base['flops']:,} | {_pct(base['clean'])} | "
        f"{_pct(base['robust'])} | - |",
    ]
    for row in report["results"]["rows"]:
        lines.append(
            f"| {row['ratio']:.0%} | {row['importance']} | {row['params']:,} | "
            f"{row['flops']:,} | {_pct(row['clean'])} | {_pct(row['robust'])} | "
            f"{row['importance_seconds']:.1f} |"
        )
    env = report["environment"]
    res = report["results"]
    lines += [
        "",
        f"Data: {res['data']} ({res['train_images']} training images). "
        f"Robust accuracy under {res['attack']} at eps {EPS * 255:.0f}/255. "
        f"Adversarial training {res['train_seconds']:.0f} s; one evaluation "
        f"{res['eval_seconds']:.0f} s; total {report['total_seconds']:.0f} s on "
        f"{env['cpu']} with {env['torch_threads']} threads, torch {env['torch']}, "
        f"{env['date']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test configuration")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    tic = time.perf_counter()
    results = run(cfg, args.seed)
    report = {
        "config": cfg.__dict__ | {"ratios": list(cfg.ratios), "eps": EPS, "quick": args.quick},
        "results": results,
        "total_seconds": time.perf_counter() - tic,
        "environment": {
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robust_pruning.json").write_text(json.dumps(report, indent=2))
    markdown = to_markdown(report)
    (args.out / "robust_pruning.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

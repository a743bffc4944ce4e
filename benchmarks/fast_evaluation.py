"""Benchmark: ``AutoAttack(version="fast")`` against ``version="standard"``, robust count and cost.

Trains a panel of small CNNs on scikit-learn's handwritten digits (the harness's
:func:`~_harness.digits_32`, average-pooled to ``--size`` pixels): a standard (clean-trained)
CNN, a PGD-trained CNN (Madry et al.), a TRADES-trained CNN (advkit's ``TRADES`` objective),
a gradient-masking model (the clean CNN behind a non-differentiable input quantization,
``round(4 x) / 4``) and a PGD-trained ResNet-18 (``advkit.models.resnet18``, width 16: the
standard architecture at a quarter of its channels, which a CPU can attack 10,000 times per
sample) on the digits at 32x32. ``--models`` picks some of them. Then, on the first
``--samples`` test images of each, for L-inf (and L2 with ``--l2``; ``--norms`` picks), runs

- ``AutoAttack(version="standard")`` with ``run(early_stop=True)``: the reference members with
  per-sample exits, which leave the robust count exactly as without them and are the cheapest
  way to get the standard number (the reference itself, without exits, costs more);
- ``AutoAttack(version="fast")`` with plain ``run`` (its exits are built in);

and, with ``--a3``, ``version="fast"`` with one of A3's rules added (options of APGD and
APGD-T, not part of ``"fast"``): ``fast+osd`` (APGD-T's target runs after the first attack
only the half of the survivors of highest margin, ``keep_share=0.5``) and ``fast+adi``
(``adi_steps=7`` on APGD-CE and APGD-T), and ``fast+adi+osd``, both;
and reports, per model, each version's robust count and its total cost in forward-equivalents
(:class:`advkit.attacks.ModelWork`: rows of forward passes 1, backward passes 2, counted at the
model call), per member, and which gradient-masking checks failed. Counts, not seconds: they
hold on any machine. The targets (issue 27): fast never more than ``samples / 500`` samples
above standard's robust count (at least 1), total cost <= 0.2x standard's.

Writes ``fast_evaluation.json`` and ``fast_evaluation.md`` to ``--out`` (default
``benchmarks/results``; ``--quick`` runs get ``_quick`` names, ``--device cuda`` runs
``_cuda`` ones).

Usage::

    python benchmarks/fast_evaluation.py                      # 200 samples, L-inf
    python benchmarks/fast_evaluation.py --samples 100 --l2
    python benchmarks/fast_evaluation.py --samples 100 --l2 --models resnet18-pgd
    python benchmarks/fast_evaluation.py --samples 500 --norms L2     # L2 only
    python benchmarks/fast_evaluation.py --samples 500 --a3           # with A3's rules
    python benchmarks/fast_evaluation.py --models cnn-quantized --attack-seed 1  # another draw
    python benchmarks/fast_evaluation.py --device cuda --samples 500 --a3  # on a GPU
    python benchmarks/fast_evaluation.py --quick --out /tmp/fe  # smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import digits_32, environment, result_paths, write_json, write_text

from advkit.attacks import (
    APGD,
    APGDT,
    PGD,
    Attack,
    AutoAttack,
    AutoAttackResult,
    GradientMaskingWarning,
)
from advkit.models import resnet18
from advkit.training.objectives import TRADES

COST_TARGET = 0.2

A3_VARIANTS: dict[str, dict[str, Any]] = {
    "fast+osd": {"keep_share": 0.5},
    "fast+adi": {"adi_steps": 7},
    "fast+adi+osd": {"adi_steps": 7, "keep_share": 0.5},
}
"""``--a3``'s variants of ``version="fast"``: ``keep_share`` goes to its APGD-T, ``adi_steps`` to
its APGD-CE and APGD-T."""

MODELS = {
    "cnn": "standard CNN",
    "cnn-pgd": "PGD-trained CNN",
    "cnn-trades": "TRADES-trained CNN",
    "cnn-quantized": "quantized input (masking)",
    "resnet18-pgd": "PGD-trained ResNet-18 (width 16, 32x32)",
}
"""The panel: ``--models`` keys and the names the table gives them."""


@dataclass(frozen=True)
class Config:
    """Everything that determines the benchmark's numbers."""

    samples: int = 200
    size: int = 16
    width: int = 16
    epochs: int = 8
    train_steps: int = 5
    eps_255: float = 8.0
    l2_eps: float = 0.5
    norms: tuple[str, ...] = ("Linf",)
    batch_size: int = 64
    threads: int = 1
    seed: int = 0
    attack_seed: int = 0
    device: str = "cpu"
    quick: bool = False
    models: tuple[str, ...] = tuple(MODELS)
    a3: bool = False


class Quantized(nn.Module):
    """A gradient-masking defense: the input rounded to 5 grey levels (zero input gradient)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * 4) / 4)


def cnn(config: Config) -> nn.Module:
    """Two conv layers with BatchNorm, pooling and a linear head: 10 classes."""
    w = config.width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * w, 10),
    )


Step = Callable[[nn.Module, Tensor, Tensor], Tensor]


def train(
    config: Config, x: Tensor, y: Tensor, loss_of: Step, build: Callable[[], nn.Module]
) -> nn.Module:
    """Adam for ``epochs`` epochs on the loss ``loss_of(model, xb, yb)``."""
    torch.manual_seed(config.seed)
    model = build().to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        order = torch.randperm(y.shape[0], generator=gen).to(x.device)
        for start in range(0, y.shape[0], config.batch_size):
            index = order[start : start + config.batch_size]
            loss = loss_of(model, x[index], y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    for param in model.parameters():
        param.grad = None
    return model


def clean_loss(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
    model.train()
    return F.cross_entropy(model(xb), yb)


def pgd_loss(config: Config) -> Step:
    attack = PGD(eps=config.eps_255 / 255, steps=config.train_steps)

    def loss(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        adversarial = attack(model, xb, yb)
        model.train()
        return F.cross_entropy(model(adversarial), yb)

    return loss


def trades_loss(config: Config) -> Step:
    objective = TRADES(eps=config.eps_255 / 255, steps=config.train_steps, beta=6.0)

    def loss(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        adversarial = objective.perturb(model, xb, yb, 1.0)
        model.train()
        return objective.outer(model, xb, adversarial, yb).loss

    return loss


Data = tuple[Tensor, Tensor, Tensor, Tensor]


def panel(config: Config, small: Data, full: Data) -> dict[str, tuple[nn.Module, Data]]:
    """The models of ``config.models``, trained in this run, each with its data: the CNNs on
    ``small`` (the digits pooled to ``size``), the ResNet-18 on ``full`` (32x32)."""
    built: dict[str, tuple[nn.Module, Data]] = {}

    def plain() -> nn.Module:
        if "cnn" not in built:
            built["cnn"] = (train(config, *small[:2], clean_loss, lambda: cnn(config)), small)
        return built["cnn"][0]

    for key in config.models:
        if key == "cnn":
            plain()
        elif key == "cnn-quantized":
            built[key] = (Quantized(plain()).eval(), small)
        elif key in ("cnn-pgd", "cnn-trades"):
            loss = pgd_loss(config) if key == "cnn-pgd" else trades_loss(config)
            built[key] = (train(config, *small[:2], loss, lambda: cnn(config)), small)
        else:
            net = train(
                config, *full[:2], pgd_loss(config), lambda: resnet18(num_classes=10, width=16)
            )
            built[key] = (net, full)
    return {MODELS[key]: built[key] for key in config.models}


def summary(result: AutoAttackResult, seconds: float) -> dict[str, Any]:
    return {
        "robust": int((~result.fooled).sum()),
        "forward_equivalents": result.work.forward_equivalents,
        "work": asdict(result.work),
        "members": {
            name: {"robust_after": robust, "forward_equivalents": work.forward_equivalents}
            for name, robust, work in zip(
                result.member_names, result.robust_after, result.member_work, strict=True
            )
        },
        "failed_checks": [check.name for check in result.checks if check.passed is False],
        "seconds": round(seconds, 1),
    }


def fast_with(options: dict[str, Any], eps: float, norm: str, seed: int) -> AutoAttack:
    """``version="fast"`` with ``options`` given to its APGD-T (``keep_share``) or to its APGD
    members (``adi_steps``)."""
    fast = AutoAttack(eps=eps, norm=norm, version="fast", seed=seed)  # type: ignore[arg-type]

    def changed(member: Attack) -> Attack:
        if isinstance(member, APGDT):
            return member.replace(**options)
        if "adi_steps" in options and isinstance(member, APGD):
            return member.replace(adi_steps=options["adi_steps"])
        return member

    return AutoAttack(
        eps=eps, norm=norm, version="custom", attacks=[changed(m) for m in fast.attacks],  # type: ignore[arg-type]
        black_box=fast.black_box, seed=seed,
    )  # fmt: skip


def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, seed: int, a3: bool = False
) -> dict[str, Any]:
    """Both versions on ``(x, y)``, and with ``a3`` the variants of ``A3_VARIANTS``."""
    out: dict[str, Any] = {}
    runs: list[tuple[str, AutoAttack, bool]] = [
        (version, AutoAttack(eps=eps, norm=norm, version=version, seed=seed), early_stop)  # type: ignore[arg-type]
        for version, early_stop in (("standard", True), ("fast", False))
    ]
    if a3:
        runs += [(name, fast_with(o, eps, norm, seed), False) for name, o in A3_VARIANTS.items()]
    for version, attack, early_stop in runs:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientMaskingWarning)  # recorded in the result
            result = attack.run(model, x, y, early_stop=early_stop)
        out[version] = summary(result, time.perf_counter() - start)  # type: ignore[arg-type]
    out["cost_ratio"] = out["fast"]["forward_equivalents"] / out["standard"]["forward_equivalents"]
    out["robust_excess"] = out["fast"]["robust"] - out["standard"]["robust"]
    return out


def a3_table(rows: list[dict[str, Any]]) -> str:
    """Robust count and cost (over standard's) of fast and of each A3 variant."""
    names = ["fast", *A3_VARIANTS]
    head = " | ".join(f"{n} robust | {n} / standard" for n in names)
    lines = [
        'A3\'s rules as options added to `version="fast"` (not part of it):',
        "",
        f"| model | norm | standard robust | {head} |",
        "|---|---|---|" + "---|---|" * len(names),
    ]
    for row in rows:
        standard = row["standard"]
        cells = " | ".join(
            f"{row[n]['robust']} | "
            f"{row[n]['forward_equivalents'] / standard['forward_equivalents']:.3f}"
            for n in names
        )
        lines.append(f"| {row['model']} | {row['norm']} | {standard['robust']} | {cells} |")
    return "\n".join(lines) + "\n"


def table(config: Config, rows: list[dict[str, Any]]) -> str:
    allowed = max(1, math.floor(config.samples / 500))
    lines = [
        f"{config.samples} test digits per model, RGB, the CNNs at {config.size}x{config.size}, "
        "the ResNet-18 at 32x32; "
        f"allowed excess of fast over standard: {allowed} sample(s); cost target "
        f"<= {COST_TARGET}x.",
        "",
        "| model | norm | eps | clean | standard robust | fast robust | standard cost | "
        "fast cost | fast / standard | fast's Square ran | failed checks (fast) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        std, fast = row["standard"], row["fast"]
        square = fast["members"].get("square", {}).get("forward_equivalents", 0) > 0
        lines.append(
            f"| {row['model']} | {row['norm']} | {row['eps']:.4g} | {row['clean']} | "
            f"{std['robust']} | {fast['robust']} | {std['forward_equivalents']:,} | "
            f"{fast['forward_equivalents']:,} | {row['cost_ratio']:.3f} | "
            f"{'yes' if square else 'no'} | {', '.join(fast['failed_checks']) or '-'} |"
        )
    text = "\n".join(lines) + "\n"
    return text + "\n" + a3_table(rows) if config.a3 else text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=Config.samples)
    parser.add_argument("--size", type=int, default=Config.size)
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--l2", action="store_true", help="also run the L2 threat model")
    parser.add_argument(
        "--norms", nargs="+", choices=["Linf", "L2"], default=None, help="threat models to run"
    )
    parser.add_argument("--threads", type=int, default=Config.threads)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--a3", action="store_true", help="also fast with A3's rules added")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument(
        "--attack-seed", type=int, default=0, help="seed of the attacks (training keeps seed 0)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="panel members"
    )
    args = parser.parse_args(argv)
    config = Config(
        samples=8 if args.quick else args.samples,
        size=8 if args.quick else args.size,
        epochs=1 if args.quick else args.epochs,
        train_steps=1 if args.quick else Config.train_steps,
        norms=tuple(args.norms or (["Linf", "L2"] if args.l2 else ["Linf"])),
        threads=args.threads,
        quick=args.quick,
        models=tuple(dict.fromkeys(args.models)),
        a3=args.a3,
        attack_seed=args.attack_seed,
        device=args.device,
    )
    torch.set_num_threads(config.threads)
    full = digits_32(config.device)
    if config.quick:
        full = (full[0][:128], full[1][:128], *full[2:])
    pool = 32 // config.size
    small = (F.avg_pool2d(full[0], pool), full[1], F.avg_pool2d(full[2], pool), full[3])
    radius = {"Linf": config.eps_255 / 255, "L2": config.l2_eps}
    threats = [(norm, radius[norm]) for norm in config.norms]
    rows = []
    for name, (model, data) in panel(config, small, full).items():
        x, y = data[2][: config.samples], data[3][: config.samples]
        with torch.no_grad():
            clean = int((model(x).argmax(1) == y).sum())
        for norm, eps in threats:
            row = evaluate(model, x, y, norm, eps, config.attack_seed, config.a3)
            rows.append({"model": name, "norm": norm, "eps": eps, "clean": clean, **row})
            print(
                f"{name} {norm}: standard {row['standard']['robust']} robust, "
                f"fast {row['fast']['robust']}; cost ratio {row['cost_ratio']:.3f}",
                flush=True,
            )
    name = "fast_evaluation" if config.device == "cpu" else "fast_evaluation_cuda"
    json_path, md_path = result_paths(name, quick=config.quick, out_dir=args.out)
    payload = {"config": asdict(config), "environment": environment(config.device), "rows": rows}
    write_json(json_path, payload)
    write_text(md_path, table(config, rows))
    print(table(config, rows))
    return payload


if __name__ == "__main__":
    main()

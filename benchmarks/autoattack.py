"""Benchmark: advkit's AutoAttack against torchattacks' on a PGD-trained ResNet-18 at 32x32.

Trains ``advkit.resnet18`` briefly with PGD adversarial training on sklearn's handwritten
digits, upscaled to 32x32 RGB (real data that trains in a minute on a CPU, and a *robust*
model, so that many samples survive APGD-CE and every member of the ensemble has work), then
on the first ``--samples`` test images:

- runs advkit's ``AutoAttack(version="standard")`` (``run(early_stop=True)``, which is exact
  for robust accuracy) and torchattacks' ``AutoAttack(version="standard")`` one after the
  other, and reports the wall time and the robust accuracy of each, with advkit's accuracy
  after each member;
- times advkit's APGD-CE (``--steps`` steps, no early stopping) on the clean-correct samples
  against its floor: ``steps`` times one forward and one input-gradient backward pass of the
  same batch (the median of ``--repeats`` timings).

``--steps`` and ``--queries`` scale the budgets of *both* ensembles alike (APGD, APGD-T and
FAB-T steps; Square queries) for a machine too slow for the standard ones (100 steps, 5000
queries): the comparison stays like for like, but is then not the standard AutoAttack, and the
report says so. Note that torchattacks' ``AutoAttack(version="standard")`` keeps the default
``steps=10`` of its APGD, APGDT and FAB (torchattacks 3.3), where the paper and advkit run 100:
with standard budgets torchattacks' gradient members do a tenth of advkit's work.
``--torchattacks-steps N`` runs torchattacks' four members with ``N`` steps instead (a
``MultiAttack``; ``--torchattacks-steps 100`` is the like-for-like comparison at the paper's
budgets). Writes ``autoattack.json`` and ``autoattack.md`` (``autoattack_cuda.*`` with
``--device cuda``) to ``--out`` (default ``benchmarks/results``).

Usage::

    python benchmarks/autoattack.py                          # standard budgets, 200 samples
    python benchmarks/autoattack.py --samples 64 --steps 20 --queries 500
    python benchmarks/autoattack.py --samples 64 --torchattacks-steps 100   # like for like
    python benchmarks/autoattack.py --device cuda --samples 1000
    python benchmarks/autoattack.py --quick --out /tmp/aa    # smoke run
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Clock, cpu_name, digits_32, paired_ratio, round_robin

import advkit
from advkit.attacks import APGD, APGDT, FAB, PGD, AutoAttack, GradientMaskingWarning, Square

TARGET_RATIO = 0.7
FLOOR_TARGET = 1.10


@dataclass(frozen=True)
class Config:
    """Everything that determines the benchmark's numbers."""

    samples: int = 200
    eps_255: float = 8.0
    steps: int = 100
    queries: int = 5000
    train_samples: int = 1297
    train_epochs: int = 4
    train_eps_255: float = 8.0
    train_steps: int = 3
    batch_size: int = 64
    repeats: int = 5
    threads: int = 2
    seed: int = 0
    device: str = "cpu"
    clock: str = "wall"
    torchattacks_steps: int | None = None
    like_for_like: bool = False

    @property
    def standard(self) -> bool:
        return self.steps == 100 and self.queries == 5000

    @property
    def shipped(self) -> bool:
        """Whether torchattacks runs its ``AutoAttack(version="standard")`` as shipped."""
        return self.standard and self.torchattacks_steps is None


def train(config: Config, x: Tensor, y: Tensor) -> nn.Module:
    """PGD adversarial training (Madry et al.), briefly: Adam, ``train_steps``-step PGD."""
    torch.manual_seed(config.seed)
    model = advkit.resnet18(num_classes=10).to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    attack = PGD(eps=config.train_eps_255 / 255, steps=config.train_steps)
    gen = torch.Generator(device=config.device).manual_seed(config.seed)
    for _ in range(config.train_epochs):
        order = torch.randperm(y.shape[0], device=config.device, generator=gen)
        for start in range(0, y.shape[0], config.batch_size):
            xb, yb = (
                x[order[start : start + config.batch_size]],
                y[order[start : start + config.batch_size]],
            )
            xb = attack(model, xb, yb, generator=gen)
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    model.eval()
    for param in model.parameters():
        param.grad = None
    return model


def clock(config: Config) -> Clock:
    """The harness clock: wall time, this process's CPU time (``clock="process"``) or CUDA."""
    return Clock(config.device, process=config.clock == "process")


def call_on_clock(config: Config, run: Any) -> tuple[Any, float]:
    """``run()`` and its time on the harness clock."""
    box: list[Any] = []
    seconds = clock(config).time(lambda: box.append(run()))
    return box[0], seconds


def advkit_ensemble(config: Config, eps: float) -> AutoAttack:
    if config.standard:
        return AutoAttack(eps=eps, version="standard", seed=config.seed)
    steps, queries = config.steps, config.queries
    members = [
        APGD(eps=eps, steps=steps),
        APGDT(eps=eps, steps=steps),
        FAB(eps=eps, steps=steps),
        Square(eps=eps, n_queries=queries),
    ]
    return AutoAttack(eps=eps, version="custom", attacks=members, seed=config.seed)


def torchattacks_default_steps() -> int:
    """The ``steps`` torchattacks' APGD, APGDT and FAB default to, which its
    ``AutoAttack(version="standard")`` keeps (10 in torchattacks 3.3; the paper uses 100)."""
    import torchattacks

    defaults = {
        inspect.signature(attack).parameters["steps"].default
        for attack in (torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB)
    }
    if len(defaults) != 1:
        raise RuntimeError(f"torchattacks' APGD, APGDT and FAB default steps differ: {defaults}")
    return defaults.pop()


def torchattacks_steps(config: Config) -> int:
    """The steps of torchattacks' gradient members in this run."""
    if config.torchattacks_steps is not None:
        return config.torchattacks_steps
    return torchattacks_default_steps() if config.standard else config.steps


def torchattacks_ensemble(
    config: Config, model: nn.Module, eps: float, steps: int | None = None
) -> Any:
    """torchattacks' ensemble: its ``AutoAttack`` as shipped, or its four members with
    ``steps`` (default :func:`torchattacks_steps`) in a ``MultiAttack``."""
    import torchattacks

    if config.shipped and steps is None:
        return torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=config.seed
        )
    steps = torchattacks_steps(config) if steps is None else steps
    queries, seed = config.queries, config.seed
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, eps=eps, steps=steps, seed=seed, loss="ce"),
            torchattacks.APGDT(model, eps=eps, steps=steps, seed=seed, n_classes=10),
            torchattacks.FAB(
                model, eps=eps, steps=steps, seed=seed, multi_targeted=True, n_classes=10
            ),
            torchattacks.Square(model, eps=eps, n_queries=queries, seed=seed),
        ]
    )


def run_torchattacks(
    config: Config, ensemble: Any, model: nn.Module, x: Tensor, y: Tensor
) -> tuple[float, int]:
    """A torchattacks ensemble's time on ``(x, y)`` (harness clock) and its robust count."""
    adversarial, seconds = call_on_clock(config, lambda: ensemble(x, y))
    with torch.no_grad():
        return seconds, int((model(adversarial).argmax(1) == y).sum())


def floor_pass(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One forward and one input-gradient backward pass, the unit of a gradient attack."""
    point = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(point), y)
    torch.autograd.grad(loss, point)


def run(config: Config) -> dict[str, Any]:
    torch.set_num_threads(config.threads)
    train_x, train_y, test_x, test_y = digits_32(config.device)
    train_x, train_y = train_x[: config.train_samples], train_y[: config.train_samples]
    model, train_time = call_on_clock(config, lambda: train(config, train_x, train_y))
    for param in model.parameters():
        param.requires_grad_(False)
    x, y = test_x[: config.samples], test_y[: config.samples]
    eps = config.eps_255 / 255
    with torch.no_grad():
        correct = model(x).argmax(1) == y

    ours = advkit_ensemble(config, eps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradientMaskingWarning)
        result, advkit_time = call_on_clock(config, lambda: ours.run(model, x, y, early_stop=True))
    theirs = torchattacks_ensemble(config, model, eps)
    torchattacks_time, torchattacks_robust = run_torchattacks(config, theirs, model, x, y)
    equal_budget = None
    if config.like_for_like and torchattacks_steps(config) != config.steps:
        # The same run, torchattacks' members at advkit's steps: the like-for-like ratio.
        equal = torchattacks_ensemble(config, model, eps, steps=config.steps)
        equal_time, equal_robust = run_torchattacks(config, equal, model, x, y)
        equal_budget = {
            "seconds": equal_time,
            "robust": equal_robust,
            "steps": config.steps,
            "queries": config.queries,
            "time_ratio": advkit_time / equal_time,
        }

    xc, yc = x[correct], y[correct]
    apgd = APGD(eps=eps, steps=config.steps, seed=config.seed)
    with torch.enable_grad():  # APGD and its unit (one forward + backward), round robin
        times = round_robin(
            {"apgd": lambda: apgd.run(model, xc, yc), "unit": lambda: floor_pass(model, xc, yc)},
            clock(config),
            repeats=config.repeats,
            warmup=1,
        )
    apgd_times, unit = times["apgd"], times["unit"]
    apgd_time, unit_time = statistics.median(apgd_times), statistics.median(unit)
    floor = config.steps * unit_time

    return {
        "config": asdict(config),
        "standard_budgets": config.standard,
        "machine": {
            "cpu": cpu_name(),
            "device": torch.cuda.get_device_name() if config.device == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "advkit": advkit.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
        "train_seconds": train_time,
        "samples": config.samples,
        "clean_correct": int(correct.sum()),
        "advkit": {
            "seconds": advkit_time,
            "robust": int((~result.fooled).sum()),
            "after_member": dict(zip(result.member_names, result.robust_after, strict=True)),
            "checks": [check.to_dict() for check in result.checks],
            "warnings": [str(w.message) for w in caught],
        },
        "torchattacks": {
            "seconds": torchattacks_time,
            "robust": torchattacks_robust,
            "shipped_standard": config.shipped,
            "steps": torchattacks_steps(config),
            "queries": config.queries,
        },
        "time_ratio": advkit_time / torchattacks_time,
        "torchattacks_equal_budget": equal_budget,
        "apgd_ce": {
            "steps": config.steps,
            "batch": int(yc.shape[0]),
            "seconds": apgd_time,
            "floor_seconds": floor,
            # Median of the in-round ratios (APGD / steps units), as the harness measures.
            "ratio_to_floor": paired_ratio(apgd_times, [config.steps * u for u in unit]),
            "raw": apgd_times,
            "unit_raw": unit,
        },
    }


def equal_rows(report: dict[str, Any]) -> list[str]:
    """The like-for-like rows (``--like-for-like``): torchattacks at advkit's budgets."""
    equal = report.get("torchattacks_equal_budget")
    if not equal:
        return []
    n = report["samples"]
    return [
        f"| torchattacks members, {equal['steps']} steps (MultiAttack) | "
        f"{equal['seconds']:.1f} | {equal['robust']} | {100 * equal['robust'] / n:.1f} |",
        f"| ratio advkit / torchattacks at equal budgets | {equal['time_ratio']:.2f}x | | |",
    ]


def to_markdown(report: dict[str, Any]) -> str:
    config, machine = report["config"], report["machine"]
    ours, theirs, apgd = report["advkit"], report["torchattacks"], report["apgd_ce"]
    n = report["samples"]
    budgets = (
        "standard budgets (100 steps, 5000 queries)"
        if report["standard_budgets"]
        else f"reduced budgets: {config['steps']} steps, {config['queries']} queries "
        "(not the standard AutoAttack)"
    )
    members = ", ".join(f"{k} {v}" for k, v in ours["after_member"].items())
    failed = [c["name"] for c in ours["checks"] if c["passed"] is False] or ["none"]
    ratio_ok = report["time_ratio"] <= TARGET_RATIO and ours["robust"] <= theirs["robust"]
    their_budget = (
        f'torchattacks\' AutoAttack(version="standard") as shipped, whose APGD, APGD-T and '
        f"FAB-T keep torchattacks' default {theirs['steps']} steps"
        if theirs["shipped_standard"]
        else f"torchattacks' APGD, APGD-T, FAB-T and Square in a MultiAttack, "
        f"{theirs['steps']} steps and {theirs['queries']} queries"
    )
    return "\n".join(
        [
            f"AutoAttack, L-inf eps {config['eps_255']:g}/255, PGD-trained ResNet-18 at 32x32 on "
            f"digits ({config['train_samples']} training images, {config['train_epochs']} "
            f"epochs of PGD-{config['train_steps']}), {n} test samples ({report['clean_correct']} clean-correct); {budgets}. "
            f"Machine: {machine['cpu']} ({machine['device']}), {machine['threads']} threads, "
            f"torch {machine['torch']}, {machine['date']}; "
            f"{'CPU time of the process' if config['clock'] == 'process' else 'wall time'}. "
            f"advkit: {config['steps']} steps per APGD-CE, APGD-T and FAB-T run, "
            f"{config['queries']} Square queries; compared with {their_budget}.",
            "",
            "| | time (s) | robust samples | robust acc. (%) |",
            "| :-- | --: | --: | --: |",
            f"| advkit AutoAttack | {ours['seconds']:.1f} | {ours['robust']} | "
            f"{100 * ours['robust'] / n:.1f} |",
            f"| torchattacks AutoAttack ({theirs['steps']} steps) | {theirs['seconds']:.1f} | "
            f"{theirs['robust']} | "
            f"{100 * theirs['robust'] / n:.1f} |",
            f"| ratio advkit / torchattacks | {report['time_ratio']:.2f}x | | |",
            *equal_rows(report),
            "",
            f"advkit robust after each member: {members}. Failed masking checks: "
            f"{', '.join(failed)}. Target (time <= {TARGET_RATIO}x, robust <= torchattacks): "
            f"{'met' if ratio_ok else 'NOT met'}.",
            "",
            f"APGD-CE, {apgd['steps']} steps on {apgd['batch']} samples: {apgd['seconds']:.2f} s, "
            f"floor (steps x one forward + one input-gradient backward) "
            f"{apgd['floor_seconds']:.2f} s: **{apgd['ratio_to_floor']:.2f}x** the floor "
            f"(target <= {FLOOR_TARGET}x).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test configuration")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--samples", type=int, default=Config.samples)
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--queries", type=int, default=Config.queries)
    parser.add_argument("--train-samples", type=int, default=Config.train_samples)
    parser.add_argument("--train-epochs", type=int, default=Config.train_epochs)
    parser.add_argument("--train-steps", type=int, default=Config.train_steps)
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--threads", type=int, default=Config.threads)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torchattacks-steps",
        type=int,
        default=None,
        help="steps of torchattacks' APGD, APGD-T and FAB-T (default: with standard budgets, "
        "torchattacks' AutoAttack as shipped, i.e. its default steps; else --steps)",
    )
    parser.add_argument(
        "--like-for-like",
        action="store_true",
        help="also run torchattacks' four members at advkit's steps in the same run "
        "(when they differ, e.g. against torchattacks' standard as shipped)",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "process"],
        help="wall time, or CPU time of this process (only for a shared machine, --threads 1)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    config = Config(
        samples=args.samples,
        steps=args.steps,
        queries=args.queries,
        train_samples=args.train_samples,
        train_epochs=args.train_epochs,
        train_steps=args.train_steps,
        repeats=args.repeats,
        threads=args.threads,
        seed=args.seed,
        device=args.device,
        clock=args.clock,
        torchattacks_steps=args.torchattacks_steps,
        like_for_like=args.like_for_like,
    )
    if args.quick:
        config = Config(
            samples=8,
            steps=3,
            queries=10,
            train_samples=64,
            train_epochs=1,
            repeats=1,
            device=args.device,
            torchattacks_steps=args.torchattacks_steps,
            like_for_like=args.like_for_like,
        )
    report = run(config)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "autoattack_cuda" if config.device == "cuda" else "autoattack"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    (args.out / f"{name}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: APGD-CE (100 steps) against its floor, on ResNet-18 at 32x32 on the CPU.

The floor is ``steps x (one forward + one input-gradient backward)`` of the same model and
batch, written as the plainest loop: what any 100-step gradient attack must pay. APGD adds one
gradient at its start point, a clean forward (to skip misclassified samples), a final forward
(for the result's logits) and its bookkeeping. The labels are the model's own predictions, so
every sample is attacked for all its steps (no early stop), the most work APGD can do.

The two callables run round-robin with the shared harness (``_harness.round_robin``: one call
each per round, the order rotating) and the ratio is the median over rounds of the ratio
within a round (``paired_ratio``). Times are the process's CPU time with one intra-op thread
(``Clock("cpu", process=True)``), so other processes holding the cores do not count (their
cache pressure does). The images are ``synthetic_batch`` noise (seed 0).

Usage::

    python benchmarks/apgd_floor.py                 # the recorded run (a few minutes)
    python benchmarks/apgd_floor.py --quick         # smoke run: seconds, numbers meaningless

Writes ``apgd_floor.json`` and ``apgd_floor.md`` to ``--output-dir`` (default
``benchmarks/results``; ``apgd_floor_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from _harness import (  # benchmarks/ is on sys.path when a script runs
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

from advkit.attacks import APGD
from advkit.models import resnet18

IMAGE_SIZE = 32


def floor(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> None:
    """``steps`` forward + input-gradient backward passes: the cost of any gradient attack."""
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for param in model.parameters():
        param.requires_grad_(False)
    for _ in range(steps):
        inputs = x.detach().requires_grad_(True)
        torch.autograd.grad(loss_fn(model(inputs), y), inputs)


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Time APGD and its floor round-robin; the times (s) and the in-round ratio's median."""
    torch.manual_seed(config["seed"])
    model = resnet18(num_classes=10).eval()
    x, _ = synthetic_batch(config["batch"], IMAGE_SIZE, seed=config["seed"])
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every sample correct: every sample attacked
    steps, batch = config["steps"], config["batch"]
    attack = APGD(eps=8 / 255, steps=steps)
    result = attack.run(model, x, y)  # also the warm-up of the attack
    if result.grad_samples != (steps + 1) * batch:
        raise RuntimeError(
            f"expected every sample attacked for every step ({(steps + 1) * batch} gradient "
            f"samples), got {result.grad_samples}"
        )
    calls = {
        "apgd": lambda: attack(model, x, y),
        "floor": lambda: floor(model, x, y, steps),
    }
    times = round_robin(calls, Clock("cpu", process=True), repeats=config["rounds"], log=print)
    per_round = [a / f for a, f in zip(times["apgd"], times["floor"], strict=True)]
    return {
        "seconds": times,
        "median_seconds": {name: statistics.median(values) for name, values in times.items()},
        "ratio_per_round": per_round,
        "ratio": paired_ratio(times["apgd"], times["floor"]),
        "grad_samples": result.grad_samples,
    }


def to_markdown(payload: dict[str, Any]) -> str:
    config, env, res = payload["config"], payload["environment"], payload["results"]
    lines = ["# APGD-CE against its floor (forward + input-gradient backward per step)", ""]
    if config["quick"]:
        lines += ["**Quick mode: a smoke test, not a measurement.**", ""]
    lines += [
        f"ResNet-18, {IMAGE_SIZE}x{IMAGE_SIZE}, batch {config['batch']}, APGD-CE "
        f"{config['steps']} steps (Linf, eps 8/255), labels = the model's predictions. "
        f"Process CPU time, {config['rounds']} rounds, order rotating; ratio = median of the "
        "in-round ratios.",
        "",
        f"Machine: {env['cpu']}, {env['threads']} intra-op thread(s), torch {env['torch']}, "
        f"{env['date_utc']}.",
        "",
        "| callable | median CPU s |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in res["median_seconds"].items()]
    lines += [
        "",
        f"APGD / floor: median {res['ratio']:.3f} (per round: "
        + ", ".join(f"{r:.3f}" for r in res["ratio_per_round"])
        + ")",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps, batch 4, 1 round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = {
        "quick": args.quick,
        "steps": 2 if args.quick else 100,
        "batch": 4 if args.quick else args.batch,
        "rounds": 1 if args.quick else args.rounds,
        "seed": args.seed,
        "image_size": IMAGE_SIZE,
    }
    payload = {
        "benchmark": "apgd_floor",
        "config": config,
        "environment": environment("cpu", calibrate=not args.quick),
        "results": measure(config),
    }
    json_path, md_path = result_paths("apgd_floor", quick=args.quick, out_dir=args.output_dir)
    write_json(json_path, payload)
    markdown = to_markdown(payload)
    write_text(md_path, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()

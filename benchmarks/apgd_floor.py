"""Benchmark: APGD-CE (100 steps) against its floor, on ResNet-18 at 32x32 on the CPU.

The floor is ``steps x (one forward + one input-gradient backward)`` of the same model and
batch, written as the plainest loop: what any 100-step gradient attack must pay. APGD adds one
gradient at its start point, a clean forward (to skip misclassified samples), a final forward
(for the result's logits) and its bookkeeping. The labels are the model's own predictions, so
every sample is attacked for all its steps (no early stop), the most work APGD can do.

The two callables run round-robin (the order alternating each round) and the ratio is the
median over rounds of the ratio within a round. Times are the process's CPU time with one
intra-op thread, so other processes holding the cores do not count (their cache pressure does).

Usage::

    python benchmarks/apgd_floor.py                 # the recorded run (a few minutes)
    python benchmarks/apgd_floor.py --quick         # smoke run: seconds, numbers meaningless
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import torch
from _machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from torch import Tensor, nn

from advkit.attacks import APGD
from advkit.models import resnet18


def floor(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> None:
    """``steps`` forward + input-gradient backward passes: the cost of any gradient attack."""
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for param in model.parameters():
        param.requires_grad_(False)
    for _ in range(steps):
        inputs = x.detach().requires_grad_(True)
        torch.autograd.grad(loss_fn(model(inputs), y), inputs)


def cpu_time(fn: Callable[[], object]) -> float:
    gc.disable()
    try:
        start = time.process_time()
        fn()
        return time.process_time() - start
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    steps = 2 if args.quick else 100
    batch = 4 if args.quick else args.batch
    rounds = 1 if args.quick else args.rounds
    model = resnet18(num_classes=10).eval()
    x = torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every sample correct: every sample attacked
    attack = APGD(eps=8 / 255, steps=steps)
    calls = {
        "apgd": lambda: attack(model, x, y),
        "floor": lambda: floor(model, x, y, steps),
    }
    result = attack.run(model, x, y)
    assert result.grad_samples == (steps + 1) * batch  # all samples, all steps

    ratios, times = [], {name: [] for name in calls}
    for round_ in range(rounds):
        order = list(calls) if round_ % 2 == 0 else list(reversed(calls))
        now = {name: cpu_time(calls[name]) for name in order}
        for name, seconds in now.items():
            times[name].append(seconds)
        ratios.append(now["apgd"] / now["floor"])
    print(f"machine: {cpu_name()}, 1 intra-op thread, torch {torch.__version__}")
    print(f"ResNet-18, 32x32, batch {batch}, APGD-CE {steps} steps (Linf, eps 8/255)")
    for name, values in times.items():
        print(f"  {name:5s}: median {statistics.median(values):.2f} s CPU over {rounds} rounds")
    print(f"  APGD / floor: median {statistics.median(ratios):.3f} (per round: "
          + ", ".join(f"{r:.3f}" for r in ratios) + ")")  # fmt: skip


if __name__ == "__main__":
    main()

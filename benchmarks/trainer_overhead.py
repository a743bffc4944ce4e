"""Benchmark: the Trainer's throughput against a plain hand-written PyTorch training loop.

Both train the same model (advkit's ResNet-18, 10 classes) on the same in-memory data with the
same optimizer (SGD, momentum 0.9), batch 64, in three settings:

* ``standard``: forward, cross-entropy, backward, step;
* ``adversarial``: the study's light adversarial fine-tuning, I-FGSM (eps 4/255, 3 steps)
  crafted on the fly in eval mode, loss ``0.5 * clean + 0.5 * adversarial``;
* ``trades``: TRADES (eps 8/255, 3 inner steps of 2.5 eps / 3, beta 6): the Trainer with
  ``objective=TRADES(...)`` against the loop of the authors' ``trades.py`` written by hand
  with the same passes (one no-grad clean pass in eval mode for ``p(x)``, 3 KL ascent steps
  from ``x + 0.001 N(0, 1)`` in eval mode, then the clean and adversarial training passes and
  one backward of ``CE + beta * KL``).

The hand loop is the minimum a user would write (no metrics, no checks); the Trainer also
validates batches, accumulates loss/accuracy on the device, runs callbacks' hooks and (in the
"progress bars" row) draws tqdm bars, sent to a null stream. Each timed unit is one epoch;
variants run round-robin with the shared harness (``_harness.py``: one epoch each per round,
the order rotating between rounds), so drift in the machine's speed affects them alike.
Overhead is the median over rounds of the Trainer's epoch time over the hand loop's in the same
round, minus one; the target is at most 5%.

Usage::

    python benchmarks/trainer_overhead.py           # the recorded run (quiet machine)
    python benchmarks/trainer_overhead.py --quick   # smoke test: tiny sizes, 1 thread
    python benchmarks/trainer_overhead.py --device cuda --image-size 224   # the study's size
    python benchmarks/trainer_overhead.py --settings trades   # TRADES: Trainer vs hand loop

Writes ``benchmarks/results/trainer_overhead.json`` and ``.md`` (``trainer_overhead_cuda.*`` on
CUDA; settings other than the default two add their names, e.g. ``trainer_overhead_trades.*``;
``_quick`` added with ``--quick``), or into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _harness import (  # benchmarks/ is on sys.path when a script runs
    RESULTS,
    Clock,
    environment,
    ratios_to,
    result_paths,
    round_robin,
    synthetic_batch,
    write_json,
    write_text,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advkit import IFGSM
from advkit.attacks import Attack
from advkit.models import resnet18
from advkit.training import TRADES, Trainer

TARGET_OVERHEAD = 0.05
ADV_WEIGHT = 0.5
SETTINGS = ("standard", "adversarial", "trades")
DEFAULT_SETTINGS = ("standard", "adversarial")
TRADES_EPS, TRADES_STEPS, TRADES_BETA = 8 / 255, 3, 6.0


def make_data(
    batches: int, batch_size: int, image_size: int, seed: int, device: torch.device
) -> DataLoader:
    """Random images in [0, 1] and labels, already in memory: the loop, not I/O, is timed."""
    images, labels = synthetic_batch(batches * batch_size, image_size, num_classes=10, seed=seed)
    return DataLoader(
        TensorDataset(images, labels), batch_size=batch_size, pin_memory=device.type == "cuda"
    )


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


class HandLoop:
    """The plain loop: what the Trainer is measured against."""

    def __init__(self, model: nn.Module, device: torch.device, attack: Attack | None) -> None:
        self.model = model.to(device)
        self.optimizer = _sgd(self.model.parameters())
        self.device = device
        self.attack = attack

    def epoch(self, loader: DataLoader) -> None:
        model, optimizer, attack = self.model, self.optimizer, self.attack
        model.train()
        for inputs, labels in loader:
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if attack is None:
                loss = F.cross_entropy(model(inputs), labels)
            else:
                adversarial = attack(model, inputs, labels)
                loss = (1 - ADV_WEIGHT) * F.cross_entropy(
                    model(inputs), labels
                ) + ADV_WEIGHT * F.cross_entropy(model(adversarial), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class HandTRADES:
    """TRADES written by hand, as the authors' ``trades.py`` (``trades_loss`` and its step),
    with the Trainer's passes: the clean pass for ``p(x)`` runs once, in eval mode, no grad."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model.to(device)
        self.optimizer = _sgd(self.model.parameters())
        self.device = device

    def epoch(self, loader: DataLoader) -> None:
        model, optimizer = self.model, self.optimizer
        eps, steps, beta = TRADES_EPS, TRADES_STEPS, TRADES_BETA
        alpha = 2.5 * eps / steps
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            model.eval()
            with torch.no_grad():
                p_natural = F.softmax(model(x), dim=1)
            x_adv = x + 0.001 * torch.randn_like(x)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_natural, reduction="sum")
                (grad,) = torch.autograd.grad(loss_kl, [x_adv])
                x_adv = x_adv.detach() + alpha * torch.sign(grad)
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            logits_adv = model(x_adv)
            loss_robust = (
                F.kl_div(
                    F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="sum"
                )
                / x.shape[0]
            )
            loss = F.cross_entropy(logits, y) + beta * loss_robust
            loss.backward()
            optimizer.step()


class TrainerLoop:
    """The Trainer, one ``fit`` call per timed epoch (so its per-call setup is timed too)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        attack: Attack | None,
        progress: bool,
        trades: bool = False,
    ) -> None:
        options: dict[str, Any] = (
            {"objective": TRADES(eps=TRADES_EPS, steps=TRADES_STEPS, beta=TRADES_BETA)}
            if trades
            else {"attack": attack, "adv_weight": ADV_WEIGHT}
        )
        self.trainer = Trainer(
            model, _sgd, device=device, progress=progress, distributed=False, **options
        )
        self.progress = progress

    def epoch(self, loader: DataLoader) -> None:
        with _null_stderr() if self.progress else contextlib.nullcontext():
            self.trainer.fit(loader, epochs=self.trainer.epoch + 1)


@contextlib.contextmanager
def _null_stderr() -> Iterator[None]:
    """tqdm draws on stderr; send it to the null device, as a terminal would cost little."""
    saved = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            yield
        finally:
            sys.stderr = saved


def run_setting(
    setting: str, config: dict[str, Any], device: torch.device, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    attack = IFGSM(eps=4 / 255, steps=3) if setting == "adversarial" else None
    loader = make_data(config["batches"], config["batch_size"], config["image_size"], 0, device)
    torch.manual_seed(config["seed"])
    base = resnet18(num_classes=10)
    trades = setting == "trades"
    hand = (
        HandTRADES(copy.deepcopy(base), device)
        if trades
        else HandLoop(copy.deepcopy(base), device, attack)
    )
    epochs: dict[str, Callable[[DataLoader], None]] = {
        "hand-written loop": hand.epoch,
        "Trainer": TrainerLoop(copy.deepcopy(base), device, attack, False, trades).epoch,
        "Trainer, progress bars": TrainerLoop(
            copy.deepcopy(base), device, attack, True, trades
        ).epoch,
    }
    seconds = round_robin(
        {name: lambda epoch=epoch: epoch(loader) for name, epoch in epochs.items()},
        Clock(device, process=config.get("clock") == "process"),
        repeats=config["repeats"],
        warmup=config["warmup"],
        log=log,
    )
    ratios = ratios_to(seconds, "hand-written loop")
    samples = config["batches"] * config["batch_size"]
    reference = statistics.median(seconds["hand-written loop"])
    rows = []
    for name, times in seconds.items():
        median = statistics.median(times)
        rows.append(
            {
                "setting": setting,
                "variant": name,
                "epoch_seconds": {
                    "median": median,
                    "min": min(times),
                    "max": max(times),
                    "all": times,
                },
                "samples_per_second": samples / median,
                "overhead": ratios[name] - 1,
                "overhead_ms_per_batch": (median - reference) / config["batches"] * 1000,
            }
        )
    return rows


def write_results(
    rows: list[dict[str, Any]], config: dict[str, Any], device: torch.device, output_dir: Path
) -> tuple[Path, Path]:
    payload = {
        "benchmark": "trainer_overhead",
        "target_overhead": TARGET_OVERHEAD,
        "config": config,
        "environment": environment(device, calibrate=not config["quick"]),
        "results": rows,
    }
    stem = "trainer_overhead"
    if tuple(config["settings"]) != DEFAULT_SETTINGS:  # never overwrite the default record
        stem += "_" + "_".join(config["settings"])
    stem += "_cuda" if device.type == "cuda" else ""
    json_path, md_path = result_paths(stem, quick=config["quick"], out_dir=output_dir)
    write_json(json_path, payload)
    write_text(md_path, _markdown(payload))
    return json_path, md_path


def _markdown(payload: dict[str, Any]) -> str:
    config, env = payload["config"], payload["environment"]
    lines = ["# Trainer overhead against a hand-written training loop", ""]
    if config["quick"]:
        lines += ["**Quick mode: a smoke test with tiny sizes, not a measurement.**", ""]
    lines += [
        f"ResNet-18 (10 classes) on {config['image_size']}x{config['image_size']} images, "
        f"batch {config['batch_size']}, {config['batches']} batches per epoch, SGD with "
        "momentum. Adversarial: I-FGSM eps 4/255, 3 steps, loss 0.5 clean + 0.5 adversarial. "
        f"Median of {config['repeats']} epochs per variant (min-max in brackets), timed "
        f"round-robin after {config['warmup']} warm-up epoch(s); overhead: median over rounds "
        "of the in-round ratio to the hand-written loop, minus one. Target: overhead <= "
        f"{payload['target_overhead']:.0%}.",
        "",
        f"Clock: {'CPU time of the process' if config.get('clock') == 'process' else 'wall'}. "
        f"Device: {env['device_name']} ({config['device']}), {env['threads']} threads, "
        f"torch {env['torch']}, Python {env['python']}, {env['date_utc']}.",
        "",
        "| setting | variant | epoch (s) | samples/s | overhead | per batch (ms) | within target |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for row in payload["results"]:
        sec = row["epoch_seconds"]
        is_reference = row["variant"] == "hand-written loop"
        within = "" if is_reference else ("yes" if row["overhead"] <= TARGET_OVERHEAD else "no")
        overhead = "(reference)" if is_reference else f"{row['overhead']:+.1%}"
        per_batch = "" if is_reference else f"{row['overhead_ms_per_batch']:+.2f}"
        lines.append(
            f"| {row['setting']} | {row['variant']} | {sec['median']:.3f} "
            f"[{sec['min']:.3f}-{sec['max']:.3f}] | {row['samples_per_second']:.1f} | "
            f"{overhead} | {per_batch} | {within} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batches", type=int, default=None, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per variant")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="CPU: wall time, or this process's CPU time (for a shared machine, --threads 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    # Quick mode runs on shared machines, where idle intra-op threads spin and wait.
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} needs a CUDA device; none is available")
    config = {
        "quick": args.quick,
        "device": str(device),
        "batches": args.batches or (3 if args.quick else 20),
        "batch_size": args.batch_size if not args.quick else min(args.batch_size, 16),
        "image_size": args.image_size or (32 if args.quick else 64),
        "repeats": args.repeats or (2 if args.quick else 9),
        "warmup": args.warmup,
        "settings": args.settings,
        "seed": args.seed,
        "clock": args.clock,
    }
    if min(config["batches"], config["batch_size"], config["repeats"]) < 1 or args.warmup < 0:
        parser.error("batches, batch size and repeats must be >= 1, warmup >= 0")
    unknown = set(args.settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {list(SETTINGS)}")

    rows = []
    for setting in config["settings"]:
        print(f"{setting}:")
        rows += run_setting(setting, config, device, lambda line: print("  " + line))
    json_path, md_path = write_results(rows, config, device, args.output_dir)
    print(_markdown(json.loads(json_path.read_text())))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()

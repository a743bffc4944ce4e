"""Benchmark: randomized smoothing, certification speed and a small reproduction on digits.

Two parts:

1. ``speed``: :meth:`advkit.certification.Smooth.certify` against the model's forward floor at
   the same batch size, for ``advkit.models.resnet18`` at 32x32 at width 16 (``--batch-size``
   rows per pass) and at the standard width 64 (a quarter of those rows). Both sides classify
   the same number of rows (``inputs * (n0 + n)``) in eval mode without gradients; the floor is
   the bare ``model(x).argmax(1)`` on a fixed batch, certify adds the noise, the counting and
   the statistics. Timed with the harness's round robin (the order rotating per round; on the
   CPU the process time of one thread, so other sessions' load lengthens neither side; CUDA
   events on a GPU), reported as the median within-round ratio ``floor / certify`` (the
   throughput ratio; target >= 0.95) beside the counted rows, and the cost per certified input.
2. ``table``: certified accuracy at radii 0, 0.25, 0.5, 0.75, 1.0 for sigma 0.12, 0.25, 0.5 of
   three training recipes (Trainer objectives): Gaussian augmentation (Cohen et al.), SmoothAdv
   (Salman et al.: L2 PGD, 2 steps, eps = 2 sigma warmed up over the first 30% of the epochs,
   m = 2 noise samples) and consistency regularization (Jeong and Shin: m = 2, lambda 10,
   eta 0.5), on scikit-learn's handwritten digits at 32x32 RGB (``_harness.digits_32``:
   1297 training and 500 test images, 3072 dimensions like CIFAR-10) with a small CNN, SGD,
   batch 64, ``--epochs`` epochs. Certification: ``--cert-samples`` test images, n0 = 64,
   n = ``--n`` (1000 by default, against the papers' 100,000: the largest certifiable radius
   is then ``sigma * Phi^-1(0.001^(1/n))`` = 2.46 sigma), alpha = 0.001, 95% Wilson
   intervals. One run adds the empirical upper bound (L2 PGD on the soft smoothed classifier)
   and its sanity check.

Usage::

    nice -n 5 python benchmarks/certify.py            # both parts (~10 min on a shared 2-vCPU VM)
    python benchmarks/certify.py --parts speed        # one part
    python benchmarks/certify.py --device cuda        # on a GPU
    python benchmarks/certify.py --quick              # smoke test: tiny sizes, seconds

Writes ``benchmarks/results/certify.json`` and ``.md`` (``_quick`` added with ``--quick``), or
into ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _harness import (
    Clock,
    environment,
    result_paths,
    round_robin,
    synthetic_batch,
    write_json,
    write_text,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advkit.certification import Smooth, certified_accuracy
from advkit.models import resnet18
from advkit.training import Consistency, GaussianAugmentation, SmoothAdv, Trainer

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
SIGMAS = (0.12, 0.25, 0.5)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- part 1: speed -------------------------------------------------------------------------------


def speed_case(
    args: argparse.Namespace, device: torch.device, width: int, batch: int, inputs: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = resnet18(num_classes=10, width=width).to(device).eval()
    images, _ = synthetic_batch(inputs, 32, device=device)
    n0, n = args.speed_n0, args.speed_n
    rows = inputs * (n0 + n)
    passes = -(-rows // batch)
    floor_batch, _ = synthetic_batch(batch, 32, seed=1, device=device)
    last = rows - (passes - 1) * batch
    smooth = Smooth(model, sigma=0.25)
    generator = torch.Generator(device=device).manual_seed(0)

    def certify() -> None:
        smooth.certify(images, n0, n, 0.001, batch_size=batch, generator=generator)

    def floor() -> None:
        with torch.no_grad():
            for index in range(passes):
                model(floor_batch if index < passes - 1 else floor_batch[:last]).argmax(dim=1)

    # On the CPU, the process's CPU time (one thread): other sessions' load on a shared machine
    # then lengthens neither side.
    clock = Clock(device, process=device.type == "cpu")
    times = round_robin(
        {"certify": certify, "floor": floor}, clock, repeats=args.repeats, warmup=1, log=log
    )
    ratio = statistics.median(f / c for f, c in zip(times["floor"], times["certify"], strict=True))
    certify_s = statistics.median(times["certify"])
    return {
        "model": f"resnet18(width={width}), 32x32",
        "inputs": inputs,
        "n0": n0,
        "n": n,
        "batch_size": batch,
        "rows": rows,
        "passes": passes,
        "certify_s": certify_s,
        "floor_s": statistics.median(times["floor"]),
        "throughput_ratio": ratio,
        "seconds_per_input": certify_s / inputs,
        "rows_per_input": n0 + n,
    }


def speed(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """A narrow and the standard-width ResNet-18: the noise costs the same per row in both."""
    cases = [
        (16, args.batch_size, args.inputs),
        (64, args.batch_size // 4, max(1, args.inputs // 8)),
    ]
    return [speed_case(args, device, width, batch, inputs) for width, batch, inputs in cases]


# -- part 2: the table ---------------------------------------------------------------------------


def digits_8(device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits at their own 8x8, one channel, in [0, 1]: the split of
    ``_harness.digits_32`` (same shuffle, 1297 training and 500 test images)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[order].to(device), labels[order].to(device)
    return images[500:], labels[500:], images[:500], labels[:500]


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def recipes(sigma: float) -> dict[str, Any]:
    return {
        "gaussian": lambda: GaussianAugmentation(sigma=sigma),
        "smoothadv": lambda: SmoothAdv(sigma=sigma, eps=2 * sigma, steps=2, samples=2),
        "consistency": lambda: Consistency(sigma=sigma, samples=2, lbd=10.0, eta=0.5),
    }


def table(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    train_x, train_y, test_x, test_y = digits_8(device)
    train_x, train_y = train_x[: args.train_samples], train_y[: args.train_samples]
    test = TensorDataset(test_x[: args.cert_samples], test_y[: args.cert_samples])
    rows = []
    for sigma in SIGMAS:
        for name, make in recipes(sigma).items():
            torch.manual_seed(0)
            model = small_cnn().to(device)
            loader = DataLoader(
                TensorDataset(train_x, train_y),
                batch_size=64,
                shuffle=True,
                generator=torch.Generator().manual_seed(0),
            )
            trainer = Trainer(
                model,
                lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
                objective=make(),
                eps_warmup_epochs=0.3 * args.epochs if name == "smoothadv" else 0,
                scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs),
                device=device,
                progress=False,
            )
            start = time.perf_counter()
            trainer.fit(loader, epochs=args.epochs)
            train_s = time.perf_counter() - start
            attack = args.attack_steps if (sigma, name) == (0.25, "gaussian") else 0
            start = time.perf_counter()
            result = certified_accuracy(
                Smooth(model, sigma),
                DataLoader(test, batch_size=100),
                radii=RADII,
                n0=100,
                n=args.n,
                alpha=0.001,
                batch_size=args.batch_size,
                attack_steps=attack,
                attack_samples=8,
                generator=torch.Generator(device=device).manual_seed(1),
                progress=False,
            )
            cert_s = time.perf_counter() - start
            log(
                f"sigma={sigma} {name}: {[a.format() for a in result.accuracy]} ({train_s:.0f}+{cert_s:.0f} s)"
            )
            rows.append(
                {
                    "sigma": sigma,
                    "recipe": name,
                    "train_s": train_s,
                    "certify_s": cert_s,
                    "result": result.to_dict(),
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Randomized smoothing: speed and certified accuracy", ""]
    env = report["environment"]
    lines.append(
        f"Machine: {env.get('cpu', '?')}, device {env.get('device', '?')}, torch {env.get('torch', '?')}."
    )
    lines.append("")
    if "speed" in report:
        lines += [
            "## Certification throughput against the forward floor",
            "",
            "| model | inputs x (n0 + n) = rows | batch | passes | certify s | floor s "
            "| floor / certify | s per input |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in report["speed"]:
            lines.append(
                f"| {s['model']} | {s['inputs']} x ({s['n0']} + {s['n']}) = {s['rows']} "
                f"| {s['batch_size']} | {s['passes']} | {s['certify_s']:.3f} | {s['floor_s']:.3f} "
                f"| {s['throughput_ratio']:.3f} | {s['seconds_per_input']:.4f} |"
            )
        lines.append("")
    if "table" in report:
        lines += [
            "## Certified accuracy (%) on digits (8x8), 95% Wilson intervals",
            "",
            "| sigma | recipe | " + " | ".join(f"r={r:g}" for r in RADII) + " | abstain % |",
            "|---|---|" + "---|" * (len(RADII) + 1),
        ]
        for row in report["table"]:
            result = row["result"]
            cells = [
                f"{100 * a['value']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]"
                for a in result["accuracy"]
            ]
            abstain = 100 * result["abstained"] / result["total"]
            lines.append(
                f"| {row['sigma']:g} | {row['recipe']} | "
                + " | ".join(cells)
                + f" | {abstain:.1f} |"
            )
        lines.append("")
        for row in report["table"]:
            result = row["result"]
            if result["empirical"] is not None:
                emp = ", ".join(f"{100 * e / result['total']:.1f}" for e in result["empirical"])
                lines.append(
                    f"Empirical upper bound for sigma={row['sigma']:g} {row['recipe']} "
                    f"(L2 PGD, {result['attack_steps']} steps, on the soft smoothed classifier "
                    f"with {result['attack_samples']} samples; PREDICT on the result): {emp} %; "
                    f"sanity check: {result['checks'][0]['passed']}."
                )
        lines.append("")
    return "\n".join(lines)


def stem(parts: list[str], device: torch.device) -> str:
    """``certify``, ``certify_speed`` or ``certify_table``, with ``_cuda`` on a GPU: a run of
    one part never overwrites the results of the other."""
    name = "certify" if sorted(parts) == ["speed", "table"] else f"certify_{parts[0]}"
    return name + ("_cuda" if device.type == "cuda" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts", nargs="+", default=["speed", "table"], choices=["speed", "table"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--speed-n0", type=int, default=32)
    parser.add_argument("--speed-n", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-samples", type=int, default=1297)
    parser.add_argument("--cert-samples", type=int, default=500)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--attack-steps", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.inputs, args.speed_n0, args.speed_n, args.batch_size, args.repeats = 2, 4, 60, 64, 2
        args.epochs, args.cert_samples, args.n, args.attack_steps = 1, 20, 50, 2
        args.train_samples = 128
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    report: dict[str, Any] = {"environment": environment(device, quick=args.quick)}
    json_path, md_path = result_paths(stem(args.parts, device), quick=args.quick, out_dir=args.out)
    if "speed" in args.parts:
        report["speed"] = speed(args, device)
        log(f"speed: {report['speed']}")
    if "table" in args.parts:
        report["table"] = table(args, device)
    write_json(json_path, report)
    write_text(md_path, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

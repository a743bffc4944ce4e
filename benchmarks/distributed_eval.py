"""Benchmark: robust-accuracy throughput with 1 and 2 processes (gloo on the CPU, or NCCL).

Starts the evaluation the way ``torchrun`` does (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` /
``MASTER_PORT`` in the environment of each process) with 1 and with 2 processes, each with
``--threads`` torch threads, and times :func:`advkit.evaluation.robust_accuracy` of ResNet-18
(random weights, labels = its own predictions, so every sample is attacked) under I-FGSM
without early stopping (a fixed amount of work) on the same loader. Rank 0 reports the wall
time from a barrier before the call to its return (the result is global on every rank), and
the script checks that every run gives the same counts. Timing, images and the environment
record come from the shared harness (``_harness.Clock``, ``synthetic_batch`` noise with seed 0,
``environment``). Writes ``distributed_eval.json`` and ``distributed_eval.md`` to ``--out``
(default ``benchmarks/results``; ``_cuda`` added on CUDA and ``_quick`` with ``--quick``, a
smoke run of seconds whose numbers mean nothing).

On a CPU the speed-up is bounded by the free cores: two processes of one thread each can be
at most twice as fast as one, and only on an otherwise idle machine. It is reported, never
asserted.

Usage::

    python benchmarks/distributed_eval.py                   # CPU, 1 thread per process
    python benchmarks/distributed_eval.py --device cuda     # one GPU per process (NCCL)
    python benchmarks/distributed_eval.py --quick --out /tmp/dist
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from _harness import (  # benchmarks/ is on sys.path when a script runs
    RESULTS,
    Clock,
    environment,
    result_paths,
    synthetic_batch,
    write_json,
    write_text,
)


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"samples": 16, "batch": 4, "image": 16, "steps": 1, "repeats": 1}
    return {"samples": 256, "batch": 32, "image": 32, "steps": 10, "repeats": 3}


def worker(args: argparse.Namespace) -> None:
    """One process: time robust_accuracy ``repeats`` times; rank 0 writes the timings."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    from advkit.attacks import IFGSM
    from advkit.evaluation import robust_accuracy
    from advkit.models import resnet18
    from advkit.training.distributed import resolve_context

    torch.set_num_threads(args.threads)
    settings = _settings(args.quick)
    context = resolve_context(args.device, None)
    torch.manual_seed(0)
    model = resnet18(num_classes=10, weights=None).to(context.device).eval()
    images, _ = synthetic_batch(settings["samples"], settings["image"], seed=0)
    with torch.no_grad():
        labels = model(images.to(context.device)).argmax(1).cpu()
    loader = DataLoader(TensorDataset(images, labels), batch_size=settings["batch"])
    attack = IFGSM(eps=8 / 255, steps=settings["steps"])
    clock = Clock(context.device)  # resolve_context made it the current CUDA device
    results = []

    def evaluate() -> None:
        results.append(robust_accuracy(model, loader, attack, early_stop=False, progress=False))

    # One callable per process, so no round robin: every call starts from a barrier instead.
    seconds = []
    for _ in range(settings["repeats"] + 1):  # the first call warms up
        context.barrier()
        seconds.append(clock.time(evaluate))
    result = results[-1]
    if context.is_main:
        record = {
            "processes": context.world_size,
            "seconds": seconds[1:],
            "clean": result.clean.correct,
            "robust": result.robust.correct,
            "total": result.robust.total,
            "grad_samples": result.work.grad_samples,
        }
        write_json(Path(args.record), record)
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(processes: int, args: argparse.Namespace, record: Path) -> dict[str, Any]:
    """Start ``processes`` workers as torchrun would and return rank 0's record."""
    port = _free_port()
    running = []
    for rank in range(processes):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(args.threads),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(processes),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
        command = [sys.executable, __file__, "--worker", "--record", str(record)]
        command += ["--threads", str(args.threads), "--device", args.device]
        command += ["--quick"] if args.quick else []
        running.append(subprocess.Popen(command, env=env))
    for process in running:
        if process.wait(timeout=1800) != 0:
            raise RuntimeError(f"a worker of the {processes}-process run failed")
    return json.loads(record.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", help="'cpu' (gloo) or 'cuda' (NCCL)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--record", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import advkit  # noqa: F401  (environment() records its version)

    settings = _settings(args.quick)
    counts = [1] if args.device == "cuda" and torch.cuda.device_count() < 2 else [1, 2]
    runs = []
    for processes in counts:
        with tempfile.TemporaryDirectory() as folder:
            run = launch(processes, args, Path(folder) / "record.json")
        run["median_seconds"] = statistics.median(run["seconds"])
        run["samples_per_second"] = settings["samples"] / run["median_seconds"]
        runs.append(run)
    base = runs[0]["median_seconds"]
    for run in runs:
        run["speedup"] = base / run["median_seconds"]
    outcome = {(r["clean"], r["robust"], r["total"], r["grad_samples"]) for r in runs}
    report = {
        "settings": {**settings, "threads_per_process": args.threads, "device": args.device},
        "attack": f"IFGSM(eps=8/255, steps={settings['steps']}), early_stop=False",
        "model": "advkit.models.resnet18(num_classes=10), random weights",
        "identical_results": len(outcome) == 1,
        "runs": runs,
        "environment": environment(
            args.device,
            calibrate=not args.quick,
            load_average_1_5_15_min=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        ),
    }
    stem = "distributed_eval" + ("_cuda" if args.device == "cuda" else "")
    json_path, md_path = result_paths(stem, quick=args.quick, out_dir=args.out)
    write_json(json_path, report)
    env = report["environment"]
    lines = [
        f"robust_accuracy, {report['attack']}, {settings['samples']} images "
        f"{settings['image']}x{settings['image']}, batch {settings['batch']}, "
        f"{args.threads} thread(s) per process, {args.device}; {env['device_name']} "
        f"({env['cpu_count']} cores), load {env['load_average_1_5_15_min']}, "
        f"torch {env['torch']}, {env['date_utc']}",
        "",
        "| processes | median s | images/s | speed-up | robust / total |",
        "|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r['processes']} | {r['median_seconds']:.2f} | {r['samples_per_second']:.1f} | "
        f"{r['speedup']:.2f} | {r['robust']} / {r['total']} |"
        for r in runs
    ]
    lines += ["", f"Identical results in every run: {report['identical_results']}"]
    write_text(md_path, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

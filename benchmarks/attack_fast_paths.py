"""Benchmark: the attack loop's opt-in fast paths, their speed and their accuracy cost.

I-FGSM on ResNet-18 (``advkit.models.resnet18``) under each fast path, timed round-robin with
plain fp32 in the same rounds (the shared harness, ``_harness.py``): bf16/fp16 autocast
(``attack.replace(autocast=...)``), channels-last model and inputs, and ``torch.compile`` of the
model (with the compiled floor, frozen and trainable parameters: what freezing the parameters
saves a compiled model). Each path's accuracy effect is measured twice: the fraction of gradient
signs that change against fp32, and the robust accuracy under I-FGSM of a ResNet-18 trained
briefly on the harness's learnable synthetic images, the adversarial examples judged by the
fp32 model.

The loop itself, against its floor and torchattacks, is timed by ``attack_loop.py``.

Usage::

    python benchmarks/attack_fast_paths.py --device cpu     # the recorded CPU run
    python benchmarks/attack_fast_paths.py --device cuda    # the recorded CUDA run
    python benchmarks/attack_fast_paths.py --quick          # smoke run: seconds
    python benchmarks/attack_fast_paths.py --sections accuracy   # the accuracy study only

Writes ``benchmarks/results/attack_fast_paths_<device>.json`` and ``.md`` (``_quick`` added
with ``--quick``), or the paths given by ``--json`` and ``--markdown``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from _harness import (  # benchmarks/ is on sys.path when a script runs
    Clock,
    compare,
    deterministic_kernels,
    environment,
    paired_ratio,
    peak_memory,
    round_robin,
    synthetic_batch,
    write_json,
    write_text,
)
from attack_loop import (
    ALPHA,
    EPS,
    NUM_CLASSES,
    Saver,
    floor_loop,
    fmt,
    header,
    mib,
    output_paths,
    parser_with_common_options,
    progress,
    setup,
)
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM
from advkit.models import resnet18

SECTIONS = ("fast_paths", "accuracy")


@dataclass
class Config:
    """What one run measures; ``for_device`` gives the recorded and the quick settings."""

    device: str
    quick: bool
    fast_cases: list[tuple[int, int]]  # (image size, batch size) where the paths are timed
    steps: int
    repeats: int
    warmup: int
    compile: bool
    compile_case: tuple[int, int] | None
    autocast_dtypes: list[str]
    study_image_size: int = 32
    study_train: int = 2048
    study_test: int = 512
    study_train_steps: int = 200
    study_batch: int = 64
    study_eps: list[float] = field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255])
    seed: int = 0
    clock: str = "wall"

    @classmethod
    def for_device(cls, device: str, quick: bool, cpu_fp16: bool) -> Config:
        dtypes = ["bfloat16", "float16"] if device == "cuda" or cpu_fp16 else ["bfloat16"]
        if quick:
            return cls(
                device, True, [(16, 4)], steps=2, repeats=2, warmup=1, compile=False,
                compile_case=None, autocast_dtypes=dtypes, study_image_size=16, study_train=32,
                study_test=16, study_train_steps=2, study_batch=16, study_eps=[2 / 255],
            )  # fmt: skip
        if device == "cuda":
            cases = [(64, 64), (64, 256), (224, 32), (224, 128)]
            return cls(
                device, False, cases, steps=10, repeats=10, warmup=3, compile=True,
                compile_case=(224, 128), autocast_dtypes=dtypes,
            )  # fmt: skip
        return cls(
            device, False, [(32, 64), (64, 16)], steps=10, repeats=5, warmup=1, compile=True,
            compile_case=(32, 64), autocast_dtypes=dtypes,
        )  # fmt: skip


@dataclass(frozen=True)
class FastPath:
    name: str
    autocast: str | None = None
    channels_last: bool = False
    compiled: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return getattr(torch, self.autocast) if self.autocast else None


def fast_paths_for(cfg: Config, case: tuple[int, int]) -> list[FastPath]:
    paths = [FastPath("fp32")]
    paths += [FastPath(f"autocast {d}", autocast=d) for d in cfg.autocast_dtypes]
    paths += [FastPath("channels_last", channels_last=True)]
    paths += [
        FastPath(f"channels_last + {d}", autocast=d, channels_last=True)
        for d in cfg.autocast_dtypes
    ]
    if cfg.compile and case == cfg.compile_case:
        paths += [FastPath("torch.compile", compiled=True)]
        if cfg.device == "cuda":
            paths += [FastPath("torch.compile + bfloat16", autocast="bfloat16", compiled=True)]
    return paths


COMPILED_FLOORS = {"compiled floor, frozen params": True, "compiled floor, trainable params": False}


def gradient_sign(model: nn.Module, x: Tensor, y: Tensor, autocast: torch.dtype | None) -> Tensor:
    """The sign of the gradient the attack follows, through the public API.

    FGSM with a tiny eps inside wide bounds clips nothing, so ``x_adv - x`` is exactly
    ``eps * sign(grad)`` as the attack computed it (autocast and fp16 scaling included).
    """
    probe = FGSM(eps=2**-10, bounds=(-1.0, 2.0), autocast=autocast)
    return (probe(model, x, y) - x).sign()


# -- timing the paths --------------------------------------------------------------------------


def bench_fast_paths(
    cfg: Config, device: torch.device, clock: Clock, rows: list[dict[str, Any]], save: Saver
) -> None:
    """I-FGSM under each fast path, timed round-robin with plain fp32 on the same case.

    With ``torch.compile``, the compiled floor is timed twice in the same rounds, with frozen
    and with trainable parameters: what freezing the parameters saves a compiled model.
    Appends one row per path and case to ``rows`` and calls ``save`` after each case.
    """
    for size, batch in cfg.fast_cases:
        torch.manual_seed(cfg.seed)
        model = resnet18(num_classes=NUM_CLASSES).to(device).eval()
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x, y = synthetic_batch(batch, size, num_classes=NUM_CLASSES, seed=cfg.seed, device=device)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        paths = fast_paths_for(cfg, (size, batch))
        compiled = torch.compile(model) if any(p.compiled for p in paths) else None
        fns: dict[str, Callable[[], Tensor]] = {}
        inputs: dict[str, tuple[nn.Module, Tensor]] = {}
        for path in paths:
            net, xs = (model_cl, x_cl) if path.channels_last else (model, x)
            net = compiled if path.compiled and compiled is not None else net
            attack = IFGSM(eps=EPS, steps=cfg.steps, alpha=ALPHA, autocast=path.dtype)
            fns[path.name] = lambda a=attack, n=net, xs=xs, y=y: a(n, xs, y)
            inputs[path.name] = (net, xs)
        if compiled is not None:
            for name, frozen in COMPILED_FLOORS.items():
                fns[name] = floor_loop(compiled, x, y, cfg.steps, frozen_params=frozen)
        compile_s, errors = compile_first(fns, [n for n in fns if "compile" in n])
        progress(f"fast paths size={size} batch={batch}: {', '.join(fns)}")
        times = round_robin(fns, clock, repeats=cfg.repeats, warmup=cfg.warmup)
        with deterministic_kernels():
            reference_adv = fns["fp32"]()
            reference_sign = gradient_sign(model, x, y, None)
        for path in paths:
            if path.name in errors:
                rows.append({"path": path.name, "image_size": size, "batch": batch,
                             "error": errors[path.name]})  # fmt: skip
                continue
            net, xs = inputs[path.name]
            fn = fns[path.name]
            # A compiled model is left alone: a changed global flag could make it recompile.
            with nullcontext() if path.compiled else deterministic_kernels():
                output = fn()
                signs = gradient_sign(net, xs, y, path.dtype)
            row = {
                "path": path.name,
                "autocast": path.autocast,
                "channels_last": path.channels_last,
                "compiled": path.compiled,
                "image_size": size,
                "batch": batch,
                "steps": cfg.steps,
                "ms": 1e3 * statistics.median(times[path.name]),
                "speedup_vs_fp32": paired_ratio(times["fp32"], times[path.name]),
                "compile_s": compile_s.get(path.name),
                "peak_memory_bytes": peak_memory(fn, device),
                "sign_flip_fraction": float((signs != reference_sign).float().mean()),
                "output_vs_fp32": compare(output, reference_adv),
                "output_channels_last": output.is_contiguous(memory_format=torch.channels_last),
                "times_s": times[path.name],
            }
            if path.compiled and path.autocast is None and set(COMPILED_FLOORS) <= set(times):
                frozen_s, trainable_s = (times[name] for name in COMPILED_FLOORS)
                row["compiled_floor"] = {
                    "frozen_params_ms": 1e3 * statistics.median(frozen_s),
                    "trainable_params_ms": 1e3 * statistics.median(trainable_s),
                    "attack_vs_frozen_floor": paired_ratio(times[path.name], frozen_s),
                    "trainable_vs_frozen_floor": paired_ratio(trainable_s, frozen_s),
                }
            rows.append(row)
        save()


def compile_first(
    fns: dict[str, Callable[[], Tensor]], names: list[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Make the first (compiling) call of each named callable: seconds taken, or the error.

    A callable whose compilation fails is dropped from ``fns``; the others are still timed.
    """
    seconds, errors = {}, {}
    for name in names:
        progress(f"compiling: {name}")
        start = time.perf_counter()
        try:
            fns[name]()
        except Exception as err:  # report a failed compile, keep the other figures
            errors[name] = f"{type(err).__name__}: {err}"
            del fns[name]
            continue
        seconds[name] = time.perf_counter() - start
    return seconds, errors


# -- the accuracy study ------------------------------------------------------------------------


def train_study_model(cfg: Config, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    """ResNet-18 trained briefly (seeded Adam) on learnable synthetic images; and test data."""
    size = cfg.study_image_size
    x_train, y_train = synthetic_batch(
        cfg.study_train, size, seed=cfg.seed, split=1, learnable=True
    )
    x_test, y_test = synthetic_batch(cfg.study_test, size, seed=cfg.seed, split=2, learnable=True)
    torch.manual_seed(cfg.seed)
    model = resnet18(num_classes=NUM_CLASSES).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.study_train_steps):
        index = torch.randint(0, cfg.study_train, (cfg.study_batch,), generator=gen)
        xb, yb = x_train[index].to(device), y_train[index].to(device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    model.eval()
    for param in model.parameters():
        param.grad = None
    return model, x_test.to(device), y_test.to(device)


def batched_accuracy(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 256) -> float:
    with torch.no_grad():
        correct = sum(
            int((model(xb).argmax(1) == yb).sum())
            for xb, yb in zip(x.split(chunk), y.split(chunk), strict=True)
        )
    return correct / x.shape[0]


def accuracy_study(cfg: Config, device: torch.device) -> dict[str, Any]:
    """Gradient signs that change and robust accuracy (judged in fp32) under each fast path."""
    progress("accuracy study: training ResNet-18 on synthetic images")
    model, x, y = train_study_model(cfg, device)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    paths = [p for p in fast_paths_for(cfg, (-1, -1)) if not p.compiled]
    reference_sign = gradient_sign(model, x, y, None)
    rows = []
    for path in paths:
        net, xs = (model_cl, x_cl) if path.channels_last else (model, x)
        robust = {}
        for eps in cfg.study_eps:
            attack = IFGSM(eps=eps, steps=cfg.steps, alpha=eps / 4, autocast=path.dtype)
            adversarial = torch.cat(
                [attack(net, xb, yb) for xb, yb in zip(xs.split(256), y.split(256), strict=True)]
            )
            robust[f"{eps * 255:g}/255"] = batched_accuracy(model, adversarial.contiguous(), y)
        rows.append({
            "path": path.name,
            "sign_flip_fraction": float(
                (gradient_sign(net, xs, y, path.dtype) != reference_sign).float().mean()
            ),
            "robust_accuracy": robust,
        })  # fmt: skip
    for row in rows:
        row["robust_accuracy_delta_pp"] = {
            eps: 100 * (acc - rows[0]["robust_accuracy"][eps])
            for eps, acc in row["robust_accuracy"].items()
        }
    return {
        "model": "advkit.models.resnet18, random init, Adam lr 1e-3",
        "data": "_harness.synthetic_batch(learnable=True): train split 1, test split 2",
        "train_steps": cfg.study_train_steps,
        "train_images": cfg.study_train,
        "test_images": cfg.study_test,
        "image_size": cfg.study_image_size,
        "attack": f"I-FGSM, {cfg.steps} steps, alpha = eps/4, judged by the fp32 model",
        "clean_accuracy": batched_accuracy(model, x, y),
        "paths": rows,
    }


# -- reporting ---------------------------------------------------------------------------------


def to_markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    lines = [
        *header("Attack loop fast paths", payload),
        f"ResNet-18, I-FGSM with eps {EPS * 255:g}/255, alpha {ALPHA * 255:g}/255; medians of "
        f"{cfg['repeats']} round-robin rounds ({cfg['clock']} time).",
    ]
    if "fast_paths" in payload:
        lines += fast_paths_markdown(payload["fast_paths"], cfg)
    if "accuracy" in payload:
        lines += accuracy_markdown(payload["accuracy"])
    if "split_from" in payload:  # the recorded runs made before the split
        lines += ["", f"Split from {payload['split_from']}."]
    return "\n".join(lines) + "\n"


def fast_paths_markdown(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Fast paths (I-FGSM, {cfg['steps']} steps)",
        "",
        "| path | size | batch | ms | speedup vs fp32 | gradient signs changed "
        "| output elements changed | compile s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['path']} | {row['image_size']} | {row['batch']} "
                         f"| failed: {row['error'][:80]} | | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {row['path']} | {row['image_size']} | {row['batch']} | {row['ms']:.1f} "
            f"| {row['speedup_vs_fp32']:.2f}x | {100 * row['sign_flip_fraction']:.2f}% "
            f"| {100 * row['output_vs_fp32']['fraction_different']:.2f}% "
            f"| {fmt(row['compile_s'], '.0f')} | {mib(row['peak_memory_bytes'])} |"
        )
    for row in rows:
        floors = row.get("compiled_floor")
        if floors:
            lines += [
                "",
                f"torch.compile, size {row['image_size']}, batch {row['batch']}: compiled "
                f"attack / compiled floor {floors['attack_vs_frozen_floor']:.3f}; the compiled "
                f"floor with trainable parameters takes {floors['trainable_vs_frozen_floor']:.2f}x "
                "the time of the one with frozen parameters (the attack freezes them).",
            ]
    return lines


def accuracy_markdown(study: dict[str, Any]) -> list[str]:
    eps_keys = list(study["paths"][0]["robust_accuracy"])
    lines = [
        "",
        f"## Accuracy effect ({study['attack']})",
        "",
        f"ResNet-18 trained {study['train_steps']} steps on {study['train_images']} synthetic "
        f"{study['image_size']}x{study['image_size']} images; clean accuracy "
        f"{100 * study['clean_accuracy']:.1f}% on {study['test_images']} test images.",
        "",
        "| path | gradient signs changed | "
        + " | ".join(f"robust acc. {e} (delta pp)" for e in eps_keys)
        + " |",
        "|---|---|" + "---|" * len(eps_keys),
    ]
    for row in study["paths"]:
        cells = " | ".join(
            f"{100 * row['robust_accuracy'][e]:.1f}% ({row['robust_accuracy_delta_pp'][e]:+.1f})"
            for e in eps_keys
        )
        lines.append(f"| {row['path']} | {100 * row['sign_flip_fraction']:.2f}% | {cells} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_common_options(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time torch.compile on one case (default: on, off with --quick)",
    )
    parser.add_argument("--cpu-fp16", action="store_true", help="also float16 autocast on CPU")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run"
    )
    args = parser.parse_args(argv)
    device, clock = setup(parser, args)
    cfg = Config.for_device(args.device, args.quick, args.cpu_fp16)
    cfg.seed, cfg.clock = args.seed, args.clock
    if args.repeats is not None:
        cfg.repeats = args.repeats
    if args.compile is not None:
        cfg.compile = args.compile
    if cfg.compile and cfg.compile_case not in cfg.fast_cases:
        cfg.compile_case = cfg.fast_cases[-1]  # compiling is timed on a fast-path case only
    json_path, md_path = output_paths(args, f"attack_fast_paths_{args.device}")
    payload: dict[str, Any] = {
        "benchmark": "attack_fast_paths",
        "complete": False,
        "config": asdict(cfg),
        "environment": environment(device, calibrate=not args.quick),
    }

    def save() -> None:
        # After every case, so that a run cut short (a time limit, a failed compile that takes
        # the process down) still leaves what it measured; "complete" tells the two apart.
        write_json(json_path, payload)

    if "accuracy" in args.sections:
        payload["accuracy"] = accuracy_study(cfg, device)
        save()
    if "fast_paths" in args.sections:  # last: compiling is the slowest, least predictable part
        payload["fast_paths"] = []
        bench_fast_paths(cfg, device, clock, payload["fast_paths"], save)
    payload["complete"] = True
    save()
    write_text(md_path, to_markdown(payload))
    progress(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

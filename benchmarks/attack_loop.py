"""Benchmark: advkit's batched attack loop against its physical floor and against torchattacks.

Times FGSM, I-FGSM, PGD (no random start) and MI-FGSM on ResNet-18 (``advkit.models.resnet18``,
random weights: speed does not depend on their values) over batch and image sizes. Per case:

- **floor ratio**: attack time / (steps x one forward + one input-gradient backward of the same
  model and batch, written as the plainest loop). The floor is what any gradient attack must pay.
- **vs torchattacks**: advkit time / torchattacks time for the same attack, model, batch and
  settings (the same explicit Python-float ``alpha``), and whether both give the same
  adversarial examples (max abs difference, number of differing elements).

The three callables of a case run round-robin (one call each per round, the order rotating),
and each ratio is the median over rounds of the ratio within a round, so drift in the machine's
speed cannot bias it. CUDA times come from CUDA events after ``torch.cuda.synchronize``.

Then the opt-in fast paths on I-FGSM, each against plain fp32 in the same rounds: bf16/fp16
autocast (``attack.replace(autocast=...)``), channels-last model and inputs, and
``torch.compile`` of the model; with their accuracy effect (gradient signs that change and
robust accuracy on a briefly trained ResNet-18), and an audit of the loop (no parameter
gradient, no graph kept, host synchronizations per call on CUDA).

Usage::

    python benchmarks/attack_loop.py --device cpu     # the recorded CPU run (quiet machine)
    python benchmarks/attack_loop.py --device cuda    # the recorded CUDA run
    python benchmarks/attack_loop.py --quick          # smoke run: seconds, numbers meaningless

Writes ``benchmarks/results/attack_loop_<device>.json`` and ``.md`` (``_quick`` added with
``--quick``), or the paths given by ``--json`` and ``--markdown``.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, Attack
from advkit.models import resnet18

try:
    import torchattacks
except ImportError:  # optional benchmark dependency: its columns become n/a
    torchattacks = None

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 8 / 255
ALPHA = 2 / 255
NUM_CLASSES = 10
MIB = 2**20

Saver = Callable[[], None]


# -- configuration -----------------------------------------------------------------------------


@dataclass
class Config:
    """What one run measures; ``for_device`` gives the recorded and the quick settings."""

    device: str
    quick: bool
    cases: list[tuple[int, int]]  # (image size, batch size)
    fast_cases: list[tuple[int, int]]  # where the fast paths are timed
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
                device, True, [(16, 4)], [(16, 4)], steps=2, repeats=2, warmup=1, compile=False,
                compile_case=None, autocast_dtypes=dtypes, study_image_size=16, study_train=32,
                study_test=16, study_train_steps=2, study_batch=16, study_eps=[2 / 255],
            )  # fmt: skip
        if device == "cuda":
            cases = [(64, 64), (64, 256), (224, 32), (224, 128)]
            return cls(
                device, False, cases, cases, steps=10, repeats=10, warmup=3, compile=True,
                compile_case=(224, 128), autocast_dtypes=dtypes,
            )  # fmt: skip
        # Sized to finish in about 5 minutes on 2 cores; 64x64 at batch 64 adds ~10 more.
        cases = [(32, 16), (32, 64), (64, 16)]
        return cls(
            device, False, cases, [(32, 64), (64, 16)], steps=10, repeats=5, warmup=1,
            compile=True, compile_case=(32, 64), autocast_dtypes=dtypes,
        )  # fmt: skip


# -- measuring ---------------------------------------------------------------------------------


class Clock:
    """Wall time of one call: CUDA events on a synchronized device, else ``perf_counter``.

    ``process=True`` (CPU only) measures the process's CPU time instead: on a shared machine
    with one intra-op thread it ignores the time other processes hold the cores, though not
    their cache and memory-bandwidth pressure. Python's garbage collector is paused during
    the call, so a collection cannot land in it.
    """

    def __init__(self, device: torch.device, process: bool = False) -> None:
        self.cuda = device.type == "cuda"
        self.now = time.process_time if process else time.perf_counter

    def time(self, fn: Callable[[], object]) -> float:
        gc.disable()
        try:
            return self._time(fn)
        finally:
            gc.enable()

    def _time(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        start_s = self.now()
        fn()
        return self.now() - start_s


def round_robin(
    fns: dict[str, Callable[[], object]], clock: Clock, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each callable, one call each per round, the order rotating."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(clock.time(fns[name]))
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two callables timed in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def _proc_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise OSError(f"{field_name} not in /proc/self/status")


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Bytes a call needs on top of what is allocated before it; ``None`` where unmeasurable.

    CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the call.
    CPU (Linux only): growth of the process's peak resident set (VmHWM, reset through
    /proc/self/clear_refs) over its resident set before the call, after ``malloc_trim``
    returned freed heap to the system. It counts every page the call touched, the allocator's
    slack included, so it is a rough figure.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_kib("VmRSS")
        fn()
        return max(0, _proc_status_kib("VmHWM") - before) * 1024
    except OSError:
        return None


def count_host_syncs(fn: Callable[[], object], device: torch.device) -> int | None:
    """Host-device synchronizations of one call (CUDA's sync debug mode); ``None`` on CPU.

    Counted on the second of two calls: the first call made in sync-debug mode reported one
    synchronization more than the code makes (H200, torch 2.11).
    """
    if device.type != "cuda":
        return None
    counts = []
    for _ in range(2):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    return counts[-1]


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN restricted to deterministic algorithms, for element-wise comparisons.

    Some cuDNN backward algorithms accumulate in a run-dependent order; without this, two runs
    of the same attack on CUDA could differ in a few ulps, which is not what is being compared.
    """
    previous = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = previous


def compare(a: Tensor, b: Tensor) -> dict[str, Any]:
    """Max abs difference and number (and fraction) of differing elements of two tensors."""
    diff = (a - b).abs()
    differing = int((diff != 0).sum())
    return {
        "identical": differing == 0,
        "max_abs_diff": float(diff.max()),
        "num_different": differing,
        "fraction_different": differing / diff.numel(),
    }


# -- the callables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackSpec:
    """One attack, built the same way in advkit and torchattacks."""

    name: str
    torchattacks_name: str
    iterative: bool
    expect_identical: bool

    def advkit(self, steps: int, **options: Any) -> Attack:
        if self.name == "FGSM":
            return FGSM(eps=EPS, **options)
        if self.name == "I-FGSM":
            return IFGSM(eps=EPS, steps=steps, alpha=ALPHA, **options)
        if self.name == "PGD":
            return PGD(eps=EPS, steps=steps, alpha=ALPHA, random_start=False, **options)
        return MIFGSM(eps=EPS, steps=steps, alpha=ALPHA, decay=1.0, **options)

    def torchattacks(self, model: nn.Module, steps: int) -> Callable[[Tensor, Tensor], Tensor]:
        assert torchattacks is not None  # internal invariant: only called when installed
        if self.name == "FGSM":
            return torchattacks.FGSM(model, eps=EPS)
        if self.name == "I-FGSM":
            return torchattacks.BIM(model, eps=EPS, alpha=ALPHA, steps=steps)
        if self.name == "PGD":
            return torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=steps, random_start=False)
        return torchattacks.MIFGSM(model, eps=EPS, alpha=ALPHA, steps=steps, decay=1.0)


ATTACKS = [
    AttackSpec("FGSM", "FGSM", iterative=False, expect_identical=True),
    AttackSpec("I-FGSM", "BIM", iterative=True, expect_identical=True),
    # torchattacks projects as clamp(x0 + clamp(x - x0, -eps, eps), 0, 1); x0 + (x - x0)
    # rounds, so an element on the ball's border may differ by an ulp (and then drift).
    AttackSpec("PGD", "PGD", iterative=True, expect_identical=False),
    AttackSpec("MI-FGSM", "MIFGSM", iterative=True, expect_identical=False),
]


def floor_loop(
    model: nn.Module, x: Tensor, y: Tensor, steps: int, frozen_params: bool = False
) -> Callable[[], Tensor]:
    """``steps`` x (forward + gradient w.r.t. the inputs), the plainest way to write it.

    ``frozen_params`` runs it with every parameter's ``requires_grad`` off (then restored).
    """

    def steps_loop() -> Tensor:
        grad = x
        for _ in range(steps):
            xi = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(F.cross_entropy(model(xi), y), xi)
        return grad

    def frozen() -> Tensor:
        flags = [(param, param.requires_grad) for param in model.parameters()]
        for param, _ in flags:
            param.requires_grad_(False)
        try:
            return steps_loop()
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)

    return frozen if frozen_params else steps_loop


def random_batch(
    batch: int, size: int, device: torch.device, seed: int, channels_last: bool = False
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def gradient_sign(model: nn.Module, x: Tensor, y: Tensor, autocast: torch.dtype | None) -> Tensor:
    """The sign of the gradient the attack follows, through the public API.

    FGSM with a tiny eps inside wide bounds clips nothing, so ``x_adv - x`` is exactly
    ``eps * sign(grad)`` as the attack computed it (autocast and fp16 scaling included).
    """
    probe = FGSM(eps=2**-10, bounds=(-1.0, 2.0), autocast=autocast)
    return (probe(model, x, y) - x).sign()


# -- the sections ------------------------------------------------------------------------------


def bench_attacks(
    cfg: Config, device: torch.device, clock: Clock, rows: list[dict[str, Any]], save: Saver
) -> None:
    """Each attack on each case: advkit, its floor and torchattacks, timed round-robin.

    Appends one row per attack and case to ``rows`` and calls ``save`` after each case.
    """
    for size, batch in cfg.cases:
        torch.manual_seed(cfg.seed)
        model = resnet18(num_classes=NUM_CLASSES).to(device).eval()
        x, y = random_batch(batch, size, device, cfg.seed)
        for spec in ATTACKS:
            steps = cfg.steps if spec.iterative else 1
            attack = spec.advkit(steps)
            fns: dict[str, Callable[[], object]] = {
                "advkit": lambda a=attack, m=model, x=x, y=y: a(m, x, y),
                "floor": floor_loop(model, x, y, steps),
            }
            reference = spec.torchattacks(model, steps) if torchattacks is not None else None
            if reference is not None:
                fns["torchattacks"] = lambda r=reference, x=x, y=y: r(x, y)
            _progress(f"{spec.name} size={size} batch={batch}")
            times = round_robin(fns, clock, cfg.repeats, cfg.warmup)
            advkit_s = statistics.median(times["advkit"])
            row: dict[str, Any] = {
                "attack": spec.name,
                "torchattacks_attack": spec.torchattacks_name,
                "image_size": size,
                "batch": batch,
                "steps": steps,
                "eps": EPS,
                "alpha": EPS if spec.name == "FGSM" else ALPHA,
                "advkit_ms": 1e3 * advkit_s,
                "floor_ms": 1e3 * statistics.median(times["floor"]),
                "torchattacks_ms": None,
                "ms_per_step": 1e3 * advkit_s / steps,
                "images_per_s": batch / advkit_s,
                "floor_ratio": paired_ratio(times["advkit"], times["floor"]),
                "vs_torchattacks": None,
                "times_s": times,
                "peak_memory_bytes": {name: peak_memory(fn, device) for name, fn in fns.items()},
                "torchattacks_agreement": None,
            }
            if reference is not None:
                row["torchattacks_ms"] = 1e3 * statistics.median(times["torchattacks"])
                row["vs_torchattacks"] = paired_ratio(times["advkit"], times["torchattacks"])
                with deterministic_kernels():
                    agreement = compare(attack(model, x, y), reference(x, y))
                row["torchattacks_agreement"] = {
                    **agreement,
                    "expected_identical": spec.expect_identical,
                }
            rows.append(row)
        save()


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
        x, y = random_batch(batch, size, device, cfg.seed)
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
        compile_s, errors = _compile_first(fns, [n for n in fns if "compile" in n])
        _progress(f"fast paths size={size} batch={batch}: {', '.join(fns)}")
        times = round_robin(fns, clock, cfg.repeats, cfg.warmup)
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


def _compile_first(
    fns: dict[str, Callable[[], Tensor]], names: list[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Make the first (compiling) call of each named callable: seconds taken, or the error.

    A callable whose compilation fails is dropped from ``fns``; the others are still timed.
    """
    seconds, errors = {}, {}
    for name in names:
        _progress(f"compiling: {name}")
        start = time.perf_counter()
        try:
            fns[name]()
        except Exception as err:  # report a failed compile, keep the other figures
            errors[name] = f"{type(err).__name__}: {err}"
            del fns[name]
            continue
        seconds[name] = time.perf_counter() - start
    return seconds, errors


def synthetic_images(n: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Images in [0, 1]: a faint smooth colour pattern per class (4x4, upsampled) in noise.

    Faint (20% pattern, 80% noise) so that a trained ResNet-18 is nearly always right on clean
    images yet loses most of its accuracy between eps 1/255 and 4/255: robust accuracies in
    between show the effect of a fast path, where 0% or 100% would hide it.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(NUM_CLASSES, 3, 4, 4, generator=gen)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    noise = torch.rand(n, 3, size, size, generator=gen)
    return (0.2 * patterns[labels] + 0.8 * noise).clamp(0, 1), labels


def train_study_model(cfg: Config, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    """ResNet-18 trained briefly (seeded Adam) on synthetic images; returns it and test data."""
    images, labels = synthetic_images(
        cfg.study_train + cfg.study_test, cfg.study_image_size, cfg.seed
    )
    x_train, x_test = images.split([cfg.study_train, cfg.study_test])
    y_train, y_test = labels.split([cfg.study_train, cfg.study_test])
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


def _batched_accuracy(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 256) -> float:
    with torch.no_grad():
        correct = sum(
            int((model(xb).argmax(1) == yb).sum())
            for xb, yb in zip(x.split(chunk), y.split(chunk), strict=True)
        )
    return correct / x.shape[0]


def accuracy_study(cfg: Config, device: torch.device) -> dict[str, Any]:
    """Gradient signs that change and robust accuracy (judged in fp32) under each fast path."""
    _progress("accuracy study: training ResNet-18 on synthetic images")
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
            robust[f"{eps * 255:g}/255"] = _batched_accuracy(model, adversarial.contiguous(), y)
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
        "train_steps": cfg.study_train_steps,
        "train_images": cfg.study_train,
        "test_images": cfg.study_test,
        "image_size": cfg.study_image_size,
        "attack": f"I-FGSM, {cfg.steps} steps, alpha = eps/4, judged by the fp32 model",
        "clean_accuracy": _batched_accuracy(model, x, y),
        "paths": rows,
    }


def loop_audit(cfg: Config, device: torch.device, clock: Clock) -> dict[str, Any]:
    """What the loop leaves and costs: parameter gradients, graph, syncs, frozen-parameter floor."""
    size, batch = cfg.cases[0]
    torch.manual_seed(cfg.seed)
    model = resnet18(num_classes=NUM_CLASSES).to(device).eval()
    x, y = random_batch(batch, size, device, cfg.seed)
    flags = [p.requires_grad for p in model.parameters()]
    attack = IFGSM(eps=EPS, steps=cfg.steps, alpha=ALPHA)
    adversarial = attack(model, x, y)
    one_step = IFGSM(eps=EPS, steps=1, alpha=ALPHA)

    fns = {
        "floor": floor_loop(model, x, y, cfg.steps),
        "floor_frozen_params": floor_loop(model, x, y, cfg.steps, frozen_params=True),
    }
    times = round_robin(fns, clock, cfg.repeats, cfg.warmup)
    return {
        "case": {"image_size": size, "batch": batch, "steps": cfg.steps},
        "parameter_grads_written": any(p.grad is not None for p in model.parameters()),
        "requires_grad_restored": [p.requires_grad for p in model.parameters()] == flags,
        "output_has_graph": adversarial.requires_grad or adversarial.grad_fn is not None,
        "host_syncs_call_1_step": count_host_syncs(lambda: one_step(model, x, y), device),
        "host_syncs_call_n_steps": count_host_syncs(lambda: attack(model, x, y), device),
        "host_syncs_run_n_steps": count_host_syncs(lambda: attack.run(model, x, y), device),
        "eager_floor_frozen_vs_trainable_params": paired_ratio(
            times["floor_frozen_params"], times["floor"]
        ),
    }


# -- reporting ---------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchattacks": getattr(torchattacks, "__version__", None),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "advkit_commit": _git_commit(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        env["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        conv = getattr(torch.backends.cudnn, "conv", None)  # torch >= 2.9: per-op precision
        env["cudnn_conv_fp32_precision"] = getattr(conv, "fp32_precision", None)
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def to_markdown(payload: dict[str, Any]) -> str:
    env, cfg = payload["environment"], payload["config"]
    device_name = env.get("gpu") or env["cpu"]
    memory = "CUDA max_memory_allocated" if cfg["device"] == "cuda" else "peak RSS growth"
    lines = [
        f"# Attack loop benchmark ({cfg['device']}{', quick' if cfg['quick'] else ''})",
        "",
        f"{device_name}; torch {env['torch']}, torchattacks {env['torchattacks'] or 'n/a'}, "
        f"{env['threads']} threads; {env['date_utc']}; advkit {env['advkit_commit']}.",
        f"ResNet-18, eps {EPS * 255:g}/255, alpha {ALPHA * 255:g}/255, medians of "
        f"{cfg['repeats']} round-robin rounds ({cfg['clock']} time). Ratios < 1 mean advkit "
        "is faster.",
        "",
        f"| attack | size | batch | steps | advkit ms | ms/step | images/s | floor ratio "
        f"| vs torchattacks | same as torchattacks (max diff, #diff) | peak MiB ({memory}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["cases"]:
        agree = row["torchattacks_agreement"]
        same = (
            "n/a"
            if agree is None
            else f"{'yes' if agree['identical'] else 'no'} "
            f"({agree['max_abs_diff']:.2g}, {agree['num_different']})"
        )
        lines.append(
            f"| {row['attack']} | {row['image_size']} | {row['batch']} | {row['steps']} "
            f"| {row['advkit_ms']:.1f} | {row['ms_per_step']:.2f} | {row['images_per_s']:.1f} "
            f"| {row['floor_ratio']:.3f} | {_fmt(row['vs_torchattacks'], '.3f')} | {same} "
            f"| {_mib(row['peak_memory_bytes']['advkit'])} |"
        )
    lines += [
        "",
        "FGSM and I-FGSM must match torchattacks element for element. PGD and MI-FGSM may differ "
        "by float rounding: torchattacks projects as clamp(x0 + clamp(x - x0, -eps, eps), 0, 1), "
        "and x0 + (x - x0) is not always x.",
        "",
        f"## Fast paths (I-FGSM, {cfg['steps']} steps)",
        "",
        "| path | size | batch | ms | speedup vs fp32 | gradient signs changed "
        "| output elements changed | compile s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["fast_paths"]:
        if "error" in row:
            lines.append(f"| {row['path']} | {row['image_size']} | {row['batch']} "
                         f"| failed: {row['error'][:80]} | | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {row['path']} | {row['image_size']} | {row['batch']} | {row['ms']:.1f} "
            f"| {row['speedup_vs_fp32']:.2f}x | {100 * row['sign_flip_fraction']:.2f}% "
            f"| {100 * row['output_vs_fp32']['fraction_different']:.2f}% "
            f"| {_fmt(row['compile_s'], '.0f')} | {_mib(row['peak_memory_bytes'])} |"
        )
    for row in payload["fast_paths"]:
        floors = row.get("compiled_floor")
        if floors:
            lines += [
                "",
                f"torch.compile, size {row['image_size']}, batch {row['batch']}: compiled "
                f"attack / compiled floor {floors['attack_vs_frozen_floor']:.3f}; the compiled "
                f"floor with trainable parameters takes {floors['trainable_vs_frozen_floor']:.2f}x "
                "the time of the one with frozen parameters (the attack freezes them).",
            ]
    study = payload["accuracy"]
    eps_keys = list(study["paths"][0]["robust_accuracy"])
    lines += [
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
    audit = payload["audit"]
    lines += [
        "",
        "## Loop audit",
        "",
        f"- parameter .grad written: {audit['parameter_grads_written']}; requires_grad "
        f"restored: {audit['requires_grad_restored']}; output keeps a graph: "
        f"{audit['output_has_graph']}",
        f"- host syncs per call (1 step / {cfg['steps']} steps / run() with "
        f"{cfg['steps']} steps): {_fmt(audit['host_syncs_call_1_step'], 'd')} / "
        f"{_fmt(audit['host_syncs_call_n_steps'], 'd')} / "
        f"{_fmt(audit['host_syncs_run_n_steps'], 'd')}"
        + (" (counted on CUDA only)" if cfg["device"] != "cuda" else ""),
        f"- eager floor with frozen / trainable parameters: "
        f"{audit['eager_floor_frozen_vs_trainable_params']:.3f}",
    ]
    return "\n".join(lines) + "\n"


def _progress(message: str) -> None:
    print(f"[attack_loop] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds, tiny cases")
    parser.add_argument("--json", type=Path, default=None, help="output JSON path")
    parser.add_argument("--markdown", type=Path, default=None, help="output Markdown path")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time torch.compile on one case (default: on, off with --quick)",
    )
    parser.add_argument("--cpu-fp16", action="store_true", help="also float16 autocast on CPU")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="CPU only: 'process' times CPU time (for shared machines, with --threads 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; torch.cuda.is_available() is False")
    if args.device == "cuda" and args.clock == "process":
        parser.error("--clock process is for the CPU; CUDA is timed with CUDA events")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # what a user timing a fixed shape would set
    cfg = Config.for_device(args.device, args.quick, args.cpu_fp16)
    cfg.seed, cfg.clock = args.seed, args.clock
    if args.repeats is not None:
        cfg.repeats = args.repeats
    if args.compile is not None:
        cfg.compile = args.compile
    if cfg.compile and cfg.compile_case not in cfg.fast_cases:
        cfg.compile_case = cfg.fast_cases[-1]  # compiling is timed on a fast-path case only
    stem = f"attack_loop_{args.device}{'_quick' if args.quick else ''}"
    json_path = args.json or RESULTS / f"{stem}.json"
    md_path = args.markdown or RESULTS / f"{stem}.md"

    clock = Clock(device, process=cfg.clock == "process")
    # Move the objects of the imports out of the collector's sight: collections stay cheap.
    gc.collect()
    gc.freeze()
    payload: dict[str, Any] = {
        "benchmark": "attack_loop",
        "complete": False,
        "config": asdict(cfg),
        "environment": environment(device),
        "cases": [],
        "fast_paths": [],
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        # After every case, so that a run cut short (a time limit, a failed compile that takes
        # the process down) still leaves what it measured; "complete" tells the two apart.
        json_path.write_text(json.dumps(payload, indent=2) + "\n")

    bench_attacks(cfg, device, clock, payload["cases"], save)
    payload["audit"] = loop_audit(cfg, device, clock)
    payload["accuracy"] = accuracy_study(cfg, device)
    save()
    # Last: compiling is the slowest and least predictable part.
    bench_fast_paths(cfg, device, clock, payload["fast_paths"], save)
    payload["complete"] = True
    save()
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(to_markdown(payload))
    _progress(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

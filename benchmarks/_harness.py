"""The one harness every benchmark uses: a round-robin timer, synthetic batches, the machine.

- **Timing**: :class:`Clock` times one call (CUDA events on a GPU, ``perf_counter`` or process
  time on the CPU, the garbage collector paused); :func:`round_robin` times several callables
  one call each per round, the order rotating from round to round, so that no callable always
  runs first (warm caches) or last; :func:`paired_ratio` and :func:`ratios_to` compare two
  callables by the median over rounds of the ratio *within* a round, so slow drift in the
  machine's speed cancels instead of biasing the result.
- **Data**: :func:`synthetic_batch` makes every benchmark's images and labels, either uniform
  noise (for timings, where values do not matter) or a learnable, seeded class pattern (for
  benchmarks that train a model and measure accuracy); :func:`digits_32` gives real images
  (scikit-learn's handwritten digits at 32x32) to the benchmarks that train on real data.
- **Environment**: :func:`environment` is the one record of the machine and software that
  every results file carries (torch version, CPU name, threads, ISA settings, device, torch's
  compute settings) with :func:`cpu_calibration`, this CPU's speed on a fixed small workload
  next to the slow 2-core AVX2 reference CPU that the documents' time targets are set on.
- **Outputs**: :func:`result_paths` names the results files; ``--quick`` runs get ``_quick``
  added, so a smoke run never overwrites a recorded result in ``benchmarks/results/``.

The scripts import it as ``_harness``: Python puts a script's folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from advkit.evaluation import compute_settings

RESULTS = Path(__file__).resolve().parent / "results"

# Environment variables that change which CPU kernels torch runs (and so its speed).
ISA_ENV = (
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "ATEN_CPU_CAPABILITY",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

# -- timing ------------------------------------------------------------------------------------


class Clock:
    """Seconds of one call: CUDA events on a synchronized device, else a host clock.

    Args:
        device: Where the timed work runs; on CUDA the call is timed with CUDA events after
            ``torch.cuda.synchronize``.
        process: CPU only: measure the process's CPU time (``time.process_time``) instead of
            wall time. On a shared machine with one intra-op thread it ignores the time other
            processes hold the cores, though not their cache and memory-bandwidth pressure.
        now: The host clock to read, in seconds (for tests: a fake clock); overrides
            ``process``.

    Python's garbage collector is paused during the call, so a collection cannot land in it.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        process: bool = False,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.cuda = torch.device(device).type == "cuda" and now is None
        self.now = now or (time.process_time if process else time.perf_counter)

    def time(self, fn: Callable[[], object]) -> float:
        """Seconds that ``fn()`` takes."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._cuda_time(fn) if self.cuda else self._host_time(fn)
        finally:
            if enabled:
                gc.enable()

    def _host_time(self, fn: Callable[[], object]) -> float:
        start = self.now()
        fn()
        return self.now() - start

    @staticmethod
    def _cuda_time(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def rotation(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: ``names`` rotated left by the round's index."""
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


def round_robin(
    fns: Mapping[str, Callable[[], object]],
    clock: Clock,
    *,
    repeats: int,
    warmup: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each callable, timed one call each per round, the order rotating.

    Every callable is first called ``warmup`` times (untimed, in the given order). Then round
    ``r`` calls them in the order :func:`rotation` gives, so over ``len(fns)`` rounds each one
    takes every position once. ``log`` receives one line per round.

    Returns:
        For each name, its ``repeats`` times in seconds, in round order: entry ``r`` of every
        list was measured in the same round, which :func:`paired_ratio` relies on.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for round_index in range(repeats):
        for name in rotation(names, round_index):
            times[name].append(clock.time(fns[name]))
        if log is not None:
            log(
                f"round {round_index + 1}/{repeats}: "
                + ", ".join(f"{name} {times[name][-1]:.3f}s" for name in names)
            )
    return times


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]`` (times of the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def ratios_to(times: Mapping[str, Sequence[float]], baseline: str) -> dict[str, float]:
    """Every callable's :func:`paired_ratio` to ``baseline`` (the baseline's own is 1.0)."""
    return {name: paired_ratio(values, times[baseline]) for name, values in times.items()}


# -- data --------------------------------------------------------------------------------------


def synthetic_batch(
    n: int,
    image_size: int,
    *,
    num_classes: int = 10,
    seed: int = 0,
    split: int = 0,
    learnable: bool = False,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> tuple[Tensor, Tensor]:
    """``n`` seeded images ``[n, 3, S, S]`` in ``[0, 1]`` and their labels.

    With ``learnable=False``, uniform noise and uniform labels, drawn in that order from a
    generator seeded with ``seed * 1000 + split``: for timings, whose values do not matter.

    With ``learnable=True``, a faint class colour layout under nuisances and noise: a class is
    a random 4x4 colour layout blown up to the image size, added with amplitude 0.045 to
    mid-grey; every image adds a random smooth 8x8 field of its own (amplitude 0.1) and pixel
    noise (amplitude 0.2). A ResNet-18 learns the classes in a few epochs and stays undefended
    (it has no reason to be robust), with robust accuracies between 0 and 1 at a few /255:
    what accuracy benchmarks need. The layouts depend only on ``seed``; ``split`` draws the
    samples (labels, nuisances, noise), so splits share one distribution.
    """
    sample_gen = torch.Generator().manual_seed(seed * 1000 + split)
    if learnable:

        def blown_up(low_res: Tensor) -> Tensor:
            return F.interpolate(
                low_res, size=(image_size, image_size), mode="bilinear", align_corners=False
            )

        layout_gen = torch.Generator().manual_seed(seed)
        layouts = blown_up(torch.rand(num_classes, 3, 4, 4, generator=layout_gen) * 2 - 1)
        labels = torch.randint(num_classes, (n,), generator=sample_gen)
        nuisance = blown_up(torch.rand(n, 3, 8, 8, generator=sample_gen) * 2 - 1)
        noise = torch.rand(n, 3, image_size, image_size, generator=sample_gen) * 2 - 1
        images = (0.5 + 0.045 * layouts[labels] + 0.1 * nuisance + 0.2 * noise).clamp(0, 1)
    else:
        images = torch.rand(n, 3, image_size, image_size, generator=sample_gen)
        labels = torch.randint(0, num_classes, (n,), generator=sample_gen)
    images, labels = images.to(device), labels.to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


def digits_32(device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's handwritten digits in ``[0, 1]``, upsampled to 32x32 RGB.

    Real images that a small network learns in a minute on a CPU (1797 8x8 grey digits,
    bilinearly upsampled and repeated over three channels), shuffled with a fixed seed and
    split into 1297 training and 500 test images: ``(train_x, train_y, test_x, test_y)``.
    Needs scikit-learn (the ``bench`` extra).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[order].to(device), labels[order].to(device)
    return images[500:], labels[500:], images[:500], labels[:500]


# -- measuring beyond time ---------------------------------------------------------------------


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


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN restricted to deterministic algorithms, for element-wise comparisons.

    Some cuDNN backward algorithms accumulate in a run-dependent order; without this, two runs
    of the same computation on CUDA could differ in a few ulps, which is not what is compared.
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


# -- the environment record --------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The short commit of the checkout the benchmarks run from, or ``None``."""
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


# Images per second of the calibration workload on the slow reference CPU: a 2-core AMD EPYC
# with AVX2 and no AVX-512, 2 torch threads. A time target set there (the study's 300 s) is
# ``target / factor`` on a CPU whose :func:`cpu_calibration` factor is ``factor``.
CALIBRATION_REFERENCE = {"training": 161.0, "attack": 367.0}


def cpu_calibration(
    *, threads: int = 2, rounds: int = 3, now: Callable[[], float] = time.perf_counter
) -> dict[str, Any]:
    """How fast this CPU runs advkit's work, next to the slow reference CPU.

    Times a ResNet-18 (torchvision, 10 classes) training step and an attack step (forward and
    input-gradient backward, weights frozen) on a batch of 64 images of 32x32 with ``threads``
    torch threads (the thread count is restored after), one warm-up call and the median of
    ``rounds`` calls each. ``factor`` is the smaller of the two speeds relative to
    :data:`CALIBRATION_REFERENCE`: 1.0 is the reference, 2.0 twice as fast. The result is
    cached for the process (every results file of one run shares one measurement). On a
    loaded machine it measures the load too: ``load_average`` says how busy the machine was.
    """
    key = (threads, rounds, now)
    if key not in _CALIBRATIONS:
        _CALIBRATIONS[key] = _calibrate(threads, rounds, now)
    return _CALIBRATIONS[key]


_CALIBRATIONS: dict[tuple[int, int, Callable[[], float]], dict[str, Any]] = {}


def _calibrate(threads: int, rounds: int, now: Callable[[], float]) -> dict[str, Any]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(64, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (64,), generator=generator)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torchvision.models.resnet18(num_classes=10).train()
            frozen = torchvision.models.resnet18(num_classes=10).eval().requires_grad_(False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        probe = images.clone().requires_grad_(True)

        def train_step() -> None:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

        def attack_step() -> None:
            torch.autograd.grad(F.cross_entropy(frozen(probe), labels), probe)

        rates = {}
        for name, step in (("training", train_step), ("attack", attack_step)):
            step()  # warm-up
            seconds = []
            for _ in range(rounds):
                start = now()
                step()
                seconds.append(now() - start)
            rates[name] = 64 / statistics.median(seconds)
    finally:
        torch.set_num_threads(before)
    factor = min(rates[name] / CALIBRATION_REFERENCE[name] for name in rates)
    return {
        "workload": "resnet18 (10 classes), batch 64 at 32x32: one training step, one attack step",
        "threads": threads,
        "rounds": rounds,
        "training_images_per_s": round(rates["training"], 1),
        "attack_images_per_s": round(rates["attack"], 1),
        "reference_images_per_s": dict(CALIBRATION_REFERENCE),
        "factor": round(factor, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }


def environment(
    device: torch.device | str, *, calibrate: bool = True, **extra: Any
) -> dict[str, Any]:
    """The machine and software a benchmark ran on, as one JSON-ready dict.

    Keys: ``date_utc``, ``python``, ``torch``, ``advkit``, ``advkit_commit``, ``platform``,
    ``cpu`` (model name), ``cpu_count``, ``threads`` and ``interop_threads`` (torch's),
    ``cpu_capability`` (the ISA torch's CPU kernels use), ``isa_env`` (the variables of
    :data:`ISA_ENV`, ``None`` where unset), ``device`` and ``device_name`` (the GPU's or the
    CPU's name), ``compute_settings`` (:func:`advkit.evaluation.compute_settings`: torch's
    thread count and determinism switches, which the numbers depend on), ``cpu_calibration``
    (:func:`cpu_calibration`, with the CPU model and thread count it ran with); on CUDA also
    ``gpu``, ``cuda`` and the cuDNN/TF32 settings. ``extra`` adds script-specific entries (e.g.
    a compared library's version). ``calibrate=False`` (the ``--quick`` smoke runs, whose
    numbers mean nothing and which never take a recorded result's name) records
    ``cpu_calibration`` as ``None`` instead of spending seconds, or on a loaded machine minutes,
    on it.
    """
    device = torch.device(device)
    advkit = sys.modules.get("advkit")
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "advkit": getattr(advkit, "__version__", None),
        "advkit_commit": git_commit(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": capability,
        "isa_env": {name: os.environ.get(name) for name in ISA_ENV},
        "device": str(device),
        "device_name": cpu_name(),
        "compute_settings": compute_settings(),
        "cpu_calibration": {"cpu": cpu_name(), **cpu_calibration()} if calibrate else None,
    }
    if device.type == "cuda":
        env["gpu"] = env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        env["cudnn_deterministic"] = torch.backends.cudnn.deterministic
        env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        env["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        conv = getattr(torch.backends.cudnn, "conv", None)  # torch >= 2.9: per-op precision
        env["cudnn_conv_fp32_precision"] = getattr(conv, "fp32_precision", None)
    return {**env, **extra}


# -- outputs -----------------------------------------------------------------------------------


def result_paths(stem: str, *, quick: bool, out_dir: Path | None = None) -> tuple[Path, Path]:
    """``<out_dir>/<stem>.json`` and ``.md``, with ``_quick`` after the stem for quick runs.

    ``out_dir`` defaults to ``benchmarks/results``; the ``_quick`` names are git-ignored there,
    so a smoke run can neither overwrite nor be mistaken for a recorded result.
    """
    folder = RESULTS if out_dir is None else out_dir
    name = f"{stem}_quick" if quick else stem
    return folder / f"{name}.json", folder / f"{name}.md"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text``, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":  # python benchmarks/_harness.py: this CPU next to the reference
    measured = cpu_calibration(rounds=7)
    print(
        f"{cpu_name()}: training step {measured['training_images_per_s']:.0f} img/s, attack "
        f"step {measured['attack_images_per_s']:.0f} img/s with {measured['threads']} threads; "
        f"{measured['factor']:.2f}x the slow reference (a 300 s target there is "
        f"{300 / measured['factor']:.0f} s here); load average {measured['load_average']}"
    )

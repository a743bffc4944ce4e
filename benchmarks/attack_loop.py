"""Benchmark: advkit's batched attack loop against its physical floor and against torchattacks.

Times FGSM, I-FGSM, PGD (no random start) and MI-FGSM on ResNet-18 (``advkit.models.resnet18``,
random weights: speed does not depend on their values) over batch and image sizes. Per case:

- **floor ratio**: attack time / (steps x one forward + one input-gradient backward of the same
  model and batch, written as the plainest loop). The floor is what any gradient attack must pay.
- **vs torchattacks**: advkit time / torchattacks time for the same attack, model, batch and
  settings (the same explicit Python-float ``alpha``), and whether both give the same
  adversarial examples (max abs difference, number of differing elements).

The three callables of a case run round-robin with the shared harness (``_harness.py``: one
call each per round, the order rotating), and each ratio is the median over rounds of the ratio
within a round, so drift in the machine's speed cannot bias it. CUDA times come from CUDA events
after ``torch.cuda.synchronize``. Then an audit of the loop: no parameter gradient, no graph
kept, host synchronizations per call on CUDA, and what frozen parameters save the eager floor.

The opt-in fast paths (autocast, channels-last, ``torch.compile``) and their accuracy effect are
measured by ``attack_fast_paths.py``.

Usage::

    python benchmarks/attack_loop.py --device cpu     # the recorded CPU run (quiet machine)
    python benchmarks/attack_loop.py --device cuda    # the recorded CUDA run
    python benchmarks/attack_loop.py --quick          # smoke run: seconds, numbers meaningless

Writes ``benchmarks/results/attack_loop_<device>.json`` and ``.md`` (``_quick`` added with
``--quick``), or the paths given by ``--json`` and ``--markdown``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
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
    result_paths,
    round_robin,
    synthetic_batch,
    write_json,
    write_text,
)
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, Attack
from advkit.models import resnet18

try:
    import torchattacks
except ImportError:  # optional benchmark dependency: its columns become n/a
    torchattacks = None

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
    steps: int
    repeats: int
    warmup: int
    seed: int = 0
    clock: str = "wall"

    @classmethod
    def for_device(cls, device: str, quick: bool) -> Config:
        if quick:
            return cls(device, True, [(16, 4)], steps=2, repeats=2, warmup=1)
        if device == "cuda":
            cases = [(64, 64), (64, 256), (224, 32), (224, 128)]
            return cls(device, False, cases, steps=10, repeats=10, warmup=3)
        # Sized to finish in a few minutes on 2 cores; 64x64 at batch 64 adds ~10 more.
        return cls(device, False, [(32, 16), (32, 64), (64, 16)], steps=10, repeats=5, warmup=1)


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
        x, y = synthetic_batch(batch, size, num_classes=NUM_CLASSES, seed=cfg.seed, device=device)
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
            progress(f"{spec.name} size={size} batch={batch}")
            times = round_robin(fns, clock, repeats=cfg.repeats, warmup=cfg.warmup)
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


def loop_audit(cfg: Config, device: torch.device, clock: Clock) -> dict[str, Any]:
    """What the loop leaves and costs: parameter gradients, graph, syncs, frozen-parameter floor."""
    size, batch = cfg.cases[0]
    torch.manual_seed(cfg.seed)
    model = resnet18(num_classes=NUM_CLASSES).to(device).eval()
    x, y = synthetic_batch(batch, size, num_classes=NUM_CLASSES, seed=cfg.seed, device=device)
    flags = [p.requires_grad for p in model.parameters()]
    attack = IFGSM(eps=EPS, steps=cfg.steps, alpha=ALPHA)
    adversarial = attack(model, x, y)
    one_step = IFGSM(eps=EPS, steps=1, alpha=ALPHA)

    fns = {
        "floor": floor_loop(model, x, y, cfg.steps),
        "floor_frozen_params": floor_loop(model, x, y, cfg.steps, frozen_params=True),
    }
    times = round_robin(fns, clock, repeats=cfg.repeats, warmup=cfg.warmup)
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


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def header(title: str, payload: dict[str, Any]) -> list[str]:
    """The title and the environment line of a Markdown report of this or the fast-path run."""
    env, cfg = payload["environment"], payload["config"]
    return [
        f"# {title} ({cfg['device']}{', quick' if cfg['quick'] else ''})",
        "",
        f"{env.get('gpu') or env['cpu']}; torch {env['torch']}, "
        + (f"torchattacks {env['torchattacks'] or 'n/a'}, " if "torchattacks" in env else "")
        + f"{env['threads']} threads; {env['date_utc']}; advkit {env['advkit_commit']}.",
    ]


def to_markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    memory = "CUDA max_memory_allocated" if cfg["device"] == "cuda" else "peak RSS growth"
    lines = [
        *header("Attack loop benchmark", payload),
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
            f"| {row['floor_ratio']:.3f} | {fmt(row['vs_torchattacks'], '.3f')} | {same} "
            f"| {mib(row['peak_memory_bytes']['advkit'])} |"
        )
    audit = payload["audit"]
    lines += [
        "",
        "FGSM and I-FGSM must match torchattacks element for element. PGD and MI-FGSM may differ "
        "by float rounding: torchattacks projects as clamp(x0 + clamp(x - x0, -eps, eps), 0, 1), "
        "and x0 + (x - x0) is not always x.",
        "",
        "## Loop audit",
        "",
        f"- parameter .grad written: {audit['parameter_grads_written']}; requires_grad "
        f"restored: {audit['requires_grad_restored']}; output keeps a graph: "
        f"{audit['output_has_graph']}",
        f"- host syncs per call (1 step / {cfg['steps']} steps / run() with "
        f"{cfg['steps']} steps): {fmt(audit['host_syncs_call_1_step'], 'd')} / "
        f"{fmt(audit['host_syncs_call_n_steps'], 'd')} / "
        f"{fmt(audit['host_syncs_run_n_steps'], 'd')}"
        + (" (counted on CUDA only)" if cfg["device"] != "cuda" else ""),
        f"- eager floor with frozen / trainable parameters: "
        f"{audit['eager_floor_frozen_vs_trainable_params']:.3f}",
    ]
    return "\n".join(lines) + "\n"


def progress(message: str) -> None:
    print(f"[{Path(sys.argv[0]).stem}] {message}", file=sys.stderr, flush=True)


# -- command line (shared with attack_fast_paths.py) -------------------------------------------


def parser_with_common_options(description: str) -> argparse.ArgumentParser:
    """The options both attack benchmarks take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds, tiny cases")
    parser.add_argument("--json", type=Path, default=None, help="output JSON path")
    parser.add_argument("--markdown", type=Path, default=None, help="output Markdown path")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="CPU only: 'process' times CPU time (for shared machines, with --threads 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def setup(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[torch.device, Clock]:
    """Check the common options, set threads and cuDNN; the device and the clock to use."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; torch.cuda.is_available() is False")
    if args.device == "cuda" and args.clock == "process":
        parser.error("--clock process is for the CPU; CUDA is timed with CUDA events")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # what a user timing a fixed shape would set
    # Move the objects of the imports out of the collector's sight: collections stay cheap.
    gc.collect()
    gc.freeze()
    return device, Clock(device, process=args.clock == "process")


def output_paths(args: argparse.Namespace, stem: str) -> tuple[Path, Path]:
    """``--json``/``--markdown`` if given, else the harness's ``results/<stem>[_quick]`` paths."""
    json_path, md_path = result_paths(stem, quick=args.quick)
    return args.json or json_path, args.markdown or md_path


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_common_options(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    device, clock = setup(parser, args)
    cfg = Config.for_device(args.device, args.quick)
    cfg.seed, cfg.clock = args.seed, args.clock
    if args.repeats is not None:
        cfg.repeats = args.repeats
    json_path, md_path = output_paths(args, f"attack_loop_{args.device}")
    payload: dict[str, Any] = {
        "benchmark": "attack_loop",
        "complete": False,
        "config": asdict(cfg),
        "environment": environment(
            device,
            calibrate=not args.quick,
            torchattacks=getattr(torchattacks, "__version__", None),
        ),
        "cases": [],
    }

    def save() -> None:
        # After every case, so that a run cut short (a time limit) still leaves what it
        # measured; "complete" tells the two apart.
        write_json(json_path, payload)

    bench_attacks(cfg, device, clock, payload["cases"], save)
    payload["audit"] = loop_audit(cfg, device, clock)
    payload["complete"] = True
    save()
    write_text(md_path, to_markdown(payload))
    progress(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: which filter importance keeps the most robust accuracy when pruning a robust model.

The starting model is the study's demo model: advkit's ResNet-18 (torchvision's topology) at
width 32 (stages of 32/64/128/256 channels, 2.8 M parameters; width 64 is He et al.'s and
trains several times slower on a CPU) on the study's embedded SYNTHETIC demo data
(``advkit.data.SyntheticAnimals10``, 32x32, 3000 images: 2400 training, 600 validation, the
split ``examples/animals10_study.py --preset demo`` uses). It is first trained on clean images,
then adversarially fine-tuned with PGD (Madry et al.: the loss on PGD examples only, eps
8/255). Its weights are cached (``--cache``), so a rerun skips both phases.

From it, 30%, 50% and 70% of the filters of every group of ``layer3`` and ``layer4`` are removed
with four importances (random, L1 norm, adversarial Taylor, learned HYDRA-style scores), each
followed by the same short PGD adversarial fine-tune (the same images, order and random
starts for every importance). Clean and robust accuracy are measured on the same validation
images for every row, with 95% Wilson intervals; robust accuracy is under a reduced-budget
AutoAttack (``advkit.attacks.AutoAttack``, version ``"custom"``: APGD-CE, APGD-T and Square
with fewer steps, targets and queries than the standard version, budgets in the report). The
cost of each importance is its wall time (scoring and planning).

Usage::

    python benchmarks/robust_pruning.py                         # the recorded run
    python benchmarks/robust_pruning.py --quick --out /tmp/rp   # smoke test, seconds

Writes ``robust_pruning.json`` and ``robust_pruning.md`` to ``--out`` (default
``benchmarks/results``; ``robust_pruning_quick.*`` with ``--quick``, so a smoke run never
overwrites the recorded result). The environment record comes from the shared harness; the
phase durations are single wall-clock readings, not comparisons, so they need no round robin.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _harness import environment, result_paths, write_json, write_text
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from advkit.attacks import APGD, APGDT, PGD, AutoAttack, Square
from advkit.data import SyntheticAnimals10
from advkit.evaluation import robust_accuracy
from advkit.models import resnet18
from advkit.pruning import ChannelGroup, count_flops, count_parameters, l1_filter_norm
from advkit.recipes import AdversarialTaylor, FineTune, RobustScoreLearner, iterative_prune
from advkit.training import MixedCE, Trainer

TARGETS = ("backbone.layer3.*", "backbone.layer4.*")
IMPORTANCES = ("random", "L1", "adversarial Taylor", "learned (HYDRA-style)")
CACHE_FORMAT = 1  # bump when the starting model's recipe changes in a way Config does not show


@dataclass(frozen=True)
class Config:
    """Everything that determines the numbers (the starting model's part keys the cache)."""

    demo_images: int  # both splits together
    image_size: int
    width: int
    clean_epochs: int
    clean_lr: float
    at_epochs: int
    at_lr: float
    train_steps: int  # PGD steps of adversarial training and fine-tuning
    finetune_images: int  # the fixed training subset of the fine-tunes and the importances
    finetune_epochs: int
    finetune_lr: float
    score_epochs: int
    taylor_batches: int
    eval_size: int
    aa_steps: int
    aa_targets: int
    aa_queries: int
    ratios: tuple[float, ...]
    eps: float = 8 / 255
    batch_size: int = 64

    def start_key(self, seed: int) -> str:
        """Hash of the settings the starting model depends on."""
        fields = ("demo_images", "image_size", "width", "clean_epochs", "clean_lr")
        fields += ("at_epochs", "at_lr", "train_steps", "eps", "batch_size")
        settings = {name: getattr(self, name) for name in fields}
        text = json.dumps({"format": CACHE_FORMAT, "seed": seed, **settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


FULL = Config(
    demo_images=3000,
    image_size=32,
    width=32,
    clean_epochs=10,
    clean_lr=0.05,
    at_epochs=5,
    at_lr=0.02,
    train_steps=3,
    finetune_images=1200,
    finetune_epochs=1,
    finetune_lr=0.01,
    score_epochs=1,
    taylor_batches=4,
    eval_size=300,
    aa_steps=20,
    aa_targets=2,
    aa_queries=100,
    ratios=(0.3, 0.5, 0.7),
)
QUICK = Config(
    demo_images=100,
    image_size=16,
    width=8,
    clean_epochs=1,
    clean_lr=0.05,
    at_epochs=1,
    at_lr=0.02,
    train_steps=1,
    finetune_images=32,
    finetune_epochs=1,
    finetune_lr=0.01,
    score_epochs=1,
    taylor_batches=1,
    eval_size=16,
    aa_steps=2,
    aa_targets=1,
    aa_queries=5,
    ratios=(0.5,),
    batch_size=16,
)


def log(message: str) -> None:
    """A progress line on stderr (the results go to stdout and the files)."""
    print(f"[robust_pruning {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def random_importance(seed: int):
    """Uniform random scores (seeded by the group's layer names), the baseline."""

    def random_scores(group: ChannelGroup, model: nn.Module) -> Tensor:
        key = sum(ord(ch) for ch in ",".join(group.producers))
        gen = torch.Generator().manual_seed(seed * 100_003 + key)
        return torch.rand(group.channels, generator=gen, dtype=torch.float64)

    return random_scores


def train_attack(cfg: Config) -> PGD:
    """PGD of adversarial training and fine-tuning (step 2.5 eps / steps, random start)."""
    return PGD(eps=cfg.eps, steps=cfg.train_steps, alpha=2.5 * cfg.eps / cfg.train_steps)


def eval_attack(cfg: Config, seed: int) -> AutoAttack:
    """Reduced-budget AutoAttack: APGD-CE, APGD-T, Square, each on what the last left."""
    members = [
        APGD(eps=cfg.eps, steps=cfg.aa_steps),
        APGDT(eps=cfg.eps, steps=cfg.aa_steps, n_target_classes=cfg.aa_targets),
        Square(eps=cfg.eps, n_queries=cfg.aa_queries),
    ]
    # No large-eps sweep: it is a sanity check that changes no count, and it costs time here.
    return AutoAttack(
        eps=cfg.eps, version="custom", attacks=members, seed=seed, check_large_eps=False
    )


def eval_description(cfg: Config) -> str:
    """The evaluation in words, for the report."""
    return (
        f"reduced AutoAttack at eps {round(cfg.eps * 255)}/255: APGD-CE ({cfg.aa_steps} steps), "
        f"APGD-T ({cfg.aa_steps} steps, {cfg.aa_targets} target classes), Square "
        f"({cfg.aa_queries} queries), on {cfg.eval_size} validation images"
    )


def _sgd(lr: float):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def _cosine(epochs: int):
    return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)


class Data:
    """The demo splits and the seeded loaders every phase draws from."""

    def __init__(self, cfg: Config, seed: int) -> None:
        common = {"image_size": cfg.image_size, "num_images": cfg.demo_images, "seed": seed}
        self.train = SyntheticAnimals10("train", progress=False, **common)
        self.val = SyntheticAnimals10("val", progress=False, **common)
        self.cfg, self.seed = cfg, seed
        gen = torch.Generator().manual_seed(seed)
        subset = torch.randperm(len(self.train), generator=gen)[: cfg.finetune_images]
        self.subset = Subset(self.train, sorted(subset.tolist()))
        evaluated = torch.randperm(len(self.val), generator=gen)[: cfg.eval_size]
        self.evaluated = Subset(self.val, sorted(evaluated.tolist()))

    def loader(self, dataset: Any) -> DataLoader:
        """A shuffled loader whose order is the same every time it is built."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        return DataLoader(
            dataset, batch_size=self.cfg.batch_size, shuffle=True, drop_last=True, generator=gen
        )

    def eval_loader(self) -> DataLoader:
        return DataLoader(self.evaluated, batch_size=250)


def _fit(model: nn.Module, loader: DataLoader, epochs: int, lr: float, **options: Any) -> None:
    trainer = Trainer(model, _sgd(lr), scheduler=_cosine(epochs), progress=False, **options)
    trainer.fit(loader, epochs=epochs)


def starting_model(
    cfg: Config, data: Data, seed: int, cache: Path | None
) -> tuple[nn.Module, dict[str, Any]]:
    """Clean training, then PGD adversarial fine-tuning; loaded from ``cache`` if it is there."""
    model = resnet18(num_classes=len(data.train.classes), width=cfg.width)
    path = None if cache is None else cache / f"start-{cfg.start_key(seed)}.pt"
    if path is not None and path.exists():
        stored = torch.load(path, weights_only=True)
        model.load_state_dict(stored["state_dict"])
        info = json.loads(stored["info"])
        return model.eval(), info | {"cached": True, "checkpoint": str(path)}
    log("training the starting model: clean phase")
    torch.manual_seed(seed)
    clean_model = resnet18(num_classes=len(data.train.classes), width=cfg.width)
    tic = time.perf_counter()
    _fit(clean_model, data.loader(data.train), cfg.clean_epochs, cfg.clean_lr)
    clean_seconds = time.perf_counter() - tic
    clean_eval = evaluate(clean_model.eval(), cfg, data, seed)
    clean_eval["evaluation"] = eval_description(cfg)
    model.load_state_dict(clean_model.state_dict())
    log(f"clean phase done in {clean_seconds:.0f} s: clean {_pct(clean_eval['clean'])}; PGD-AT")
    tic = time.perf_counter()
    _fit(
        model,
        data.loader(data.train),
        cfg.at_epochs,
        cfg.at_lr,
        attack=train_attack(cfg),
        adv_weight=1.0,
        eps_warmup_epochs=min(1.0, cfg.at_epochs / 2),
    )
    info = {
        "clean_phase": {"seconds": clean_seconds, **clean_eval},
        "at_seconds": time.perf_counter() - tic,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        torch.save({"state_dict": model.state_dict(), "info": json.dumps(info)}, partial)
        os.replace(partial, path)  # atomic: an interrupted run leaves no half checkpoint
    return model.eval(), info | {"cached": False, "checkpoint": None if path is None else str(path)}


def evaluate(model: nn.Module, cfg: Config, data: Data, seed: int) -> dict[str, Any]:
    """Clean and robust accuracy on the evaluated images, with the seconds it took."""
    tic = time.perf_counter()
    result = robust_accuracy(
        model,
        data.eval_loader(),
        eval_attack(cfg, seed),
        generator=torch.Generator().manual_seed(seed),
        progress=False,
    )
    return {
        "clean": result.clean.to_dict(),
        "robust": result.robust.to_dict(),
        "members": {name: est.correct for name, est in result.members},
        "eval_seconds": time.perf_counter() - tic,
    }


def run(cfg: Config, seed: int, cache: Path | None) -> dict[str, Any]:
    data = Data(cfg, seed)
    example = torch.rand(1, 3, cfg.image_size, cfg.image_size, generator=torch.Generator())
    tic = time.perf_counter()
    model, start = starting_model(cfg, data, seed, cache)
    start_seconds = time.perf_counter() - tic
    log(f"starting model ready ({'cached' if start['cached'] else 'trained'}); evaluating it")
    baseline = {
        "params": count_parameters(model),
        "flops": count_flops(model, example),
        **evaluate(model, cfg, data, seed),
    }

    def finetune(pruned: nn.Module) -> Any:
        torch.manual_seed(seed)  # the same flips and random starts after every importance
        recipe = FineTune(
            data.loader(data.subset),
            epochs=cfg.finetune_epochs,
            optimizer=_sgd(cfg.finetune_lr),
            attack=train_attack(cfg),
            adv_weight=1.0,
        )
        return recipe(pruned)

    importances = {
        "random": random_importance(seed),
        "L1": l1_filter_norm,
        "adversarial Taylor": AdversarialTaylor(
            train_attack(cfg), data.loader(data.subset), batches=cfg.taylor_batches
        ),
        "learned (HYDRA-style)": RobustScoreLearner(
            data.loader(data.subset),
            MixedCE(train_attack(cfg), adv_weight=1.0),
            epochs=cfg.score_epochs,
        ),
    }
    rows = []
    for ratio in cfg.ratios:
        for name, importance in importances.items():
            torch.manual_seed(seed)  # the same attack starts while scoring, for every ratio
            pruned, schedule = iterative_prune(
                model,
                example,
                ratio=ratio,
                targets=list(TARGETS),
                importance=importance,
                steps=1,
                finetune=finetune,
            )
            log(f"{ratio:.0%} {name}: scored in {schedule.seconds['importance']:.1f} s")
            rows.append(
                {
                    "ratio": ratio,
                    "importance": name,
                    "params": schedule.params_after,
                    "flops": schedule.flops_after,
                    "widths": schedule.final_widths,
                    "importance_seconds": schedule.seconds["importance"],
                    "finetune_seconds": schedule.seconds["finetune"],
                    **evaluate(pruned.eval(), cfg, data, seed),
                }
            )
    return {
        "start": start | {"seconds": start_seconds},
        "baseline": baseline,
        "rows": rows,
        "data": data.val.description,
        "train_images": len(data.train),
        "finetune_images": len(data.subset),
        "attack": repr(eval_attack(cfg, seed)),
    }


def _pct(entry: dict[str, Any]) -> str:
    return f"{100 * entry['value']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per ratio: the importance with the most robust accuracy, and whether that is measurable.

    A lead counts only where the leader's 95% Wilson interval lies above the runner's-up.
    """
    lines = []
    for ratio in sorted({row["ratio"] for row in rows}):
        at = sorted((r for r in rows if r["ratio"] == ratio), key=lambda r: -r["robust"]["correct"])
        best = at[0]
        ahead = [r for r in at[1:] if r["robust"]["high"] < best["robust"]["low"]]
        tied = [r["importance"] for r in at[1:] if r not in ahead]
        head = f"{ratio:.0%}: {best['importance']} keeps the most ({_pct(best['robust'])})"
        if not ahead:
            lines.append(
                f"{head}, but every interval overlaps it: no measurable difference between "
                "the importances."
            )
        elif not tied:
            lines.append(f"{head}, measurably more than every other importance.")
        else:
            lines.append(
                f"{head}: measurably more than {', '.join(r['importance'] for r in ahead)}; "
                f"no measurable difference from {', '.join(tied)}."
            )
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    res, cfg = report["results"], report["config"]
    base, start = res["baseline"], res["start"]
    lines = []
    if cfg["quick"]:
        lines += ["**Quick mode: a smoke test with a tiny configuration, not a measurement.**", ""]
    clean = start["clean_phase"]
    lines += [
        "| ratio | importance | params | FLOPs | clean acc. (%) | robust acc. (%) | "
        "importance cost (s) |",
        "|---|---|---:|---:|---|---|---:|",
        f"| 0 | start: clean + PGD-AT | {base['params']:,} | {base['flops']:,} | "
        f"{_pct(base['clean'])} | {_pct(base['robust'])} | - |",
    ]
    for row in res["rows"]:
        lines.append(
            f"| {row['ratio']:.0%} | {row['importance']} | {row['params']:,} | "
            f"{row['flops']:,} | {_pct(row['clean'])} | {_pct(row['robust'])} | "
            f"{row['importance_seconds']:.1f} |"
        )
    env = report["environment"]
    eps = round(cfg["eps"] * 255)
    trained = (
        f"loaded from the cache ({start['checkpoint']})"
        if start["cached"]
        else f"trained in {start['seconds']:.0f} s"
    )
    lines += [
        "",
        "Which importance keeps the most robust accuracy (95% Wilson intervals):",
        "",
        *(f"- {line}" for line in verdicts(res["rows"])),
        "",
        f"Before PGD-AT the clean-trained model had clean accuracy {_pct(clean['clean'])} "
        f"and robust accuracy {_pct(clean['robust'])} ({clean['evaluation']}).",
        "",
        f"Data: {res['data']} ({res['train_images']} training images; the fine-tunes and "
        f"importances use a fixed subset of {res['finetune_images']}). Clean and robust accuracy "
        f"on the same {base['clean']['total']} validation images in every row. Robust accuracy "
        f"under a reduced AutoAttack at eps {eps}/255: APGD-CE ({cfg['aa_steps']} steps), "
        f"APGD-T ({cfg['aa_steps']} steps, {cfg['aa_targets']} target classes), Square "
        f"({cfg['aa_queries']} queries), without the large-eps sanity sweep. Starting model {trained}; one evaluation of it "
        f"{base['eval_seconds']:.0f} s; total {report['total_seconds']:.0f} s "
        f"({report['total_cpu_seconds']:.0f} s of CPU time) on "
        f"{env['cpu']} with {env['threads']} threads, torch {env['torch']}, "
        f"{env['date_utc']}.",
    ]
    return "\n".join(lines) + "\n"


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "advkit-bench-cache" / "robust_pruning"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test configuration")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"folder of the starting model's checkpoint (default {default_cache()}; "
        "none with --quick)",
    )
    parser.add_argument("--no-cache", action="store_true", help="always train the start model")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (2; 1 with --quick)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # One thread in quick mode: on a shared machine two threads of tiny ops mostly wait.
    torch.set_num_threads(args.threads or (1 if args.quick else 2))
    cfg = QUICK if args.quick else FULL
    cache = args.cache or (None if args.quick else default_cache())
    tic, cpu = time.perf_counter(), time.process_time()
    results = run(cfg, args.seed, None if args.no_cache else cache)
    report = {
        "config": dataclasses.asdict(cfg) | {"ratios": list(cfg.ratios), "quick": args.quick},
        "seed": args.seed,
        "results": results,
        "total_seconds": time.perf_counter() - tic,
        "total_cpu_seconds": time.process_time() - cpu,
        "environment": environment("cpu"),
    }
    json_path, md_path = result_paths("robust_pruning", quick=args.quick, out_dir=args.out)
    write_json(json_path, report)
    markdown = to_markdown(report)
    write_text(md_path, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

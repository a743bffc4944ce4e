"""The study's settings: one frozen dataclass, three presets, and the command line built from it.

Every field is a command-line option (``image_size`` -> ``--image-size``) whose help text is the
field's ``help`` metadata, so ``--help`` documents every setting and nothing can be set in one
place but not the other. Radii (``*_eps``) are given in units of 1/255 of the pixel range,
the way the study states them; attacks get them divided by 255, in pixel space.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from advkit.attacks.autoattack import BLACK_BOX_RULES

__all__ = ["PRESETS", "StudyConfig", "build_parser", "config_from_args"]

DEFAULT_OUT = "results/animals10-study"

ROBUST_EVALUATIONS = ("autoattack", "worst-case")
"""The values of ``--robust-eval`` (``study.robust`` builds the attack of each)."""


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class StudyConfig:
    """Everything that determines the study's numbers (and where they are written)."""

    # -- data -----------------------------------------------------------------------------------
    data: str | None = _opt(
        None,
        "Animals-10 raw-img/ folder (Kaggle download); empty for the embedded SYNTHETIC demo data",
    )
    image_size: int = _opt(32, "side of the square input images")
    demo_images: int = _opt(3000, "images in the synthetic demo set, both splits together")
    val_fraction: float = _opt(0.2, "share of each class held out for validation")
    seed: int = _opt(0, "seed of the split, the initialization, the shuffling and the attacks")
    num_workers: int = _opt(0, "data-loader worker processes")
    # -- model and optimizer --------------------------------------------------------------------
    weights: str = _opt(
        "none",
        "ResNet-18 initialization: 'none' (random), 'imagenet' (torchvision download) or the "
        "path of a torchvision ResNet-18 state dict (.pth)",
    )
    width: int = _opt(
        32,
        "ResNet-18 width: channels of its first stage (64 is He et al.'s ResNet-18 and the only "
        "width ImageNet weights fit; 32 trains and is attacked about five times faster on a CPU)",
    )
    device: str = _opt("auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    threads: int = _opt(0, "CPU threads of torch; 0 keeps torch's default (one per core)")
    batch_size: int = _opt(32, "training batch size")
    lr: float = _opt(
        0.01, "SGD learning rate of every training stage (constant but for --settle-factor)"
    )
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "SGD weight decay")
    # -- experiment 1: baselines ----------------------------------------------------------------
    short_epochs: int = _opt(6, "epochs of the short baseline")
    long_epochs: int = _opt(10, "epochs of the long baseline")
    settle_factor: float = _opt(
        0.1,
        "the baselines' learning rate is multiplied by this in the last epoch of each (1: "
        "constant), so that each ends on settled weights",
    )
    # -- experiment 3: pruning ------------------------------------------------------------------
    prune_ratios: tuple[float, ...] = _opt(
        (0.2, 0.4), "fractions of the target filters removed by L1 norm"
    )
    prune_targets: str = _opt(
        "backbone.layer4.*.conv1", "module-name pattern of the pruned layers (fnmatch)"
    )
    prune_epochs: int = _opt(1, "fine-tuning epochs after pruning")
    # -- experiment 4: the study's adversarial fine-tuning -------------------------------------
    adv_base_ratio: float = _opt(
        0.4, "which pruned model (by ratio) is adversarially fine-tuned; one of --prune-ratios"
    )
    adv_epochs: int = _opt(
        1, "epochs of each of the study's adversarial fine-tuning runs (the study does not say)"
    )
    adv_images: int = _opt(
        1200,
        "training images of every adversarial fine-tuning run (the study's and the field's "
        "recipes alike): a fixed random subset; 0 takes them all",
    )
    light_eps: float = _opt(4.0, "light adversarial fine-tuning: I-FGSM eps, in 1/255")
    light_steps: int = _opt(3, "light adversarial fine-tuning: I-FGSM iterations")
    light_lam: float = _opt(
        0.5, "light adversarial fine-tuning: weight lam of the adversarial loss"
    )
    strong_eps: float = _opt(8.0, "strong adversarial fine-tuning: I-FGSM eps, in 1/255")
    strong_steps: int = _opt(5, "strong adversarial fine-tuning: I-FGSM iterations")
    strong_lam: float = _opt(
        0.9, "strong adversarial fine-tuning: weight lam of the adversarial loss"
    )
    # -- experiment 5: the field's defenses (PGD-AT, TRADES, MART, fast AT) -------------------
    recipe_eps: float = _opt(8.0, "PGD-AT, TRADES, MART and fast AT: eps, in 1/255 (pixel space)")
    recipe_steps: int = _opt(
        3, "PGD-AT, TRADES and MART: inner iterations (fast AT: its guard's PGD iterations)"
    )
    recipe_lam: float = _opt(1.0, "PGD-AT: lam (1.0: Madry et al.)")
    recipe_epochs: int = _opt(1, "PGD-AT, TRADES, MART and fast AT: epochs")
    recipe_warmup_epochs: float = _opt(
        0.3, "PGD-AT, TRADES, MART and fast AT: epochs over which eps ramps up from 0"
    )
    trades_beta: float = _opt(6.0, "TRADES: weight beta of the KL term (the paper's 6)")
    mart_beta: float = _opt(6.0, "MART: weight beta of the KL term (the paper's 6)")
    # -- robust pruning of the best defense --------------------------------------------------
    robust_prune_epochs: int = _opt(
        1, "robust pruning: epochs of fine-tuning with the pruned defense's own recipe"
    )
    taylor_batches: int = _opt(4, "robust pruning: batches the adversarial Taylor scores average")
    # -- evaluation -----------------------------------------------------------------------------
    eval_size: int = _opt(
        200, "validation images attacked in every evaluation (clean accuracy uses all)"
    )
    eval_batch: int = _opt(200, "batch size of the evaluations")
    attack_batch: int = _opt(
        800, "largest batch of one attack call (a grid attacks all eps values at once)"
    )
    grid_eps: tuple[float, ...] = _opt((2.0, 4.0, 8.0), "I-FGSM grid: eps values, in 1/255")
    grid_steps: tuple[int, ...] = _opt((1, 3, 5), "I-FGSM grid: iteration counts")
    attack_eps: tuple[float, ...] = _opt(
        (8.0,), "eps values of the robust accuracy (the strongest evaluation), in 1/255"
    )
    robust_eval: str = _opt(
        "autoattack",
        "the strongest evaluation behind every robust accuracy: 'autoattack' (AutoAttack, "
        "version --aa-version, with its gradient-masking checks) or 'worst-case' (per sample, "
        "the worst of I-FGSM, PGD and MI-FGSM)",
    )
    aa_version: str = _opt(
        "reduced",
        "AutoAttack: 'standard' (APGD-CE, APGD-T, FAB-T, Square as Croce and Hein 2020) or "
        "'reduced' (APGD-CE and APGD-T with --aa-steps steps and --aa-targets target "
        "classes, then Square with --aa-queries queries: the same kinds of attack, fewer "
        "iterations, for a CPU)",
    )
    aa_steps: int = _opt(15, "reduced AutoAttack: APGD-CE and APGD-T steps")
    aa_targets: int = _opt(2, "reduced AutoAttack: APGD-T target classes")
    aa_queries: int = _opt(100, "reduced AutoAttack: Square queries")
    aa_black_box: str = _opt(
        "when_masked",
        "reduced AutoAttack: when Square runs: 'when_masked' (only if a gradient-masking check "
        "failed or APGD-CE's loss looked flat, AutoAttack's black_box rule of its fast "
        "version) or 'always' (on every sample the APGD members left, the reference's rule)",
    )
    pgd_steps: int = _opt(10, "worst case: PGD iterations (random start, step 2.5 eps/steps)")
    mifgsm_steps: int = _opt(10, "worst case: MI-FGSM iterations (decay 1.0)")
    transfer_eps: float = _opt(8.0, "transfer matrix: eps of the MI-FGSM crafted on each model")
    transfer_steps: int = _opt(5, "transfer matrix: MI-FGSM iterations")
    transfer_size: int = _opt(100, "transfer matrix: validation images")
    example_images: int = _opt(6, "images in the grid of adversarial examples")
    # -- output ---------------------------------------------------------------------------------
    out: str = _opt(DEFAULT_OUT, "results folder (stages are cached there; rerun to resume)")
    progress: bool = _opt(True, "show progress bars")
    dpi: int = _opt(100, "resolution of the PNG plots")

    @property
    def synthetic(self) -> bool:
        """Whether the run uses the embedded synthetic demo data."""
        return self.data is None

    def validate(self) -> StudyConfig:
        """Check the values that argparse cannot; return ``self``.

        Raises:
            ValueError: Naming the setting, what it must be and what it is.
        """
        positive = (
            "image_size", "demo_images", "batch_size", "width", "short_epochs", "long_epochs",
            "prune_epochs", "adv_epochs", "light_steps", "strong_steps", "recipe_steps",
            "recipe_epochs", "eval_size", "eval_batch", "attack_batch", "pgd_steps", "mifgsm_steps",
            "transfer_steps", "transfer_size", "example_images", "dpi", "aa_steps", "aa_targets",
            "aa_queries", "robust_prune_epochs", "taylor_batches",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.long_epochs < self.short_epochs:
            raise ValueError(
                f"--long-epochs ({self.long_epochs}) must be >= --short-epochs "
                f"({self.short_epochs}): the long baseline continues the short one"
            )
        if not self.prune_ratios or not all(0 < r < 1 for r in self.prune_ratios):
            raise ValueError(f"--prune-ratios must be in (0, 1), got {list(self.prune_ratios)}")
        if len({round(100 * r) for r in self.prune_ratios}) != len(self.prune_ratios):
            raise ValueError(
                "--prune-ratios must differ in whole percents (they name the models), got "
                f"{list(self.prune_ratios)}"
            )
        if self.adv_base_ratio not in self.prune_ratios:
            raise ValueError(
                f"--adv-base-ratio must be one of --prune-ratios {list(self.prune_ratios)}, "
                f"got {self.adv_base_ratio}"
            )
        if self.robust_eval not in ROBUST_EVALUATIONS:
            raise ValueError(
                f"--robust-eval must be one of {list(ROBUST_EVALUATIONS)}, got {self.robust_eval!r}"
            )
        if self.aa_version not in ("standard", "reduced"):
            raise ValueError(
                f"--aa-version must be 'standard' or 'reduced', got {self.aa_version!r}"
            )
        if self.aa_black_box not in BLACK_BOX_RULES:
            raise ValueError(
                f"--aa-black-box must be one of {list(BLACK_BOX_RULES)}, got {self.aa_black_box!r}"
            )
        for name in ("light_lam", "strong_lam", "recipe_lam", "val_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{_flag(name)} must be in [0, 1], got {getattr(self, name)}")
        for name in (
            "lr", "momentum", "weight_decay", "recipe_warmup_epochs", "threads", "trades_beta",
            "mart_beta", "adv_images", "settle_factor",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("light_eps", "strong_eps", "recipe_eps", "transfer_eps"):
            if not 0 < getattr(self, name) <= 255:
                raise ValueError(
                    f"--{_flag(name)} must be in (0, 255] (units of 1/255), got "
                    f"{getattr(self, name)}"
                )
        for name in ("grid_eps", "attack_eps"):
            values = getattr(self, name)
            if not values or not all(0 < v <= 255 for v in values):
                raise ValueError(
                    f"--{_flag(name)} must list values in (0, 255] (units of 1/255), got "
                    f"{list(values)}"
                )
        if not self.grid_steps or min(self.grid_steps) < 1:
            raise ValueError(f"--grid-steps must list values >= 1, got {list(self.grid_steps)}")
        for name in ("light_eps", "strong_eps"):
            if getattr(self, name) not in self.grid_eps:
                raise ValueError(
                    f"--grid-eps {list(self.grid_eps)} must include --{_flag(name)} "
                    f"({getattr(self, name)}): the report compares at the training radii"
                )
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # Minutes on a 2-core CPU: the study's structure at 32x32 on the synthetic demo data, with a
    # ResNet-18 of width 32 (five times cheaper than 64 on a CPU), batches of 32 and lr 0.01
    # (a net trained from scratch needs steps), adversarial fine-tuning on 1200 images per run
    # and a reduced AutoAttack.
    "demo": {},
    # The study's settings (STUDY.md). SGD with lr 0.001 and momentum 0.9 are the values of the
    # PyTorch transfer-learning tutorial, the study's likely source (it states neither);
    # the study gives no epoch count for adversarial fine-tuning, so it gets the pruning's 6.
    "paper": {
        "image_size": 224,
        "num_workers": 8,
        "weights": "imagenet",
        "width": 64,
        "batch_size": 64,
        "lr": 0.001,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "settle_factor": 1.0,
        "adv_images": 0,
        "attack_eps": (4.0, 8.0),
        "demo_images": 4000,
        "short_epochs": 4,
        "long_epochs": 20,
        "prune_epochs": 6,
        "adv_epochs": 6,
        "recipe_steps": 10,
        "recipe_epochs": 6,
        "recipe_warmup_epochs": 1.0,
        "robust_prune_epochs": 6,
        "taylor_batches": 16,
        "eval_size": 1000,
        "eval_batch": 250,
        "attack_batch": 500,
        "grid_eps": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
        "grid_steps": (1, 3, 5, 10, 20),
        "aa_version": "standard",
        "pgd_steps": 50,
        "mifgsm_steps": 20,
        "transfer_steps": 10,
        "transfer_size": 1000,
        "example_images": 8,
    },
    # Seconds: for tests of the pipeline, not for results.
    "tiny": {
        "image_size": 16,
        "width": 16,
        "demo_images": 80,
        "batch_size": 16,
        "short_epochs": 1,
        "long_epochs": 2,
        "prune_epochs": 1,
        "adv_epochs": 1,
        "recipe_steps": 2,
        "recipe_epochs": 1,
        "recipe_warmup_epochs": 0.0,
        "eval_size": 16,
        "eval_batch": 16,
        "attack_batch": 64,
        "grid_eps": (4.0, 8.0),
        "grid_steps": (1, 2),
        "attack_eps": (8.0,),
        "taylor_batches": 1,
        "aa_steps": 3,
        "aa_targets": 2,
        "aa_queries": 10,
        "pgd_steps": 2,
        "mifgsm_steps": 2,
        "transfer_steps": 1,
        "transfer_size": 8,
        "example_images": 2,
        "dpi": 40,
    },
}


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _comma_list(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            ) from None

    return parse


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(StudyConfig)


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--preset`` plus one option per :class:`StudyConfig` field."""
    parser = argparse.ArgumentParser(
        prog="animals10_study.py",
        description=(
            "The ResNet-18 / Animals-10 adversarial robustness study, end to end, with "
            "advkit. Without arguments it runs on the embedded SYNTHETIC demo data in a small "
            "configuration (minutes on a CPU). With --data PATH/raw-img it runs the 'paper' "
            "preset: the study's exact settings (use --weights imagenet --device cuda). "
            "Every setting below overrides the preset's value; brackets give the values of the "
            "demo and paper presets."
        ),
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="starting values: 'demo' (the default without --data), 'paper' (the default with "
        "--data: 224x224, batch 64, 4/20 epochs, ...), 'tiny' (seconds; for tests)",
    )
    types_ = _field_types()
    demo, paper = StudyConfig(), dataclasses.replace(StudyConfig(), **PRESETS["paper"])
    for item in fields(StudyConfig):
        kind = types_[item.name]
        option = f"--{_flag(item.name)}"
        shown = [_shown(getattr(c, item.name)) for c in (demo, paper)]
        values = f"demo: {shown[0]}; paper: {shown[1]}" if shown[0] != shown[1] else shown[0]
        help_text = f"{item.metadata['help']} [{values}]"
        if kind is bool:
            parser.add_argument(
                option, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        if typing.get_origin(kind) is tuple:
            parse = _comma_list(typing.get_args(kind)[0])
        elif isinstance(kind, types.UnionType):  # str | None
            parse = str
        else:
            parse = kind
        parser.add_argument(
            option, type=parse, default=None, metavar=item.name.upper(), help=help_text
        )
    return parser


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """The preset's values with every option given on the command line applied on top."""
    preset = args.preset or ("paper" if args.data else "demo")
    values = dict(PRESETS[preset])
    for item in fields(StudyConfig):
        given = getattr(args, item.name)
        if given is not None:
            values[item.name] = given
    if values.get("data") == "":
        values["data"] = None
    return dataclasses.replace(StudyConfig(), **values).validate()

"""The study script end to end on its tiny preset: outputs, numbers, findings, and resuming."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from advkit.data import CLASSES, SyntheticAnimals10
from advkit.models import resnet18
from advkit.pruning import count_parameters, load_pruned

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "animals10_study.py"
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(ROOT / "tests" / "data"))

from animals10_tree import make_tree, snapshot  # noqa: E402
from study.cli import main  # noqa: E402
from study.config import PRESETS, StudyConfig, build_parser, config_from_args  # noqa: E402
from study.report import render_report  # noqa: E402
from study.robust import robust_attack, robust_description  # noqa: E402

TINY = ["--preset", "tiny", "--no-progress", "--threads", "1"]
SECTIONS = {
    "title", "data", "settings", "study_reference", "models", "baselines", "ifgsm", "robust",
    "pruning",
    "adversarial_finetuning", "beyond_the_study", "sanity_checks", "environment", "plots",
    "stages",
}  # fmt: skip
STUDY_MODELS = ["base_short", "base_long", "prune20", "prune40", "adv_light", "adv_strong"]
DEFENSES = ["adv_light", "adv_strong", "adv_pgd", "adv_trades", "adv_mart", "adv_fast"]
ROBUST_PRUNED = ["rp_l1_20", "rp_taylor_20", "rp_l1_40", "rp_taylor_40"]
MODELS = [*STUDY_MODELS, "adv_pgd", "adv_trades", "adv_mart", "adv_fast", *ROBUST_PRUNED]
TRANSFER = [*STUDY_MODELS, "adv_pgd"]
PLOTS = ["accuracy_vs_eps", "accuracy_vs_steps", "tradeoff", "transfer_matrix", "examples"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """One run of the script, as a user starts it, on the tiny preset: folder, results, stdout."""
    out = tmp_path_factory.mktemp("study")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    return out, results, completed.stdout


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process runs set torch's thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _statuses(out: Path) -> dict[str, str]:
    stages = json.loads((out / "results.json").read_text())["stages"]
    return {k: v["status"] for k, v in stages.items() if isinstance(v, dict) and "key" in v}


def test_every_output_exists_and_every_section_is_filled(
    tiny_run: tuple[Path, dict[str, Any], str],
) -> None:
    out, results, stdout = tiny_run
    assert stdout.strip().splitlines()[-1] == f"Report written to {out / 'report.md'}"
    assert set(results) == SECTIONS
    assert list(results["models"]) == MODELS
    assert list(results["ifgsm"]) == STUDY_MODELS  # the study's own experiment
    assert list(results["robust"]) == MODELS  # the strongest evaluation, on every model
    for name in MODELS:
        assert [r["eps"] * 255 for r in results["robust"][name]] == pytest.approx(
            results["settings"]["attack_eps"]
        )
    assert set(results["beyond_the_study"]) == {
        "transfer", "defenses", "robust_pruning", "examples",
    }  # fmt: skip
    # Robust pruning: the best defense by robust accuracy, pruned by both importances.
    pruned = results["beyond_the_study"]["robust_pruning"]
    assert list(pruned) == ROBUST_PRUNED
    best = max(
        DEFENSES, key=lambda n: results["robust"][n][-1]["robust"]["correct"]
    )  # the first of the most robust
    for name, item in pruned.items():
        assert item["base"] == best
        assert (item["importance"], round(100 * item["ratio"])) == (
            name.split("_")[1], int(name.split("_")[2]),
        )  # fmt: skip
        # The defenses start from a pruned model: the ratio applies to what that one kept.
        start = f"prune{round(100 * results['settings']['adv_base_ratio'])}"
        filters = set(results["pruning"][start]["kept_filters"].values()).pop()
        assert set(item["kept_filters"].values()) == {filters - round(item["ratio"] * filters)}
    assert list(results["beyond_the_study"]["defenses"]) == DEFENSES
    # Robust accuracy is AutoAttack's (reduced on the CPU presets): its members and its
    # gradient-masking checks are in every result and in the report.
    for name in MODELS:
        for item in results["robust"][name]:
            assert item["attack"].startswith("AutoAttack(")
            if item["clean"]["correct"]:
                assert [m["name"] for m in item["members"]] == ["apgd-ce", "apgd-t", "square"]
                checks = {c["name"] for c in item["checks"]}
                assert checks >= {"logits", "zero_gradients", "black_box", "large_eps"}
    assert results["beyond_the_study"]["transfer"]["names"] == TRANSFER
    assert list(results["baselines"]) == ["base_short", "base_long"]
    assert list(results["pruning"]) == ["prune20", "prune40"]
    assert list(results["adversarial_finetuning"]) == ["adv_light", "adv_strong"]
    assert results["plots"] == {kind: f"{kind}.png" for kind in PLOTS}
    for kind in PLOTS:
        assert (out / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for heading in ("## 1. Baselines", "## 2. I-FGSM", "## 3. Structured pruning",
                    "## 4. Adversarial fine-tuning", "## 5. Beyond the study",
                    "### 5.1 The strongest evaluation", "### 5.2 Black-box transfer",
                    "### 5.3 Defenses", "### 5.4 Robust pruning",
                    "## 6. Sanity checks"):  # fmt: skip
        assert heading in report
    assert report.count("**Finding.**") == 8
    assert "| model | logits | zero_gradients | randomized | black_box | large_eps |" in report
    assert "AutoAttack, reduced for a CPU" in report
    for kind in PLOTS:
        assert f"({kind}.png)" in report
    # Synthetic data says so, in the report, the data summary and every plot title.
    assert results["data"]["synthetic"] is True
    assert "**SYNTHETIC DEMO DATA.**" in report
    assert results["data"]["description"].startswith("SYNTHETIC")
    # Every check of every evaluation is gathered, and the report says how they went.
    sanity = results["sanity_checks"]
    assert set(sanity) == {
        "zero_eps", "by_model", "transfer", "white_box_vs_transfer", "applicable", "failures",
        "all_passed",
    }  # fmt: skip
    assert list(sanity["by_model"]) == MODELS
    assert [c["target"] for c in sanity["white_box_vs_transfer"]] == [
        results["models"][name]["label"] for name in TRANSFER
    ]
    for name in MODELS:  # the grid's checks on the study's models, the others' on all
        kinds = ["robust accuracy", "eps = 0"]
        assert list(sanity["by_model"][name]) == (
            ["I-FGSM grid", *kinds] if name in STUDY_MODELS else kinds
        )
    assert sanity["all_passed"] is (not sanity["failures"])
    if sanity["all_passed"]:
        assert f"All {sanity['applicable']} applicable sanity checks passed" in report
    else:
        assert f"{len(sanity['failures'])} of {sanity['applicable']} applicable" in report
    assert set(results["environment"]["packages"]) >= {"advkit", "torch", "torchvision"}
    # The thread count and determinism switches the numbers depend on, in file and report.
    settings = results["environment"]["compute_settings"]
    assert settings["torch_threads"] == 1 and settings["deterministic_algorithms"] is False
    assert "**Compute settings:** `torch_threads=1`" in report
    # Every stage ran in this first run, and every one is in the report's timing table.
    assert set(_statuses(out).values()) == {"computed"}
    for stage in _statuses(out):
        assert f"| {stage} | computed |" in report


def test_numbers_agree_with_the_settings_and_an_independent_check(
    tiny_run: tuple[Path, dict[str, Any], str],
) -> None:
    out, results, _ = tiny_run
    settings = results["settings"]
    assert settings == {
        **{k: v for k, v in settings.items() if k not in PRESETS["tiny"]},
        **{k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS["tiny"].items()},
    }
    # Pruning: 20% and 40% of layer4's conv1 filters (8 x width) go, and the model shrinks.
    filters = 8 * settings["width"]
    full = resnet18(num_classes=10, width=settings["width"])
    for name, ratio in (("prune20", 0.2), ("prune40", 0.4)):
        item = results["pruning"][name]
        kept = filters - round(ratio * filters)
        assert item["kept_filters"] == {
            "backbone.layer4.0.conv1": kept,
            "backbone.layer4.1.conv1": kept,
        }
        assert item["params_after"] < item["params_before"] == count_parameters(full)
        assert item["flops_after"] < item["flops_before"] and item["flops_check"] is True
    # The long baseline continues the short one: its first epochs are the short one's.
    short = results["baselines"]["base_short"]["history"]
    long = results["baselines"]["base_long"]["history"]
    assert len(short) == settings["short_epochs"] and len(long) == settings["long_epochs"]
    assert long[: len(short)] == short
    # Each grid has one row per iteration count and one column per eps.
    for name in STUDY_MODELS:
        grid = results["ifgsm"][name]
        assert grid["steps"] == settings["grid_steps"]
        assert grid["eps"] == pytest.approx([e / 255 for e in settings["grid_eps"]])
        assert all(
            cell["correct"] <= grid["clean"]["correct"] for row in grid["robust"] for cell in row
        )
    # Clean accuracy, recomputed here from the stored model and a fresh copy of the data.
    val = SyntheticAnimals10(
        "val",
        image_size=settings["image_size"],
        num_images=settings["demo_images"],
        seed=settings["seed"],
        progress=False,
    )
    model = load_pruned(out / "stages" / "base_long" / "model.pt", full)
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(x).argmax(1) == y).sum()) for x, y in DataLoader(val, batch_size=50)
        )
    clean = results["baselines"]["base_long"]["clean"]
    assert (clean["correct"], clean["total"]) == (correct, len(val))


def test_rerun_recomputes_only_what_was_deleted_or_changed(
    tiny_run: tuple[Path, dict[str, Any], str], one_thread: None
) -> None:
    out, first, _ = tiny_run
    shutil.rmtree(out / "stages" / "eval_prune20")
    assert main([*TINY, "--out", str(out)]) == 0
    statuses = _statuses(out)
    assert statuses.pop("eval_prune20") == "computed"
    assert set(statuses.values()) == {"cached"}
    again = json.loads((out / "results.json").read_text())
    for name, status in _statuses(out).items():  # cached stages keep what they cost to compute
        record, first_record = again["stages"][name], first["stages"][name]
        if status == "cached":
            assert record["computed_seconds"] == first_record["seconds"]
    assert again["ifgsm"]["prune20"] == first["ifgsm"]["prune20"]
    assert again["robust"]["prune20"] == first["robust"]["prune20"]

    # A changed setting recomputes its stage and everything built on it, nothing else.
    assert main([*TINY, "--out", str(out), "--recipe-epochs", "2"]) == 0
    computed = {name for name, status in _statuses(out).items() if status == "computed"}
    recomputed = ["adv_pgd", "adv_trades", "adv_mart", "adv_fast"]
    expected = {*recomputed, *(f"eval_{name}" for name in recomputed), "transfer", "examples"}
    # The robust pruning builds on the best defense: recomputed if that is a changed one.
    bases = {
        next(iter(run["beyond_the_study"]["robust_pruning"].values()))["base"]
        for run in (first, json.loads((out / "results.json").read_text()))
    }
    if bases & set(recomputed):
        expected |= {*ROBUST_PRUNED, *(f"eval_{name}" for name in ROBUST_PRUNED)}
    assert computed == expected
    changed = json.loads((out / "results.json").read_text())
    for name in recomputed:
        assert len(changed["beyond_the_study"]["defenses"][name]["history"]) == 2
    assert changed["ifgsm"]["base_long"] == first["ifgsm"]["base_long"]


# A one-step attack on a barely trained model may fool an image at a small eps but not a larger
# one; the study's report lists such sanity failures, the test need not see them as warnings.
@pytest.mark.filterwarnings("ignore::advkit.evaluation.SanityWarning")
def test_it_runs_on_an_animals10_folder_without_writing_into_it(
    tmp_path: Path, one_thread: None
) -> None:
    root = tmp_path / "raw-img"
    make_tree(root, per_class=6)  # every image mode and extension of the Kaggle download
    before = snapshot(root)
    out = tmp_path / "out"
    assert main([*TINY, "--data", str(root), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["synthetic"] is False
    assert results["data"]["classes"] == list(CLASSES)
    assert (results["data"]["train_images"], results["data"]["val_images"]) == (50, 10)
    assert results["data"]["description"].startswith("Animals-10 (Kaggle, real photographs)")
    assert "SYNTHETIC" not in (out / "report.md").read_text()
    assert snapshot(root) == before


def _set_robust(results: dict[str, Any], name: str, fraction: float) -> None:
    """Make model ``name`` classify every attacked image and keep ``fraction`` of them robust."""
    for item in results["robust"][name]:
        total = item["clean"]["total"]
        item["clean"]["correct"] = total
        item["robust"]["correct"] = round(fraction * total)
        # AutoAttack's members fall to the robust count (a result file must not contradict it)
        for member in item.get("members", []):
            member["robust"]["correct"] = item["robust"]["correct"]


def test_findings_follow_the_numbers(tiny_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = tiny_run
    edited = copy.deepcopy(results)
    settings = edited["settings"]
    top = len(settings["grid_steps"]) - 1
    # Make the adversarially fine-tuned models clearly robust and the baselines clearly not.
    for name in MODELS:
        robust = name.startswith("adv")
        if name in edited["ifgsm"]:
            grid = edited["ifgsm"][name]
            total = grid["clean"]["total"]
            grid["clean"]["correct"] = total
            for row in grid["robust"]:
                for cell in row:
                    cell["correct"] = total if robust else 0
        _set_robust(edited, name, 1.0 if robust else 0.0)
    _set_robust(edited, "adv_light", 0.0)  # the study's recipes stay below the field's
    _set_robust(edited, "adv_strong", 0.0)
    report = render_report(edited)
    assert "So adversarial fine-tuning does buy robustness here" in report
    assert (
        f"{settings['grid_steps'][top]} iterations, I-FGSM leaves 0.0% (short baseline)" in report
    )
    assert "exactly the study's 0%, the attack breaks both" in report
    assert "PGD-AT keeps 100.0% at 8/255 (+100.0 points from the start, outside the intervals" in (
        report
    )
    assert "epoch(s) of adversarial fine-tuning buy robustness outside the intervals" in report
    assert "but its lead over TRADES, MART, fast AT is inside the intervals" in report

    _set_robust(edited, "adv_trades", 0.0)  # now PGD-AT leads TRADES clearly
    report = render_report(edited)
    assert "but its lead over MART, fast AT is inside the intervals" in report

    # Robust pruning's sentences follow the numbers too.
    pruned = edited["beyond_the_study"]["robust_pruning"]
    base = next(iter(pruned.values()))["base"]
    _set_robust(edited, base, 1.0)
    _set_robust(edited, "rp_l1_40", 0.0)
    _set_robust(edited, "rp_taylor_40", 1.0)
    report = render_report(edited)
    assert "L1 40% keeps 0.0% robust accuracy (-100.0 points, outside the intervals)" in report
    assert "at 40% adversarial Taylor keeps +100.0 points against L1, outside the intervals" in (
        report
    )

    for name in DEFENSES:  # now robust accuracy collapses
        _set_robust(edited, name, 0.0)
        for row in edited["ifgsm"].get(name, {"robust": []})["robust"]:
            for cell in row:
                cell["correct"] = 0
    report = render_report(edited)
    assert "As in the study, these recipes do not buy measurable robustness here" in report
    assert "no recipe buys robustness outside the intervals" in report


def test_help_documents_every_setting() -> None:
    text = build_parser().format_help()
    for name in StudyConfig.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in text
    assert "--preset" in text and "SYNTHETIC" in text


def test_presets_hold_the_study_settings_and_data_selects_the_paper_one() -> None:
    parser = build_parser()
    paper = config_from_args(parser.parse_args(["--data", "some/raw-img"]))
    assert (paper.image_size, paper.batch_size, paper.short_epochs, paper.long_epochs) == (
        224, 64, 4, 20,
    )  # fmt: skip
    assert paper.prune_ratios == (0.2, 0.4) and paper.prune_epochs == 6
    assert paper.prune_targets == "backbone.layer4.*.conv1"
    assert (paper.light_eps, paper.light_steps, paper.light_lam) == (4.0, 3, 0.5)
    assert (paper.strong_eps, paper.strong_steps, paper.strong_lam) == (8.0, 5, 0.9)
    assert paper.weights == "imagenet" and paper.data == "some/raw-img"
    assert (paper.width, paper.settle_factor, paper.adv_images) == (64, 1.0, 0)  # the study's
    assert paper.robust_eval == "autoattack" and paper.aa_version == "standard"
    demo = config_from_args(parser.parse_args([]))
    assert demo == StudyConfig() and demo.synthetic
    override = config_from_args(parser.parse_args(["--preset", "paper", "--long-epochs", "30"]))
    assert override.long_epochs == 30 and override.image_size == 224 and override.data is None


def test_the_reduced_autoattack_runs_square_by_the_chosen_rule() -> None:
    demo = StudyConfig()
    attack = robust_attack(demo, 8.0)
    assert attack.black_box == "when_masked"  # the demo's default: Square where it is needed
    assert attack.names == ("apgd-ce", "apgd-t", "square")
    assert robust_attack(StudyConfig(aa_black_box="always"), 8.0).black_box == "always"
    standard = robust_attack(StudyConfig(aa_version="standard", aa_black_box="when_masked"), 8.0)
    assert standard.black_box == "always"  # the reference's protocol stays the reference's
    settings = {
        k: getattr(demo, k)
        for k in (
            "robust_eval",
            "aa_version",
            "aa_steps",
            "aa_targets",
            "aa_queries",
            "aa_black_box",
        )
    }
    assert "only where a gradient-masking check failed" in robust_description(settings)
    del settings["aa_black_box"]  # a results file written before the option existed
    assert "on every sample the APGD members left" in robust_description(settings)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prune-ratios", "0.2,1.5"], r"--prune-ratios must be in \(0, 1\), got \[0.2, 1.5\]"),
        (["--adv-base-ratio", "0.3"], r"--adv-base-ratio must be one of --prune-ratios"),
        (["--prune-ratios", "0.4,0.401"], r"--prune-ratios must differ in whole percents"),
        (["--short-epochs", "11"], r"--long-epochs \(10\) must be >= --short-epochs \(11\)"),
        (["--light-lam", "1.5"], r"--light-lam must be in \[0, 1\], got 1.5"),
        (["--grid-eps", "1,2"], r"--grid-eps \[1.0, 2.0\] must include --light-eps \(4.0\)"),
        (["--eval-size", "0"], r"--eval-size must be >= 1, got 0"),
        (["--grid-steps", "1,x"], r"expected comma-separated int values, got '1,x'"),
        (["--recipe-eps", "300"], r"--recipe-eps must be in \(0, 255\]"),
        (
            ["--aa-black-box", "sometimes"],
            r"--aa-black-box must be one of \['always', 'when_masked'\], got 'sometimes'",
        ),
    ],
)
def test_bad_settings_are_rejected_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_it_runs_under_torchrun_with_the_same_outputs(
    tiny_run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    """Two CPU processes (gloo): rank 0 writes everything, every stage and section is there."""
    _, single, _ = tiny_run
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(SCRIPT), *TINY, "--out", str(out),
    ]  # fmt: skip
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["processes"] == 2
    assert set(results) == set(single) and list(results["models"]) == MODELS
    assert set(_statuses(out)) == set(_statuses_of(single))
    # Sharded evaluations count every image once: the same totals as one process.
    for name in MODELS:
        for ours, theirs in zip(results["robust"][name], single["robust"][name], strict=True):
            assert ours["clean"]["total"] == theirs["clean"]["total"]
    assert (out / "report.md").read_text().count("**Finding.**") == 8


def _statuses_of(results: dict[str, Any]) -> dict[str, str]:
    stages = results["stages"]
    return {k: v["status"] for k, v in stages.items() if isinstance(v, dict) and "key" in v}

"""``report.md`` sections 5 (beyond the study) and 6 (sanity checks, settings, versions)."""

from __future__ import annotations

from typing import Any

from advkit.evaluation import AccuracyEstimate, TransferMatrix

from .formatting import compare, estimate, grid_cell, pct, percent, points, table
from .plots import strongest_attack
from .sanity import EVALUATIONS

__all__ = ["beyond_section", "sanity_section"]

_ATTACK_NAMES = {"ifgsm": "I-FGSM", "pgd": "PGD", "mifgsm": "MI-FGSM"}


def _stronger_attacks(results: dict[str, Any]) -> str:
    settings = results["settings"]
    beyond = results["beyond_the_study"]
    header = ["model", "clean, attacked subset (%)"]
    for eps in settings["attack_eps"]:
        if eps in settings["grid_eps"]:
            header.append(f"I-FGSM-{max(settings['grid_steps'])} {eps:g}")
        header += [
            f"PGD-{settings['pgd_steps']} {eps:g}",
            f"MI-FGSM-{settings['mifgsm_steps']} {eps:g}",
        ]
    rows, gaps = [], []
    for name, model in results["models"].items():
        row = [model["label"], pct(results["ifgsm"][name]["clean"])]
        for eps in settings["attack_eps"]:
            cells = {}
            if eps in settings["grid_eps"]:
                cells["ifgsm"] = grid_cell(results["ifgsm"][name], eps)
            cells["pgd"] = grid_cell(beyond["pgd"][name], eps)
            cells["mifgsm"] = grid_cell(beyond["mifgsm"][name], eps)
            row += [pct(cell) for cell in cells.values()]
            if "ifgsm" in cells:
                best = min(("pgd", "mifgsm"), key=lambda k: cells[k].correct)
                gaps.append((cells["ifgsm"].value - cells[best].value, name, eps, best, cells))
        rows.append(row)
    largest = max(gaps, default=None, key=lambda item: item[0])
    if largest is None or largest[0] <= 0:
        finding = (
            "PGD and MI-FGSM find no more adversarial examples than I-FGSM with the same "
            "radius: I-FGSM's numbers are already as low as these attacks get."
        )
    else:
        gap, name, eps, best, cells = largest
        label = results["models"][name]["label"]
        finding = (
            f"The stronger attacks matter most for {label}: at {eps:g}/255, "
            f"{_ATTACK_NAMES[best]} leaves {percent(cells[best])} against I-FGSM's "
            f"{percent(cells['ifgsm'])} ({100 * gap:.1f} points lower, "
            f"{'a measurable difference' if compare(cells[best], cells['ifgsm']) == 'lower than' else 'within the uncertainty'}). "
            "Robust accuracy should always be reported under the strongest attack tried."
        )
    return "\n".join(
        [
            "### 5.1 Stronger attacks: PGD and MI-FGSM",
            "",
            "PGD from a uniform random start (step 2.5 eps/steps, Madry et al. 2018) and MI-FGSM "
            "(decay 1.0, Dong et al. 2018); columns give attack-iterations and eps in 1/255.",
            "",
            table(header, rows),
            "",
            f"**Finding.** {finding}",
            "",
        ]
    )


def _transfer(results: dict[str, Any]) -> str:
    transfer = results["beyond_the_study"]["transfer"]
    matrix = TransferMatrix.from_dict(transfer)
    header = ["crafted on \\ evaluated on", *matrix.targets]
    rows = [["(clean)", *(c.format() for c in matrix.clean)]] + [
        [source, *(cell.format() for cell in row)]
        for source, row in zip(matrix.surrogates, matrix.robust, strict=True)
    ]
    n = len(matrix.targets)
    off = [matrix.robust[i][j].value for i in range(n) for j in range(n) if i != j]
    diagonal = [matrix.robust[i][i].value for i in range(n)]
    mean_off = sum(off) / max(1, len(off))
    mean_diag = sum(diagonal) / n
    failed = [c for c in results["sanity_checks"]["white_box_vs_transfer"] if not c["passed"]]
    finding = (
        f"Crafted on another model, the examples leave {100 * mean_off:.1f}% accuracy on "
        f"average, against {100 * mean_diag:.1f}% for the white-box attack on the model itself "
        "(the diagonal): transferred examples are "
        + ("weaker, as they should be." if mean_off >= mean_diag else "stronger, a warning sign.")
    )
    per_source = [
        (sum(matrix.robust[i][j].value for j in range(n) if j != i) / max(1, n - 1), source)
        for i, source in enumerate(matrix.surrogates)
    ]
    mean, source = min(per_source)
    finding += (
        f" The most transferable examples are crafted on {source}: the other models keep "
        f"{100 * mean:.1f}% under them on average."
    )
    finding += (
        " On every model the white-box attack is at least as strong as every transferred one."
        if not failed
        else f" For {len(failed)} model(s) a transferred attack beats the white-box one "
        "(see section 6): a sign of gradient masking."
    )
    return "\n".join(
        [
            "### 5.2 Black-box transfer",
            "",
            f"Accuracy of each model (columns) under {transfer['description']} crafted on each model "
            "(rows), which sees only the crafted images; the diagonal is the white-box attack.",
            "",
            table(header, rows),
            "",
            f"![transfer matrix]({results['plots']['transfer_matrix']})",
            "",
            f"**Finding.** {finding}",
            "",
        ]
    )


def _recipe(results: dict[str, Any]) -> str:
    settings = results["settings"]
    recipe = results["beyond_the_study"]["correct_recipe"]
    names = ["adv_light", "adv_strong", "adv_pgd"]
    base = recipe["base"]
    header = ["model", "clean, attacked subset (%)"] + [
        f"strongest attack {eps:g}/255" for eps in settings["attack_eps"]
    ]
    rows = []
    strongest: dict[str, dict[float, AccuracyEstimate]] = {}
    for name in [base, *names]:
        strongest[name] = {e: strongest_attack(results, name, e)[1] for e in settings["attack_eps"]}
        rows.append(
            [
                results["models"][name]["label"],
                pct(results["ifgsm"][name]["clean"]),
                *(pct(strongest[name][e]) for e in settings["attack_eps"]),
            ]
        )
    clean_change = points(estimate(recipe["clean"]), estimate(results["pruning"][base]["clean"]))
    parts, gains = [], []
    for eps in settings["attack_eps"]:
        ours, start = strongest["adv_pgd"][eps], strongest[base][eps]
        study_best = max(
            (strongest[n][eps] for n in ("adv_light", "adv_strong")), key=lambda a: a.value
        )
        parts.append(
            f"at {eps:g}/255 it keeps {percent(ours)}, {compare(ours, start)} the "
            f"{percent(start)} of the model it started from and {compare(ours, study_best)} "
            f"the better of the study's recipes ({percent(study_best)})"
        )
        if compare(ours, start) == "higher than":
            gains.append(f"{eps:g}/255")
    finding = (
        "Under the strongest attack, PGD adversarial fine-tuning: "
        + "; ".join(parts)
        + f". Its clean accuracy changes by {clean_change}."
    )
    if gains:
        finding += (
            f" Done this way, {recipe['epochs']} epoch(s) of adversarial fine-tuning buy "
            f"measurable robustness (at {', '.join(gains)}), contrary to the study's conclusion "
            "that it yields limited gains."
        )
    else:
        finding += (
            f" In this run ({recipe['epochs']} epoch(s) of fine-tuning) it does not buy "
            "measurable robustness."
        )
    return "\n".join(
        [
            "### 5.3 Adversarial fine-tuning with a correct recipe",
            "",
            f"{recipe['description'][0].upper()}{recipe['description'][1:]}; "
            f"{recipe['epochs']} epoch(s) from the same pruned model. "
            '"Strongest attack" is the lowest accuracy over I-FGSM, PGD and MI-FGSM.',
            "",
            table(header, rows),
            "",
            f"**Finding.** {finding}",
            "",
            f"![clean against robust accuracy]({results['plots']['tradeoff']})",
            "",
            f"![adversarial examples]({results['plots']['examples']})",
            "",
        ]
    )


def beyond_section(results: dict[str, Any]) -> str:
    """Section 5: stronger attacks, transfer, and a correct adversarial fine-tuning recipe."""
    return "\n".join(
        [
            "## 5. Beyond the study",
            "",
            _stronger_attacks(results),
            _transfer(results),
            _recipe(results),
        ]
    )


def _check_cell(checks: list[dict[str, Any]]) -> str:
    """``"5 pass, 1 n/a"``, with the failed checks named."""
    passed = sum(c["passed"] is True for c in checks)
    missing = sum(c["passed"] is None for c in checks)
    failed = [c["name"] for c in checks if c["passed"] is False]
    cell = f"{passed} pass" + (f", {missing} n/a" if missing else "")
    return cell + (f", **FAIL: {', '.join(failed)}**" if failed else "")


def _check_rows(results: dict[str, Any]) -> list[list[str]]:
    by_model = results["sanity_checks"]["by_model"]
    return [
        [model["label"], *(_check_cell(by_model[name][kind]) for kind in EVALUATIONS)]
        for name, model in results["models"].items()
    ]


def _setting(value: Any) -> str:
    """A setting as the command line takes it (lists comma-separated), same from JSON or not."""
    if isinstance(value, list | tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def sanity_section(results: dict[str, Any]) -> str:
    """Section 6: every sanity check, the stage timings, the settings and the versions."""
    sanity = results["sanity_checks"]
    if sanity["all_passed"]:
        summary = (
            f"All {sanity['applicable']} applicable sanity checks passed (n/a: a check that "
            "does not apply, e.g. eps = 0 on a grid without it, monotonicity in a single-row "
            "grid, or the threat-model checks of a model that classifies no attacked image "
            "correctly)."
        )
    else:
        summary = (
            f"{len(sanity['failures'])} of {sanity['applicable']} applicable check(s) failed; "
            "treat the affected numbers with suspicion:\n\n"
            + "\n".join(f"- {line}" for line in sanity["failures"])
        )
    settings = results["settings"]
    env = results["environment"]
    stages = results["stages"]
    stage_rows = [
        [
            name,
            info["status"],
            f"{info['seconds']:.1f}",
            f"{info['cpu_seconds']:.1f}",
            f"{info['computed_seconds']:.1f} / {info['computed_cpu_seconds']:.1f}"
            if "computed_seconds" in info
            else "",
        ]
        for name, info in results["stages"].items()
        if isinstance(info, dict)
    ]
    versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    hardware = env.get("gpu", env["processor"])
    return "\n".join(
        [
            "## 6. Sanity checks, settings and software",
            "",
            "advkit runs these checks with every evaluation (Carlini et al. 2019): the model is "
            "evaluated in eval mode, eps = 0 changes no prediction, accuracy never rises with "
            "eps or iterations, every adversarial example stays in [0, 1] and in its eps-ball; "
            "the study adds: no transferred attack beats the white-box one.",
            "",
            table(["model", *EVALUATIONS], _check_rows(results)),
            "",
            summary,
            "",
            table(
                ["white-box at least as strong as transfer, on", "result", "accuracies"],
                [
                    [c["target"], "pass" if c["passed"] else "**FAIL**", c["detail"]]
                    for c in sanity["white_box_vs_transfer"]
                ],
            ),
            "",
            "**Settings** (`results.json` has them all; every one is a command-line option):",
            "",
            table(["setting", "value"], [[k, f"`{_setting(v)}`"] for k, v in settings.items()]),
            "",
            f"**Software:** Python {env['python']}, {versions}. **Machine:** {env['platform']}, "
            f"{env['cpu_count']} CPUs ({env['torch_threads']} torch threads), device "
            f"{env['device']} ({hardware})"
            + (
                f", load average {' / '.join(map(str, env['load_average_1_5_15_min']))} "
                "(1 / 5 / 15 min) at the end of the run."
                if "load_average_1_5_15_min" in env
                else "."
            ),
            "",
            f"**Stages of this run:** {stages['total_seconds']:.1f} s of wall time and "
            f"{stages['total_cpu_seconds']:.1f} s of CPU time in all (CPU time adds up the "
            'threads; on a loaded machine wall time exceeds it). "cached" stages were read '
            "from the results folder; the last column says what they cost when computed.",
            "",
            table(
                ["stage", "status", "wall s", "CPU s", "when computed: wall / CPU s"],
                stage_rows,
            ),
            "",
        ]
    )

"""``report.md`` sections 5 (beyond the study) and 6 (sanity checks, settings, versions)."""

from __future__ import annotations

from typing import Any

from advkit.evaluation import AccuracyEstimate, TransferMatrix

from .formatting import compare, estimate, grid_cell, pct, percent, points, table
from .plots import strongest_attack

__all__ = ["beyond_section", "sanity_section", "transfer_checks"]

_ATTACK_NAMES = {"ifgsm": "I-FGSM", "pgd": "PGD", "mifgsm": "MI-FGSM"}


def _stronger_attacks(results: dict[str, Any]) -> str:
    settings = results["settings"]
    beyond = results["beyond_the_study"]
    header = ["model", "clean (%)"]
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


def transfer_checks(matrix: TransferMatrix) -> list[tuple[str, bool, str]]:
    """Per target: the white-box attack must beat every transferred one (Carlini et al. 2019).

    A transferred attack that is *stronger* than the white-box one on the same model is a sign
    of gradient masking: the model's own gradients mislead the attack.
    """
    checks = []
    for j, target in enumerate(matrix.targets):
        if target not in matrix.surrogates:
            continue
        white = matrix.robust[matrix.surrogates.index(target)][j]
        others = [
            (matrix.robust[i][j], source)
            for i, source in enumerate(matrix.surrogates)
            if source != target
        ]
        if not others:
            continue
        best, source = min(others, key=lambda item: item[0].correct)
        passed = white.correct <= best.correct
        detail = (
            f"white-box {white.format(False)}% vs best transfer {best.format(False)}% "
            f"(from {source})"
        )
        checks.append((f"white-box beats transfer on {target}", passed, detail))
    return checks


def _transfer(results: dict[str, Any]) -> str:
    transfer = results["beyond_the_study"]["transfer"]
    matrix = TransferMatrix.from_dict(transfer)
    header = ["crafted on \\ evaluated on", *matrix.targets]
    rows = [["(clean)", *(c.format() for c in matrix.clean)]] + [
        [source, *(cell.format() for cell in row)]
        for source, row in zip(matrix.surrogates, matrix.robust, strict=True)
    ]
    n = len(matrix.targets)
    off = [
        (matrix.robust[i][j].value, matrix.clean[j].value)
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    diagonal = [matrix.robust[i][i].value for i in range(n)]
    mean_off = sum(v for v, _ in off) / max(1, len(off))
    mean_diag = sum(diagonal) / n
    failed = [name for name, passed, _ in transfer_checks(matrix) if not passed]
    finding = (
        f"Crafted on another model, the examples leave {100 * mean_off:.1f}% accuracy on "
        f"average, against {100 * mean_diag:.1f}% for the white-box attack on the model itself "
        "(the diagonal): transferred examples are "
        + ("weaker, as they should be." if mean_off >= mean_diag else "stronger, a warning sign.")
    )
    finding += (
        " Every model resists its own white-box attack less than any transferred one."
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
    header = ["model", "clean (%)"] + [
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
    eps = max(settings["attack_eps"])
    ours, start = strongest["adv_pgd"][eps], strongest[base][eps]
    study_best = max(
        (strongest[n][eps] for n in ("adv_light", "adv_strong")), key=lambda a: a.value
    )
    finding = (
        f"Under the strongest attack at {eps:g}/255, PGD adversarial fine-tuning keeps "
        f"{percent(ours)} ({compare(ours, start)} the {percent(start)} of the model it started "
        f"from, and {compare(ours, study_best)} the better of the study's two recipes, "
        f"{percent(study_best)}), at a clean accuracy of {percent(recipe['clean'])} "
        f"({points(estimate(recipe['clean']), estimate(results['pruning'][base]['clean']))})."
    )
    if compare(ours, start) == "higher than":
        finding += (
            " Adversarial fine-tuning done this way buys real robustness, contrary to the "
            "study's conclusion that it yields limited gains."
        )
    else:
        finding += (
            " In this configuration it does not buy measurable robustness; more epochs or "
            "data would be needed (compare the paper preset)."
        )
    return "\n".join(
        [
            "### 5.3 Adversarial fine-tuning with a correct recipe",
            "",
            f"{recipe['description']}; {recipe['epochs']} epoch(s) from the same pruned model. "
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
    """``"pass (6)"``, with the checks that do not apply or fail named."""
    passed = [c["name"] for c in checks if c["passed"] is True]
    missing = [c["name"] for c in checks if c["passed"] is None]
    failed = [c["name"] for c in checks if c["passed"] is False]
    cell = f"**FAIL: {', '.join(failed)}**" if failed else f"pass ({len(passed)})"
    return cell + (f"; n/a: {', '.join(missing)}" if missing else "")


def _check_rows(results: dict[str, Any]) -> tuple[list[list[str]], list[str], int]:
    beyond = results["beyond_the_study"]
    evaluations = {
        "I-FGSM grid": results["ifgsm"],
        "PGD": beyond["pgd"],
        "MI-FGSM": beyond["mifgsm"],
        "eps = 0": results["sanity_checks"]["zero_eps"],
    }
    rows, failures, count = [], [], 0
    for name, model in results["models"].items():
        row = [model["label"]]
        for kind, table_ in evaluations.items():
            checks = table_[name]["checks"]
            row.append(_check_cell(checks))
            count += sum(c["passed"] is not None for c in checks)
            failures += [
                f"{model['label']}, {kind}: {c['name']}: {c['detail']}"
                for c in checks
                if c["passed"] is False
            ]
        rows.append(row)
    return rows, failures, count


def sanity_section(results: dict[str, Any]) -> str:
    """Section 6: every sanity check, the stage timings, the settings and the versions."""
    rows, failures, count = _check_rows(results)
    transfer = results["beyond_the_study"]["transfer"]
    matrix = TransferMatrix.from_dict(transfer)
    failures += [
        f"transfer matrix: {c['name']}: {c['detail']}"
        for c in transfer["checks"]
        if c["passed"] is False
    ]
    extra = transfer_checks(matrix)
    failures += [f"{name}: {detail}" for name, passed, detail in extra if not passed]
    count += sum(c["passed"] is not None for c in transfer["checks"]) + len(extra)
    summary = (
        f"All {count} applicable sanity checks passed (the numbers in brackets count the "
        "checks that passed; n/a: a check that does not apply, e.g. eps = 0 on a grid without "
        "it, or the threat-model checks of a model that classifies no attacked image correctly)."
        if not failures
        else f"{len(failures)} check(s) failed; treat the affected numbers with suspicion:\n\n"
        + "\n".join(f"- {line}" for line in failures)
    )
    settings = results["settings"]
    env = results["environment"]
    stage_rows = [
        [name, info["status"], f"{info['seconds']:.1f}", f"{info.get('cpu_seconds', 0):.1f}"]
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
            table(["model", *("I-FGSM grid", "PGD", "MI-FGSM", "eps = 0")], rows),
            "",
            summary,
            "",
            table(
                ["white-box against transfer", "result", "accuracies"],
                [[n, "pass" if p else "**FAIL**", d] for n, p, d in extra],
            ),
            "",
            "**Settings** (`results.json` has them all; every one is a command-line option):",
            "",
            table(["setting", "value"], [[k, f"`{v}`"] for k, v in settings.items()]),
            "",
            f"**Software:** Python {env['python']}, {versions}. **Machine:** {env['platform']}, "
            f"{env['cpu_count']} CPUs ({env['torch_threads']} torch threads), device "
            f"{env['device']} ({hardware}).",
            "",
            f"**Stages of this run** (wall and CPU seconds; total {results['stages']['total_seconds']:.1f} s"
            ' of wall time; "cached" stages were read from the results folder):',
            "",
            table(["stage", "status", "seconds", "CPU seconds"], stage_rows),
            "",
        ]
    )

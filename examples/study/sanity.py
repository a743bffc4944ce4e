"""Every sanity check of the study in one place, for ``results.json`` and the report.

advkit attaches its checks to each evaluation (eval mode, eps = 0, monotone in eps and steps,
inside the box and the eps-ball). The study adds one across evaluations: on every model the
white-box attack must be at least as strong as any attack transferred from another model
(Carlini et al. 2019), or the model's own gradients mislead the attack (gradient masking).
"""

from __future__ import annotations

from typing import Any

from advkit.evaluation import TransferMatrix

__all__ = ["EVALUATIONS", "collect_checks", "white_box_checks"]

EVALUATIONS = ("I-FGSM grid", "robust accuracy", "eps = 0")
"""The evaluations of every model, in the order of the report's table (the grid: the study's
models only)."""


def white_box_checks(matrix: TransferMatrix) -> list[dict[str, Any]]:
    """Per model: its white-box accuracy is at most its accuracy under every transfer."""
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
        checks.append(
            {
                "target": target,
                "passed": white.correct <= best.correct,
                "detail": f"white-box {white.format(False)}% vs best transfer "
                f"{best.format(False)}% (from {source})",
            }
        )
    return checks


def _checks_of(evaluation: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The checks of one model's evaluations by kind (the robust ones of every eps together)."""
    checks: dict[str, list[dict[str, Any]]] = {}
    if "ifgsm" in evaluation:
        checks["I-FGSM grid"] = evaluation["ifgsm"]["checks"]
    checks["robust accuracy"] = [
        {**check, "name": f"{check['name']} (eps {round(item['eps'] * 255, 4):g}/255)"}
        for item in evaluation["robust"]
        for check in item["checks"]
    ]
    checks["eps = 0"] = evaluation["zero_eps"]["checks"]
    return checks


def collect_checks(
    models: dict[str, str],
    evaluations: dict[str, dict[str, Any]],
    transfer: dict[str, Any],
) -> dict[str, Any]:
    """Gather the checks of every evaluation and add the white-box-versus-transfer ones.

    Args:
        models: Model name -> label.
        evaluations: By model name, the evaluation stage's result (``ifgsm`` if the model has
            the grid, ``robust`` (a list, one per eps) and ``zero_eps``, each with its
            ``checks``).
        transfer: The transfer matrix's ``to_dict`` form.

    Returns:
        ``by_model`` (model -> evaluation -> checks), ``transfer`` (the matrix's checks),
        ``white_box_vs_transfer``, ``applicable`` (how many checks applied), ``failures``
        (one line each) and ``all_passed``.
    """
    by_model = {name: _checks_of(evaluations[name]) for name in models}
    white_box = white_box_checks(TransferMatrix.from_dict(transfer))
    failures = [
        f"{models[name]}, {kind}: {check['name']}: {check['detail']}"
        for name, kinds in by_model.items()
        for kind, checks in kinds.items()
        for check in checks
        if check["passed"] is False
    ]
    failures += [
        f"transfer matrix: {c['name']}: {c['detail']}"
        for c in transfer["checks"]
        if c["passed"] is False
    ]
    failures += [
        f"white-box at least as strong as transfer on {c['target']}: {c['detail']}"
        for c in white_box
        if not c["passed"]
    ]
    applicable = sum(
        check["passed"] is not None
        for kinds in by_model.values()
        for checks in kinds.values()
        for check in checks
    )
    applicable += sum(c["passed"] is not None for c in transfer["checks"]) + len(white_box)
    return {
        "by_model": by_model,
        "transfer": transfer["checks"],
        "white_box_vs_transfer": white_box,
        "applicable": applicable,
        "failures": failures,
        "all_passed": not failures,
    }

"""The study's PNG plots, drawn from ``results.json``'s content (and the example tensors).

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot, so no
window or global state is involved; PNGs are written with the Agg renderer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from advkit.evaluation import GridResult, RobustAccuracy, TransferMatrix

__all__ = ["make_plots", "robust_cell"]

SYNTHETIC_NOTE = "SYNTHETIC demo data (not Animals-10)"


def _title(results: dict[str, Any], text: str) -> str:
    return f"{text}\n{SYNTHETIC_NOTE}" if results["data"]["synthetic"] else text


def _save(figure: Figure, path: Path, dpi: int) -> str:
    figure.savefig(path, dpi=dpi)
    return path.name


def robust_cell(results: dict[str, Any], name: str, eps: float) -> RobustAccuracy:
    """The robust accuracy of model ``name`` at ``eps`` (in 1/255): the strongest evaluation's."""
    for item in results["robust"][name]:
        if abs(item["eps"] * 255 - eps) < 1e-6:
            return RobustAccuracy.from_dict(item)
    raise KeyError(f"no robust accuracy of {name} at eps {eps:g}/255")


def _accuracy_vs_eps(results: dict[str, Any], path: Path, dpi: int) -> str:
    names = list(results["ifgsm"])
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    figure = Figure(figsize=(3.3 * cols, 2.8 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).flatten()
    for ax, name in zip(axes, names, strict=False):
        GridResult.from_dict(results["ifgsm"][name]).plot(ax=ax)
        ax.set_title(results["models"][name]["label"], fontsize=9)
        ax.legend(fontsize=6)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    figure.suptitle(_title(results, "Robust accuracy under I-FGSM against eps"), fontsize=10)
    return _save(figure, path, dpi)


def _accuracy_vs_steps(results: dict[str, Any], path: Path, dpi: int) -> str:
    settings = results["settings"]
    panels = [
        e for e in (settings["light_eps"], settings["strong_eps"]) if e in settings["grid_eps"]
    ]
    figure = Figure(figsize=(4.6 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, eps in zip(axes, panels, strict=True):
        for name, table in results["ifgsm"].items():
            model = results["models"][name]
            grid = GridResult.from_dict(table)
            steps = [s for s in grid.steps if s is not None]
            values = [100 * grid.accuracy(eps / 255, s).value for s in steps]
            ax.plot(steps, values, marker="o", label=model["label"])
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.set_xlabel("I-FGSM iterations")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"eps = {eps:g}/255", fontsize=9)
        ax.legend(fontsize=6)
    figure.suptitle(_title(results, "Robust accuracy under I-FGSM against iterations"), fontsize=10)
    return _save(figure, path, dpi)


def _tradeoff(results: dict[str, Any], path: Path, dpi: int) -> str:
    """Clean against robust accuracy, one point per defense recipe and the model they start from."""
    defenses = results["beyond_the_study"]["defenses"]
    start = next(iter(defenses.values()))["base"]
    panels = list(results["settings"]["attack_eps"])
    figure = Figure(figsize=(4.8 * len(panels), 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, eps in zip(axes, panels, strict=True):
        for name in [start, *defenses]:
            cell = robust_cell(results, name, eps)
            clean, robust = cell.clean, cell.robust
            x, y = 100 * clean.value, 100 * robust.value
            (low_x, high_x), (low_y, high_y) = clean.interval, robust.interval
            ax.errorbar(
                x,
                y,
                xerr=[[x - 100 * low_x], [100 * high_x - x]],
                yerr=[[y - 100 * low_y], [100 * high_y - y]],
                marker="s" if name == start else "o",
                capsize=3,
                label=results["models"][name]["label"] + (" (start)" if name == start else ""),
            )
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.plot([0, 100], [0, 100], color="gray", linestyle=":", linewidth=0.8)
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"eps = {eps:g}/255", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    figure.suptitle(
        _title(
            results,
            "Defenses from the same model: clean against robust accuracy\n"
            "(attacked subset, strongest evaluation, 95% Wilson intervals)",
        ),
        fontsize=9,
    )
    return _save(figure, path, dpi)


def _transfer(results: dict[str, Any], path: Path, dpi: int) -> str:
    transfer = results["beyond_the_study"]["transfer"]
    figure = TransferMatrix.from_dict(transfer).plot()
    ax = figure.axes[0]
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("crafted on")
    ax.set_xlabel("evaluated on")
    title = f"Accuracy (%) under transferred {transfer['description']}"
    ax.set_title(_title(results, title), fontsize=8)
    return _save(figure, path, dpi)


def _examples(results: dict[str, Any], tensors_file: Path, path: Path, dpi: int) -> str:
    tensors = torch.load(tensors_file, weights_only=True)
    summary = results["beyond_the_study"]["examples"]
    classes = results["data"]["classes"]
    models = list(summary["models"])
    eps = results["settings"]["strong_eps"] / 255
    clean, labels = tensors["clean"], tensors["labels"]
    columns = 1 + 2 * len(models)
    figure = Figure(figsize=(1.7 * columns, 1.9 * clean.shape[0] + 0.6), layout="constrained")
    axes = figure.subplots(clean.shape[0], columns, squeeze=False)

    def show(ax: Any, image: torch.Tensor, title: str) -> None:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])

    for row in range(clean.shape[0]):
        truth = classes[int(labels[row])]
        show(axes[row, 0], clean[row], f"clean: {truth}")
        for k, name in enumerate(models):
            label = summary["models"][name]["label"]
            adversarial = tensors[f"{name}_adversarial"][row]
            before = classes[int(tensors[f"{name}_clean_pred"][row])]
            after = classes[int(tensors[f"{name}_adv_pred"][row])]
            # Perturbation scaled from [-eps, eps] to [0, 1]: grey is no change.
            amplified = (adversarial - clean[row]) / (2 * eps) + 0.5
            show(axes[row, 1 + 2 * k], amplified, f"{label}\nperturbation x{0.5 / eps:.0f}")
            show(axes[row, 2 + 2 * k], adversarial, f"{label}\n{before} -> {after}")
    figure.suptitle(_title(results, f"Adversarial examples, {summary['description']}"), fontsize=8)
    figure.supxlabel(
        "X -> Y: the model's prediction on the clean image (X) and on the adversarial image (Y);"
        "\nperturbation: adversarial minus clean, amplified (grey: no change)",
        fontsize=6,
    )
    return _save(figure, path, dpi)


def make_plots(
    results: dict[str, Any], examples_file: Path, out: Path, *, dpi: int
) -> dict[str, str]:
    """Draw every plot into ``out``; return their file names by kind."""
    return {
        "accuracy_vs_eps": _accuracy_vs_eps(results, out / "accuracy_vs_eps.png", dpi),
        "accuracy_vs_steps": _accuracy_vs_steps(results, out / "accuracy_vs_steps.png", dpi),
        "tradeoff": _tradeoff(results, out / "tradeoff.png", dpi),
        "transfer_matrix": _transfer(results, out / "transfer_matrix.png", dpi),
        "examples": _examples(results, examples_file, out / "examples.png", dpi),
    }

"""How the targeted members choose their target classes: by logit order, or by MALT's score."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from advkit._checks import check_differentiable, check_int, check_logits
from advkit.attacks.threat import Norm

__all__ = ["Targeting", "malt_scores", "target_classes"]

Targeting = Literal["logits", "malt"]
"""How a targeted member ranks the other classes: ``"logits"`` (the reference: the highest
clean logits first) or ``"malt"`` (:func:`malt_scores`, highest first)."""


def malt_scores(model: nn.Module, inputs: Tensor, labels: Tensor, *, norm: Norm) -> Tensor:
    r"""MALT's target score of every class: the negative distance to its linearized boundary.

    For sample ``x`` with label ``y`` and logits ``z``, the score of class ``c`` is

    .. math:: s_c = \frac{z_c(x) - z_y(x)}{\lVert \nabla_x z_c(x) - \nabla_x z_y(x) \rVert_*}

    with :math:`\lVert\cdot\rVert_*` the dual norm of the threat model (L1 for L-inf, L2 for
    L2): :math:`-s_c` is the distance from ``x`` to the boundary between ``y`` and ``c`` of the
    model linearized at ``x``, so the classes of highest score are the nearest (mesoscopic
    almost linearity: the model is close to linear at the scale of the perturbation). The
    label's own score is ``-inf``. The Jacobian takes one forward pass with input gradients and
    one backward pass per class.

    Args:
        model: A classifier returning ``[N, C]`` logits, already in the mode to attack.
        inputs: Inputs ``[N, ...]``.
        labels: Labels ``[N]``.
        norm: The threat model's norm, ``"Linf"`` or ``"L2"``.

    Returns:
        Scores ``[N, C]``, detached.

    Raises:
        ValueError: If ``norm`` is unknown or the logits are malformed.

    References:
        Melamed, Yehudai and Shamir, "MALT Powers Up Adversarial Attacks", NeurIPS 2024
        (Algorithm 1).
    """
    if norm not in ("Linf", "L2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_logits(logits, x.shape[0], labels)
        check_differentiable(logits, "MALT")
        rows = [
            torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < logits.shape[1] - 1)[0]
            for c in range(logits.shape[1])
        ]
    jacobian = torch.stack(rows, dim=1).flatten(2)  # [N, C, d]
    logits = logits.detach()
    batch = torch.arange(x.shape[0], device=x.device)
    difference = logits - logits[batch, labels][:, None]
    gradients = jacobian - jacobian[batch, labels][:, None]
    dual = 1 if norm == "Linf" else 2
    scores = difference / gradients.norm(p=dual, dim=2).clamp_min(1e-12)
    return scores.scatter(1, labels[:, None], -math.inf)


def target_classes(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    clean_logits: Tensor,
    count: int,
    *,
    targeting: Targeting,
    norm: Norm,
) -> Tensor:
    """The ``count`` target classes of every sample, ``[N, count]``, the first to try first.

    ``"logits"`` takes the classes of the 2nd, 3rd, ... highest clean logits (the reference's
    rule, which does not exclude the label when it is not the top class); ``"malt"`` the
    classes of highest :func:`malt_scores`.

    Args:
        model: The classifier (differentiated only for ``"malt"``).
        inputs: Clean inputs ``[N, ...]``.
        labels: Their labels ``[N]``.
        clean_logits: The model's logits on ``inputs``, ``[N, C]``.
        count: How many targets per sample, >= 1 and below ``C``.
        targeting: ``"logits"`` or ``"malt"``.
        norm: The threat model's norm (for the dual norm of MALT's score).

    Raises:
        ValueError: If ``targeting`` is unknown or ``count`` is not below the number of classes.
    """
    check_int(count, "count", minimum=1)
    check_target_count(count, clean_logits.shape[1], "count")
    if check_targeting(targeting) == "logits":
        ranked = clean_logits.sort(dim=1)[1]  # ascending, as the reference
        return torch.stack([ranked[:, -rank] for rank in range(2, count + 2)], dim=1)
    return malt_scores(model, inputs, labels, norm=norm).topk(count, dim=1).indices


def check_target_count(count: int, classes: int, name: str = "n_target_classes") -> None:
    """A ``ValueError`` unless ``count`` targets (named ``name``) are fewer than ``classes``."""
    if count >= classes:
        raise ValueError(f"{name} must be < the number of classes {classes}, got {count}")


def check_targeting(value: object) -> Targeting:
    """``value`` if it names a targeting rule, else a ``ValueError``."""
    if value not in ("logits", "malt"):
        raise ValueError(f"targeting must be 'logits' or 'malt', got {value!r}")
    return value  # type: ignore[return-value]

"""Per-sample margin losses of APGD: the Difference of Logits Ratio, untargeted and targeted.

Both are invariant to shifting and to positive scaling of the logits, so a model that squashes
or rescales its outputs cannot hide a small margin behind a small gradient of the loss.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["dlr_loss", "targeted_dlr_loss"]

_TINY = 1e-12  # the reference's guard against a zero denominator


def check_logits_and_labels(
    logits: Tensor, labels: Tensor, min_classes: int, name: str, what: str = "labels"
) -> None:
    """Raise a ``ValueError`` unless ``logits`` is ``[N, C]`` with ``C >= min_classes`` and
    ``labels`` (named ``what`` in the message) is ``[N]``; ``name`` names the caller."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [N, C], got {list(logits.shape)}")
    if logits.shape[1] < min_classes:
        raise ValueError(
            f"{name} needs at least {min_classes} classes, got logits with {logits.shape[1]}"
        )
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"{what} must have shape [{logits.shape[0]}] (one per row), got {list(labels.shape)}"
        )


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Untargeted Difference of Logits Ratio, per sample.

    .. math::
        \mathrm{DLR}(z, y) = -\frac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3}}

    where :math:`\pi` orders the logits decreasingly. It is positive exactly when the sample is
    misclassified; APGD ascends it. The denominator gets ``1e-12`` added, as in the reference.

    Args:
        logits: ``[N, C]`` logits with ``C >= 3``.
        labels: True labels ``[N]``.

    Returns:
        The loss of every sample, shape ``[N]``.

    Raises:
        ValueError: If ``logits`` is not ``[N, C]`` with at least 3 classes, or ``labels`` not
            ``[N]``.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020, Eq. (4).

    Example:
        >>> import torch
        >>> from advkit.attacks import dlr_loss
        >>> dlr_loss(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]))
        tensor([-0.6667])
    """
    check_logits_and_labels(logits, labels, 3, "dlr_loss")
    top3 = logits.topk(3, dim=1).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    # The largest logit other than the true one: the second if the true class is on top.
    other = top3[:, 0].where(top3[:, 0] != true, top3[:, 1])
    return -(true - other) / (top3[:, 0] - top3[:, 2] + _TINY)


def targeted_dlr_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    r"""Targeted Difference of Logits Ratio, per sample (the loss of APGD-T).

    .. math::
        \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}{z_{\pi_1} - (z_{\pi_3} + z_{\pi_4})/2}

    where :math:`\pi` orders the logits decreasingly. Ascending it pushes the target logit
    :math:`z_t` above the true logit :math:`z_y`. The denominator gets ``1e-12`` added, as in the
    reference.

    Args:
        logits: ``[N, C]`` logits with ``C >= 4``.
        labels: True labels ``[N]``.
        targets: Target labels ``[N]``.

    Returns:
        The loss of every sample, shape ``[N]``.

    Raises:
        ValueError: If ``logits`` is not ``[N, C]`` with at least 4 classes, or ``labels`` or
            ``targets`` not ``[N]``.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020, Eq. (5).

    Example:
        >>> import torch
        >>> from advkit.attacks import targeted_dlr_loss
        >>> z = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
        >>> targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([1]))
        tensor([-0.5714])
    """
    check_logits_and_labels(logits, labels, 4, "targeted_dlr_loss")
    check_logits_and_labels(logits, targets, 4, "targeted_dlr_loss", "targets")
    top4 = logits.topk(4, dim=1).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    return -(true - target) / (top4[:, 0] - 0.5 * (top4[:, 2] + top4[:, 3]) + _TINY)

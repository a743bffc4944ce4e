"""APGD-T: APGD on the targeted DLR loss, one run per target among the top classes."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from advkit._checks import EpsArg, check_int
from advkit.attacks.apgd import APGD
from advkit.attacks.base import _arguments
from advkit.attacks.losses import targeted_dlr_loss
from advkit.attacks.targeting import Targeting, check_target_count, check_targeting, target_classes

__all__ = ["APGDT"]


class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss, one run per target among the top classes.

    For target rank ``k = 2 .. n_target_classes + 1`` (and each of ``n_restarts`` restarts) one
    APGD run attacks the samples still robust, ascending :func:`~advkit.attacks.targeted_dlr_loss`
    towards the class with the ``k``-th largest clean logit. A sample counts as fooled when it
    is misclassified (as any class), as in the reference. Run ``r`` in that order (target-major)
    visits points ``1 + r * (steps + 1) + t``, after point 0, the clean input.

    Args:
        eps: Radius of the ball, a float or a per-sample tensor ``[N]``.
        norm: ``"Linf"`` or ``"L2"``.
        steps: Iterations per run, >= 1.
        n_restarts: Runs per target class, >= 1.
        n_target_classes: How many target classes to try, >= 1 and below the number of
            classes of the model (checked at call time; at least 4 classes are needed).
        rho: The fraction of increasing steps below which the step size halves, in ``(0, 1]``.
        seed: Seed of the random starts when :meth:`~advkit.attacks.Attack.run` gets no
            ``generator``; ``None`` draws from the global RNG.
        eot_iter: Forward+backward passes averaged per gradient (EOT), as in
            :class:`~advkit.attacks.APGD`.
        exit_fooled: Per-sample exits, as in :class:`~advkit.attacks.APGD`: a fooled sample
            leaves every later step and target run at once.
        targeting: How the targets are chosen: ``"logits"`` (the reference: the classes of
            the 2nd, 3rd, ... highest clean logits) or ``"malt"`` (the classes of highest
            :func:`~advkit.attacks.targeting.malt_scores`, MALT; one extra forward pass with
            input gradients and one backward pass per class, on the batch).
        keep_share: A3's discarding, as in :class:`~advkit.attacks.APGD`: each target run
            after the first attacks only this share of the still-robust samples, those of
            highest margin so far.
        adi_steps: A3's adaptive direction initialization, as in
            :class:`~advkit.attacks.APGD`: each run's ADI steps are biased towards its target.
        **kwargs: ``bounds`` and ``model_mode`` of :class:`~advkit.attacks.Attack`.

    Raises:
        ValueError: If a setting is out of range, or ``targeted=True`` is given (the targets are
            chosen by the attack; labels are the true labels); at call time if
            ``n_target_classes`` is not below the number of classes or there are fewer than 4.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020 (reference code: ``fra31/auto-attack``,
        ``APGDAttack_targeted``). With ``targeting="malt"``: Melamed, Yehudai and Shamir,
        "MALT Powers Up Adversarial Attacks", NeurIPS 2024. ``keep_share``, ``adi_steps``:
        Liu et al., "Practical Evaluation of Adversarial Robustness via Adaptive Auto Attack",
        CVPR 2022.

    Example:
        >>> import torch
        >>> from advkit.attacks import APGDT
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 4])
        >>> attack = APGDT(eps=8 / 255, steps=5, n_target_classes=3)
        >>> result = attack.run(model, x, y)
        >>> attack.iterate_count(), int(result.success_step.max()) < attack.iterate_count()
        (19, True)
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Literal["Linf", "L2"] = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        seed: int | None = 0,
        eot_iter: int = 1,
        exit_fooled: bool = False,
        targeting: Targeting = "logits",
        keep_share: float = 1.0,
        adi_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        settings = _arguments(locals())
        self._record_settings(**settings)
        if kwargs.get("targeted", False):
            raise ValueError(
                "APGDT chooses its own target classes; pass the true labels and targeted=False"
            )
        if "loss" in kwargs:
            raise TypeError("APGDT always uses the targeted DLR loss; it takes no loss argument")
        # APGD's settings: all but the targets'
        del settings["n_target_classes"], settings["targeting"]
        super().__init__(**settings)
        self.loss = "dlr-targeted"  # the name of the loss _loss computes, with the targets
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", minimum=1)
        self.targeting: Targeting = check_targeting(targeting)

    def _runs(self) -> int:
        return self.n_target_classes * self.n_restarts

    def _loss(self, logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        assert targets is not None  # internal invariant: every APGDT run has targets
        return targeted_dlr_loss(logits, labels, targets)

    def _check_classes(self, num_classes: int) -> None:
        check_target_count(self.n_target_classes, num_classes)
        if num_classes < 4:
            raise ValueError(f"APGDT needs at least 4 classes, the model has {num_classes}")

    def _run_targets(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, clean_logits: Tensor
    ) -> list[Tensor | None]:
        targets = target_classes(
            model,
            inputs,
            labels,
            clean_logits,
            self.n_target_classes,
            targeting=self.targeting,
            norm=self.norm,
        )
        return [targets[:, k] for k in range(self.n_target_classes) for _ in range(self.n_restarts)]

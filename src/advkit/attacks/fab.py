"""FAB-T: the targeted Fast Adaptive Boundary attack, minimum-norm, as AutoAttack runs it."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from advkit._checks import (
    EpsArg,
    check_bool,
    check_differentiable,
    check_int,
    check_logits,
    check_real,
    check_steps,
)
from advkit.attacks.base import Attack, AttackResult, _arguments, _per_sample
from advkit.attacks.masking import warn_probabilities
from advkit.attacks.targeting import Targeting, check_target_count, check_targeting, target_classes

__all__ = ["FAB", "project_onto_hyperplane"]


def project_onto_hyperplane(
    points: Tensor,
    w: Tensor,
    b: Tensor,
    *,
    norm: Literal["Linf", "L2"],
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    r"""The smallest step from each point onto its hyperplane, staying in the box.

    Solves, per row, :math:`\min_d \|d\|` subject to :math:`w^\top (t + d) = b` and
    :math:`lo \le t + d \le hi`, for ``norm`` L-inf or L2. If no point of the box lies on the
    hyperplane, ``d`` moves ``t`` to the corner of the box that comes closest to it.
    Coordinates with ``w_i = 0`` never move.

    Both problems reduce to one search. Write :math:`r = |w^\top t - b|`, and let coordinate
    ``i`` move towards the hyperplane by at most :math:`\rho_i`, the room to the box. The
    L-inf solution moves every coordinate by :math:`\min(\lambda, \rho_i)`; the L2 solution
    (from its KKT conditions) by :math:`\min(\lambda |w_i|, \rho_i)`. Either way the distance
    covered, :math:`\sum_i q_i \min(\lambda, \beta_i)` with :math:`q_i = |w_i|, \beta_i = \rho_i`
    (L-inf) or :math:`q_i = w_i^2, \beta_i = \rho_i / |w_i|` (L2), is increasing and piecewise
    linear in :math:`\lambda`: sorting the :math:`\beta_i` gives the segment where it reaches
    :math:`r`, and :math:`\lambda` in closed form. The reference implementation (Croce and
    Hein's ``fab_projections.py``) bisects over the same sorted breakpoints for the box
    ``[0, 1]``; this one takes any box.

    Args:
        points: The points ``t``, shape ``[M, D]``, inside ``bounds``.
        w: The hyperplanes' normals, ``[M, D]``.
        b: The hyperplanes' offsets, ``[M]``.
        norm: ``"Linf"`` or ``"L2"``.
        bounds: The box ``(lo, hi)``.

    Returns:
        The steps ``d``, shape ``[M, D]``.

    References:
        Croce and Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive
        Boundary Attack", ICML 2020 (Section 3.1 and the authors' code).
    """
    if norm not in ("Linf", "L2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    lo, hi = bounds
    gap = (w * points).sum(dim=1) - b  # > 0: the points must lower w^T x
    heading = -torch.sign(gap)[:, None] * torch.sign(w)  # each coordinate's direction, or 0
    room = torch.where(heading > 0, hi - points, points - lo).clamp_min(0)
    size = w.abs()
    if norm == "Linf":
        weight, breakpoint = size, room
    else:
        weight = size.square()
        breakpoint = torch.where(size > 0, room / size.clamp_min(1e-30), torch.zeros_like(room))
    breakpoint = torch.where(heading != 0, breakpoint, torch.zeros_like(breakpoint))
    weight = torch.where(heading != 0, weight, torch.zeros_like(weight))
    order = torch.argsort(breakpoint, dim=1)
    sorted_break, sorted_weight = breakpoint.gather(1, order), weight.gather(1, order)
    covered = torch.cumsum(sorted_weight * sorted_break, dim=1)  # by the saturated coordinates
    # Weight of the coordinates after each breakpoint: a reversed cumulative sum, so the
    # tail of zero weights is exactly zero.
    after = sorted_weight.flip(1).cumsum(1).flip(1) - sorted_weight
    reached = covered + sorted_break * after  # distance covered at each breakpoint
    target = gap.abs()
    passed = (reached < target[:, None]).sum(dim=1)  # breakpoints passed before reaching it
    feasible = passed < points.shape[1]
    k = passed.clamp(max=points.shape[1] - 1)[:, None]
    before = torch.where(
        k > 0, covered.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(target)[:, None]
    )
    free = (sorted_weight.gather(1, k) + after.gather(1, k)).clamp_min(1e-30)
    level = ((target[:, None] - before) / free).clamp_min(0)
    if norm == "Linf":
        move = torch.minimum(level.expand_as(room), room)
    else:
        move = torch.minimum(level * size, room)
    move = torch.where(feasible[:, None], move, room)
    return heading * move


class FAB(Attack):
    r"""FAB-T: the targeted Fast Adaptive Boundary attack, used with the *true* labels.

    FAB looks for the adversarial example of smallest norm. At each step it linearizes the
    decision boundary between the true class ``y`` and a target class ``t`` (the hyperplane
    where :math:`f_t - f_y` vanishes to first order), projects both the current iterate and the
    clean input onto it within the box (``advkit.attacks.fab.project_onto_hyperplane``), and
    moves to a convex combination of the two projections, extrapolated by ``eta``, that favours
    the one closer to the clean input (weight at most ``alpha_max``). When the iterate is
    misclassified, it is recorded if it is the closest found and pulled back towards the clean
    input by ``beta``.

    FAB-T, as in AutoAttack, is an *untargeted* evaluation: ``labels`` are the true classes,
    and the attack runs once for each of the ``n_target_classes`` classes the model scores
    highest after the true one, each run on the samples still robust (from the second restart
    on, from a random start at half of ``eps``). A sample counts as fooled only if an
    adversarial example lies within ``eps`` of the clean input (and in the box); its
    ``adversarial`` is the closest one found. A robust sample gets its clean input back.
    ``targeted=True`` is not supported. ``n_target_classes=None`` runs the original untargeted
    FAB instead (one target slot, ``k = 0`` below).

    ``success_step`` numbers the visited points: 0 is the clean input (fooled if already
    misclassified); iterate ``i`` (from 0) of restart ``r`` against the ``k``-th target (both
    from 0) is point ``1 + (k * n_restarts + r) * steps + i``. It is the first that was
    misclassified and within ``eps``. With ``early_stop=True`` a sample stops there instead of
    searching for a closer example; ``fooled`` is the same.

    ``grad_calls`` and ``grad_samples`` count the backward passes (FAB-T: one per step, with
    its forward pass); each step also makes one forward pass to classify the new iterate.

    Args:
        eps: Radius of the threat model (in the norm ``norm``), a float or a per-sample
            tensor ``[N]``. It decides success and the size of random restarts; the search
            itself minimizes the norm.
        norm: ``"Linf"`` (the default) or ``"L2"``.
        steps: Iterations per run, >= 1.
        n_restarts: Runs per target class, >= 1; runs after the first start at random.
        n_target_classes: How many of the highest-scoring other classes to target, >= 1 and
            below the number of classes (AutoAttack uses 9 for 10 classes); or ``None`` for
            the original, untargeted FAB, which at every step heads for the class whose
            linearized boundary is closest (one backward pass per class per step, counted
            as that many ``grad_calls``; AutoAttack's ``"plus"`` version runs it).
        alpha_max: Largest weight of the clean input's projection, in ``[0, 1]``.
        eta: Extrapolation of the projections, > 0 (overshoot past the boundary).
        beta: Backward step towards the clean input after a success, in ``(0, 1]``.
        exit_fooled: Per-sample exits: a sample leaves the search at the first point within
            ``eps`` that fools the model, on every call (as ``run(..., early_stop=True)``),
            instead of searching on for a closer example (the default, the reference).
        targeting: How FAB-T chooses its targets: ``"logits"`` (the reference: the classes
            of the 2nd, 3rd, ... highest clean logits) or ``"malt"`` (the classes of highest
            :func:`~advkit.attacks.targeting.malt_scores`, MALT).
        **kwargs: ``bounds`` and ``model_mode`` of :class:`~advkit.attacks.Attack`.

    Raises:
        ValueError: If a setting is out of range, ``targeted`` or a ``loss`` is given, or (at
            run time) ``n_target_classes`` is not below the number of classes.

    References:
        Croce and Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive
        Boundary Attack", ICML 2020; the targeted version as in Croce and Hein, "Reliable
        Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
        Attacks", ICML 2020. With ``targeting="malt"``: Melamed, Yehudai and Shamir, "MALT
        Powers Up Adversarial Attacks", NeurIPS 2024.

    Example:
        >>> import torch
        >>> from advkit.attacks import FAB
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> result = FAB(eps=8 / 255, steps=10, n_target_classes=2).run(model, x, y)
        >>> bool(((result.adversarial - x).abs() <= 8 / 255 + 1e-6).all())
        True
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Literal["Linf", "L2"] = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        n_target_classes: int | None = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        exit_fooled: bool = False,
        targeting: Targeting = "logits",
        **kwargs: Any,
    ) -> None:
        self._record_settings(**_arguments(locals()))
        if kwargs.get("targeted"):
            raise ValueError(
                "FAB takes the true labels (FAB-T tries target classes itself); "
                "targeted=True is not supported"
            )
        if kwargs.get("loss") is not None:
            raise ValueError("FAB follows the logit differences and takes no loss")
        super().__init__(eps=eps, norm=norm, **kwargs)
        self.steps = check_steps(steps)
        self.n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
        if n_target_classes is not None:  # None: the untargeted FAB
            check_int(n_target_classes, "n_target_classes", minimum=1)
        self.n_target_classes = n_target_classes
        self.alpha_max = check_real(alpha_max, "alpha_max", low=0.0, high=1.0)
        self.eta = check_real(eta, "eta", low=0.0, open_low=True)
        self.beta = check_real(beta, "beta", low=0.0, high=1.0, open_low=True)
        self.exit_fooled = check_bool(exit_fooled, "exit_fooled")
        self.targeting: Targeting = check_targeting(targeting)

    def _difference_gradient(
        self, model: nn.Module, x: Tensor, labels: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``f_t(x) - f_y(x)`` per sample and its gradient with respect to ``x`` only."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            check_logits(logits, x.shape[0], None)
            difference = logits.gather(1, targets[:, None]) - logits.gather(1, labels[:, None])
            check_differentiable(difference, "FAB")
            (grad,) = torch.autograd.grad(difference.sum(), x)
        return difference.detach().squeeze(1), grad

    def _closest_boundary(
        self, model: nn.Module, x: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Untargeted FAB: ``f_j - f_y`` and its gradient for the class ``j`` whose linearized
        boundary is closest, ``|f_j - f_y| / ||grad (f_j - f_y)||_*`` in the dual norm.

        The Jacobian takes one backward pass per class, as in the reference.
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            check_logits(logits, x.shape[0], None)
            check_differentiable(logits, "FAB")
            rows = []
            for j in range(logits.shape[1]):
                (grad,) = torch.autograd.grad(logits[:, j].sum(), x, retain_graph=True)
                rows.append(grad)
        jacobian = torch.stack(rows, dim=1)  # [N, C, ...]
        logits = logits.detach()
        picked = labels[:, None]
        difference = logits - logits.gather(1, picked)
        own = jacobian[torch.arange(x.shape[0], device=x.device), labels].unsqueeze(1)
        gradients = (jacobian - own).flatten(2)
        dual = 1 if self.norm == "Linf" else 2
        distance = difference.abs() / (1e-12 + gradients.norm(p=dual, dim=2))
        distance = distance.scatter(1, picked, math.inf)
        closest = distance.argmin(dim=1)
        chosen = torch.arange(x.shape[0], device=x.device)
        return difference[chosen, closest], gradients[chosen, closest].view_as(x)

    def _random_start(self, x0: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        """The reference's restart: a random direction scaled to ``eps / 2`` in the norm."""
        if self.norm == "Linf":
            noise = 2 * torch.rand(x0.shape, generator=generator, device=x0.device) - 1
            scale = noise.flatten(1).abs().amax(1)
        else:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
            scale = noise.flatten(1).norm(dim=1)
        noise = noise.to(x0.dtype) / scale.clamp_min(1e-12).view(-1, *(1,) * (x0.ndim - 1))
        return torch.clamp(x0 + 0.5 * eps * noise, *self.bounds)

    def _search(
        self,
        model: nn.Module,
        x0: Tensor,
        labels: Tensor,
        targets: Tensor | None,
        eps: Tensor,
        x1: Tensor,
        first_point: int,
        early_stop: bool,
        found: _Found,
        index: Tensor,
    ) -> None:
        """One run of FAB-T on the samples ``index`` from ``x1``, recording into ``found``."""
        shape = (-1,) + (1,) * (x0.ndim - 1)
        for step in range(self.steps):
            if index.numel() == 0:
                return
            n = x0.shape[0]
            if targets is None:
                difference, grad = self._closest_boundary(model, x1, labels)
                calls = found.classes  # one backward pass per class
            else:
                difference, grad = self._difference_gradient(model, x1, labels, targets)
                calls = 1
            found.grad_calls += calls
            found.grad_samples += calls * n
            w = grad.flatten(1)
            b = (w * x1.flatten(1)).sum(1) - difference
            steps_both = project_onto_hyperplane(
                torch.cat((x1.flatten(1), x0.flatten(1))),
                torch.cat((w, w)),
                torch.cat((b, b)),
                norm=self.norm,
                bounds=self.bounds,
            )
            order = math.inf if self.norm == "Linf" else 2
            sizes = torch.linalg.vector_norm(steps_both, ord=order, dim=1).clamp_min(1e-8)
            d1, d2 = steps_both[:n].view_as(x0), steps_both[n:].view_as(x0)
            a1, a2 = sizes[:n], sizes[n:]
            alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max).view(shape)
            x1 = (x1 + self.eta * d1) * (1 - alpha) + (x0 + self.eta * d2) * alpha
            x1 = torch.clamp(x1, *self.bounds)
            with torch.no_grad():
                logits = model(x1)
            adversarial = logits.argmax(dim=1) != labels
            distance = self.threat_model.distance(x1, x0)
            found.record(index, adversarial, distance, eps, x1, logits, first_point + step)
            x1 = torch.where(adversarial.view(shape), x0 + (x1 - x0) * self.beta, x1)
            if early_stop:
                keep = found.success_step[index] < 0
                if not bool(keep.all()):
                    index, x0, x1 = index[keep], x0[keep], x1[keep]
                    labels, eps = labels[keep], eps[keep]
                    targets = None if targets is None else targets[keep]

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        early_stop = early_stop or self.exit_fooled
        eps = _per_sample(self.eps, inputs)
        with torch.no_grad():
            logits = model(inputs)
        check_logits(logits, inputs.shape[0], labels)
        warn_probabilities(logits)
        if self.n_target_classes is not None:
            check_target_count(self.n_target_classes, logits.shape[1])
        found = _Found(inputs, logits, labels, eps)
        # The reference's targets: the 2nd, 3rd, ... highest-scoring classes at the clean input.
        ranked = logits.argsort(dim=1, descending=True)
        if self.n_target_classes is not None and self.targeting == "malt":
            chosen = target_classes(
                model, inputs, labels, logits, self.n_target_classes, targeting="malt",
                norm=self.norm,
            )  # fmt: skip
            ranked = torch.cat((labels[:, None], chosen), dim=1)  # slot 0 is never a target
        for k in range(self.n_target_classes or 1):
            for restart in range(self.n_restarts):
                index = torch.nonzero(found.success_step < 0).squeeze(1)
                index = index[found.movable[index]]
                if index.numel() == 0:
                    break
                x0, sub_eps = inputs[index], eps[index]
                x1 = x0 if restart == 0 else self._random_start(x0, sub_eps, generator)
                first = 1 + (k * self.n_restarts + restart) * self.steps
                self._search(
                    model,
                    x0,
                    labels[index],
                    None if self.n_target_classes is None else ranked[index, k + 1],
                    sub_eps,
                    x1.clone(),
                    first,
                    early_stop,
                    found,
                    index,
                )
        adversarial = found.adversarial.detach()
        if not track:
            return adversarial, None
        return adversarial, AttackResult(
            adversarial=adversarial,
            success=found.logits.argmax(dim=1) != labels,
            logits=found.logits.detach(),
            success_step=found.success_step,
            grad_calls=found.grad_calls,
            grad_samples=found.grad_samples,
        )


class _Found:
    """The closest adversarial example within eps found so far per sample, and the counts."""

    def __init__(self, inputs: Tensor, logits: Tensor, labels: Tensor, eps: Tensor) -> None:
        batch = inputs.shape[0]
        self.adversarial = inputs.clone()
        self.logits = logits.clone()
        self.success_step = torch.where(logits.argmax(dim=1) != labels, 0, -1).long()
        self.distance = torch.full((batch,), math.inf, dtype=inputs.dtype, device=inputs.device)
        self.distance[self.success_step == 0] = 0
        # A sample with eps = 0 can only be fooled at its clean input.
        self.movable = eps.reshape(batch, -1)[:, 0] > 0
        self.classes = logits.shape[1]
        self.grad_calls = self.grad_samples = 0

    def record(
        self,
        index: Tensor,
        adversarial: Tensor,
        distance: Tensor,
        eps: Tensor,
        points: Tensor,
        logits: Tensor,
        point: int,
    ) -> None:
        """Keep the misclassified ``points`` that are within ``eps`` and closer than before."""
        valid = adversarial & (distance <= eps.reshape(eps.shape[0], -1)[:, 0])
        closer = valid & (distance < self.distance[index])
        chosen = index[closer]
        self.adversarial[chosen] = points[closer]
        self.logits[chosen] = logits[closer]
        self.distance[chosen] = distance[closer]
        first = index[valid]
        self.success_step[first] = torch.where(
            self.success_step[first] < 0, point, self.success_step[first]
        )

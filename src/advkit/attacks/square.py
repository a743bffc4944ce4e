"""Square: the query-based black-box attack by random search over square-shaped updates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import EpsArg, check_int, check_logits, check_real
from advkit.attacks.base import Attack, AttackResult, _arguments, _per_sample

__all__ = ["Square", "SquareResult", "p_selection"]

SquareLoss = Literal["margin", "ce"]

# The reference's schedule: (last iteration, out of 10000, at which p_init is divided by ...).
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64))
_SCHEDULE += ((6000, 128), (8000, 256))


def p_selection(p_init: float, iteration: int, n_queries: int) -> float:
    """The fraction of pixels a square covers at ``iteration`` (0-based) of ``n_queries``.

    The authors' schedule, rescaled to the budget: ``it = int(iteration / n_queries * 10000)``,
    then ``p_init`` is halved at ``it`` = 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
    (``p_init / 2`` for ``10 < it <= 50``, ..., ``p_init / 512`` beyond 8000).
    """
    it = int(iteration / n_queries * 10000)
    for last, divisor in _SCHEDULE:
        if it <= last:
            return p_init / divisor
    return p_init / 512


@dataclass(frozen=True)
class SquareResult(AttackResult):
    """An :class:`~advkit.attacks.AttackResult` with the number of queries each sample cost.

    Attributes:
        queries: Per-sample number of model evaluations, ``[N]`` int64, counting the one of
            the clean input. Square computes no gradient: ``grad_calls`` and ``grad_samples``
            are 0.
    """

    queries: Tensor


class Square(Attack):
    r"""Square Attack: random search with square-shaped updates, forward passes only.

    Each sample starts from a random point on the boundary of the ball (L-inf: vertical stripes
    of :math:`\pm\epsilon`; L2: a grid of windows filled with the paper's :math:`\eta` pattern)
    and proposes one change per iteration: an L-inf square set to :math:`\pm 2\epsilon` and
    projected, or for L2 mass moved between two windows so the perturbation keeps its norm. A
    proposal is kept if it lowers the loss or fools the model. The square covers a fraction of
    the pixels (``advkit.attacks.square.p_selection``): ``p_init`` at first, halved along the
    schedule. Only samples not yet fooled are queried; a fooled sample keeps the point that
    fooled it. Restarts attack the survivors again from a new random start.

    The model is only queried for logits, never differentiated, so a defense that breaks
    gradients (masking, obfuscation) does not hide its weakness from this attack.

    ``success_step`` numbers the queried points: 0 is the clean input; restart ``r`` (from 0)
    queries its start as point ``1 + r * (n_queries + 1)`` and the proposal of its iteration
    ``i`` as point ``2 + i + r * (n_queries + 1)``. ``early_stop`` changes nothing: a sample
    always stops at the point that fooled it. A robust sample's ``adversarial`` is the point
    of lowest loss found.

    Differences from the reference implementation (fra31/auto-attack ``square.py``): the
    randomness comes from the ``generator`` passed to :meth:`~advkit.attacks.Attack.run` (the
    reference reseeds the global RNG); a window's corner is drawn from all ``h - s + 1``
    positions (the reference's draw never reaches the last row or column); the square's side is
    capped at the image's smaller side, and the L2 start's windows are at least one pixel wide,
    so images smaller than the reference assumes work; samples with ``eps = 0`` are not attacked
    (every point would be the clean input). As in the reference, each iteration places one
    window (and for L-inf one sign per channel) for the whole batch, and an untargeted
    ``loss="ce"`` or a targeted attack minimizes the cross-entropy; a sample stops once it is
    fooled.

    Args:
        eps: Radius of the threat model (in the norm ``norm``), a float or a per-sample
            tensor ``[N]``.
        norm: ``"Linf"`` (the default) or ``"L2"``.
        n_queries: Iterations per restart, >= 1: each queries the model once per sample still
            attacked. With the start and the clean input a sample costs at most
            ``1 + n_restarts * (n_queries + 1)`` queries.
        p_init: Fraction of the pixels the first squares cover, in ``(0, 1]``.
        n_restarts: Number of runs from a new random start, >= 1.
        loss: ``"margin"`` (the default): the true class's logit minus the largest other; or
            ``"ce"``: minus the cross-entropy.
        **kwargs: ``bounds``, ``targeted`` and ``model_mode`` of :class:`~advkit.attacks.Attack`.

    Raises:
        ValueError: If ``n_queries`` or ``n_restarts`` is < 1, ``p_init`` is outside
            ``(0, 1]``, ``loss`` is unknown, or the inputs are not images ``[N, C, H, W]``.

    References:
        Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient
        black-box adversarial attack via random search", ECCV 2020.

    Example:
        >>> import torch
        >>> from advkit.attacks import Square
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> gen = torch.Generator().manual_seed(0)
        >>> result = Square(eps=8 / 255, n_queries=50).run(model, x, y, generator=gen)
        >>> bool(((result.adversarial - x).abs() <= 8 / 255 + 1e-6).all())
        True
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Literal["Linf", "L2"] = "Linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        loss: SquareLoss = "margin",
        **kwargs: Any,
    ) -> None:
        self._record_settings(**_arguments(locals()))
        super().__init__(eps=eps, norm=norm, **kwargs)
        self.n_queries = check_int(n_queries, "n_queries", minimum=1)
        self.n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
        self.p_init = check_real(p_init, "p_init", low=0, high=1, open_low=True)
        if loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
        self.square_loss: SquareLoss = loss

    # -- the objective -------------------------------------------------------------------------

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-sample loss the search lowers: the margin, or the (signed) cross-entropy."""
        if self.targeted:
            return F.cross_entropy(logits, labels, reduction="none")
        if self.square_loss == "ce":
            return -F.cross_entropy(logits, labels, reduction="none")
        picked = logits.gather(1, labels[:, None]).squeeze(1)
        return picked - logits.scatter(1, labels[:, None], -math.inf).amax(dim=1)

    # -- random draws ---------------------------------------------------------------------------

    @staticmethod
    def _signs(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return (2 * bits - 1).to(like.dtype)

    @staticmethod
    def _corner(size: int, side: int, uniform: float) -> int:
        """A window's first row (or column), uniform over the ``size - side + 1`` positions."""
        return min(int(uniform * (size - side + 1)), size - side)

    # -- one restart ----------------------------------------------------------------------------

    def _linf_proposal(
        self,
        x: Tensor,
        best: Tensor,
        eps: Tensor,
        lower: Tensor,
        upper: Tensor,
        iteration: int,
        draw: list[float],
        generator: torch.Generator | None,
    ) -> Tensor:
        c, h, w = x.shape[1:]
        side = _side(self.p_init, iteration, self.n_queries, h, w, minimum=1)
        vh, vw = self._corner(h, side, draw[0]), self._corner(w, side, draw[1])
        signs = self._signs((c, 1, 1), x, generator)
        proposal = best.clone()
        proposal[:, :, vh : vh + side, vw : vw + side] += 2 * eps * signs
        return torch.clamp(proposal, lower, upper)

    def _l2_start(
        self, x: Tensor, eps: Tensor, generator: torch.Generator | None, index: Tensor, n: int
    ) -> Tensor:
        """Windows of side ``h // 5`` in a grid, each an ``eta`` pattern with a random sign.

        The signs are drawn for the whole batch of ``n`` and taken at ``index``, so a sample's
        draws do not depend on which other samples are still attacked.
        """
        c, h, w = x.shape[1:]
        side = max(h // 5, 1)
        offset = (h - side * 5) // 2 if h >= 5 else 0
        delta = torch.zeros_like(x)
        # One read-back for the patterns' random transposes, not one per window.
        flips = torch.rand((h // side, w // side), generator=generator, device=x.device).tolist()
        for row in range(h // side):
            vh = offset + row * side
            for col in range(w // side):
                vw = offset + col * side
                pattern = _eta(side, x, transpose=flips[row][col] > 0.5)
                signs = self._signs((n, c, 1, 1), x, generator)[index]
                window = delta[:, :, vh : vh + side, vw : vw + side]
                window += (pattern * signs)[:, :, : window.shape[2], : window.shape[3]]
        return torch.clamp(x + _unit_l2(delta) * eps, *self.bounds)

    def _l2_proposal(
        self,
        x: Tensor,
        best: Tensor,
        eps: Tensor,
        iteration: int,
        signs: Tensor,
        draw: list[float],
    ) -> Tensor:
        c, h, w = x.shape[1:]
        side = _side(self.p_init, iteration, self.n_queries, h, w, minimum=3)
        if side % 2 == 0 and side < min(h, w):
            side += 1
        vh, vw = self._corner(h, side, draw[0]), self._corner(w, side, draw[1])
        vh2, vw2 = self._corner(h, side, draw[2]), self._corner(w, side, draw[3])
        first = (slice(None), slice(None), slice(vh, vh + side), slice(vw, vw + side))
        second = (slice(None), slice(None), slice(vh2, vh2 + side), slice(vw2, vw2 + side))
        delta = best - x
        mask = torch.zeros_like(x[:1])
        mask[first] = 1.0
        mask[second] = 1.0
        image_norm = _norm2(delta)
        windows_norm = _norm2(delta * mask)
        old = delta[first]
        old = old / (1e-12 + old.square().sum(dim=(-2, -1), keepdim=True).sqrt())
        new = _eta(side, x, transpose=draw[4] > 0.5) * signs + old
        budget = torch.clamp(eps.square() - image_norm.square(), min=0) / c
        new = new / (1e-12 + new.square().sum(dim=(-2, -1), keepdim=True).sqrt())
        delta[second] = 0.0
        delta[first] = new * (budget + windows_norm.square()).sqrt()
        return torch.clamp(x + _unit_l2(delta) * eps, *self.bounds)

    def _attack_once(
        self,
        model: nn.Module,
        x: Tensor,
        labels: Tensor,
        eps: Tensor,
        generator: torch.Generator | None,
        first_point: int,
        record: _Record,
    ) -> None:
        """One restart on the samples ``record.active``, writing what it finds into ``record``."""
        index = record.active
        n, c, _, w = x.shape
        x, labels, eps = x[index], labels[index], eps[index]
        if self.norm == "Linf":  # vertical stripes: one sign per channel and column
            signs = self._signs((n, c, 1, w), x, generator)[index]
            best = torch.clamp(x + eps * signs, *self.bounds)
        else:
            best = self._l2_start(x, eps, generator, index, n)
        logits = record.query(model, best, index)
        loss = self._loss(logits, labels)
        fooled = self.is_success(logits, labels)
        record.fooled(index, fooled, best, logits, first_point)
        keep = ~fooled
        index, x, labels, eps, best = index[keep], x[keep], labels[keep], eps[keep], best[keep]
        loss, best_logits = loss[keep], logits[keep]
        lower = torch.clamp(x - eps, min=self.bounds[0])
        upper = torch.clamp(x + eps, max=self.bounds[1])
        # The windows' positions and the patterns' transposes, read back once per restart.
        draws = torch.rand((self.n_queries, 5), generator=generator, device=x.device).tolist()
        for iteration, draw in enumerate(draws):
            if index.numel() == 0:
                break
            if self.norm == "Linf":
                proposal = self._linf_proposal(
                    x, best, eps, lower, upper, iteration, draw, generator
                )
            else:
                signs = self._signs((n, c, 1, 1), x, generator)[index]
                proposal = self._l2_proposal(x, best, eps, iteration, signs, draw)
            logits = record.query(model, proposal, index)
            new_loss = self._loss(logits, labels)
            fooled = self.is_success(logits, labels)
            improved = new_loss < loss
            loss = torch.where(improved, new_loss, loss)
            accept = improved | fooled
            best = torch.where(accept.view(-1, 1, 1, 1), proposal, best)
            best_logits = torch.where(accept[:, None], logits, best_logits)
            if bool(fooled.any()):  # the one read-back of an iteration
                record.fooled(index, fooled, proposal, logits, first_point + 1 + iteration)
                keep = ~fooled
                index, x, labels, eps = index[keep], x[keep], labels[keep], eps[keep]
                best, best_logits, loss = best[keep], best_logits[keep], loss[keep]
                lower, upper = lower[keep], upper[keep]
        # The survivors keep this restart's best point if it beats the earlier restarts'.
        record.improve(index, best, best_logits, loss)

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        if inputs.ndim != 4:
            raise ValueError(
                f"Square attacks images [N, C, H, W], got inputs of shape {list(inputs.shape)}"
            )
        eps = _per_sample(self.eps, inputs)
        with torch.no_grad():
            logits = model(inputs)
            check_logits(logits, inputs.shape[0], labels)
            record = _Record(inputs, logits, self.is_success(logits, labels), eps)
            for restart in range(self.n_restarts):
                if record.active.numel() == 0:
                    break
                first = 1 + restart * (self.n_queries + 1)
                self._attack_once(model, inputs, labels, eps, generator, first, record)
        adversarial = record.adversarial.detach()
        if not track:
            return adversarial, None
        return adversarial, SquareResult(
            adversarial=adversarial,
            success=self.is_success(record.logits, labels),
            logits=record.logits.detach(),
            success_step=record.success_step,
            grad_calls=0,
            grad_samples=0,
            queries=record.queries,
        )


class _Record:
    """What a Square run found so far: per-sample best point, its logits and loss, queries."""

    def __init__(self, inputs: Tensor, logits: Tensor, fooled: Tensor, eps: Tensor) -> None:
        batch = inputs.shape[0]
        self.adversarial = inputs.clone()
        self.logits = logits.clone()
        self.loss = torch.full((batch,), math.inf, dtype=logits.dtype, device=inputs.device)
        self.success_step = torch.where(fooled, 0, -1).long()
        self.queries = torch.ones(batch, dtype=torch.long, device=inputs.device)
        self._position = torch.full((batch,), -1, dtype=torch.long, device=inputs.device)
        # A sample with eps = 0 can only visit its clean input, which did not fool.
        movable = eps.reshape(batch, -1)[:, 0] > 0
        self.active = torch.nonzero(~fooled & movable).squeeze(1)

    def query(self, model: nn.Module, points: Tensor, index: Tensor) -> Tensor:
        logits = model(points)
        check_logits(logits, points.shape[0], None)
        self.queries[index] += 1
        return logits

    def improve(self, index: Tensor, points: Tensor, logits: Tensor, loss: Tensor) -> None:
        """Keep ``points`` of the robust samples ``index`` whose loss is the lowest so far."""
        better = loss <= self.loss[index]
        chosen = index[better]
        self.adversarial[chosen] = points[better]
        self.logits[chosen] = logits[better]
        self.loss[chosen] = loss[better]

    def fooled(
        self, index: Tensor, fooled: Tensor, points: Tensor, logits: Tensor, point: int
    ) -> None:
        chosen = index[fooled]
        if chosen.numel() == 0:
            return
        self.adversarial[chosen] = points[fooled]
        self.logits[chosen] = logits[fooled]
        self.success_step[chosen] = point
        keep = torch.ones_like(self.queries, dtype=torch.bool)
        keep[chosen] = False
        self.active = self.active[keep[self.active]]


def _side(p_init: float, iteration: int, n_queries: int, h: int, w: int, minimum: int) -> int:
    """Side of the square at ``iteration``: ``round(sqrt(p * h * w))``, within [minimum, h, w]."""
    p = p_selection(p_init, iteration, n_queries)
    return min(max(round(math.sqrt(p * h * w)), minimum), h, w)


def _norm2(values: Tensor) -> Tensor:
    return values.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()


def _unit_l2(values: Tensor) -> Tensor:
    """``values / ||values||_2`` per sample (the reference's ``+ 1e-12`` guards zero)."""
    return values / (_norm2(values) + 1e-12)


def _rectangles(rows: int, cols: int, like: Tensor) -> Tensor:
    """Nested rectangles around the centre, ring ``k`` weighted ``1 / (k + 1)^2``, unit L2."""
    pattern = torch.zeros(rows, cols, dtype=like.dtype, device=like.device)
    top, left = rows // 2, cols // 2
    for ring in range(max(rows // 2 + 1, cols // 2 + 1)):
        pattern[
            max(top - ring, 0) : min(top - ring + 2 * ring + 1, rows),
            max(left - ring, 0) : min(left - ring + 2 * ring + 1, cols),
        ] += 1.0 / (ring + 1) ** 2
    return pattern / pattern.square().sum().sqrt()


def _eta(side: int, like: Tensor, *, transpose: bool) -> Tensor:
    """The paper's L2 window pattern: two opposite halves of rectangles, randomly transposed."""
    pattern = torch.zeros(side, side, dtype=like.dtype, device=like.device)
    half = side // 2
    if half > 0:
        pattern[:half] = _rectangles(half, side, like)
    pattern[half:] = -_rectangles(side - half, side, like)
    pattern = pattern / pattern.square().sum().sqrt()
    if transpose:
        pattern = pattern.t()
    return pattern.view(1, 1, side, side)

"""Robustness-aware filter importance: adversarial Taylor scores and learned (HYDRA-style) scores.

Both measure a channel by what removing it does to the *adversarial* loss, not by the size of
its weights. Removing channel ``c`` of a group is the same as multiplying it by a gate
``g_c = 0`` in every layer that reads it (BatchNorm and depthwise layers act per channel, and a
residual sum makes all its readers one group), so both work with such gates:

* :class:`AdversarialTaylor` takes the first-order estimate of the loss change from the
  gradient of the loss with respect to gates of value 1 (Molchanov et al. 2019), on adversarial
  examples.
* :class:`RobustScoreLearner` trains one score per channel with the weights frozen, keeping the
  top-k channels of each group in the forward pass (HYDRA, Sehwag et al. 2020, made structured).

Both compute every group of a plan in one pass with ``prepare(model, plan)``, which returns
:class:`ChannelScores`: an ordinary importance for :class:`~advkit.pruning.Pruner`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import check_bool, check_int, check_model, check_pair, warn
from advkit._guard import model_state
from advkit.attacks import Attack
from advkit.pruning.channels import ChannelGroup
from advkit.pruning.importance import Importance, l1_filter_norm
from advkit.pruning.plan import PruningPlan
from advkit.pruning.pruner import Pruner
from advkit.pruning.registry import find_handler
from advkit.recipes._gates import gated, install_gates
from advkit.training import Objective, Trainer

__all__ = [
    "AdversarialTaylor",
    "ChannelScores",
    "PlannedImportance",
    "RobustScoreLearner",
    "ScoredNetwork",
    "scaled_l1_init",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


@runtime_checkable
class PlannedImportance(Protocol):
    """An importance that scores every group of a plan at once: ``prepare(model, plan)``.

    The plan gives the groups (their layers) and, as ``len(keep)``, how many channels each
    keeps; which channels it names does not matter. The result scores those groups.
    """

    def prepare(self, model: nn.Module, plan: PruningPlan) -> Importance:
        """Scores for every group of ``plan``, as an importance callable."""
        ...


class ChannelScores:
    """Precomputed scores, one tensor per group, usable as an importance.

    Calling it as ``scores(group, model)`` returns the scores stored for the group with the
    same producing layers (``group.producers``).

    Args:
        scores: ``{producers: scores}``, the producers a tuple of layer names.
        name: Name shown by the pruner and in reports.
        seconds: Wall time it took to compute the scores.

    Attributes:
        scores: The stored scores (float64, on the CPU).
        seconds: Wall time it took to compute them.

    Raises:
        TypeError: If a score is not a 1-D tensor.
    """

    def __init__(
        self, scores: Mapping[tuple[str, ...], Tensor], *, name: str, seconds: float = 0.0
    ) -> None:
        stored: dict[tuple[str, ...], Tensor] = {}
        for producers, value in scores.items():
            if not isinstance(value, Tensor) or value.ndim != 1:
                raise TypeError(f"scores of {producers} must be a 1-D tensor, got {value!r}")
            stored[tuple(producers)] = value.detach().to(device="cpu", dtype=torch.float64)
        self.scores = stored
        self.__name__ = name
        self.seconds = float(seconds)

    def __call__(self, group: ChannelGroup, model: nn.Module) -> Tensor:
        """The stored scores of ``group``.

        Raises:
            ValueError: If no scores are stored for the group.
        """
        try:
            return self.scores[group.producers]
        except KeyError:
            raise ValueError(
                f"{self.__name__} has no scores for the group made by {group.producers}; it "
                f"holds {sorted(self.scores)}"
            ) from None

    def __repr__(self) -> str:
        return f"ChannelScores(name={self.__name__!r}, groups={len(self.scores)})"


def _groups_of(plan: PruningPlan) -> list[ChannelGroup]:
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan, got {type(plan).__name__}")
    return [ChannelGroup(group.channels, group.uses) for group in plan.groups]


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class AdversarialTaylor:
    """First-order estimate of how much the adversarial loss grows if a channel is removed.

    With a gate ``g_c = 1`` multiplying channel ``c`` in every layer that reads it, removing
    the channel sets ``g_c = 0``, and the loss changes by about ``-dL/dg_c``, where
    ``dL/dg_c = sum over readers, samples and positions of a * dL/da`` (``a`` the reader's
    input: activation times gradient). Following Molchanov et al. (2019, the "gate after
    BatchNorm" variant, eq. 8) the score of a channel is ``(dL/dg_c)^2`` for the mean loss of
    a batch, averaged over ``batches`` batches. The batches are first attacked with ``attack``
    (in eval mode), so this is the Taylor criterion on the adversarial objective; with
    ``attack=None`` it is the clean criterion. The model runs in eval mode with its weights
    frozen; nothing of it changes, and no graph outlives a batch.

    Summing over the readers makes the score of a channel shared by a residual sum the
    estimate for removing it from every layer at once, which is what the pruner does.
    Calling the object as an importance (``importance(group, model)``) runs the batches for
    that one group; :meth:`prepare` scores every group of a plan in the same passes.

    Args:
        attack: Makes the adversarial examples, or ``None`` for clean inputs.
        loader: Yields ``(inputs, labels)`` batches; the first ``batches`` are used.
        batches: How many batches to average over.
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.
        generator: Randomness for attacks with random starts.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``batches < 1``.

    References:
        Molchanov, Mallya, Tyree, Frosio and Kautz, "Importance Estimation for Neural
        Network Pruning", CVPR 2019.

    Example:
        >>> from advkit.attacks import PGD
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> data = [(torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,)))]
        >>> taylor = AdversarialTaylor(PGD(eps=4 / 255, steps=3), data, batches=1)
        >>> Pruner(ratio=0.5, targets="0", importance=taylor).plan(
        ...     net, torch.rand(1, 3, 8, 8)).kept_filters()
        {'0': 2}
    """

    __name__ = "adversarial_taylor"

    def __init__(
        self,
        attack: Attack | None,
        loader: Iterable[Any],
        *,
        batches: int = 4,
        loss_fn: LossFn | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if attack is not None and not isinstance(attack, Attack):
            raise TypeError(f"attack must be an advkit Attack or None, got {type(attack).__name__}")
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be iterable, got {type(loader).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.attack = attack
        self.loader = loader
        self.batches = check_int(batches, "batches", minimum=1)
        self.loss_fn: LossFn = loss_fn or F.cross_entropy
        self.generator = generator

    def __repr__(self) -> str:
        return f"AdversarialTaylor(attack={self.attack!r}, batches={self.batches})"

    def __call__(self, group: ChannelGroup, model: nn.Module) -> Tensor:
        """Scores of one group (``[group.channels]``, float64)."""
        return self.scores(model, [group])[0]

    def prepare(self, model: nn.Module, plan: PruningPlan) -> ChannelScores:
        """Score every group of ``plan`` in one set of passes."""
        groups = _groups_of(plan)
        start = time.perf_counter()
        values = self.scores(model, groups)
        return ChannelScores(
            {group.producers: value for group, value in zip(groups, values, strict=True)},
            name=self.__name__,
            seconds=time.perf_counter() - start,
        )

    def scores(self, model: nn.Module, groups: Sequence[ChannelGroup]) -> list[Tensor]:
        """The scores of each group in ``groups``, from the same batches.

        Warns:
            UserWarning: If every channel of a group scores 0 (no gradient reached it): the
                pruner would then remove channels by index alone.

        Raises:
            TypeError: If ``model`` is not a module or the loader yields something else than
                ``(inputs, labels)`` pairs.
            ValueError: If the loader yields no batch.
        """
        check_model(model)
        device = _device(model)
        totals = [torch.zeros(group.channels, dtype=torch.float64) for group in groups]
        uses = [group.uses for group in groups]
        seen = 0
        with model_state(model, freeze=True):
            for index, batch in enumerate(self.loader):
                if index >= self.batches:
                    break
                inputs, labels = check_pair(batch, "loader", index)
                inputs, labels = inputs.to(device), labels.to(device)
                if self.attack is not None:
                    inputs = self.attack(model, inputs, labels, generator=self.generator)
                gates = [
                    torch.ones(group.channels, device=device, requires_grad=True)
                    for group in groups
                ]
                with gated(model, uses, gates), torch.enable_grad():
                    loss = self.loss_fn(model(inputs), labels)
                    grads = torch.autograd.grad(loss, gates, allow_unused=True)
                for total, grad in zip(totals, grads, strict=True):
                    if grad is not None:
                        total += grad.detach().double().cpu().square()
                seen += 1
        if seen == 0:
            raise ValueError("loader yielded no batch to compute the Taylor scores on")
        flat = [
            group.producers for group, total in zip(groups, totals, strict=True) if not total.any()
        ]
        if flat:
            warn(
                f"AdversarialTaylor scored every channel 0 in {len(flat)} group(s) (first "
                f"{list(flat[0])}): no gradient reached them on these {seen} batch(es), so the "
                "pruner can only keep the lowest indices; check the loss and the model's outputs "
                "(a saturated or detached output), or use more batches"
            )
        return [total / seen for total in totals]


class _TopK(torch.autograd.Function):
    """1 for the ``k`` largest scores (ties to the lower index), 0 elsewhere; the gradient
    passes straight through (HYDRA's ``GetSubnet``)."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, k: int) -> Tensor:
        mask = torch.zeros_like(scores)
        order = torch.sort(scores, descending=True, stable=True).indices
        mask[order[:k]] = 1.0
        return mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class ScoredNetwork(nn.Module):
    """A frozen network whose groups keep only their top-k channels by trainable scores.

    The only trainable parameters are ``scores``, one ``[channels]`` tensor per group;
    channel ``c`` of group ``i`` is multiplied by 1 where it is read if ``|scores[i][c]|`` is
    among the ``keep[i]`` largest, else by 0, so the forward pass is that of the pruned
    network. The wrapped network always runs in eval mode (BatchNorm on its running
    statistics, which therefore never change): the scores are learned for the weights and
    statistics that will be pruned.

    Args:
        network: The network, used as is (wrap a copy to keep the original); its parameters
            are frozen.
        groups: The groups to mask.
        keep: Channels kept in each group.
        scores: Initial scores, one ``[channels]`` tensor per group.
    """

    def __init__(
        self,
        network: nn.Module,
        groups: Sequence[ChannelGroup],
        keep: Sequence[int],
        scores: Sequence[Tensor],
    ) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()
        self.keep = tuple(int(k) for k in keep)
        dtype = next(network.parameters()).dtype
        self.scores = nn.ParameterList([nn.Parameter(s.detach().clone().to(dtype)) for s in scores])
        self._handles = install_gates(
            network,
            [group.uses for group in groups],
            [self._mask_of(i) for i in range(len(self.keep))],
        )

    def _mask_of(self, index: int) -> Callable[[], Tensor]:
        return lambda: _TopK.apply(self.scores[index].abs(), self.keep[index])

    def train(self, mode: bool = True) -> ScoredNetwork:
        """Set this wrapper's flag; the wrapped network stays in eval mode."""
        self.training = mode
        self.network.eval()
        return self

    def forward(self, inputs: Tensor) -> Tensor:
        """The masked network's output."""
        return self.network(inputs)

    def remove(self) -> None:
        """Take the masks out of the wrapped network."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def scaled_l1_init(model: nn.Module, group: ChannelGroup) -> Tensor:
    """HYDRA's scaled initialization made per channel: ``sqrt(6 / fan_in) * l1 / max(l1)``.

    ``l1`` is :func:`~advkit.pruning.l1_filter_norm` and ``fan_in`` that of the group's first
    producing layer (for attention heads, the embedding width their projections read), so the
    scores start ranked by weight magnitude at the scale of a Kaiming-uniform initialization, as
    HYDRA's ``initialize_scaled_score`` does per weight.
    """
    l1 = l1_filter_norm(group, model).detach().to(device="cpu", dtype=torch.float64)
    producer = model.get_submodule(group.producers[0])
    handler = find_handler(producer)
    if handler is not None and handler.heads:  # a head's q, k and v rows read the embedding
        fan_in = handler.in_channels(producer)
    else:
        fan_in = producer.weight[0].numel()
    largest = float(l1.max())
    return math.sqrt(6.0 / fan_in) * (l1 / largest if largest > 0 else torch.ones_like(l1))


class RobustScoreLearner:
    """Learn which channels to keep by training one score per channel on a robust objective.

    HYDRA (Sehwag et al. 2020) made structured: every group of the plan gets a score per
    channel, initialized by :func:`scaled_l1_init`; a forward pass keeps each group's
    ``len(keep)`` channels of largest ``|score|`` (the rest are zeroed where they are read,
    which is exactly the pruned network), and the scores are trained with
    :class:`~advkit.training.Trainer` on ``objective`` (e.g. PGD adversarial training or
    TRADES) for ``epochs`` epochs, the gradient passing straight through the top-k. The
    weights are never trained: the learner works on a copy of the model with every parameter
    frozen and BatchNorm on its running statistics, and the model passed in is not changed.
    The learned ``|score|`` is the importance.

    Deviations from HYDRA: scores per channel rather than per weight (the pruning here is
    structured); the wrapped network stays in eval mode, where HYDRA's score training updates
    the BatchNorm statistics, so that the scores are learned for exactly the network that
    is pruned; the attack also runs on the masked network, as in HYDRA.

    Args:
        loader: Training batches ``(inputs, labels)``.
        objective: What the scores minimize, any :class:`~advkit.training.Objective`
            (HYDRA uses adversarial training; e.g. ``MixedCE(PGD(...), adv_weight=1.0)``).
        epochs: Epochs of score training (HYDRA: 20 on CIFAR-10).
        optimizer: Factory called with the score parameters; by default HYDRA's SGD
            (learning rate 0.1, momentum 0.9, weight decay 1e-4).
        scheduler: Factory called with the optimizer; by default cosine annealing over
            ``epochs`` (HYDRA's schedule).
        device: Where to train (the Trainer's default if ``None``).
        progress: Show the Trainer's progress bars.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``epochs < 1``.

    References:
        Sehwag, Wang, Mittal and Jana, "HYDRA: Pruning Adversarially Robust Neural Networks",
        NeurIPS 2020.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from advkit.attacks import PGD
        >>> from advkit.training import MixedCE
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> data = DataLoader(TensorDataset(torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,))),
        ...                   batch_size=4)
        >>> learner = RobustScoreLearner(data, MixedCE(PGD(eps=4 / 255, steps=2), adv_weight=1.0))
        >>> scores = learner.learn(net, ratio=0.5, targets="0", example_inputs=torch.rand(1, 3, 8, 8))
        >>> Pruner(ratio=0.5, targets="0", importance=scores).plan(
        ...     net, torch.rand(1, 3, 8, 8)).kept_filters()
        {'0': 2}
    """

    __name__ = "learned_robust_scores"

    def __init__(
        self,
        loader: Iterable[Any],
        objective: Objective,
        *,
        epochs: int = 1,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(
                f"objective must be an advkit Objective, got {type(objective).__name__}"
            )
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be iterable, got {type(loader).__name__}")
        for name, value in (("optimizer", optimizer), ("scheduler", scheduler)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a factory (callable), got {type(value).__name__}")
        self.loader = loader
        self.objective = objective
        self.epochs = check_int(epochs, "epochs", minimum=1)
        self.optimizer = optimizer or _hydra_sgd
        self.scheduler = scheduler or _cosine(self.epochs)
        self.device = device
        self.progress = check_bool(progress, "progress")

    def __repr__(self) -> str:
        return f"RobustScoreLearner(objective={self.objective!r}, epochs={self.epochs})"

    def learn(
        self,
        model: nn.Module,
        *,
        ratio: float,
        targets: str | Sequence[str],
        example_inputs: Tensor | Sequence[Tensor],
        leaf_types: Iterable[type[nn.Module]] = (),
    ) -> ChannelScores:
        """Learn scores for pruning ``ratio`` of the channels of the groups ``targets`` select.

        The groups and their kept widths are those of ``Pruner(ratio=ratio, targets=targets)``;
        then see :meth:`prepare`.
        """
        pruner = Pruner(ratio=ratio, targets=targets, leaf_types=leaf_types)
        return self.prepare(model, pruner.plan(model, example_inputs))

    def prepare(self, model: nn.Module, plan: PruningPlan) -> ChannelScores:
        """Learn scores for every group of ``plan``, keeping ``len(keep)`` channels of each.

        Args:
            model: The network the plan was made for; it is not changed.
            plan: Gives the groups and how many channels each keeps.

        Returns:
            ``|score|`` of every channel, as an importance.
        """
        check_model(model)
        groups = _groups_of(plan)
        start = time.perf_counter()
        network = copy.deepcopy(model)
        initial = [scaled_l1_init(network, group) for group in groups]
        scored = ScoredNetwork(network, groups, [len(group.keep) for group in plan.groups], initial)
        trainer = Trainer(
            scored,
            self.optimizer,
            objective=self.objective,
            scheduler=self.scheduler,
            device=self.device,
            progress=self.progress,
        )
        trainer.fit(self.loader, epochs=self.epochs)
        learned = {
            group.producers: score.detach().abs()
            for group, score in zip(groups, scored.scores, strict=True)
        }
        return ChannelScores(learned, name=self.__name__, seconds=time.perf_counter() - start)


def _hydra_sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def _cosine(epochs: int) -> Callable[[torch.optim.Optimizer], Any]:
    def build(optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    return build

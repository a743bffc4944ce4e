"""One Trainer for standard training, fine-tuning and adversarial fine-tuning.

The loop is deliberately small: :meth:`Trainer.fit` runs epochs of training steps and
:meth:`Trainer.evaluate`, and everything optional (early stopping, best-checkpoint selection,
logging) hangs off :class:`~advkit.training.Callback` hooks.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from tqdm.auto import tqdm  # the epoch bar only: loaders go through Progress

from advkit._checks import (
    check_generator,
    check_int,
    check_logits,
    check_model,
    check_pair,
    check_real,
    check_run_dtypes,
    warn,
)
from advkit._integrity import check_finite_weights
from advkit._progress import Progress
from advkit.attacks import Attack
from advkit.attacks.base import check_attack
from advkit.evaluation import attack_batch
from advkit.training import amp as mixed_precision
from advkit.training._finite import (
    NonFiniteLoss,
    check_nonfinite_policy,
    nonfinite_loss_message,
    restore_buffers,
    snapshot_buffers,
)
from advkit.training._states import (
    backup,
    check_trainer_state,
    generator_state,
    keyed_callbacks,
    load_callback_states,
    load_objective_state,
    load_optional,
    restore_generator_state,
    resume_path,
    roll_back,
)
from advkit.training.callbacks import BestCheckpoint, Callback
from advkit.training.checkpoint import (
    capture_rng_state,
    layer_sizes,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)
from advkit.training.distributed import (
    ProcessContext,
    any_process,
    release_at_exit,
    resolve_context,
    sync_buffers,
    wrap,
)
from advkit.training.history import History
from advkit.training.loaders import (
    check_loader,
    generator_states,
    loader_length,
    restore_generators,
    samplers,
    warn_without_distributed_sampler,
)
from advkit.training.metrics import RunningSums
from advkit.training.objectives import MixedCE, Objective, TrainingModel
from advkit.training.objectives.base import scalar_loss
from advkit.training.options import (
    OptimizerFactory,
    build_optimizer,
    build_scheduler,
    check_optimizer_params,
)

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]

_PROGRESS_REFRESH = 25  # batches between progress-bar loss updates (each costs a device sync)


class Trainer:
    """Train a classifier, optionally adversarially, with exact resume and multi-GPU support.

    Without an ``attack`` this is plain supervised training (or fine-tuning: freeze what should
    not change with ``requires_grad_(False)``). With one, every batch's adversarial examples
    are made on the fly from the current model and the loss is
    ``(1 - adv_weight) * loss(model(x), y) + adv_weight * loss(model(x_adv), y)``
    (:class:`~advkit.training.MixedCE`). Another defense is one argument away:
    ``objective=TRADES(...)``, :class:`~advkit.training.MART`,
    :class:`~advkit.training.FastAT`, :class:`~advkit.training.FreeAT` or
    :class:`~advkit.training.AWP` (see :class:`~advkit.training.Objective` to write one).

    The adversarial examples are crafted in the mode the attack asks for: its ``model_mode``,
    ``"eval"`` by default (BatchNorm on running statistics, which the attack leaves untouched),
    or ``"train"`` via e.g. ``PGD(..., model_mode="train")``. The training forward passes run in
    train mode. Attacks and evaluation use the plain model, never the DDP wrapper, so they trigger
    no gradient synchronization.

    The model is moved to ``device`` and trained in place. Under ``torchrun`` it is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel` (one process per device, NCCL on CUDA,
    gloo on the CPU); give each loader a :class:`~torch.utils.data.DistributedSampler` (the
    Trainer calls its ``set_epoch``). Metrics are summed over processes (correct predictions and
    sample counts, not means of means), every process calls the same methods, and only rank 0
    writes checkpoints and shows progress.

    Args:
        model: A classifier returning ``[N, C]`` logits for inputs inside the attack's bounds.
        optimizer: An optimizer over exactly the model's trainable parameters, or a factory
            called with them (handy after pruning, which replaces the parameter tensors).
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default. The training
            loss of the default objective and the loss of :meth:`evaluate` (``val_loss``);
            with an explicit ``objective``, only the latter.
        attack: Attack that makes the training adversarial examples, or ``None``.
        adv_weight: Weight ``lam`` in ``[0, 1]`` of the adversarial loss; 1.0 is pure
            adversarial training (the clean pass is then skipped). Ignored without ``attack``.
        objective: What training minimizes, an :class:`~advkit.training.Objective`; by
            default ``MixedCE(attack, adv_weight=adv_weight, loss_fn=loss_fn)``. Give either
            an objective or ``attack``/``adv_weight``, not both.
        eps_warmup_epochs: Ramp the attack's eps (and an explicit ``alpha``) linearly from 0
            to its value over this many epochs, batch by batch; 0 disables the warm-up.
        val_attack: Attack for robust validation accuracy (``val_robust_accuracy``), or ``None``.
        scheduler: A learning-rate scheduler of ``optimizer``, or a factory called with the
            optimizer. :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` is stepped with
            ``val_loss`` (``train_loss`` without validation).
        scheduler_interval: Step the scheduler after every ``"epoch"`` or every ``"step"``.
        device: Where to train; by default CUDA if available (``cuda:LOCAL_RANK`` under
            torchrun), else the CPU.
        amp: Mixed precision on CUDA (:func:`torch.autocast` and, for float16, a
            :class:`~torch.amp.GradScaler`). Attacks always run in full precision, so input
            gradients do not underflow. On the CPU it is a no-op with a warning.
        amp_dtype: ``torch.float16`` or ``torch.bfloat16``.
        callbacks: :class:`~advkit.training.Callback` objects, called in this order.
        checkpoint_dir: If given, ``last.pt`` is written there after every epoch. ``fit``
            refuses to start a new run over an existing ``last.pt``: continue it with
            ``resume_from="auto"`` (or its path), or start over in another folder.
        best_metric: Also keep ``best.pt`` in ``checkpoint_dir`` for the best value of this
            epoch metric, e.g. ``"val_robust_accuracy"`` (losses are minimized, the rest
            maximized). On resume its best so far is rebuilt from the restored history, so
            ``best.pt`` is never replaced by a worse epoch.
        progress: Show tqdm progress bars for epochs and batches (rank 0 only).
        distributed: ``None`` to use DDP exactly when several processes run, ``False`` never.
        ddp_options: Extra keyword arguments for ``DistributedDataParallel``.
        nonfinite_loss: What a batch whose loss is NaN or infinite does, before any gradient
            or optimizer step: ``"raise"`` (default) stops with a ``ValueError`` naming the
            epoch and batch; ``"skip"`` skips the batch with a warning, restores the
            BatchNorm statistics its forward pass changed, and records the count as
            ``train_skipped_batches`` in the history. Either way :meth:`save` refuses to
            write weights holding NaN or inf, so a good checkpoint is never overwritten by a
            broken one.
        generator: The source of the objectives' randomness: the inner attacks' random
            starts (PGD's, FastAT's uniform start, TRADES's and MART's Gaussian one) and the
            smoothing objectives' noise, on the training device's kind (a CUDA generator to
            train on CUDA). Its state is saved in checkpoints and restored on resume, and the
            objectives then leave the global RNG alone, so two Trainers with equally seeded
            generators train to the same weights. ``None`` (default): torch's global RNG,
            whose states the checkpoints hold too. An objective built with its own
            ``generator`` (the smoothing objectives) keeps drawing from it. Under
            ``torchrun`` each process has its own; seed it with the process's rank (the
            Trainer never reseeds it) for different random starts on each process.

    Attributes:
        model: The model being trained (never the DDP wrapper).
        objective: The training objective (its state is saved in checkpoints).
        optimizer: The optimizer.
        scheduler: The scheduler, or ``None``.
        generator: The source of the objectives' randomness, or ``None`` (the global RNG).
        epoch: Number of finished epochs.
        global_step: Number of optimizer steps taken.
        history: Metrics of every finished epoch.
        should_stop: Set to ``True`` (e.g. by a callback) to end ``fit`` after this epoch.

    Raises:
        TypeError: On arguments of the wrong type.
        ValueError: If ``adv_weight`` is outside ``[0, 1]``, ``objective`` is given together
            with ``attack`` or ``adv_weight``, the optimizer does not hold exactly the model's
            trainable parameters, ``generator`` is on another kind of device than
            ``device``, or another option is out of range.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from advkit.training import Trainer
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> data = TensorDataset(torch.rand(32, 1, 2, 2), torch.randint(0, 2, (32,)))
        >>> trainer = Trainer(model, lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
        >>> history = trainer.fit(DataLoader(data, batch_size=8), epochs=2)
        >>> len(history), sorted(history.last)
        (2, ['epoch', 'lr', 'train_accuracy', 'train_loss'])
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer | OptimizerFactory,
        *,
        loss_fn: LossFn | None = None,
        attack: Attack | None = None,
        adv_weight: float = 0.5,
        objective: Objective | None = None,
        eps_warmup_epochs: float = 0,
        val_attack: Attack | None = None,
        scheduler: Any = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        device: torch.device | str | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.float16,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | os.PathLike[str] | None = None,
        best_metric: str | None = None,
        progress: bool = True,
        distributed: bool | None = None,
        ddp_options: Mapping[str, Any] | None = None,
        nonfinite_loss: NonFiniteLoss = "raise",
        generator: torch.Generator | None = None,
    ) -> None:
        self.adv_weight, self.eps_warmup_epochs = _check_training(
            model, loss_fn, attack, val_attack, adv_weight, objective, eps_warmup_epochs
        )
        callbacks = _check_loop(
            scheduler_interval, amp_dtype, callbacks, checkpoint_dir, best_metric
        )

        self._context: ProcessContext = resolve_context(device, distributed)
        self.device = self._context.device
        self.generator = check_generator(generator, self.device, "the Trainer trains on")
        self.model = model.to(self.device)
        self.loss_fn: LossFn = loss_fn or F.cross_entropy
        self.attack = attack
        self.objective: Objective = (
            objective
            if objective is not None
            else MixedCE(attack, adv_weight=self.adv_weight, loss_fn=self.loss_fn)
        )
        self.val_attack = val_attack
        self.optimizer = build_optimizer(model, optimizer)
        self.scheduler = build_scheduler(self.optimizer, scheduler)
        self.scheduler_interval = scheduler_interval
        self.amp, self._scaler = mixed_precision.resolve_amp(amp, amp_dtype, self.device)
        self.amp_dtype = amp_dtype
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        # The Trainer's own tracker: not a user callback, restored from the history on resume.
        self._best: BestCheckpoint | None = None
        if best_metric is not None and self.checkpoint_dir is not None:
            self._best = BestCheckpoint(self.checkpoint_dir / "best.pt", best_metric)
            callbacks.append(self._best)
        self.callbacks = callbacks
        self.progress = bool(progress)
        self.nonfinite_loss = check_nonfinite_policy(nonfinite_loss)
        self._batch_index = 0
        self._net: nn.Module = wrap(self.model, self._context, ddp_options)
        self._training_model = TrainingModel(
            self.model, self._net, self._autocast, self.amp, self.generator
        )
        if self._context.distributed:
            release_at_exit(self._drop_ddp_wrapper)
        self.epoch = 0
        self.global_step = 0
        self.history = History()
        self.should_stop = False
        # The loaders of the running fit, whose shuffling generators are checkpointed.
        self._loaders: dict[str, Iterable[Any]] = {}
        self._pending_loader_rng: dict[str, list[Tensor]] | None = None
        self._pre_step_hooks: list[Callback] = []

    # -- properties ------------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        """Index of this process (0 when not distributed)."""
        return self._context.rank

    @property
    def world_size(self) -> int:
        """Number of training processes (1 when not distributed)."""
        return self._context.world_size

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and shows progress (rank 0)."""
        return self._context.is_main

    # -- fit -------------------------------------------------------------------------------------

    def fit(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        *,
        epochs: int,
        resume_from: str | os.PathLike[str] | Literal["auto"] | None = None,
    ) -> History:
        """Train until ``epochs`` epochs are done in total, validating after each one.

        Args:
            train_loader: Yields ``(inputs, labels)`` batches. Shuffle with a seeded generator
                (``DataLoader(..., shuffle=True, generator=g)``) for reproducible runs; its state
                is checkpointed and restored on resume.
            val_loader: Yields ``(inputs, labels)`` for the ``val_*`` metrics, or ``None``.
            epochs: Total number of epochs, counting those already done by this trainer or
                restored from ``resume_from``.
            resume_from: A checkpoint from :meth:`save` (e.g. ``checkpoint_dir / "last.pt"``) to
                continue from: model, optimizer, scheduler, epoch, history, callback states and
                random states (the global ones and the Trainer's ``generator``) are restored, so
                the run continues exactly as if uninterrupted.
                ``"auto"`` continues from ``checkpoint_dir / "last.pt"`` if it exists and
                starts afresh otherwise. ``None`` starts afresh, and refuses to when
                ``checkpoint_dir`` already holds a ``last.pt`` this trainer did not write (it
                would be overwritten by the new run).

        Returns:
            The history of all epochs. The model is left in eval mode.

        Raises:
            ValueError: If ``epochs < 1``, a loader is empty or yields something other than
                ``(inputs, labels)``, the optimizer no longer holds the model's parameters,
                the checkpoint does not match the model, or a new run would overwrite the
                ``last.pt`` of another one.
        """
        check_int(epochs, "epochs", minimum=1)
        loaders = {"train_loader": train_loader}
        if val_loader is not None:
            loaders["val_loader"] = val_loader
        for name, loader in loaders.items():
            check_loader(loader, name)
        check_optimizer_params(self.model, self.optimizer)
        self._loaders = loaders
        resume_from = resume_path(resume_from, self.checkpoint_dir, self.epoch, self._context)
        if resume_from is not None:
            self.load(resume_from)
        for name, states in (self._pending_loader_rng or {}).items():
            if name in loaders:
                restore_generators(loaders[name], states, name)
        self._pending_loader_rng = None
        if self._context.distributed:
            for name, loader in loaders.items():
                warn_without_distributed_sampler(loader, name)
        if self.epoch >= epochs:
            warnings.warn(
                f"nothing to do: {self.epoch} epochs are already done and epochs={epochs} is the "
                "total to reach",
                stacklevel=2,
            )

        self.should_stop = False
        for callback in self.callbacks:
            callback.on_fit_start(self)
        epoch_bar = tqdm(
            total=epochs, initial=self.epoch, desc="epochs", unit="epoch", disable=self._quiet
        )
        try:
            while self.epoch < epochs and not self.should_stop:
                record = self._run_epoch(train_loader, val_loader, epochs)
                epoch_bar.update(1)
                epoch_bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
        finally:
            epoch_bar.close()
        self.model.eval()
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.history

    def _run_epoch(
        self, train_loader: Iterable[Any], val_loader: Iterable[Any] | None, epochs: int
    ) -> dict[str, float]:
        epoch = self.epoch
        for sampler in samplers(train_loader):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        for callback in self.callbacks:
            callback.on_epoch_start(self, epoch)
        lr = float(self.optimizer.param_groups[0]["lr"])
        record: dict[str, float] = {"epoch": epoch + 1}
        record.update(self._train_epoch(train_loader, epoch, epochs))
        record["lr"] = lr
        sync_buffers(self.model, self._context)  # rank 0's BatchNorm statistics everywhere
        if val_loader is not None:
            metrics = self.evaluate(val_loader, attack=self.val_attack)
            val = {f"val_{k}": v for k, v in metrics.items() if k != "samples"}
            record.update(val)
            for callback in self.callbacks:
                callback.on_validation_end(self, epoch, val)
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self._step_scheduler(record)
        self.epoch = epoch + 1
        self.history.append(record)
        for callback in self.callbacks:
            callback.on_epoch_end(self, epoch, dict(record))
        self.should_stop = any_process(self.should_stop, self._context)
        if self.checkpoint_dir is not None:
            self.save(self.checkpoint_dir / "last.pt")
        if self.is_main:
            logger.info("epoch %d/%d: %s", epoch + 1, epochs, record)
        return record

    def _train_epoch(self, loader: Iterable[Any], epoch: int, epochs: int) -> dict[str, float]:
        self._net.train()
        sums = RunningSums(("loss", *self.objective.metric_names), self.device)
        batches_per_epoch = loader_length(loader)
        start_hooks = _overriding(self.callbacks, "on_batch_start")
        end_hooks = _overriding(self.callbacks, "on_batch_end")
        self._pre_step_hooks = _overriding(self.callbacks, "on_before_optimizer_step")
        bar = Progress(
            loader,
            total=batches_per_epoch,
            description=f"epoch {epoch + 1}/{epochs}",
            enabled=not self._quiet,
        )
        eps_scale = 1.0
        skipped = 0
        for index, batch in enumerate(bar):
            inputs, labels = self._to_device(batch, "train_loader")
            for callback in start_hooks:
                callback.on_batch_start(self, index, (inputs, labels))
            if self.eps_warmup_epochs:
                progress = epoch + (index / batches_per_epoch if batches_per_epoch else 0.0)
                eps_scale = min(1.0, progress / self.eps_warmup_epochs)
            self._batch_index = index
            for _ in range(self.objective.replays):
                loss = self._train_step(inputs, labels, sums, eps_scale)
                if loss is None:  # a non-finite loss, skipped before any step
                    break
                self.global_step += 1
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self._step_scheduler({})
            if loss is None:
                skipped += 1
                continue
            for callback in end_hooks:
                callback.on_batch_end(self, index, loss)
            if not self._quiet and index % _PROGRESS_REFRESH == 0:
                bar.set_postfix(loss=f"{sums.mean('loss'):.4g}")
        bar.close()

        means, count = sums.means(self._context)
        if count == 0 and skipped:
            raise ValueError(f"every batch of epoch {epoch + 1} had a non-finite loss")
        if count == 0:
            raise ValueError("train_loader yielded no batches")
        metrics = {f"train_{name}": value for name, value in means.items()}
        if self.nonfinite_loss == "skip":
            metrics["train_skipped_batches"] = float(skipped)
        eps = self.objective.eps
        if eps is not None and "adv_accuracy" in means:
            metrics["train_eps"] = eps * eps_scale
        return metrics

    def _train_step(
        self, inputs: Tensor, labels: Tensor, sums: RunningSums, eps_scale: float
    ) -> Tensor | None:
        """One objective call, backward pass and optimizer step; ``None`` for a batch skipped
        on a non-finite loss (before any step)."""
        objective = self.objective
        # Under "skip" a NaN batch's forward must not leave NaN BatchNorm statistics behind.
        buffers = snapshot_buffers(self.model) if self.nonfinite_loss == "skip" else None
        try:
            out = objective(self._training_model, inputs, labels, eps_scale)
            loss = out.loss
            if not isinstance(loss, Tensor) or loss.ndim != 0:
                shown = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(
                    f"{type(objective).__name__} must return a scalar loss tensor, got {shown}"
                )
            if not self._finite_loss(loss):
                restore_buffers(buffers or ())
                return None
            self.optimizer.zero_grad(set_to_none=True)
            mixed_precision.backward(loss, self._scaler)
        finally:
            objective.after_backward(self._training_model)  # e.g. AWP restores the weights
        mixed_precision.optimizer_step(  # hooks see the true (unscaled) gradients
            self.optimizer,
            self._scaler,
            self._before_optimizer_step,
            unscale=bool(self._pre_step_hooks),
        )
        with torch.no_grad():
            n = labels.shape[0]
            totals = {"loss": loss.detach() * n}
            totals.update({name: value * n for name, value in out.metrics.items()})
            sums.add_some(n, totals)
        return loss.detach()

    def _finite_loss(self, loss: Tensor) -> bool:
        """Whether to step on ``loss``; raises or warns on a non-finite one (all ranks agree)."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self._context.distributed:
            bad = self._context.all_reduce_sum(bad)
        if float(bad.item()) == 0:
            return True
        message = nonfinite_loss_message(loss, self.epoch, self._batch_index)
        if self.nonfinite_loss == "raise":
            raise ValueError(message)
        warnings.warn(message.split(";")[0] + "; the batch is skipped", stacklevel=4)
        return False

    def _before_optimizer_step(self) -> None:
        for callback in self._pre_step_hooks:
            callback.on_before_optimizer_step(self)

    def _step_scheduler(self, record: Mapping[str, float]) -> None:
        assert self.scheduler is not None  # internal invariant
        if isinstance(self.scheduler, ReduceLROnPlateau):
            metric = record.get("val_loss", record.get("train_loss"))
            if metric is None:
                raise ValueError(
                    "ReduceLROnPlateau needs an epoch metric; use scheduler_interval='epoch'"
                )
            self.scheduler.step(metric)
        else:
            self.scheduler.step()

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, loader: Iterable[Any], attack: Attack | None = None) -> dict[str, float]:
        """Loss and accuracy on ``loader`` and, with an ``attack``, robust accuracy.

        The model runs in eval mode, also during the attack (an attack with
        ``model_mode="train"`` is switched to eval, with a warning), and is left in eval mode.
        A sample counts as robust if it is classified correctly and no iterate of the attack
        fooled the model: the per-batch step is :func:`advkit.evaluation.attack_batch`, the
        one every robust accuracy of advkit uses, so only correctly classified samples are
        attacked. Under DDP every process evaluates its shard and the counts are
        summed, so call it on every process.

        Args:
            loader: Yields ``(inputs, labels)`` batches.
            attack: Attack for robust accuracy, or ``None``.

        Returns:
            ``{"loss", "accuracy", "samples"}`` and ``"robust_accuracy"`` with an attack.

        Raises:
            TypeError: If ``attack`` is not an Attack or the loader yields something other than
                ``(inputs, labels)``.
            ValueError: If the loader is empty.
        """
        check_attack(attack, optional=True)
        check_loader(loader, "loader")
        if attack is not None and attack.model_mode != "eval":
            warnings.warn(
                "robust evaluation runs the model in eval mode; the attack's model_mode="
                f"{attack.model_mode!r} is replaced by 'eval'",
                stacklevel=2,
            )
            attack = attack.replace(model_mode="eval")
        model = self.model
        model.eval()
        sums = RunningSums(("loss", "accuracy", "robust_accuracy"), self.device)
        for batch in Progress(loader, description="evaluate", enabled=not self._quiet):
            inputs, labels = self._to_device(batch, "loader")
            with torch.no_grad(), self._autocast():
                logits = model(inputs)
                check_logits(logits, inputs.shape[0], None)
                loss = scalar_loss(self.loss_fn, logits, labels)
            check_logits(logits, labels.shape[0], labels)
            hit = logits.argmax(dim=1) == labels
            robust = hit
            if attack is not None:
                robust = attack_batch(model, inputs, labels, attack, attacked=hit).robust
            n = labels.shape[0]
            sums.add(n, (loss * n, hit.sum(dtype=torch.float32), robust.sum(dtype=torch.float32)))
        means, count = sums.means(self._context)
        if count == 0:
            raise ValueError("loader yielded no batches")
        if attack is None:
            del means["robust_accuracy"]
        return {**means, "samples": count}

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; a collective call under DDP."""
        rng = self._context.gather_objects(capture_rng_state())
        generator = generator_state(self.generator, self._context)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": self.history.state_dict(),
            "callbacks": {
                key: cb.state_dict()
                for key, cb in keyed_callbacks(self.callbacks, self._best).items()
            },
            "shapes": layer_sizes(self.model),
            "objective": {
                "name": type(self.objective).__name__,
                "state": self.objective.state_dict(),
            },
            "rng": rng,
            "generator": generator,
            "loader_rng": {
                name: generator_states(loader) for name, loader in self._loaders.items()
            },
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (rank 0 only; call it on every process under DDP).

        Args:
            path: Destination file.

        Returns:
            The path.

        Raises:
            ValueError: If the model's weights hold NaN or inf (the file is left as it was).
        """
        state = self.state_dict()
        path = Path(path)
        check_finite_weights(state["model"], path)
        if self.is_main:
            save_checkpoint(state, path)
        self._context.barrier()  # nobody reads the file before it is complete
        return path

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save` (``fit(resume_from=...)`` calls this).

        The data loaders' generator states are applied to the loaders of the next :meth:`fit`.

        Loading is all or nothing: every entry is checked before anything changes, and if
        restoring still fails part-way the trainer's previous state is put back.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is not a Trainer checkpoint, is corrupt (checksum), lacks
                an entry, or was saved from another architecture or optimizer setup.
        """
        state = load_checkpoint(path)
        source = repr(str(path))
        check_trainer_state(state, self.model, self.optimizer, source, self.generator)
        history = History.from_state_dict(state["history"])
        parts = (
            self.model,
            self.optimizer,
            self.scheduler,
            self._scaler,
            *self.callbacks,
            self.objective,  # FreeAT's carried perturbation is state too: all or nothing
        )
        saved = backup(*parts)
        try:
            load_model_state(self.model, state["model"], source)
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as err:
                raise ValueError(
                    f"the optimizer state in {source} does not fit this optimizer "
                    f"(different parameter groups?): {err}"
                ) from err
            load_optional(self.scheduler, state["scheduler"], "scheduler", source)
            load_optional(self._scaler, state["scaler"], "GradScaler (amp)", source)
            if self._best is not None:  # the Trainer's own tracker: always from the history
                self._best.replay(history.epochs)
            load_callback_states(
                state["callbacks"], keyed_callbacks(self.callbacks, self._best), source
            )
            load_objective_state(self.objective, state.get("objective"), source)
        except BaseException:
            roll_back(parts, saved)
            raise
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = history
        rng = state["rng"]
        if len(rng) != self.world_size:
            warn(
                f"{source} was saved by {len(rng)} processes and is loaded by {self.world_size}: "
                "random states are restored from rank 0's and the run is not bit-exact"
            )
        restore_rng_state(rng[self.rank] if len(rng) == self.world_size else rng[0])
        restore_generator_state(self.generator, state.get("generator"), self._context, source)
        self._pending_loader_rng = dict(state["loader_rng"])

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def _quiet(self) -> bool:
        return not (self.progress and self.is_main)

    def _autocast(self) -> AbstractContextManager[Any]:
        return mixed_precision.autocast(self.amp, self.device, self.amp_dtype)

    def _to_device(self, batch: Any, loader_name: str) -> tuple[Tensor, Tensor]:
        inputs, labels = check_pair(batch, loader_name)
        labels = labels.long()  # int8/int32/uint8 labels: cross-entropy needs int64
        if not self.amp and inputs.is_floating_point():
            check_run_dtypes(self.model, inputs, {})
        return (
            inputs.to(self.device, non_blocking=True),
            labels.to(self.device, non_blocking=True),
        )

    def _drop_ddp_wrapper(self) -> None:
        """At interpreter exit, let go of the DDP wrapper (see ``release_at_exit`` for why)."""
        self._net = self._training_model.net = self.model


# -- module helpers -------------------------------------------------------------------------------


def _overriding(callbacks: Sequence[Callback], hook: str) -> list[Callback]:
    """The callbacks that override ``hook``; calling only those keeps the batch loop lean."""
    base = getattr(Callback, hook)
    return [cb for cb in callbacks if getattr(type(cb), hook) is not base]


def _check_training(
    model: nn.Module,
    loss_fn: LossFn | None,
    attack: Attack | None,
    val_attack: Attack | None,
    adv_weight: float,
    objective: Objective | None,
    eps_warmup_epochs: float,
) -> tuple[float, float]:
    """Check the :class:`Trainer`'s model, loss, attacks and objective; return ``adv_weight``
    and ``eps_warmup_epochs``, checked. Warns, at the Trainer's caller, about an attack that
    gets no weight."""
    check_model(model)
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    check_attack(attack, "attack", optional=True)
    check_attack(val_attack, "val_attack", optional=True)
    checked_adv_weight = check_real(adv_weight, "adv_weight", low=0, high=1)
    if objective is not None:
        if not isinstance(objective, Objective):
            raise TypeError(
                f"objective must be an advkit Objective, got {type(objective).__name__}"
            )
        if attack is not None or adv_weight != 0.5:
            raise ValueError(
                "give either objective= or attack=/adv_weight= (which define the default "
                f"objective), not both; got objective={type(objective).__name__} and "
                f"attack={type(attack).__name__ if attack is not None else None}, "
                f"adv_weight={adv_weight}"
            )
    checked_warmup = check_real(eps_warmup_epochs, "eps_warmup_epochs", low=0)
    if attack is not None and checked_adv_weight == 0:
        warnings.warn(
            "adv_weight=0 gives the adversarial loss no weight: the attack is never run "
            "during training",
            stacklevel=3,  # this function, Trainer.__init__, the Trainer's caller
        )
    return checked_adv_weight, checked_warmup


def _check_loop(
    scheduler_interval: str,
    amp_dtype: torch.dtype,
    callbacks: Sequence[Callback],
    checkpoint_dir: str | os.PathLike[str] | None,
    best_metric: str | None,
) -> list[Callback]:
    """Check the :class:`Trainer`'s scheduling, precision, callbacks and checkpoint options;
    return the callbacks as a new list."""
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
        )
    mixed_precision.check_amp_dtype(amp_dtype)
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be Callback objects, got {type(callback).__name__}")
    if best_metric is not None and checkpoint_dir is None:
        raise ValueError("best_metric needs a checkpoint_dir to write best.pt into")
    return callbacks

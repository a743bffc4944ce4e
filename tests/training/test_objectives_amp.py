"""Every objective trains on the Trainer's mixed-precision path.

``amp=True`` is a no-op on the CPU (mixed precision runs on CUDA only), so the CUDA code path
is switched on by hand, as in ``test_trainer.py``: training passes under CPU autocast (bfloat16
without a scaler, float16 with a GradScaler, as the Trainer chooses on CUDA), logits cast to
float32, attacks in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset
from training_helpers import loader, one_thread, quiet_trainer, weights  # noqa: F401

from advkit import PGD
from advkit.training import (
    AWP,
    MART,
    TRADES,
    FastAT,
    FreeAT,
    MixedCE,
    Objective,
    Trainer,
    TrainingModel,
)
from conftest import blob_images, tiny_model

EPS = 8 / 255

OBJECTIVES = {
    "mixed": lambda: MixedCE(PGD(eps=EPS, steps=2), adv_weight=0.5),
    "pgd_at": lambda: MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0),
    "trades": lambda: TRADES(eps=EPS, steps=2),
    "mart": lambda: MART(eps=EPS, steps=2),
    "fast": lambda: FastAT(eps=EPS),
    "free": lambda: FreeAT(eps=EPS, replays=2),
    "awp_trades": lambda: AWP(TRADES(eps=EPS, steps=2), gamma=0.01),
    "awp_pgd": lambda: AWP(MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0), gamma=0.01),
}


def _trainer(objective: Objective, amp_dtype: torch.dtype | None) -> Trainer:
    """A CPU trainer, switched onto the AMP path the Trainer takes on CUDA for ``amp_dtype``."""
    trainer = quiet_trainer(
        tiny_model(seed=0), lambda p: torch.optim.SGD(p, lr=0.05), objective=objective
    )
    if amp_dtype is not None:
        trainer.amp, trainer.amp_dtype = True, amp_dtype
        if amp_dtype == torch.float16:
            trainer._scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        trainer._training_model = TrainingModel(
            trainer.model, trainer.model, trainer._autocast, True
        )
    return trainer


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_trains_under_amp(name: str, amp_dtype: torch.dtype) -> None:
    images, labels = blob_images(16)
    data = loader(TensorDataset(images, labels), batch_size=8)

    # The first batch's loss in full precision, from the same weights and random state.
    reference = _trainer(OBJECTIVES[name](), None)
    torch.manual_seed(1)
    full = reference.objective(reference._training_model, images[:8], labels[:8], 1.0)

    trainer = _trainer(OBJECTIVES[name](), amp_dtype)
    before = weights(trainer.model)
    torch.manual_seed(1)
    first = trainer.objective(trainer._training_model, images[:8], labels[:8], 1.0)
    trainer.objective.after_backward(trainer._training_model)  # AWP: restore w; free AT: no-op
    # The loss is float32 (logits are cast up) and close to the full-precision one.
    assert first.loss.dtype == torch.float32
    assert first.loss.item() == pytest.approx(full.loss.item(), rel=0.05, abs=0.02)
    # No parameter changed (AWP put w back exactly; only BatchNorm statistics moved).
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(param, before[key]) for key, param in params.items())

    dtypes: list[torch.dtype] = []
    trainer.model[-1].register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    history = trainer.fit(data, epochs=2)

    # Training passes ran in the reduced precision, inner maximizations in float32.
    assert amp_dtype in dtypes
    if name not in ("free",):  # free AT's only pass is a training pass
        assert torch.float32 in dtypes
    assert math.isfinite(history.last["train_loss"])
    assert trainer.global_step == 2 * 2 * trainer.objective.replays
    after = weights(trainer.model)
    assert all(value.dtype == before[key].dtype for key, value in after.items())
    assert all(torch.isfinite(value.float()).all() for value in after.values())
    assert any(not torch.equal(after[key], before[key]) for key in before)
    if name == "free":  # the carried perturbation moved, inside the ball, despite the scaler
        delta = trainer.objective.delta
        assert delta is not None and delta.abs().max() > 0
        assert delta.abs().max() <= EPS + 1e-7

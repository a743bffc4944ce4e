"""A non-finite loss never reaches an optimizer step; NaN weights never overwrite a checkpoint."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import TensorDataset
from training_helpers import loader, one_thread, quiet_trainer, weights  # noqa: F401

from advkit.training import Callback, FreeAT, load_weights
from conftest import blob_images, tiny_model


def poisoned(batch: int = 1) -> TensorDataset:
    """32 blob images in batches of 8 with one NaN pixel in batch ``batch``."""
    images, labels = blob_images(32)
    images[batch * 8 + 2, 0, 0, 0] = float("nan")
    return TensorDataset(images, labels)


def test_nan_loss_stops_before_any_step(tmp_path) -> None:
    model = tiny_model()
    trainer = quiet_trainer(model, checkpoint_dir=tmp_path)
    trainer.fit(loader(TensorDataset(*blob_images(32)), batch_size=8), epochs=1)
    good = weights(model)
    step = trainer.global_step
    message = r"non-finite \(nan\) at epoch 2, batch 1; no gradient or optimizer step"
    with pytest.raises(ValueError, match=message):
        trainer.fit(loader(poisoned(1), batch_size=8), epochs=2)
    assert trainer.global_step == step + 1  # batch 0 stepped, batch 1 did not
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # last.pt still holds the good epoch-1 weights.
    restored = load_weights(tiny_model(seed=5), tmp_path / "last.pt")
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, good[name])


def test_skip_policy_counts_skipped_batches() -> None:
    model = tiny_model()
    trainer = quiet_trainer(model, nonfinite_loss="skip")
    with pytest.warns(UserWarning, match=r"non-finite \(nan\) at epoch \d, batch 2.*skipped"):
        history = trainer.fit(loader(poisoned(2), batch_size=8), epochs=2)
    assert history["train_skipped_batches"] == [1.0, 1.0]
    assert trainer.global_step == 6
    # Weights and BatchNorm statistics stay finite: the skipped forward pass was undone.
    assert all(
        torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()
    )
    assert all(torch.isfinite(torch.tensor(history["train_loss"])))


def test_every_batch_skipped_is_an_error() -> None:
    images, labels = blob_images(8)
    images[:] = float("nan")
    trainer = quiet_trainer(tiny_model(), nonfinite_loss="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="every batch of epoch 1 had a non-finite loss"):
            trainer.fit(loader(TensorDataset(images, labels)), epochs=1)


def test_nan_weights_never_overwrite_a_checkpoint(tmp_path) -> None:
    model = tiny_model()
    trainer = quiet_trainer(model)
    path = trainer.save(tmp_path / "good.pt")
    before = path.read_bytes()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"refusing to write .*good\.pt.*0\.weight"):
        trainer.save(path)
    assert path.read_bytes() == before


def test_evaluate_refuses_nan_logits() -> None:
    images, labels = blob_images(8)
    images[0] = float("nan")
    trainer = quiet_trainer(tiny_model())
    with pytest.raises(ValueError, match=r"non-finite logits \(NaN or inf\) for 1 of 8"):
        trainer.evaluate(loader(TensorDataset(images, labels)))


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="nonfinite_loss must be 'raise' or 'skip', got 'ignore'"):
        quiet_trainer(tiny_model(), nonfinite_loss="ignore")


def test_free_at_skip_keeps_clean_accuracy_on_each_batch_first_replay() -> None:
    """A skipped replay abandons its batch, so the next batch starts again at replay 0: its
    clean accuracy comes from the first replay (before any of its optimizer steps), not from
    a later one."""
    events: list[str] = []

    class BatchStarts(Callback):
        def on_batch_start(self, trainer, index, batch) -> None:
            events.append("start")

    model = tiny_model()
    model.register_forward_pre_hook(
        lambda module, args: events.append("train" if module.training else "clean")
    )
    trainer = quiet_trainer(
        model,
        objective=FreeAT(eps=8 / 255, replays=3),
        nonfinite_loss="skip",
        callbacks=[BatchStarts()],
    )
    with pytest.warns(UserWarning, match=r"non-finite \(nan\) at epoch 1, batch 1.*skipped"):
        history = trainer.fit(loader(poisoned(1), batch_size=8), epochs=1)
    assert history["train_skipped_batches"] == [1.0]
    assert trainer.global_step == 3 * 3
    per_batch = " ".join(events).split("start")[1:]
    assert [b.split() for b in per_batch] == [
        ["train", "clean", "train", "train"],
        ["train", "clean"],  # the NaN batch: skipped after its first replay
        ["train", "clean", "train", "train"],
        ["train", "clean", "train", "train"],
    ]

"""Saved files carry a checksum and a version; loads verify them and are all or nothing."""

from __future__ import annotations

import random
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import loader, one_thread, quiet_trainer, weights  # noqa: F401

from advkit.pruning import load_pruned, save_pruned
from advkit.training import Callback, load_checkpoint, load_weights
from conftest import blob_images, tiny_model


def tensor_regions(path: Path) -> list[tuple[int, int]]:
    """``(offset, size)`` of every tensor's bytes in a torch zip file (stored uncompressed)."""
    regions = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" not in info.filename or info.file_size == 0:
                continue
            raw.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", raw.read(4))
            regions.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return regions


def flip_bit(path: Path, rng: random.Random) -> Path:
    """A copy of ``path`` with one random bit of tensor data flipped."""
    data = bytearray(path.read_bytes())
    regions = tensor_regions(path)
    weights_ = [size for _, size in regions]
    offset, size = rng.choices(regions, weights=weights_)[0]
    position = offset + rng.randrange(size)
    data[position] ^= 1 << rng.randrange(8)
    flipped = path.with_name(f"flipped-{rng.random():.6f}.pt")
    flipped.write_bytes(bytes(data))
    return flipped


def test_a_flipped_bit_in_checkpoint_tensors_is_caught(tmp_path: Path) -> None:
    path = quiet_trainer(tiny_model()).save(tmp_path / "ckpt.pt")
    rng = random.Random(0)
    for _ in range(20):
        flipped = flip_bit(path, rng)
        with pytest.raises(
            ValueError, match=f"{flipped.name}.*corrupt|could not read.*{flipped.name}"
        ):
            load_checkpoint(flipped)
    load_checkpoint(path)  # the original is fine


def test_a_flipped_bit_in_a_pruned_file_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "pruned.pt"
    save_pruned(tiny_model(), path)
    rng = random.Random(1)
    for _ in range(20):
        flipped = flip_bit(path, rng)
        with pytest.raises(ValueError, match=f"{flipped.name}.*(corrupt|weights_only)"):
            load_pruned(flipped, tiny_model())
    load_pruned(path, tiny_model())


def test_files_without_a_checksum_still_load(tmp_path: Path) -> None:
    # What advkit wrote before checksums: format 1 checkpoints, version 1 pruned files.
    trainer = quiet_trainer(tiny_model())
    old = {**trainer.state_dict(), "format": "advkit.training.checkpoint/1"}
    torch.save(old, tmp_path / "old.pt")
    quiet_trainer(tiny_model(seed=4)).load(tmp_path / "old.pt")
    model = tiny_model()
    payload = {
        "format": "advkit.pruned_model",
        "version": 1,
        "shapes": {},
        "state_dict": model.state_dict(),
    }
    torch.save(payload, tmp_path / "old_pruned.pt")
    loaded = load_pruned(tmp_path / "old_pruned.pt", tiny_model(seed=4))
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_a_removed_checksum_is_refused(tmp_path: Path) -> None:
    path = quiet_trainer(tiny_model()).save(tmp_path / "ckpt.pt")
    state = torch.load(path, weights_only=True)
    del state["checksum"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"ckpt\.pt.*no valid checksum"):
        load_checkpoint(path)


class NumpyState(Callback):
    def __init__(self) -> None:
        self.best = np.float64(0.25)
        self.counts = np.arange(3)
        self.step = np.int32(7)

    def state_dict(self):  # type: ignore[no-untyped-def]
        return {"best": self.best, "counts": self.counts, "step": self.step}

    def load_state_dict(self, state) -> None:  # type: ignore[no-untyped-def]
        self.best, self.counts, self.step = state["best"], state["counts"], state["step"]


def test_numpy_values_in_callback_state_are_saved_as_plain_types(tmp_path: Path) -> None:
    trainer = quiet_trainer(tiny_model(), callbacks=[NumpyState()])
    path = trainer.save(tmp_path / "ckpt.pt")
    restored = NumpyState()
    quiet_trainer(tiny_model(), callbacks=[restored]).load(path)
    assert restored.best == 0.25 and isinstance(restored.best, float)
    assert restored.counts.tolist() == [0, 1, 2] and restored.step == 7


def test_objects_in_callback_state_are_refused_at_save_time(tmp_path: Path) -> None:
    class Bad(Callback):
        def state_dict(self):  # type: ignore[no-untyped-def]
            return {"when": Path("x")}

    with pytest.raises(TypeError, match=r"state\['callbacks'\]\[0\]\['state'\]\['when'\].*Path"):
        quiet_trainer(tiny_model(), callbacks=[Bad()]).save(tmp_path / "ckpt.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("drop", ["global_step", "history", "rng", "optimizer"])
def test_load_is_all_or_nothing(tmp_path: Path, drop: str) -> None:
    source = quiet_trainer(tiny_model(seed=1))
    source.fit(loader(torch.utils.data.TensorDataset(*blob_images(16))), epochs=1)
    state = source.state_dict()
    del state[drop]
    from advkit.training import save_checkpoint

    path = save_checkpoint(state, tmp_path / "skewed.pt")
    model = tiny_model(seed=2)
    target = quiet_trainer(model)
    before = weights(model)
    with pytest.raises(ValueError, match=f"skewed.pt.*{drop}.*missing.*nothing was restored"):
        target.load(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert target.epoch == 0 and target.global_step == 0 and len(target.history) == 0


def test_a_failure_while_restoring_rolls_back(tmp_path: Path) -> None:
    class Fragile(Callback):
        def load_state_dict(self, state) -> None:  # type: ignore[no-untyped-def]
            raise ValueError("callback state from another version")

    source = quiet_trainer(tiny_model(seed=1), callbacks=[Fragile()])
    source.fit(loader(torch.utils.data.TensorDataset(*blob_images(16))), epochs=1)
    path = source.save(tmp_path / "ckpt.pt")
    model = tiny_model(seed=2)
    before = weights(model)
    target = quiet_trainer(model, callbacks=[Fragile()])
    with pytest.raises(ValueError, match="another version"):
        target.load(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert target.epoch == 0 and not target.optimizer.state


def test_save_pruned_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advkit._atomic as atomic

    calls: list[int] = []
    real = atomic.os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    save_pruned(tiny_model(), tmp_path / "p.pt")
    assert len(calls) >= 1  # the file (and, on POSIX, its folder)


def test_weights_load_checks_the_checksum(tmp_path: Path) -> None:
    path = quiet_trainer(tiny_model()).save(tmp_path / "best.pt")
    flipped = flip_bit(path, random.Random(3))
    with pytest.raises(ValueError, match=flipped.name):
        load_weights(tiny_model(), flipped)

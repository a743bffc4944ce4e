"""Every part on a CUDA device: attacks, Trainer (with mixed precision), grid, Pruner.

Skipped without a GPU (so in CI); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advkit.attacks import FGSM, IFGSM, PGD
from advkit.evaluation import evaluate_grid, robust_accuracy
from advkit.models import resnet18
from advkit.pruning import Pruner, apply_plan, count_parameters, load_pruned, save_pruned
from advkit.training import TRADES, Trainer
from conftest import blob_images, tiny_model, train_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def exact_kernels() -> Iterator[None]:
    """Deterministic cuDNN and no TF32: results comparable element for element."""
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        (
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = saved


def host_syncs(fn: Callable[[], object]) -> int:
    """Host-device synchronizations of one call, counted as the attack-loop benchmark counts."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from attack_loop import count_host_syncs
    finally:
        sys.path.remove(str(BENCHMARKS))
    count = count_host_syncs(fn, CUDA)
    assert count is not None  # internal invariant: counted on CUDA
    return count


def test_attack_loop_makes_no_host_sync_per_step() -> None:
    model = tiny_model().eval().to(CUDA)
    images, labels = (t.to(CUDA) for t in blob_images(32))
    one, ten = (IFGSM(eps=8 / 255, steps=s, alpha=2 / 255) for s in (1, 10))
    one(model, images, labels)  # warm up lazy initializations
    syncs_one, syncs_ten = (
        host_syncs(lambda: one(model, images, labels)),
        host_syncs(lambda: ten(model, images, labels)),
    )
    # The batch's values and the labels' range are read back together, once per call.
    assert syncs_one == syncs_ten == 1, f"1 step: {syncs_one} syncs, 10 steps: {syncs_ten}"
    fgsm = FGSM(eps=8 / 255)
    fgsm(model, images, labels)
    assert host_syncs(lambda: fgsm(model, images, labels)) == 1


def test_cuda_attacks_equal_the_cpu_attacks() -> None:
    model = train_tiny(tiny_model(), *blob_images(128), epochs=30)
    images, labels = blob_images(64, seed=1)
    attack = IFGSM(eps=4 / 255, steps=5, alpha=1 / 255)
    on_cpu = attack(model, images, labels)
    with exact_kernels():
        on_gpu = attack(model.to(CUDA), images.to(CUDA), labels.to(CUDA)).cpu()
    # Gradients of near-zero components may differ in sign between devices; most agree.
    agree = (on_gpu == on_cpu).float().mean().item()
    assert agree >= 0.99, f"only {agree:.2%} of the elements agree"
    assert (on_gpu - images).abs().max() <= 4 / 255 + 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_attack_stays_in_the_ball_and_follows_fp32(dtype: torch.dtype) -> None:
    model = train_tiny(tiny_model(), *blob_images(128), epochs=30).to(CUDA)
    images, labels = (t.to(CUDA) for t in blob_images(64, seed=1))
    eps = 8 / 255
    adversarial = PGD(eps=eps, steps=5, autocast=dtype)(model, images, labels)
    assert adversarial.dtype == torch.float32
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    probe = 2**-10  # tiny eps inside wide bounds: x_adv - x is eps * sign(gradient)
    signs = {
        name: (FGSM(eps=probe, bounds=(-1, 2), autocast=d)(model, images, labels) - images).sign()
        for name, d in (("fp32", None), ("amp", dtype))
    }
    agree = (signs["fp32"] == signs["amp"]).float().mean().item()
    assert agree >= 0.9, f"{dtype}: only {agree:.2%} of the gradient signs agree with fp32"


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_trainer_adversarial_fit_with_amp(tmp_path, amp_dtype: torch.dtype) -> None:
    images, labels = blob_images(640)
    train = DataLoader(
        TensorDataset(images[:512], labels[:512]),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(TensorDataset(images[512:], labels[512:]), batch_size=128)
    model = tiny_model()
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=0.02),
        attack=IFGSM(eps=4 / 255, steps=2),
        device="cuda",
        amp=True,
        amp_dtype=amp_dtype,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    history = trainer.fit(train, val, epochs=10)
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert history.last["val_accuracy"] >= 0.9, history.last
    metrics = trainer.evaluate(val, attack=IFGSM(eps=4 / 255, steps=5))
    assert 0 <= metrics["robust_accuracy"] <= metrics["accuracy"]
    assert not trainer.model.training

    on_cpu = tiny_model()
    cpu_trainer = Trainer(
        on_cpu, torch.optim.Adam(on_cpu.parameters()), device="cpu", progress=False
    )
    with warnings.catch_warnings(record=True) as caught:  # a CUDA checkpoint loads on the CPU
        warnings.simplefilter("always")
        cpu_trainer.load(tmp_path / "last.pt")
    # Only float16 training has a GradScaler, which a CPU trainer has no use for.
    scaler_warnings = [w for w in caught if "GradScaler" in str(w.message)]
    assert len(scaler_warnings) == (amp_dtype == torch.float16)
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(on_cpu.state_dict()[name], tensor.cpu(), rtol=0, atol=0)


def test_trainer_with_a_cuda_generator_resumes_bit_exact(tmp_path) -> None:
    """The Trainer's generator on the GPU: TRADES draws its starts from it alone (the CUDA
    global RNG is left as it was), and a run resumed from its checkpoint ends bit for bit
    where the uninterrupted run does."""
    images, labels = blob_images(192)
    data = TensorDataset(images, labels)

    def run(epochs: int, seed: int, checkpoint_dir=None, resume_from=None) -> Trainer:
        trainer = Trainer(
            tiny_model(seed=0),
            lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
            objective=TRADES(eps=4 / 255, steps=2),
            device="cuda",
            generator=torch.Generator(device="cuda").manual_seed(seed),
            checkpoint_dir=checkpoint_dir,
            progress=False,
        )
        batches = DataLoader(
            data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        global_state = torch.cuda.get_rng_state()  # after tiny_model's torch.manual_seed
        trainer.fit(batches, epochs=epochs, resume_from=resume_from)
        if resume_from is None:  # a resume restores the checkpoint's global states
            assert torch.equal(torch.cuda.get_rng_state(), global_state)
        return trainer

    with exact_kernels():
        straight = run(2, seed=1)
        run(1, seed=1, checkpoint_dir=tmp_path)
        resumed = run(2, seed=999, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert torch.equal(resumed.generator.get_state(), straight.generator.get_state())


def test_grid_equals_per_cell_on_cuda() -> None:
    model = train_tiny(tiny_model(), *blob_images(256), epochs=60).to(CUDA)
    images, labels = (t.to(CUDA) for t in blob_images(96, seed=2))
    loader = [(images[i : i + 40], labels[i : i + 40]) for i in range(0, 96, 40)]
    # 1/255 x 2 rides on 2/255 x 4 (equal eps / steps); with a given alpha, columns share.
    eps, steps = [0.0, 1 / 255, 2 / 255, 8 / 255], [1, 2, 4]
    for kwargs in ({}, {"alpha": 1 / 255}):
        with exact_kernels():
            grid = evaluate_grid(
                model, loader, IFGSM, eps=eps, steps=steps, attack_kwargs=kwargs, progress=False
            )
            plain = [
                [
                    robust_accuracy(
                        model,
                        loader,
                        IFGSM(eps=e, steps=s, **kwargs),
                        early_stop=False,
                        progress=False,
                    ).robust.correct
                    for e in eps
                ]
                for s in steps
            ]
        assert [[cell.correct for cell in row] for row in grid.robust] == plain, kwargs
        assert grid.passed, grid.checks


def test_pruner_on_a_cuda_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    pruner = Pruner(ratio=0.2, targets="backbone.layer4.*.conv1")
    example = torch.rand(2, 3, 32, 32)
    cpu_plan = pruner.plan(model, example)
    gpu_model = resnet18(num_classes=10).eval().to(CUDA)
    gpu_model.load_state_dict(model.state_dict())
    gpu_plan = pruner.plan(gpu_model, example.to(CUDA))
    assert [g.keep for g in gpu_plan.groups] == [g.keep for g in cpu_plan.groups]

    pruned = apply_plan(gpu_model, gpu_plan)
    assert count_parameters(pruned) == 9_536_178
    assert all(p.device.type == "cuda" for p in pruned.parameters())
    assert next(gpu_model.parameters()).shape == next(model.parameters()).shape  # a copy
    with exact_kernels(), torch.no_grad():
        expected = apply_plan(model, cpu_plan)(example)
        got = pruned(example.to(CUDA)).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    save_pruned(pruned, tmp_path / "pruned.pt")
    reloaded = load_pruned(tmp_path / "pruned.pt", resnet18(num_classes=10), map_location="cpu")
    assert isinstance(reloaded, nn.Module) and count_parameters(reloaded) == 9_536_178

"""The shared benchmark harness: rotating round-robin order, in-round ratio medians (with a
fake clock, never a real timing), synthetic batches, the environment record, output paths."""

from __future__ import annotations

import gc
import json
import statistics
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


class FakeClock:
    """A clock that only moves when a timed callable says how long it 'took'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def harness(load_benchmark):
    return load_benchmark("_harness")


def test_rotation_puts_every_name_in_every_position(harness) -> None:
    names = ["a", "b", "c"]
    orders = [harness.rotation(names, r) for r in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert orders[3:] == orders[:3]
    for position in range(3):
        assert sorted(order[position] for order in orders[:3]) == names


def test_round_robin_calls_warmup_in_order_then_rotates(harness) -> None:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = harness.round_robin(fns, harness.Clock(now=FakeClock()), repeats=4, warmup=1)
    assert calls == list("abc" + "abc" + "bca" + "cab" + "abc")
    assert {name: len(values) for name, values in times.items()} == {"a": 4, "b": 4, "c": 4}


def test_round_robin_records_each_call_in_its_round(harness) -> None:
    clock = FakeClock()
    # Round r: a takes 1 + r, b takes 10 * (r + 1): whatever the order they are called in.
    round_of = {"a": 0, "b": 0}

    def make(name: str, cost):
        def fn() -> None:
            clock.spend(cost(round_of[name]))
            round_of[name] += 1

        return fn

    fns = {"a": make("a", lambda r: 1.0 + r), "b": make("b", lambda r: 10.0 * (r + 1))}
    times = harness.round_robin(fns, harness.Clock(now=clock), repeats=3)
    assert times == {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}


def test_paired_ratio_is_the_median_of_in_round_ratios(harness) -> None:
    # The machine slows down 100x in the last round for both: the in-round ratio stays 0.5
    # there, while the ratio of the medians (10 / 5 = 2) is biased by b's fast second round.
    a, b = [1.0, 10.0, 100.0], [2.0, 5.0, 200.0]
    expected = statistics.median([1.0 / 2.0, 10.0 / 5.0, 100.0 / 200.0])
    assert harness.paired_ratio(a, b) == expected == 0.5
    assert statistics.median(a) / statistics.median(b) == 2.0
    ratios = harness.ratios_to({"a": a, "b": b}, "b")
    assert ratios == {"a": 0.5, "b": 1.0}
    with pytest.raises(ValueError):
        harness.paired_ratio([1.0, 2.0], [1.0])  # not from the same rounds


def test_drift_cancels_in_paired_ratios(harness) -> None:
    # A machine that gets slower every round (factor 2 per round) and a callable that is
    # always 1.5x the baseline: the harness reports exactly 1.5.
    clock = FakeClock()
    speed = iter(2.0**r for r in range(100))
    factor = {"slow": 1.5, "base": 1.0}
    current = {"round": -1, "scale": 1.0}

    def make(name: str):
        def fn() -> None:
            clock.spend(factor[name] * current["scale"])

        return fn

    fns = {"base": make("base"), "slow": make("slow")}

    def log(_line: str) -> None:  # called after each round: the machine slows down
        current["scale"] = next(speed)

    times = harness.round_robin(fns, harness.Clock(now=clock), repeats=5, log=log)
    assert times["base"] == [1.0, 1.0, 2.0, 4.0, 8.0]
    assert harness.ratios_to(times, "base")["slow"] == 1.5


def test_round_robin_rejects_empty_runs(harness) -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        harness.round_robin({"a": lambda: None}, harness.Clock(), repeats=0)


def test_clock_pauses_the_garbage_collector_only_during_the_call(harness) -> None:
    seen = []
    clock = harness.Clock(now=FakeClock())
    assert gc.isenabled()
    clock.time(lambda: seen.append(gc.isenabled()))
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        clock.time(lambda: None)
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_random_batches_are_uniform_seeded_draws(harness) -> None:
    images, labels = harness.synthetic_batch(6, 8, num_classes=5, seed=2, split=3)
    gen = torch.Generator().manual_seed(2 * 1000 + 3)
    assert torch.equal(images, torch.rand(6, 3, 8, 8, generator=gen))
    assert torch.equal(labels, torch.randint(0, 5, (6,), generator=gen))
    again, _ = harness.synthetic_batch(6, 8, num_classes=5, seed=2, split=3, channels_last=True)
    assert torch.equal(again, images) and again.is_contiguous(memory_format=torch.channels_last)


def test_learnable_batches_share_class_layouts_across_splits(harness) -> None:
    def class_means(seed: int, split: int) -> torch.Tensor:
        images, labels = harness.synthetic_batch(2000, 8, seed=seed, split=split, learnable=True)
        assert images.min() >= 0 and images.max() <= 1 and labels.unique().numel() == 10
        means = torch.stack([images[labels == c].mean(0) for c in range(10)])
        return (means - means.mean(0)).flatten()

    train, test, other = class_means(0, 1), class_means(0, 2), class_means(1, 1)
    same = torch.corrcoef(torch.stack([train, test]))[0, 1]
    different = torch.corrcoef(torch.stack([train, other]))[0, 1]
    assert same > 0.6 and abs(different) < 0.3  # 0.79 and -0.08 for these seeds
    first, _ = harness.synthetic_batch(4, 8, seed=0, split=1, learnable=True)
    assert torch.equal(first, harness.synthetic_batch(4, 8, seed=0, split=1, learnable=True)[0])
    assert not torch.equal(first, harness.synthetic_batch(4, 8, seed=0, split=2, learnable=True)[0])


def test_cpu_calibration_rates_the_workload_against_the_reference(harness) -> None:
    ticks = iter(range(1000))
    threads = torch.get_num_threads()
    calibration = harness.cpu_calibration(rounds=3, now=lambda: next(ticks) * 0.25)
    assert torch.get_num_threads() == threads  # it ran with 2 threads, then restored them
    # Every timed step lasts one tick of 0.25 s: 64 images / 0.25 s = 256 images per second.
    assert calibration["training_images_per_s"] == calibration["attack_images_per_s"] == 256.0
    assert calibration["factor"] == round(min(256 / 161, 256 / 367), 3) == 0.698
    assert calibration["threads"] == 2 and calibration["rounds"] == 3
    assert next(ticks) == 12  # 2 steps x 3 rounds x (start, end); warm-ups are not timed


def test_environment_records_versions_threads_and_isa(harness, monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(harness, "cpu_calibration", lambda: {"factor": 0.5, "threads": 2})
    env = harness.environment("cpu", compared_library="1.0")
    assert env["cpu_calibration"] == {"cpu": harness.cpu_name(), "factor": 0.5, "threads": 2}
    assert env["compute_settings"]["torch_threads"] == env["threads"]
    assert env["compute_settings"]["deterministic_algorithms"] is False
    assert harness.environment("cpu", calibrate=False)["cpu_calibration"] is None
    assert env["torch"] == torch.__version__
    assert env["threads"] == torch.get_num_threads()
    assert env["isa_env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["isa_env"]["DNNL_MAX_CPU_ISA"] is None
    assert env["device"] == "cpu" and env["device_name"] == env["cpu"] == harness.cpu_name()
    assert env["compared_library"] == "1.0"
    assert json.loads(json.dumps(env)) == env


def test_quick_results_never_take_a_recorded_name(harness, tmp_path) -> None:
    assert harness.result_paths("grid", quick=False) == (
        BENCHMARKS / "results" / "grid.json",
        BENCHMARKS / "results" / "grid.md",
    )
    json_path, md_path = harness.result_paths("grid", quick=True, out_dir=tmp_path)
    assert (json_path, md_path) == (tmp_path / "grid_quick.json", tmp_path / "grid_quick.md")
    ignored = (BENCHMARKS.parent / ".gitignore").read_text().splitlines()
    assert "/benchmarks/results/*_quick.*" in ignored


@pytest.mark.parametrize(
    "script", sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
)
def test_every_benchmark_uses_the_harness(script: str) -> None:
    source = (BENCHMARKS / script).read_text()
    assert "from _harness import" in source
    for private_timer in ("def round_robin", "def time_round_robin", "def timed("):
        assert private_timer not in source

"""Smoke test: the fast-evaluation benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_quick_benchmark_writes_quick_results(
    tmp_path: Path, load_benchmark: Callable[[str], ModuleType]
) -> None:
    bench = load_benchmark("fast_evaluation")
    payload = bench.main(["--quick", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fast_evaluation_quick.json",
        "fast_evaluation_quick.md",
    ]
    rows = payload["rows"]
    assert [row["model"] for row in rows] == [
        "standard CNN",
        "PGD-trained CNN",
        "TRADES-trained CNN",
        "quantized input (masking)",
        "PGD-trained ResNet-18 (width 16, 32x32)",
    ]
    for row in rows:
        for version in ("standard", "fast"):
            result = row[version]
            work = result["work"]
            assert result["forward_equivalents"] == (
                work["forward_rows"] + work["gradient_rows"] + 2 * work["backward_rows"]
            )
            assert (
                sum(m["forward_equivalents"] for m in result["members"].values())
                <= (result["forward_equivalents"])
            )
        assert row["cost_ratio"] == (
            row["fast"]["forward_equivalents"] / row["standard"]["forward_equivalents"]
        )
    # The quantized model's zero gradients are caught by the fast version's checks.
    assert "zero_gradients" in rows[3]["fast"]["failed_checks"]
    # --models picks panel members, in the order given.
    picked = bench.main(["--quick", "--out", str(tmp_path), "--models", "cnn-quantized", "cnn"])
    assert [row["model"] for row in picked["rows"]] == ["quantized input (masking)", "standard CNN"]
    assert "| quantized input (masking) |" in (tmp_path / "fast_evaluation_quick.md").read_text()


def test_a3_variants_and_norms(tmp_path: Path, load_benchmark: Callable[[str], ModuleType]) -> None:
    bench = load_benchmark("fast_evaluation")
    payload = bench.main(
        ["--quick", "--out", str(tmp_path), "--models", "cnn", "--norms", "L2", "--a3"]
    )
    (row,) = payload["rows"]
    assert row["norm"] == "L2" and list(payload["config"]["norms"]) == ["L2"]
    for name in bench.A3_VARIANTS:
        assert row[name]["members"].keys() == row["fast"]["members"].keys()
    text = (tmp_path / "fast_evaluation_quick.md").read_text()
    assert "A3's rules" in text and "fast+adi+osd robust" in text
    # Each variant is fast's members with the options on its APGD members only.
    both = bench.fast_with({"adi_steps": 7, "keep_share": 0.5}, 0.5, "L2", 0)
    ce, targeted, square = both.attacks
    assert (ce.adi_steps, ce.keep_share) == (7, 1.0)
    assert (targeted.adi_steps, targeted.keep_share) == (7, 0.5)
    assert targeted.targeting == "malt" and targeted.exit_fooled
    assert type(square).__name__ == "Square" and both.black_box == "when_masked"

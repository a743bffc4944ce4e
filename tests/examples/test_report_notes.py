"""The study report's notes next to its numbers, rendered from the committed demo results."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

from study.report import render_report  # noqa: E402
from study.report_beyond import EXAMPLES_CAPTION  # noqa: E402

DEMO = json.loads((EXAMPLES / "results-demo" / "results.json").read_text())


def test_defenses_that_underfit_are_said_to_underfit_next_to_the_table() -> None:
    report = render_report(DEMO)
    defenses = report[report.index("### 5.3") :]
    # The demo's TRADES and MART lost > 20 points of clean accuracy from the start (prune40).
    start = DEMO["pruning"]["prune40"]["clean"]["value"]
    lost = {
        name: 100 * (start - DEMO["beyond_the_study"]["defenses"][key]["clean"]["value"])
        for name, key in (("TRADES", "adv_trades"), ("MART", "adv_mart"))
    }
    assert min(lost.values()) > 20, "the demo case must have both defenses underfitting"
    note = "**Why TRADES and MART fall behind here: they underfit at this budget.**"
    assert note in defenses
    expected = f"They lose TRADES {lost['TRADES']:.1f}, MART {lost['MART']:.1f} points of clean"
    assert expected in defenses
    assert defenses.index("| TRADES |") < defenses.index(note) < defenses.index("**Finding.**")
    # A defense that keeps its clean accuracy is not called out.
    results = copy.deepcopy(DEMO)
    results["beyond_the_study"]["defenses"]["adv_trades"]["clean"] = copy.deepcopy(
        results["pruning"]["prune40"]["clean"]
    )
    assert "**Why MART falls behind here: it underfits" in render_report(results)
    results["beyond_the_study"]["defenses"]["adv_mart"]["clean"] = copy.deepcopy(
        results["pruning"]["prune40"]["clean"]
    )
    assert "behind here" not in render_report(results)


def test_the_adversarial_examples_plot_explains_its_labels() -> None:
    report = render_report(DEMO)
    image = report.index("![adversarial examples](examples.png)")
    assert report.index(EXAMPLES_CAPTION) > image
    assert "*X -> Y*" in EXAMPLES_CAPTION and "prediction on the clean" in EXAMPLES_CAPTION

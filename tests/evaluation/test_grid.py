"""The batched eps x steps grid equals the plain per-cell evaluation, for less work."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from evaluation_cases import EscapingIFGSM, Loader, make_loader
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, Attack, GradientAttack
from advkit.attacks.compose import WorstCase
from advkit.evaluation import GridResult, evaluate_grid, robust_accuracy

EPS = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
STEPS = [1, 3, 5]
ATTACKS: dict[str, tuple[type[Attack], dict[str, Any]]] = {
    "IFGSM": (IFGSM, {}),
    "MIFGSM": (MIFGSM, {"decay": 0.5}),
    "PGD-no-start": (PGD, {"random_start": False}),
    # A given step size: the rows of a column share one trajectory.
    "IFGSM-fixed-alpha": (IFGSM, {"alpha": 1 / 255}),
    "MIFGSM-fixed-alpha": (MIFGSM, {"decay": 0.5, "alpha": 1.5 / 255}),
}


@pytest.fixture(scope="module")
def model(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> nn.Module:
    return trained_model_and_data[0]


@pytest.fixture(scope="module")
def loader(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> Loader:
    _, images, labels = trained_model_and_data
    return make_loader(images[:96], labels[:96], 40)  # batches of 40, 40 and 16


def per_cell(
    model: nn.Module,
    loader: Loader,
    attack: type[Attack],
    kwargs: dict[str, Any],
    eps: list[float] = EPS,
    steps: list[int] = STEPS,
) -> list[list[int]]:
    """The plain evaluation: one robust_accuracy call per cell, no early stopping."""
    return [
        [
            robust_accuracy(
                model, loader, attack(eps=e, steps=s, **kwargs), early_stop=False, progress=False
            ).robust.correct
            for e in eps
        ]
        for s in steps
    ]


def counts(grid: GridResult) -> list[list[int]]:
    return [[cell.correct for cell in row] for row in grid.robust]


# Doubling eps and steps gives equal step sizes eps / steps across columns: cells ride there.
LAYOUTS = {"wide": (EPS, STEPS), "doubling": ([e / 255 for e in (1, 2, 4, 8)], [1, 2, 4, 8])}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_grid_equals_per_cell_evaluation_exactly(
    model: nn.Module, loader: Loader, name: str, layout: str
) -> None:
    attack, kwargs = ATTACKS[name]
    eps, steps = LAYOUTS[layout]
    expected = per_cell(model, loader, attack, kwargs, eps, steps)
    flat = [c for row in expected for c in row]
    assert len(set(flat)) > 3, "a trivial grid would prove nothing"
    for early_stop, max_batch in [(False, None), (True, None), (True, 37), (False, 1000)]:
        grid = evaluate_grid(
            model,
            loader,
            attack,
            eps=eps,
            steps=steps,
            attack_kwargs=kwargs,
            early_stop=early_stop,
            max_batch=max_batch,
            progress=False,
        )
        assert counts(grid) == expected, (early_stop, max_batch)
        assert grid.passed


# No two cells of this grid have the same step size eps / steps: each is attacked.
EPS_OWN = EPS[1:]


def test_grid_counts_the_work_exactly(model: nn.Module, loader: Loader) -> None:
    plain = evaluate_grid(
        model, loader, IFGSM, eps=EPS_OWN, steps=STEPS, early_stop=False, progress=False
    )
    correct = plain.clean.correct
    with torch.no_grad():
        per_batch = [int((model(x).argmax(1) == y).sum()) for x, y in loader]
    assert sum(per_batch) == correct
    # Per batch: one shared gradient at the clean inputs, then steps - 1 gradients per cell.
    later_steps = sum(STEPS) - len(STEPS)
    assert plain.work.grad_calls == len(loader) * (1 + later_steps)
    assert plain.work.grad_samples == correct * (1 + len(EPS_OWN) * later_steps)
    assert (plain.work.forward_calls, plain.work.forward_samples) == (len(loader), 96)

    split = evaluate_grid(
        model,
        loader,
        IFGSM,
        eps=EPS_OWN,
        steps=STEPS,
        early_stop=False,
        max_batch=64,
        progress=False,
    )
    chunks = sum(math.ceil(n * len(EPS_OWN) / 64) for n in per_batch)
    assert split.work.grad_calls == len(loader) + chunks * later_steps
    assert split.work.grad_samples == plain.work.grad_samples

    early = evaluate_grid(model, loader, IFGSM, eps=EPS_OWN, steps=STEPS, progress=False)
    assert early.work.grad_samples < plain.work.grad_samples
    assert early.work.grad_calls <= plain.work.grad_calls


def test_grid_shares_the_first_gradient_and_batches_the_rest(
    model: nn.Module, loader: Loader
) -> None:
    cells = [
        robust_accuracy(model, loader, IFGSM(eps=e, steps=s), early_stop=False, progress=False)
        for s in STEPS
        for e in EPS_OWN
    ]
    grid = evaluate_grid(
        model, loader, IFGSM, eps=EPS_OWN, steps=STEPS, early_stop=False, progress=False
    )
    correct, cell_count = grid.clean.correct, len(EPS_OWN) * len(STEPS)
    # Every cell's first gradient is the same one, at the clean inputs: computed once.
    shared = (cell_count - 1) * correct
    assert grid.work.grad_samples == sum(c.work.grad_samples for c in cells) - shared
    first_calls = cell_count * len(loader)
    assert (grid.work.grad_calls - len(loader)) * len(EPS_OWN) == (
        sum(c.work.grad_calls for c in cells) - first_calls
    )


def test_rows_with_a_given_step_size_share_one_trajectory(model: nn.Module, loader: Loader) -> None:
    alpha = {"alpha": 1 / 255}
    grid = evaluate_grid(
        model, loader, IFGSM, eps=EPS, steps=STEPS, attack_kwargs=alpha, early_stop=False,
        progress=False,
    )  # fmt: skip
    correct, longest = grid.clean.correct, max(STEPS)
    # Only the longest row is attacked: one shared first gradient, then its later steps.
    assert grid.work.grad_calls == len(loader) * longest
    assert grid.work.grad_samples == correct * (1 + len(EPS) * (longest - 1))
    early = evaluate_grid(
        model, loader, IFGSM, eps=EPS, steps=STEPS, attack_kwargs=alpha, progress=False
    )
    assert counts(early) == counts(grid)
    assert early.work.grad_samples < grid.work.grad_samples
    # With the default step size, eps / steps, only eps = 0 has the same one (0) in every row:
    # its column is attacked in the longest row alone, every other cell on its own.
    default = evaluate_grid(
        model, loader, IFGSM, eps=EPS, steps=STEPS, early_stop=False, progress=False
    )
    own = (len(EPS) - 1) * (sum(STEPS) - len(STEPS))
    assert default.work.grad_samples == correct * (1 + own + longest - 1)


def test_cells_ride_on_a_larger_ball_with_the_same_step_size(
    model: nn.Module, loader: Loader
) -> None:
    # eps / steps: 1/255 x 2 equals 2/255 x 4, and 2/255 x 2 equals 4/255 x 4; 4/255 x 2 is alone.
    eps, steps = [1 / 255, 2 / 255, 4 / 255], [2, 4]
    expected = per_cell(model, loader, IFGSM, {}, eps, steps)
    assert len({c for row in expected for c in row}) > 3, "a trivial grid would prove nothing"
    grid = evaluate_grid(
        model, loader, IFGSM, eps=eps, steps=steps, early_stop=False, progress=False
    )
    assert counts(grid) == expected
    assert grid.passed
    correct = grid.clean.correct
    # The first gradient, 3 later steps of each 4-step cell, 1 of the lone 2-step cell.
    assert grid.work.grad_samples == correct * (1 + 3 * 3 + 1)
    assert grid.work.grad_calls == len(loader) * (1 + 3 + 1)
    # A rider pays a forward pass at its own last iterate, for the samples not fooled before.
    extra = grid.work.forward_samples - 96
    assert 0 < extra <= 2 * correct
    assert len(loader) < grid.work.forward_calls <= 3 * len(loader)


@pytest.mark.parametrize(
    ("attack", "shares", "prefix"),
    [
        (IFGSM(eps=0.1, steps=2), True, True),
        (MIFGSM(eps=0.1, steps=2), True, True),
        (PGD(eps=0.1, steps=2, random_start=False), True, True),
        (PGD(eps=0.1, steps=2), False, False),  # each run draws its own start
        # Batch statistics would couple the samples: not shared, though this model has none.
        (IFGSM(eps=0.1, steps=2, model_mode="train"), False, True),
        # A loop of its own (here: one that moves its output) may visit other points.
        (EscapingIFGSM(eps=0.1, steps=2), False, True),
    ],
)
def test_trajectories_are_shared_only_where_they_are_the_same(
    attack: Attack, shares: bool, prefix: bool
) -> None:
    assert isinstance(attack, GradientAttack)
    assert attack.shares_walks() is shares
    # The claim itself: with one step size, a shorter run visits a longer run's first points.
    torch.manual_seed(0)
    visited: list[Tensor] = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 4), nn.Tanh(), nn.Linear(4, 3))
    net.register_forward_pre_hook(lambda _, args: visited.append(args[0].detach().clone()))
    images, labels = torch.rand(6, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    attack.replace(steps=7, alpha=0.01).run(net, images, labels)
    longer, visited[:] = visited[:], []
    for steps in (2, 5):
        attack.replace(steps=steps, alpha=0.01).run(net, images, labels)
        assert len(visited) == steps + 1  # one gradient per step, then the last iterate
        same = all(torch.equal(a, b) for a, b in zip(visited, longer, strict=False))
        assert same is prefix, steps
        visited.clear()
    if not attack.shares_walks():
        first = (torch.zeros(6, 3), torch.zeros(6, 3, 4, 4))
        with pytest.raises(ValueError, match="cannot start from a given gradient"):
            next(attack.iterates(net, images, labels, start_gradient=first))


@pytest.mark.parametrize(
    ("attack", "shares"),
    [
        (IFGSM(eps=0.1, steps=2), True),
        (MIFGSM(eps=0.1, steps=2), True),
        (PGD(eps=0.1, steps=2, random_start=False), True),
        (PGD(eps=0.1, steps=2), False),  # each cell draws its own start
        (IFGSM(eps=0.1, steps=2, model_mode="train"), False),  # batch statistics couple samples
    ],
)
def test_first_gradient_is_shared_only_where_it_is_the_same(attack: Attack, shares: bool) -> None:
    assert attack.shares_walks() is shares
    if not shares:
        images, labels = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
        first = (torch.zeros(2, 2), torch.zeros(2, 3, 4, 4))
        with pytest.raises(ValueError, match="cannot start from a given gradient"):
            next(attack.iterates(nn.Flatten(), images, labels, start_gradient=first))


def test_random_start_grid_does_the_passes_of_its_cells(model: nn.Module, loader: Loader) -> None:
    grid = evaluate_grid(
        model, loader, PGD, eps=EPS[1:], steps=[1, 3], early_stop=False, progress=False
    )
    assert grid.work.grad_samples == grid.clean.correct * len(EPS[1:]) * 4


def test_early_stopping_gives_the_same_robust_accuracy_as_the_full_run(
    model: nn.Module, loader: Loader
) -> None:
    for attack in [IFGSM(eps=4 / 255, steps=5), MIFGSM(eps=8 / 255, steps=3)]:
        full = robust_accuracy(model, loader, attack, early_stop=False, progress=False)
        early = robust_accuracy(model, loader, attack, early_stop=True, progress=False)
        assert early.robust == full.robust
        assert early.work.grad_samples < full.work.grad_samples


def test_eps_only_grid_for_an_attack_without_steps(model: nn.Module, loader: Loader) -> None:
    grid = evaluate_grid(model, loader, FGSM, eps=EPS, progress=False)
    assert grid.steps == (None,)
    for e in EPS:
        cell = robust_accuracy(model, loader, FGSM(eps=e), progress=False)
        assert grid.accuracy(e) == cell.robust


def test_grid_from_an_attack_template(model: nn.Module, loader: Loader) -> None:
    template = IFGSM(eps=0.5, steps=7, alpha=1 / 255)
    from_object = evaluate_grid(model, loader, template, eps=EPS[1:], steps=[2, 4], progress=False)
    from_class = evaluate_grid(
        model,
        loader,
        IFGSM,
        eps=EPS[1:],
        steps=[2, 4],
        attack_kwargs={"alpha": 1 / 255},
        progress=False,
    )
    assert from_object.robust == from_class.robust
    assert from_object.attack == from_class.attack == "IFGSM(alpha=0.00392156862745098)"


def test_grid_of_a_worst_case_equals_its_cells(model: nn.Module, loader: Loader) -> None:
    worst = WorstCase([FGSM(eps=0.1), IFGSM(eps=0.1, steps=2)])
    grid = evaluate_grid(model, loader, worst, eps=EPS, max_batch=50, progress=False)
    for e in EPS:
        cell = robust_accuracy(model, loader, worst.replace(eps=e), progress=False)
        assert grid.accuracy(e) == cell.robust
    assert grid.attack.startswith("WorstCase([FGSM(")


def test_random_start_grid_is_reproducible_with_a_generator(
    model: nn.Module, loader: Loader
) -> None:
    def run() -> GridResult:
        return evaluate_grid(
            model,
            loader,
            PGD,
            eps=EPS[1:],
            steps=[2],
            generator=torch.Generator().manual_seed(7),
            progress=False,
        )

    assert run().robust == run().robust


def test_grid_lookup_and_its_errors(model: nn.Module, loader: Loader) -> None:
    grid = evaluate_grid(model, loader, IFGSM, eps=[8 / 255, 0.0], steps=[3, 1], progress=False)
    assert grid.eps == (0.0, 8 / 255) and grid.steps == (1, 3)  # sorted
    assert grid.accuracy(0.0, 3) == grid.robust[1][0]
    with pytest.raises(KeyError, match=r"no cell at eps=0\.5"):
        grid.accuracy(0.5, 3)
    with pytest.raises(KeyError, match="steps=2"):
        grid.accuracy(0.0, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": []}, ValueError, "eps must list at least one value"),
        ({"eps": [0.1, -0.1]}, ValueError, r"eps values must be finite and >= 0, got -0\.1"),
        ({"eps": [float("nan")]}, ValueError, "finite and >= 0"),
        ({"eps": [0.1, 0.1]}, ValueError, "eps values must be distinct"),
        ({"eps": 0.1}, TypeError, "eps must be a sequence"),
        ({"eps": ["0.1"]}, TypeError, "eps values must be a float, got str"),
        ({"steps": []}, ValueError, "steps must list at least one value"),
        ({"steps": [0, 1]}, ValueError, "steps values must be >= 1, got 0"),
        ({"steps": [1.5]}, TypeError, "steps values must be an int, got float"),
        ({"steps": [2, 2]}, ValueError, "steps values must be distinct"),
        ({"steps": 3}, TypeError, "steps must be a sequence"),
        ({"attack": FGSM}, ValueError, "FGSM is not iterative"),
        ({"attack": FGSM(eps=0.1)}, ValueError, "is not iterative"),
        ({"attack": "IFGSM"}, TypeError, "attack must be an Attack class"),
        ({"attack": nn.Linear}, TypeError, "attack must be an Attack class"),
        ({"attack_kwargs": {"eps": 0.1}}, ValueError, "may not set 'eps'"),
        ({"attack_kwargs": {"steps": 2}}, ValueError, "may not set 'steps'"),
        ({"attack_kwargs": {"alpha": torch.ones(3)}}, ValueError, "tensor for 'alpha'"),
        ({"attack_kwargs": {"alpah": 0.1}}, TypeError, "alpah"),
        ({"attack_kwargs": {"targeted": True}}, ValueError, "untargeted attack"),
        (
            {"attack": IFGSM(eps=0.1, steps=2), "attack_kwargs": {"alpha": 0.1}},
            ValueError,
            "only apply to an attack class",
        ),
        ({"max_batch": 0}, ValueError, "max_batch must be >= 1, got 0"),
        ({"max_batch": 2.5}, TypeError, "max_batch must be an int, got float"),
        ({"early_stop": "yes"}, TypeError, "early_stop must be a bool"),
        ({"loader": []}, ValueError, "loader yielded no batches"),
        (
            {"loader": [(torch.full((2, 3, 8, 8), -0.5), torch.zeros(2, dtype=torch.long))]},
            ValueError,
            r"inputs must lie inside bounds \(0\.0, 1\.0\)",
        ),
        ({"model": "resnet"}, TypeError, r"model must be a torch\.nn\.Module"),
        ({"confidence": 95}, ValueError, r"confidence must be in \(0, 1\)"),
    ],
)
def test_grid_rejects_bad_input(
    model: nn.Module, loader: Loader, kwargs: dict[str, Any], error: type, match: str
) -> None:
    arguments: dict[str, Any] = {
        "model": model,
        "loader": loader,
        "attack": IFGSM,
        "eps": [0.01],
        "steps": [1, 2],
        "progress": False,
    } | kwargs
    with pytest.raises(error, match=match):
        evaluate_grid(**arguments)


def test_progress_bar_can_be_shown_or_hidden(
    model: nn.Module, loader: Loader, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = evaluate_grid(model, loader, IFGSM, eps=[0.01], steps=[1], progress=True)
    assert "grid" in capsys.readouterr().err
    hidden = evaluate_grid(model, loader, IFGSM, eps=[0.01], steps=[1], progress=False)
    assert capsys.readouterr().err == ""
    assert shown.robust == hidden.robust

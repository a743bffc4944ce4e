"""MALT targeting: the scores against the paper's formula, and the targeted members using them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from advkit.attacks import APGDT, FAB
from advkit.attacks.targeting import malt_scores, target_classes


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 6)).eval()


def _paper_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dual: float) -> torch.Tensor:
    """Algorithm 1 of Melamed et al. for one sample at a time: (z_c - z_y) / ||J_c - J_y||_*."""
    out = torch.empty(x.shape[0], 6)
    for i in range(x.shape[0]):
        z = model(x[i : i + 1])[0].detach()
        jac = jacobian(lambda v: model(v.unsqueeze(0))[0], x[i]).reshape(6, -1)
        label = int(y[i])
        for c in range(6):
            if c == label:
                out[i, c] = -float("inf")
                continue
            gap = jac[c] - jac[label]
            out[i, c] = (z[c] - z[label]) / torch.linalg.vector_norm(gap, ord=dual)
    return out


@pytest.mark.parametrize(("norm", "dual"), [("Linf", 1.0), ("L2", 2.0)])
def test_scores_equal_the_papers_formula(norm: str, dual: float) -> None:
    model = _model()
    x = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 5])
    ours = malt_scores(model, x, y, norm=norm)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, _paper_scores(model, x, y, dual))
    targets = target_classes(model, x, y, model(x).detach(), 3, targeting="malt", norm=norm)  # type: ignore[arg-type]
    assert torch.equal(targets, _paper_scores(model, x, y, dual).topk(3, dim=1).indices)
    assert not (targets == y[:, None]).any()  # the label is never a target


def test_a_linear_model_ranks_targets_by_exact_boundary_distance() -> None:
    # For a linear model the score is minus the exact L-inf distance to each pairwise boundary.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    x, y = torch.rand(3, 4), torch.tensor([0, 2, 4])
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    scores = malt_scores(model, x, y, norm="Linf")
    for i in range(3):
        for c in range(5):
            if c == int(y[i]):
                continue
            w = weight[c] - weight[y[i]]
            margin = x[i] @ w + bias[c] - bias[y[i]]
            torch.testing.assert_close(scores[i, c], margin / w.abs().sum())


def test_members_attack_the_malt_targets() -> None:
    model = _model()
    x = torch.rand(8, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    malt = malt_scores(model, x, y, norm="Linf").topk(2, dim=1).indices
    attack = APGDT(eps=0.05, steps=3, n_target_classes=2, targeting="malt")
    runs = attack._run_targets(model, x, y, model(x).detach())
    assert [r.tolist() for r in runs] == [malt[:, 0].tolist(), malt[:, 1].tolist()]
    result = attack.run(model, x, y)
    # MALT's Jacobian: one gradient row and one backward row per class, on the whole batch.
    # (APGD's own passes are one backward row per gradient row.)
    assert result.work.backward_rows - result.work.gradient_rows == 6 * 8 - 8
    fab = FAB(eps=0.05, steps=3, n_target_classes=2, targeting="malt").run(model, x, y)
    assert fab.fooled.shape == (8,)


def test_bad_targeting_is_refused() -> None:
    with pytest.raises(ValueError, match="targeting must be 'logits' or 'malt', got 'top'"):
        APGDT(eps=0.1, targeting="top")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targeting must be"):
        FAB(eps=0.1, targeting="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm must be 'Linf' or 'L2'"):
        malt_scores(_model(), torch.rand(2, 12), torch.tensor([0, 1]), norm="L1")  # type: ignore[arg-type]


def test_target_classes_refuses_bad_counts_and_rules() -> None:
    model = _model()
    x, y = torch.rand(2, 12), torch.tensor([0, 1])
    logits = model(x).detach()
    with pytest.raises(ValueError, match="count must be < the number of classes 6, got 6"):
        target_classes(model, x, y, logits, 6, targeting="malt", norm="Linf")
    with pytest.raises(ValueError, match="targeting must be 'logits' or 'malt', got 'best'"):
        target_classes(model, x, y, logits, 2, targeting="best", norm="Linf")  # type: ignore[arg-type]
    # The reference's rule is the logit order.
    ranked = logits.argsort(dim=1, descending=True)[:, 1:3]
    assert torch.equal(
        target_classes(model, x, y, logits, 2, targeting="logits", norm="L2"), ranked
    )

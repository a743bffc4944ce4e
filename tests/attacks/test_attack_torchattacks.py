"""Agreement with torchattacks, the field's reference library (a test dependency)."""

from __future__ import annotations

import torch
import torchattacks

from advkit import BIM, FGSM, MIFGSM, PGD


def test_fgsm_and_bim_bit_identical_to_torchattacks(reference_case) -> None:
    model, x, y = reference_case
    eps, alpha = 8 / 255, 2 / 255
    assert torch.equal(FGSM(eps=eps)(model, x, y), torchattacks.FGSM(model, eps=eps)(x, y))
    ours = BIM(eps=eps, steps=7, alpha=alpha)(model, x, y)
    assert torch.equal(ours, torchattacks.BIM(model, eps=eps, alpha=alpha, steps=7)(x, y))


def test_pgd_and_mifgsm_match_torchattacks_to_rounding(reference_case) -> None:
    """torchattacks projects as x0 + clamp(x - x0), which rounds differently by one ulp."""
    model, x, y = reference_case
    eps, alpha = 8 / 255, 2 / 255
    ours = PGD(eps=eps, steps=7, alpha=alpha, random_start=False)(model, x, y)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=7, random_start=False)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    ours = MIFGSM(eps=eps, steps=7, alpha=alpha, decay=1.0)(model, x, y)
    theirs = torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=7, decay=1.0)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)

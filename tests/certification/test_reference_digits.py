"""Agreement with an independent implementation of Cohen et al.'s core.py on real images
(scikit-learn's handwritten digits), within sampling error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta, norm
from torch import Tensor, nn

from advkit.certification import ABSTAIN, Smooth

SIGMA, N0, N, ALPHA = 0.25, 50, 1000, 0.001
RADII = (0.0, 0.25, 0.5)


class CohenSmooth:
    """core.py's Smooth, written out: one input at a time, counts with np.bincount, the
    Clopper-Pearson bound of proportion_confint(method="beta") from scipy's beta quantile."""

    def __init__(self, base: nn.Module, num_classes: int, sigma: float) -> None:
        self.base, self.num_classes, self.sigma = base, num_classes, sigma

    def _sample_noise(self, x: Tensor, num: int, batch_size: int) -> np.ndarray:
        counts = np.zeros(self.num_classes, dtype=int)
        with torch.no_grad():
            for _ in range(math.ceil(num / batch_size)):
                this_batch_size = min(batch_size, num)
                num -= this_batch_size
                batch = x.repeat((this_batch_size, 1, 1, 1))
                noise = torch.randn_like(batch) * self.sigma
                predictions = self.base(batch + noise).argmax(1)
                counts += np.bincount(predictions.numpy(), minlength=self.num_classes)
        return counts

    def certify(
        self, x: Tensor, n0: int, n: int, alpha: float, batch_size: int
    ) -> tuple[int, float, np.ndarray]:
        self.base.eval()
        c_a = int(self._sample_noise(x, n0, batch_size).argmax())
        counts = self._sample_noise(x, n, batch_size)
        n_a = int(counts[c_a])
        p_a = beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
        if p_a < 0.5:
            return ABSTAIN, 0.0, counts
        return c_a, self.sigma * norm.ppf(p_a), counts


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    train_x, train_y = images[200:], labels[200:]
    for _ in range(150):  # Gaussian augmentation, full batch
        loss = F.cross_entropy(model(train_x + SIGMA * torch.randn_like(train_x)), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), images[:100], labels[:100]


def test_certificates_agree_with_an_independent_core_py(digits) -> None:
    model, x, y = digits
    mine = Smooth(model, SIGMA, num_classes=10).certify(
        x, N0, N, ALPHA, batch_size=4000, generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(2)  # the reference draws from the global RNG, as core.py does
    reference = CohenSmooth(model, 10, SIGMA)
    ref = [reference.certify(x[i], N0, N, ALPHA, batch_size=N) for i in range(x.shape[0])]

    for i, (_, _, counts) in enumerate(ref):
        top = int(counts.argmax())
        p = counts[top] / N
        spread = 5 * math.sqrt(2 * max(p * (1 - p), 1 / N) / N) + 2 / N
        assert abs(int(mine.counts[i, top]) / N - p) <= spread, i

    ref_prediction = torch.tensor([c for c, _, _ in ref])
    ref_radius = torch.tensor([r for _, r, _ in ref], dtype=torch.float64)
    agree = (mine.prediction == ref_prediction).float().mean()
    assert agree >= 0.95
    for r in RADII:
        ours = int(((mine.prediction == y) & (mine.radius >= r)).sum())
        theirs = int(((ref_prediction == y) & (ref_radius >= r)).sum())
        assert abs(ours - theirs) <= 5, (r, ours, theirs)
    assert int(((ref_prediction == y) & (ref_radius >= 0.25)).sum()) > 30  # a non-trivial curve

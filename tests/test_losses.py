import math

import pytest
import torch

from brushwork.core import losses as L


def test_tv_of_constant_is_zero():
    assert L.tv_loss(torch.full((1, 3, 9, 7), 0.3)).item() == 0.0


def test_tv_known_value():
    # horizontal ramp with step 1: every horizontal difference is 1, vertical 0
    x = torch.arange(5.0).repeat(1, 1, 4, 1)
    assert L.tv_loss(x).item() == pytest.approx(1.0)


def test_gram_of_known_features():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2, HW=2
    g = L.gram(f)[0]
    # F F^T / (C * HW): [[1+4, 3+8], [3+8, 9+16]] / 4
    assert torch.allclose(g, torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4)


def test_masked_gram_equals_gram_of_region():
    f = torch.randn(1, 4, 6, 6)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :, :3] = 1
    assert torch.allclose(L.gram(f, mask), L.gram(f[..., :, :3].contiguous()), atol=1e-6)


def test_gram_loss_zero_at_target_and_positive_elsewhere():
    f = torch.randn(1, 8, 5, 5)
    m = L.GramLoss(f)
    assert m(f).item() == pytest.approx(0.0, abs=1e-12)
    assert m(f * 2).item() > 0


def test_histogram_loss_zero_for_identical_inputs():
    f = torch.randn(1, 6, 7, 7)
    assert L.HistogramLoss(f)(f).item() == pytest.approx(0.0, abs=1e-10)


def test_histogram_matching_gives_target_distribution():
    torch.manual_seed(0)
    src = torch.randn(1, 3, 16, 16)
    tgt = torch.rand(1, 3, 16, 16) * 5 + 2
    matched = L.match_histograms(src, tgt.reshape(3, -1).sort(-1).values)
    assert torch.allclose(matched.reshape(3, -1).sort(-1).values, tgt.reshape(3, -1).sort(-1).values)
    # ranks are kept: matching is monotone per channel
    assert torch.equal(matched.reshape(3, -1).argsort(-1), src.reshape(3, -1).argsort(-1))


def test_mean_std_and_loss():
    f = torch.randn(2, 5, 8, 8) * 3 + 1
    m, s = L.mean_std(f)
    assert torch.allclose(m, f.mean((2, 3)), atol=1e-5)
    assert torch.allclose(s, f.var((2, 3), unbiased=False).add(1e-5).sqrt(), atol=1e-5)
    mod = L.MeanStdLoss(f[:1])
    assert mod(f[:1]).item() == pytest.approx(0.0, abs=1e-10)


def test_gaussian_w2_known_value_for_a_shift():
    f = torch.randn(1, 4, 10, 10)
    mod = L.GaussianW2Loss(f)
    assert mod(f).item() == pytest.approx(0.0, abs=1e-4)
    # shifting every channel by 1 moves the mean by 1 per channel: W2^2 = C, divided by C = 1
    assert mod(f + 1).item() == pytest.approx(1.0, rel=1e-3)


def test_mrf_zero_for_identical_and_decreases_toward_style():
    torch.manual_seed(0)
    s = torch.randn(1, 4, 8, 8)
    mod = L.MRFLoss(s)
    assert mod(s).item() == pytest.approx(0.0, abs=1e-10)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    before = mod(x)
    before.backward()
    with torch.no_grad():
        x2 = x - 0.5 * x.grad / x.grad.abs().max()
    assert mod(x2).item() < before.item()


def test_content_loss_with_mask_ignores_outside():
    a, b = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    b[..., :, 2:] = 5.0
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :, :2] = 1
    assert L.content_loss(a, b, mask).item() == 0.0
    assert L.content_loss(a, b).item() == pytest.approx(12.5)


def test_weighted_sum_returns_total_and_terms():
    total, log = L.weighted_sum({"a": (2.0, torch.tensor(3.0)), "b": (0.5, torch.tensor(4.0)),
                                 "off": (0.0, torch.tensor(math.nan))})
    assert total.item() == pytest.approx(8.0)
    assert log == {"a": 6.0, "b": 2.0, "total": 8.0}

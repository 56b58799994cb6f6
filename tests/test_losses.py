import math

import pytest
import torch

from brushwork.core import losses as L, stats as S


def test_tv_of_constant_is_zero():
    assert L.tv_loss(torch.full((1, 3, 9, 7), 0.3)).item() == 0.0


def test_tv_known_value():
    # horizontal ramp with step 1: every horizontal difference is 1, vertical 0
    x = torch.arange(5.0).repeat(1, 1, 4, 1)
    assert L.tv_loss(x).item() == pytest.approx(1.0)


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
    assert all(torch.equal(a, b) for a, b in zip((m, s), S.mean_std(f, weighted=True)))
    mod = L.MeanStdLoss(f[:1])
    assert mod(f[:1]).item() == pytest.approx(0.0, abs=1e-10)


def _feats(seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 4, 6, 5, generator=g) * 3 + 1,
            "b": torch.randn(n, 6, 3, 4, generator=g) - 2}


def test_mean_std_distance_is_the_summed_mse_of_means_and_stds():
    x, t = _feats(0), _feats(1)
    want = 0.0
    for k in ("a", "b"):
        (m, s), (tm, ts) = S.mean_std(x[k]), S.mean_std(t[k])
        want += float(((m - tm) ** 2).mean() + ((s - ts) ** 2).mean())
    got = L.mean_std_distance(x, t, ["a", "b"])
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(L.mean_std_distance(x, x, ["a", "b"])) == 0.0
    assert float(L.mean_std_distance(x, t, ["a"])) < float(got)  # only the layers named
    # (mean, std) pairs on either side are used as they are
    pairs = {k: S.mean_std(v) for k, v in t.items()}
    assert torch.equal(L.mean_std_distance(x, pairs, ["a", "b"]), got)
    # relative: each layer's term divided by the target map's mean square
    rel = L.mean_std_distance(x, t, ["a", "b"], relative=True)
    parts = [float(L.mean_std_distance(x, t, [k])) / float(t[k].pow(2).mean()) for k in "ab"]
    assert float(rel) == pytest.approx(sum(parts), rel=1e-6)
    # differentiable in the features
    y = {k: v.clone().requires_grad_() for k, v in x.items()}
    L.mean_std_distance(y, t, ["a", "b"]).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in y.values())


def test_relative_mse():
    t = torch.full((1, 2, 3, 3), 2.0)
    assert L.relative_mse(t + 1, t).item() == pytest.approx(1 / 4)
    assert L.relative_mse(torch.ones(2), torch.zeros(2)).item() == pytest.approx(1e8)


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


def test_mean_cov_distance_known_values():
    # two positions per channel: means and biased covariances by hand
    a = torch.tensor([[1.0, 3.0], [0.0, 2.0]]).view(1, 2, 1, 2)   # mean (2, 1), cov [[1,1],[1,1]]
    b = torch.tensor([[2.0, 2.0], [1.0, 1.0]]).view(1, 2, 1, 2)   # mean (2, 1), cov 0
    assert L.mean_cov_distance({"x": a}, {"x": a}, ["x"]).item() == 0.0
    # means equal; covariance entries all differ by 1 -> MSE 1
    assert L.mean_cov_distance({"x": a}, {"x": b}, ["x"]).item() == pytest.approx(1.0)
    shifted = a + torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)  # mean difference (1, 3): MSE 5
    got = L.mean_cov_distance({"x": shifted, "y": a}, {"x": b, "y": (S.mean_cov(b))}, ["x", "y"])
    assert got.item() == pytest.approx(5.0 + 1.0 + 1.0)
    # a batch-1 target against every sample; differentiable
    x = torch.cat([a, b]).requires_grad_()
    d = L.mean_cov_distance({"x": x}, {"x": b}, ["x"])
    assert d.item() == pytest.approx(0.5)
    d.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_mean_cov_distance_relative_is_scale_free():
    a = torch.tensor([[1.0, 3.0], [0.0, 2.0]]).view(1, 2, 1, 2)  # mean (2, 1), cov all 1
    b = torch.tensor([[2.0, 4.0], [1.0, 1.0]]).view(1, 2, 1, 2)  # mean (3, 1), cov [[1,0],[0,0]]
    # means: MSE 0.5 / target mean square 5 = 0.1; covs: MSE 3/4 / target mean square 1/4 = 3
    got = L.mean_cov_distance({"x": a}, {"x": b}, ["x"], relative=True)
    assert got.item() == pytest.approx(0.1 + 3.0)
    scaled = L.mean_cov_distance({"x": 10 * a}, {"x": 10 * b}, ["x"], relative=True)
    assert scaled.item() == pytest.approx(got.item(), rel=1e-6)

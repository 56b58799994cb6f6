"""brushwork.core.stats: known values, relations between the variants, gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brushwork.core import stats as S
from brushwork.errors import BrushworkError


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


def _correlated(c, n, seed, scale=1.0, shift=0.0):
    """(c, n) float64 features with a random full-rank covariance."""
    g = _rng(seed)
    mix = torch.randn(c, c, generator=g, dtype=torch.float64)
    return (mix @ torch.randn(c, n, generator=g, dtype=torch.float64)) * scale + shift


def _np_cov(x, bias):
    return torch.from_numpy(np.cov(x.numpy(), bias=bias))


# ------------------------------------------------------------------------------- mean / std
def test_mean_std_of_a_constant_map():
    f = torch.full((2, 3, 5, 4), 2.5)
    m, s = S.mean_std(f)
    assert m.shape == s.shape == (2, 3)
    assert torch.equal(m, torch.full((2, 3), 2.5))
    assert torch.allclose(s, torch.full((2, 3), math.sqrt(1e-5)))
    m4, s4 = S.mean_std(f, keepdim=True, eps=1e-3)
    assert m4.shape == (2, 3, 1, 1) and torch.allclose(s4, torch.full_like(s4, math.sqrt(1e-3)))
    assert torch.equal(S.mean_std(f, eps=0)[1], torch.zeros(2, 3))


def test_mean_std_of_a_two_value_map():
    f = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    f[..., :2, :], f[..., 2:, :] = 1.0, 5.0  # 8 positions of 1, 8 of 5
    for weighted in (False, True):
        m, s = S.mean_std(f, eps=0, weighted=weighted)
        assert m.item() == pytest.approx(3.0) and s.item() == pytest.approx(2.0)
    _, su = S.mean_std(f, eps=0, unbiased=True)
    assert su.item() == pytest.approx(2.0 * math.sqrt(16 / 15))
    _, se = S.mean_std(f, eps=0.25)
    assert se.item() == pytest.approx(math.sqrt(4.25))


def test_unbiased_and_biased_relation_and_torch_std():
    f = torch.randn(2, 3, 6, 7, generator=_rng(1), dtype=torch.float64) * 3 + 1
    n = 42
    _, sb = S.mean_std(f, eps=0)
    _, su = S.mean_std(f, eps=0, unbiased=True)
    assert torch.allclose(su ** 2, sb ** 2 * n / (n - 1))
    assert torch.allclose(su, f.flatten(2).std(2), rtol=1e-12)  # classifier.statistics_of
    ones = torch.ones(1, 1, 6, 7, dtype=torch.float64)
    assert torch.allclose(S.mean_std(f, ones, eps=0)[1], sb)


@pytest.mark.parametrize("normalise", ["weights", "sums"])
def test_masked_mean_std_is_the_plain_statistics_of_the_half(normalise):
    f = torch.randn(2, 4, 6, 8, generator=_rng(2)) * 2 + 3
    mask = torch.zeros(1, 1, 6, 8)
    mask[..., :, :4] = 1
    m, s = S.mean_std(f, mask, normalise=normalise, keepdim=True)
    pm, ps = S.mean_std(f[..., :, :4].contiguous(), keepdim=True)
    assert m.shape == (2, 4, 1, 1)
    assert torch.allclose(m, pm, atol=1e-6) and torch.allclose(s, ps, atol=1e-5)


def test_mask_arithmetic_options():
    f = torch.randn(1, 3, 5, 5, generator=_rng(3), dtype=torch.float64)
    mask = torch.rand(1, 1, 5, 5, generator=_rng(4), dtype=torch.float64)
    a = S.mean_std(f, mask, normalise="weights")
    b = S.mean_std(f, mask, normalise="sums", floor=1e-6)
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(a, b))  # rounding only
    empty = torch.zeros_like(mask)
    m, s = S.mean_std(f, empty)
    assert torch.equal(m, torch.zeros(1, 3, dtype=torch.float64))
    assert torch.allclose(s, torch.full((1, 3), 1e-5 ** .5, dtype=torch.float64))
    with pytest.raises(BrushworkError):
        S.mean_std(f, mask, normalise="sums", unbiased=True)
    with pytest.raises(BrushworkError):
        S.mean_std(f, weighted=True, unbiased=True)
    with pytest.raises(BrushworkError):
        S.mean_std(f, weighted=True, normalise="sums")  # sums need a mask
    with pytest.raises(BrushworkError):
        S.mean_std(f, normalise="nope")
    with pytest.raises(BrushworkError):
        S.mean_std(f[0])


def test_channel_mean_and_flat_weights():
    f = torch.randn(2, 3, 4, 5, generator=_rng(5))
    assert torch.equal(S.channel_mean(f, keepdim=True), f.flatten(2).mean(-1)[..., None, None])
    assert torch.allclose(S.channel_mean(f), f.mean((2, 3)), atol=1e-6)
    flat, w = S.flat_weights(f, torch.rand(1, 1, 8, 10, generator=_rng(6)))
    assert flat.shape == (2, 3, 20) and w.shape == (2, 1, 20)
    assert torch.allclose(w.sum(-1), torch.ones(2, 1))


def test_resize_mask_rule():
    mask = torch.arange(16.0).reshape(1, 1, 4, 4)
    feat = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    shrunk = S.resize_mask(mask, feat)  # area average of 2x2 blocks, in the feature's dtype
    assert shrunk.dtype == torch.float64
    assert torch.equal(shrunk[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]], dtype=torch.float64))
    grown = S.resize_mask(mask[..., :2, :2], torch.zeros(1, 1, 5, 3))
    assert torch.equal(grown, F.interpolate(mask[..., :2, :2], size=(5, 3), mode="bilinear",
                                            align_corners=False))
    assert S.resize_mask(None, feat) is None


def test_normalize_and_adain():
    c = torch.randn(2, 3, 8, 8, generator=_rng(7), dtype=torch.float64) * 4 + 2
    s = torch.randn(1, 3, 6, 6, generator=_rng(8), dtype=torch.float64) * 0.5 - 1
    m, sd = S.mean_std(S.normalize(c), eps=0)
    zeros, ones = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    assert torch.allclose(m, zeros, atol=1e-12) and torch.allclose(sd, ones, atol=1e-5)
    out = S.adain(c, s)  # sqrt(var + 1e-5) on both sides: the style's std up to ~1e-7
    assert torch.allclose(S.mean_std(out, eps=0)[0], S.mean_std(s, eps=0)[0].expand(2, 3))
    assert torch.allclose(S.mean_std(out, eps=0)[1], S.mean_std(s)[1].expand(2, 3), atol=1e-6)
    half = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    half[..., :4] = 1
    region = S.adain(c, s, content_mask=half)[..., :4].contiguous()
    assert torch.allclose(S.mean_std(region, eps=0)[1], S.mean_std(s)[1].expand(2, 3), atol=1e-6)


# ------------------------------------------------------------------------- gram / covariance
def test_gram_of_a_known_tensor():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C = 2, HW = 2
    # F F^T / (C HW): [[1 + 4, 3 + 8], [3 + 8, 9 + 16]] / 4
    assert torch.allclose(S.gram(f)[0], torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4)
    assert torch.allclose(S.second_moment(f.flatten(2))[0], torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 2)


def test_self_gram_gradcheck_in_both_memory_formats():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    nhwc = feat.contiguous(memory_format=torch.channels_last)
    for x in (feat, nhwc):
        assert torch.autograd.gradcheck(S.SelfGram.apply, (x.clone().requires_grad_(True),))
    # the gradient comes back in the features' layout (no conversion for the next backward)
    x = nhwc.clone().requires_grad_(True)
    S.SelfGram.apply(x).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    # bf16 features (autocast) with a float32 upstream gradient
    b = feat.float().to(torch.bfloat16).requires_grad_(True)
    S.SelfGram.apply(b).float().backward(torch.ones(2, 3, 3))
    ref = feat.float().requires_grad_(True)
    S.SelfGram.apply(ref).backward(torch.ones(2, 3, 3))
    assert b.grad.dtype == torch.bfloat16
    assert torch.allclose(b.grad.float(), ref.grad, rtol=0.05, atol=0.05)


def test_gram_is_the_same_in_both_memory_formats_and_as_the_weighted_product():
    g = torch.Generator().manual_seed(1)
    feat = torch.rand(1, 6, 5, 7, generator=g)
    f = feat.reshape(1, 6, 35)
    weighted = torch.bmm(f / 35, f.transpose(1, 2)) / 6  # F W F^T / C with W = 1/HW
    assert torch.allclose(S.gram(feat), weighted, rtol=1e-5)
    assert torch.allclose(S.gram(feat.contiguous(memory_format=torch.channels_last)),
                          S.gram(feat), rtol=1e-6)
    full = torch.ones(1, 1, 5, 7)
    assert torch.allclose(S.gram(feat, full), S.gram(feat), rtol=1e-5)


def test_whiten_then_colour_round_trip_with_one_eigendecomposition():
    f = torch.rand(6, 81, generator=torch.Generator().manual_seed(1))
    white, mean, colouring = S.whiten(f, colouring=True)
    wm, wc = S.feature_stats(white)
    assert torch.allclose(wm, torch.zeros_like(wm), atol=1e-6)
    assert torch.allclose(wc, torch.eye(6, dtype=wc.dtype), atol=1e-5)
    assert torch.allclose(S.colour(white, mean, colouring), f, atol=1e-5)
    assert S.whiten(f)[2] is None
    cov = S.feature_stats(f)[1]
    a, b = S.sym_power(cov, (-0.5, 0.5), S.WCT_EPS)
    assert torch.equal(a, S.sym_power(cov, -0.5, S.WCT_EPS))
    assert torch.allclose(a @ b, torch.eye(6, dtype=a.dtype), atol=1e-6)


def test_sqrt_gram_of_a_known_tensor():
    f = torch.tensor([[1.0, 2.0], [-3.0, 4.0]]).reshape(1, 2, 1, 2)  # C = 2, HW = 2
    # F F^T / HW = [[1 + 4, -3 + 8], [-3 + 8, 9 + 16]] / 2 = [[2.5, 2.5], [2.5, 12.5]]
    expected = torch.tensor([[2.5, 2.5], [2.5, 12.5]]).sqrt()
    assert torch.allclose(S.sqrt_gram(f)[0], expected)
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).reshape(1, 2, 1, 2)  # F F^T / HW = [[.5, -.5], [-.5, .5]]
    assert torch.allclose(S.sqrt_gram(g)[0], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) * 0.5 ** 0.5)


def test_gram_with_a_full_mask_and_a_half_mask():
    f = torch.randn(2, 4, 6, 6, generator=_rng(9))
    assert torch.allclose(S.gram(f, torch.ones(1, 1, 6, 6)), S.gram(f), atol=1e-6)
    half = torch.zeros(1, 1, 6, 6)
    half[..., :, :3] = 1
    assert torch.allclose(S.gram(f, half), S.gram(f[..., :, :3].contiguous()), atol=1e-6)


def test_rms_known_value():
    x = torch.full((2, 3, 4, 4), -3.0)
    x[1] = 4.0
    assert torch.equal(S.rms(x), torch.tensor([3.0, 4.0]).reshape(2, 1, 1, 1))


def test_mean_cov_is_numpy_cov():
    f = torch.randn(2, 5, 6, 7, generator=_rng(10), dtype=torch.float64)
    m, cov = S.mean_cov(f)
    for i in range(2):
        x = f[i].reshape(5, -1)
        assert torch.allclose(m[i], x.mean(1))
        assert torch.allclose(cov[i], _np_cov(x, bias=True))
    half = torch.zeros(1, 1, 6, 7, dtype=torch.float64)
    half[..., :3, :] = 1
    _, cov_h = S.mean_cov(f, half)
    assert torch.allclose(cov_h[0], _np_cov(f[0, :, :3].reshape(5, -1), bias=True))


def test_feature_stats_is_numpy_cov_and_chunking_changes_nothing(monkeypatch):
    x = _correlated(4, 500, 11, scale=3.0, shift=2.0).float()
    m, cov = S.feature_stats(x)
    assert m.shape == (4, 1) and m.dtype == cov.dtype == torch.float64
    assert torch.allclose(m[:, 0], x.double().mean(1))
    assert torch.allclose(cov, _np_cov(x.double(), bias=False), atol=1e-9)
    monkeypatch.setattr(S, "CHUNK", 7)
    m7, cov7 = S.feature_stats(x)
    assert torch.allclose(m7, m, atol=1e-12) and torch.allclose(cov7, cov, atol=1e-9)


# ---------------------------------------------------------------------------- matrix powers
def _spd(c=5, seed=12):
    a = torch.randn(c, c, generator=_rng(seed), dtype=torch.float64)
    return a @ a.T + c * torch.eye(c, dtype=torch.float64)


def test_sqrtm_and_inverse_sqrt_of_an_spd_matrix():
    a = _spd()
    r = S.sqrtm_psd(a)
    assert torch.allclose(r @ r, a, atol=1e-10) and torch.allclose(r, r.T)
    w = S.sym_power(a, -0.5)
    assert torch.allclose(w @ a @ w, torch.eye(5, dtype=torch.float64), atol=1e-10)
    assert S.sqrtm_psd(a.float()).dtype == torch.float32
    batch = torch.stack([a, 2 * a])
    assert torch.allclose(S.sqrtm_psd(batch)[1], S.sqrtm_psd(2 * a), atol=1e-12)


def test_eps_drops_the_null_space_of_a_rank_deficient_matrix():
    b = torch.randn(6, 3, generator=_rng(13), dtype=torch.float64)
    a = b @ b.T  # rank 3: three eigenvalues ~ 0
    w = S.sym_power(a, -0.5, eps=1e-5)
    assert torch.isfinite(w).all() and torch.linalg.matrix_rank(w) == 3
    q = torch.linalg.qr(b).Q
    assert torch.allclose(w @ a @ w, q @ q.T, atol=1e-8)  # the projector onto a's range
    r = S.sym_power(a, 0.5, eps=1e-5)
    assert torch.allclose(r @ r, a, atol=1e-10)
    with pytest.raises(BrushworkError):
        S.sym_power(torch.stack([a, _spd(6)]), -0.5, eps=1e-5)  # one matrix only


def test_trace_sqrtm():
    a = _spd()
    assert torch.allclose(S.trace_sqrtm(a), S.sqrtm_psd(a).trace(), atol=1e-10)
    d = torch.diag(torch.tensor([4.0, 9.0, 0.0, -1e-9]))
    assert S.trace_sqrtm(d).dtype == torch.float64 and S.trace_sqrtm(d).item() == pytest.approx(5.0)
    assert S.trace_sqrtm(d, ridge=1.0).item() == pytest.approx(5 ** .5 + 10 ** .5 + 1 + 1)
    assert S.trace_sqrtm(d, floor=0.01).item() == pytest.approx(5.2)
    batch = torch.stack([d, 4 * d])
    assert torch.allclose(S.trace_sqrtm(batch), torch.tensor([5.0, 10.0], dtype=torch.float64))


# ------------------------------------------------------------------ whitening and colouring
def _maps(c=4, n_side=(20, 25), seed=20):
    h, w = n_side
    content = _correlated(c, h * w, seed, 2.0, 1.0).reshape(1, c, h, w)
    style = _correlated(c, 18 * 22, seed + 1, 0.7, -3.0).reshape(1, c, 18, 22)
    return content, style


def _assert_stats_equal(x, style_flat):
    m, cov = S.feature_stats(x)
    sm, scov = S.feature_stats(style_flat)
    assert torch.allclose(m, sm, atol=1e-5) and torch.allclose(cov, scov, atol=1e-5)


def test_whiten_colour_gives_the_style_mean_and_covariance(monkeypatch):
    content, style = _maps()
    sm, scov = S.feature_stats(style[0].flatten(1))
    whole = S.whiten_colour(content[0].flatten(1), sm, scov)
    monkeypatch.setattr(S, "CHUNK", 64)
    out = S.whiten_colour(content[0].flatten(1), sm, scov)
    assert out.dtype == content.dtype and out.shape == (4, 500)
    _assert_stats_equal(out, style[0].flatten(1))
    assert torch.allclose(out, whole, atol=1e-10)


def test_wct_unmasked_and_errors():
    content, style = _maps()
    out = S.wct(content, style)
    assert out.shape == content.shape
    _assert_stats_equal(out[0].flatten(1), style[0].flatten(1))
    with pytest.raises(BrushworkError):
        S.wct(content.expand(2, -1, -1, -1), style)


def test_wct_masked_positions_get_the_style_statistics_the_rest_is_unchanged():
    content, style = _maps()
    mask = torch.zeros(1, 1, 10, 5)  # nearest-resized to 20 x 25: the top half
    mask[..., :5, :] = 1
    out = S.wct(content, style, mask)
    _assert_stats_equal(out[0, :, :10].flatten(1), style[0].flatten(1))
    assert torch.equal(out[..., 10:, :], content[..., 10:, :])
    one = torch.zeros(1, 1, 20, 25)
    one[..., 3, 4] = 1
    assert torch.equal(S.wct(content, style, one), content)
    assert torch.equal(S.wct(content, style, torch.zeros(1, 1, 20, 25)), content)


def test_match_color_gives_the_reference_colour_statistics(monkeypatch):
    g = _rng(30)
    src = (torch.rand(1, 3, 24, 20, generator=g, dtype=torch.float64) * 0.5 + 0.25)
    ref = torch.rand(1, 3, 22, 26, generator=g, dtype=torch.float64) * 0.2 + 0.4
    ref[:, 2] = 0.6 * ref[:, 0] + 0.4 * ref[:, 2]  # correlated channels
    for reg, tol in ((0.0, 1e-10), (1e-5, 2e-5)):
        monkeypatch.setattr(S, "COLOR_REG", reg)
        out = S.match_color(src, ref)
        assert 0 < out.min() and out.max() < 1  # in range: the clamp did nothing
        m, rm = out[0].reshape(3, -1).mean(1), ref[0].reshape(3, -1).mean(1)
        cov, rcov = _np_cov(out[0].reshape(3, -1), True), _np_cov(ref[0].reshape(3, -1), True)
        assert torch.allclose(m, rm, atol=1e-10) and torch.allclose(cov, rcov, atol=tol)
    assert S.match_color(src.float(), ref.float()).dtype == torch.float32


def test_log_standardize():
    x = torch.tensor([[math.e - 1, -5.0, 1e6]])
    z = S.log_standardize(x, torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.5, 1.0, 1.0]))
    assert torch.allclose(z[0, :2], torch.tensor([2.0, 0.0]))
    assert z[0, 2] > 6 and S.log_standardize(x, 0.0, 1.0, clip=6.0)[0, 2] == 6.0


# ---------------------------------------------------------------------------------- gradients
def test_gradcheck_masked_statistics():
    g = _rng(40)
    f = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 1, 6, 8, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: S.mean_std(x, mask), (f,))
    assert torch.autograd.gradcheck(lambda x: S.mean_std(x, mask, normalise="sums"), (f,))
    assert torch.autograd.gradcheck(lambda x: S.gram(x, mask), (f,))
    assert torch.autograd.gradcheck(lambda x: S.mean_cov(x, mask), (f,))


def test_gradcheck_sqrtm_psd():
    x = torch.randn(4, 4, generator=_rng(41), dtype=torch.float64, requires_grad=True)
    base = torch.diag(torch.tensor([1.0, 2.0, 3.5, 5.0], dtype=torch.float64))
    # symmetric, well-conditioned, distinct eigenvalues
    assert torch.autograd.gradcheck(lambda y: S.sqrtm_psd(base + 0.1 * (y @ y.T)), (x,))


def test_sort_rows_and_argsort_rows_match_torch_on_relu_maps():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2, 5, 300, generator=g))          # ~half exact zeros
    assert torch.equal(S.sort_rows(x), x.sort(-1).values)
    order = S.argsort_rows(x)
    # the zeros (the rows' minimum) in position order, as a stable sort puts them; no other
    # ties in a continuous draw, so the whole order is the stable sort's
    assert torch.equal(order, torch.sort(x, stable=True, dim=-1).indices)
    assert torch.equal(x.gather(-1, order), x.sort(-1).values)
    shifted = x - 3.0                                              # a negative minimum
    assert torch.equal(S.argsort_rows(shifted), order)
    assert torch.equal(S.argsort_rows(x.double()), order)

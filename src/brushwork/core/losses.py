"""Loss library: pure functions on feature maps, plus tiny modules holding their targets.

Features are (N, C, H, W) tensors. Every statistic that can take a spatial mask does: a mask is
(N or 1, 1, H', W') in [0, 1] and is resized to the feature's resolution; masked statistics are
weighted means over the mask. The statistics themselves (Gram, mean/std, mean/covariance,
matrix square roots, mask resizing) come from :mod:`brushwork.core.stats`. Combine terms
explicitly with :func:`weighted_sum`.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from . import stats as S
from .stats import gram, mean_cov, resize_mask, sqrtm_psd

_EPS = 1e-8


# --------------------------------------------------------------------------- statistics
def mean_std(feat: torch.Tensor, mask: torch.Tensor | None = None):
    """The loss library's channel mean and std, each (N, C): :func:`stats.mean_std` with the
    (mask or uniform) weights' arithmetic (``weighted=True``)."""
    return S.mean_std(feat, mask, weighted=True)


def _energy(target: torch.Tensor) -> torch.Tensor:
    """Mean square of a whole target tensor, clamped at 1e-8: the scale of a relative loss."""
    return target.pow(2).mean().clamp_min(_EPS)


# --------------------------------------------------------------------------- pure losses
def content_loss(feat, target, mask=None):
    """Mean squared feature difference (optionally mask-weighted)."""
    if mask is None:
        return F.mse_loss(feat, target)
    m = resize_mask(mask, feat)
    return ((feat - target) ** 2 * m).sum() / (m.sum() * feat.shape[1]).clamp_min(_EPS)


def gram_loss(feat, target_gram, mask=None):
    """Mean squared difference of Gram matrices (Gatys et al. 2016)."""
    return F.mse_loss(gram(feat, mask), target_gram.expand(feat.shape[0], -1, -1))


def mean_std_loss(feat, target_mean, target_std, mask=None):
    """Squared difference of channel means and stds (AdaIN statistics, Huang & Belongie 2017)."""
    m, s = mean_std(feat, mask)
    return F.mse_loss(m, target_mean.expand_as(m)) + F.mse_loss(s, target_std.expand_as(s))


def _moments(v):
    return v if isinstance(v, tuple) else S.mean_std(v)


def mean_std_distance(feats, targets, layers, *, relative: bool = False):
    """The mean/std style loss of the feed-forward trainers (Huang & Belongie 2017): the sum
    over ``layers`` of MSE(mean) + MSE(std) between the channel statistics of ``feats[l]`` and
    ``targets[l]``. Each value is a feature map (its :func:`stats.mean_std`, plain arithmetic)
    or a ``(mean, std)`` pair already taken (precomputed or transformed statistics).
    ``relative``: each layer's term divided by the target map's mean square (maps only)."""
    total = 0.0
    for name in layers:
        (m, s), (tm, ts) = _moments(feats[name]), _moments(targets[name])
        term = F.mse_loss(m, tm) + F.mse_loss(s, ts)
        total = total + (term / _energy(targets[name]) if relative else term)
    return total


def _mean_cov(v):
    return v if isinstance(v, tuple) else mean_cov(v)


def mean_cov_distance(feats, targets, layers, *, relative: bool = False):
    """A mean/covariance style loss (Kim & Choi's): the sum over ``layers`` of MSE(mean) +
    MSE(covariance) between the channel statistics of ``feats[l]`` and ``targets[l]``. Each
    value is a feature map (its :func:`stats.mean_cov`: biased, batched, differentiable) or a
    ``(mean (N, C), covariance (N, C, C))`` pair already taken; a target of batch 1 is
    compared with every sample. ``relative``: the mean term divided by the target means' mean
    square and the covariance term by the target covariances' (each clamped at 1e-8), so
    layers of any scale weigh alike."""
    total = 0.0
    for name in layers:
        (m, c), (tm, tc) = _mean_cov(feats[name]), _mean_cov(targets[name])
        lm, lc = F.mse_loss(m, tm.expand_as(m)), F.mse_loss(c, tc.expand_as(c))
        if relative:
            lm, lc = lm / _energy(tm), lc / _energy(tc)
        total = total + lm + lc
    return total


def relative_mse(x, target):
    """MSE divided by the target's mean square (clamped at 1e-8): a scale-free feature loss."""
    return F.mse_loss(x, target) / _energy(target)


def gaussian_w2_loss(feat, target_mean, target_cov_sqrt, mask=None):
    """Squared 2-Wasserstein distance between Gaussian fits, divided by C.

    W2^2 = |mu - mu_t|^2 + tr(S + S_t - 2 (S_t^1/2 S S_t^1/2)^1/2); ``target_cov_sqrt`` = S_t^1/2.
    """
    mean, cov = mean_cov(feat, mask)
    c = feat.shape[1]
    root_t = target_cov_sqrt.expand(cov.shape[0], -1, -1)
    tr_cross = S.trace_sqrtm(root_t @ cov @ root_t, ridge=1e-8, floor=1e-12).to(feat.dtype)
    tr_t = (root_t ** 2).sum((-1, -2))
    w2 = ((mean - target_mean) ** 2).sum(-1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1) + tr_t \
        - 2 * tr_cross
    return w2.clamp_min(0).mean() / c


def match_histograms(feat, target_sorted, mask=None):
    """Remap each channel of ``feat`` onto the target's distribution (sorted values, (C, K)):
    exact histogram matching by ranks, :func:`stats.match_sorted` (masked pixels only, mask
    > 0.5, when a mask is given)."""
    return S.match_sorted(feat, target_sorted, mask)


def histogram_loss(feat, target_sorted, mask=None):
    """Risser et al. 2017: distance of the features to their histogram-matched version. This
    is also EFDM's style loss (Zhang et al. 2022: MSE to the detached exact-distribution match),
    gatys's ``style_loss="efdm"``."""
    return content_loss(feat, match_histograms(feat, target_sorted, mask), mask)


def extract_patches(feat, size=3, stride=1):
    """(N, C, H, W) -> (N, L, C*size*size) patches."""
    p = F.unfold(feat, size, stride=stride)
    return p.transpose(1, 2)


def mrf_loss(feat, style_patches, size=3, mask=None):
    """Li & Wand 2016: each output patch pulled toward its most similar style patch.

    ``style_patches`` is (P, C*size*size). Nearest neighbours use normalised cross-correlation
    (computed as a convolution with the normalised style patches); the loss is the mean squared
    distance to them.
    """
    c = feat.shape[1]
    kernels = style_patches / style_patches.norm(dim=1, keepdim=True).clamp_min(_EPS)
    kernels = kernels.reshape(-1, c, size, size).to(feat.dtype)
    with torch.no_grad():
        resp = F.conv2d(feat.detach(), kernels)  # (N, P, H', W'); norm of the output patch is
        nn_idx = resp.argmax(1).flatten(1)      # the same for every P, so argmax = best NCC
    out_p = extract_patches(feat, size)                         # (N, L, D)
    target = style_patches.to(feat.dtype)[nn_idx]               # (N, L, D)
    d = ((out_p - target) ** 2).mean(-1)                        # (N, L)
    if mask is not None:
        m = resize_mask(mask, feat)
        m = F.avg_pool2d(m, size, stride=1).flatten(1)          # patch coverage
        return (d * m).sum() / m.sum().clamp_min(_EPS)
    return d.mean()


def tv_loss(img):
    """Total variation: mean squared difference between neighbouring pixels (0 for constants)."""
    dh = img[..., 1:, :] - img[..., :-1, :]
    dw = img[..., :, 1:] - img[..., :, :-1]
    return (dh ** 2).mean() + (dw ** 2).mean()


_LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def laplacian(img, pool=1):
    """The 3x3 Laplacian (4-neighbour) of each channel of ``img`` (N, C, H, W), after ``pool`` x
    ``pool`` average pooling (the pool is capped at the image's shorter side); valid
    positions only, so a constant image gives 0."""
    p = max(1, min(int(pool), img.shape[-2], img.shape[-1]))
    x = F.avg_pool2d(img, p) if p > 1 else img
    if x.shape[-2] < 3 or x.shape[-1] < 3:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    c = x.shape[1]
    k = _LAPLACIAN.to(x.device, x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(x, k, groups=c)


def laplacian_loss(x, target_lap, pool):
    """Li et al. 2017: mean squared difference between the Laplacian of ``x`` after ``pool``
    average pooling (:func:`laplacian`) and ``target_lap``, the content's."""
    return F.mse_loss(laplacian(x, pool), target_lap)


# --------------------------------------------------------------------------- modules
class ContentLoss(nn.Module):
    def __init__(self, target, mask=None):
        super().__init__()
        self.register_buffer("target", target.detach())
        self.register_buffer("mask", None if mask is None else mask.detach())

    def forward(self, feat):
        return content_loss(feat, self.target, self.mask)


class GramLoss(nn.Module):
    """Holds a target Gram matrix; ``mask`` restricts the *output's* statistics to a region."""

    def __init__(self, target_feat=None, *, target_gram=None, mask=None):
        super().__init__()
        g = gram(target_feat) if target_gram is None else target_gram
        self.register_buffer("target", g.detach())
        self.register_buffer("mask", None if mask is None else mask.detach())

    def forward(self, feat):
        return gram_loss(feat, self.target, self.mask)


class MeanStdLoss(nn.Module):
    def __init__(self, target_feat, mask=None):
        super().__init__()
        m, s = mean_std(target_feat)
        self.register_buffer("mean", m.detach())
        self.register_buffer("std", s.detach())
        self.register_buffer("mask", None if mask is None else mask.detach())

    def forward(self, feat):
        return mean_std_loss(feat, self.mean, self.std, self.mask)


class GaussianW2Loss(nn.Module):
    def __init__(self, target_feat, mask=None):
        super().__init__()
        m, cov = mean_cov(target_feat)
        self.register_buffer("mean", m.detach())
        self.register_buffer("cov_sqrt", sqrtm_psd(cov).detach())
        self.register_buffer("mask", None if mask is None else mask.detach())

    def forward(self, feat):
        return gaussian_w2_loss(feat, self.mean, self.cov_sqrt, self.mask)


class HistogramLoss(nn.Module):
    def __init__(self, target_feat, mask=None):
        super().__init__()
        self.register_buffer("sorted", S.sorted_values(target_feat.detach()))
        self.register_buffer("mask", None if mask is None else mask.detach())

    def forward(self, feat):
        return histogram_loss(feat, self.sorted, self.mask)


class MRFLoss(nn.Module):
    """Style patches are subsampled to at most ``max_patches`` (seeded) to bound the cost."""

    def __init__(self, target_feat, *, size=3, stride=1, max_patches=4096, seed=0, mask=None):
        super().__init__()
        p = extract_patches(target_feat.detach(), size, stride)[0]
        if p.shape[0] > max_patches:
            g = torch.Generator().manual_seed(seed)
            p = p[torch.randperm(p.shape[0], generator=g)[:max_patches].to(p.device)]
        self.size = size
        self.register_buffer("patches", p.contiguous())
        self.register_buffer("mask", None if mask is None else mask.detach())

    def forward(self, feat):
        return mrf_loss(feat, self.patches, self.size, self.mask)


class LaplacianLoss(nn.Module):
    """Holds the content's Laplacians at each pool size; the loss is their sum of
    :func:`laplacian_loss` terms (the pools of Li et al. 2017: 4 and 16)."""

    def __init__(self, content, pools=(4,)):
        super().__init__()
        self.pools = [int(p) for p in pools]
        for i, p in enumerate(self.pools):
            self.register_buffer(f"target{i}", laplacian(content.detach(), p))

    def forward(self, img):
        return sum(laplacian_loss(img, getattr(self, f"target{i}"), p)
                   for i, p in enumerate(self.pools))


class TVLoss(nn.Module):
    def forward(self, img):
        return tv_loss(img)


def weighted_sum(terms: dict[str, tuple[float, torch.Tensor]]):
    """``{"name": (weight, value)}`` -> (total, {"name": weighted float, ..., "total": float}).

    Terms with weight 0 are skipped entirely.
    """
    total, log = None, {}
    for name, (weight, value) in terms.items():
        if weight == 0:
            continue
        v = weight * value
        total = v if total is None else total + v
        log[name] = float(v.detach())
    if total is None:
        raise ValueError("weighted_sum: every term has weight 0")
    log["total"] = float(total.detach())
    return total, log

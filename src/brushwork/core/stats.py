"""Feature statistics, written once: every method, loss and colour tool takes them from here.

Pure functions on torch tensors (no state, no other brushwork imports but the error type).
Features are (N, C, H, W) maps unless a function says (C, N) (one image's flattened features,
the whitening-colouring path). A *mask* is (N or 1, 1, H', W') in [0, 1]; it is resized to the
feature map by :func:`resize_mask` and masked statistics are mask-weighted.

Each statistic has one implementation; its arguments select the variants the methods use
(which differ in rounding, not in meaning):

* ``eps`` placement: standard deviations are ``sqrt(var + eps)`` (``eps=0``: plain ``std``);
* ``unbiased``: divide by n - 1 instead of n;
* ``weighted``: unmasked mean/std through uniform 1/HW weights (the loss library's arithmetic)
  instead of ``Tensor.mean`` / ``Tensor.var``; the two agree to rounding (~1e-7 relative);
* ``normalise``: masked moments as sums with weights normalised first (``"weights"``, the loss
  library) or weighted sums divided by the mask's total (``"sums"``, AdaIN's spatial control);
  ``floor`` is the clamp of that total;
* float64 and :data:`CHUNK`: (C, N) statistics and affine maps accumulate in float64, ``CHUNK``
  positions at a time (bounded temporaries for huge maps).

Contents: :func:`resize_mask`, :func:`flat_weights`, :func:`channel_mean`, :func:`mean_std`,
:func:`normalize`, :func:`adain`, :func:`gram`, :func:`sqrt_gram`, :func:`second_moment`, :func:`rms`,
:func:`mean_cov`, :func:`feature_stats`, :func:`sym_power`, :func:`sqrtm_psd`,
:func:`trace_sqrtm`, :func:`wct_matrix`, :func:`apply_affine`, :func:`whiten`, :func:`colour`,
:func:`whiten_colour`, :func:`wct`, :func:`match_color`, :func:`sort_rows`, :func:`argsort_rows`,
:func:`sorted_values`, :func:`match_sorted`, :func:`exact_histogram_match`,
:func:`log_standardize`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import BrushworkError

CHUNK = 1 << 18
"""Positions per float64 chunk in :func:`feature_stats` / :func:`apply_affine`."""

MASK_FLOOR = 1e-8
"""Default clamp of a mask's total weight (an empty mask gives weights 0, not a division by 0)."""

WCT_EPS = 1e-5
"""Eigenvalues at or below this are dropped from the whitening and colouring matrices."""

COLOR_REG = 1e-5
"""Ridge added to both colour covariances in :func:`match_color`."""


# ------------------------------------------------------------------------------------ masks
def resize_mask(mask: torch.Tensor | None, feat: torch.Tensor) -> torch.Tensor | None:
    """``mask`` at ``feat``'s spatial size and dtype: area average when it shrinks (in both
    dimensions), bilinear (no corner alignment) otherwise; unchanged in size when it matches.
    ``None`` stays ``None``."""
    if mask is None:
        return None
    if mask.shape[-2:] != feat.shape[-2:]:
        mask = F.adaptive_avg_pool2d(mask, feat.shape[-2:]) if (
            mask.shape[-2] >= feat.shape[-2] and mask.shape[-1] >= feat.shape[-1]) else \
            F.interpolate(mask, size=feat.shape[-2:], mode="bilinear", align_corners=False)
    return mask.to(feat.dtype)


def _check4(feat: torch.Tensor) -> None:
    if feat.dim() != 4:
        raise BrushworkError(f"expected (N, C, H, W) features, got {tuple(feat.shape)}")


def _flat_mask(feat: torch.Tensor, mask: torch.Tensor):
    """(N, C, HW) features and the resized, unnormalised (N, 1, HW) mask."""
    n, c, h, w = feat.shape
    m = resize_mask(mask, feat).reshape(mask.shape[0], 1, h * w).expand(n, 1, h * w)
    return feat.reshape(n, c, h * w), m


def flat_weights(feat: torch.Tensor,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, HW) features and (N, 1, HW) weights summing to 1 over HW: uniform 1/HW without a
    mask, else the resized mask divided by its total (clamped to at least :data:`MASK_FLOOR`)."""
    _check4(feat)
    n, c, h, w = feat.shape
    if mask is None:
        return feat.reshape(n, c, h * w), feat.new_full((n, 1, h * w), 1.0 / (h * w))
    f, m = _flat_mask(feat, mask)
    return f, m / m.sum(-1, keepdim=True).clamp_min(MASK_FLOOR)


def _shape(t: torch.Tensor, keepdim: bool) -> torch.Tensor:
    return t[..., None, None] if keepdim else t


# ---------------------------------------------------------------------- first and second moments
def channel_mean(feat: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Per-sample, per-channel mean over space (``Tensor.mean``): (N, C), or (N, C, 1, 1) with
    ``keepdim``."""
    _check4(feat)
    return feat.mean((2, 3), keepdim=keepdim)


def mean_std(feat: torch.Tensor, mask: torch.Tensor | None = None, *, eps: float = 1e-5,
             unbiased: bool = False, keepdim: bool = False, weighted: bool = False,
             normalise: str = "weights", floor: float = MASK_FLOOR):
    """Per-sample, per-channel mean and standard deviation ``sqrt(var + eps)`` over space.

    Returns two (N, C) tensors, or (N, C, 1, 1) with ``keepdim``.

    * no mask, ``weighted=False``: the mean, then the mean squared deviation from it (divided
      by HW - 1 with ``unbiased``: ``eps=0, unbiased=True`` is ``x.flatten(2).std(2)`` to
      rounding); the only path that takes ``unbiased``;
    * a mask, or ``weighted=True``: mask-weighted (biased) moments. ``normalise="weights"``:
      the weights of :func:`flat_weights`, mean = sum(w f), var = sum(w (f - mean)^2).
      ``normalise="sums"`` (needs a mask): sum(m f) / total and sum(m (f - mean)^2) / total
      with the mask's total clamped at ``floor``. The two differ only by rounding.
    """
    _check4(feat)
    if normalise not in ("weights", "sums"):
        raise BrushworkError(f"normalise must be 'weights' or 'sums', got {normalise!r}")
    if mask is None and not weighted:
        # two passes (the mean, then the squared deviations): stable, and in either memory
        # format without a copy (several times faster than Tensor.var's one-pass kernel)
        mean = feat.mean((2, 3), keepdim=True)
        n = feat.shape[2] * feat.shape[3]
        var = (feat - mean).square().sum((2, 3), keepdim=True) / (n - 1 if unbiased else n)
        std = (var + eps).sqrt() if eps else var.sqrt()
        return (mean, std) if keepdim else (mean[..., 0, 0], std[..., 0, 0])
    if unbiased:
        raise BrushworkError("masked or weighted statistics are biased only")
    if normalise == "sums":
        if mask is None:
            raise BrushworkError("normalise='sums' needs a mask")
        f, m = _flat_mask(feat, mask)
        total = m.sum(-1, keepdim=True).clamp_min(floor)
        mean = (f * m).sum(-1, keepdim=True) / total
        var = (((f - mean) ** 2) * m).sum(-1, keepdim=True) / total
        mean, var = mean[..., 0], var[..., 0]
    else:
        f, w = flat_weights(feat, mask)
        mean = (f * w).sum(-1)
        var = ((f - mean.unsqueeze(-1)) ** 2 * w).sum(-1)
    return _shape(mean, keepdim), _shape((var + eps).sqrt(), keepdim)


def normalize(feat: torch.Tensor) -> torch.Tensor:
    """Instance normalisation without affine: (feat - mean) / sqrt(var + 1e-5) per sample and
    channel (SANet's ``mean_variance_norm``)."""
    mean, std = mean_std(feat, keepdim=True)
    return (feat - mean) / std


def adain(content_feat: torch.Tensor, style_feat: torch.Tensor, *,
          content_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Adaptive instance normalisation: the content with the style's channel mean/std
    (``eps`` 1e-5; batches equal, or the style's 1). ``content_mask``: the content statistics
    are those of the masked region (``normalise="sums"``, total clamped at 1e-6: AdaIN's
    spatial control); the whole content map is transformed with them. The mask is resized by
    :func:`resize_mask`: pass it at the feature size to choose another resampling."""
    if content_mask is None:
        c_mean, c_std = mean_std(content_feat, keepdim=True)
    else:
        c_mean, c_std = mean_std(content_feat, content_mask, keepdim=True, normalise="sums",
                                 floor=1e-6)
    s_mean, s_std = mean_std(style_feat, keepdim=True)
    return (content_feat - c_mean) / c_std * s_std + s_mean


def gram(feat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix (N, C, C) = F W F^T / C, W the :func:`flat_weights` (summing to 1).
    Unmasked: F F^T / (C H W), Gatys et al.'s Gram normalised by the layer size, through
    :class:`SelfGram` (no weighted copy of the map; either memory format)."""
    if mask is None:
        _check4(feat)
        n, c, h, w = feat.shape
        return SelfGram.apply(feat) / (c * h * w)
    f, w = flat_weights(feat, mask)
    return torch.bmm(f * w, f.transpose(1, 2)) / feat.shape[1]


def _flat_channels(feat: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A view of (N, C, H, W) ``feat`` as (N, HW, C) (True: channels-last storage) or
    (N, C, HW) (False); a copy only when it is stored in neither layout."""
    n, c, h, w = feat.shape
    if feat.is_contiguous(memory_format=torch.channels_last) and not feat.is_contiguous():
        return feat.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return feat.reshape(n, c, h * w), False


class SelfGram(torch.autograd.Function):
    """G = F F^T, (N, C, C), of (N, C, H, W) features F flattened over space, with the
    one-product gradient dF = (dG + dG^T) F, returned in the features' memory format
    (autograd's own backward of ``bmm(f, f^T)`` takes two products and a sum)."""

    @staticmethod
    def forward(ctx, feat):
        ctx.save_for_backward(feat)
        f, nhwc = _flat_channels(feat)
        return torch.bmm(f.transpose(1, 2), f) if nhwc else torch.bmm(f, f.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        feat, = ctx.saved_tensors
        n, c, h, w = feat.shape
        f, nhwc = _flat_channels(feat)
        sym = (grad + grad.transpose(1, 2)).to(feat.dtype)  # bf16 features under autocast
        if nhwc:
            return torch.bmm(f, sym).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return torch.bmm(sym, f).reshape(n, c, h, w)


def sqrt_gram(feat: torch.Tensor) -> torch.Tensor:
    """Elementwise signed square root of the uncentred second moment F F^T / (H W) (that is,
    C x :func:`gram`), (N, C, C): ETNet's style statistic (Song et al. 2019), whose
    difference between an image and a style is the style error. Entries have the scale of
    the features themselves (not their square), so errors of bright and dark layers compare."""
    g = gram(feat) * feat.shape[1]
    return g.sign() * g.abs().sqrt()


def second_moment(f: torch.Tensor) -> torch.Tensor:
    """Uncentred second moment F F^T / N of (B, C, N) features, (B, C, C) (LST's covariance
    branch, fed centred features). Mathematically ``C * gram``; different rounding."""
    return f @ f.transpose(1, 2) / f.shape[-1]


def rms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample root mean square over all non-batch dims, keepdim ((B, 1, 1, 1) for maps),
    computed in float32 with the mean square clamped at 1e-12, returned in x's dtype."""
    dims = tuple(range(1, x.dim()))
    return x.float().pow(2).mean(dims, keepdim=True).clamp_min(1e-12).sqrt().to(x.dtype)


def mean_cov(feat: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-weighted channel mean (N, C) and biased covariance (N, C, C) = sum_p w_p
    (f_p - mean)(f_p - mean)^T with the :func:`flat_weights` (differentiable; batched)."""
    f, w = flat_weights(feat, mask)
    mean = (f * w).sum(-1)
    fc = f - mean.unsqueeze(-1)
    return mean, torch.bmm(fc * w, fc.transpose(1, 2))


def feature_stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C, 1) and unbiased covariance (C, C) (divided by max(N - 1, 1)) of one image's
    (C, N) features, float64, accumulated :data:`CHUNK` positions at a time (sums and sums of
    products: memory bounded for any N)."""
    c, n = f.shape
    s = torch.zeros(c, dtype=torch.float64, device=f.device)
    ss = torch.zeros(c, c, dtype=torch.float64, device=f.device)
    for part in f.split(CHUNK, dim=1):
        d = part.double()
        s += d.sum(1)
        ss += d @ d.T
    mean = (s / n)[:, None]
    cov = (ss - n * mean @ mean.T) / max(n - 1, 1)
    return mean, cov


# --------------------------------------------------------------------------- matrix functions
def sym_power(a: torch.Tensor, power: float | tuple[float, ...],
              eps: float | None = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``a ** power`` for symmetric PSD matrices (C, C) or batches (..., C, C), by eigh in
    float64, returned in a's dtype; a tuple of powers gives a tuple of matrices from the one
    eigendecomposition.

    ``eps=None``: eigenvalues clamped at 0 (rounding noise of a PSD matrix; a negative
    ``power`` then needs a positive definite ``a``). ``eps`` given (one (C, C) matrix only):
    eigenvalues <= eps are dropped with their eigenvectors, a pseudo-power on the
    well-determined subspace."""
    evals, evecs = torch.linalg.eigh(a.double())
    if eps is None:
        evals = evals.clamp_min(0)
    else:
        if a.dim() != 2:
            raise BrushworkError("sym_power with eps takes one (C, C) matrix")
        keep = evals > eps
        evals, evecs = evals[keep], evecs[:, keep]
    powers = power if isinstance(power, tuple) else (power,)
    out = tuple((evecs * evals.pow(q).unsqueeze(-2) @ evecs.transpose(-1, -2)).to(a.dtype)
                for q in powers)
    return out if isinstance(power, tuple) else out[0]


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a (batch of) PSD matrix: ``sym_power(a, 0.5)`` (negative
    eigenvalues clamped to 0; float64 inside, a's dtype out)."""
    return sym_power(a, 0.5)


def trace_sqrtm(a: torch.Tensor, *, ridge: float = 0.0, floor: float = 0.0) -> torch.Tensor:
    """tr(a^1/2) of a symmetric PSD matrix or batch (..., C, C): the sum of the square roots
    of the eigenvalues (``eigvalsh``: differentiable) of ``a + ridge * I`` in float64, each
    clamped at ``floor``; (...) in float64. The cross term of the Frechet / 2-Wasserstein
    distance between Gaussians."""
    d = a.double()
    if ridge:
        d = d + ridge * torch.eye(a.shape[-1], dtype=torch.float64, device=a.device)
    return torch.linalg.eigvalsh(d).clamp_min(floor).sqrt().sum(-1)


# ------------------------------------------------------------------ whitening and colouring
def wct_matrix(c_cov: torch.Tensor, s_cov: torch.Tensor) -> torch.Tensor:
    """The colouring-times-whitening matrix S^(1/2) C^(-1/2), eigenvalues <= :data:`WCT_EPS`
    dropped in both (float64 in, float64 out for :func:`feature_stats` covariances)."""
    return sym_power(s_cov, 0.5, WCT_EPS) @ sym_power(c_cov, -0.5, WCT_EPS)


def apply_affine(f: torch.Tensor, m: torch.Tensor, c_mean: torch.Tensor,
                 s_mean: torch.Tensor) -> torch.Tensor:
    """m @ (f - c_mean) + s_mean for (C, N) features, in float64 chunks of :data:`CHUNK`
    positions, returned in f's dtype."""
    return torch.cat([(m @ (part.double() - c_mean) + s_mean).to(f.dtype)
                      for part in f.split(CHUNK, dim=1)], dim=1)


def whiten(flat: torch.Tensor, *, colouring: bool = False, eps: float = WCT_EPS):
    """Whitening of one image's (C, N) features: ``(W (f - mean), mean (C, 1), M)`` with the
    :func:`feature_stats` mean and covariance, W = cov^(-1/2) and M = cov^(1/2) (the matrix
    that colours whitened features back to these statistics, see :func:`colour`; None unless
    ``colouring``), eigenvalues <= ``eps`` dropped; one eigendecomposition for both."""
    mean, cov = feature_stats(flat)
    if colouring:
        w, m = sym_power(cov, (-0.5, 0.5), eps)
    else:
        w, m = sym_power(cov, -0.5, eps), None
    return apply_affine(flat, w, mean, torch.zeros_like(mean)), mean, m


def colour(white: torch.Tensor, mean: torch.Tensor, colouring: torch.Tensor) -> torch.Tensor:
    """Whitened (C, N) features coloured with the mean (C, 1) and colouring matrix (C, C) that
    :func:`whiten` returns: ``M white + mean``."""
    return apply_affine(white, colouring, torch.zeros_like(mean), mean)


def whiten_colour(content: torch.Tensor, style_mean: torch.Tensor,
                  style_cov: torch.Tensor) -> torch.Tensor:
    """Whitening-colouring of (C, N) features to a style's mean (C, 1) and covariance (C, C)
    (from :func:`feature_stats`): the content's own (unbiased, float64) statistics, then
    :func:`wct_matrix` and :func:`apply_affine`. Returned in content's dtype."""
    c_mean, c_cov = feature_stats(content)
    return apply_affine(content, wct_matrix(c_cov, style_cov), c_mean, style_mean)


def wct(content_feat: torch.Tensor, style_feat: torch.Tensor,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Whitening-colouring transform (Li et al. 2017) of a (1, C, H, W) content map to the
    (1, C, H', W') style's mean and covariance.

    ``mask`` (1, 1, h, w): resized to the content map (nearest), positions > 0.5 are
    transformed with their own statistics; every other position is returned unchanged, and
    so is the whole map when fewer than 2 positions are selected."""
    if content_feat.shape[0] != 1 or style_feat.shape[0] != 1:
        raise BrushworkError("wct works on one image at a time (batch of 1)")
    s_mean, s_cov = feature_stats(style_feat[0].flatten(1))
    flat = content_feat[0].flatten(1)
    if mask is None:
        return whiten_colour(flat, s_mean, s_cov).view_as(content_feat)
    sel = F.interpolate(mask, size=content_feat.shape[-2:], mode="nearest")[0, 0].flatten() > 0.5
    out = content_feat.clone(memory_format=torch.contiguous_format)
    if int(sel.sum()) < 2:
        return out
    out[0].view(content_feat.shape[1], -1)[:, sel] = whiten_colour(flat[:, sel], s_mean, s_cov)
    return out


def _colour_moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C, 1) and biased covariance (C, C) of a (1, C, H, W) image's colours in float64,
    two-pass (centred, then F F^T / N): colour transfer's own arithmetic. Mathematically
    :func:`feature_stats` divided by N instead of N - 1, whose one-pass sums round
    differently (1 float32 ulp on a few pixels of the recoloured image)."""
    f = image[0].reshape(image.shape[1], -1).double()
    mean = f.mean(1, keepdim=True)
    centred = f - mean
    return mean, centred @ centred.T / f.shape[1]


def match_color(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Linear colour transfer (Gatys et al. 2017): ``source`` (1, C, H, W) recoloured so its
    channel mean and covariance match ``reference``'s; x' = R^1/2 S^-1/2 (x - mu_s) + mu_r with
    biased float64 covariances regularised by :data:`COLOR_REG` * I, symmetric square roots
    and an inverse; clamped to [0, 1], in source's dtype."""
    c = source.shape[1]
    eye = COLOR_REG * torch.eye(c, dtype=torch.float64, device=source.device)
    (mu_s, cov_s), (mu_r, cov_r) = _colour_moments(source), _colour_moments(reference)
    m = sqrtm_psd(cov_r + eye) @ torch.linalg.inv(sqrtm_psd(cov_s + eye))
    return apply_affine(source[0].reshape(c, -1), m, mu_s, mu_r).reshape(source.shape).clamp(0, 1)


# ------------------------------------------------------------------ exact histogram matching
def _cpu_array(x: torch.Tensor):
    """``x`` (detached) as a contiguous NumPy array when it is a float32/float64 CPU tensor,
    else None: the inputs the NumPy sorts below take."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return x.detach().contiguous().numpy()


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    """``x``'s values sorted along its last dimension (detached): ``x.sort(-1).values``, through
    NumPy's vectorised sort on the CPU for float32/float64 (the same values, about 15x faster
    than torch's CPU sort on a 256 x 16384 map)."""
    a = _cpu_array(x)
    if a is None:
        return x.detach().sort(-1).values
    import numpy as np
    return torch.from_numpy(np.sort(a, axis=-1))


def argsort_rows(x: torch.Tensor) -> torch.Tensor:
    """The indices that sort ``x`` along its last dimension. Ties at a row's minimum (a ReLU
    map's zeros, the common ties) come in position order, as a stable sort gives them; other
    ties in an unspecified order. On the CPU for float32/float64, through NumPy's vectorised
    argsort of float64 keys in which the minimum's ties are made distinct (about 2x faster than
    torch's CPU argsort on a 256 x 12288 ReLU map); elsewhere torch's stable sort."""
    a = _cpu_array(x)
    if a is None:
        return torch.sort(x.detach(), stable=True, dim=-1).indices
    import numpy as np
    m = a.shape[-1]
    lo = a.min(-1, keepdims=True).astype(np.float64)
    key = np.where(a == lo, lo - (m - np.arange(m, dtype=np.float64)), a.astype(np.float64))
    return torch.from_numpy(np.argsort(key, axis=-1))


def sorted_values(feat: torch.Tensor) -> torch.Tensor:
    """(C, K) per-channel sorted values of one image's (1, C, H, W) features (K = H W): the
    exact distribution :func:`match_sorted` matches to."""
    return sort_rows(feat.reshape(feat.shape[1], -1))


def match_sorted(feat: torch.Tensor, target_sorted: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each channel of ``feat`` (N, C, H, W) remapped onto the distribution given by
    ``target_sorted`` (C, K), by ranks; detached.

    The i-th smallest of a channel's m values becomes the target quantile at (i + 0.5) / m,
    linear between sorted values: with m = K, exactly the i-th sorted target value. ``mask``:
    only positions where the :func:`resize_mask` mask (first sample) is > 0.5 are ranked
    among themselves and remapped; the others are returned unchanged (all of them when none
    is selected)."""
    n, c, h, w = feat.shape
    f = feat.detach().reshape(n, c, h * w)
    out = f.clone()
    sel = None
    if mask is not None:
        sel = (resize_mask(mask, feat).reshape(-1, h * w)[0] > 0.5)
        if sel.sum() == 0:
            return feat.detach()
        f = f[:, :, sel]
    k = target_sorted.shape[-1]
    m = f.shape[-1]
    order = argsort_rows(f)
    pos = (torch.arange(m, device=feat.device, dtype=feat.dtype) + 0.5) / m * k - 0.5
    pos = pos.clamp(0, k - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=k - 1)
    frac = (pos - lo.to(pos.dtype))
    q = target_sorted[:, lo] * (1 - frac) + target_sorted[:, hi] * frac  # (C, m) quantiles
    matched = torch.empty_like(f)
    matched.scatter_(-1, order, q.unsqueeze(0).expand(n, -1, -1).to(f.dtype))
    if sel is None:
        out = matched
    else:
        out[:, :, sel] = matched
    return out.reshape(n, c, h, w)


def exact_histogram_match(content: torch.Tensor, style: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Exact feature distribution matching (EFDM, Zhang et al. 2022): each channel of the
    ``content`` features (N, C, H, W) takes the ``style``'s (1, C, H', W') sorted values at its
    own ranks (:func:`match_sorted`; the style's sorted values are interpolated when the sizes
    differ). Equal sizes: every output channel has exactly the style's values, in the content's
    order. ``mask``: only the selected content positions are matched (see
    :func:`match_sorted`). When ``content`` requires grad the result is
    ``content + (matched - content).detach()`` (the paper's identity gradient)."""
    _check4(content)
    _check4(style)
    if style.shape[0] != 1 or style.shape[1] != content.shape[1]:
        raise BrushworkError(f"exact_histogram_match: style {tuple(style.shape)} does not fit "
                             f"content {tuple(content.shape)}")
    matched = match_sorted(content, sorted_values(style), mask)
    if content.requires_grad:
        return content + (matched - content).detach()
    return matched


# ----------------------------------------------------------------------- statistic vectors
def log_standardize(stats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    clip: float | None = None) -> torch.Tensor:
    """(log1p(max(stats, 0)) - mean) / std, clipped to [-clip, clip] when ``clip`` is given:
    non-negative statistics (channel means/stds of ReLU features) in a standardised log space."""
    z = (torch.log1p(stats.clamp_min(0)) - mean) / std
    return z if clip is None else z.clamp(-clip, clip)

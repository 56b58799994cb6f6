"""An artist judge on hand-made texture (and colour) features, and the texture measures.

**The texture judge.** The style-accuracy metric needs a judge whose features no loss of a
generator optimises. The VGG classifier (:mod:`brushwork.eval.classifier`) reads VGG19 channel
means and standard deviations, the very statistics asma's style term, AdaIN and the mean/std
losses match; a generator can meet them without painting like the artist. This judge uses no
network at all. Every image is resized so its short side is ``size`` (default 224), then
described by

* colour, in CIE Lab and HSV: the mean and standard deviation of L, a, b; an L histogram
  (16 bins); a joint a-b histogram (8 x 8); a joint RGB histogram (4 x 4 x 4) and its entropy;
  a saturation-weighted hue histogram (12 bins); a saturation histogram (8 bins); the mean and
  standard deviation of saturation and value; colourfulness (Hasler and Suesstrunk);
* local binary patterns (rotation-invariant, uniform, 8 neighbours) of the luminance at radii
  1, 2 and 4: 10-bin histograms;
* a Laplacian pyramid of the luminance (5 band levels): the log energy and log kurtosis of
  each band (an image too small for a level repeats its coarsest one, as for the octaves
  below);
* Gabor quadrature energies at 4 orientations on 4 octaves of the Gaussian pyramid (log), and
  each octave's orientation anisotropy;
* gradients at 2 octaves: magnitude-weighted orientation histograms (8 bins), the log mean and
  standard deviation of the magnitude, edge density and structure-tensor coherence.

Histograms are normalised and square-rooted (Hellinger). A judge reads one
:data:`FEATURE_SETS` subset: ``texture`` (every group but colour: the shipped judge, since
matching VGG relu1_1 statistics fixes the palette, so colour features are what a VGG-matching
generator satisfies without painting like the artist), ``all`` or ``colour``. The features
are z-scored with the training set's moments, clipped to +-6, and read by a multinomial
logistic regression (:class:`TextureJudge`, L2-regularised, fitted by L-BFGS:
:func:`fit_linear`).

**Measures** (also hand-made, no network): :func:`stroke_scale` (the energy-weighted mean and
the peak level of a Laplacian pyramid: larger strokes move the energy to coarser levels) and
:func:`texture_correlation` (the mean correlation between the high-passed luminance of
different images, and between the shapes of their high-pass spectra: a generator that stamps
one fixed texture on every photo gives outputs more correlated than the photos themselves).
"""
from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from ..errors import BrushworkError
from ..core.color import luminance
from ..core.stats import mean_std
from ..core.weights import load_weights, meta_json, resolve_weights, save_weights
from .classifier import short_side as _short_side

SHIPPED_FILE = "texture_judge.safetensors"
TRAIN_HINT = "brushwork train texture-judge --styles DIR --out texture_judge.safetensors"
DEFAULT_SIZE = 224
LBP_RADII = (1, 2, 4)
LBP_POINTS = 8
PYRAMID_LEVELS = 5
GABOR_OCTAVES = 4
GABOR_ORIENTATIONS = 4
GRADIENT_OCTAVES = 2
CLIP = 6.0
EPS = 1e-8

# name -> length of every feature group, in the order of the feature vector
FEATURE_GROUPS = {
    "lab_mean_std": 6,
    "l_hist": 16,
    "ab_hist": 64,
    "rgb_hist": 64,
    "rgb_entropy": 1,
    "hue_hist": 12,
    "sat_hist": 8,
    "sv_mean_std": 4,
    "colourfulness": 1,
    **{f"lbp_r{r}": LBP_POINTS + 2 for r in LBP_RADII},
    "band_log_energy": PYRAMID_LEVELS,
    "band_log_kurtosis": PYRAMID_LEVELS,
    "gabor_log_energy": GABOR_OCTAVES * GABOR_ORIENTATIONS,
    "gabor_anisotropy": GABOR_OCTAVES,
    "grad_orientation_hist": 8 * GRADIENT_OCTAVES,
    "grad_magnitude": 2 * GRADIENT_OCTAVES,
    "edge_density": GRADIENT_OCTAVES,
    "coherence": GRADIENT_OCTAVES,
}
FEATURE_DIM = sum(FEATURE_GROUPS.values())
COLOUR_GROUPS = ("lab_mean_std", "l_hist", "ab_hist", "rgb_hist", "rgb_entropy", "hue_hist",
                 "sat_hist", "sv_mean_std", "colourfulness")
FEATURE_SETS = {
    "all": tuple(FEATURE_GROUPS),
    "colour": COLOUR_GROUPS,  # colour and tone, no spatial structure
    "texture": tuple(g for g in FEATURE_GROUPS if g not in COLOUR_GROUPS),  # luminance only
}
"""Feature subsets a judge can be trained on (``--feature-set``): the shipped judge reads
``texture``; ``all`` and ``colour`` tell how much of a verdict rests on the palette."""


def feature_index(feature_set: str = "all") -> torch.Tensor:
    """Indices into the full feature vector of the groups of ``feature_set``."""
    if feature_set not in FEATURE_SETS:
        raise BrushworkError(f"unknown feature set {feature_set!r} (choose "
                             f"{', '.join(FEATURE_SETS)})")
    keep, start = [], 0
    for name, n in FEATURE_GROUPS.items():
        if name in FEATURE_SETS[feature_set]:
            keep += range(start, start + n)
        start += n
    return torch.tensor(keep, dtype=torch.long)


def short_side(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """``x`` resized so its shorter side is ``size`` (None: unchanged), as the VGG judge does."""
    return x if size is None else _short_side(x, size)


# ------------------------------------------------------------------------------------ colour
def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIE Lab (D65): L in [0, 100], a and b roughly +-100."""
    x = x.clamp(0, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=x.dtype, device=x.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=x.dtype, device=x.device)
    t = xyz / white[None, :, None, None]
    d = 6 / 29
    f = torch.where(t > d ** 3, t.clamp_min(1e-12) ** (1 / 3), t / (3 * d * d) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]),
                        200 * (f[:, 1] - f[:, 2])], 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV, every channel in [0, 1] (hue 0 for greys)."""
    x = x.clamp(0, 1)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, _ = x.max(1)
    mn, _ = x.min(1)
    c = v - mn
    s = torch.where(v > 0, c / v.clamp_min(EPS), torch.zeros_like(v))
    cc = c.clamp_min(EPS)
    h = torch.where(v == r, ((g - b) / cc) % 6,
                    torch.where(v == g, (b - r) / cc + 2, (r - g) / cc + 4)) / 6
    h = torch.where(c > 0, h, torch.zeros_like(h))
    return torch.stack([h % 1.0, s, v], 1)


def histogram(values: torch.Tensor, bins: int, low: float, high: float,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised histogram (sums to 1; all zeros when the weights are) of a flat tensor;
    values outside [low, high] go to the end bins."""
    idx = ((values.flatten() - low) / (high - low) * bins).floor().clamp(0, bins - 1).long()
    w = None if weights is None else weights.flatten().to(torch.float64)
    h = torch.bincount(idx, weights=w, minlength=bins).to(torch.float64)
    return (h / h.sum().clamp_min(EPS)).float()


def joint_histogram(indices: list[torch.Tensor], bins: int) -> torch.Tensor:
    """Normalised joint histogram of several integer bin-index maps in [0, bins)."""
    flat = torch.zeros_like(indices[0].flatten())
    for i in indices:
        flat = flat * bins + i.flatten()
    h = torch.bincount(flat, minlength=bins ** len(indices)).to(torch.float64)
    return (h / h.sum().clamp_min(EPS)).float()


def _bin_index(v: torch.Tensor, bins: int, low: float, high: float) -> torch.Tensor:
    return ((v - low) / (high - low) * bins).floor().clamp(0, bins - 1).long()


def _colour_features(x: torch.Tensor) -> dict[str, torch.Tensor]:
    lab = rgb_to_lab(x)
    hsv = rgb_to_hsv(x)
    m, s = mean_std(lab, eps=0)
    rgb = joint_histogram([_bin_index(x[:, c], 4, 0.0, 1.0) for c in range(3)], 4)
    entropy = -(rgb * rgb.clamp_min(EPS).log()).sum() / math.log(64)
    sv_m, sv_s = mean_std(hsv[:, 1:], eps=0)
    rg = x[:, 0] - x[:, 1]
    yb = (x[:, 0] + x[:, 1]) / 2 - x[:, 2]
    colourfulness = (rg.std() ** 2 + yb.std() ** 2).sqrt() + 0.3 * (rg.mean() ** 2
                                                                    + yb.mean() ** 2).sqrt()
    return {
        "lab_mean_std": torch.cat([m[0] / 100, s[0] / 100]),
        "l_hist": histogram(lab[:, 0], 16, 0.0, 100.0).sqrt(),
        "ab_hist": joint_histogram([_bin_index(lab[:, 1], 8, -64.0, 64.0),
                                    _bin_index(lab[:, 2], 8, -64.0, 64.0)], 8).sqrt(),
        "rgb_hist": rgb.sqrt(),
        "rgb_entropy": entropy.reshape(1),
        "hue_hist": histogram(hsv[:, 0], 12, 0.0, 1.0, weights=hsv[:, 1]).sqrt(),
        "sat_hist": histogram(hsv[:, 1], 8, 0.0, 1.0).sqrt(),
        "sv_mean_std": torch.cat([sv_m[0], sv_s[0]]),
        "colourfulness": colourfulness.reshape(1),
    }


# -------------------------------------------------------------------- local binary patterns
def lbp_codes(y: torch.Tensor, radius: float, points: int = LBP_POINTS) -> torch.Tensor:
    """Rotation-invariant uniform LBP codes (0..points+1) of a (1, 1, H, W) map: neighbours on
    a circle of ``radius`` (bilinear), bit set where neighbour >= centre; the number of set bits
    for uniform patterns (at most 2 transitions), ``points + 1`` otherwise. Border positions
    (within ceil(radius) + 1 of an edge) are left out: (H', W')."""
    h, w = y.shape[-2:]
    r = int(math.ceil(radius)) + 1
    if h <= 2 * r or w <= 2 * r:
        raise BrushworkError(f"image too small for LBP at radius {radius}: {h}x{w}")
    centre = y[0, 0, r:h - r, r:w - r]
    bits = []
    for p in range(points):
        a = 2 * math.pi * p / points
        dy, dx = round(-radius * math.sin(a), 9), round(radius * math.cos(a), 9)
        y0, x0 = math.floor(dy), math.floor(dx)
        fy, fx = dy - y0, dx - x0

        def at(oy, ox):
            return y[0, 0, r + oy:h - r + oy, r + ox:w - r + ox]

        v = ((1 - fy) * (1 - fx)) * at(y0, x0)
        if fx:
            v = v + ((1 - fy) * fx) * at(y0, x0 + 1)
        if fy:
            v = v + (fy * (1 - fx)) * at(y0 + 1, x0)
        if fx and fy:
            v = v + (fy * fx) * at(y0 + 1, x0 + 1)
        bits.append((v >= centre - 1e-7).to(torch.int64))
    b = torch.stack(bits)
    transitions = (b != b.roll(1, 0)).sum(0)
    return torch.where(transitions <= 2, b.sum(0), torch.full_like(b[0], points + 1))


def lbp_histogram(y: torch.Tensor, radius: float, points: int = LBP_POINTS) -> torch.Tensor:
    codes = lbp_codes(y, radius, points)
    h = torch.bincount(codes.flatten(), minlength=points + 2).to(torch.float64)
    return (h / h.sum()).float()


# --------------------------------------------------------------------------------- pyramids
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _separable(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-channel separable convolution with a 1-D kernel, reflect borders, same size."""
    c = x.shape[1]
    p = len(k) // 2
    k = k.to(x)
    mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
    x = F.pad(x, (p, p, 0, 0), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, p, p), mode=mode)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each channel of (N, C, H, W) (reflect borders)."""
    if sigma <= 0:
        return x
    half = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    return _separable(x, (k / k.sum()).float())


def reduce(x: torch.Tensor) -> torch.Tensor:
    """One Gaussian-pyramid step: 5-tap binomial blur, then every second pixel."""
    return _separable(x, _BINOMIAL)[..., ::2, ::2]


def expand(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample a pyramid level back to ``size`` (bilinear)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[x, reduce(x), ...]: ``levels`` images (fewer where one more would be under 4 px)."""
    out = [x]
    while len(out) < levels and min(out[-1].shape[-2:]) >= 8:
        out.append(reduce(out[-1]))
    return out


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels G_k - expand(G_{k+1}) for k < ``levels`` (finest first); the low-pass
    residual is left out. Fewer levels when the image is too small."""
    g = gaussian_pyramid(x, levels + 1)
    return [g[k] - expand(g[k + 1], tuple(g[k].shape[-2:])) for k in range(len(g) - 1)]


def band_energies(x: torch.Tensor, levels: int = 6) -> torch.Tensor:
    """Mean squared coefficient of each Laplacian-pyramid band of the luminance of a
    (1, 3, H, W) image, finest first: the energy per unit area in each octave."""
    y = luminance(x.float()) if x.shape[1] == 3 else x.float()
    return torch.stack([(b ** 2).mean() for b in laplacian_pyramid(y, levels)])


def _pyramid_features(y: torch.Tensor) -> dict[str, torch.Tensor]:
    bands = laplacian_pyramid(y, PYRAMID_LEVELS)
    bands += [bands[-1]] * (PYRAMID_LEVELS - len(bands))  # small images: repeat the coarsest
    energy = torch.stack([(b ** 2).mean() for b in bands])
    kurt = torch.stack([(b ** 4).mean() / ((b ** 2).mean() ** 2).clamp_min(EPS) for b in bands])
    return {"band_log_energy": (energy + EPS).log(), "band_log_kurtosis": kurt.clamp_min(EPS).log()}


def _gabor_bank(orientations: int, wavelength: float = 4.0) -> torch.Tensor:
    """(2 * orientations, 1, K, K) even (zero-mean) and odd Gabor kernels, one octave wide."""
    sigma = 0.56 * wavelength
    half = int(math.ceil(2.5 * sigma))
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    env = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    ks = []
    for i in range(orientations):
        th = math.pi * i / orientations
        u = xx * math.cos(th) + yy * math.sin(th)
        even = env * torch.cos(2 * math.pi * u / wavelength)
        even = even - env * (even.sum() / env.sum())
        odd = env * torch.sin(2 * math.pi * u / wavelength)
        norm = (even.abs().sum() + odd.abs().sum()) / 2
        ks += [even / norm, odd / norm]
    return torch.stack(ks).unsqueeze(1).float()


_GABOR = _gabor_bank(GABOR_ORIENTATIONS)


def _gabor_features(y: torch.Tensor) -> dict[str, torch.Tensor]:
    energies, aniso = [], []
    levels = gaussian_pyramid(y, GABOR_OCTAVES)
    pad = _GABOR.shape[-1] // 2
    for k in range(GABOR_OCTAVES):
        g = levels[min(k, len(levels) - 1)]
        mode = "reflect" if min(g.shape[-2:]) > pad else "replicate"
        r = F.conv2d(F.pad(g, (pad,) * 4, mode=mode), _GABOR.to(g))
        e = (r[0, 0::2] ** 2 + r[0, 1::2] ** 2).mean((1, 2))
        energies.append((e + EPS).log())
        aniso.append(((e.max() - e.min()) / e.sum().clamp_min(EPS)).reshape(1))
    return {"gabor_log_energy": torch.cat(energies), "gabor_anisotropy": torch.cat(aniso)}


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def gradients(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel gradients (gx, gy) of a (1, 1, H, W) map (a ramp of slope s per pixel gives s),
    replicate borders."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1).to(y)
    g = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k)
    return g[:, :1], g[:, 1:]


def _gradient_features(y: torch.Tensor) -> dict[str, torch.Tensor]:
    hists, mags, edges, coh = [], [], [], []
    levels = gaussian_pyramid(y, GRADIENT_OCTAVES)
    for k in range(GRADIENT_OCTAVES):
        g = levels[min(k, len(levels) - 1)]
        gx, gy = gradients(g)
        mag = (gx ** 2 + gy ** 2).sqrt()
        theta = torch.atan2(gy, gx) % math.pi
        hists.append(histogram(theta, 8, 0.0, math.pi, weights=mag).sqrt())
        m, s = mean_std(mag, eps=0)
        mags.append(torch.cat([(m[0] + 1e-4).log(), (s[0] + 1e-4).log()]))
        edges.append((mag > 0.02).float().mean().reshape(1))
        j = gaussian_blur(torch.cat([gx * gx, gy * gy, gx * gy], 1), 1.5)
        jxx, jyy, jxy = j[:, 0], j[:, 1], j[:, 2]
        num = ((jxx - jyy) ** 2 + 4 * jxy ** 2).sqrt().sum()
        coh.append((num / (jxx + jyy).sum().clamp_min(EPS)).reshape(1))
    return {"grad_orientation_hist": torch.cat(hists), "grad_magnitude": torch.cat(mags),
            "edge_density": torch.cat(edges), "coherence": torch.cat(coh)}


# ------------------------------------------------------------------------------ the features
@torch.no_grad()
def texture_features(x: torch.Tensor, size: int | None = DEFAULT_SIZE) -> torch.Tensor:
    """One (1, 3, H, W) image in [0, 1] -> (FEATURE_DIM,) float32 features (the groups of
    :data:`FEATURE_GROUPS`, in order), after resizing its short side to ``size``."""
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise BrushworkError(f"texture features take one (1, 3, H, W) image, got "
                             f"{tuple(x.shape)}")
    x = short_side(x.float().cpu().clamp(0, 1), size)
    if min(x.shape[-2:]) < 32:
        raise BrushworkError(f"image too small for the texture judge: {tuple(x.shape[-2:])} "
                             f"(at least 32 px a side)")
    y = luminance(x)
    parts = _colour_features(x)
    for r in LBP_RADII:
        parts[f"lbp_r{r}"] = lbp_histogram(y, r).sqrt()
    parts.update(_pyramid_features(y))
    parts.update(_gabor_features(y))
    parts.update(_gradient_features(y))
    out = []
    for name, n in FEATURE_GROUPS.items():
        v = parts[name].flatten().float()
        if v.numel() != n:
            raise BrushworkError(f"texture feature {name}: expected {n} values, got {v.numel()}")
        out.append(v)
    return torch.cat(out)


def feature_names() -> list[str]:
    """One name per feature: ``group[i]``."""
    return [f"{g}[{i}]" for g, n in FEATURE_GROUPS.items() for i in range(n)]


# ----------------------------------------------------------------------------- the classifier
def standardise(feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return ((feats - mean) / std).clamp(-CLIP, CLIP)


def fit_linear(z: torch.Tensor, labels: torch.Tensor, n_classes: int, l2: float, *,
               balanced: bool = True, iters: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features ``z`` (N, D): L-BFGS on the
    (class-balanced) mean cross-entropy + ``l2`` * |W|^2 (the bias is not penalised), from zero;
    deterministic. Returns (W (K, D), b (K,))."""
    z = z.double()
    counts = torch.bincount(labels, minlength=n_classes).double()
    if balanced:
        cw = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)),
                         torch.zeros_like(counts))
    else:
        cw = torch.ones(n_classes, dtype=torch.float64)
    sw = cw[labels] / cw[labels].sum()
    w = torch.zeros(n_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = F.cross_entropy(z @ w.T + b, labels, reduction="none")
        loss = (nll * sw).sum() + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


class TextureJudge:
    """Hand-made features (one :data:`FEATURE_SETS` subset) -> linear softmax: one
    probability per artist.

    Same interface as :class:`brushwork.eval.classifier.ArtistClassifier` where style accuracy
    needs it: ``classes``, ``predict_proba``, ``predict``, ``holdout``, ``split_seed``."""

    kind = "texture_judge"

    def __init__(self, classes: list[str], feat_mean: torch.Tensor, feat_std: torch.Tensor,
                 weight: torch.Tensor, bias: torch.Tensor, size: int = DEFAULT_SIZE,
                 holdout: float = 0.2, split_seed: int = 0, feature_set: str = "all"):
        if len(classes) < 2:
            raise BrushworkError("an artist judge needs at least two classes")
        self.index = feature_index(feature_set)
        dim = len(self.index)
        if weight.shape != (len(classes), dim) or bias.shape != (len(classes),) or \
                feat_mean.shape != (dim,) or feat_std.shape != (dim,):
            raise BrushworkError("texture judge: weights do not fit the classes and features")
        self.feature_set = feature_set
        self.classes = list(classes)
        self.feat_mean, self.feat_std = feat_mean.float(), feat_std.float()
        self.weight, self.bias = weight.float(), bias.float()
        self.size = size
        self.holdout, self.split_seed = holdout, split_seed

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, FEATURE_DIM) raw features (all groups; the judge picks its own) -> (N, K)."""
        z = standardise(feats[:, self.index], self.feat_mean, self.feat_std)
        return z @ self.weight.T + self.bias

    def features(self, images) -> torch.Tensor:
        batch = list(images) if isinstance(images, (list, tuple)) else list(images.split(1))
        return torch.stack([texture_features(x, self.size) for x in batch])

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """A (B, 3, H, W) batch or a list of (1, 3, H, W) images in [0, 1] -> (B, K) probs."""
        return F.softmax(self.logits(self.features(images)), dim=1)

    def predict(self, images) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(images).argmax(1).tolist()]

    def save(self, path, extra: dict | None = None) -> str:
        """safetensors with the classes, feature layout and settings as metadata (sha256)."""
        meta = {"kind": self.kind, "classes": json.dumps(self.classes),
                "features": json.dumps(FEATURE_GROUPS), "feature_set": self.feature_set,
                "size": str(self.size),
                "holdout": str(self.holdout), "seed": str(self.split_seed), **(extra or {})}
        tensors = {"feat_mean": self.feat_mean, "feat_std": self.feat_std,
                   "weight": self.weight, "bias": self.bias}
        return save_weights(tensors, path, metadata=meta)

    @classmethod
    def load(cls, weights=None) -> "TextureJudge":
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        state, meta = load_weights(path)
        if meta.get("kind") != cls.kind:
            raise BrushworkError(f"{path}: not a texture judge weight file")
        if meta_json(meta, "features", "texture judge") != FEATURE_GROUPS:
            raise BrushworkError(f"{path}: made for another feature layout; retrain it with "
                                 f"`{TRAIN_HINT}`")
        try:
            judge = cls(meta_json(meta, "classes", "texture judge"), state["feat_mean"],
                        state["feat_std"], state["weight"], state["bias"],
                        size=int(meta.get("size", DEFAULT_SIZE)),
                        holdout=float(meta.get("holdout", 0.2)),
                        split_seed=int(meta.get("seed", 0)),
                        feature_set=meta.get("feature_set", "all"))
        except (KeyError, ValueError):
            raise BrushworkError(f"{path}: incomplete texture judge weight file") from None
        judge.metadata = meta
        return judge


# ------------------------------------------------------------------------------ the measures
def stroke_scale(x: torch.Tensor, levels: int = 6) -> dict:
    """Where the detail of an image sits in scale: the Laplacian-pyramid band energies of its
    luminance (:func:`band_energies`, finest = level 0), their energy-weighted mean level and
    the level of the largest energy. Coarser strokes -> higher levels."""
    e = band_energies(x, levels).double()
    share = e / e.sum().clamp_min(1e-20)
    k = torch.arange(len(e), dtype=torch.float64)
    return {"mean_level": float((share * k).sum()), "peak_level": int(e.argmax()),
            "energies": [float(v) for v in e], "shares": [float(v) for v in share]}


def highpass(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Luminance minus its Gaussian blur (``sigma`` px): the fine texture of an image."""
    y = luminance(x.float()) if x.shape[1] == 3 else x.float()
    return y - gaussian_blur(y, sigma)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else 0.0


def highpass_correlation(images: list[torch.Tensor], sigma: float = 2.0) -> float:
    """Mean Pearson correlation, over every pair of different images, of their high-passed
    luminance (:func:`highpass`); the images must share one size. 1 for identical images,
    about 0 for unrelated ones."""
    if len(images) < 2:
        raise BrushworkError("high-pass correlation needs at least two images")
    sizes = {tuple(x.shape[-2:]) for x in images}
    if len(sizes) != 1:
        raise BrushworkError(f"high-pass correlation needs images of one size, got "
                             f"{sorted(sizes)}")
    hp = [highpass(x, sigma) for x in images]
    pairs = [_pearson(hp[i], hp[j]) for i in range(len(hp)) for j in range(i + 1, len(hp))]
    return sum(pairs) / len(pairs)


def highpass_spectrum(x: torch.Tensor, sigma: float = 2.0, cell: int = 4) -> torch.Tensor:
    """The shape of an image's fine texture, wherever it sits: the log power spectrum of the
    Hann-windowed :func:`highpass`, averaged over ``cell`` x ``cell`` frequency cells, minus its
    mean over each ring of equal frequency (what is left: orientations and periodicities)."""
    y = highpass(x, sigma)[0, 0].double()
    h, w = y.shape
    win = torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None] * \
        torch.hann_window(w, periodic=False, dtype=torch.float64)[None, :]
    p = torch.fft.fftshift(torch.fft.fft2((y - y.mean()) * win).abs() ** 2)
    p = F.avg_pool2d(p[None, None], cell)[0, 0]
    logp = (p + 1e-12 * p.mean() + 1e-30).log()
    fy = torch.arange(p.shape[0], dtype=torch.float64) - p.shape[0] / 2
    fx = torch.arange(p.shape[1], dtype=torch.float64) - p.shape[1] / 2
    ring = ((fy[:, None] / p.shape[0]) ** 2 + (fx[None, :] / p.shape[1]) ** 2).sqrt()
    ring = (ring * 2 * min(p.shape)).round().long()
    n = torch.bincount(ring.flatten()).clamp_min(1)
    mean = torch.bincount(ring.flatten(), weights=logp.flatten()) / n
    return logp - mean[ring]


def spectrum_correlation(images: list[torch.Tensor], sigma: float = 2.0) -> float:
    """Mean Pearson correlation, over every pair of different images (one size), of their
    :func:`highpass_spectrum`: the same texture at any position gives about 1 (where
    :func:`highpass_correlation` gives 0 unless it is at the same place), unrelated textures
    about 0."""
    if len(images) < 2:
        raise BrushworkError("spectrum correlation needs at least two images")
    if len({tuple(x.shape[-2:]) for x in images}) != 1:
        raise BrushworkError("spectrum correlation needs images of one size")
    sp = [highpass_spectrum(x, sigma) for x in images]
    pairs = [_pearson(sp[i], sp[j]) for i in range(len(sp)) for j in range(i + 1, len(sp))]
    return sum(pairs) / len(pairs)


def texture_correlation(outputs: list[torch.Tensor], photos: list[torch.Tensor],
                        sigma: float = 2.0) -> dict:
    """A fixed texture test: the high-pass correlation between the outputs made from different
    photos (for one artist) and between the photos themselves (``outputs``, ``photos``: a
    generator that adds the same texture at the same place to every photo has ``outputs`` well
    above ``photos``), and the same for :func:`spectrum_correlation` (``spectrum_outputs``,
    ``spectrum_photos``: the same texture anywhere)."""
    return {"outputs": highpass_correlation(outputs, sigma),
            "photos": highpass_correlation(photos, sigma),
            "spectrum_outputs": spectrum_correlation(outputs, sigma),
            "spectrum_photos": spectrum_correlation(photos, sigma)}

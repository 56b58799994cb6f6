"""Quality metrics shared by every method and benchmark.

All distances are computed on VGG19 features (fp32, max pooling) of images in [0, 1].

- ``content_distance(out, content)``: relative feature error at relu4_2,
  |F(out) - F(content)|^2 / |F(content)|^2 (0 = the content's features exactly).
- ``style_distances(out, style, content)``: Gram, mean/std and Frechet (Gaussian fit) distances
  to the style over relu1_1..relu5_1, each as a ratio against the unstylised content's distance
  (1.0 = no stylisation, lower = closer to the style). Per-layer ratios are averaged.
- ``ssim(out, content)``: structural similarity against the content (1 = identical).

The style image is compared at the output's pixel count (aspect kept), as the losses use it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core import stats as S
from ..core.image import resize, to_tensor
from ..core.vgg import VGG19

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CONTENT_LAYER = "relu4_2"


def metric_encoder(device="cpu") -> VGG19:
    """The encoder metrics use: fp32, max pooling, up to relu5_1."""
    return VGG19("max", device=device, last_layer="relu5_1")


def _same_pixels(style, hw):
    sh, sw = style.shape[-2:]
    f = math.sqrt(hw[0] * hw[1] / (sh * sw))
    return resize(style, (max(16, round(sh * f)), max(16, round(sw * f))))


def _frechet(fa, fb):
    ma, ca = S.mean_cov(fa.double())
    mb, cb = S.mean_cov(fb.double())
    ra = S.sqrtm_psd(ca[0])
    ev = S.trace_sqrtm(ra @ cb[0] @ ra)
    return float(((ma - mb) ** 2).sum() + ca[0].trace() + cb[0].trace() - 2 * ev)


def _style_terms(fa, fb):
    ga, gb = S.gram(fa), S.gram(fb)
    (ma, sa), (mb, sb) = S.mean_std(fa, weighted=True), S.mean_std(fb, weighted=True)
    return {"gram": float(((ga - gb) ** 2).sum()),
            "meanstd": float(((ma - mb) ** 2).sum() + ((sa - sb) ** 2).sum()),
            "frechet": _frechet(fa, fb)}


@torch.no_grad()
def content_distance(out, content, encoder: VGG19 | None = None) -> float:
    enc = encoder or metric_encoder()
    out, content = to_tensor(out), to_tensor(content)
    content = resize(content, tuple(out.shape[-2:]))
    fo = enc(out.to(enc.device), [CONTENT_LAYER])[CONTENT_LAYER]
    fc = enc(content.to(enc.device), [CONTENT_LAYER])[CONTENT_LAYER]
    return float(((fo - fc) ** 2).sum() / (fc ** 2).sum().clamp_min(1e-12))


@torch.no_grad()
def style_distances(out, style, content, encoder: VGG19 | None = None) -> dict[str, float]:
    """{'gram', 'meanstd', 'frechet'}: distance ratios to the style (1.0 = unstylised)."""
    enc = encoder or metric_encoder()
    out, style, content = to_tensor(out), to_tensor(style), to_tensor(content)
    hw = tuple(out.shape[-2:])
    content = resize(content, hw)
    style = _same_pixels(style, hw)
    fo = enc(out.to(enc.device), STYLE_LAYERS)
    fs = enc(style.to(enc.device), STYLE_LAYERS)
    fc = enc(content.to(enc.device), STYLE_LAYERS)
    ratios = {"gram": [], "meanstd": [], "frechet": []}
    for layer in STYLE_LAYERS:
        do, dc = _style_terms(fo[layer], fs[layer]), _style_terms(fc[layer], fs[layer])
        for k in ratios:
            ratios[k].append(do[k] / max(dc[k], 1e-12))
    return {k: float(np.mean(v)) for k, v in ratios.items()}


def ssim(out, content) -> float:
    from skimage.metrics import structural_similarity
    out, content = to_tensor(out), to_tensor(content)
    content = resize(content, tuple(out.shape[-2:]))
    a = out[0].permute(1, 2, 0).numpy().astype(np.float64)
    b = content[0].permute(1, 2, 0).numpy().astype(np.float64)
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


def evaluate(out, content, style, encoder: VGG19 | None = None) -> dict[str, float]:
    """All metrics in one dict: content, gram, meanstd, frechet, ssim."""
    enc = encoder or metric_encoder()
    d = {"content": content_distance(out, content, enc)}
    d.update(style_distances(out, style, content, enc))
    d["ssim"] = ssim(out, content)
    return d

"""Corresponding regions of a content and a style image: colour-coded semantic maps
(Champandard 2016; Chen & Hsu 2016) and regions found automatically by clustering VGG19
features of both images jointly; plus the k-means they use.

A region is a pair of masks: the content-side mask (1, 1, H, W) restricts the output's
statistics, the style-side mask (1, 1, Hs, Ws) restricts the style's target statistics.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ControlError, ImageError
from .image import to_tensor

KMEANS_ITERS = 10
KMEANS_SEED = 0
MIN_SHARE = 0.005
"""A map colour on one side only is ignored when it covers less than this share of its map
(anti-aliased edges); otherwise it is refused."""
MAX_ASPECT_DIFF = 0.01
AUTO_LAYER = "relu4_1"
AUTO_SIDE = 256
BORDER = 32
"""Auto-regions cluster the features of the content at most this long side (the style at the
same scale relative to the content)."""

# colours of :func:`region_maps`, one per region
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
           (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
           (170, 255, 195)]


# ----------------------------------------------------------------------------------- k-means
def _sqdist(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (N, K) of rows of ``x`` (N, D) to ``centres`` (K, D)."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ centres.T
            + (centres * centres).sum(1)[None]).clamp_min(0)


def kmeans(x: torch.Tensor, k: int, iters: int = KMEANS_ITERS,
           seed: int = KMEANS_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of the rows of ``x`` (N, D) from a k-means++ start, in float64.

    Returns (centres (K', D), labels (N,)) with K' <= k: clusters left empty (duplicate
    points) are dropped and the labels renumbered 0..K'-1. Deterministic for a given seed, and
    the same on every device (the start's random draws are made on the CPU)."""
    x = x.double()
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(n, (1,), generator=g).to(x.device)]
    d2 = _sqdist(x, centres)[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        if total > 0:
            i = torch.multinomial((d2 / total).cpu(), 1, generator=g).to(x.device)
        else:
            i = torch.randint(n, (1,), generator=g).to(x.device)
        centres = torch.cat([centres, x[i]])
        d2 = torch.minimum(d2, _sqdist(x, x[i])[:, 0])
    labels = _sqdist(x, centres).argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        new_labels = _sqdist(x, new).argmin(1)
        converged = torch.equal(new_labels, labels)
        centres, labels = new, new_labels
        if converged:
            break
    used = torch.bincount(labels, minlength=k) > 0
    remap = torch.cumsum(used, 0) - 1
    return centres[used], remap[labels]


# ------------------------------------------------------------------------------ semantic maps
def _name(value, what):
    return str(value) if isinstance(value, (str, os.PathLike)) else what


def load_map(value, size: tuple[int, int], what: str) -> torch.Tensor:
    """A colour-coded region map as (1, 3, H, W) uint8 RGB codes at ``size`` (nearest).
    Refuses (ImageError) an unreadable image and one whose aspect ratio differs from
    ``size``'s by more than 1 %."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ControlError(f"{what}: expected one map image, got {len(value)}")
        value = value[0]
    t = to_tensor(value)
    if t.shape[0] != 1:
        raise ImageError(f"{_name(value, what)}: expected one map image, got a batch of "
                         f"{t.shape[0]}")
    mh, mw = t.shape[-2:]
    h, w = size
    if abs((mw / mh) / (w / h) - 1) > MAX_ASPECT_DIFF:
        raise ImageError(f"{_name(value, what)}: {what} is {mw}x{mh} but the image it maps is "
                         f"{w}x{h} (aspect ratios differ by more than 1 %)")
    codes = (t.clamp(0, 1) * 255).round()
    if (mh, mw) != (h, w):
        codes = F.interpolate(codes, size=(h, w), mode="nearest")
    return codes.to(torch.uint8)


def _colour_ids(codes: torch.Tensor) -> torch.Tensor:
    c = codes[0].long()
    return (c[0] << 16) | (c[1] << 8) | c[2]  # (H, W)


def colour_name(i: int) -> str:
    return f"#{i:06x}"


def map_regions(content_map: torch.Tensor, style_map: torch.Tensor,
                min_share: float = MIN_SHARE) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(colour, content mask, style mask) for each colour of both maps (from
    :func:`load_map`). A colour on one side only is ignored when it covers less than
    ``min_share`` of its map, otherwise refused (ControlError naming it)."""
    cid, sid = _colour_ids(content_map), _colour_ids(style_map)
    cu, cc = torch.unique(cid, return_counts=True)
    su, sc = torch.unique(sid, return_counts=True)
    cshare = dict(zip(cu.tolist(), (cc.double() / cid.numel()).tolist()))
    sshare = dict(zip(su.tolist(), (sc.double() / sid.numel()).tolist()))
    for side, mine, other in (("content", cshare, sshare), ("style", sshare, cshare)):
        for col, share in sorted(mine.items(), key=lambda kv: -kv[1]):
            if col not in other and share >= min_share:
                there = "style" if side == "content" else "content"
                raise ControlError(f"{side} map colour {colour_name(col)} ({100 * share:.1f} % "
                                   f"of it) does not appear in the {there} map")
    shared = sorted(set(cshare) & set(sshare), key=lambda col: -cshare[col])
    if not shared:
        raise ControlError("the content and style maps share no colour")
    return [(colour_name(col), (cid == col)[None, None].float(), (sid == col)[None, None].float())
            for col in shared]


# ------------------------------------------------------------------------------- auto-regions
_ENCODERS: dict = {}


def _encoder(device):
    from .vgg import VGG19  # loaded on first use
    key = str(device)
    if key not in _ENCODERS:
        _ENCODERS[key] = VGG19(device=device, last_layer=AUTO_LAYER)
    return _ENCODERS[key]


def _work_size(hw, long_side):
    h, w = hw
    f = min(1.0, long_side / max(h, w))
    return max(16, round(h * f)), max(16, round(w * f))


def _positions(feat: torch.Tensor) -> torch.Tensor:
    """(HW, C) feature vectors of one image, the image's mean vector removed (so the clusters
    follow the variation within each image, not the gap between the two images), unit norm."""
    f = feat[0].flatten(1).double()
    f = f - f.mean(1, keepdim=True)
    return (f / f.norm(dim=0, keepdim=True).clamp_min(1e-12)).T


def _features(enc, x: torch.Tensor) -> torch.Tensor:
    """relu4_1 features of ``x`` computed on a reflected margin (cropped away), so the
    encoder's zero padding does not make the image border a cluster of its own."""
    b = min(BORDER, x.shape[-2] - 1, x.shape[-1] - 1) // 8 * 8
    f = enc(F.pad(x, (b, b, b, b), mode="reflect") if b else x, [AUTO_LAYER])[AUTO_LAYER]
    h, w = x.shape[-2] // 8, x.shape[-1] // 8
    return f[..., b // 8: b // 8 + h, b // 8: b // 8 + w].float()


@torch.no_grad()
def auto_regions(content, style, k: int, seed: int = KMEANS_SEED, *, encoder=None,
                 style_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Corresponding regions of ``content`` and ``style`` found by one k-means (k-means++
    start, seeded) of the relu4_1 VGG19 features of both images: cluster j on the content
    side corresponds to cluster j on the style side. Clusters present on one side only are
    dropped (label -1). Returns (content labels, style labels), long tensors at the relu4_1
    resolution, labels renumbered 0..K'-1 (K' >= 1) in order of content area."""
    if int(k) < 2:
        raise ControlError(f"auto_regions: needs at least 2 regions, got {k}")
    enc = _encoder(torch.device("cpu")) if encoder is None else encoder
    dev = enc.device
    c = to_tensor(content).to(dev)
    s = to_tensor(style).to(dev)
    chw = _work_size(c.shape[-2:], AUTO_SIDE)
    f = (chw[0] * chw[1] * style_scale ** 2 / (s.shape[-2] * s.shape[-1])) ** 0.5
    shw = (max(16, round(s.shape[-2] * f)), max(16, round(s.shape[-1] * f)))
    cf = _features(enc, F.interpolate(c, size=chw, mode="bilinear", align_corners=False))
    sf = _features(enc, F.interpolate(s, size=shw, mode="bilinear", align_corners=False))
    x = torch.cat([_positions(cf), _positions(sf)])
    if int(k) > x.shape[0]:
        raise ControlError(f"auto_regions {k} is more than the {x.shape[0]} feature positions "
                           f"of content and style (use fewer regions or larger images)")
    _, labels = kmeans(x, int(k), seed=int(seed))
    n = cf.shape[-2] * cf.shape[-1]
    cl, sl = labels[:n], labels[n:]
    kk = int(labels.max()) + 1
    ccount = torch.bincount(cl, minlength=kk)
    scount = torch.bincount(sl, minlength=kk)
    both = [j for j in sorted(range(kk), key=lambda j: -int(ccount[j]))
            if ccount[j] > 0 and scount[j] > 0]
    if not both:
        raise ControlError("auto_regions: content and style share no region; use fewer regions")
    remap = torch.full((kk,), -1, dtype=torch.long, device=labels.device)
    remap[both] = torch.arange(len(both), device=labels.device)
    return (remap[cl].reshape(cf.shape[-2:]).cpu(), remap[sl].reshape(sf.shape[-2:]).cpu())


def _upsample(labels: torch.Tensor, hw) -> torch.Tensor:
    return F.interpolate(labels[None, None].double(), size=tuple(hw), mode="nearest")[0, 0].long()


def label_regions(content_labels: torch.Tensor, style_labels: torch.Tensor, content_hw,
                  style_hw) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, content mask, style mask) per label of :func:`auto_regions`, the labels brought
    to the image sizes (nearest)."""
    cl, sl = _upsample(content_labels, content_hw), _upsample(style_labels, style_hw)
    out = []
    for j in range(int(max(cl.max(), sl.max())) + 1):
        cm, sm = (cl == j), (sl == j)
        if cm.any() and sm.any():
            out.append((f"region {j}", cm[None, None].float(), sm[None, None].float()))
    return out


MIN_REGION_SIDE = 32
"""Shortest side of a region's style image (4 relu4_1 positions: room for 3x3 patches)."""


def region_style(style: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A style image made of one region's pixels: ``style`` (1, 3, H, W) cropped to the
    bounding box of ``mask`` (1, 1, H, W, > 0.5 inside) with every pixel outside the region
    replaced by its nearest pixel inside it, so a method that reads a whole style image sees
    only that region's colours and textures. The feed-forward methods' ``auto_regions``."""
    from scipy.ndimage import distance_transform_edt

    inside = (mask[0, 0] > 0.5).cpu().numpy()
    if not inside.any():
        raise ControlError("auto_regions: a style region holds no pixel")
    ys, xs = np.nonzero(inside)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = inside[y0:y1, x0:x1]
    _, (iy, ix) = distance_transform_edt(~box, return_indices=True)
    crop = style[..., y0:y1, x0:x1]
    idx = torch.from_numpy((iy * box.shape[1] + ix).reshape(-1)).to(style.device)
    filled = crop.reshape(1, 3, -1).index_select(2, idx).reshape(crop.shape)
    if min(filled.shape[-2:]) < MIN_REGION_SIDE:  # small regions: brought up, aspect kept
        f = MIN_REGION_SIDE / min(filled.shape[-2:])
        filled = F.interpolate(filled, size=(max(MIN_REGION_SIDE, round(filled.shape[-2] * f)),
                                             max(MIN_REGION_SIDE, round(filled.shape[-1] * f))),
                               mode="nearest")
    return filled.contiguous()


def region_maps(content_labels: torch.Tensor, style_labels: torch.Tensor,
                content_size: tuple[int, int] | None = None,
                style_size: tuple[int, int] | None = None) -> tuple[Image.Image, Image.Image]:
    """Colour maps (PIL RGB) of region labels, e.g. from :func:`auto_regions`: the same colour
    marks corresponding regions, black marks none; optionally brought to (H, W) sizes
    (nearest). They can be given back as content and style maps."""
    pal = np.array([(0, 0, 0)] + [PALETTE[i % len(PALETTE)] for i in range(256)], np.uint8)

    def draw(labels, size):
        lab = labels if size is None else _upsample(labels, size)
        return Image.fromarray(pal[(lab.clamp(-1, 255) + 1).numpy()])

    return draw(content_labels, content_size), draw(style_labels, style_size)

"""Deep painterly harmonisation (Luan, Paris, Shechtman & Bala 2018).

An object pasted into a painting is repainted so that it looks painted like the rest. Inputs
are the painting, the *composite* (the painting with the object pasted in, same size) and a
mask that is 1 where the object is. Two optimisation passes, each from the previous image:

1. rough, at a reduced size: inside the dilated mask the output's relu3_1, relu4_1 and relu5_1
   features are pushed (masked Gram loss) to the Gram matrices of the painting's features
   *mapped* to each masked position: each position takes the painting feature whose 3x3 patch
   is most similar by normalised cross-correlation (the matching of style swap), layer by
   layer; plus a content loss at relu4_1 on the composite;
2. refinement, at the painting's size (long side capped at :data:`MAX_REFINE_SIDE`): one
   mapping at relu4_1, computed on the rough result, made spatially consistent
   (:func:`consistent_mapping`) and carried to the other layers; the Gram loss over it, a
   histogram loss (Risser et al. 2017) at relu1_1 and relu4_1, content at relu4_1 and total
   variation.

The painting outside the dilated mask is left exactly as it was: the result is the painting
there and the optimised image inside, with a soft blend over the outer few pixels of the
dilation band only (:func:`blend_mask`).

Not a content + style stylizer, so not in ``METHODS``: call :func:`harmonize`.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..core import losses as L
from ..core import stats as S
from ..core.blocks import pad_for_patches, patch_kernels
from ..core.device import pick_device
from ..core.image import long_side_size, resize
from ..core.protocol import Progress, emit
from ..core.validate import memory_guard
from ..core.vgg import LAYER_STRIDE, VGG19
from ..errors import ControlError, ImageError

NAME = "harmonize"
STYLE_LAYERS = ("relu3_1", "relu4_1", "relu5_1")
HIST_LAYERS = ("relu1_1", "relu4_1")
CONTENT_LAYER = "relu4_1"
REFERENCE_LAYER = "relu4_1"
MAX_REFINE_SIDE = 1024
"""The refinement pass's largest long side; a larger painting is refined at this size and the
result upsampled (inside the mask only)."""
MAX_STYLE_PATCHES = 16384
"""Painting patches a mapping searches at most (a seeded subset beyond that)."""
FEATHER = 4
"""Pixels of the dilation band's outer edge over which the result fades into the painting."""
DEFAULTS = dict(steps=30, size=384, dilate=16, style_weight=5.0, hist_weight=1.0,
                content_weight=3.0, tv_weight=10.0)


# ------------------------------------------------------------------------------- masks
def dilate_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary (N, 1, H, W) mask grown by ``radius`` pixels (a square structuring element)."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def blend_mask(mask: torch.Tensor, dilate: int, feather: int = FEATHER) -> torch.Tensor:
    """The compositing weight of the result: 1 on the mask grown by ``dilate - feather``
    pixels, falling linearly to 0 across the band's outer ``feather`` pixels, and exactly 0
    outside the mask grown by ``dilate``."""
    f = max(0, min(feather, dilate))
    if f == 0:
        return dilate_mask(mask, dilate)
    return torch.stack([dilate_mask(mask, dilate - f + j) for j in range(f)]).mean(0)


# ----------------------------------------------------------------------------- mapping
def nearest_patches(content_feat: torch.Tensor, style_feat: torch.Tensor,
                    positions: torch.Tensor | None = None, *, patch: int = 3,
                    candidates: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """For each content position, the style position whose ``patch`` x ``patch`` patch is most
    similar: the normalised-cross-correlation matching of :func:`core.blocks.style_swap`
    (style kernels normalised, argmax of their dot products with the content patch; both maps
    reflect-padded so every position has a patch). One image each.

    ``positions``: flat content indices to match (default all); ``candidates``: flat style
    indices allowed (default all). Returns flat style indices, one per position (long)."""
    _, normed = patch_kernels(style_feat, patch)
    if candidates is not None:
        normed = normed[candidates]
    cols = F.unfold(pad_for_patches(content_feat, patch // 2), patch)[0]  # (C*k*k, H*W)
    if positions is not None:
        cols = cols[:, positions]
    best = torch.cat([(normed @ part).argmax(0) for part in cols.split(chunk, dim=1)])
    return best if candidates is None else candidates[best]


def _grid(flat: torch.Tensor, w: int) -> torch.Tensor:
    return torch.stack([flat // w, flat % w], -1)


def consistent_mapping(mapping: torch.Tensor, valid: torch.Tensor | None = None,
                       style_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The paper's spatial consistency, simple version. ``mapping`` (H, W, 2) holds for each
    position the (row, col) of its match; a neighbour n's match shifted, m(n) + (p - n), is a
    candidate for p. A match is kept when at least half of p's valid neighbours' candidates
    equal it; otherwise p takes the candidate most neighbours agree on. ``valid`` (H, W)
    marks the positions that have a mapping (neighbours outside it do not vote);
    ``style_hw`` bounds the candidates (default: the mapping's own size)."""
    h, w = mapping.shape[:2]
    sh, sw = style_hw or (h, w)
    valid = torch.ones(h, w, dtype=torch.bool, device=mapping.device) if valid is None else valid
    big = torch.iinfo(torch.long).min // 4
    m = F.pad(mapping.permute(2, 0, 1), (1, 1, 1, 1), value=big)
    v = F.pad(valid[None].float(), (1, 1, 1, 1))[0] > 0
    cands, oks = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            nb = m[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w].permute(1, 2, 0)
            cand = nb - torch.tensor([dy, dx], device=mapping.device)
            ok = v[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] & (cand[..., 0] >= 0) \
                & (cand[..., 0] < sh) & (cand[..., 1] >= 0) & (cand[..., 1] < sw)
            cands.append(cand)
            oks.append(ok)
    cand = torch.stack(cands)            # (8, H, W, 2)
    ok = torch.stack(oks)                # (8, H, W)
    agree_self = ((cand == mapping[None]).all(-1) & ok).sum(0)
    keep = (2 * agree_self >= ok.sum(0)) | ~valid
    same = (cand[:, None] == cand[None]).all(-1) & ok[:, None] & ok[None]   # (8, 8, H, W)
    support = same.sum(1).masked_fill(~ok, -1)                             # (8, H, W)
    best = support.argmax(0)                                               # (H, W)
    chosen = cand.gather(0, best[None, ..., None].expand(1, h, w, 2))[0]
    return torch.where(keep[..., None], mapping, chosen)


def carry_mapping(ref_map: torch.Tensor, ref_layer: str, layer: str, hw: tuple[int, int],
                  style_hw: tuple[int, int]) -> torch.Tensor:
    """The reference layer's mapping (H, W, 2) at another layer of ``hw`` positions: each
    position keeps the shift of the reference position it lies in, rescaled by the strides."""
    r = LAYER_STRIDE[ref_layer] / LAYER_STRIDE[layer]
    h, w = hw
    dev = ref_map.device
    yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev),
                            indexing="ij")
    qy = (yy / r).long().clamp(0, ref_map.shape[0] - 1)
    qx = (xx / r).long().clamp(0, ref_map.shape[1] - 1)
    shift = ref_map[qy, qx] - torch.stack([qy, qx], -1)
    out = torch.stack([yy, xx], -1) + (shift.float() * r).round().long()
    out[..., 0].clamp_(0, style_hw[0] - 1)
    out[..., 1].clamp_(0, style_hw[1] - 1)
    return out


def _candidates(style_feat, seed):
    n = style_feat.shape[-2] * style_feat.shape[-1]
    if n <= MAX_STYLE_PATCHES:
        return None
    g = torch.Generator().manual_seed(int(seed or 0))
    return torch.randperm(n, generator=g)[:MAX_STYLE_PATCHES].to(style_feat.device)


def map_features(content_feat, style_feat, feat_mask, seed=0):
    """Nearest-neighbour mapping (H, W, 2) of the positions where ``feat_mask`` (1, 1, H, W)
    is > 0 (the others map to themselves) and the boolean (H, W) of those positions."""
    h, w = content_feat.shape[-2:]
    valid = feat_mask[0, 0] > 0
    ident = torch.arange(h * w, device=content_feat.device)
    flat = ident.clone()
    pos = ident[valid.flatten()]
    if pos.numel():
        flat[pos] = nearest_patches(content_feat, style_feat, pos,
                                    candidates=_candidates(style_feat, seed))
    return _grid(flat, style_feat.shape[-1]).reshape(h, w, 2), valid


def gather(style_feat: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """The style features at ``mapping`` (H, W, 2): a (1, C, H, W) map."""
    sw = style_feat.shape[-1]
    idx = (mapping[..., 0] * sw + mapping[..., 1]).flatten()
    c = style_feat.shape[1]
    return style_feat.reshape(1, c, -1)[:, :, idx].reshape(1, c, *mapping.shape[:2])


# ----------------------------------------------------------------------------- passes
def _rel(value, target):
    return value / target.pow(2).mean().clamp_min(1e-8)


def _optimise(x0, base, region, terms_fn, steps, pass_no, size, clock, callback, done, total):
    """L-BFGS on the pixels inside ``region`` (1, 1, H, W), the rest held at ``base``."""
    y = x0.detach().contiguous().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([y], lr=1.0, max_iter=1, history_size=50)
    good = y.detach().clone()
    emit(callback, Progress(NAME, "scale", done, total, pass_no, 2, size,
                            elapsed=time.perf_counter() - clock))
    log = {}

    def image():
        return base * (1 - region) + y * region

    def closure():
        opt.zero_grad()
        loss, parts = L.weighted_sum(terms_fn(image()))
        loss.backward()
        log.clear()
        log.update(parts)
        return loss

    for step in range(steps):
        opt.step(closure)
        if not all(map(lambda v: v == v and abs(v) != float("inf"), log.values())):
            with torch.no_grad():
                y.copy_(good)
            break
        with torch.no_grad():
            y.clamp_(0, 1)
            good.copy_(y)
        emit(callback, Progress(NAME, "step", done + step + 1, total, pass_no, 2, size,
                                dict(log), time.perf_counter() - clock))
    return image().detach().clamp(0, 1)


def _style_terms(enc, target_grams, masks, content_target, hist, w):
    def terms(x):
        layers = set(STYLE_LAYERS) | {CONTENT_LAYER} | (set(hist) if hist else set())
        f = enc(x, sorted(layers, key=lambda n: LAYER_STRIDE[n]))
        style = sum(_rel(L.gram_loss(f[n], target_grams[n], masks[n]), target_grams[n])
                    for n in STYLE_LAYERS) / len(STYLE_LAYERS)
        out = {"style": (w["style_weight"], style),
               "content": (w["content_weight"], _rel(L.content_loss(
                   f[CONTENT_LAYER], content_target, masks[CONTENT_LAYER]), content_target))}
        if hist:
            h = sum(_rel(L.histogram_loss(f[n], srt, masks[n]), srt) for n, srt in hist.items())
            out["hist"] = (w["hist_weight"], h / len(hist))
        out["tv"] = (w["tv_weight"], L.tv_loss(x))
        return out
    return terms


def _feature_masks(region, feats):
    return {n: S.resize_mask(region, f) for n, f in feats.items()}


def _masked_sorted(feat, mask):
    """(C, K) sorted values of ``feat`` at the positions where ``mask`` > 0.5."""
    sel = (mask[0, 0] > 0.5).flatten()
    if not sel.any():
        sel = (mask[0, 0] > 0).flatten()
    return S.sort_rows(feat.reshape(feat.shape[1], -1)[:, sel])


def rough_pass(enc, painting, composite, region, w, steps, seed, clock, callback, total):
    layers = sorted(set(STYLE_LAYERS) | {CONTENT_LAYER}, key=lambda n: LAYER_STRIDE[n])
    with torch.no_grad():
        pf, cf = enc(painting, layers), enc(composite, layers)
        masks = _feature_masks(region, cf)
        grams = {}
        for n in STYLE_LAYERS:
            mapping, _ = map_features(cf[n], pf[n], masks[n], seed)
            grams[n] = S.gram(gather(pf[n], mapping), masks[n])
    terms = _style_terms(enc, grams, masks, cf[CONTENT_LAYER], None, w)
    return _optimise(composite, composite, region, terms, steps, 0, tuple(composite.shape[-2:]),
                     clock, callback, 0, total)


def refine_pass(enc, painting, composite, start, region, w, steps, seed, clock, callback, total):
    layers = sorted(set(STYLE_LAYERS) | set(HIST_LAYERS) | {CONTENT_LAYER},
                    key=lambda n: LAYER_STRIDE[n])
    with torch.no_grad():
        pf, sf = enc(painting, layers), enc(start, layers)
        cf = enc(composite, [CONTENT_LAYER])
        masks = _feature_masks(region, sf)
        ref = REFERENCE_LAYER
        mapping, valid = map_features(sf[ref], pf[ref], masks[ref], seed)
        mapping = consistent_mapping(mapping, valid, tuple(pf[ref].shape[-2:]))
        mapped = {n: gather(pf[n], carry_mapping(mapping, ref, n, tuple(sf[n].shape[-2:]),
                                                  tuple(pf[n].shape[-2:])))
                  for n in set(STYLE_LAYERS) | set(HIST_LAYERS)}
        grams = {n: S.gram(mapped[n], masks[n]) for n in STYLE_LAYERS}
        hist = {n: _masked_sorted(mapped[n], masks[n]) for n in HIST_LAYERS}
    terms = _style_terms(enc, grams, masks, cf[CONTENT_LAYER], hist, w)
    return _optimise(start, composite, region, terms, steps, 1, tuple(composite.shape[-2:]),
                     clock, callback, steps, total)


# ------------------------------------------------------------------------------ entry
def check_inputs(painting, composite, mask) -> torch.Tensor:
    """Refuse mismatched sizes and empty or full masks; returns the binary mask (1, 1, H, W)."""
    for t, what in ((painting, "painting"), (composite, "paste")):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[:2] != (1, 3):
            raise ImageError(f"{what} must be a (1, 3, H, W) image tensor")
    h, w = painting.shape[-2:]
    ch, cw = composite.shape[-2:]
    if (ch, cw) != (h, w):
        raise ImageError(f"the paste is {cw}x{ch} but the painting is {w}x{h}; it must be the "
                         f"painting with the object pasted in, at the painting's size")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[:2] != (1, 1):
        raise ImageError("mask must be a (1, 1, H, W) tensor")
    if tuple(mask.shape[-2:]) != (h, w):
        raise ImageError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the painting is "
                         f"{w}x{h}")
    binary = (mask > 0.5).float()
    if binary.sum() == 0:
        raise ImageError("the mask selects nothing (it is all black); paint the object white")
    if binary.min() == 1:
        raise ImageError("the mask selects the whole image; leave some of the painting outside")
    return binary


def harmonize(painting: torch.Tensor, composite: torch.Tensor, mask: torch.Tensor, *,
              steps: int = DEFAULTS["steps"], size: int = DEFAULTS["size"],
              dilate: int = DEFAULTS["dilate"], style_weight: float = DEFAULTS["style_weight"],
              hist_weight: float = DEFAULTS["hist_weight"],
              content_weight: float = DEFAULTS["content_weight"],
              tv_weight: float = DEFAULTS["tv_weight"], seed: int | None = 0,
              device="cpu", callback=None, encoder: VGG19 | None = None) -> torch.Tensor:
    """Repaint the object pasted into ``painting``: ``composite`` is the painting with the
    object pasted in (same size), ``mask`` (1, 1, H, W) is > 0.5 where the object is. ``steps``
    per pass; ``size`` the rough pass's long side; ``dilate`` the pixels the mask grows by
    (the only region that changes). Returns (1, 3, H, W) in [0, 1] on the CPU."""
    binary = check_inputs(painting, composite, mask)
    for v, what in ((steps, "steps"), (size, "size"), (dilate, "dilate")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ControlError(f"{what} must be a whole number >= 0, got {v!r}")
    if size < 16:
        raise ControlError(f"size must be at least 16 pixels, got {size}")
    weights = dict(style_weight=style_weight, hist_weight=hist_weight,
                   content_weight=content_weight, tv_weight=tv_weight)
    for k, v in weights.items():
        if not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
            raise ControlError(f"{k} must be a finite number >= 0, got {v!r}")
    dev = pick_device(device)
    h, w = painting.shape[-2:]
    region_full = dilate_mask(binary, dilate)
    blend = blend_mask(binary, dilate)
    painting_cpu = painting.float().cpu().contiguous()
    clock = time.perf_counter()
    total = 2 * steps
    describe = lambda: f"harmonising {w}x{h} pixels"  # noqa: E731
    with memory_guard(describe), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed or 0))
        enc = encoder or VGG19(device=dev, last_layer="relu5_1")
        p, c = painting_cpu.to(dev), composite.float().to(dev).contiguous()

        def at(hw):
            if hw == (h, w):
                return p, c, region_full.to(dev)
            return resize(p, hw), resize(c, hw), (F.interpolate(
                region_full.to(dev), size=hw, mode="bilinear", align_corners=False) > 0).float()

        small = long_side_size((h, w), min(size, max(h, w)))
        fine = long_side_size((h, w), min(MAX_REFINE_SIDE, max(h, w)))
        ps, cs, rs = at(small)
        rough = rough_pass(enc, ps, cs, rs, weights, steps, seed, clock, callback, total)
        pf, cf, rf = at(fine)
        start = cf * (1 - rf) + resize(rough, fine) * rf
        out = refine_pass(enc, pf, cf, start, rf, weights, steps, seed, clock, callback, total)
        out = out.cpu()
        if fine != (h, w):
            out = resize(out, (h, w)).clamp(0, 1)
    result = painting_cpu * (1 - blend) + out * blend
    emit(callback, Progress(NAME, "done", total, total, 1, 2, (h, w),
                            elapsed=time.perf_counter() - clock))
    return result

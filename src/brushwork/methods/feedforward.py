"""The arbitrary-style feed-forward methods' shared skeleton (:class:`FeedForward`) and helpers:
weight files, encoders, control handling (style scale, colour, masks, blending), tiling.

adain, wct, linear, sanet and styleswap differ only in their feature transform (and in which
layers and decoders they use); :meth:`FeedForward.stylize` does everything else.

Large images (``tile``/``max_memory``, or an image whose whole-map run would not fit the memory
budget) go tile by tile: per pass, the transform runs once on a thumbnail of the image (long side
:data:`~brushwork.core.tiling.THUMB_SIDE`) and the per-position map it applied there is frozen
(:func:`~brushwork.core.tiling.fit_frozen_map`: affine for AdaIN, WCT and LST, monotone per
channel where that fits); every full-resolution tile is encoded, mapped with it, decoded and
blended with feathered weights into the output. A transform that is no such map (sanet's
attention, styleswap's patches, mst's labelling) runs on each tile's own features instead.
Only the input, the output (and, for several passes, the previous pass's image) are held at
full resolution.

Weight files are safetensors with ``<part>.<param>`` tensors and string metadata: ``method``,
``level`` / ``levels``, ``width``, ``encoder`` (``vgg`` or ``small``) and, for ``small``, the
student encoder's tensors under ``encoder.*``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core import tiling
from ..core.blocks import SmallEncoder
from ..core.color import combine_luminance, luminance, preserve_color_inputs
from ..core.device import NHWC, autocast, has_bf16
from ..core.weights import load_prefixed, load_weights, resolve_weights
from ..errors import BrushworkError, ControlError
from ..core.image import load_masks, resize, to_tensor
from ..core import regions as R
from ..core.protocol import AUTO_REGIONS, Capabilities, Clock, Progress, begin, emit
from ..core.vgg import LAYER_STRIDE, VGG19

# Reflect-padded margin around the content (cropped after decoding), in pixels.
BORDER = 16
# Cap on the style's working size (pixels) so huge contents do not make huge style passes.
MAX_STYLE_PIXELS = 1024 * 1024





def open_weights(method, weights, default_file: str, train_hint: str, device, bf16):
    """The common start of a method's constructor: (torch device, bf16 flag, tensors, metadata,
    path). ``bf16=None`` means: where the device runs bf16 well; ``method`` as for
    :func:`load_method_weights`."""
    device = torch.device(device)
    bf16 = has_bf16(device) if bf16 is None else bool(bf16)
    state, meta, path = load_method_weights(method, weights, default_file, train_hint)
    return device, bf16, state, meta, path


def load_frozen(module, prefix: str, state: dict, path, device):
    """``module`` with the ``prefix.*`` tensors of ``state`` (read from ``path``) loaded, moved
    to ``device``, in eval mode, gradients off."""
    load_prefixed(module, prefix, state, str(path))
    return module.to(device=device, memory_format=NHWC).eval().requires_grad_(False)


def load_method_weights(method, weights, default_file: str, train_hint: str):
    """(tensors, metadata, path) of ``weights`` or the shipped file; checks the file's
    ``method`` metadata is ``method`` (or one of them, if a tuple)."""
    allowed = (method,) if isinstance(method, str) else tuple(method)
    path = resolve_weights(weights, default_file, train_hint)
    state, meta = load_weights(path)
    if meta.get("method") not in allowed:
        raise BrushworkError(f"{path}: weight file is for method {meta.get('method')!r}, "
                             f"not {' or '.join(map(repr, allowed))}")
    return state, meta, Path(path)


def meta_levels(meta: dict, path) -> list[int]:
    try:
        levels = sorted({int(x) for x in str(meta.get("levels", meta.get("level", ""))).split(",")})
    except ValueError:
        levels = []
    if not levels or any(l < 1 or l > 5 for l in levels):
        raise BrushworkError(f"{path}: bad 'levels' metadata {meta.get('levels')!r}")
    return levels


def meta_float(meta: dict, key: str, default: float, path) -> float:
    try:
        return float(meta.get(key, default))
    except ValueError:
        raise BrushworkError(f"{path}: bad '{key}' metadata {meta.get(key)!r}") from None


def make_encoder(meta: dict, state: dict, device, bf16: bool, last_layer: str, path):
    """VGG19 (frozen, Caffe weights) or the distilled small encoder stored in the file."""
    kind = meta.get("encoder", "vgg")
    if kind == "vgg":
        return VGG19(device=device, autocast=bf16, last_layer=last_layer, channels_last=True)
    if kind == "small":
        level = int(meta.get("encoder_level", 4))
        enc = SmallEncoder(level, meta_float(meta, "encoder_width", 0.25, path))
        return load_frozen(enc, "encoder", state, path, device)
    raise BrushworkError(f"{path}: unknown encoder {kind!r} in metadata")


def encode(enc, x: torch.Tensor, layers, bf16: bool, native=()) -> dict[str, torch.Tensor]:
    """Features as float32 tensors, contiguous (NCHW) but for the ``native`` layers, which keep
    the convs' NHWC layout (for readers of channel statistics: no conversion copy); the convs
    run in NHWC (channels last), 2-3x faster on CPU."""
    if isinstance(enc, VGG19):
        out = enc(x, layers, fp32=False)
    else:
        with autocast(x.device, bf16):
            out = enc(x.contiguous(memory_format=NHWC), layers)
    return {k: v.float() if k in native else v.float().contiguous() for k, v in out.items()}


def decode(dec, feat: torch.Tensor, bf16: bool) -> torch.Tensor:
    with autocast(feat.device, bf16):
        out = dec(feat.contiguous(memory_format=NHWC))
    return out.float().contiguous()


def style_size(style_hw, content_hw, scale: float) -> tuple[int, int]:
    """Style working size: pixel count = scale^2 x the content's (capped), aspect kept."""
    sh, sw = style_hw
    target = min(scale * scale * content_hw[0] * content_hw[1], MAX_STYLE_PIXELS * scale * scale)
    f = math.sqrt(target / (sh * sw))
    return max(32, round(sh * f)), max(32, round(sw * f))


def prepare(content, styles, c: dict, device):
    """Tensors on ``device`` after colour preservation and style scaling.

    Returns (content used for stylisation, styles, masks or None, content_rgb or None)."""
    content = to_tensor(content).to(device)
    styles = [to_tensor(s).to(device) for s in styles]
    hw = tuple(content.shape[-2:])
    masks = load_masks(c.get("masks"), len(styles), hw, device)
    content, styles, content_rgb = preserve_color_inputs(content, styles,
                                                         c.get("preserve_color"))
    scale = c.get("style_scale", 1.0)
    styles = [resize(s, style_size(s.shape[-2:], hw, scale)) for s in styles]
    return content, styles, masks, content_rgb


def auto_region_styles(content, styles, masks, weights, c: dict, seed):
    """The ``auto_regions`` control on :func:`prepare`'s tensors: corresponding regions of the
    content and its one style (:func:`brushwork.core.regions.auto_regions`), the style split
    into one style image per region (:func:`~brushwork.core.regions.region_style`), each
    applied through the masks to its content region. Returns (styles, masks, weights);
    unchanged without the control."""
    k = c.get("auto_regions")
    if k is None:
        return styles, masks, weights
    if len(styles) != 1:
        raise ControlError(f"auto_regions takes exactly one style image, got {len(styles)}")
    if masks is not None:
        raise ControlError("auto_regions and masks cannot be combined (the regions are the masks)")
    labels = R.auto_regions(content, styles[0], k, R.KMEANS_SEED if seed is None else seed,
                            style_scale=c.get("style_scale", 1.0))
    regions = R.label_regions(*labels, content.shape[-2:], styles[0].shape[-2:])
    styles = [R.region_style(styles[0], sm.to(content.device)) for _, _, sm in regions]
    masks = [cm.to(content.device) for _, cm, _ in regions]
    return styles, masks, [1.0 / len(regions)] * len(regions)


def finish(out: torch.Tensor, content_hw, content_rgb) -> torch.Tensor:
    """Crop/resize to the content size, clamp, restore colour for 'luminance'."""
    if tuple(out.shape[-2:]) != tuple(content_hw):
        out = F.interpolate(out, size=content_hw, mode="bilinear", align_corners=False)
    out = out.clamp(0, 1)
    if content_rgb is not None:
        out = combine_luminance(luminance(out), content_rgb)
    return out.cpu()


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Reflect-pad H, W up to a multiple of ``m`` (decoders upsample by powers of 2)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def with_border(x: torch.Tensor, border: int, mult: int) -> torch.Tensor:
    """Reflect-pad by ``border`` on every side, then up to a multiple of ``mult``. The VGG
    encoder's zero padding otherwise leaves a visible frame along the image edges; the caller
    crops ``[border:border + H, border:border + W]`` from the decoded result."""
    h, w = x.shape[-2:]
    b = min(border, h - 1, w - 1)
    if b > 0:
        x = F.pad(x, (b, b, b, b), mode="reflect")
    return pad_to_multiple(x, mult)


def combine(content_feat: torch.Tensor, targets: list[torch.Tensor], weights, masks,
            strength: float) -> torch.Tensor:
    """Blend per-style target features: by ``weights`` everywhere, or by ``masks`` (region per
    style, resized to the feature map; uncovered areas keep the content), then mix with the
    content features by ``strength``."""
    if masks is None:
        t = sum(w * f for w, f in zip(weights, targets))
    else:
        hw = content_feat.shape[-2:]
        ms = [F.interpolate(m, size=hw, mode="bilinear", align_corners=False) for m in masks]
        cover = torch.stack(ms).sum(0)
        t = sum(m * f for m, f in zip(ms, targets)) / cover.clamp_min(1e-6)
        covered = cover.clamp(0, 1)
        t = covered * t + (1 - covered) * content_feat
    return strength * t + (1 - strength) * content_feat


# ------------------------------------------------------------------------------- large images
# Above TILE_PIXELS the encoder and decoder run tile by tile (with an overlap that is cropped
# away), so 4096 px images fit in memory; the transforms still see the whole feature map.
TILE = 1024
OVERLAP = 128
TILE_PIXELS = 1536 * 1536


def _spans(n: int, tile: int, overlap: int, align: int):
    """(core start, core end, read start, read end) covering 0..n; starts aligned to ``align``."""
    out, start = [], 0
    while start < n:
        end = min(n, start + tile)
        r0 = max(0, start - overlap) // align * align
        r1 = min(n, end + overlap)
        out.append((start, end, r0, r1))
        start = end
    return out


def encode_big(enc, x: torch.Tensor, layer: str, bf16: bool, stride: int) -> torch.Tensor:
    """``encode(enc, x, layer)[layer]``, tiled when ``x`` is large (H, W multiples of stride)."""
    h, w = x.shape[-2:]
    if h * w <= TILE_PIXELS:
        return encode(enc, x, layer, bf16)[layer]
    out = None
    for y0, y1, ry0, ry1 in _spans(h, TILE, OVERLAP, stride):
        for x0, x1, rx0, rx1 in _spans(w, TILE, OVERLAP, stride):
            f = encode(enc, x[..., ry0:ry1, rx0:rx1], layer, bf16)[layer]
            if out is None:
                out = f.new_zeros(1, f.shape[1], h // stride, w // stride)
            fy, fx = (y0 - ry0) // stride, (x0 - rx0) // stride
            out[..., y0 // stride:y1 // stride, x0 // stride:x1 // stride] = \
                f[..., fy:fy + (y1 - y0) // stride, fx:fx + (x1 - x0) // stride]
    return out


def encode_layers_big(enc, x: torch.Tensor, layers, bf16: bool,
                      native=()) -> dict[str, torch.Tensor]:
    """``{layer: encode_big(enc, x, layer)}``: one encoder run for all layers when ``x`` is
    small enough to encode whole (``native`` as for :func:`encode`), tiled per layer
    otherwise."""
    h, w = x.shape[-2:]
    if h * w <= TILE_PIXELS:
        return encode(enc, x, list(layers), bf16, native)
    return {layer: encode_big(enc, x, layer, bf16, LAYER_STRIDE[layer]) for layer in layers}


def decode_big(dec, feat: torch.Tensor, bf16: bool, stride: int) -> torch.Tensor:
    """``decode(dec, feat)``, tiled when the output would be large."""
    h, w = feat.shape[-2:]
    if h * w * stride * stride <= TILE_PIXELS:
        return decode(dec, feat, bf16)
    t, o = TILE // stride, max(1, OVERLAP // stride)
    out = feat.new_zeros(1, 3, h * stride, w * stride)
    for y0, y1, ry0, ry1 in _spans(h, t, o, 1):
        for x0, x1, rx0, rx1 in _spans(w, t, o, 1):
            img = decode(dec, feat[..., ry0:ry1, rx0:rx1], bf16)
            iy, ix = (y0 - ry0) * stride, (x0 - rx0) * stride
            out[..., y0 * stride:y1 * stride, x0 * stride:x1 * stride] = \
                img[..., iy:iy + (y1 - y0) * stride, ix:ix + (x1 - x0) * stride]
    return out


# --------------------------------------------------------------------------------- the skeleton
@dataclass
class Pass:
    """One encode-transform-decode pass: the encoder ``layers`` the transform reads (the first is
    the one it returns and the decoder takes) and the ``decoder``; ``native``: layers read only
    through channel statistics, left in the encoder's layout (see :func:`encode`)."""
    layers: tuple[str, ...]
    decoder: nn.Module
    native: tuple[str, ...] = ()


class FeedForward:
    """encode -> transform per style -> blend (weights or masks, strength) -> decode, once per
    :class:`Pass` (wct runs several, coarse to fine; the others one).

    A method sets ``name``, ``summary``, ``controls``, ``capabilities``, ``device``, ``bf16``,
    ``encoder``, and implements :meth:`passes` and :meth:`transform`. ``border = True`` adds a
    reflected margin (cropped after decoding) so the encoder's zero padding leaves no dark frame
    along the edges; ``control_defaults`` overrides control defaults (e.g. a weight file's own
    strength)."""

    def __init_subclass__(cls, **kwargs):
        # a method that takes masks also takes auto_regions (regions found for it, each
        # content region styled from its style region through the masks)
        super().__init_subclass__(**kwargs)
        controls = getattr(cls, "controls", {})
        if "masks" in controls and "auto_regions" not in controls:
            cls.controls = {**controls, "auto_regions": AUTO_REGIONS}
    capabilities = Capabilities(options=("weights",))
    border = False
    control_defaults: dict = {}

    def passes(self, c: dict) -> list[Pass]:
        raise NotImplementedError

    def pass_decoder(self, p: Pass, cf: dict, sfs: list, masks, weights, c: dict):
        """The network that decodes pass ``p``'s blended features: ``p.decoder``. A decoder
        that also reads per-level encoder features (avatar's skip connections) binds the
        content's ``cf`` and the styles' ``sfs`` (dicts over ``p.layers``), the masks and the
        weights here."""
        return p.decoder

    def style_features(self, style: torch.Tensor, p: Pass, c: dict) -> dict:
        """The style features pass ``p``'s transform reads: the encoder at ``p.layers``. A
        transform that needs more (aams: the style at several scales) adds them here."""
        return encode(self.encoder, style, list(p.layers), self.bf16, p.native)

    def transform(self, cf: dict, sf: dict, mask, c: dict, state: dict) -> torch.Tensor:
        """Target features at ``layers[0]`` for content features ``cf`` and style features
        ``sf`` (dicts over the pass's layers); ``mask``: this style's region or None; ``state``:
        a dict kept for this style over the passes of one call (for transforms whose finer
        passes reuse what the first one found)."""
        raise NotImplementedError

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None, tile=None, max_memory=None) -> torch.Tensor:
        """``tile``: None (tiles only when the whole image does not fit ``max_memory``),
        "auto" (the planner's tile size) or a tile side in pixels; ``max_memory``: bytes
        (None: :func:`~brushwork.core.tiling.default_max_memory`)."""
        c, weights = begin(self, styles, style_weights, {**self.control_defaults,
                                                          **(controls or {})})
        passes = self.passes(c)
        clock = Clock()
        content, styles, masks, content_rgb = prepare(content, styles, c, self.device)
        styles, masks, weights = auto_region_styles(content, styles, masks, weights, c, seed)
        hw = tuple(content.shape[-2:])
        mult = max(LAYER_STRIDE[layer] for p in passes for layer in p.layers)
        b = min(BORDER, hw[0] - 1, hw[1] - 1) if self.border else 0
        plan = self.tile_plan(hw, passes, len(styles), tile, max_memory, b, mult,
                              with_masks=masks is not None)
        if plan is not None:
            return self._stylize_tiled(plan, content, styles, masks, content_rgb, c, weights,
                                       passes, clock, callback)
        x = with_border(content, b, mult)
        pm = None if masks is None else [with_border(m, b, mult) for m in masks]
        states = [{} for _ in styles]
        for i, p in enumerate(passes):
            cf = encode_layers_big(self.encoder, x, p.layers, self.bf16, p.native)
            sfs = [self.style_features(s, p, c) for s in styles]
            targets = [self.transform(cf, sf, None if pm is None else pm[j], c, states[j])
                       for j, sf in enumerate(sfs)]
            t = combine(cf[p.layers[0]], targets, weights, pm, c["strength"])
            dec = self.pass_decoder(p, cf, sfs, pm, weights, c)
            del sfs
            x = decode_big(dec, t, self.bf16, LAYER_STRIDE[p.layers[0]])
            emit(callback, Progress(self.name, "step", i + 1, len(passes), elapsed=clock()))
        out = finish(x[..., b:b + hw[0], b:b + hw[1]], hw, content_rgb)
        emit(callback, Progress(self.name, "done", len(passes), len(passes), size=hw,
                                elapsed=clock()))
        return out

    # ------------------------------------------------------------------------ large images
    supports_tiling = True  # stylize() takes ``tile`` and ``max_memory``

    def _pass_bytes(self, p: Pass) -> tuple[float, float]:
        """(network working bytes per pixel, feature bytes per pixel) of one pass, probed once
        on a small input."""
        cache = self.__dict__.setdefault("_probe_cache", {})
        key = (p.layers, id(p.decoder))
        if key not in cache:
            side = 64
            shapes = {}

            def run_enc(x):
                shapes.update({k: v.shape for k, v in
                               encode(self.encoder, x, list(p.layers), self.bf16).items()})
            enc = tiling.probe_peak_bytes([self.encoder], run_enc, (1, 3, side, side),
                                          self.device)
            first = shapes[p.layers[0]]
            dec = tiling.probe_peak_bytes([p.decoder], lambda f: decode(p.decoder, f, self.bf16),
                                          tuple(first), self.device)
            feat = sum(4 * s[1] * s[2] * s[3] for s in shapes.values())
            cache[key] = (max(enc, dec) / side ** 2, feat / side ** 2)
        return cache[key]

    def tile_plan(self, hw, passes, n_styles: int, tile, max_memory, border: int, mult: int,
                  with_masks: bool = False):
        """None (the whole image in one piece) or the :class:`TilePlan` for an image of ``hw``:
        ``tile`` None tiles only when the whole-image estimate exceeds the memory left under
        ``max_memory``; "auto" plans the tile side; an int is the tile side (rounded up to the
        networks' stride). ResourceError when no tile fits."""
        h, w = hw
        hv, wv = -(-(h + 2 * border) // mult) * mult, -(-(w + 2 * border) // mult) * mult
        net, feat = (max(v) for v in zip(*(self._pass_bytes(p) for p in passes)))
        feat_all = feat * (n_styles + 3)
        window = min(hv * wv, (TILE + 2 * OVERLAP) ** 2)  # encode_big/decode_big's tiles
        whole = hv * wv * (60 + feat_all + (4 if with_masks else 0)) + TILE_SAFETY * net * window
        planned = tiling.plan(hw, tile, max_memory, TILE_SAFETY * net + feat_all + 60,
                              whole_bytes=whole, what=f"a {w}x{h} image with {self.name}",
                              align=mult, margin=TILE_MARGIN * mult, feather=TILE_FEATHER,
                              buffers=12 * h * w * (2 if len(passes) > 1 else 1),
                              padded=(hv, wv), device=self.device)
        if planned is None:
            return None
        side, margin, feather = planned
        return TilePlan(side, margin, feather, border, mult, hv, wv)

    def _thumbnail_maps(self, cur, sfs, masks, c, p: Pass, mult: int):
        """Per style: None (the transform runs on each tile's own features) or (map inside the
        mask, map outside) frozen from the transform on a thumbnail of ``cur``."""
        th = tiling.thumbnail(cur)
        tb = min(BORDER, th.shape[-2] - 1, th.shape[-1] - 1) if self.border else 0
        cf = encode(self.encoder, with_border(th, tb, mult), list(p.layers), self.bf16)
        feat = cf[p.layers[0]]
        x = feat[0].flatten(1)
        out = []
        for j, sf in enumerate(sfs):
            m = None if masks is None else with_border(tiling.thumbnail(masks[j]), tb, mult)
            state = {}
            y = self.transform(cf, sf, m, c, state)
            if state:
                raise ControlError(f"{self.name} cannot work tile by tile: its transform keeps "
                                   f"what it found on the whole feature map for the later "
                                   f"passes; use a smaller size")
            if y.shape[-2:] != feat.shape[-2:]:
                out.append(None)
                continue
            y = y[0].flatten(1)
            if m is None:
                fm = tiling.fit_frozen_map(x, y)
                out.append(None if fm is None else (fm, fm))
                continue
            sel = F.interpolate(m, size=feat.shape[-2:], mode="nearest")[0, 0].flatten() > 0.5
            fits = []
            for part in (sel, ~sel):
                fits.append(tiling.fit_frozen_map(x[:, part], y[:, part])
                            if int(part.sum()) >= 2 else None)
            inside, outside = fits
            failed = [int(part.sum()) >= 2 and f is None for part, f in zip((sel, ~sel), fits)]
            if any(failed) or (inside is None and outside is None):
                out.append(None)
            else:
                out.append((inside or outside, outside or inside))
        return out

    def _stylize_tiled(self, plan, content, styles, masks, content_rgb, c, weights, passes,
                       clock, callback):
        h, w = content.shape[-2:]
        b = plan.border
        grid = tiling.tile_grid(plan.hv, plan.wv, plan.tile, margin=plan.margin,
                                feather=plan.feather, align=plan.mult)
        total = len(passes) * len(grid)
        tile_states = [[{} for _ in styles] for _ in grid]  # for transforms run per tile
        cur, done = content, 0
        for i, p in enumerate(passes):
            sfs = [self.style_features(s, p, c) for s in styles]
            maps = self._thumbnail_maps(cur, sfs, masks, c, p, plan.mult)
            emit(callback, Progress(self.name, "scale", done, total, i, len(passes), (h, w),
                                    elapsed=clock(), message=tiles_message(grid)))
            out = torch.zeros(1, 3, h, w, device=content.device)
            for k, t in enumerate(grid):
                xt = tiling.read_window(cur, t.y0, t.y1, t.x0, t.x1, b, b)
                mt = None if masks is None else [
                    tiling.read_window(m, t.y0, t.y1, t.x0, t.x1, b, b) for m in masks]
                cf = encode(self.encoder, xt, list(p.layers), self.bf16)
                del xt
                feat = cf[p.layers[0]]
                targets = []
                for j, sf in enumerate(sfs):
                    mj = None if mt is None else mt[j]
                    if maps[j] is None:
                        targets.append(self.transform(cf, sf, mj, c, tile_states[k][j]))
                    else:
                        targets.append(_apply_maps(maps[j], feat, mj))
                t_feat = combine(feat, targets, weights, mt, c["strength"])
                del cf, targets
                tiling.add_tile(out, decode(p.decoder, t_feat, self.bf16), t, b, b)
                done += 1
                emit(callback, Progress(self.name, "step", done, total, i, len(passes), (h, w),
                                        elapsed=clock()))
            cur = out
        out = cur.clamp_(0, 1)
        if content_rgb is not None:
            tiling.in_strips(out, lambda s, y0, y1: combine_luminance(
                luminance(s), content_rgb[..., y0:y1, :]))
        emit(callback, Progress(self.name, "done", len(passes), len(passes), size=(h, w),
                                elapsed=clock()))
        return out.cpu()


def tiles_message(grid) -> str:
    """The message of a tiled stage's 'scale' event: "12 tiles of 2048 px"."""
    return f"{len(grid)} tiles of {grid.tile} px"


def _apply_maps(maps, feat, mask):
    """A tile's target features from the frozen (inside, outside) maps and its mask."""
    inside, outside = maps
    if mask is None or inside is outside:
        return inside(feat)
    sel = F.interpolate(mask, size=feat.shape[-2:], mode="nearest") > 0.5
    return torch.where(sel, inside(feat), outside(feat))


@dataclass(frozen=True)
class TilePlan:
    """A tiled run: tile side, margin and feather (pixels), the reflected border, the stride
    tiles align to, the virtual (bordered, stride-aligned) image size."""
    tile: int
    margin: int
    feather: int
    border: int
    mult: int
    hv: int
    wv: int


# Memory model of the tiled path: working bytes per window pixel = TILE_SAFETY x the largest
# layer's inputs + output (probed) + the features (content, targets, blend) + 60 for the
# image-sized tile buffers. Overlap: TILE_MARGIN x the deepest stride as a margin on each side
# (the padding's reach into a tile) + a TILE_FEATHER px blend band.
TILE_SAFETY = 2.0
TILE_MARGIN = 8
TILE_FEATHER = 64

"""The arbitrary-style feed-forward methods' shared skeleton (:class:`FeedForward`) and helpers:
weight files, encoders, control handling (style scale, colour, masks, blending), tiling.

adain, wct, linear, sanet and styleswap differ only in their feature transform (and in which
layers and decoders they use); :meth:`FeedForward.stylize` does everything else.

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

from ..core.blocks import SmallEncoder
from ..core.color import combine_luminance, luminance, preserve_color_inputs
from ..core.device import NHWC, autocast, has_bf16
from ..core.weights import load_prefixed, load_weights, resolve_weights
from ..errors import BrushworkError
from ..core.image import load_masks, resize, to_tensor
from ..core.protocol import Capabilities, Clock, Progress, begin, emit
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


def encode(enc, x: torch.Tensor, layers, bf16: bool) -> dict[str, torch.Tensor]:
    """Features as float32, contiguous (NCHW) tensors; the convs run in NHWC (channels last),
    2-3x faster on CPU."""
    if isinstance(enc, VGG19):
        return enc(x, layers)
    with autocast(x.device, bf16):
        out = enc(x.contiguous(memory_format=NHWC), layers)
    return {k: v.float().contiguous() for k, v in out.items()}


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
    the one it returns and the decoder takes) and the ``decoder``."""
    layers: tuple[str, ...]
    decoder: nn.Module


class FeedForward:
    """encode -> transform per style -> blend (weights or masks, strength) -> decode, once per
    :class:`Pass` (wct runs several, coarse to fine; the others one).

    A method sets ``name``, ``summary``, ``controls``, ``capabilities``, ``device``, ``bf16``,
    ``encoder``, and implements :meth:`passes` and :meth:`transform`. ``border = True`` adds a
    reflected margin (cropped after decoding) so the encoder's zero padding leaves no dark frame
    along the edges; ``control_defaults`` overrides control defaults (e.g. a weight file's own
    strength)."""
    capabilities = Capabilities(options=("weights",))
    border = False
    control_defaults: dict = {}

    def passes(self, c: dict) -> list[Pass]:
        raise NotImplementedError

    def transform(self, cf: dict, sf: dict, mask, c: dict, state: dict) -> torch.Tensor:
        """Target features at ``layers[0]`` for content features ``cf`` and style features
        ``sf`` (dicts over the pass's layers); ``mask``: this style's region or None; ``state``:
        a dict kept for this style over the passes of one call (for transforms whose finer
        passes reuse what the first one found)."""
        raise NotImplementedError

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c, weights = begin(self, styles, style_weights, {**self.control_defaults,
                                                          **(controls or {})})
        passes = self.passes(c)
        clock = Clock()
        content, styles, masks, content_rgb = prepare(content, styles, c, self.device)
        hw = tuple(content.shape[-2:])
        mult = max(LAYER_STRIDE[layer] for p in passes for layer in p.layers)
        b = min(BORDER, hw[0] - 1, hw[1] - 1) if self.border else 0
        x = with_border(content, b, mult)
        pm = None if masks is None else [with_border(m, b, mult) for m in masks]
        states = [{} for _ in styles]
        for i, p in enumerate(passes):
            cf = {layer: encode_big(self.encoder, x, layer, self.bf16, LAYER_STRIDE[layer])
                  for layer in p.layers}
            targets = [self.transform(cf, encode(self.encoder, s, list(p.layers), self.bf16),
                                      None if pm is None else pm[j], c, states[j])
                       for j, s in enumerate(styles)]
            t = combine(cf[p.layers[0]], targets, weights, pm, c["strength"])
            x = decode_big(p.decoder, t, self.bf16, LAYER_STRIDE[p.layers[0]])
            emit(callback, Progress(self.name, "step", i + 1, len(passes), elapsed=clock()))
        out = finish(x[..., b:b + hw[0], b:b + hw[1]], hw, content_rgb)
        emit(callback, Progress(self.name, "done", len(passes), len(passes), size=hw,
                                elapsed=clock()))
        return out

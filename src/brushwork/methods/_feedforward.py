"""Helpers shared by the arbitrary-style feed-forward methods (adain, wct, linear, sanet,
styleswap): weight files, encoders, control handling (style scale, colour, masks, blending).

Weight files are safetensors with ``<part>.<param>`` tensors and string metadata: ``method``,
``level`` / ``levels``, ``width``, ``encoder`` (``vgg`` or ``small``) and, for ``small``, the
student encoder's tensors under ``encoder.*``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import shipped, training
from ..blocks import SmallEncoder
from ..color import combine_luminance, luminance, preserve_color_inputs
from ..errors import BrushworkError
from ..image import load_masks, resize, to_tensor
from ..vgg import VGG19, has_bf16  # noqa: F401 (re-exported for the methods)

# Reflect-padded margin around the content (cropped after decoding), in pixels.
BORDER = 16
# Cap on the style's working size (pixels) so huge contents do not make huge style passes.
MAX_STYLE_PIXELS = 1024 * 1024



def autocast(device: torch.device, enabled: bool):
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


NHWC = torch.channels_last  # memory format of frozen feed-forward nets at inference


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
    training.load_prefixed(module, prefix, state, str(path))
    return module.to(device=device, memory_format=NHWC).eval().requires_grad_(False)


def load_method_weights(method, weights, default_file: str, train_hint: str):
    """(tensors, metadata, path) of ``weights`` or the shipped file; checks the file's
    ``method`` metadata is ``method`` (or one of them, if a tuple)."""
    allowed = (method,) if isinstance(method, str) else tuple(method)
    path = shipped.resolve_weights(weights, default_file, train_hint)
    state, meta = shipped.load_weights(path)
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


def load_distilled(path) -> tuple[SmallEncoder, dict, dict]:
    """(student encoder, file tensors, metadata) of a `brushwork train distill` file, the
    ``--encoder-weights`` of the adain and wct trainers; one-line errors for a missing or
    foreign file."""
    if not Path(path).is_file():
        raise BrushworkError(f"--encoder-weights {path}: file not found")
    state, meta = shipped.load_weights(path)
    if meta.get("method") != "distill":
        raise BrushworkError(f"--encoder-weights {path}: not a distilled encoder file (method "
                             f"{meta.get('method')!r}); make one with `brushwork train distill`")
    enc = SmallEncoder(int(meta.get("encoder_level", 4)),
                       meta_float(meta, "encoder_width", 0.25, path))
    training.load_prefixed(enc, "encoder", state, f"--encoder-weights {path}")
    return enc, state, meta


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

"""Johnson et al. 2016, "Perceptual Losses for Real-Time Style Transfer", with instance norm.

A feed-forward transformer network (conv9x9, two stride-2 convs, five residual blocks, two
nearest-upsample convs, conv9x9; Ulyanov's instance norm instead of batch norm) trained per
style with VGG perceptual losses: content MSE at relu2_2, Gram style loss at relu1_2, relu2_2,
relu3_3, relu4_3, total variation. ``width`` scales every channel count (1.0 = 32/64/128; the
small variant 0.5 = 16/32/64 trains in well under an hour on a 2-core CPU).

The network's norms are :class:`~brushwork.blocks.ConditionalInstanceNorm2d` with N = 1, so the
same class serves ``cin`` (N styles) unchanged. Output: sigmoid, RGB in [0, 1].

    brushwork train johnson --style PAINTING --content DIR --out F.safetensors
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F


from ..core import tiling
from ..core.blocks import ConditionalInstanceNorm2d, one_hot_styles
from ..core.color import combine_luminance, luminance
from ..core.device import autocast, has_bf16, pick_device
from ..core.weights import load_prefixed, load_weights, resolve_weights
from ..errors import BrushworkError, ControlError
from ..core.protocol import (Capabilities, begin, PRESERVE_COLOR, STRENGTH, Clock, Progress, emit)

CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
SHIPPED_FILE = "johnson_starry_night.safetensors"
TRAIN_HINT = "brushwork train johnson --style PAINTING --content DIR --out F.safetensors"


# ------------------------------------------------------------------------------------- network
def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class _Conv(nn.Module):
    """Reflect-pad conv (optionally 2x nearest upsampling first) + CIN + optional ReLU."""

    def __init__(self, c_in, c_out, k, n_styles, stride=1, up=False, norm=True, relu=True):
        super().__init__()
        self.up, self.relu, self.pad = up, relu, k // 2
        self.conv = nn.Conv2d(c_in, c_out, k, stride)
        self.norm = ConditionalInstanceNorm2d(c_out, n_styles) if norm else None

    def forward(self, x, style):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv(F.pad(x, [self.pad] * 4, mode="reflect"))
        if self.norm is not None:
            x = self.norm(x, style)
        return F.relu(x) if self.relu else x


class _Res(nn.Module):
    def __init__(self, c, n_styles):
        super().__init__()
        self.a = _Conv(c, c, 3, n_styles)
        self.b = _Conv(c, c, 3, n_styles, relu=False)

    def forward(self, x, style):
        return x + self.b(self.a(x, style), style)


class TransformerNet(nn.Module):
    """Johnson's image transformation network; ``n_styles`` > 1 makes it Dumoulin's CIN net.

    ``forward(x, style)``: x (B, 3, H, W) in [0, 1] (any H, W: padded to a multiple of 4
    internally), style (B, N) mixing weights (None = style 0). Returns (B, 3, H, W) in [0, 1].
    """

    def __init__(self, width: float = 1.0, n_styles: int = 1, n_res: int = 5):
        super().__init__()
        c1, c2, c3 = _ch(32, width), _ch(64, width), _ch(128, width)
        self.width, self.n_styles, self.n_res = width, n_styles, n_res
        self.layers = nn.ModuleList(
            [_Conv(3, c1, 9, n_styles), _Conv(c1, c2, 3, n_styles, stride=2),
             _Conv(c2, c3, 3, n_styles, stride=2)]
            + [_Res(c3, n_styles) for _ in range(n_res)]
            + [_Conv(c3, c2, 3, n_styles, up=True), _Conv(c2, c1, 3, n_styles, up=True),
               _Conv(c1, 3, 9, n_styles, norm=False, relu=False)])

    def config(self) -> dict:
        return {"width": self.width, "n_styles": self.n_styles, "n_res": self.n_res}

    def forward(self, x, style=None):
        h, w = x.shape[-2:]
        if style is None:
            style = one_hot_styles([0] * x.shape[0], self.n_styles).to(x.device)
        ph, pw = (-h) % 4, (-w) % 4
        y = F.pad(x * 2 - 1, (0, pw, 0, ph), mode="reflect") if ph or pw else x * 2 - 1
        for layer in self.layers:
            y = layer(y, style)
        return torch.sigmoid(y[..., :h, :w].float())


def run_net(net: TransformerNet, content: torch.Tensor, style: torch.Tensor,
            bf16: bool = True) -> torch.Tensor:
    """Inference: channels-last, bf16 autocast on CPU/CUDA, float32 result in [0, 1]."""
    x = content.to(next(net.parameters()).device)
    with torch.no_grad(), autocast(x.device, bf16):
        return net(x.contiguous(memory_format=torch.channels_last), style.to(x.device)).float()


def finish(method: str, out: torch.Tensor, content: torch.Tensor, c: dict) -> torch.Tensor:
    """Shared post-processing for feed-forward nets: colour preservation, strength blend."""
    if c.get("preserve_color") == "luminance":
        out = combine_luminance(luminance(out), content)
    elif c.get("preserve_color") == "histogram":
        raise ControlError(f"method {method!r}: preserve_color=histogram needs a style image; "
                           f"use luminance")
    s = c.get("strength", 1.0)
    return (s * out + (1 - s) * content).clamp(0, 1)


def load_net(weights, default_file: str, hint: str, device="cpu",
             methods=("johnson", "cin")) -> tuple[TransformerNet, dict, Path]:
    """Build a TransformerNet from a weight file's metadata and load its tensors; returns
    (net, metadata, path of the file)."""
    path = resolve_weights(weights, default_file, hint)
    state, meta = load_weights(path)
    if meta.get("method") not in methods:
        raise BrushworkError(f"{path}: weight file is for method {meta.get('method')!r}, not "
                             f"{' or '.join(methods)}")
    try:
        cfg = json.loads(meta["config"])
        net = TransformerNet(float(cfg["width"]), int(cfg["n_styles"]), int(cfg["n_res"]))
    except (KeyError, ValueError):
        raise BrushworkError(f"{path}: not a johnson/cin weight file (no network config)") from None
    load_prefixed(net, "net", state, source=str(path))
    net.to(device=device, memory_format=torch.channels_last).eval().requires_grad_(False)
    return net, meta, path


class Johnson:
    name = "johnson"
    summary = "Johnson et al. 2016: one trained feed-forward net per style (instance norm)"
    capabilities = Capabilities(styles="builtin")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"johnson: unknown option(s) {', '.join(sorted(options))}")
        self.device = pick_device(device)
        self.net, _, path = load_net(weights, SHIPPED_FILE, TRAIN_HINT, self.device, ("johnson",))
        self.weight_files = [path]
        self.bf16 = bf16 and has_bf16(self.device)

    supports_tiling = True  # stylize() takes ``tile`` and ``max_memory``

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None, tile=None, max_memory=None) -> torch.Tensor:
        """``tile``/``max_memory``: large images tile by tile with thumbnail instance norms
        (:func:`run_tiled`)."""
        c, _ = begin(self, styles, style_weights, controls)
        clock = Clock()
        style = one_hot_styles([0], self.net.n_styles)
        planned = plan_net(self.name, self.net, content, style, self.bf16, tile, max_memory)
        if planned is not None:
            out = run_tiled(self.net, content, [(style, None)], self.bf16, planned,
                            _tile_events(self.name, callback, clock))
            out = finish_tiled(self.name, out, content, c)
            emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                    elapsed=clock()))
            return out
        out = finish(self.name, run_net(self.net, content, style, self.bf16).cpu(), content, c)
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out


# ------------------------------------------------------------------------------ large images
# Thumbnail instance normalisation (Chen et al. 2022): the net runs once on a thumbnail of the
# content recording every norm's channel mean/std; each tile is normalised with those, and the
# tiles are blended with feathered weights. Overlap: TILE_MARGIN px on each side (the padding's
# reach into a tile) + a TILE_FEATHER px blend band. Working memory per tile pixel:
# TILE_SAFETY x the largest layer's inputs + output (probed) + 48 for tile-sized buffers.
TILE_MARGIN = 48
TILE_FEATHER = 64
TILE_SAFETY = 2.5
TILE_ALIGN = 4  # the two stride-2 convs


def net_bytes_per_pixel(net: nn.Module, style: torch.Tensor, bf16: bool, align: int = TILE_ALIGN,
                        call=None) -> float:
    """Working bytes per pixel of ``net`` at inference (probed once per net and cached)."""
    cache = net.__dict__.setdefault("_bytes_per_pixel", {})
    key = (bf16, align)
    if key not in cache:
        side = 4 * max(16, align)
        run = call or (lambda x: run_net(net, x, style, bf16))
        peak = tiling.probe_peak_bytes([net], run, (1, 3, side, side),
                                       next(net.parameters()).device)
        cache[key] = TILE_SAFETY * peak / side ** 2 + 48
    return cache[key]


def plan_net(name: str, net: nn.Module, content: torch.Tensor, style: torch.Tensor, bf16: bool,
             tile, max_memory, *, align: int = TILE_ALIGN, margin: int = TILE_MARGIN,
             feather: int = TILE_FEATHER, n_runs: int = 1, call=None):
    """The tiling decision of an image network (:func:`brushwork.core.tiling.plan`): None for
    one piece, else (tile side, margin, feather). ``n_runs``: the net's runs per image (cin's
    masks: one per style) -- the whole-image estimate holds that many results."""
    h, w = content.shape[-2:]
    per_pixel = net_bytes_per_pixel(net, style, bf16, align, call)
    hv, wv = -(-h // align) * align, -(-w // align) * align
    whole = per_pixel * hv * wv + 12 * h * w * (n_runs + 2)
    return tiling.plan((h, w), tile, max_memory, per_pixel, whole_bytes=whole,
                       what=f"a {w}x{h} image with {name}", align=align, margin=margin,
                       feather=feather, buffers=12 * h * w, padded=(hv, wv),
                       device=next(net.parameters()).device)


def run_tiled(net: TransformerNet, content: torch.Tensor, runs, bf16: bool, planned,
              on_tile=None, align: int = TILE_ALIGN) -> torch.Tensor:
    """The net over ``content`` tile by tile with thumbnail instance norms. ``runs``: (style
    row, per-pixel weight (1, 1, H, W) or None) pairs, summed (cin's masks: one run per
    style, each weighted by its normalised mask); float32 result on the CPU."""
    side, margin, feather = planned
    h, w = content.shape[-2:]
    grid = tiling.tile_grid(-(-h // align) * align, -(-w // align) * align, side,
                            margin=margin, feather=feather, align=align)
    content = content.to(next(net.parameters()).device)
    out = torch.zeros(1, 3, h, w, device=content.device)
    total, done = len(runs) * len(grid), [0]
    if on_tile is not None:
        on_tile(0, total, f"{len(grid)} tiles of {side} px")

    def tick(k, n):
        done[0] += 1
        if on_tile is not None:
            on_tile(done[0], total)

    for style, m in runs:
        weight = None if m is None else (
            lambda t, m=m: tiling.read_window(m.to(content.device), t.y0, t.y1, t.x0, t.x1))
        tiling.stylize_in_tiles(lambda x, t, style=style: run_net(net, x, style, bf16),
                                content, grid, tiling.FrozenNorms(net), out=out, weight=weight,
                                on_tile=tick)
    return out.cpu()


def finish_tiled(method: str, out: torch.Tensor, content: torch.Tensor, c: dict) -> torch.Tensor:
    """:func:`finish` in row strips, in place (bounded temporaries for huge images)."""
    content = content.cpu()
    return tiling.in_strips(out, lambda s, y0, y1: finish(method, s, content[..., y0:y1, :], c))


def _tile_events(name, callback, clock):
    """on_tile(done, total[, message]): a 'scale' event (with the message) at the start, then
    a 'step' event per tile."""
    def on_tile(done, total, message=None):
        kind = "scale" if message is not None else "step"
        emit(callback, Progress(name, kind, done, total, elapsed=clock(), message=message or ""))
    return on_tile

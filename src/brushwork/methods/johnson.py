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

import torch
from torch import nn
import torch.nn.functional as F


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
             methods=("johnson", "cin")) -> tuple[TransformerNet, dict]:
    """Build a TransformerNet from a weight file's metadata and load its tensors."""
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
    return net, meta


class Johnson:
    name = "johnson"
    summary = "Johnson et al. 2016: one trained feed-forward net per style (instance norm)"
    capabilities = Capabilities(styles="builtin")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"johnson: unknown option(s) {', '.join(sorted(options))}")
        self.device = pick_device(device)
        self.net, meta = load_net(weights, SHIPPED_FILE, TRAIN_HINT, self.device, ("johnson",))
        self.bf16 = bf16 and has_bf16(self.device)

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c, _ = begin(self, styles, style_weights, controls)
        clock = Clock()
        style = one_hot_styles([0], self.net.n_styles)
        out = finish(self.name, run_net(self.net, content, style, self.bf16).cpu(), content, c)
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out

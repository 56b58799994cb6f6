"""ETNet: error transition network for arbitrary style transfer (Song et al. 2019).

A self-correcting refinement of another method's result. A base method (adain by default;
``base`` takes any of the feed-forward image-style methods) stylises the photo; the result is
then refined coarse to fine on a Laplacian pyramid. At each refined level, and ``iterations``
times there, the current output, the photo and the painting are encoded with VGG19
(relu1_1, relu2_1, relu3_1) and the errors of the output are measured:

* the content error: the output's features minus the photo's, at every position;
* the style error: the elementwise square root of the output's uncentred Gram matrix minus
  the painting's (``core.stats.sqrt_gram``), a C x C matrix per layer.

The error transition network fuses them (per layer, the style error projected by a learned
matrix and applied to the output's features, ``P E_s F``: the form of a Gram-loss gradient,
next to the content error and the features), lets the errors travel across the image with a
non-local attention block at relu3_1 (each position gathers the errors of positions with
related features), and decodes the fused errors, relu3_1 to relu1_1, into a residual image
that is added to the level. The refined level, upsampled, replaces the coarse part of the
next finer level, whose own detail (its Laplacian band) comes from the base. Levels above
:data:`MAX_REFINE_PIXELS` keep the base's bands with the refined coarse part upsampled in.

Training (``brushwork train etnet``): the base is frozen; the network's residual head starts
at zero (the untrained refinement returns the base unchanged); the loss is the paper's
pyramid loss on the final output at every level: relu4_1 content + Gram style terms
(relu1_1..relu4_1), each Gram term divided by the photo's own Gram distance to the painting.

Controls: ``base``, ``iterations`` (refinement passes per level; default: the weight file's),
strength (passed to the base and scaling every residual: 0 gives the base at strength 0),
colour preservation, style scale, several styles with weights (the style targets are the
weighted mean of the styles' statistics).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core import stats as S
from ..core.color import combine_luminance, luminance, preserve_color_inputs
from ..core.image import resize, to_tensor
from ..core.protocol import (PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Capabilities, Clock,
                             Control, Progress, begin, emit)
from ..core.vgg import VGG19
from ..core.weights import load_prefixed
from ..errors import BrushworkError
from . import feedforward as ff

# the feed-forward image-style methods a refinement can start from
BASES = ("adain", "efdm", "wct", "mst", "linear", "sanet", "styleswap")
ERROR_LAYERS = ("relu1_1", "relu2_1", "relu3_1")
ERROR_CHANNELS = (64, 128, 256)
WIDTHS = (16, 32, 64)  # the network's channels at relu1_1, relu2_1, relu3_1 for width 1
ATTENTION_SIDE = 16  # keys and values of the error transition: relu3_1 pooled to <= 16 x 16
MAX_REFINE_PIXELS = 1024 * 1024  # the finest refined level has at most this many pixels
MIN_LEVEL_SIDE = 8  # coarser levels than this are not refined
DEFAULT_FILE = "etnet.safetensors"
TRAIN_HINT = "brushwork train etnet --content DIR --styles DIR --out FILE"

BASE = Control("base", "str", "adain",
               "etnet: the method whose result is refined (a feed-forward image-style method)",
               choices=BASES)
# ``iterations`` is shared with analogy (same kind, default and range): the default 5 is
# analogy's; etnet takes its own default from its weight file (the shipped file: 2).
ITERATIONS = Control("iterations", "int", 5,
                     "etnet: refinement passes per pyramid level (default: the weight file's, "
                     "2 for the shipped one); analogy: PatchMatch iterations per level "
                     "(default 5)", low=1, high=50)


# ------------------------------------------------------------------------------- the pyramid
def gaussian_pyramid(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``[x, x/2, x/4, ...]`` (``n`` images), each an antialiased bilinear half of the one
    before (sides halved, rounded down)."""
    out = [x]
    for _ in range(n - 1):
        h, w = out[-1].shape[-2:]
        out.append(F.interpolate(out[-1], size=(max(1, h // 2), max(1, w // 2)),
                                 mode="bilinear", align_corners=False, antialias=True))
    return out


def upsample(x: torch.Tensor, hw) -> torch.Tensor:
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False)


# -------------------------------------------------------------------------- errors, targets
@dataclass
class Targets:
    """What a level's errors are measured against: the photo's features at
    :data:`ERROR_LAYERS` divided by ``scale`` (their root mean square, per sample and layer;
    the output's and the painting's features are divided by the same), and the painting's
    ``sqrt_gram`` of those normalised features (the weighted mean over several styles)."""
    content: dict[str, torch.Tensor]
    scale: dict[str, torch.Tensor]
    style: dict[str, torch.Tensor]


def make_targets(content_feats: dict, style_feats: list[dict], weights) -> Targets:
    """:class:`Targets` from VGG19 features of the photo and of each style (dicts holding at
    least :data:`ERROR_LAYERS`)."""
    scale = {l: S.rms(content_feats[l]) for l in ERROR_LAYERS}
    content = {l: content_feats[l] / scale[l] for l in ERROR_LAYERS}
    style = {l: sum(w * S.sqrt_gram(sf[l] / scale[l]) for sf, w in zip(style_feats, weights))
             for l in ERROR_LAYERS}
    return Targets(content, scale, style)


def output_features(vgg, x: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
    """The (normalised) error-layer features of the current output; no gradient flows through
    them (the errors are observations of the output, as in the paper)."""
    with torch.no_grad():
        f = vgg(x.detach().clamp(0, 1), list(ERROR_LAYERS))
    return {l: f[l] / targets.scale[l] for l in ERROR_LAYERS}


# ------------------------------------------------------------------------------- the network
def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


class ErrorTransition(nn.Module):
    """Errors of an output at relu1_1..relu3_1 -> a residual image at the output's size.

    Per layer l: ``h_l = lrelu(A_l [F_l, F_l - C_l] + P_l E_l F_l / C)`` with F the output's
    and C the photo's normalised features, E_l the style error (``sqrt_gram(F_l)`` minus the
    painting's), P_l a learned (w_l x C) projection. At relu3_1 a non-local block moves the
    errors across the image (queries at every position, keys and values pooled to at most
    :data:`ATTENTION_SIDE`^2 positions). A decoder goes relu3_1 -> relu2_1 -> relu1_1 with the
    h_l of each layer concatenated, and a 3x3 head (zero at initialisation) gives the residual.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.width = float(width)
        w = [max(2, round(c * self.width)) for c in WIDTHS]
        self.widths = w
        self.inputs = nn.ModuleList(nn.Conv2d(2 * c, wl, 1) for c, wl in zip(ERROR_CHANNELS, w))
        g = torch.Generator().manual_seed(0)
        self.style_proj = nn.ParameterList(
            nn.Parameter(torch.randn(wl, c, generator=g) / math.sqrt(c))
            for c, wl in zip(ERROR_CHANNELS, w))
        d = max(1, w[2] // 2)
        self.query, self.key = nn.Conv2d(w[2], d, 1), nn.Conv2d(w[2], d, 1)
        self.value, self.mix = nn.Conv2d(w[2], d, 1), nn.Conv2d(d, w[2], 1)
        self.dec3 = _conv3(w[2], w[1])
        self.dec2 = _conv3(2 * w[1], w[0])
        self.dec1 = _conv3(2 * w[0], w[0])
        self.head = _conv3(w[0], 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def transition(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (n, d, hw)
        pooled = F.adaptive_avg_pool2d(x, (min(h, ATTENTION_SIDE), min(w, ATTENTION_SIDE)))
        k, v = self.key(pooled).flatten(2), self.value(pooled).flatten(2)  # (n, d, t)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(q.shape[1]), dim=-1)  # (n, hw, t)
        moved = (v @ attn.transpose(1, 2)).view(n, -1, h, w)
        return x + self.mix(moved)

    def forward(self, feats: dict, targets: Targets) -> torch.Tensor:
        h = []
        for i, l in enumerate(ERROR_LAYERS):
            f = feats[l]
            n, c = f.shape[:2]
            style_error = S.sqrt_gram(f) - targets.style[l]  # (n, c, c)
            fused = (self.style_proj[i] @ style_error) @ f.flatten(2) / c  # (n, w_l, hw)
            x = self.inputs[i](torch.cat([f, f - targets.content[l]], 1))
            h.append(F.leaky_relu(x + fused.view(n, -1, *f.shape[-2:]), 0.2))
        h[2] = self.transition(h[2])
        g = F.leaky_relu(self.dec3(h[2]), 0.2)
        g = F.leaky_relu(self.dec2(torch.cat([upsample(g, h[1].shape[-2:]), h[1]], 1)), 0.2)
        g = F.leaky_relu(self.dec1(torch.cat([upsample(g, h[0].shape[-2:]), h[0]], 1)), 0.2)
        return self.head(g)


def refine(net: ErrorTransition, vgg, base: torch.Tensor, targets: dict[int, Targets],
           levels: list[int], iterations: int, strength: float = 1.0,
           step=None) -> torch.Tensor:
    """The refined image: ``base`` decomposed into its Gaussian pyramid, the pyramid ``levels``
    (indices, 0 = full size; consecutive) refined coarse to fine, ``iterations`` residuals of
    ``net`` (times ``strength``) added at each, each refined level's change upsampled into the
    next finer one (Laplacian reconstruction: that level's own band is the base's). ``targets``
    maps each level to its :class:`Targets`; ``step()`` is called after every residual."""
    pyr = gaussian_pyramid(base, max(levels) + 1)
    delta = None  # the refinement's change to the base at the current level
    for k in range(max(levels), -1, -1):
        if delta is not None:
            delta = upsample(delta, pyr[k].shape[-2:])
        if k in levels:
            if delta is None:
                delta = torch.zeros_like(pyr[k])
            t = targets[k]
            for _ in range(iterations):
                delta = delta + strength * net(output_features(vgg, pyr[k] + delta, t), t)
                if step is not None:
                    step()
    return base if delta is None else pyr[0] + delta


def refine_levels(hw, n_levels: int) -> tuple[list[int], int]:
    """(the pyramid levels refined for an image of size ``hw``, the number of halvings before
    the finest of them): the ``n_levels`` levels ending at the largest one with at most
    :data:`MAX_REFINE_PIXELS` pixels, without those whose short side is below
    :data:`MIN_LEVEL_SIDE`."""
    h, w = hw
    first = 0
    while (h >> first) * (w >> first) > MAX_REFINE_PIXELS:
        first += 1
    levels = [k for k in range(first, first + n_levels)
              if min(h >> k, w >> k) >= MIN_LEVEL_SIDE]
    return levels, first


# ------------------------------------------------------------------------------- the method
class ETNet:
    name = "etnet"
    summary = ("ETNet (Song et al. 2019): a base method's result (--base, default adain) "
               "refined coarse to fine on a Laplacian pyramid by a network that predicts "
               "residuals from VGG19 content and style errors (--iterations per level)")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, STYLE_SCALE, BASE, ITERATIONS)}
    capabilities = Capabilities(options=("weights",))

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            "etnet", weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        self.meta = meta
        width = ff.meta_float(meta, "width", 1.0, path)
        self.n_levels = int(ff.meta_float(meta, "levels", 2, path))
        if not 1 <= self.n_levels <= 6:
            raise BrushworkError(f"{path}: etnet levels must be 1..6, got {self.n_levels}")
        defaults = {"iterations": meta.get("iterations", "2"), "base": meta.get("base", "adain")}
        try:
            self.control_defaults = {k: self.controls[k].parse(v) for k, v in defaults.items()}
        except BrushworkError as e:
            raise BrushworkError(f"{path}: bad metadata ({e})") from None
        self.net = ErrorTransition(width)
        load_prefixed(self.net, "etnet", state, str(path))
        self.net = self.net.to(self.device).eval().requires_grad_(False)
        self.vgg = VGG19(device=self.device, autocast=self.bf16, last_layer="relu3_1",
                         channels_last=True)
        self.weight_files = [path, self.vgg.weights_file]
        self._bases = {}
        self.base_method(self.control_defaults["base"])

    def base_method(self, name: str):
        """The base method instance (made once per name, same device and precision)."""
        if name not in self._bases:
            from . import get_method  # methods/__init__ imports this module
            inst = get_method(name)(device=self.device, bf16=self.bf16)
            self._bases[name] = inst
            for p in getattr(inst, "weight_files", ()):
                if p is not None and p not in self.weight_files:
                    self.weight_files.append(p)
        return self._bases[name]

    def _controls(self, controls) -> dict:
        """The user's controls over the weight file's defaults (``None`` = not set)."""
        if isinstance(controls, Mapping):
            given = {k: v for k, v in controls.items() if v is not None}
            return {**self.control_defaults, **given}
        return controls  # begin refuses it with a one-line error

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c, weights = begin(self, styles, style_weights, self._controls(controls))
        clock = Clock()
        base = self.base_method(c["base"])
        content = to_tensor(content).to(self.device)
        styles = [to_tensor(s).to(self.device) for s in styles]
        content, styles, content_rgb = preserve_color_inputs(content, styles,
                                                             c["preserve_color"])
        hw = tuple(content.shape[-2:])
        base_controls = {k: c[k] for k in ("strength", "style_scale") if k in base.controls}
        x = base.stylize(content, styles, style_weights=weights, controls=base_controls,
                         seed=seed).to(self.device)
        levels, _ = refine_levels(hw, self.n_levels)
        total = len(levels) * c["iterations"] if c["strength"] > 0 else 0
        if total:
            b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)
            mult = 4 << max(levels)  # relu3_1 (stride 4) of every level without rounding
            cpyr = gaussian_pyramid(ff.with_border(content, b, mult), max(levels) + 1)
            targets = {}
            for k in levels:
                lvl = cpyr[k]
                sized = [resize(s, ff.style_size(s.shape[-2:], lvl.shape[-2:],
                                                 c["style_scale"])) for s in styles]
                targets[k] = make_targets(self.vgg(lvl, list(ERROR_LAYERS)),
                                          [self.vgg(s, list(ERROR_LAYERS)) for s in sized],
                                          weights)
            done = [0]

            def step():
                done[0] += 1
                emit(callback, Progress(self.name, "step", done[0], total, elapsed=clock()))

            out = refine(self.net, self.vgg, ff.with_border(x, b, mult), targets, levels,
                         c["iterations"], c["strength"], step)
            x = out[..., b:b + hw[0], b:b + hw[1]]
        x = x.clamp(0, 1)
        if content_rgb is not None:
            x = combine_luminance(luminance(x), content_rgb)
        emit(callback, Progress(self.name, "done", total, total, size=hw, elapsed=clock()))
        return x.cpu()

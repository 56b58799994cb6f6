"""Total style transfer with a single feed-forward network (Kim & Choi).

Encode content and style with VGG19 up to relu3_1 and keep three scales: relu1_1 (64
channels), relu2_1 (128) and relu3_1 (256). The feature transformer matches two kinds of
statistics:

* *intra-scale*: each layer's features are whitened and coloured with the style's mean and
  covariance at that layer (:func:`brushwork.core.stats.wct`);
* *inter-scale*: the three maps are resized (area average) to the relu3_1 size and
  concatenated along channels (448 channels); that joint map is whitened and coloured with the
  style's joint mean and covariance of the same concatenation, so correlations between scales
  transfer too. The change this makes is split per layer, resized back to each layer's size
  (bilinear) and added to that layer's features, so the finer layers keep their own detail.

With ``scale_stats="both"`` (the default) the intra-scale transform runs first and the
inter-scale one on its result; ``"intra"`` or ``"inter"`` runs one of them.

One decoder (the mirror of VGG19 up to relu3_1, the layers of
:func:`brushwork.core.blocks.decoder` ``(3, ...)``) turns the transformed relu3_1 features into
an image. After each of its upsamplings the transformed features of that scale (relu2_1, then
relu1_1, times :data:`~brushwork.core.blocks.DECODER_IN_SCALE`) are concatenated to the decoder's
features and merged back to the decoder's width by a 1x1 convolution (skip connections). The
merge convolutions start as pass-through (identity on the decoder's channels, zero on the skip
channels), so an untrained decoder is the plain relu3_1 decoder.

Training (``brushwork train totalst``): content loss (relu3_1 of the output vs the transformed
relu3_1 target) + intra-scale style loss (per-layer mean and covariance distance to the style,
relu1_1..relu4_1) + inter-scale style loss (mean and covariance of the output's and the
style's concatenated, resized relu1_1..relu3_1 features).

Controls: strength (transformed/content features at every scale: 0 is the content's own
reconstruction), several styles with weights, masks, colour preservation, style scale,
``scale_stats``. Large outputs are decoded in tiles (the skip features cropped with them);
stylisation tile by tile (``tile=``) is not offered.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.blocks import DECODER_IN_SCALE, LEVEL_LAYERS, decoder
from ..core.image import to_tensor
from ..core.protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Capabilities, Clock,
                             Control, Progress, begin, emit)
from ..core.stats import wct
from ..errors import BrushworkError, ControlError
from . import feedforward as ff

DEFAULT_FILE = "totalst_vgg.safetensors"
TRAIN_HINT = "brushwork train totalst --content DIR --styles DIR --out FILE"
LAYER = "relu3_1"
LAYERS = ("relu1_1", "relu2_1", "relu3_1")
SKIP_LAYERS = ("relu2_1", "relu1_1")
VGG_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256}
STRIDE = 4  # relu3_1 positions per pixel side
SCOPES = ("intra", "inter", "both")
SCALE_STATS = Control("scale_stats", "str", "both",
                      "which statistics the feature transformer matches: intra = each layer's "
                      "mean and covariance, inter = the joint mean and covariance of all scales "
                      "together, both = intra then inter", choices=SCOPES)


# ---------------------------------------------------------------------------- the transformer
def joint_features(feats: dict, layers=LAYERS, size=None) -> torch.Tensor:
    """The maps ``feats[l]`` (N, C_l, H_l, W_l) area-resized to ``size`` (default: the last
    layer's) and concatenated along channels: (N, sum C_l, h, w)."""
    size = tuple(size or feats[layers[-1]].shape[-2:])
    return torch.cat([f if tuple(f.shape[-2:]) == size else F.adaptive_avg_pool2d(f, size)
                      for f in (feats[l] for l in layers)], 1)


def split_joint(joint: torch.Tensor, feats: dict, layers=LAYERS) -> dict:
    """The channel blocks of a joint map, one per layer (at the joint map's size)."""
    sizes = [feats[l].shape[1] for l in layers]
    return dict(zip(layers, joint.split(sizes, dim=1)))


def joint_transform(cf: dict, sf: dict, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(transformed joint map, content joint map): the content's joint relu1_1..relu3_1 map
    whitened and coloured with the style's joint mean and covariance (one image each)."""
    xc = joint_features(cf)
    return wct(xc, joint_features(sf), mask), xc


def inter_scale(cf: dict, sf: dict, mask=None) -> dict:
    """Inter-scale transform: per layer, the content features plus the change the joint
    whitening-colouring made to that layer's channels, resized back to the layer's size."""
    t, xc = joint_transform(cf, sf, mask)
    out = {}
    for layer, d in split_joint(t - xc, cf).items():
        f = cf[layer]
        if d.shape[-2:] != f.shape[-2:]:
            d = F.interpolate(d, size=f.shape[-2:], mode="bilinear", align_corners=False)
        out[layer] = f + d
    return out


def intra_scale(cf: dict, sf: dict, mask=None) -> dict:
    """Intra-scale transform: each layer whitened and coloured with the style's statistics at
    that layer."""
    return {layer: wct(cf[layer], sf[layer], mask) for layer in LAYERS}


def total_transform(cf: dict, sf: dict, scope: str = "both", mask=None) -> dict:
    """Target features at relu1_1, relu2_1, relu3_1 for content features ``cf`` and style
    features ``sf`` (one image each); ``scope``: "intra", "inter" or "both" (intra, then inter
    on its result)."""
    if scope not in SCOPES:
        raise ControlError(f"totalst: scale_stats must be one of {', '.join(SCOPES)}, "
                           f"got {scope!r}")
    out = dict(cf)
    if scope in ("intra", "both"):
        out = intra_scale(out, sf, mask)
    if scope in ("inter", "both"):
        out = inter_scale(out, sf, mask)
    return out


# ------------------------------------------------------------------------------ the decoder
class TotalDecoder(nn.Module):
    """The relu3_1 decoder (``body``: the layers of :func:`~brushwork.core.blocks.decoder`
    ``(3, width, in_channels)``) with a skip connection after each upsampling: the decoder's
    features and the skip features of that scale (times DECODER_IN_SCALE) concatenated, then
    a 1x1 convolution back to the decoder's width (``merge[layer]``)."""

    def __init__(self, width: float = 1.0, in_channels: int | None = None,
                 skip_channels: dict | None = None):
        super().__init__()
        self.body = decoder(3, width, in_channels)
        enc = {**{l: VGG_CHANNELS[l] for l in SKIP_LAYERS}, **(skip_channels or {})}
        self.merge = nn.ModuleDict()
        level, ch = 3, None
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                ch = m.out_channels
            if isinstance(m, nn.Upsample):
                level -= 1
                layer = LEVEL_LAYERS[level]
                self.merge[layer] = nn.Conv2d(ch + enc[layer], ch, 1)
        self.pass_through()

    def pass_through(self) -> None:
        """Set every merge convolution to pass the decoder's features through unchanged
        (identity on them, zero weight on the skip features, zero bias)."""
        with torch.no_grad():
            for conv in self.merge.values():
                d = conv.out_channels
                conv.weight.zero_()
                conv.weight[:, :d, 0, 0] = torch.eye(d)
                conv.bias.zero_()

    def skip_channels(self) -> dict[str, int]:
        """Channels each skip connection expects from the encoder."""
        return {l: c.in_channels - c.out_channels for l, c in self.merge.items()}

    def forward(self, x: torch.Tensor, skips: dict) -> torch.Tensor:
        level = 3
        for m in self.body:
            x = m(x)
            if isinstance(m, nn.Upsample):
                level -= 1
                layer = LEVEL_LAYERS[level]
                s = (skips[layer] * DECODER_IN_SCALE).to(dtype=x.dtype)
                x = self.merge[layer](torch.cat([x, s.contiguous(memory_format=ff.NHWC)], 1))
        return x


def decode_total(dec: TotalDecoder, feats: dict, bf16: bool) -> torch.Tensor:
    """The image of ``feats`` (relu3_1 input, relu2_1 and relu1_1 skips; one image), in tiles
    (with an overlap that is cropped away, the skip features cropped to match) when the output
    exceeds :data:`~brushwork.methods.feedforward.TILE_PIXELS`."""
    t = feats[LAYER]
    skips = {l: feats[l] for l in SKIP_LAYERS}
    h, w = t.shape[-2:]
    if h * w * STRIDE * STRIDE <= ff.TILE_PIXELS:
        return ff.decode(lambda x: dec(x, skips), t, bf16)
    tile, overlap = ff.TILE // STRIDE, max(1, ff.OVERLAP // STRIDE)
    out = t.new_zeros(1, 3, h * STRIDE, w * STRIDE)
    for y0, y1, ry0, ry1 in ff._spans(h, tile, overlap, 1):
        for x0, x1, rx0, rx1 in ff._spans(w, tile, overlap, 1):
            part = {}
            for layer, f in skips.items():
                k = f.shape[-1] // w
                part[layer] = f[..., ry0 * k:ry1 * k, rx0 * k:rx1 * k]
            img = ff.decode(lambda x: dec(x, part), t[..., ry0:ry1, rx0:rx1], bf16)
            iy, ix = (y0 - ry0) * STRIDE, (x0 - rx0) * STRIDE
            out[..., y0 * STRIDE:y1 * STRIDE, x0 * STRIDE:x1 * STRIDE] = \
                img[..., iy:iy + (y1 - y0) * STRIDE, ix:ix + (x1 - x0) * STRIDE]
    return out


# ------------------------------------------------------------------------------- the method
class TotalST(ff.FeedForward):
    name = "totalst"
    summary = ("Total style transfer (Kim & Choi): intra-scale (per-layer) and inter-scale "
               "(joint, cross-layer) whitening-colouring of relu1_1/2_1/3_1 + one decoder with "
               "skip connections, one forward pass")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, SCALE_STATS)}
    capabilities = Capabilities(options=("weights",))
    border = True
    supports_tiling = False  # the API refuses tile / max_memory for it

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights("totalst", weights,
                                                                    DEFAULT_FILE, TRAIN_HINT,
                                                                    device, bf16)
        self.meta = meta
        if meta.get("encoder", "vgg") != "vgg":
            raise BrushworkError(f"{path}: totalst works with the VGG19 encoder only "
                                 f"(encoder {meta.get('encoder')!r} in metadata)")
        self.encoder = ff.make_encoder(meta, state, self.device, self.bf16, LAYER, path)
        self.weight_files = [path, getattr(self.encoder, "weights_file", None)]
        dec = TotalDecoder(ff.meta_float(meta, "width", 1.0, path))
        self.decoder = ff.load_frozen(dec, "decoder", state, path, self.device)

    def passes(self, c):
        return [ff.Pass(LAYERS[::-1], self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        return total_transform(cf, sf, c["scale_stats"], mask)[LAYER]

    def tile_plan(self, hw, passes, n_styles, tile, max_memory, border, mult, with_masks=False):
        if tile is not None:
            raise ControlError("totalst does not stylise tile by tile (its transforms take "
                               "whole-image statistics at every scale); leave tile unset")
        return None

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None, tile=None, max_memory=None) -> torch.Tensor:
        """``tile`` is refused (see :meth:`tile_plan`); large outputs are decoded in tiles
        on their own."""
        c, weights = begin(self, styles, style_weights, controls)
        self.tile_plan(None, None, len(styles), tile, max_memory, 0, STRIDE)
        scope = c["scale_stats"]
        clock = Clock()
        content, styles, masks, content_rgb = ff.prepare(content, styles, c, self.device)
        styles, masks, weights = ff.auto_region_styles(content, styles, masks, weights, c, seed)
        hw = tuple(content.shape[-2:])
        b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)
        x = ff.with_border(content, b, STRIDE)
        pm = None if masks is None else [ff.with_border(m, b, STRIDE) for m in masks]
        cf = ff.encode_layers_big(self.encoder, x, LAYERS, self.bf16)
        del x
        targets = []
        for j, s in enumerate(styles):
            sf = ff.encode(self.encoder, s, list(LAYERS), self.bf16)
            targets.append(total_transform(cf, sf, scope, None if pm is None else pm[j]))
            emit(callback, Progress(self.name, "step", j + 1, len(styles) + 1,
                                    elapsed=clock()))
        feats = {l: ff.combine(cf[l], [t[l] for t in targets], weights, pm, c["strength"])
                 for l in LAYERS}
        del targets, cf
        out = decode_total(self.decoder, feats, self.bf16)
        out = ff.finish(out[..., b:b + hw[0], b:b + hw[1]], hw, content_rgb)
        emit(callback, Progress(self.name, "done", len(styles) + 1, len(styles) + 1, size=hw,
                                elapsed=clock()))
        return out

    @torch.inference_mode()
    def reconstruct(self, content) -> torch.Tensor:
        """The content through encoder and decoder with its own features at every scale (what
        ``strength=0`` gives), in [0, 1], cropped like :meth:`stylize`."""
        x = to_tensor(content).to(self.device)
        hw = tuple(x.shape[-2:])
        b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)
        cf = ff.encode_layers_big(self.encoder, ff.with_border(x, b, STRIDE), LAYERS, self.bf16)
        out = decode_total(self.decoder, cf, self.bf16)
        return ff.finish(out[..., b:b + hw[0], b:b + hw[1]], hw, None)

"""AAMS: attention-aware multi-stroke style transfer (Yao et al. 2019).

A self-attention autoencoder: VGG19 up to relu4_1, a self-attention module on the relu4_1
features, a decoder. The module projects the (channel-normalised) features to queries and keys
(1x1 convs, ``inner`` channels) and to values (1x1 conv); position i attends to every position
j with ``alpha_ij = softmax_j(q_i . k_j / sqrt(inner))`` and gathers the context
``g_i = sum_j alpha_ij v_j``. A 1x1 conv on (f_i, g_i) and a sigmoid give the attention map
``A`` in (0, 1), one value per position; the module's output ``A f + (1 - A) g`` keeps a
position's own features where A is high and replaces them by their attended context elsewhere.
Trained for reconstruction only (``brushwork train aams``: the style is the content): pixel and
VGG19 perceptual losses on decoding that output, plus an L1 sparsity loss on A; so A stays high
only where a position cannot be rebuilt from the rest of the image: the salient, detailed
regions.

Stylisation (no attention module on the decoder's input): the content's relu4_1 features are
whitened; the style is encoded at ``strokes`` scales (``style_scale`` is the coarsest stroke,
each finer one 1/sqrt(2) smaller), each scale's features whitened and style-swapped onto the
whitened content (3x3 patches, normalised cross-correlation). The content's attention map is
clustered into ``strokes`` levels by k-means on its values; the most salient level takes the
finest stroke, the least salient the coarsest, and the levels' masks are blurred (Gaussian, in
feature positions) and normalised so the strokes blend smoothly. The fused features are
coloured with the style's mean and covariance (at the coarsest scale) and decoded.
``strokes = 1`` is the whitened single-scale style swap.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.blocks import decoder, style_swap
from ..core.image import resize
from ..core.protocol import MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Control
from ..core.regions import kmeans
from ..core.stats import colour, normalize, whiten
from ..core.vgg import VGG19
from ..errors import BrushworkError
from . import feedforward as ff

DEFAULT_FILE = "aams_vgg.safetensors"
TRAIN_HINT = ("brushwork train aams --content DIR --styles DIR --out FILE "
              "--init-decoder wct_vgg.safetensors")
LAYER = "relu4_1"
CHANNELS = 512
MAX_STROKES = 5
STROKES = Control("strokes", "int", 3,
                  "number of stroke sizes (aams): the style swapped in at this many scales, "
                  "fine strokes in the content's salient regions, coarse ones elsewhere",
                  low=1, high=MAX_STROKES)
# Each finer stroke: the style image 1/sqrt(2) smaller than the next coarser one.
STROKE_STEP = 2 ** -0.5
# Style patches are taken on a grid of this stride (4x fewer patches than every position).
SWAP_STRIDE = 2
SWAP_PATCH = 3
# The attention runs on at most this many positions (larger maps: on a resized copy).
MAX_ATTENTION_POSITIONS = 4096
# Blur (in relu4_1 positions) of the stroke-level masks before they are blended.
FUSION_SIGMA = 1.5
MIN_STYLE_SIDE = 32


class SelfAttention(nn.Module):
    """The attention module on relu4_1 features: ``forward(f) -> (output, attention map)``."""

    def __init__(self, channels: int = CHANNELS, inner: int | None = None):
        super().__init__()
        self.inner = inner or max(1, channels // 8)
        self.query = nn.Conv2d(channels, self.inner, 1)
        self.key = nn.Conv2d(channels, self.inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Conv2d(2 * channels, 1, 1)
        with torch.no_grad():  # start as: context = attention-weighted mean, A ~ 0.88
            self.value.weight.copy_(torch.eye(channels)[..., None, None])
            self.value.bias.zero_()
            self.gate.weight.mul_(0.1)
            self.gate.bias.fill_(2.0)

    def weights(self, f: torch.Tensor) -> torch.Tensor:
        """alpha (N, HW, HW): row i = how position i attends to every position (rows sum to 1)."""
        n = normalize(f)
        q = self.query(n).flatten(2)
        k = self.key(n).flatten(2)
        return torch.softmax(q.transpose(1, 2) @ k / math.sqrt(self.inner), dim=-1)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.weights(f)
        v = self.value(f).flatten(2)
        g = (v @ alpha.transpose(1, 2)).view_as(f)
        a = torch.sigmoid(self.gate(torch.cat([normalize(f), normalize(g)], 1)))
        return a * f + (1 - a) * g, a

    def attention_map(self, f: torch.Tensor) -> torch.Tensor:
        """A (N, 1, H, W) in (0, 1) for features f (N, C, H, W); maps with more than
        :data:`MAX_ATTENTION_POSITIONS` positions are attended on a resized copy and the map
        resized back."""
        h, w = f.shape[-2:]
        if h * w <= MAX_ATTENTION_POSITIONS:
            return self(f)[1]
        s = math.sqrt(MAX_ATTENTION_POSITIONS / (h * w))
        small = F.interpolate(f, size=(max(1, int(h * s)), max(1, int(w * s))), mode="bilinear",
                              align_corners=False)
        return F.interpolate(self(small)[1], size=(h, w), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------ the transform's parts
def stroke_scales(n: int) -> list[float]:
    """Style scale of each stroke, finest first, relative to the coarsest (1)."""
    return [STROKE_STEP ** (n - 1 - k) for k in range(n)]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), edge values replicated."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"),
                    k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def stroke_weights(att: torch.Tensor, n: int, sigma: float = FUSION_SIGMA) -> torch.Tensor:
    """Blending weights (n, 1, H, W), summing to 1 per position, of the n strokes (finest
    first) for an attention map (1, 1, H, W): k-means of the attention values into n levels,
    the most salient level on the finest stroke, the least salient on the coarsest (fewer
    distinct levels than n: spread over the strokes in the same order); masks blurred by
    ``sigma`` positions, then normalised."""
    h, w = att.shape[-2:]
    if n == 1:
        return torch.ones(1, 1, h, w, dtype=att.dtype, device=att.device)
    vals = att.flatten().double()
    lo, hi = vals.min(), vals.max()
    vals = (vals - lo) / (hi - lo) if hi > lo else torch.zeros_like(vals)
    centres, labels = kmeans(vals[:, None], n)
    k = centres.shape[0]
    rank = torch.empty(k, dtype=torch.long, device=att.device)
    rank[centres[:, 0].argsort(descending=True)] = torch.arange(k, device=att.device)
    stroke = rank[labels] * (n - 1) // max(k - 1, 1)
    masks = F.one_hot(stroke, n).T.reshape(n, 1, h, w).to(att.dtype)
    masks = gaussian_blur(masks, sigma) if sigma > 0 else masks
    return masks / masks.sum(0, keepdim=True).clamp_min(1e-8)


def stroke_key(k: int) -> str:
    return f"{LAYER}@stroke{k}"


def stroke_features(enc, style: torch.Tensor, n: int, bf16: bool,
                    full: torch.Tensor | None = None) -> list[torch.Tensor]:
    """relu4_1 features of the style at each of ``n`` stroke scales, finest first (the last
    one: the style as given; ``full``: those features when already taken)."""
    h, w = style.shape[-2:]
    out = []
    for k, s in enumerate(stroke_scales(n)):
        if k == n - 1 and full is not None:
            out.append(full)
            continue
        x = style if k == n - 1 else resize(
            style, (max(MIN_STYLE_SIDE, round(h * s)), max(MIN_STYLE_SIDE, round(w * s))))
        out.append(ff.encode(enc, x, [LAYER], bf16)[LAYER])
    return out


def multi_stroke(f: torch.Tensor, style_feats: list[torch.Tensor], att: torch.Tensor,
                 sigma: float = FUSION_SIGMA) -> torch.Tensor:
    """The AAMS target features: whitened content ``f`` (1, C, H, W) style-swapped with each
    whitened style map of ``style_feats`` (finest stroke first, the last one the coarsest),
    fused by :func:`stroke_weights` of ``att``, then whitened again and coloured with the
    coarsest map's mean and covariance."""
    white = whiten(f[0].flatten(1))[0].view_as(f)
    weights = stroke_weights(att, len(style_feats), sigma)
    fused = 0
    for k, s in enumerate(style_feats):
        coarsest = k == len(style_feats) - 1
        ws, s_mean, s_colour = whiten(s[0].flatten(1), colouring=coarsest)
        fused = fused + weights[k:k + 1] * style_swap(white, ws.view_as(s), SWAP_PATCH,
                                                      SWAP_STRIDE)
    # the blend of averaged patches has less than unit variance: whiten it again with its own
    # statistics so the colouring gives it exactly the style's mean and covariance
    return colour(whiten(fused[0].flatten(1))[0], s_mean, s_colour).view_as(fused)


class AAMS(ff.FeedForward):
    name = "aams"
    summary = ("AAMS (Yao et al. 2019): whitened style swap at several stroke sizes, fine strokes "
               "where the content's self-attention map is high, coarse ones elsewhere")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, STROKES)}
    border = True

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            "aams", weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        self.meta = meta
        if meta.get("encoder", "vgg") != "vgg":
            raise BrushworkError(f"{path}: aams needs a VGG19 encoder file")
        inner = int(ff.meta_float(meta, "inner", CHANNELS // 8, path))
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer=LAYER,
                             channels_last=True)
        self.weight_files = [path, self.encoder.weights_file]
        self.attention = ff.load_frozen(SelfAttention(CHANNELS, inner), "attention", state, path,
                                        self.device)
        self.decoder = ff.load_frozen(decoder(4, ff.meta_float(meta, "width", 1.0, path)),
                                      "decoder", state, path, self.device)

    def passes(self, c):
        return [ff.Pass((LAYER,), self.decoder)]

    def style_features(self, style, p, c):
        feats = {stroke_key(k): f for k, f in
                 enumerate(stroke_features(self.encoder, style, c["strokes"], self.bf16))}
        feats[LAYER] = feats[stroke_key(c["strokes"] - 1)]
        return feats

    def attention_map(self, f: torch.Tensor) -> torch.Tensor:
        """The attention map (1, 1, H, W) in (0, 1) of relu4_1 features ``f``."""
        with ff.autocast(f.device, False):
            return self.attention.attention_map(f.float().contiguous())

    def transform(self, cf, sf, mask, c, state):
        f = cf[LAYER]
        n = c["strokes"]
        feats = [sf[stroke_key(k)] for k in range(n)]
        return multi_stroke(f, feats, self.attention_map(f))

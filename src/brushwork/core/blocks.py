"""Shared network blocks and feature transforms for the feed-forward methods.

* transforms: :func:`style_swap` (Chen & Schmidt 2016); AdaIN, WCT and every other feature
  statistic live in :mod:`brushwork.core.stats`
* networks: :func:`decoder` (mirror of VGG19 up to relu{L}_1: reflect padding, nearest
  upsampling, a ``width`` multiplier for tiny test configs), :class:`SmallEncoder` (a thin
  VGG-shaped encoder for collaborative distillation), :class:`SAModule` / :class:`SATransform`
  (SANet, Park & Lee 2019), :class:`LinearTransform` (LST, Li et al. 2019)
* multi-style: :class:`ConditionalInstanceNorm2d` (Dumoulin et al. 2017),
  :class:`ConditionalResBlock`, :class:`AnisotropicStrokeModule` and
  :class:`ProjectionDiscriminator` (ASMA-GAN), :func:`hinge_d_loss`, :func:`hinge_g_loss`
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import BrushworkError
from .stats import channel_mean, normalize, rms, second_moment

# (channels, number of convs) of VGG19's five blocks.
VGG_BLOCKS = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]
LEVEL_LAYERS = {1: "relu1_1", 2: "relu2_1", 3: "relu3_1", 4: "relu4_1", 5: "relu5_1"}
LAYER_LEVELS = {v: k for k, v in LEVEL_LAYERS.items()}


# ------------------------------------------------------------------------------------ transforms
def pad_for_patches(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad H, W by ``pad`` (reflect; replicate for maps too small to reflect) so that every
    position has a full patch."""
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    return F.pad(x, (pad,) * 4, mode=mode)


def patch_kernels(style_feat: torch.Tensor, patch: int = 3, stride: int = 1):
    """The style's ``patch`` x ``patch`` patches as rows (L, C*k*k), and the same rows scaled to
    unit norm (for normalised cross-correlation matching). One image."""
    kernels = F.unfold(pad_for_patches(style_feat, patch // 2), patch, stride=stride)[0].T
    return kernels, kernels / kernels.norm(dim=1, keepdim=True).clamp_min(1e-8)


def patch_scores(content_padded: torch.Tensor, style_padded: torch.Tensor, patch: int,
                 stride: int, rows: tuple[int, int]) -> torch.Tensor:
    """Dot products (P, Q) of the ``patch`` x ``patch`` patches of (C, H, W) padded content
    features centred on the positions of ``rows`` (P = rows x width) with the style's patches
    (top-left corners every ``stride`` positions of the (C, H', W') padded style).

    A patch's dot product is the sum over its k*k offsets of single-position dot products, so
    this is one C-deep matrix product of positions followed by k*k shifted additions: the
    numbers of the (C*k*k)-deep product of unfolded patches for k*k times less arithmetic."""
    (y0, y1), k = rows, patch
    w = content_padded.shape[-1] - k + 1
    hs, ws = style_padded.shape[-2:]
    qh, qw = (hs - k) // stride + 1, (ws - k) // stride + 1
    band = content_padded[:, y0:y1 + k - 1].flatten(1)  # (C, band positions)
    m = (band.T @ style_padded.flatten(1)).view(y1 - y0 + k - 1, w + k - 1, hs, ws)
    out = None
    for oy in range(k):
        for ox in range(k):
            part = m[oy:oy + y1 - y0, ox:ox + w,
                     oy:oy + stride * (qh - 1) + 1:stride, ox:ox + stride * (qw - 1) + 1:stride]
            out = part.clone() if out is None else out.add_(part)
    return out.reshape((y1 - y0) * w, qh * qw)


def style_swap(content_feat: torch.Tensor, style_feat: torch.Tensor, patch: int = 3,
               stride: int = 1, chunk: int = 4096) -> torch.Tensor:
    """Replace every content patch by its most similar (normalised cross-correlation) style
    patch and average the overlaps (Chen & Schmidt 2016). One image at a time.

    Scores are :func:`patch_scores` over the style patches' norms (the content patch's own
    norm does not change which style patch wins); the chosen patches are added back offset by
    offset. The content is processed in bands of about ``chunk`` positions, so memory stays
    bounded for large images."""
    if content_feat.shape[0] != 1 or style_feat.shape[0] != 1:
        raise BrushworkError("style_swap works on one image at a time (batch of 1)")
    c, h, w = content_feat.shape[1:]
    k, pad = patch, patch // 2
    sp = pad_for_patches(style_feat, pad)[0].contiguous()
    hs, ws = sp.shape[-2:]
    qh, qw = (hs - k) // stride + 1, (ws - k) // stride + 1
    sq = sp.pow(2).sum(0)  # squared norm of each style position, summed over each patch:
    norm2 = sum(sq[oy:oy + stride * (qh - 1) + 1:stride, ox:ox + stride * (qw - 1) + 1:stride]
                for oy in range(k) for ox in range(k))
    inv_norm = norm2.flatten().sqrt().clamp_min(1e-8).reciprocal()
    cp = pad_for_patches(content_feat, pad)[0].contiguous()
    summed = torch.zeros_like(cp)
    count = torch.zeros_like(cp[:1])
    flat = sp.flatten(1)
    rows = max(1, chunk // w)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        best = (patch_scores(cp, sp, k, stride, (y0, y1)) * inv_norm).argmax(1)
        top, left = best // qw * stride, best % qw * stride  # the chosen patches' corners
        for oy in range(k):
            for ox in range(k):
                src = (top + oy) * ws + (left + ox)
                summed[:, y0 + oy:y1 + oy, ox:ox + w] += flat[:, src].view(c, y1 - y0, w)
                count[:, y0 + oy:y1 + oy, ox:ox + w] += 1
    out = summed / count
    return out[None, :, pad:pad + h, pad:pad + w].contiguous()


# -------------------------------------------------------------------------------------- networks
def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class ReflectPad1(nn.Module):
    """``nn.ReflectionPad2d(1)`` written into one tensor of the input's memory format: same
    values, but channels-last tensors stay in that layout (PyTorch's reflection pad copies
    them; decoders run ~1.6x faster) and the image is copied once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < 2 or x.shape[-1] < 2:
            return F.pad(x, (1, 1, 1, 1), mode="reflect")  # raises as nn.ReflectionPad2d does
        n, c, h, w = x.shape
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() else torch.contiguous_format
        out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=fmt)
        out[:, :, 1:-1, 1:-1] = x
        out[:, :, 0, 1:-1] = x[:, :, 1]
        out[:, :, -1, 1:-1] = x[:, :, -2]
        out[..., 0] = out[..., 2]
        out[..., -1] = out[..., -3]
        return out


def _conv(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    layers = [ReflectPad1(), nn.Conv2d(c_in, c_out, 3)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def _encoder_plan(level: int) -> list:
    """VGG19's convs up to relu{level}_1 as (c_in, c_out) with 'pool' between blocks."""
    if level not in LEVEL_LAYERS:
        raise BrushworkError(f"level must be 1..5 (relu1_1..relu5_1), got {level}")
    plan, c_in = [], 3
    for b, (c, n) in enumerate(VGG_BLOCKS[:level], start=1):
        if b > 1:
            plan.append("pool")
        for _ in range(n if b < level else 1):
            plan.append((c_in, c))
            c_in = c
    return plan


class Scale(nn.Module):
    """Multiply by a fixed constant (not a parameter, not saved)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"{self.factor:g}"


# VGG19 features on Caffe's 0-255 scale are O(100); decoders see them divided by this, which
# makes training converge several times faster (the first convs start at a sensible scale).
DECODER_IN_SCALE = 0.01


def decoder(level: int, width: float = 1.0, in_channels: int | None = None,
            in_scale: float = DECODER_IN_SCALE) -> nn.Sequential:
    """Decoder from relu{level}_1 features to RGB: the mirror image of VGG19 up to that layer
    (reflect-padded 3x3 convs, ReLU, nearest x2 upsampling in place of pooling; no ReLU on the
    last conv), after a fixed ``in_scale`` multiplication. ``width`` scales the hidden
    channels; ``in_channels`` defaults to VGG's."""
    plan = _encoder_plan(level)
    layers: list[nn.Module] = [Scale(in_scale)]
    first = True
    for i, item in enumerate(reversed(plan)):
        if item == "pool":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        c_in, c_out = item  # the encoder conv c_in -> c_out; mirrored: c_out -> c_in
        src = (in_channels or c_out) if first else _ch(c_out, width)
        last = i == len(plan) - 1
        dst = 3 if last else _ch(c_in, width)
        layers += _conv(src, dst, relu=not last)
        first = False
    return nn.Sequential(*layers)


def decoder_level(dec: nn.Sequential) -> int:
    """Number of upsamplings + 1 (the relu level a decoder starts from)."""
    return 1 + sum(isinstance(m, nn.Upsample) for m in dec)


class SmallEncoder(nn.Module):
    """A thin VGG19-shaped encoder (RGB [0, 1] in, zero padding, max pooling) up to
    relu{level}_1, ``width`` times VGG's channels. The student of collaborative distillation
    (Wang et al. 2020). ``forward(x, layers) -> dict`` like :class:`brushwork.vgg.VGG19`."""

    def __init__(self, level: int = 4, width: float = 0.25):
        super().__init__()
        self.level, self.width = level, width
        self.convs = nn.ModuleList()
        self.names: list[str] = []
        c_prev = 3
        for b, (c, n) in enumerate(VGG_BLOCKS[:level], start=1):
            for i in range(1, (n if b < level else 1) + 1):
                c_out = _ch(c, width)
                self.convs.append(nn.Conv2d(c_prev, c_out, 3, padding=1))
                self.names.append(f"relu{b}_{i}")
                c_prev = c_out
        self.channels = {LEVEL_LAYERS[l]: _ch(VGG_BLOCKS[l - 1][0], width)
                         for l in range(1, level + 1)}

    def forward(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        layers = [layers] if isinstance(layers, str) else list(layers)
        unknown = [l for l in layers if l not in self.names]
        if unknown:
            raise BrushworkError(f"the small encoder has no layer(s) {', '.join(unknown)}")
        deepest = max(self.names.index(l) for l in layers)
        h, out = x * 2 - 1, {}
        for i, (name, conv) in enumerate(zip(self.names, self.convs)):
            if i > 0 and name.endswith("_1"):
                h = F.max_pool2d(h, 2, 2)
            h = F.relu_(conv(h))
            if name in layers:
                out[name] = h
            if i == deepest:
                break
        return out


class SAModule(nn.Module):
    """Style-attentional module (SANet): attention from normalised content queries to
    normalised style keys, values from the raw style, added back to the content."""

    def __init__(self, channels: int, chunk: int = 4096):
        super().__init__()
        self.f = nn.Conv2d(channels, channels, 1)
        self.g = nn.Conv2d(channels, channels, 1)
        self.h = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.chunk = chunk

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        q = self.f(normalize(content)).flatten(2).transpose(1, 2)  # (B, Nc, C)
        k = self.g(normalize(style)).flatten(2)                    # (B, C, Ns)
        v = self.h(style).flatten(2).transpose(1, 2)               # (B, Ns, C)
        parts = [torch.softmax(q[:, i:i + self.chunk] @ k, dim=-1) @ v
                 for i in range(0, q.shape[1], self.chunk)]
        o = torch.cat(parts, 1).transpose(1, 2).reshape(content.shape)
        return content + self.out(o)


class SATransform(nn.Module):
    """SANet's transform: attention at relu4_1 and relu5_1, the latter upsampled and added,
    merged by a reflect-padded 3x3 conv."""

    def __init__(self, channels: int = 512):
        super().__init__()
        self.sa4 = SAModule(channels)
        self.sa5 = SAModule(channels)
        self.merge = nn.Conv2d(channels, channels, 3)

    def forward(self, c4, s4, c5, s5) -> torch.Tensor:
        a4 = self.sa4(c4, s4)
        a5 = F.interpolate(self.sa5(c5, s5), size=c4.shape[-2:], mode="nearest")
        return self.merge(F.pad(a4 + a5, (1, 1, 1, 1), mode="reflect"))


class _CovNet(nn.Module):
    """LST's matrix branch: convs compressing to ``dim`` channels, their covariance, an FC."""

    def __init__(self, channels: int, dim: int = 32, width: float = 1.0):
        super().__init__()
        mid1, mid2 = _ch(channels // 2, width), _ch(channels // 4, width)
        self.convs = nn.Sequential(nn.Conv2d(channels, mid1, 3, 1, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(mid1, mid2, 3, 1, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(mid2, dim, 3, 1, 1))
        self.fc = nn.Linear(dim * dim, dim * dim)
        self.dim = dim

    def forward(self, centred: torch.Tensor) -> torch.Tensor:
        cov = second_moment(self.convs(centred).flatten(2))
        return self.fc(cov.flatten(1)).view(-1, self.dim, self.dim)


class LinearTransform(nn.Module):
    """LST (Li et al. 2019): T = S(style) @ C(content), both ``dim`` x ``dim`` matrices learned
    from feature covariances, applied to the compressed, centred content features; the result is
    un-compressed and given the style's mean."""

    def __init__(self, channels: int, dim: int = 32, width: float = 1.0):
        super().__init__()
        self.cnet = _CovNet(channels, dim, width)
        self.snet = _CovNet(channels, dim, width)
        self.compress = nn.Conv2d(channels, dim, 1)
        self.unzip = nn.Conv2d(dim, channels, 1)
        self.dim = dim

    # The matrix branches see features divided by their RMS, and the scale goes back in as the
    # ratio rms(style) / rms(content) (as in WCT, whose matrix scales the same way): VGG
    # features on the Caffe 0-255 scale would otherwise give products of covariances ~1e8 at
    # initialisation, and training diverges.
    def matrix(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The style half (S matrix, style mean); can be blended linearly between styles."""
        s_mean = channel_mean(style, keepdim=True)
        centred = style - s_mean
        scale = rms(centred)
        return self.snet(centred / scale) * scale[..., 0], s_mean

    def apply(self, content: torch.Tensor, s_matrix: torch.Tensor, s_mean: torch.Tensor):
        c_mean = channel_mean(content, keepdim=True)
        centred = content - c_mean
        scale = rms(centred)
        t = s_matrix @ self.cnet(centred / scale) / scale[..., 0]
        z = self.compress(centred)
        b, d, h, w = z.shape
        return self.unzip((t @ z.flatten(2)).view(b, d, h, w)) + s_mean

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.apply(content, *self.matrix(style))


# -------------------------------------------------------------------- multi-style blocks
# Conditional instance norm (Dumoulin et al. 2017), the conditional ResBlock and the
# anisotropic stroke module of ASMA-GAN, and a multi-scale projection discriminator.

class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm without affine, then per-style scale/shift: IN(x) * gamma[y] + beta[y].

    ``style`` is a (B, N) weight matrix: a one-hot row selects one style, a convex mix of rows
    interpolates gamma and beta (style blending). ``init='identity'`` starts at gamma=1,
    beta=0 (Dumoulin); ``'xavier'`` draws both tables as embeddings (ASMA-GAN).
    """

    def __init__(self, channels: int, n_styles: int, init: str = "identity"):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n_styles, channels))
        self.beta = nn.Parameter(torch.zeros(n_styles, channels))
        if init == "xavier":
            nn.init.xavier_uniform_(self.gamma)
            nn.init.xavier_uniform_(self.beta)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = style.to(self.gamma.dtype)
        g = (style @ self.gamma)[:, :, None, None]
        b = (style @ self.beta)[:, :, None, None]
        return F.instance_norm(x) * g.to(x.dtype) + b.to(x.dtype)


class ConditionalAffine(nn.Module):
    """Per-style scale and shift without normalisation: x * gamma[y] + beta[y] (``style`` rows
    as in :class:`ConditionalInstanceNorm2d`; identity start). asma's ``film`` decoder norm."""

    def __init__(self, channels: int, n_styles: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n_styles, channels))
        self.beta = nn.Parameter(torch.zeros(n_styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = style.to(self.gamma.dtype)
        g, b = (style @ self.gamma)[:, :, None, None], (style @ self.beta)[:, :, None, None]
        return x * g.to(x.dtype) + b.to(x.dtype)


def one_hot_styles(ids, n_styles: int) -> torch.Tensor:
    """A list/tensor of style indices -> (B, N) one-hot float rows."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    return F.one_hot(ids, n_styles).float()


class ConditionalResBlock(nn.Module):
    """ASMA-GAN's conditional ResBlock: (replicate-pad, conv3x3, CIN) x 2 + skip."""

    def __init__(self, channels: int, n_styles: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, bias=False)
        self.norm1 = ConditionalInstanceNorm2d(channels, n_styles, init="xavier")
        self.norm2 = ConditionalInstanceNorm2d(channels, n_styles, init="xavier")

    def forward(self, x, style):
        h = self.norm1(self.conv1(F.pad(x, (1, 1, 1, 1), mode="replicate")), style)
        h = self.norm2(self.conv2(F.pad(h, (1, 1, 1, 1), mode="replicate")), style)
        return x + h


class AnisotropicStrokeModule(nn.Module):
    """ASM (ASMA-GAN): a GRU-like gate fusing the coarse stylised stream with fine features.

    ``s`` (B, C_s, h, w) is the trunk output at 1/16, ``f`` (B, C_f, 8h, 8w) the encoder's 1/2
    features, ``label`` (B, N) the artist code (+1 target / -1 elsewhere, or a soft mix).
    x_t = conv3x3(up8([s; a])) (``mode``: nearest as in the paper, or bilinear);
    q = [maxpool; avgpool]([x_t; f]); r, z = sigmoid(W q);
    h^ = tanh(IN(conv1x1([r * x_t; f]))); out = z * h^ + (1 - z) * x_t.
    ``stroke`` (optional, scalar or (B, 1, H, W) map of exponents > 0) reshapes the update gate
    as z ** stroke: > 1 lowers z (more of the coarse stream: larger strokes), < 1 raises
    it (more fine detail: smaller strokes), 1 is the learned gate. Returns (out, r, z).
    """

    def __init__(self, c_s: int, c_f: int, n_styles: int, up: int = 8, mode: str = "nearest"):
        super().__init__()
        self.up, self.mode = up, mode
        self.conv_x = nn.Conv2d(c_s + n_styles, c_f, 3, padding=1, bias=False)
        self.w_r = nn.Linear(4 * c_f, c_f)
        self.w_z = nn.Linear(4 * c_f, c_f)
        self.fuse = nn.Conv2d(2 * c_f, c_f, 1, bias=False)

    def forward(self, s, f, label, stroke=None):
        b, _, h, w = s.shape
        a = label.to(s.dtype)[:, :, None, None].expand(b, label.shape[1], h, w)
        x_t = self.conv_x(F.interpolate(torch.cat([s, a], 1), scale_factor=self.up,
                                        mode=self.mode))
        x_t = x_t[..., :f.shape[-2], :f.shape[-1]]
        both = torch.cat([x_t, f], 1)
        q = torch.cat([both.amax((2, 3)), both.mean((2, 3))], 1)
        r = torch.sigmoid(self.w_r(q))[:, :, None, None]
        z = torch.sigmoid(self.w_z(q))[:, :, None, None]
        h_hat = torch.tanh(F.instance_norm(self.fuse(torch.cat([r * x_t, f], 1))))
        z = stroke_gate(z, stroke, x_t.shape[-2:])
        return z * h_hat + (1 - z) * x_t, r, z


def stroke_gate(z: torch.Tensor, stroke, size) -> torch.Tensor:
    """The update gate ``z`` raised to the stroke control: a number, or a (1, 1, h, w) map
    resized to ``size`` (a larger exponent keeps more of the coarse state: larger strokes)."""
    if stroke is None:
        return z
    if torch.is_tensor(stroke) and stroke.dim() == 4:
        stroke = F.interpolate(stroke.to(z.dtype), size=tuple(size), mode="bilinear",
                               align_corners=False)
    return z.clamp_min(1e-6) ** stroke


class ProjectionDiscriminator(nn.Module):
    """Multi-scale projection discriminator (ASMA-GAN): one spectral-normalised conv stack,
    three taps (1/4, 1/16, 1/64). Each tap: conv5x5 -> LeakyReLU -> global average pool =
    phi (``head`` dims); logit = linear(phi) + <embed[y], phi>. ``forward(x, style)`` with
    ``style`` (B, N) one-hot (or a mix) returns a list of three (B,) logits.
    """

    def __init__(self, n_styles: int, chn: int = 32, head: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        widths = [(3, chn, 2 * chn), (2 * chn, 4 * chn, 8 * chn), (8 * chn, 8 * chn, 16 * chn)]
        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.linears = nn.ModuleList()
        self.embeds = nn.ParameterList()
        for c_in, c_mid, c_out in widths:
            self.blocks.append(nn.Sequential(
                sn(nn.Conv2d(c_in, c_mid, 5, 2, 2)), nn.LeakyReLU(0.2),
                sn(nn.Conv2d(c_mid, c_out, 5, 2, 2)), nn.LeakyReLU(0.2)))
            self.heads.append(nn.Sequential(sn(nn.Conv2d(c_out, head, 5, 1, 2)), nn.LeakyReLU(0.2)))
            self.linears.append(sn(nn.Linear(head, 1)))
            self.embeds.append(nn.Parameter(torch.empty(n_styles, head)))
            nn.init.xavier_uniform_(self.embeds[-1])

    def forward(self, x, style):
        logits, h = [], x
        for block, head, lin, emb in zip(self.blocks, self.heads, self.linears, self.embeds):
            h = block(h)
            phi = head(h).mean((2, 3))
            proj = ((style.to(phi.dtype) @ emb) * phi).sum(1)
            logits.append(lin(phi).squeeze(1) + proj)
        return logits


def hinge_d_loss(real_logits, fake_logits) -> torch.Tensor:
    """mean relu(1 - D(real)) + mean relu(1 + D(fake)), summed over scales (lists of tensors)."""
    loss = 0.0
    for r in real_logits:
        loss = loss + F.relu(1 - r).mean()
    for f in fake_logits:
        loss = loss + F.relu(1 + f).mean()
    return loss


def hinge_g_loss(fake_logits) -> torch.Tensor:
    """-mean D(G(x)) summed over scales."""
    return sum(-f.mean() for f in fake_logits)

"""EFANet: exchangeable feature alignment (Wu, Song, Zhou, Gong & Huang, AAAI 2020).

Content and style are encoded by VGG19 up to relu4_1 (or relu3_1: the ``level`` metadata) and
analysed *jointly* by a feature exchange block (:class:`ExchangeBlock`) before fusion:

1. both maps are channel-normalised (``n = (f - mean) / std``, :func:`~brushwork.core.stats.
   mean_std`) and compressed by a shared 1x1 convolution ``P`` to a ``dim``-channel code
   ``z``; the content's code is the *purified* content feature, trained by the whitening loss
   (:func:`whitening_loss`: its covariance should be the identity, so it carries the image's
   structure without the channel correlations that make up its style);
2. the covariance (Gram matrix of the centred code, :func:`~brushwork.core.stats.
   second_moment`) of each code goes through a shared FC layer to an embedding ``e_c``,
   ``e_s``; the *common* (exchangeable) feature of the pair is an FC layer on
   ``[(e_c + e_s) / 2, e_c * e_s]``, the same for (content, style) and (style, content);
3. the style embedding is *aligned* to the common feature: an FC layer on ``[e_s, e_com]``
   gives a ``dim`` x ``dim`` matrix ``T``, which colours the purified content code;
4. fusion: ``target = std_s * (n_c + exchange * U(T z_c)) + mean_s`` (``U``: a 1x1 convolution
   back to the encoder's channels, no bias, so the target has exactly the style's channel
   means). With ``T = 0`` (the trainer's start, or ``exchange=0``) this is AdaIN; the learned
   exchange adds the pair-dependent correction.

The target is decoded by the mirror image of VGG19 (:func:`brushwork.core.blocks.decoder`).

Simplified against the paper (documented choices, kept small enough to train on a CPU): one
exchange block at the deepest encoder level instead of a block per decoder scale; the
exchange works on a ``dim``-channel code (default 32) by 1x1 convolutions and FC layers; the
fusion is the AdaIN-residual form above.

Training (``brushwork train efanet``): exchange block and decoder together; content loss
(the output's features at the block's level vs the target), style loss (relative Gram
matrix distance at relu1_1..relu4_1, the paper's Gram statistic) and the whitening loss of the
content code.

Controls: strength, several styles with weights, masks (a style per region; the content's
channel statistics taken in the region, as in AdaIN's spatial control), colour preservation,
style scale, ``exchange`` (the weight of the learned correction).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.protocol import MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Control
from ..core.stats import mean_std, second_moment
from ..errors import BrushworkError
from . import feedforward as ff

DEFAULT_FILE = "efanet_vgg.safetensors"
TRAIN_HINT = "brushwork train efanet --content DIR --styles DIR --out FILE"
EXCHANGE = Control("exchange", "float", 1.0,
                   "weight of EFANet's learned exchange correction: 0 = the AdaIN baseline of "
                   "the same network, 1 = as trained", low=0.0, high=2.0)


# ---------------------------------------------------------------------------- the exchange
def normalise(feat: torch.Tensor, mask: torch.Tensor | None = None) -> tuple:
    """(channel-normalised map, mean, std) of (B, C, H, W) features; with ``mask`` the
    statistics are the region's (AdaIN's spatial control: sums over the mask, floor 1e-6)."""
    if mask is None:
        mean, std = mean_std(feat, keepdim=True)
    else:
        mean, std = mean_std(feat, mask, keepdim=True, normalise="sums", floor=1e-6)
    return (feat - mean) / std, mean, std


def code_covariance(z: torch.Tensor) -> torch.Tensor:
    """(B, d, d) covariance of (B, d, H, W) codes (centred per image, divided by H W)."""
    flat = z.flatten(2)
    return second_moment(flat - flat.mean(-1, keepdim=True))


def whitening_loss(z: torch.Tensor) -> torch.Tensor:
    """EFANet's whitening loss on purified content codes (B, d, H, W): the mean squared
    difference between each code's covariance (:func:`code_covariance`) and the identity."""
    cov = code_covariance(z)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return F.mse_loss(cov, eye.expand_as(cov))


class ExchangeBlock(nn.Module):
    """The feature exchange block on ``channels``-channel encoder features (see the module
    docstring): ``compress`` (P), ``embed`` (the shared Gram embedding), ``common``, ``align``
    (-> T) and ``expand`` (U). ``align`` starts at zero, so a fresh block is AdaIN."""

    def __init__(self, channels: int, dim: int = 32, hidden: int = 256):
        super().__init__()
        self.dim = dim
        self.compress = nn.Conv2d(channels, dim, 1, bias=False)
        self.embed = nn.Linear(dim * dim, hidden)
        self.common = nn.Linear(2 * hidden, hidden)
        self.align = nn.Linear(2 * hidden, dim * dim)
        self.expand = nn.Conv2d(dim, channels, 1, bias=False)
        nn.init.zeros_(self.align.weight)
        nn.init.zeros_(self.align.bias)

    def code(self, n: torch.Tensor) -> torch.Tensor:
        """The ``dim``-channel code of channel-normalised features."""
        return self.compress(n)

    def embedding(self, z: torch.Tensor) -> torch.Tensor:
        """(B, hidden) embedding of a code's covariance."""
        return F.relu(self.embed(code_covariance(z).flatten(1)))

    def common_feature(self, e_c: torch.Tensor, e_s: torch.Tensor) -> torch.Tensor:
        """The exchangeable feature of a pair of embeddings (symmetric in its arguments)."""
        return F.relu(self.common(torch.cat([(e_c + e_s) / 2, e_c * e_s], 1)))

    def matrix(self, e_s: torch.Tensor, e_com: torch.Tensor) -> torch.Tensor:
        """(B, dim, dim) colouring matrix T: the style embedding aligned to the common one."""
        return self.align(torch.cat([e_s, e_com], 1)).view(-1, self.dim, self.dim)

    def forward(self, content: torch.Tensor, style: torch.Tensor, *,
                content_mask: torch.Tensor | None = None, exchange: float = 1.0,
                return_code: bool = False):
        """Target features for (B, C, H, W) ``content`` and (B or 1, C, H', W') ``style``;
        ``return_code``: also the purified content code (for the whitening loss)."""
        n_c, _, _ = normalise(content, content_mask)
        n_s, s_mean, s_std = normalise(style)
        z_c, z_s = self.code(n_c), self.code(n_s)
        e_c, e_s = self.embedding(z_c), self.embedding(z_s)
        if e_s.shape[0] != e_c.shape[0]:
            e_s = e_s.expand(e_c.shape[0], -1)
            s_mean = s_mean.expand(e_c.shape[0], -1, -1, -1)
            s_std = s_std.expand(e_c.shape[0], -1, -1, -1)
        t = self.matrix(e_s, self.common_feature(e_c, e_s))
        b, d, h, w = z_c.shape
        corr = self.expand((t @ z_c.flatten(2)).view(b, d, h, w))
        out = s_std * (n_c + exchange * corr) + s_mean
        return (out, z_c) if return_code else out


# ------------------------------------------------------------------------------ the method
class EFANet(ff.FeedForward):
    name = "efanet"
    summary = ("EFANet (Wu et al. 2020): content and style analysed jointly (relu4_1 or "
               "relu3_1); their common (exchangeable) feature aligns the style before it "
               "colours the whitened content; one forward pass")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, EXCHANGE)}
    border = True

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights("efanet", weights,
                                                                    DEFAULT_FILE, TRAIN_HINT,
                                                                    device, bf16)
        self.meta = meta
        level = int(ff.meta_float(meta, "level", 4, path))
        if level not in (3, 4):
            raise BrushworkError(f"{path}: efanet level must be 3 or 4, got {level}")
        self.layer = LEVEL_LAYERS[level]
        self.encoder = ff.make_encoder(meta, state, self.device, self.bf16, self.layer, path)
        self.weight_files = [path, getattr(self.encoder, "weights_file", None)]
        channels = self.encoder.channels[self.layer] if meta.get("encoder") == "small" else \
            {3: 256, 4: 512}[level]
        dim = int(ff.meta_float(meta, "dim", 32, path))
        hidden = int(ff.meta_float(meta, "hidden", 256, path))
        if dim < 1 or hidden < 1:
            raise BrushworkError(f"{path}: bad 'dim' or 'hidden' metadata")
        self.exchange = ff.load_frozen(ExchangeBlock(channels, dim, hidden), "exchange", state,
                                       path, self.device)
        width = ff.meta_float(meta, "width", 1.0, path)
        in_ch = channels if meta.get("encoder") == "small" else None
        self.decoder = ff.load_frozen(decoder(level, width, in_ch), "decoder", state, path,
                                      self.device)

    def passes(self, c):
        return [ff.Pass((self.layer,), self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        content, style = cf[self.layer], sf[self.layer]
        m = None if mask is None else F.interpolate(mask, size=content.shape[-2:],
                                                    mode="bilinear", align_corners=False)
        return self.exchange(content.float(), style.float(), content_mask=m,
                             exchange=float(c["exchange"]))

"""Avatar-Net: multi-scale zero-shot style transfer by feature decoration (Sheng et al. 2018).

Encode content and style with VGG19 up to relu4_1. The *style decorator* whitens both feature
maps (each with its own mean and covariance, :func:`brushwork.core.stats.whiten`), replaces
every whitened content patch by the whitened style patch with the highest normalised
cross-correlation (:func:`brushwork.core.blocks.style_swap`, overlaps averaged) and colours
the result with the style's covariance and mean. An hourglass decoder (the mirror of VGG19 up to
relu4_1) turns the decorated features into an image; after each of its upsamplings (the
relu3_1, relu2_1 and relu1_1 scales) its features are re-normalised to the style's encoder
features at that level (AdaIN skip connections), so the style is fused at every scale in one
forward pass.

Training (``brushwork train avatar``): image reconstruction with the style image equal to the
content (the decorator is then the identity), pixel + perceptual (VGG feature) loss.

Controls: strength (decorated/content features at relu4_1, and style/content statistics at the
skip connections: 0 is the content's own reconstruction), patch size (in relu4_1 positions),
several styles with weights, masks (a style per region; the skip connections take the region's
own decoder statistics), colour preservation, style scale. Images whose output exceeds
:data:`~brushwork.methods.feedforward.TILE_PIXELS` are decoded in tiles (each tile's decoder
statistics at the skip connections); stylisation tile by tile (``tile=``) is not offered.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.blocks import DECODER_IN_SCALE, LEVEL_LAYERS, decoder, style_swap
from ..core.image import to_tensor
from ..core.protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Capabilities,
                             Control)
from ..core.stats import adain, colour, mean_std, whiten
from ..errors import BrushworkError, ControlError
from . import feedforward as ff

DEFAULT_FILE = "avatar_vgg.safetensors"
TRAIN_HINT = "brushwork train avatar --content DIR --styles DIR --out FILE"
LAYER = "relu4_1"
SKIP_LAYERS = ("relu3_1", "relu2_1", "relu1_1")
LAYERS = (LAYER,) + SKIP_LAYERS
PATCH = Control("patch_size", "int", 3,
                "style decorator patch size (odd, in relu4_1 positions: 1 = single positions)",
                low=1, high=9)


# ---------------------------------------------------------------------------- the decorator
def decorate(content_feat: torch.Tensor, style_feat: torch.Tensor, patch: int = 3,
             stride: int = 1) -> torch.Tensor:
    """Avatar-Net's style decorator on (1, C, H, W) content and (1, C, H', W') style maps:
    whiten both, swap each whitened content patch for its nearest (normalised
    cross-correlation) whitened style patch, colour with the style's covariance and mean."""
    if content_feat.shape[0] != 1 or style_feat.shape[0] != 1:
        raise BrushworkError("the style decorator works on one image at a time (batch of 1)")
    c, h, w = content_feat.shape[1:]
    zc, _, _ = whiten(content_feat[0].flatten(1))
    zs, s_mean, s_colour = whiten(style_feat[0].flatten(1), colouring=True)
    swapped = style_swap(zc.view(1, c, h, w), zs.view(1, c, *style_feat.shape[-2:]), patch,
                         stride)
    return colour(swapped[0].flatten(1), s_mean, s_colour).view_as(content_feat)


def check_patch(patch: int, style_feat: torch.Tensor) -> None:
    if patch % 2 == 0:
        raise ControlError(f"avatar: patch_size must be odd, got {patch}")
    sh, sw = style_feat.shape[-2:]
    if patch > min(sh, sw):
        raise ControlError(f"avatar: patch_size {patch} is larger than the style's relu4_1 "
                           f"features ({sw}x{sh} positions); use a smaller patch or a larger "
                           f"style image")


# ------------------------------------------------------------------------------ the decoder
class AvatarDecoder(nn.Sequential):
    """The relu4_1 decoder of :func:`brushwork.core.blocks.decoder` (same layers, same tensor
    names) whose forward takes ``fuse(layer, features) -> features``, applied after each
    upsampling: ``layer`` is the VGG level of that scale (relu3_1, relu2_1, relu1_1). Without
    ``fuse`` it is the plain decoder."""

    def __init__(self, width: float = 1.0, in_channels: int | None = None):
        super().__init__(*decoder(4, width, in_channels))

    def forward(self, x, fuse=None):
        level = 4
        for m in self:
            x = m(x)
            if isinstance(m, nn.Upsample):
                level -= 1
                if fuse is not None:
                    x = fuse(LEVEL_LAYERS[level], x)
        return x


def skip_channels(dec: AvatarDecoder) -> dict[str, int]:
    """Channels of the decoder's features at each skip connection."""
    out, level, ch = {}, 4, None
    for m in dec:
        if isinstance(m, nn.Conv2d):
            ch = m.out_channels
        if isinstance(m, nn.Upsample):
            level -= 1
            out[LEVEL_LAYERS[level]] = ch
    return out


def skip_adain(d: torch.Tensor, feat: torch.Tensor, mask=None) -> torch.Tensor:
    """A skip connection: the decoder features ``d`` with the channel mean/std of the encoder
    features ``feat`` times DECODER_IN_SCALE (the decoder works on features scaled by it);
    ``mask``: ``d``'s statistics are those of the region."""
    return adain(d, feat * DECODER_IN_SCALE, content_mask=mask)


def self_fuse(feats: dict):
    """The training-time skip connections: AdaIN to the image's own encoder features."""
    return lambda layer, d: skip_adain(d, feats[layer])


class FusedDecoder(nn.Module):
    """An :class:`AvatarDecoder` with its skip connections bound to one call's content and
    style features: per style, AdaIN of the decoder's features to that style's encoder features
    (with a mask: the region's own decoder statistics), blended like the relu4_1 targets (by
    weights, or by masks with the content's version outside them) and mixed with the content's
    version (AdaIN to the content's own features) by ``strength``.

    Without masks every version is the same normalised decoder map times a std plus a mean, so
    the blend is one per-channel affine map of it (the encoder statistics are taken once)."""

    def __init__(self, dec: AvatarDecoder, cf: dict, sfs: list, weights, masks, strength):
        super().__init__()
        self.dec = dec
        self.cf, self.sfs, self.weights, self.masks = cf, sfs, weights, masks
        self.strength = float(strength)
        # the encoder statistics do not change from tile to tile: taken once per call
        self.blended = None if masks is not None and self.strength else \
            {layer: self._blended_stats(layer) for layer in SKIP_LAYERS}

    def _blended_stats(self, layer):
        """The mean and std the blend gives the normalised decoder map at ``layer``."""
        s = self.strength
        mean, std = mean_std(self.cf[layer] * DECODER_IN_SCALE, keepdim=True)
        mean, std = (1 - s) * mean, (1 - s) * std
        if s:
            for w, sf in zip(self.weights, self.sfs):
                m, d = mean_std(sf[layer] * DECODER_IN_SCALE, keepdim=True)
                mean, std = mean + s * w * m, std + s * w * d
        return mean, std

    def fuse(self, layer, d):
        if self.blended is not None:
            d_mean, d_std = mean_std(d, keepdim=True)
            mean, std = self.blended[layer]
            return torch.addcmul(mean - d_mean * (std / d_std), d, std / d_std)
        own = skip_adain(d, self.cf[layer])
        targets = [skip_adain(d, sf[layer], m) for sf, m in zip(self.sfs, self.masks)]
        return ff.combine(own, targets, self.weights, self.masks, self.strength)

    def forward(self, x):
        return self.dec(x, self.fuse)


# ------------------------------------------------------------------------------- the method
class Avatar(ff.FeedForward):
    name = "avatar"
    summary = ("Avatar-Net (Sheng et al. 2018): whitened patch swap at relu4_1 (style decorator) "
               "+ a decoder with AdaIN skip connections at relu3_1/2_1/1_1, one forward pass")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, PATCH)}
    capabilities = Capabilities(options=("weights",))
    border = True
    supports_tiling = False  # the API refuses tile / max_memory for it

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights("avatar", weights,
                                                                    DEFAULT_FILE, TRAIN_HINT,
                                                                    device, bf16)
        self.meta = meta
        self.encoder = ff.make_encoder(meta, state, self.device, self.bf16, LAYER, path)
        self.weight_files = [path, getattr(self.encoder, "weights_file", None)]
        small = meta.get("encoder") == "small"
        in_ch = self.encoder.channels[LAYER] if small else None
        dec = AvatarDecoder(ff.meta_float(meta, "width", 1.0, path), in_ch)
        self.decoder = ff.load_frozen(dec, "decoder", state, path, self.device)
        enc_ch = self.encoder.channels if small else {"relu3_1": 256, "relu2_1": 128,
                                                       "relu1_1": 64}
        for layer, ch in skip_channels(self.decoder).items():
            if enc_ch[layer] != ch:
                raise BrushworkError(f"{path}: decoder has {ch} channels at the {layer} skip "
                                     f"connection, the encoder {enc_ch[layer]}")

    def passes(self, c):
        if c["patch_size"] % 2 == 0:
            raise ControlError(f"avatar: patch_size must be odd, got {c['patch_size']}")
        return [ff.Pass(LAYERS, self.decoder, native=SKIP_LAYERS)]

    def transform(self, cf, sf, mask, c, state):
        check_patch(c["patch_size"], sf[LAYER])
        return decorate(cf[LAYER], sf[LAYER], c["patch_size"])

    def pass_decoder(self, p, cf, sfs, masks, weights, c):
        return FusedDecoder(p.decoder, cf, sfs, weights, masks, c["strength"])

    def tile_plan(self, hw, passes, n_styles, tile, max_memory, border, mult, with_masks=False):
        if tile is not None:
            raise ControlError("avatar does not stylise tile by tile (its decoder's skip "
                               "connections take whole-image statistics); leave tile unset")
        return None

    @torch.inference_mode()
    def reconstruct(self, content) -> torch.Tensor:
        """The content through encoder and decoder with its own features at every skip
        connection (what ``strength=0`` gives), in [0, 1], cropped like :meth:`stylize`."""
        x = to_tensor(content).to(self.device)
        hw = tuple(x.shape[-2:])
        b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)
        xb = ff.with_border(x, b, 8)
        cf = ff.encode(self.encoder, xb, list(LAYERS), self.bf16, SKIP_LAYERS)
        out = ff.decode(FusedDecoder(self.decoder, cf, [], [], None, 0.0), cf[LAYER], self.bf16)
        return ff.finish(out[..., b:b + hw[0], b:b + hw[1]], hw, None)

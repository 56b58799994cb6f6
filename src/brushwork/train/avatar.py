"""`brushwork train avatar`: the Avatar-Net decoder (Sheng et al. 2018).

Image reconstruction with the style image equal to the content, as in the paper: the decorator
is then the identity, so the decoder learns to invert relu4_1 features while its skip
connections (AdaIN to the image's own relu3_1, relu2_1, relu1_1 features) are in place. Loss:
pixel MSE (0-255 scale) + ``--perceptual-weight`` x the relative MSE of VGG19 relu1_1..relu4_1
features of output and input (+ optional total variation). Photos (``--content``) and paintings
(``--styles``) are one pool of training images.

``--style-weight W`` (> 0) adds a stylisation loss, which the paper does not use: each step
also decorates a batch of (photo, painting) pairs, decodes them with the skip connections to
the painting and adds ``--content-weight`` x the MSE between the output's relu4_1 features and
the decorated target + W x the mean/std distance to the painting at relu1_1..relu4_1 (the
AdaIN decoder's losses). A decoder trained for reconstruction alone inverts features; this
teaches it to render the painting's statistics that the decorated features ask for.

The decoder starts from the layers of ``--init`` whose shapes match (default: the relu4_1
decoder of the shipped wct weights, the same architecture; an adain relu3_1 file fills the
last five convolutions), so a short run suffices.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.device import autocast
from ..core.losses import relative_mse, tv_loss
from ..core.vgg import VGG19
from ..core.weights import resolve_weights
from ..errors import BrushworkError
from ..methods import feedforward as ff
from ..methods.avatar import LAYER, LAYERS, AvatarDecoder, FusedDecoder, decorate, self_fuse
from . import common as training
from .loops import (STYLE_LOSS_LAYERS, add_stylization_arguments,
                    check_stylization_arguments, conv_layers, copy_decoder_convs, fixed_styles,
                    merge_parts, paired_sampler, stylization_loss, train_loop)

PERCEPTUAL_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
DEFAULT_INIT = "wct_vgg.safetensors"


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=4, steps=400, lr=1e-4)
    parser.add_argument("--pixel-weight", type=float, default=1.0,
                        help="weight of the pixel MSE (0-255 scale)")
    parser.add_argument("--perceptual-weight", type=float, default=1000.0,
                        help="weight of the VGG feature loss (relative MSE, relu1_1..relu4_1)")
    parser.add_argument("--tv-weight", type=float, default=0.0)
    add_stylization_arguments(parser, "the decorated features (skip connections to the "
                                      "painting)")
    parser.add_argument("--patch-size", type=int, default=3,
                        help="decorator patch size of the stylisation loss")
    parser.add_argument("--init", default=DEFAULT_INIT,
                        help="weight file whose decoder convolutions of matching shape start "
                             "the decoder (a wct file's relu4_1 decoder, or an adain file's); "
                             "'none' = random")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def init_from(dec: AvatarDecoder, path) -> int:
    """Copy into ``dec`` the convolutions of the decoder in weight file ``path`` (``decoder4.*``
    of a wct file, else ``decoder.*``), aligned from the output end, wherever the shapes match;
    returns how many were copied."""
    return copy_decoder_convs(conv_layers(dec), path, ("decoder4", "decoder"))


def losses(enc, dec, images, bf16, device, pw, fw, tw):
    """(total, parts, reconstruction) for a batch: the decoder inverts the images' relu4_1
    features with AdaIN skip connections to their own features."""
    with torch.no_grad():
        feats = ff.encode(enc, images, PERCEPTUAL_LAYERS, bf16)
    with autocast(device, bf16):
        out = dec(feats[LAYER], self_fuse(feats)).float()
    lp = F.mse_loss(out, images) * 255.0 ** 2
    of = ff.encode(enc, out, PERCEPTUAL_LAYERS, bf16)
    lf = sum(relative_mse(of[k], feats[k]) for k in PERCEPTUAL_LAYERS) / len(PERCEPTUAL_LAYERS)
    total = pw * lp + fw * lf
    parts = {"pixel": float(lp.detach()), "perceptual": float(lf.detach())}
    if tw:
        lt = tv_loss(out)
        total = total + tw * lt
        parts["tv"] = float(lt.detach())
    parts["total"] = float(total.detach())
    return total, parts, out


def stylize_losses(enc, dec, contents, styles, bf16, device, cw, sw, patch=3):
    """(total, parts) of the stylisation loss on a batch of (content, style) pairs: the
    decorated relu4_1 target decoded with skip connections to the style."""
    with torch.no_grad():
        cf = ff.encode(enc, contents, list(LAYERS), bf16)
        sf = ff.encode(enc, styles, list(STYLE_LOSS_LAYERS), bf16)
        t = torch.cat([decorate(cf[LAYER][i:i + 1], sf[LAYER][i:i + 1], patch)
                       for i in range(len(contents))])
    with autocast(device, bf16):
        out = FusedDecoder(dec, cf, [sf], [1.0], None, 1.0)(t).float()
    return stylization_loss(enc, out, t, sf, bf16, cw, sw)


@torch.no_grad()
def stylize_batch(enc, dec, contents, styles, bf16, patch: int = 3) -> torch.Tensor:
    """Avatar stylisation of each (content, style) pair of two batches (for sample grids)."""
    outs = []
    for c, s in zip(contents, styles):
        cf = ff.encode(enc, c[None], list(LAYERS), bf16)
        sf = ff.encode(enc, s[None], list(LAYERS), bf16)
        t = decorate(cf[LAYER], sf[LAYER], patch)
        fused = FusedDecoder(dec, cf, [sf], [1.0], None, 1.0)
        outs.append(ff.decode(fused, t, bf16))
    return torch.cat(outs).clamp(0, 1)


def run(args, callback=None) -> Path:
    """Train an Avatar-Net decoder; returns the path of the weight file written."""
    device, bf16 = training.start_run(args)
    for name in ("pixel_weight", "perceptual_weight", "tv_weight"):
        if getattr(args, name) < 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must not be negative")
    check_stylization_arguments(args)
    contents, styles = training.load_training_data(args)
    pool = contents + styles
    enc = VGG19(device=device, autocast=bf16, last_layer=LAYER)
    dec = AvatarDecoder().to(device)
    init = "none"
    if str(args.init).lower() != "none":
        path = resolve_weights(args.init, args.init, TRAIN_HINT_INIT)
        init = f"{Path(path).name} ({init_from(dec, path)} of 9 convolutions)"
    if args.style_weight and (args.patch_size < 1 or args.patch_size % 2 == 0):
        raise BrushworkError(f"--patch-size must be odd and >= 1, got {args.patch_size}")
    opt = torch.optim.Adam(dec.parameters(), lr=args.lr)
    fixed_s = fixed_styles(styles, args).to(device)

    def batches(step):  # images to reconstruct, and (photo, painting) pairs to stylise
        pairs = paired_sampler(contents, styles, args, start=step, streams=(2, 3)) \
            if args.style_weight else itertools.repeat(None)
        return zip(training.batches(pool, args.size, args.batch, args.seed, start_step=step),
                   pairs)

    def loss(batch):
        images, pair = batch
        total, parts = 0.0, {}
        if args.reconstruction_weight:
            total, parts, _ = losses(enc, dec, images, bf16, device, args.pixel_weight,
                                     args.perceptual_weight, args.tv_weight)
            total = args.reconstruction_weight * total
        if args.style_weight:
            st, sp = stylize_losses(enc, dec, *pair, bf16, device, args.content_weight,
                                    args.style_weight, args.patch_size)
            total = total + st
            parts = merge_parts(total, parts, sp)
        return total, parts

    def sample(x):
        _, _, rec = losses(enc, dec, x, bf16, device, 1.0, 1.0, 0.0)
        return [x, rec.clamp(0, 1), fixed_s, stylize_batch(enc, dec, x, fixed_s, bf16)]

    def meta(step):
        return {"method": "avatar", "encoder": "vgg", "width": "1.0", "steps": str(step),
                "crop": str(args.size), "batch": str(args.batch), "lr": str(args.lr),
                "pixel_weight": str(args.pixel_weight),
                "perceptual_weight": str(args.perceptual_weight),
                "tv_weight": str(args.tv_weight), "style_weight": str(args.style_weight),
                "content_weight": str(args.content_weight),
                "reconstruction_weight": str(args.reconstruction_weight), "init": init}

    train_loop("avatar", args, contents, {"decoder": dec}, {"decoder": opt}, device, callback,
               loss, sample, meta, batches=batches)
    return Path(args.out)


TRAIN_HINT_INIT = "pass --init PATH (a wct or adain weight file) or --init none"


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the decoder of a training checkpoint as a weight file; returns its sha256."""
    probe = training.load_checkpoint_config(checkpoint)

    def meta(step):
        return {"method": "avatar", "encoder": "vgg", "width": "1.0", "steps": str(step),
                "crop": str(probe.get("size")), "batch": str(probe.get("batch")),
                "lr": str(probe.get("lr")), "pixel_weight": str(probe.get("pixel_weight")),
                "perceptual_weight": str(probe.get("perceptual_weight")),
                "tv_weight": str(probe.get("tv_weight")),
                **{k: str(probe[k]) for k in ("style_weight", "content_weight",
                                              "reconstruction_weight") if k in probe}}
    return training.export_checkpoint(checkpoint, out, {"decoder": AvatarDecoder()}, meta,
                                      fp16=fp16, extra_meta=extra_meta)

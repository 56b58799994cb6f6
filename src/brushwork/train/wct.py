"""`brushwork train wct`: one decoder per VGG level (Li et al. 2017)."""
from __future__ import annotations

import math
from pathlib import Path
import torch
import torch.nn.functional as F
from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.losses import mean_std_distance, relative_mse
from ..core.stats import wct
from ..errors import BrushworkError
from ..methods import feedforward as ff
from . import common as training
from ..core.device import autocast
from ..core.weights import prefixed_state, load_prefixed
from .loops import (train_loop, recon_setup, parse_levels, load_distilled, recon_image)


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=20000, lr=1e-4)
    parser.add_argument("--levels", default="1,2,3,4,5", help="decoder levels to train")
    parser.add_argument("--width", type=float, default=1.0, help="decoder channel multiplier")
    parser.add_argument("--feature-weight", type=float, default=1.0,
                        help="weight of the (relative) feature reconstruction loss")
    parser.add_argument("--encoder-weights", default=None, metavar="DISTILL",
                        help="train decoders for the distilled small encoder of this file (from "
                             "`brushwork train distill`; its decoders of the same levels and "
                             "width are the starting point) instead of for VGG19")
    parser.add_argument("--style-weight", type=float, default=0.0,
                        help="0 (the paper): reconstruction only. > 0: the decoders also decode "
                             "WCT-transformed features (each crop stylised with another crop of "
                             "the batch) under a feature loss to the transformed target plus "
                             "this weight x a relative VGG19 mean/std loss to the style")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def recon_losses(enc, decoders: dict, x, bf16, device, feature_weight, feats=None):
    """Sum over levels of pixel MSE + feature_weight * relative feature MSE; (total, parts)."""
    layers = [LEVEL_LAYERS[l] for l in decoders]
    if feats is None:
        with torch.no_grad():
            feats = ff.encode(enc, x, layers, bf16)
    total, parts = 0.0, {}
    for level, dec in decoders.items():
        layer = LEVEL_LAYERS[level]
        with autocast(device, bf16):
            y = dec(feats[layer]).float()
        pix = F.mse_loss(y, x)
        fy = ff.encode(enc, y, layer, bf16)[layer]
        feat = relative_mse(fy, feats[layer])
        total = total + pix + feature_weight * feat
        parts[f"pix{level}"] = float(pix.detach())
        parts[f"feat{level}"] = float(feat.detach())
    parts["total"] = float(total.detach())
    return total, parts


def batch_wct(cf: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
    """:func:`stats.wct` of each item of a batch with the matching item of ``sf``."""
    return torch.cat([wct(cf[i:i + 1], sf[i:i + 1]) for i in range(len(cf))])


def stylise_losses(enc, vgg, decoders: dict, x, bf16, device, style_weight, feature_weight,
                   feats):
    """Decoders on WCT-transformed features: each crop of ``x`` stylised with the batch's
    reversed order as styles; relative feature MSE of the re-encoded output to the target, plus
    ``style_weight`` x relative mean/std MSE of VGG19 relu1_1..relu{L}_1 to the style.
    ``feats``: ``x``'s encoder features at every level of ``decoders`` (as recon_losses')."""
    total, parts = 0.0, {}
    deepest = max(decoders)
    with torch.no_grad():  # once for all levels
        vs = vgg(x.flip(0), [LEVEL_LAYERS[l] for l in range(1, deepest + 1)])
    for level, dec in decoders.items():
        layer, vgg_layers = LEVEL_LAYERS[level], [LEVEL_LAYERS[l] for l in range(1, level + 1)]
        with torch.no_grad():  # the styles are the crops reversed: their features too
            t = batch_wct(feats[layer], feats[layer].flip(0))
        with autocast(device, bf16):
            y = dec(t).float()
        yf = ff.encode(enc, y, layer, bf16)[layer]
        feat = relative_mse(yf, t)
        st = mean_std_distance(vgg(y, vgg_layers), vs, vgg_layers, relative=True)
        total = total + feature_weight * feat + style_weight * st
        parts[f"sfeat{level}"] = float(feat.detach())
        parts[f"style{level}"] = float(st.detach())
    return total, parts


def run(args, callback=None) -> Path:
    """Train decoders for the relu{L}_1 levels of VGG19 (or of a distilled small encoder):
    reconstruction, plus decoding WCT-transformed features with ``--style-weight``; returns the
    weight file."""
    if args.style_weight < 0:
        raise BrushworkError("--style-weight must be >= 0")
    small = None
    if args.encoder_weights:  # checked before any data is loaded
        small = load_distilled(args.encoder_weights)
        if max(parse_levels(args.levels)) > small[0].level:
            raise BrushworkError(f"--encoder-weights {args.encoder_weights}: the encoder stops "
                                 f"at relu{small[0].level}_1; --levels may not go above "
                                 f"{small[0].level}")
    levels, device, bf16, images, vgg = recon_setup(args)
    meta = {"method": "wct", "levels": ",".join(map(str, levels)), "width": str(args.width),
            "encoder": "vgg", "style_weight": str(args.style_weight)}
    enc, extra = vgg, {}
    if small is not None:
        enc, dstate, dmeta = small
        enc.to(device).eval().requires_grad_(False)
        extra = prefixed_state("encoder", enc)
        meta.update(encoder="small", encoder_level=str(enc.level), encoder_width=str(enc.width))
    decoders = {}
    for l in levels:
        in_ch = enc.channels[LEVEL_LAYERS[l]] if small is not None else None
        decoders[l] = decoder(l, args.width, in_ch)
        if small is not None and any(k.startswith(f"decoder{l}.") for k in dstate) \
                and math.isclose(float(dmeta.get("width", -1)), args.width):
            load_prefixed(decoders[l], f"decoder{l}", dstate, args.encoder_weights)
        decoders[l].to(device)
    models = {f"decoder{l}": d for l, d in decoders.items()}
    params = [p for d in decoders.values() for p in d.parameters()]
    opt = torch.optim.Adam(params, lr=args.lr)

    def losses(x):
        with torch.no_grad():
            feats = ff.encode(enc, x, [LEVEL_LAYERS[l] for l in levels], bf16)
        total, parts = recon_losses(enc, decoders, x, bf16, device, args.feature_weight, feats)
        if args.style_weight > 0:
            t2, p2 = stylise_losses(enc, vgg, decoders, x, bf16, device, args.style_weight,
                                    args.feature_weight, feats)
            total = total + t2
            parts = {**parts, **p2, "total": float(total.detach())}
        return total, parts

    def sample(x):
        rows = [x] + [recon_image(enc, decoders[l], x, l, bf16) for l in levels]
        if args.style_weight > 0:  # each crop stylised at the deepest level with the next one
            layer = LEVEL_LAYERS[max(levels)]
            cf = ff.encode(enc, x, layer, bf16)[layer]
            t = batch_wct(cf, cf.flip(0))
            rows.append(ff.decode(decoders[max(levels)], t, bf16).clamp(0, 1))
        return rows

    train_loop("wct", args, images, models, {"decoders": opt}, device, callback, losses, sample,
               meta, extra_state=extra)
    return Path(args.out)

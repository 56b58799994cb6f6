"""`brushwork train sanet`: SANet attention and decoder (Park & Lee 2019)."""
from __future__ import annotations

from pathlib import Path
import torch
import torch.nn.functional as F
from ..core.blocks import SATransform, decoder
from ..core.losses import mean_std_distance
from ..core.stats import normalize
from ..core.vgg import VGG19
from ..methods.sanet import LAYERS
from . import common as training
from ..core.device import autocast
from .loops import (train_loop, init_decoder, add_init_decoder_argument)


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=40000, lr=1e-4)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--style-weight", type=float, default=3.0)
    parser.add_argument("--identity1-weight", type=float, default=50.0)
    parser.add_argument("--identity2-weight", type=float, default=1.0)
    parser.add_argument("--width", type=float, default=1.0, help="decoder channel multiplier")
    parser.add_argument("--fp16", action="store_true")
    add_init_decoder_argument(parser, "relu4_1 (level 4)")


def sanet_losses(enc, transform, dec, content, style, bf16, device, w):
    with torch.no_grad():
        cf, sf = enc(content, LAYERS), enc(style, LAYERS)

    def run_(a, b):
        with autocast(device, bf16):
            return dec(transform(a["relu4_1"], b["relu4_1"], a["relu5_1"], b["relu5_1"])).float()

    g, icc, iss = run_(cf, sf), run_(cf, cf), run_(sf, sf)
    gf = enc(g, LAYERS)
    lc = sum(F.mse_loss(normalize(gf[k]), normalize(cf[k])) for k in ("relu4_1", "relu5_1"))
    ls = mean_std_distance(gf, sf, LAYERS)
    # pixels on the 0-255 scale so the identity terms are comparable to the feature terms
    l1 = (F.mse_loss(icc, content) + F.mse_loss(iss, style)) * 255.0 ** 2
    fcc, fss = enc(icc, LAYERS), enc(iss, LAYERS)
    l2 = sum(F.mse_loss(fcc[k], cf[k]) + F.mse_loss(fss[k], sf[k]) for k in LAYERS)
    total = w[0] * lc + w[1] * ls + w[2] * l1 + w[3] * l2
    return total, {"content": float(lc.detach()), "style": float(ls.detach()),
                   "id1": float(l1.detach()), "id2": float(l2.detach()),
                   "total": float(total.detach())}, g


def run(args, callback=None) -> Path:
    from .linear import paired_sampler
    

    device, bf16 = training.start_run(args)
    enc = VGG19(device=device, autocast=bf16, last_layer="relu5_1")
    transform, dec = SATransform(512).to(device), decoder(4, args.width).to(device)
    if args.init_decoder and not args.resume:  # on resume the checkpoint's decoder is loaded
        init_decoder(dec, args.init_decoder, 4, args.width)
    contents, styles = training.load_training_data(args)
    opt = torch.optim.Adam(list(transform.parameters()) + list(dec.parameters()), lr=args.lr)
    weights = (args.content_weight, args.style_weight, args.identity1_weight,
               args.identity2_weight)
    meta = {"method": "sanet", "width": str(args.width), "encoder": "vgg"}
    pairs = paired_sampler(contents, styles, args)
    fixed_s = training.sample_batch(styles, args.size, 4, training.step_generator(args.seed, 0, 10))

    def loss(_):
        c, s = next(pairs)
        total, parts, _ = sanet_losses(enc, transform, dec, c.to(device), s.to(device), bf16,
                                       device, weights)
        return total, parts

    def sample(x):
        _, _, g = sanet_losses(enc, transform, dec, x, fixed_s.to(device), bf16, device, weights)
        return [x, fixed_s, g.clamp(0, 1)]

    train_loop("sanet", args, contents, {"transform": transform, "decoder": dec}, {"all": opt},
               device, callback, loss, sample, meta)
    return Path(args.out)

"""`brushwork train linear`: the LST transform and decoder (Li et al. 2019)."""
from __future__ import annotations

from pathlib import Path
import torch
import torch.nn.functional as F
from ..core.blocks import LAYER_LEVELS, LinearTransform, decoder
from ..core.losses import mean_std_distance
from ..core.vgg import LAYER_CHANNELS, VGG19
from ..methods.linear import STYLE_LAYERS
from . import common as training
from ..core.device import autocast
from .loops import (train_loop, paired_sampler, init_decoder, add_init_decoder_argument)


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=40000, lr=1e-4)
    parser.add_argument("--layer", default="relu3_1", choices=["relu3_1", "relu4_1"])
    parser.add_argument("--style-weight", type=float, default=10.0)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--recon-weight", type=float, default=1.0,
                        help="weight of the pixel reconstruction term (content as style)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=32, help="compressed channels (matrix size)")
    parser.add_argument("--fp16", action="store_true")
    add_init_decoder_argument(parser, "relu3_1 or relu4_1 (as --layer)")


def lst_losses(enc, transform, dec, layer, content, style, bf16, device, cw, sw, rw):
    with torch.no_grad():
        cfs = enc(content, sorted({layer, "relu4_1"}))
        sfs = enc(style, STYLE_LAYERS)
    with autocast(device, bf16):
        t = transform(cfs[layer], sfs[layer])
        g = dec(t).float()
        rec = dec(transform(cfs[layer], cfs[layer])).float()
    gf = enc(g, STYLE_LAYERS)
    lc = F.mse_loss(gf["relu4_1"], cfs["relu4_1"])
    ls = mean_std_distance(gf, sfs, STYLE_LAYERS)
    lr_ = F.mse_loss(rec, content) * 255.0 ** 2  # same scale as the feature losses
    total = cw * lc + sw * ls + rw * lr_
    return total, {"content": float(lc.detach()), "style": float(ls.detach()),
                   "recon": float(lr_.detach()), "total": float(total.detach())}, g


def run(args, callback=None) -> Path:
    

    device, bf16 = training.start_run(args)
    enc = VGG19(device=device, autocast=bf16, last_layer="relu4_1")
    transform = LinearTransform(LAYER_CHANNELS[args.layer], args.dim, args.width).to(device)
    dec = decoder(LAYER_LEVELS[args.layer], args.width).to(device)
    if args.init_decoder and not args.resume:  # on resume the checkpoint's decoder is loaded
        init_decoder(dec, args.init_decoder, LAYER_LEVELS[args.layer], args.width)
    contents, styles = training.load_training_data(args)
    opt = torch.optim.Adam(list(transform.parameters()) + list(dec.parameters()), lr=args.lr)
    meta = {"method": "linear", "layer": args.layer, "width": str(args.width),
            "dim": str(args.dim), "encoder": "vgg"}
    pairs = paired_sampler(contents, styles, args)

    def loss(_):
        c, s = next(pairs)
        total, parts, _ = lst_losses(enc, transform, dec, args.layer, c.to(device), s.to(device),
                                     bf16, device, args.content_weight, args.style_weight,
                                     args.recon_weight)
        return total, parts

    fixed_s = training.sample_batch(styles, args.size, 4, training.step_generator(args.seed, 0, 10))

    def sample(x):
        _, _, g = lst_losses(enc, transform, dec, args.layer, x, fixed_s.to(device), bf16,
                             device, 1, 1, 1)
        return [x, fixed_s, g.clamp(0, 1)]

    train_loop("linear", args, contents, {"transform": transform, "decoder": dec},
               {"all": opt}, device, callback, loss, sample, meta)
    return Path(args.out)

"""Linear style transfer (LST, Li et al. 2019): a learned transformation matrix.

Two small CNNs turn the covariance of the (centred, compressed to 32 channels) content and style
features into 32x32 matrices; their product T is applied to the compressed content features,
which are un-compressed, given the style's mean and decoded. ``relu3_1`` (default, the paper's
choice for video: stable, fewer artefacts) or ``relu4_1`` (stronger stylisation) variants.

Training (``brushwork train linear --layer relu3_1``): transform and decoder together; content
loss at relu4_1 against the content image, style loss on the mean/std of relu1_1..relu4_1 (the
paper uses Gram matrices; mean/std is used here so the style weight matches ``adain``'s), plus
a pixel reconstruction term when content = style (keeps the decoder an inverse of the encoder).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .. import training
from ..blocks import LAYER_LEVELS, LinearTransform, decoder, mean_std
from ..errors import BrushworkError
from ..protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Clock, Progress, emit,
                        normalize_style_weights, resolve_controls)
from ..vgg import LAYER_CHANNELS, VGG19
from . import _feedforward as ff
from .wct import add_init_decoder_argument, init_decoder

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
DEFAULT_FILE = "linear_relu3_1.safetensors"
TRAIN_HINT = "brushwork train linear --content DIR --styles DIR --out FILE"


class Linear:
    name = "linear"
    summary = "Linear transform (Li et al. 2019): learned 32x32 matrix at relu3_1; video-stable"
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE)}

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            "linear", weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        self.layer = meta.get("layer", "relu3_1")
        if self.layer not in ("relu3_1", "relu4_1"):
            raise BrushworkError(f"{path}: bad 'layer' metadata {self.layer!r}")
        width = ff.meta_float(meta, "width", 1.0, path)
        dim = int(ff.meta_float(meta, "dim", 32, path))
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer=self.layer,
                             channels_last=True)
        self.transform = ff.load_frozen(LinearTransform(LAYER_CHANNELS[self.layer], dim, width),
                                        "transform", state, path, self.device)
        self.decoder = ff.load_frozen(decoder(LAYER_LEVELS[self.layer], width), "decoder", state,
                                      path, self.device)

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c = resolve_controls(self.name, self.controls, controls)
        weights = normalize_style_weights(len(styles), style_weights)
        clock = Clock()
        content, styles, masks, content_rgb = ff.prepare(content, styles, c, self.device)
        hw = tuple(content.shape[-2:])
        mult = 2 ** (LAYER_LEVELS[self.layer] - 1)
        x = ff.pad_to_multiple(content, mult)
        cf = ff.encode_big(self.encoder, x, self.layer, self.bf16, mult)
        targets = []
        for s in styles:
            sf = self.encoder(s, self.layer)[self.layer]
            with ff.autocast(self.device, self.bf16):
                targets.append(self.transform(cf, sf).float())
        pm = None if masks is None else [ff.pad_to_multiple(m, mult) for m in masks]
        t = ff.combine(cf, targets, weights, pm, c["strength"])
        out = ff.decode_big(self.decoder, t, self.bf16, mult)[..., :hw[0], :hw[1]]
        out = ff.finish(out, hw, content_rgb)
        emit(callback, Progress(self.name, "done", 1, 1, size=hw, elapsed=clock()))
        return out


# ------------------------------------------------------------------------------------- training
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
    with training.autocast(device, bf16):
        t = transform(cfs[layer], sfs[layer])
        g = dec(t).float()
        rec = dec(transform(cfs[layer], cfs[layer])).float()
    gf = enc(g, STYLE_LAYERS)
    lc = F.mse_loss(gf["relu4_1"], cfs["relu4_1"])
    ls = 0.0
    for name in STYLE_LAYERS:
        gm, gs = mean_std(gf[name])
        sm, ss = mean_std(sfs[name])
        ls = ls + F.mse_loss(gm, sm) + F.mse_loss(gs, ss)
    lr_ = F.mse_loss(rec, content) * 255.0 ** 2  # same scale as the feature losses
    total = cw * lc + sw * ls + rw * lr_
    return total, {"content": float(lc.detach()), "style": float(ls.detach()),
                   "recon": float(lr_.detach()), "total": float(total.detach())}, g


def run(args, callback=None) -> Path:
    from .wct import train_loop

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


def paired_sampler(contents, styles, args):
    """(content batch, style batch) pairs resuming at the checkpoint's step."""
    start = 0
    if args.resume:
        start = training.load_checkpoint_step(training.checkpoint_path(args))
    return zip(training.batches(contents, args.size, args.batch, args.seed, start_step=start),
               training.batches(styles, args.size, args.batch, args.seed, start_step=start,
                                stream=1))

"""SANet: arbitrary style transfer with style-attentional networks (Park & Lee 2019).

Attention from each (mean/variance-normalised) content position to all style positions picks
style features locally, at relu4_1 and relu5_1; the two results are merged and decoded by a
relu4_1 decoder.

Training (``brushwork train sanet``): transform and decoder together with the paper's losses:
content (normalised relu4_1, relu5_1 features), style (mean/std at relu1_1..relu5_1) and the
identity losses (content stylised by itself must give the content back, in pixels and in
features; same for the style), weights 1 / 3 / 50 / 1.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .. import training
from ..errors import BrushworkError
from ..blocks import SATransform, decoder, mean_std, mean_variance_norm
from ..protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Clock, Progress, emit,
                        normalize_style_weights, resolve_controls)
from ..vgg import VGG19
from . import _feedforward as ff
from .wct import add_init_decoder_argument, init_decoder

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
DEFAULT_FILE = "sanet_vgg.safetensors"
TRAIN_HINT = "brushwork train sanet --content DIR --styles DIR --out FILE"


class SANet:
    name = "sanet"
    summary = ("SANet (Park & Lee 2019): style attention at relu4_1 + relu5_1, local patterns "
               "(strength default: the weight file's, 0.9 for the shipped file)")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE)}

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            "sanet", weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        width = ff.meta_float(meta, "width", 1.0, path)
        # a weight file may carry the strength it is meant to be used at (metadata
        # "default_strength"): the shipped 3000-step file goes past the content at 1.0 and
        # ships with 0.9; an explicit strength (1.0 included) always wins
        self.default_strength = ff.meta_float(meta, "default_strength", 1.0, path)
        if not 0.0 <= self.default_strength <= 1.0:
            raise BrushworkError(f"{path}: default_strength {self.default_strength} "
                                 f"is not in [0, 1]")
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer="relu5_1",
                             channels_last=True)
        self.transform = ff.load_frozen(SATransform(512), "transform", state, path, self.device)
        self.decoder = ff.load_frozen(decoder(4, width), "decoder", state, path, self.device)

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c = resolve_controls(self.name, self.controls,
                             {"strength": self.default_strength, **(controls or {})})
        weights = normalize_style_weights(len(styles), style_weights)
        clock = Clock()
        content, styles, masks, content_rgb = ff.prepare(content, styles, c, self.device)
        hw = tuple(content.shape[-2:])
        x = ff.pad_to_multiple(content, 16)
        cf = {k: ff.encode_big(self.encoder, x, k, self.bf16, 2 ** (int(k[4]) - 1))
              for k in ("relu4_1", "relu5_1")}
        targets = []
        for s in styles:
            sf = self.encoder(s, ["relu4_1", "relu5_1"])
            with ff.autocast(self.device, self.bf16):
                targets.append(self.transform(cf["relu4_1"], sf["relu4_1"],
                                              cf["relu5_1"], sf["relu5_1"]).float())
        pm = None if masks is None else [ff.pad_to_multiple(m, 16) for m in masks]
        t = ff.combine(cf["relu4_1"], targets, weights, pm, c["strength"])
        out = ff.decode_big(self.decoder, t, self.bf16, 8)[..., :hw[0], :hw[1]]
        out = ff.finish(out, hw, content_rgb)
        emit(callback, Progress(self.name, "done", 1, 1, size=hw, elapsed=clock()))
        return out


# ------------------------------------------------------------------------------------- training
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
        with training.autocast(device, bf16):
            return dec(transform(a["relu4_1"], b["relu4_1"], a["relu5_1"], b["relu5_1"])).float()

    g, icc, iss = run_(cf, sf), run_(cf, cf), run_(sf, sf)
    gf = enc(g, LAYERS)
    lc = sum(F.mse_loss(mean_variance_norm(gf[k]), mean_variance_norm(cf[k]))
             for k in ("relu4_1", "relu5_1"))
    ls = 0.0
    for k in LAYERS:
        gm, gs = mean_std(gf[k])
        sm, ss = mean_std(sf[k])
        ls = ls + F.mse_loss(gm, sm) + F.mse_loss(gs, ss)
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
    from .wct import train_loop

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

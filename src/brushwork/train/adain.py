"""`brushwork train adain`: the AdaIN decoder (Huang & Belongie 2017)."""
from __future__ import annotations

from pathlib import Path
import torch
import torch.nn.functional as F
from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.losses import mean_std_distance
from ..core.stats import adain
from ..core.vgg import VGG19
from ..methods import feedforward as ff
from ..methods.adain import style_layers
from . import common as training
from ..core.device import autocast
from ..core.weights import save_weights, prefixed_state
from .loops import fixed_styles, load_distilled, pair_batches, train_loop


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=40000, lr=1e-4)
    parser.add_argument("--style-weight", type=float, default=10.0)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--level", type=int, default=4, choices=[3, 4],
                        help="AdaIN at relu4_1 (the paper) or relu3_1 (cheaper to train, "
                             "finer textures)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="decoder channel multiplier (1 = the paper's decoder)")
    parser.add_argument("--identity-weight", type=float, default=0.0,
                        help="weight of a pixel identity loss (decode(encode(content)) = "
                             "content, as in SANet/LST); 0 = the paper's losses. Speeds up "
                             "early training (try 50)")
    parser.add_argument("--encoder-weights", default=None,
                        help="a distilled small encoder (from `brushwork train distill`): "
                             "train a decoder for it instead of for VGG19")
    parser.add_argument("--style-loss-net", choices=["vgg", "encoder"], default="vgg",
                        help="network whose feature statistics the style loss compares: VGG19 "
                             "(default; the teacher, also for a small encoder) or the encoder "
                             "itself (same thing for VGG19)")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def _losses(enc, dec, content, style, bf16, device, cw, sw, level=4, iw=0.0, loss_net=None):
    """Content loss in the encoder's space (decoded image re-encoded vs the AdaIN target); style
    loss on mean/std of relu1_1..relu{level}_1 of ``loss_net`` (default: the encoder)."""
    loss_net = enc if loss_net is None else loss_net
    layer, layers = LEVEL_LAYERS[level], style_layers(level)
    with torch.no_grad():
        cf = ff.encode(enc, content, layer, bf16)[layer]
        t = adain(cf, ff.encode(enc, style, layer, bf16)[layer])
        sf = ff.encode(loss_net, style, layers, bf16)
    with autocast(device, bf16):
        g = dec(t).float()
    gf = ff.encode(enc, g, layers if loss_net is enc else layer, bf16)
    lc = F.mse_loss(gf[layer], t)
    if loss_net is not enc:
        gf = ff.encode(loss_net, g, layers, bf16)
    ls = mean_std_distance(gf, sf, layers)
    total = cw * lc + sw * ls
    parts = {"content": float(lc.detach()), "style": float(ls.detach())}
    if iw:  # identity: decoding the content's own features gives the content back
        with autocast(device, bf16):
            rec = dec(cf).float()
        lid = F.mse_loss(rec, content) * 255.0 ** 2  # 0-255 scale, like the feature terms
        total = total + iw * lid
        parts["identity"] = float(lid.detach())
    parts["total"] = float(total.detach())
    return total, parts, g


def run(args, callback=None) -> Path:
    """Train an AdaIN decoder; returns the path of the weight file written."""
    device, bf16 = training.start_run(args)
    contents, styles = training.load_training_data(args)
    layer = LEVEL_LAYERS[args.level]
    meta = {"method": "adain", "level": str(args.level), "width": str(args.width),
            "encoder": "vgg"}
    enc_state = {}
    if args.encoder_weights:
        enc = load_distilled(args.encoder_weights)[0]
        enc.to(device).eval().requires_grad_(False)
        enc_state = prefixed_state("encoder", enc)
        meta.update(encoder="small", encoder_level=str(enc.level), encoder_width=str(enc.width))
        in_ch = enc.channels[layer]
    else:
        enc = VGG19(device=device, autocast=bf16, last_layer=layer)
        in_ch = None
    loss_net = None
    if args.encoder_weights and args.style_loss_net == "vgg":
        loss_net = VGG19(device=device, autocast=bf16, last_layer=layer)
        meta["style_loss_net"] = "vgg"
    dec = decoder(args.level, args.width, in_ch).to(device)
    opt = torch.optim.Adam(dec.parameters(), lr=args.lr)
    fixed_s = fixed_styles(styles, args).to(device)

    def loss(batch):
        total, parts, _ = _losses(enc, dec, *batch, bf16, device, args.content_weight,
                                  args.style_weight, args.level, args.identity_weight, loss_net)
        return total, parts

    def sample(x):
        _, _, g = _losses(enc, dec, x, fixed_s, bf16, device, 1.0, 1.0, args.level,
                          loss_net=loss_net)
        return [x, fixed_s, g.clamp(0, 1)]

    meta.update(style_weight=str(args.style_weight), identity_weight=str(args.identity_weight))
    train_loop("adain", args, contents, {"decoder": dec}, {"decoder": opt}, device, callback,
               loss, sample, meta, extra_state=enc_state,
               batches=pair_batches(contents, styles, args))
    return Path(args.out)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the decoder of a training checkpoint as a weight file (with a small encoder: that
    encoder too, read from the run's --encoder-weights file); returns its sha256. Used to ship
    a model from a run that was stopped before its last step."""
    probe = training.load_checkpoint_config(checkpoint)
    level, width = int(probe.get("level", 4)), float(probe.get("width", 1.0))
    state, enc_meta, in_ch = {}, {"encoder": "vgg"}, None
    if probe.get("encoder_weights"):  # the decoder's encoder: the file the run was trained on
        enc = load_distilled(probe["encoder_weights"])[0]
        state = prefixed_state("encoder", enc)
        in_ch = enc.channels[LEVEL_LAYERS[level]]
        enc_meta = {"encoder": "small", "encoder_level": str(enc.level),
                    "encoder_width": str(enc.width),
                    # runs from before --style-loss-net took their style loss on the encoder
                    "style_loss_net": probe.get("style_loss_net", "encoder")}
    dec = decoder(level, width, in_ch)
    info = training.load_checkpoint(checkpoint, models={"decoder": dec})
    meta = {"method": "adain", "level": str(level), "width": str(width), **enc_meta,
            "steps": str(info["step"]), "crop": str(probe.get("size")),
            "batch": str(probe.get("batch")), "style_weight": str(probe.get("style_weight")),
            "lr": str(probe.get("lr")), "identity_weight": str(probe.get("identity_weight", 0)),
            **(extra_meta or {})}
    state.update(prefixed_state("decoder", dec))
    return save_weights(state, out, fp16=fp16, metadata=meta)

"""`brushwork train efanet`: EFANet's feature exchange block and decoder (Wu et al. 2020).

Each step takes a batch of (photo, painting) pairs, computes the exchange block's target
features at the block's level (relu4_1 or relu3_1), decodes them and minimises

* ``--content-weight`` x the relative MSE (divided by the target's mean square,
  :func:`brushwork.core.losses.relative_mse`) between the output's features at that level and
  the target (held fixed in this term, as in AdaIN's training);
* ``--style-weight`` x the relative Gram distance at relu1_1..relu4_1: per layer, the MSE
  between the output's and the painting's Gram matrices (:func:`brushwork.core.stats.gram`)
  divided by the mean square of the painting's, summed over the layers;
* ``--whitening-weight`` x the whitening loss of the purified content code
  (:func:`brushwork.methods.efanet.whitening_loss`);
* optionally ``--identity-weight`` x the pixel MSE (0-255 scale) of a photo stylised with
  itself (keeps the decoder an inverse of the encoder).

The exchange block's alignment layer starts at zero (the block is then AdaIN), and the decoder
starts from ``--init``: the matching-level decoder of a wct file (``decoder4`` / ``decoder3``)
or an adain file of that level, so short runs start from a working AdaIN network.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.device import autocast
from ..core.losses import relative_mse
from ..core.stats import gram
from ..core.vgg import LAYER_CHANNELS, VGG19
from ..core.weights import resolve_weights
from ..errors import BrushworkError
from ..methods import feedforward as ff
from ..methods.efanet import ExchangeBlock, whitening_loss
from . import common as training
from .loops import fixed_styles, init_decoder, pair_batches, train_loop

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
DEFAULT_INIT = "wct_vgg.safetensors"
INIT_HINT = "pass --init PATH (a wct or adain weight file) or --init none"


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=4, steps=4000, lr=1e-4)
    parser.add_argument("--level", type=int, default=4, choices=[3, 4],
                        help="encoder level of the exchange block: relu4_1 (default) or relu3_1")
    parser.add_argument("--dim", type=int, default=32,
                        help="channels of the exchange block's code (T is dim x dim)")
    parser.add_argument("--hidden", type=int, default=256,
                        help="size of the exchange block's Gram embeddings")
    parser.add_argument("--width", type=float, default=1.0,
                        help="decoder channel multiplier (1 = the mirror of VGG19; --init needs 1)")
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--style-weight", type=float, default=3.0,
                        help="weight of the relative Gram loss (relu1_1..relu4_1)")
    parser.add_argument("--whitening-weight", type=float, default=10.0,
                        help="weight of the whitening loss of the purified content code")
    parser.add_argument("--identity-weight", type=float, default=0.0,
                        help="weight of a pixel identity loss (a photo stylised with itself); "
                             "0 = the paper's losses")
    parser.add_argument("--init", default=DEFAULT_INIT,
                        help="weight file whose decoder of the same level starts the decoder "
                             "(a wct file's decoder4/decoder3, or an adain file of that "
                             "level); 'none' = random; ignored with --resume")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def init_from(dec, path, level: int, width: float) -> str:
    """Load into ``dec`` the level-``level`` decoder of weight file ``path`` (``decoder{level}``
    of a wct file, ``decoder`` of an adain file of that level); returns a description."""
    prefix = init_decoder(dec, path, level, width, flag="--init", adain=True)
    return f"{Path(path).name} ({prefix})"


def gram_distance(feats: dict, targets: dict, layers=STYLE_LAYERS) -> torch.Tensor:
    """Sum over ``layers`` of MSE(gram(out), gram(style)) / mean(gram(style)^2)."""
    total = 0.0
    for name in layers:
        g = gram(targets[name])
        total = total + F.mse_loss(gram(feats[name]), g) / g.pow(2).mean().clamp_min(1e-8)
    return total


def losses(enc, block, dec, contents, styles, level, bf16, device, cw=1.0, sw=3.0, ww=10.0,
           iw=0.0):
    """(total, parts, stylised images) of one batch of (content, style) pairs."""
    layer = LEVEL_LAYERS[level]
    with torch.no_grad():
        cf = ff.encode(enc, contents, [layer], bf16)[layer]
        sf = ff.encode(enc, styles, list(STYLE_LAYERS), bf16)
    target, code = block(cf, sf[layer], return_code=True)
    with autocast(device, bf16):
        out = dec(target).float()
    of = ff.encode(enc, out, list(STYLE_LAYERS), bf16)
    lc = relative_mse(of[layer], target.detach())
    ls = gram_distance(of, sf)
    lw = whitening_loss(code)
    total = cw * lc + sw * ls + ww * lw
    parts = {"content": float(lc.detach()), "style": float(ls.detach()),
             "whitening": float(lw.detach())}
    if iw:
        with autocast(device, bf16):
            rec = dec(block(cf, cf)).float()
        li = F.mse_loss(rec, contents) * 255.0 ** 2
        total = total + iw * li
        parts["identity"] = float(li.detach())
    parts["total"] = float(total.detach())
    return total, parts, out


def _check(args) -> None:
    for name in ("content_weight", "style_weight", "whitening_weight", "identity_weight"):
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not (args.content_weight or args.style_weight):
        raise BrushworkError("--content-weight and --style-weight are both 0: nothing to train")
    if args.dim < 1 or args.hidden < 1:
        raise BrushworkError("--dim and --hidden must be at least 1")
    if not args.width > 0:
        raise BrushworkError("--width must be positive")


def _meta(level, width, dim, hidden, step, cfg: dict, init: str) -> dict:
    return {"method": "efanet", "encoder": "vgg", "level": str(level), "width": str(width),
            "dim": str(dim), "hidden": str(hidden), "steps": str(step),
            "crop": str(cfg.get("size")), "batch": str(cfg.get("batch")),
            "lr": str(cfg.get("lr")), "content_weight": str(cfg.get("content_weight")),
            "style_weight": str(cfg.get("style_weight")),
            "whitening_weight": str(cfg.get("whitening_weight")),
            "identity_weight": str(cfg.get("identity_weight")), "init": init}


def run(args, callback=None) -> Path:
    """Train an EFANet exchange block and decoder; returns the path of the weight file."""
    device, bf16 = training.start_run(args)
    _check(args)
    contents, styles = training.load_training_data(args)
    layer = LEVEL_LAYERS[args.level]
    enc = VGG19(device=device, autocast=bf16, last_layer="relu4_1")
    block = ExchangeBlock(LAYER_CHANNELS[layer], args.dim, args.hidden).to(device)
    dec = decoder(args.level, args.width).to(device)
    init = "none"
    if str(args.init).lower() != "none" and not args.resume:
        init = init_from(dec, resolve_weights(args.init, args.init, INIT_HINT), args.level,
                         args.width)
    if args.resume:  # the start the run recorded
        init = training.load_checkpoint_config(training.checkpoint_path(args)).get("init_used",
                                                                                  init)
    opt = torch.optim.Adam(list(block.parameters()) + list(dec.parameters()), lr=args.lr)
    fixed_s = fixed_styles(styles, args).to(device)

    def loss(batch):
        total, parts, _ = losses(enc, block, dec, *batch, args.level, bf16, device,
                                 args.content_weight, args.style_weight, args.whitening_weight,
                                 args.identity_weight)
        return total, parts

    def sample(x):
        _, _, out = losses(enc, block, dec, x, fixed_s, args.level, bf16, device)
        return [x, fixed_s, out.clamp(0, 1)]

    config = {**vars(args), "init_used": init}
    train_loop("efanet", args, contents, {"exchange": block, "decoder": dec}, {"all": opt},
               device, callback, loss, sample,
               lambda step: _meta(args.level, args.width, args.dim, args.hidden, step, config,
                                  init),
               batches=pair_batches(contents, styles, args), config={"init_used": init})
    return Path(args.out)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the exchange block and decoder of a training checkpoint as a weight file;
    returns its sha256."""
    cfg = training.load_checkpoint_config(checkpoint)
    level, width = int(cfg.get("level", 4)), float(cfg.get("width", 1.0))
    dim, hidden = int(cfg.get("dim", 32)), int(cfg.get("hidden", 256))
    models = {"exchange": ExchangeBlock(LAYER_CHANNELS[LEVEL_LAYERS[level]], dim, hidden),
              "decoder": decoder(level, width)}
    return training.export_checkpoint(
        checkpoint, out, models,
        lambda step: _meta(level, width, dim, hidden, step, cfg, cfg.get("init_used", "none")),
        fp16=fp16, extra_meta=extra_meta)

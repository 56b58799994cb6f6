"""`brushwork train totalst`: the total style transfer decoder (Kim & Choi).

Each step transforms a batch of (photo, painting) pairs with the feature transformer
(intra-scale, then inter-scale whitening-colouring of relu1_1, relu2_1, relu3_1; see
:mod:`brushwork.methods.totalst`), decodes the relu3_1 target with the relu2_1 and relu1_1
targets at the skip connections, re-encodes the output with VGG19 and minimises

* ``--content-weight`` x MSE(relu3_1 of the output, the transformed relu3_1 target), relative
  to the target's mean square;
* ``--intra-weight`` x the mean/covariance distance of the output's relu1_1..relu4_1 features
  to the painting's, layer by layer (:func:`~brushwork.core.losses.mean_cov_distance`,
  relative: each statistic's MSE over the target statistic's mean square);
* ``--inter-weight`` x the same distance between the output's and the painting's joint maps
  (relu1_1..relu3_1 area-resized to the relu3_1 size and concatenated: 448 channels), so the
  cross-scale correlations are learnt as well.

The decoder's relu3_1 layers start from ``--init`` (default: the shipped adain decoder, relu3_1
level, every convolution of matching shape copied) and its skip merges as pass-through, so the
first step already decodes like that decoder.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.device import autocast
from ..core.losses import mean_cov_distance, relative_mse
from ..core.vgg import VGG19
from ..core.weights import resolve_weights
from ..errors import BrushworkError
from ..methods import feedforward as ff
from ..methods.totalst import (LAYER, LAYERS, SCOPES, SKIP_LAYERS, TotalDecoder,
                               joint_features, total_transform)
from . import common as training
from .loops import (STYLE_LOSS_LAYERS, conv_layers, copy_decoder_convs, fixed_styles,
                    pair_batches, train_loop)

DEFAULT_INIT = "adain_vgg.safetensors"
INIT_HINT = "pass --init PATH (an adain relu3_1 or totalst weight file) or --init none"


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=4, steps=2000, lr=1e-4)
    parser.add_argument("--content-weight", type=float, default=1.0,
                        help="weight of the content loss (relu3_1 of the output vs the "
                             "transformed target, MSE relative to the target's mean square)")
    parser.add_argument("--intra-weight", type=float, default=1.0,
                        help="weight of the intra-scale style loss (per-layer mean and "
                             "covariance distance, relative, relu1_1..relu4_1)")
    parser.add_argument("--inter-weight", type=float, default=1.0,
                        help="weight of the inter-scale style loss (mean and covariance "
                             "distance of the concatenated relu1_1..relu3_1 maps, relative)")
    parser.add_argument("--scale-stats", choices=SCOPES, default="both",
                        help="the feature transform the training targets come from")
    parser.add_argument("--width", type=float, default=1.0,
                        help="decoder channel multiplier (1 = VGG19's mirror)")
    parser.add_argument("--init", default=DEFAULT_INIT,
                        help="weight file whose decoder convolutions of matching shape start "
                             "the decoder (an adain relu3_1 file, or a totalst file); 'none' = "
                             "random")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def init_from(dec: TotalDecoder, path) -> int:
    """Copy into ``dec.body`` the 3x3 convolutions of the decoder in weight file ``path``
    (``decoder.*`` of an adain file, ``decoder.body.*`` of a totalst file), aligned from the
    output end, wherever the shapes match; returns how many were copied."""
    return copy_decoder_convs(conv_layers(dec.body), path, ("decoder.body", "decoder"))


def targets(enc, contents, styles, bf16, scope="both"):
    """(transformed targets {relu1_1, relu2_1, relu3_1: batch}, style features at
    relu1_1..relu4_1) for a batch of (content, style) pairs."""
    with torch.no_grad():
        cf = ff.encode(enc, contents, list(LAYERS), bf16)
        sf = ff.encode(enc, styles, list(STYLE_LOSS_LAYERS), bf16)
        per = [total_transform({l: cf[l][i:i + 1] for l in LAYERS},
                               {l: sf[l][i:i + 1] for l in LAYERS}, scope)
               for i in range(len(contents))]
        t = {l: torch.cat([p[l] for p in per]) for l in LAYERS}
    return t, sf


def losses(enc, dec, contents, styles, bf16, device, cw, iw, xw, scope="both"):
    """(total, parts, output) of the total style transfer loss on a batch of pairs."""
    t, sf = targets(enc, contents, styles, bf16, scope)
    with autocast(device, bf16):
        out = dec(t[LAYER], {l: t[l] for l in SKIP_LAYERS}).float()
    of = ff.encode(enc, out, list(STYLE_LOSS_LAYERS), bf16)
    lc = relative_mse(of[LAYER], t[LAYER])
    l_intra = mean_cov_distance(of, sf, STYLE_LOSS_LAYERS, relative=True)
    l_inter = mean_cov_distance({"joint": joint_features(of)}, {"joint": joint_features(sf)},
                                ["joint"], relative=True)
    total = cw * lc + iw * l_intra + xw * l_inter
    parts = {"content": float(lc.detach()), "intra": float(l_intra.detach()),
             "inter": float(l_inter.detach()), "total": float(total.detach())}
    return total, parts, out


@torch.no_grad()
def stylize_batch(enc, dec, contents, styles, bf16, scope="both") -> torch.Tensor:
    """Total style transfer of each (content, style) pair of two batches (sample grids)."""
    t, _ = targets(enc, contents, styles, bf16, scope)
    return ff.decode(lambda x: dec(x, {l: t[l] for l in SKIP_LAYERS}), t[LAYER],
                     bf16).clamp(0, 1)


def _meta(args_like: dict, step: int, init: str) -> dict:
    keys = ("size", "batch", "lr", "content_weight", "intra_weight", "inter_weight",
            "scale_stats", "width")
    names = {"size": "crop"}
    meta = {"method": "totalst", "encoder": "vgg", "merge": "concat+1x1", "steps": str(step),
            "init": init}
    meta.update({names.get(k, k): str(args_like.get(k)) for k in keys})
    return meta


def run(args, callback=None) -> Path:
    """Train a total style transfer decoder; returns the path of the weight file written."""
    device, bf16 = training.start_run(args)
    for name in ("content_weight", "intra_weight", "inter_weight"):
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not (args.content_weight or args.intra_weight or args.inter_weight):
        raise BrushworkError("--content-weight, --intra-weight and --inter-weight are all 0: "
                             "nothing to train")
    if not args.width > 0:
        raise BrushworkError("--width must be positive")
    contents, styles = training.load_training_data(args)
    enc = VGG19(device=device, autocast=bf16, last_layer="relu4_1")
    dec = TotalDecoder(args.width).to(device)
    init = "none"
    if str(args.init).lower() != "none":
        path = resolve_weights(args.init, args.init, INIT_HINT)
        init = f"{Path(path).name} ({init_from(dec, path)} of {len(conv_layers(dec.body))} " \
               f"convolutions)"
    if args.resume:  # the start the run recorded
        init = training.load_checkpoint_config(training.checkpoint_path(args)).get("init_used",
                                                                                  init)
    opt = torch.optim.Adam(dec.parameters(), lr=args.lr)
    fixed_s = fixed_styles(styles, args).to(device)

    def loss(batch):
        total, parts, _ = losses(enc, dec, *batch, bf16, device, args.content_weight,
                                 args.intra_weight, args.inter_weight, args.scale_stats)
        return total, parts

    def sample(x):
        return [x, fixed_s, stylize_batch(enc, dec, x, fixed_s, bf16, args.scale_stats)]

    train_loop("totalst", args, contents, {"decoder": dec}, {"decoder": opt}, device, callback,
               loss, sample, lambda step: _meta(vars(args), step, init),
               batches=pair_batches(contents, styles, args), config={"init_used": init})
    return Path(args.out)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the decoder of a training checkpoint as a weight file; returns its sha256."""
    probe = training.load_checkpoint_config(checkpoint)
    init = str(probe.get("init_used", probe.get("init")))
    return training.export_checkpoint(
        checkpoint, out, {"decoder": TotalDecoder(float(probe.get("width", 1.0)))},
        lambda step: _meta(probe, step, init), fp16=fp16, extra_meta=extra_meta)

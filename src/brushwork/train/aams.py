"""`brushwork train aams`: the AAMS self-attention autoencoder (Yao et al. 2019).

Reconstruction only (the style is the content): the frozen VGG19 encodes a crop to relu4_1, the
self-attention module gives its output and attention map, and the decoder decodes the module's
output. Losses: pixel MSE + ``--perceptual-weight`` x the mean relative MSE of VGG19
relu1_1..relu4_1 features of the decoded image against the crop's + ``--sparsity-weight`` x the
mean of the attention map (L1: it is positive). ``--init-decoder`` starts the decoder from a
relu4_1 reconstruction decoder (a wct file), which the output of the module matches where the
attention is high.

``--style-weight W`` (> 0; not in the paper) adds a stylisation loss: each step also builds the
multi-stroke target of (photo, painting) pairs (the attention module frozen), decodes it and
adds ``--content-weight`` x the MSE between the output's relu4_1 features and the target + W x
the mean/std distance to the painting at relu1_1..relu4_1, so the decoder learns to render the
painting's statistics, not only to invert features. ``--init`` starts from an aams file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.blocks import decoder
from ..core.device import autocast
from ..core.protocol import Clock, emit
from ..core.losses import relative_mse
from ..core.vgg import VGG19
from ..core.weights import (load_prefixed, load_weights, prefixed_state, resolve_weights,
                            save_weights)
from ..errors import BrushworkError
from ..methods import feedforward as ff
from ..methods.aams import (CHANNELS, LAYER, MAX_STROKES, SelfAttention, multi_stroke,
                             stroke_features)
from . import common as training
from .loops import (STYLE_LOSS_LAYERS, add_init_decoder_argument,
                    add_stylization_arguments, check_stylization_arguments, init_decoder,
                    merge_parts, paired_sampler, stylization_loss)

PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=2, steps=1000, lr=1e-4)
    parser.add_argument("--width", type=float, default=1.0, help="decoder channel multiplier")
    parser.add_argument("--inner", type=int, default=CHANNELS // 8,
                        help="query/key channels of the self-attention module")
    parser.add_argument("--perceptual-weight", type=float, default=1.0,
                        help="weight of the VGG19 relu1_1..relu4_1 relative feature loss")
    parser.add_argument("--sparsity-weight", type=float, default=0.1,
                        help="weight of the L1 loss on the attention map")
    parser.add_argument("--attention-lr", type=float, default=None,
                        help="learning rate of the attention module (default: 10 x --lr)")
    add_init_decoder_argument(parser, "relu4_1 (level 4)")
    parser.add_argument("--init", metavar="FILE", default=None,
                        help="start the attention module and the decoder from an aams weight "
                             "file (e.g. the shipped aams_vgg.safetensors, to fine-tune it "
                             "with --style-weight); ignored with --resume")
    add_stylization_arguments(parser, "the multi-stroke features")
    parser.add_argument("--strokes", type=int, default=3,
                        help="stroke sizes of the stylisation loss's targets")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def check_arguments(args) -> None:
    if args.inner < 1:
        raise BrushworkError("--inner must be at least 1")
    if not args.width > 0:
        raise BrushworkError("--width must be positive")
    if args.attention_lr is not None and not args.attention_lr > 0:
        raise BrushworkError("--attention-lr must be positive")
    for name in ("perceptual_weight", "sparsity_weight"):
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    check_stylization_arguments(args)
    if not 1 <= args.strokes <= MAX_STROKES:
        raise BrushworkError(f"--strokes must be 1..{MAX_STROKES}, got {args.strokes}")


def losses(vgg, att, dec, x, bf16, device, perceptual_weight, sparsity_weight):
    """(total, parts, decoded images, attention maps (N, 1, h, w))."""
    with torch.no_grad():
        feats = ff.encode(vgg, x, list(PERCEPTUAL_LAYERS), bf16)
    f = feats[LAYER]
    o, a = att(f)
    with autocast(device, bf16):
        y = dec(o).float()
    pix = F.mse_loss(y, x)
    yf = ff.encode(vgg, y, list(PERCEPTUAL_LAYERS), bf16)
    perc = sum(relative_mse(yf[l], feats[l]) for l in PERCEPTUAL_LAYERS)
    perc = perc / len(PERCEPTUAL_LAYERS)
    sparse = a.mean()
    total = pix + perceptual_weight * perc + sparsity_weight * sparse
    parts = {"pixel": float(pix.detach()), "perceptual": float(perc.detach()),
             "sparsity": float(sparse.detach()), "total": float(total.detach())}
    return total, parts, y, a


def stylize_losses(vgg, att, dec, contents, styles, bf16, device, strokes, cw, sw):
    """(total, parts) of the stylisation loss on (content, style) pairs: the multi-stroke
    target of each pair (the attention module frozen) decoded and compared with the target and
    the style (:func:`~brushwork.train.loops.stylization_loss`)."""
    with torch.no_grad():
        f = ff.encode(vgg, contents, [LAYER], bf16)[LAYER]
        sf = ff.encode(vgg, styles, list(STYLE_LOSS_LAYERS), bf16)
        t = torch.cat([multi_stroke(f[i:i + 1],
                                    stroke_features(vgg, styles[i:i + 1], strokes, bf16,
                                                    full=sf[LAYER][i:i + 1]),
                                    att.attention_map(f[i:i + 1]))
                       for i in range(len(contents))])
    with autocast(device, bf16):
        out = dec(t).float()
    return stylization_loss(vgg, out, t, sf, bf16, cw, sw)


def attention_image(a: torch.Tensor, size) -> torch.Tensor:
    """Attention maps (N, 1, h, w) as grey (N, 3, H, W) images, each stretched to [0, 1]."""
    lo = a.amin((1, 2, 3), keepdim=True)
    hi = a.amax((1, 2, 3), keepdim=True)
    a = (a - lo) / (hi - lo).clamp_min(1e-8)
    return F.interpolate(a, size=size, mode="nearest").expand(-1, 3, -1, -1)


def run(args, callback=None) -> Path:
    """Train the attention module and decoder; returns the path of the weight file written."""
    check_arguments(args)
    device, bf16 = training.start_run(args)
    contents, styles = training.load_training_data(args)
    vgg = VGG19(device=device, autocast=bf16, last_layer=LAYER)
    att = SelfAttention(CHANNELS, args.inner).to(device)
    dec = decoder(4, args.width).to(device)
    if args.init_decoder and not args.resume:
        init_decoder(dec, args.init_decoder, 4, args.width)
    if args.init and not args.resume:
        path = resolve_weights(args.init, args.init, "pass an aams weight file")
        state, _ = load_weights(path)
        load_prefixed(att, "attention", state, path)
        load_prefixed(dec, "decoder", state, path)
    att_lr = args.attention_lr or 10 * args.lr
    opt = torch.optim.Adam([{"params": list(att.parameters()), "lr": att_lr},
                            {"params": list(dec.parameters()), "lr": args.lr}])

    def loss_fn(x):
        total, parts = 0.0, {}
        if args.reconstruction_weight:
            total, parts, _, _ = losses(vgg, att, dec, x, bf16, device, args.perceptual_weight,
                                        args.sparsity_weight)
            total = args.reconstruction_weight * total
        if args.style_weight:
            content, style = (t.to(device) for t in next(pairs))
            st, sp = stylize_losses(vgg, att, dec, content, style, bf16, device, args.strokes,
                                    args.content_weight, args.style_weight)
            total = total + st
            parts = merge_parts(total, parts, sp)
        return total, parts

    def sample_fn(x):
        _, _, y, a = losses(vgg, att, dec, x, bf16, device, 1.0, 1.0)
        plain = ff.decode(dec, ff.encode(vgg, x, [LAYER], bf16)[LAYER], bf16)
        return [x, y.clamp(0, 1), plain.clamp(0, 1), attention_image(a, x.shape[-2:])]

    meta = {"method": "aams", "level": "4", "width": str(args.width), "inner": str(args.inner),
            "encoder": "vgg", "perceptual_weight": str(args.perceptual_weight),
            "sparsity_weight": str(args.sparsity_weight), "attention_lr": str(att_lr),
            "style_weight": str(args.style_weight), "content_weight": str(args.content_weight),
            "reconstruction_weight": str(args.reconstruction_weight)}
    models = {"attention": att, "decoder": dec}
    images = contents + styles
    ckpt = training.checkpoint_path(args)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    step = 0
    if args.resume:  # the learning rates of this run, not the checkpoint's
        step = training.load_checkpoint(ckpt, models=models, optimizers={"all": opt})["step"]
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = att_lr, args.lr
    it = training.batches(images, args.size, args.batch, args.seed, start_step=step)
    pairs = paired_sampler(contents, styles, args, start=step, streams=(2, 3))
    fixed = training.sample_batch(images, args.size, 4, training.step_generator(args.seed, 0, 9))
    clock, t0, parts = Clock(), step, {}
    while step < args.steps:
        att.train(), dec.train()
        total, parts = loss_fn(next(it).to(device))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        step += 1
        if training.after_step("aams", args, step, t0, total, parts, clock, callback, ckpt,
                               models=models, optimizers={"all": opt}, config=config):
            att.eval(), dec.eval()
            with torch.no_grad():
                rows = sample_fn(fixed.to(device))
            training.save_grid(rows, ckpt.with_name(f"{ckpt.stem}_sample_{step:06d}.png"))
    meta.update(steps=str(step), crop=str(args.size), batch=str(args.batch), lr=str(args.lr))
    state = {**prefixed_state("attention", att.eval()), **prefixed_state("decoder", dec.eval())}
    save_weights(state, args.out, fp16=args.fp16, metadata=meta)
    emit(callback, training.train_event("aams", step, args.steps, parts, clock(),
                                        f"wrote {args.out}", kind="done"))
    return Path(args.out)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the attention module and decoder of a training checkpoint as a weight file;
    returns its sha256. Ships a model from a run stopped before its last step."""
    probe = training.load_checkpoint_config(checkpoint)
    width, inner = float(probe.get("width", 1.0)), int(probe.get("inner", CHANNELS // 8))

    def meta(step):
        return {"method": "aams", "level": "4", "width": str(width), "inner": str(inner),
                "encoder": "vgg", "steps": str(step), "crop": str(probe.get("size")),
                "batch": str(probe.get("batch")), "lr": str(probe.get("lr")),
                "perceptual_weight": str(probe.get("perceptual_weight")),
                "sparsity_weight": str(probe.get("sparsity_weight")),
                **{k: str(probe[k]) for k in ("style_weight", "content_weight",
                                              "reconstruction_weight") if k in probe}}
    models = {"attention": SelfAttention(CHANNELS, inner), "decoder": decoder(4, width)}
    return training.export_checkpoint(checkpoint, out, models, meta, fp16=fp16,
                                      extra_meta=extra_meta)

"""`brushwork train johnson`: a transformer net for one painting (Johnson et al. 2016)."""
from __future__ import annotations

import json
import random
from pathlib import Path
import torch
from ..core.blocks import one_hot_styles
from ..errors import BrushworkError
from ..core.image import load_image, resize_long_side
from ..core.losses import content_loss, gram, gram_loss, tv_loss, weighted_sum
from ..core.protocol import (Clock, emit)
from ..core.vgg import VGG19
from ..methods.johnson import (CONTENT_LAYER, STYLE_LAYERS, TransformerNet)
from . import common as training
from ..core.device import autocast, has_bf16, pick_device
from ..core.weights import save_weights, prefixed_state


class PerceptualTargets:
    """Gram targets of each style image at STYLE_LAYERS, stacked: (N_styles, C, C) per layer."""

    def __init__(self, vgg: VGG19, styles: list[torch.Tensor]):
        grams = {n: [] for n in STYLE_LAYERS}
        with torch.no_grad():
            for s in styles:
                feats = vgg(s.to(vgg.device), list(STYLE_LAYERS))
                for n in STYLE_LAYERS:
                    grams[n].append(gram(feats[n]))
        self.grams = {n: torch.cat(g) for n, g in grams.items()}

    def add(self, vgg: VGG19, style: torch.Tensor) -> None:
        new = PerceptualTargets(vgg, [style])
        self.grams = {n: torch.cat([self.grams[n], new.grams[n]]) for n in STYLE_LAYERS}


def perceptual_loss(vgg, out, content, ids, targets: PerceptualTargets, args):
    """Weighted content + style + TV terms for a batch; ``ids`` = style index per sample."""
    layers = sorted(set(STYLE_LAYERS) | {CONTENT_LAYER})
    f_out = vgg(out, layers)
    with torch.no_grad():
        f_content = vgg(content, [CONTENT_LAYER])[CONTENT_LAYER]
    style = sum(gram_loss(f_out[n], targets.grams[n][ids]) for n in STYLE_LAYERS)
    return weighted_sum({"content": (args.content_weight, content_loss(f_out[CONTENT_LAYER],
                                                                       f_content)),
                         "style": (args.style_weight, style),
                         "tv": (args.tv_weight, tv_loss(out))})


def load_style_images(paths, style_size: int) -> list[torch.Tensor]:
    return [resize_long_side(load_image(p), style_size) for p in paths]


def add_arguments(p, multi: bool = False) -> None:
    """Flags shared by the johnson and cin trainers (``multi``: --style repeatable)."""
    p.add_argument("--style", required=True, action="append" if multi else "store",
                   help="style painting" + (" (repeat once per style)" if multi else ""))
    p.add_argument("--content", required=True, help="folder of content photos (recursive)")
    p.add_argument("--out", required=True, help="output weight file (.safetensors)")
    p.add_argument("--width", type=float, default=0.5, help="channel multiplier (1.0 = Johnson)")
    p.add_argument("--n-res", type=int, default=5, help="residual blocks")
    p.add_argument("--size", type=int, default=256, help="random crop size")
    p.add_argument("--load-size", type=int, default=None, help="short side before cropping")
    p.add_argument("--style-size", type=int, default=384, help="long side of the style image")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=1.5,
                   help="Gram loss weight (30 washes the content out at 96-128 px crops)")
    p.add_argument("--tv-weight", type=float, default=1e3)
    training.add_run_arguments(p, every=200)
    p.add_argument("--fp16", action="store_true", help="store the exported weights as fp16")


def check_arguments(args) -> None:
    for name in ("size", "batch", "steps", "style_size"):
        if getattr(args, name) < 1:
            raise BrushworkError(f"--{name.replace('_', '-')} must be at least 1")
    if args.size < 16 or args.width <= 0 or not args.lr > 0:
        raise BrushworkError("--size must be >= 16, --width and --lr positive")
    training.check_out_and_threads(args)


def train_loop(method: str, args, net: TransformerNet, targets: PerceptualTargets, vgg, params,
               style_ids: list[int], style_names: list[str], callback=None,
               extra_meta: dict | None = None) -> dict:
    """The plain loop both trainers share: sample crops + one style per sample, step, checkpoint.

    ``params`` are the parameters to optimise (all of the net, or one style's norms);
    ``style_ids`` the styles to sample from. Resumable: batches depend on (seed, step) only.
    """
    device = vgg.device
    ckpt = training.checkpoint_path(args)
    load_size = args.load_size or max(args.size, min(512, 2 * args.size))
    photos = training.load_folder(args.content, load_size)
    opt = torch.optim.Adam(params, lr=args.lr)
    start = 0
    if args.resume:
        start = training.load_checkpoint(ckpt, models={"net": net}, optimizers={"opt": opt})["step"]
    clock, log, bad = Clock(), {}, 0
    net.train()
    for step in range(start, args.steps):
        g = training.step_generator(args.seed, step)
        x = training.sample_batch(photos, args.size, args.batch, g).to(device)
        pick = torch.randint(len(style_ids), (args.batch,), generator=g)
        ids = torch.tensor(style_ids)[pick]
        style = one_hot_styles(ids, net.n_styles).to(device)
        with autocast(device, args.bf16):
            out = net(x, style)
        total, log = perceptual_loss(vgg, out.float(), x, ids.to(device), targets, args)
        opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(total))
        if finite:
            total.backward()
            finite = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        if finite:
            opt.step()
            bad = 0
        else:  # a rare bf16 overflow: skip the batch rather than poison the weights
            bad += 1
            if bad > 10:
                raise BrushworkError(f"{method}: the loss is not finite for {bad} steps in a row "
                                     f"(step {step + 1}); resume with a lower --lr or --no-bf16")
        done = step + 1
        emit(callback, training.train_event(method, done, args.steps, log, clock()))
        if done % args.checkpoint_every == 0 or done == args.steps:
            training.checkpoint_and_log(ckpt, models={"net": net}, optimizers={"opt": opt},
                                        step=done, config=vars(args), seconds=clock(),
                                        losses=log)
        if args.sample_every and (done % args.sample_every == 0 or done == args.steps):
            training.save_grid([x[:4], out.detach()[:4]],
                               Path(ckpt).with_name(Path(ckpt).stem + f"_sample_{done:06d}.png"))
    net.eval()
    meta = {"method": method, "config": json.dumps(net.config()),
            "style_names": json.dumps(style_names), "steps": str(args.steps),
            "crop": str(args.size), **(extra_meta or {})}
    sha = save_weights(prefixed_state("net", net), args.out,
                                fp16=getattr(args, "fp16", False), metadata=meta)
    emit(callback, training.train_event(method, args.steps, args.steps, log, clock(),
                                        message=f"wrote {args.out}", kind="done"))
    return {"out": str(args.out), "sha256": sha, "steps": args.steps, "losses": log,
            "seconds": clock()}


def run(args, callback=None) -> dict:
    check_arguments(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = pick_device(args.device)
    args.bf16 = args.bf16 and has_bf16(device)  # bf16 autocast only where it is fast
    vgg = VGG19(last_layer="relu4_3", device=device, autocast=args.bf16)
    targets = PerceptualTargets(vgg, load_style_images([args.style], args.style_size))
    net = TransformerNet(args.width, 1, args.n_res).to(device)
    return train_loop("johnson", args, net, targets, vgg, list(net.parameters()), [0],
                      [Path(args.style).stem], callback)

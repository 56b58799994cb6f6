"""`brushwork train tpfr`: the projection, the peer-regularisation layer and the decoder of
two-stage peer-regularised feature recombination (Svoboda et al. 2020).

Each step takes a batch of (photo, painting) pairs. With ``E`` the frozen VGG19 followed by the
learned projection into ``[content | style]`` latent channels, ``R`` the two-stage
peer-regularisation layer and ``D`` the decoder, ``out = D(R(E(photo), E(painting)))`` and the
generator minimises

* ``--reconstruction-weight`` x the pixel L1 of ``D(E(x)) - x`` for the photos and paintings;
* ``--cycle-weight`` x the pixel L1 of ``D(R(E(out), E(photo))) - photo`` (the output
  re-stylised with its photo as style gives the photo back);
* ``--content-weight`` x the relative MSE between the content parts of ``E(out)`` and
  ``E(photo)`` (metric learning, content side);
* ``--metric-weight`` x the style metric loss (:func:`metric_loss`) of the output's pooled,
  normalised style code: near the painting's, at least ``--margin`` (squared distance) from
  the photo's and from the other paintings' of the batch;
* ``--adversarial-weight`` x the hinge generator loss of a small discriminator
  (:class:`Discriminator`) that sees paintings as real and outputs as fake (trained with it,
  ``--d-lr``);
* optionally ``--style-weight`` x the relative VGG19 mean/std distance of the output to the
  painting (relu1_1 up to the latent level; 0 = the paper's losses only).

The projection starts as the identity and the decoder from ``--init`` (``auto``: the
reconstruction decoder of adain_vgg for relu3_1, wct_vgg's for relu4_1), so the first steps
start from a working auto-encoder; ``--init none`` starts from random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.blocks import LEVEL_LAYERS, decoder, hinge_d_loss, hinge_g_loss
from ..core.device import autocast
from ..core.losses import mean_std_distance, relative_mse
from ..core.protocol import Clock, emit
from ..core.stats import channel_mean
from ..core.vgg import LAYER_CHANNELS, VGG19
from ..core.weights import prefixed_state, resolve_weights, save_weights
from ..errors import BrushworkError
from ..methods import feedforward as ff
from ..methods.tpfr import PeerRecombination, Projection, split
from . import common as training
from .loops import fixed_styles, init_decoder, paired_sampler

INIT_FILES = {3: "adain_vgg.safetensors", 4: "wct_vgg.safetensors"}
INIT_HINT = "pass --init PATH (a wct or adain weight file) or --init none"
STYLE_LAYERS = {3: ("relu1_1", "relu2_1", "relu3_1"),
                4: ("relu1_1", "relu2_1", "relu3_1", "relu4_1")}


class Discriminator(nn.Module):
    """A small patch discriminator: four stride-2 4x4 convolutions (spectral norm, LeakyReLU
    0.2) of ``width``, 2, 4, 8 x ``width`` channels and a 1x1 convolution to one logit per
    patch; ``forward(x)`` gives (B, 1, H/16, W/16) logits."""

    def __init__(self, width: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        layers, c_in = [], 3
        for m in (1, 2, 4, 8):
            layers += [sn(nn.Conv2d(c_in, width * m, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = width * m
        layers.append(sn(nn.Conv2d(c_in, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def style_code(z_style: torch.Tensor) -> torch.Tensor:
    """(B, d) unit vectors: the spatially averaged style part of a latent, L2-normalised."""
    return F.normalize(channel_mean(z_style), dim=1)


def metric_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives, margin: float):
    """``|a - p|^2 + mean_n relu(margin - |a - n|^2)`` averaged over the batch: (B, d) codes,
    ``negatives`` a list of (B, d) codes. Identical anchor and positive with every negative
    at least ``margin`` away give the minimum, 0."""
    pos = (anchor - positive).pow(2).sum(1)
    neg = sum(F.relu(margin - (anchor - n).pow(2).sum(1)) for n in negatives) / max(1,
                                                                                  len(negatives))
    return (pos + neg).mean()


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=128, batch=2, steps=4000, lr=1e-4)
    parser.add_argument("--level", type=int, default=3, choices=[3, 4],
                        help="latent level: VGG19 relu3_1 (default) or relu4_1")
    parser.add_argument("--content-dim", type=int, default=None,
                        help="channels of the latent's content part (default: half the "
                             "encoder's channels)")
    parser.add_argument("--style-dim", type=int, default=None,
                        help="channels of the latent's style part (default: the other half)")
    parser.add_argument("--att-dim", type=int, default=32,
                        help="size of the graph attention's projected features")
    parser.add_argument("--neighbours", type=int, default=5,
                        help="k of the k-nearest-neighbour graph during training")
    parser.add_argument("--width", type=float, default=1.0,
                        help="decoder channel multiplier (1 = the mirror of VGG19; --init needs 1)")
    parser.add_argument("--d-width", type=int, default=32, help="discriminator base channels")
    parser.add_argument("--d-lr", type=float, default=2e-4, help="discriminator learning rate")
    parser.add_argument("--reconstruction-weight", type=float, default=10.0)
    parser.add_argument("--cycle-weight", type=float, default=10.0)
    parser.add_argument("--content-weight", type=float, default=1.0,
                        help="weight of the latent content metric (content parts of output "
                             "and photo)")
    parser.add_argument("--metric-weight", type=float, default=1.0,
                        help="weight of the latent style metric loss")
    parser.add_argument("--margin", type=float, default=0.5,
                        help="margin of the style metric loss (squared distance of unit codes)")
    parser.add_argument("--adversarial-weight", type=float, default=0.1)
    parser.add_argument("--style-weight", type=float, default=0.0,
                        help="weight of an extra VGG19 mean/std style term; 0 = the paper's "
                             "losses only")
    parser.add_argument("--init", default="auto",
                        help="weight file whose decoder of the same level starts the decoder "
                             "(auto: adain_vgg for relu3_1, wct_vgg for relu4_1; needs "
                             "content-dim + style-dim = the encoder's channels); 'none' = "
                             "random; ignored with --resume")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


WEIGHTS = ("reconstruction_weight", "cycle_weight", "content_weight", "metric_weight",
           "adversarial_weight", "style_weight", "margin")


def dims(args) -> tuple[int, int]:
    channels = LAYER_CHANNELS[LEVEL_LAYERS[args.level]]
    dc = args.content_dim if args.content_dim is not None else channels // 2
    ds = args.style_dim if args.style_dim is not None else channels - dc
    return dc, ds


def _check(args) -> None:
    for name in WEIGHTS:
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not (args.reconstruction_weight or args.cycle_weight or args.style_weight):
        raise BrushworkError("--reconstruction-weight, --cycle-weight and --style-weight are "
                             "all 0: the decoder would learn nothing")
    dc, ds = dims(args)
    if dc < 1 or ds < 1 or args.att_dim < 1:
        raise BrushworkError("--content-dim, --style-dim and --att-dim must be at least 1")
    if args.neighbours < 1:
        raise BrushworkError("--neighbours must be at least 1")
    if not args.width > 0 or args.d_width < 1:
        raise BrushworkError("--width must be positive and --d-width at least 1")
    if not args.d_lr > 0:
        raise BrushworkError("--d-lr must be positive")


class Nets(nn.Module):
    """The trained parts together: projection, peer-regularisation layer, decoder."""

    def __init__(self, level: int, content_dim: int, style_dim: int, att_dim: int,
                 width: float):
        super().__init__()
        channels = LAYER_CHANNELS[LEVEL_LAYERS[level]]
        self.projection = Projection(channels, content_dim, style_dim)
        self.peer = PeerRecombination(content_dim, style_dim, att_dim)
        self.decoder = decoder(level, width, content_dim + style_dim)


def losses(vgg, nets, disc, contents, styles, level, k, bf16, device, w: dict):
    """(total generator loss, parts, stylised images) of one batch of (photo, painting) pairs;
    ``w`` maps the loss names of :data:`WEIGHTS` (without ``_weight``) to their weights."""
    layer = LEVEL_LAYERS[level]
    layers = list(STYLE_LAYERS[level]) if w["style"] else [layer]
    dc = nets.peer.content_dim
    with torch.no_grad():
        fc = vgg(contents, [layer])[layer]
        fs = vgg(styles, layers)
    zc, zs = nets.projection(fc), nets.projection(fs[layer])
    with autocast(device, bf16):
        out = nets.decoder(nets.peer(zc, zs, k)).float()
        rec = nets.decoder(torch.cat([zc, zs])).float()
    l_rec = F.l1_loss(rec, torch.cat([contents, styles]))
    fo = vgg(out, layers)
    zo = nets.projection(fo[layer])
    cc, cs = split(zc, dc)
    _, ss = split(zs, dc)
    oc, os_ = split(zo, dc)
    l_content = relative_mse(oc, cc.detach())
    a, p = style_code(os_), style_code(ss)
    negatives = [style_code(cs)] + ([p.roll(1, 0)] if p.shape[0] > 1 else [])
    l_metric = metric_loss(a, p, negatives, w["margin"])
    with autocast(device, bf16):
        back = nets.decoder(nets.peer(zo, zc, k)).float()
    l_cycle = F.l1_loss(back, contents)
    l_adv = hinge_g_loss([disc(out)]) if w["adversarial"] else out.new_zeros(())
    total = (w["reconstruction"] * l_rec + w["cycle"] * l_cycle + w["content"] * l_content
             + w["metric"] * l_metric + w["adversarial"] * l_adv)
    parts = {"reconstruction": l_rec, "cycle": l_cycle, "content": l_content,
             "metric": l_metric, "adversarial": l_adv}
    if w["style"]:
        l_style = mean_std_distance(fo, fs, STYLE_LAYERS[level], relative=True)
        total = total + w["style"] * l_style
        parts["style"] = l_style
    parts = {k_: float(v.detach()) for k_, v in parts.items()}
    parts["total"] = float(total.detach())
    return total, parts, out


def loss_weights(cfg: dict) -> dict:
    return {name.replace("_weight", ""): float(cfg[name]) for name in WEIGHTS}


def _meta(cfg: dict, step: int, init: str) -> dict:
    dc, ds = cfg["content_dim_used"], cfg["style_dim_used"]
    meta = {"method": "tpfr", "encoder": "vgg", "level": str(cfg["level"]),
            "width": str(cfg["width"]), "content_dim": str(dc), "style_dim": str(ds),
            "att_dim": str(cfg["att_dim"]), "neighbours": str(cfg["neighbours"]),
            "steps": str(step), "crop": str(cfg.get("size")), "batch": str(cfg.get("batch")),
            "lr": str(cfg.get("lr")), "init": init}
    meta.update({name: str(cfg.get(name)) for name in WEIGHTS})
    return meta


def run(args, callback=None) -> Path:
    """Train a tpfr projection, peer-regularisation layer and decoder; returns the path of
    the weight file written."""
    device, bf16 = training.start_run(args)
    _check(args)
    contents, styles = training.load_training_data(args)
    dc, ds = dims(args)
    layer = LEVEL_LAYERS[args.level]
    vgg = VGG19(device=device, autocast=bf16, last_layer=layer)
    nets = Nets(args.level, dc, ds, args.att_dim, args.width).to(device)
    disc = Discriminator(args.d_width).to(device)
    init = "none"
    init_arg = INIT_FILES[args.level] if str(args.init).lower() == "auto" else str(args.init)
    if init_arg.lower() != "none" and not args.resume:
        if dc + ds != LAYER_CHANNELS[layer]:
            raise BrushworkError(f"--init needs --content-dim + --style-dim = "
                                 f"{LAYER_CHANNELS[layer]} (the encoder's channels); "
                                 f"got {dc + ds}: pass --init none")
        path = resolve_weights(init_arg, init_arg, INIT_HINT)
        init = f"{Path(path).name} ({init_decoder(nets.decoder, path, args.level, args.width, flag='--init', adain=True)})"
    opt = torch.optim.Adam(nets.parameters(), lr=args.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.d_lr, betas=(0.5, 0.999))
    models = {**_parts(nets), "discriminator": disc}
    optimizers = {"g": opt, "d": opt_d}
    ckpt = training.checkpoint_path(args)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(init_used=init, content_dim_used=dc, style_dim_used=ds)
    step = 0
    if args.resume:
        info = training.load_checkpoint(ckpt, models=models, optimizers=optimizers, lr=args.lr)
        for group in opt_d.param_groups:
            group["lr"] = args.d_lr
        step = info["step"]
        init = info["config"].get("init_used", init)
        config["init_used"] = init
    w = loss_weights(config)
    pairs = paired_sampler(contents, styles, args, start=step)
    fixed = training.sample_batch(contents, args.size, 4, training.step_generator(args.seed, 0, 9))
    fixed_s = fixed_styles(styles, args)
    clock, t0 = Clock(), step
    parts = {}
    while step < args.steps:
        nets.train()
        content, style = (x.to(device) for x in next(pairs))
        total, parts, out = losses(vgg, nets, disc, content, style, args.level,
                                   args.neighbours, bf16, device, w)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if w["adversarial"]:
            d_loss = hinge_d_loss([disc(style)], [disc(out.detach())])
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["discriminator"] = float(d_loss.detach())
        step += 1
        if training.after_step("tpfr", args, step, t0, total, parts, clock, callback, ckpt,
                               models=models, optimizers=optimizers, config=config):
            nets.eval()
            with torch.no_grad():
                g = ff.decode(nets.decoder, nets.peer(nets.projection(
                    vgg(fixed.to(device), [layer])[layer]), nets.projection(
                    vgg(fixed_s.to(device), [layer])[layer]), args.neighbours), bf16)
            training.save_grid([fixed, fixed_s, g.clamp(0, 1)],
                               ckpt.with_name(f"{ckpt.stem}_sample_{step:06d}.png"))
    save_weights(_state(nets), args.out, fp16=args.fp16, metadata=_meta(config, step, init))
    emit(callback, training.train_event("tpfr", step, args.steps, parts, clock(),
                                        f"wrote {args.out}", kind="done"))
    return Path(args.out)


def _parts(nets: Nets) -> dict:
    return {"projection": nets.projection, "peer": nets.peer, "decoder": nets.decoder}


def _state(nets: Nets) -> dict:
    nets.eval()
    return {k: v for name, m in _parts(nets).items() for k, v in prefixed_state(name, m).items()}


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the projection, peer-regularisation layer and decoder of a training checkpoint
    as a weight file; returns its sha256."""
    cfg = training.load_checkpoint_config(checkpoint)
    nets = Nets(int(cfg["level"]), int(cfg["content_dim_used"]), int(cfg["style_dim_used"]),
                int(cfg["att_dim"]), float(cfg["width"]))
    return training.export_checkpoint(
        checkpoint, out, _parts(nets),
        lambda step: _meta(cfg, step, cfg.get("init_used", "none")), fp16=fp16,
        extra_meta=extra_meta)

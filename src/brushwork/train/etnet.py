"""`brushwork train etnet`: the error transition network that refines a frozen base method
(Song et al. 2019; see ``brushwork.methods.etnet``).

Each step: random photo and painting crops, the base method's result for each pair (no
gradient), the refinement on ``--levels`` pyramid levels with ``--iterations`` passes each, and
the paper's pyramid loss on the refined image at every level: relu4_1 content (relative MSE to
the photo) + ``--style-weight`` x the Gram terms at relu1_1..relu4_1, each divided by the
photo's own Gram distance to the painting (so every layer and every pair counts alike, and the
term is the benchmark's Gram ratio). Gradients are clipped to a global norm of ``--clip``
(1, as in the paper). ``--exclude FILE`` leaves out the images named in FILE (one file name per
line), e.g. a benchmark's held-out photos.

Ours, beside the paper's loss: ``--cov-weight`` adds mean/covariance terms at the same layers,
each divided by the photo's own distance to the painting (as the Gram terms; the covariance is
what the Frechet distance of the benchmarks measures, the Gram matrix mixes it with the mean),
and ``--base-content-weight`` a hinge on each pair's content distance above the base's own
(the refinement pays for its style gain with as little extra content distance as it can).
``--init FILE`` starts the network from an etnet weight file (a path or the shipped file).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core import stats as S
from ..core.losses import relative_mse
from ..core.protocol import Clock, emit
from ..core.vgg import VGG19
from ..core.weights import load_prefixed, prefixed_state, save_weights
from ..errors import BrushworkError
from ..methods import feedforward as ff
from ..methods import get_method
from ..methods.etnet import (BASES, DEFAULT_FILE, TRAIN_HINT, ErrorTransition,
                             gaussian_pyramid, make_targets, refine)
from . import common as training

CONTENT_LAYER = "relu4_1"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=128, batch=4, steps=2000, lr=5e-4)
    parser.add_argument("--base", default="adain", choices=BASES,
                        help="the method whose results the network learns to refine (its "
                             "shipped weights, frozen)")
    parser.add_argument("--levels", type=int, default=2,
                        help="pyramid levels refined, coarse to fine (the paper: 3)")
    parser.add_argument("--iterations", type=int, default=2,
                        help="refinement passes per level in training; the weight file's "
                             "default for stylising")
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel multiplier of the network (1 = 16/32/64 channels)")
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--style-weight", type=float, default=5.0,
                        help="weight of the Gram terms (1 pulls the base toward the photo, "
                             "5 toward the painting)")
    parser.add_argument("--clip", type=float, default=1.0,
                        help="clip gradients to this global norm (0 = off)")
    parser.add_argument("--exclude", action="append", default=[], metavar="FILE",
                        help="a text file of image file names (one per line) to leave out of "
                             "--content and --styles; repeatable")
    parser.add_argument("--cov-weight", type=float, default=0.0,
                        help="ours: weight of mean/covariance terms beside the Gram terms (each "
                             "a ratio to the photo's own distance to the painting)")
    parser.add_argument("--base-content-weight", type=float, default=0.0,
                        help="ours: weight of a hinge on each pair's relu4_1 content distance "
                             "above the base result's own (0 = off)")
    parser.add_argument("--init", default=None, metavar="WEIGHTS",
                        help="start the network from an etnet weight file (a path or the "
                             "shipped file name) of the same --width")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


# ------------------------------------------------------------------------------------- data
def load_data(args) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return training.load_training_data(args, exclude=training.read_exclude(args.exclude))


def base_outputs(base, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The base method's result for each (photo, painting) pair of a batch."""
    outs = [base.stylize(content[i:i + 1], [style[i:i + 1]]).clone()
            for i in range(content.shape[0])]
    return torch.cat(outs).to(content.device)


# ------------------------------------------------------------------------------------- losses
def gram_ratio(fo: torch.Tensor, fs: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |G(out) - G(style)|^2 / |G(content) - G(style)|^2 (the
    denominator is a constant)."""
    gs = S.gram(fs)
    num = (S.gram(fo) - gs).pow(2).sum((1, 2))
    den = (S.gram(fc) - gs).pow(2).sum((1, 2)).clamp_min(1e-12).detach()
    return (num / den).mean()


def cov_ratio(fo: torch.Tensor, fs: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the mean/covariance distance to the style, |m(out) - m(style)|^2
    + |C(out) - C(style)|^2, divided by the photo's own (a constant)."""
    ms, cs = S.mean_cov(fs.float())

    def dist(f):
        m, c = S.mean_cov(f.float())
        return (m - ms).pow(2).sum(1) + (c - cs).pow(2).sum((1, 2))
    return (dist(fo) / dist(fc).clamp_min(1e-12).detach()).mean()


def content_distance(fo: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    """Each sample's |F(out) - F(photo)|^2 / |F(photo)|^2, shape (N,)."""
    dims = tuple(range(1, fo.dim()))
    return (fo.float() - fc.float()).pow(2).sum(dims) / fc.float().pow(2).sum(dims).clamp_min(1e-12)


def etnet_losses(net, vgg, base, content, style, levels: int, iterations: int,
                 content_weight: float, style_weight: float, cov_weight: float = 0.0,
                 base_content_weight: float = 0.0):
    """(total, {term: value}, refined image) for one batch: the refinement of ``base`` on
    ``levels`` pyramid levels, and the pyramid loss of the result."""
    layers = sorted({CONTENT_LAYER, *STYLE_LAYERS})
    cpyr, spyr = gaussian_pyramid(content, levels), gaussian_pyramid(style, levels)
    with torch.no_grad():
        cf = [vgg(x, layers) for x in cpyr]
        sf = [vgg(x, layers) for x in spyr]
        bf = ([vgg(x.clamp(0, 1), [CONTENT_LAYER]) for x in gaussian_pyramid(base, levels)]
              if base_content_weight else None)
    targets = {k: make_targets(cf[k], [sf[k]], [1.0]) for k in range(levels)}
    out = refine(net, vgg, base, targets, list(range(levels)), iterations)
    lc = ls = lv = lb = 0.0
    for k, x in enumerate(gaussian_pyramid(out, levels)):
        fo = vgg(x.clamp(0, 1), layers)
        lc = lc + relative_mse(fo[CONTENT_LAYER], cf[k][CONTENT_LAYER])
        ls = ls + sum(gram_ratio(fo[l], sf[k][l], cf[k][l])
                      for l in STYLE_LAYERS) / len(STYLE_LAYERS)
        if cov_weight:
            lv = lv + sum(cov_ratio(fo[l], sf[k][l], cf[k][l])
                          for l in STYLE_LAYERS) / len(STYLE_LAYERS)
        if base_content_weight:
            d_out = content_distance(fo[CONTENT_LAYER], cf[k][CONTENT_LAYER])
            d_base = content_distance(bf[k][CONTENT_LAYER], cf[k][CONTENT_LAYER])
            lb = lb + torch.relu(d_out / d_base.clamp_min(1e-6) - 1).mean()
    total = content_weight * lc + style_weight * ls + cov_weight * lv + base_content_weight * lb
    parts = {"content": float(lc.detach()), "style": float(ls.detach())}
    if cov_weight:
        parts["cov"] = float(lv.detach())
    if base_content_weight:
        parts["over_base"] = float(lb.detach())
    parts["total"] = float(total.detach())
    return total, parts, out


# -------------------------------------------------------------------------------------- run
def init_network(net: ErrorTransition, weights) -> None:
    """``--init``: the network's weights from an etnet weight file (as ``-m etnet`` reads it)."""
    state, _, path = ff.load_method_weights("etnet", weights, DEFAULT_FILE, TRAIN_HINT)
    load_prefixed(net, "etnet", state, str(path))


def check_arguments(args) -> None:
    if args.levels < 1 or args.levels > 6:
        raise BrushworkError("--levels must be 1..6")
    if args.iterations < 1:
        raise BrushworkError("--iterations must be at least 1")
    if not args.width > 0:
        raise BrushworkError("--width must be positive")
    if args.clip < 0:
        raise BrushworkError("--clip must be 0 (off) or positive")
    if args.cov_weight < 0 or args.base_content_weight < 0:
        raise BrushworkError("--cov-weight and --base-content-weight must be 0 or positive")
    mult = 4 << (args.levels - 1)
    if args.size % mult or args.size // (1 << (args.levels - 1)) < 16:
        raise BrushworkError(f"--size {args.size}: with --levels {args.levels} use a multiple "
                             f"of {mult} of at least {16 << (args.levels - 1)}")


def run(args, callback=None) -> Path:
    """Train the error transition network; returns the path of the weight file written."""
    check_arguments(args)
    device, bf16 = training.start_run(args)
    contents, styles = load_data(args)
    base = get_method(args.base)(device=device, bf16=bf16)
    vgg = VGG19(device=device, autocast=bf16, last_layer="relu4_1")
    net = ErrorTransition(args.width)
    if args.init and not args.resume:
        init_network(net, args.init)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    ckpt = training.checkpoint_path(args)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    step = 0
    if args.resume:
        step = training.load_checkpoint(ckpt, models={"etnet": net}, optimizers={"etnet": opt},
                                        lr=args.lr)["step"]
    c_iter = training.batches(contents, args.size, args.batch, args.seed, start_step=step, stream=0)
    s_iter = training.batches(styles, args.size, args.batch, args.seed, start_step=step, stream=1)
    fixed_c = training.sample_batch(contents, args.size, 4, training.step_generator(args.seed, 0, 9))
    fixed_s = training.sample_batch(styles, args.size, 4, training.step_generator(args.seed, 0, 10))
    clock, t_start = Clock(), step
    losses = {}
    net.train()
    while step < args.steps:
        content, style = next(c_iter).to(device), next(s_iter).to(device)
        b = base_outputs(base, content, style)
        total, losses, _ = etnet_losses(net, vgg, b, content, style, args.levels,
                                        args.iterations, args.content_weight, args.style_weight,
                                        args.cov_weight, args.base_content_weight)
        opt.zero_grad(set_to_none=True)
        total.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
        opt.step()
        step += 1
        if training.after_step("etnet", args, step, t_start, total, losses, clock, callback,
                               ckpt, models={"etnet": net}, optimizers={"etnet": opt},
                               config=config):
            net.eval()
            with torch.no_grad():
                fb = base_outputs(base, fixed_c.to(device), fixed_s.to(device))
                _, _, g = etnet_losses(net, vgg, fb, fixed_c.to(device), fixed_s.to(device),
                                       args.levels, args.iterations, 1.0, 1.0)
            net.train()
            training.save_grid([fixed_c, fixed_s, fb, g.clamp(0, 1)],
                               ckpt.with_name(f"{ckpt.stem}_sample_{step:06d}.png"))
    save_weights(prefixed_state("etnet", net.eval()), args.out, fp16=args.fp16,
                 metadata=weight_metadata(config, step))
    emit(callback, training.train_event("etnet", step, args.steps, losses, clock(),
                                        f"wrote {args.out}", kind="done"))
    return Path(args.out)


def weight_metadata(config: dict, step: int) -> dict[str, str]:
    """The weight file's metadata for a run's settings (``vars(args)`` or a checkpoint's)."""
    return {"method": "etnet", "base": str(config["base"]), "levels": str(config["levels"]),
            "iterations": str(config["iterations"]), "width": str(config["width"]),
            "steps": str(step), "crop": str(config["size"]), "batch": str(config["batch"]),
            "lr": str(config["lr"]), "content_weight": str(config["content_weight"]),
            "style_weight": str(config["style_weight"])}


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the network of a training checkpoint as a weight file; returns its sha256 (ships
    a model from a run that is still going or was stopped before its last step)."""
    config = training.load_checkpoint_config(checkpoint)
    net = ErrorTransition(float(config.get("width", 1.0)))
    info = training.load_checkpoint(checkpoint, models={"etnet": net})
    meta = {**weight_metadata(config, info["step"]), **(extra_meta or {})}
    return save_weights(prefixed_state("etnet", net.eval()), out, fp16=fp16, metadata=meta)

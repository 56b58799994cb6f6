"""`brushwork train metastyle`: a style-neutral start for johnson's net (MetaStyle, Zhang et al. 2019).

MetaStyle (Zhang, Zhu & Zhu, AAAI 2019) poses fast style transfer as a bilevel problem. The
parameters theta of one image transformation network (here johnson's
:class:`~brushwork.methods.johnson.TransformerNet`, unchanged) are an initialisation; for a
style s, the inner problem adapts them with a few optimiser steps on the style's perceptual
loss over training content,

    theta_s = Adapt_T(theta; s, D_train)        (T Adam steps, fresh moments, learning rate a)

and the outer problem moves theta so that the adapted parameters do well on content they did
not adapt on:

    min_theta  E_s [ L_s(theta_s; D_val) ].

brushwork takes the first-order approximation of the outer gradient (as first-order MAML):
d theta_s / d theta is replaced by the identity, so the meta-gradient of one style is the
gradient of its held-out loss at the adapted parameters, averaged over the styles of an outer
step and applied to theta with Adam. D_train and D_val are crops of two disjoint parts of the
content photos (``--val-fraction``). The loss is johnson's own (content MSE at relu2_2, Gram
loss at relu1_2..relu4_3, total variation), and one inner step is exactly one step of
`brushwork train johnson` (same loss, same optimiser, same crops), so the adaptation is
johnson's training started from the learned initialisation instead of from random weights
(`brushwork adapt` lowers its learning rate along a cosine by default; ``--lr 1e-3
--schedule constant`` is johnson's schedule).

``--outer reptile`` replaces that gradient by Reptile's (Nichol, Achiam & Schulman 2018):
the initialisation moves a fraction eps (``--lr``) of the way toward the mean adapted
parameters, theta += eps (mean_s theta_s - theta), a plain step. It needs no held-out
gradient and takes longer inner runs (``--inner-steps`` 10-30), whose end points carry more of
each style than 4 steps do.

Ours: ``--pretrain-steps N`` first trains the initialisation for N steps of johnson's
training with the style weight at 0 (content and total variation only), so that
meta-training starts from a network that reproduces photos, a style-neutral start, instead
of random weights (whose adaptation first has to learn to keep the photo at all).

Simplifications: the first-order outer gradient (no second derivatives through the inner
steps); a fresh inner Adam per style; one painting per task, its Gram targets taken at
``--style-size`` every time the painting is drawn.

    brushwork train metastyle --styles DIR --content DIR --out metastyle_init.safetensors
    brushwork adapt PAINTING.jpg -o my_style.safetensors      (:func:`adapt`)
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from types import SimpleNamespace

import torch

from ..core import validate
from ..core.device import autocast, has_bf16, pick_device
from ..core.image import resize_long_side
from ..core.protocol import Clock, emit
from ..core.vgg import VGG19
from ..core.weights import load_prefixed, load_weights, prefixed_state, resolve_weights, \
    save_weights, sha256_file
from ..errors import BrushworkError
from ..methods.johnson import TransformerNet
from . import common as training
from .johnson import PerceptualTargets, perceptual_loss

METHOD = "metastyle"
INIT_METHOD = "metastyle-init"
INIT_FILE = "metastyle_init.safetensors"
TRAIN_HINT = "brushwork train metastyle --styles DIR --content DIR --out metastyle_init.safetensors"

# The adaptation defaults of `brushwork adapt`: the loss weights and crop size the shipped
# init was meta-trained with (johnson's, 128 px), 4 crops per step (closer to the painting than
# 2 crops for more steps in the same time), and 350 steps (about 5 minutes on 2 CPU cores) at
# a cosine-decayed learning rate from 2e-3.
ADAPT_DEFAULTS = {"steps": 350, "size": 128, "batch": 4, "lr": 2e-3, "style_size": 256,
                  "content_weight": 1.0, "style_weight": 1.5, "tv_weight": 1e3,
                  "schedule": "cosine"}
# Learning-rate schedules of an adaptation: ``constant`` (johnson's training) or ``cosine``
# (from --lr down to 0 at the last step).
SCHEDULES = ("constant", "cosine")
# Photos scikit-image ships (read from its package data, nothing downloads): the content of
# an adaptation run without --content.
BUNDLED_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry")


# ------------------------------------------------------------------------------- the two levels
def johnson_loss(vgg, targets: PerceptualTargets, weights):
    """``loss_fn(net, x) -> (total, log)``: johnson's perceptual loss of ``net`` on the content
    batch ``x`` for the style of ``targets`` (``weights``: content_weight, style_weight,
    tv_weight)."""
    bf16 = bool(getattr(vgg, "autocast", False))

    def loss_fn(net, x):
        with autocast(x.device, bf16):
            out = net(x)
        ids = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return perceptual_loss(vgg, out.float(), x, ids, targets, weights)
    return loss_fn


def inner_step(net, opt, loss_fn, x) -> tuple[torch.Tensor, dict, bool]:
    """One adaptation step (one step of `brushwork train johnson`): the loss of ``net`` on
    batch ``x``, backward, ``opt.step()``; a step whose loss or gradient is not finite is
    skipped. Returns (loss, log, whether the step was taken)."""
    total, log = loss_fn(net, x)
    opt.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(total))
    if finite:
        total.backward()
        finite = all(bool(torch.isfinite(p.grad).all()) for p in net.parameters()
                     if p.grad is not None)
    if finite:
        opt.step()
    return total, log, finite


def inner_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """The inner (and adaptation) optimiser: Adam with fresh moments, johnson's trainer's."""
    return torch.optim.Adam(params, lr=lr)


def adapt_task(init: TransformerNet, fast: TransformerNet, loss_fn, inner, make_opt) -> float:
    """The inner level of one task: ``fast`` set to ``init``'s parameters, then one
    :func:`inner_step` per batch of ``inner`` with a fresh ``make_opt(params)`` optimiser.
    Returns the mean inner loss."""
    with torch.no_grad():
        for pf, p in zip(fast.parameters(), init.parameters()):
            pf.copy_(p)
    opt = make_opt(list(fast.parameters()))
    total_sum = 0.0
    for x in inner:
        total, _, _ = inner_step(fast, opt, loss_fn, x)
        total_sum += float(total.detach())
    return total_sum / max(1, len(inner))


def meta_gradient(init: TransformerNet, fast: TransformerNet, tasks, make_opt=None,
                  outer: str = "first-order"):
    """The meta-gradient of ``init``'s parameters over ``tasks``.

    ``tasks``: (loss_fn, inner batches, validation batch) per style. For each, ``fast`` is
    adapted from ``init`` by :func:`adapt_task` (default optimiser :func:`inner_optimizer` at
    lr 1e-3). ``outer="first-order"`` (first-order MAML): the mean of the gradients of the
    validation losses at the adapted parameters. ``outer="reptile"`` (Reptile, Nichol et al.
    2018): the mean of ``init - adapted``, so that a gradient step of size eps moves the
    initialisation eps of the way toward the mean adapted parameters; the validation loss at
    the adapted parameters is then only logged. Returns (the gradients in
    ``init.parameters()`` order, log of the mean inner / outer losses)."""
    if outer not in ("first-order", "reptile"):
        raise BrushworkError(f"unknown outer update {outer!r} (first-order or reptile)")
    make_opt = make_opt or (lambda ps: inner_optimizer(ps, 1e-3))
    params = list(init.parameters())
    grads = [torch.zeros_like(p) for p in params]
    inner_sum = outer_sum = 0.0
    w = 1.0 / max(1, len(tasks))
    for loss_fn, inner, val in tasks:
        inner_sum += adapt_task(init, fast, loss_fn, inner, make_opt)
        fast_params = list(fast.parameters())
        if outer == "reptile":
            with torch.no_grad():
                loss, _ = loss_fn(fast, val)
                for acc, p, pf in zip(grads, params, fast_params):
                    acc.add_(p - pf, alpha=w)
        else:
            loss, _ = loss_fn(fast, val)
            g = torch.autograd.grad(loss, fast_params, allow_unused=True)
            for acc, gi in zip(grads, g):
                if gi is not None:
                    acc.add_(gi.detach(), alpha=w)
        outer_sum += float(loss.detach())
    return grads, {"inner": inner_sum * w, "outer": outer_sum * w}


def apply_gradient(params, grads, opt: torch.optim.Optimizer) -> bool:
    """Put ``grads`` into ``params``' ``.grad`` and take an outer ``opt`` step (skipped, and
    False returned, when a gradient is not finite)."""
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        return False
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return True


# ------------------------------------------------------------------------------- meta-training
def add_arguments(p) -> None:
    p.add_argument("--styles", required=True, action="append",
                   help="folder of paintings to meta-train on (recursive; repeatable)")
    p.add_argument("--content", required=True, help="folder of content photos (recursive)")
    p.add_argument("--out", required=True, help="output initialisation (.safetensors)")
    p.add_argument("--exclude", action="append", default=[], metavar="FILE",
                   help="text file of painting file names (one a line) kept out of "
                        "meta-training, e.g. the paintings the adaptation is judged on")
    p.add_argument("--width", type=float, default=0.5, help="channel multiplier (johnson's)")
    p.add_argument("--n-res", type=int, default=5, help="residual blocks")
    p.add_argument("--size", type=int, default=128, help="random crop size")
    p.add_argument("--load-size", type=int, default=None, help="short side before cropping")
    p.add_argument("--style-size", type=int, default=256, help="long side of each painting")
    p.add_argument("--batch", type=int, default=2, help="content crops per inner step")
    p.add_argument("--inner-steps", type=int, default=4, help="adaptation steps per style (T)")
    p.add_argument("--outer", choices=("first-order", "reptile"), default="first-order",
                   help="the outer update: first-order MAML (the held-out loss's gradient at "
                        "the adapted weights, Adam at --lr) or Reptile (the initialisation "
                        "moved --lr of the way toward the adapted weights, plain steps; use "
                        "--lr about 0.1-1 and --inner-steps about 10-30)")
    p.add_argument("--tasks", type=int, default=1, help="styles per outer step")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the content photos held out for the outer loss")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="ours: johnson steps with the style weight at 0 (the network learns "
                        "to reproduce photos) before meta-training starts")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="start from this MetaStyle initialisation (for example a pretrained "
                        "one written with --pretrain-steps N --steps 0) instead of random "
                        "weights (with the same --width and --n-res)")
    p.add_argument("--steps", type=int, default=2000, help="outer steps")
    p.add_argument("--lr", type=float, default=1e-3, help="outer (meta) learning rate")
    p.add_argument("--inner-lr", type=float, default=1e-3, help="inner (adaptation) learning rate")
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=1.5)
    p.add_argument("--tv-weight", type=float, default=1e3)
    training.add_run_arguments(p, every=50)
    p.add_argument("--fp16", action="store_true", help="store the exported weights as fp16")


def _check(args) -> None:
    for name in ("size", "batch", "style_size", "inner_steps", "tasks", "n_res"):
        if getattr(args, name) < 1:
            raise BrushworkError(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps < (0 if args.pretrain_steps > 0 else 1):
        raise BrushworkError("--steps must be at least 1 (0 with --pretrain-steps: the "
                             "pretrained network alone)")
    if args.size < 16 or not args.width > 0 or not args.lr > 0 or not args.inner_lr > 0:
        raise BrushworkError("--size must be >= 16, --width, --lr and --inner-lr positive")
    if args.pretrain_steps < 0:
        raise BrushworkError("--pretrain-steps must be 0 or more")
    if not 0 < args.val_fraction < 1:
        raise BrushworkError("--val-fraction must be between 0 and 1")
    training.check_out_and_threads(args)


def split_photos(photos: list, val_fraction: float) -> tuple[list, list]:
    """(inner photos, held-out photos): every k-th photo is held out (k = 1 / fraction), at
    least one each side."""
    if len(photos) < 2:
        raise BrushworkError("--content: meta-training needs at least 2 photos (adaptation "
                             "and held-out ones)")
    k = max(2, round(1 / val_fraction))
    held = [i for i in range(len(photos)) if i % k == k - 1] or [len(photos) - 1]
    return ([p for i, p in enumerate(photos) if i not in held],
            [photos[i] for i in held])


def draw_tasks(step: int, args, paintings, inner_photos, val_photos):
    """The (painting index, inner batches, held-out batch) of each task of outer step
    ``step``: a function of (seed, step) only, so a resumed run sees the same tasks."""
    g = training.step_generator(args.seed, step)
    out = []
    for _ in range(args.tasks):
        s = int(torch.randint(len(paintings), (1,), generator=g))
        inner = [training.sample_batch(inner_photos, args.size, args.batch, g)
                 for _ in range(args.inner_steps)]
        val = training.sample_batch(val_photos, args.size, args.batch, g)
        out.append((s, inner, val))
    return out


def _painting(img_u8: torch.Tensor, style_size: int) -> torch.Tensor:
    return resize_long_side(img_u8[None].float() / 255.0, style_size)


def pretrain(init: TransformerNet, vgg, args, painting: torch.Tensor, photos, device,
             callback=None, clock=None) -> dict:
    """``--pretrain-steps``: johnson's training of ``init`` with the style weight at 0
    (content and total variation only; ``painting`` only fills the unused style targets), on
    crops of ``photos`` drawn from their own seeded stream. Returns the last step's log."""
    targets = PerceptualTargets(vgg, [_painting(painting, args.style_size)])
    weights = SimpleNamespace(content_weight=args.content_weight, style_weight=0.0,
                              tv_weight=args.tv_weight)
    loss_fn = johnson_loss(vgg, targets, weights)
    opt = inner_optimizer(list(init.parameters()), args.lr)
    g = training.step_generator(args.seed, 0, stream=5)
    log = {}
    for i in range(args.pretrain_steps):
        x = training.sample_batch(photos, args.size, args.batch, g).to(device)
        total, log, _ = inner_step(init, opt, loss_fn, x)
        log = {**log, "total": float(total.detach())}
        emit(callback, training.train_event(METHOD, 0, args.steps, log,
                                            clock() if clock else 0.0,
                                            message=f"pretraining {i + 1}/{args.pretrain_steps}"))
    return log


def start_from(init: TransformerNet, path, device) -> None:
    """Load the MetaStyle initialisation file ``path`` into ``init`` (the same network
    shape)."""
    net, _, path = load_init(path, device)
    if net.config() != init.config():
        raise BrushworkError(f"--init {path}: its network ({net.config()}) is not the one asked "
                             f"for ({init.config()}); use its --width and --n-res")
    init.load_state_dict(net.state_dict())


def init_metadata(net: TransformerNet, args, step: int) -> dict:
    return {"method": INIT_METHOD, "config": json.dumps(net.config()), "steps": str(step),
            "pretrain_steps": str(args.pretrain_steps),
            "crop": str(args.size), "batch": str(args.batch),
            "inner_steps": str(args.inner_steps), "inner_lr": str(args.inner_lr),
            "tasks": str(args.tasks), "lr": str(args.lr),
            "outer_gradient": args.outer,
            "loss": json.dumps({"content": args.content_weight, "style": args.style_weight,
                                "tv": args.tv_weight})}


def run(args, callback=None) -> dict:
    _check(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = pick_device(args.device)
    bf16 = args.bf16 and has_bf16(device)
    exclude = training.read_exclude(args.exclude)
    init = TransformerNet(args.width, 1, args.n_res).to(device)
    fast = TransformerNet(args.width, 1, args.n_res).to(device)
    if args.init and not args.resume:      # read (and refused) before the data is loaded
        start_from(init, args.init, device)
    load = args.load_size or max(args.size, min(512, 2 * args.size))
    photos = training.load_folder(args.content, load)
    inner_photos, val_photos = split_photos(photos, args.val_fraction)
    paintings = training.load_style_folders(args.styles, args.style_size, exclude)
    vgg = VGG19(last_layer="relu4_3", device=device, autocast=bf16)
    params = list(init.parameters())
    opt = (torch.optim.SGD(params, lr=args.lr) if args.outer == "reptile"
           else torch.optim.Adam(params, lr=args.lr))
    ckpt = training.checkpoint_path(args)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    step = 0
    if args.resume:
        step = training.load_checkpoint(ckpt, models={"init": init}, optimizers={"outer": opt},
                                        lr=args.lr)["step"]
    clock, t0, log, skipped = Clock(), step, {}, 0
    if step == 0 and args.pretrain_steps:
        init.train()
        pretrain(init, vgg, args, paintings[0], inner_photos, device, callback, clock)
    make_opt = (lambda ps: inner_optimizer(ps, args.inner_lr))
    init.train()
    fast.train()
    while step < args.steps:
        tasks = []
        for s, inner, val in draw_tasks(step, args, paintings, inner_photos, val_photos):
            targets = PerceptualTargets(vgg, [_painting(paintings[s], args.style_size)])
            tasks.append((johnson_loss(vgg, targets, args), [x.to(device) for x in inner],
                          val.to(device)))
        grads, log = meta_gradient(init, fast, tasks, make_opt, args.outer)
        if not apply_gradient(params, grads, opt):
            skipped += 1
            if skipped > 10:
                raise BrushworkError(f"metastyle: the meta-gradient is not finite for "
                                     f"{skipped} steps in a row (step {step + 1}); resume "
                                     f"with a lower --lr")
        else:
            skipped = 0
        step += 1
        log = {**log, "total": log["outer"]}
        if training.after_step(METHOD, args, step, t0, torch.tensor(log["outer"]), log, clock,
                               callback, ckpt, models={"init": init},
                               optimizers={"outer": opt}, config=config):
            with torch.no_grad():
                val = tasks[-1][2]
                rows = [val, init(val), fast(val)]
            training.save_grid(rows, ckpt.with_name(f"{ckpt.stem}_sample_{step:06d}.png"))
    return export_init(init, args, step, callback, clock(), log)


def export(ckpt, out, *, fp16: bool = False, extra_meta: dict | None = None) -> dict:
    """Write the initialisation of checkpoint ``ckpt`` (of a run that may still be going) as
    the weight file ``out``; returns {out, sha256, steps}."""
    cfg = training.load_checkpoint_config(ckpt)
    try:
        init = TransformerNet(float(cfg["width"]), 1, int(cfg["n_res"]))
        args = SimpleNamespace(**{k: cfg[k] for k in (
            "size", "batch", "inner_steps", "inner_lr", "tasks", "lr", "content_weight",
            "style_weight", "tv_weight")}, pretrain_steps=cfg.get("pretrain_steps", 0),
            outer=cfg.get("outer", "first-order"))
    except KeyError:
        raise BrushworkError(f"{ckpt}: not a `brushwork train metastyle` checkpoint") from None
    rng = torch.get_rng_state()
    try:
        step = training.load_checkpoint(ckpt, models={"init": init})["step"]
    finally:
        torch.set_rng_state(rng)
    meta = {**init_metadata(init, args, step), **(extra_meta or {})}
    sha = save_weights(prefixed_state("net", init.eval()), out, fp16=fp16, metadata=meta)
    return {"out": str(out), "sha256": sha, "steps": step}


def export_init(init: TransformerNet, args, step: int, callback=None, seconds: float = 0.0,
                log: dict | None = None) -> dict:
    init.eval()
    sha = save_weights(prefixed_state("net", init), args.out, fp16=args.fp16,
                       metadata=init_metadata(init, args, step))
    emit(callback, training.train_event(METHOD, step, args.steps, log or {}, seconds,
                                        message=f"wrote {args.out}", kind="done"))
    return {"out": str(args.out), "sha256": sha, "steps": step, "seconds": seconds}


# ------------------------------------------------------------------------------- adaptation
def load_init(init=None, device="cpu") -> tuple[TransformerNet, dict, Path]:
    """The meta-learned initialisation: ``init`` (a path) or the shipped file."""
    path = resolve_weights(init, INIT_FILE, TRAIN_HINT)
    state, meta = load_weights(path)
    if meta.get("method") != INIT_METHOD:
        raise BrushworkError(f"{path}: not a MetaStyle initialisation (a weight file for "
                             f"method {meta.get('method')!r}); make one with `{TRAIN_HINT}`")
    try:
        cfg = json.loads(meta["config"])
        net = TransformerNet(float(cfg["width"]), 1, int(cfg["n_res"]))
    except (KeyError, ValueError):
        raise BrushworkError(f"{path}: not a MetaStyle initialisation (no network config)") \
            from None
    load_prefixed(net, "net", state, source=str(path))
    return net.to(device).float(), meta, path


def bundled_photos() -> list[torch.Tensor]:
    """The colour photos scikit-image ships, as uint8 (3, H, W) tensors."""
    from skimage import data
    return [torch.from_numpy(getattr(data, n)()[..., :3].copy()).permute(2, 0, 1).contiguous()
            for n in BUNDLED_PHOTOS]


def content_photos(folder, load_size: int) -> list[torch.Tensor]:
    """The adaptation content: every photo under ``folder``, or the bundled photos (None), at
    short side ``load_size`` (uint8)."""
    if folder is not None:
        if not Path(folder).is_dir():
            raise BrushworkError(f"--content {folder}: not a folder")
        return training.load_folder(folder, load_size)
    return [(training._scale_short_side(p[None].float() / 255, load_size)[0] * 255).round()
            .to(torch.uint8) for p in bundled_photos()]


def check_adapt_output(out) -> Path:
    """The adapted weight file's path: a .safetensors name in a folder that can be written."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise BrushworkError(f"{out}: use a .safetensors file name for the adapted weights")
    validate.check_output_file(out, "weight file")
    parent = out.parent if str(out.parent) else Path(".")
    if not os.access(parent, os.W_OK):
        raise BrushworkError(f"{out}: cannot write into {parent}")
    if out.exists() and not os.access(out, os.W_OK):
        raise BrushworkError(f"{out}: the file exists and cannot be overwritten")
    return out


def adapt(style: torch.Tensor, out, *, init=None, content=None, steps: int | None = None,
          size: int | None = None, batch: int | None = None, lr: float | None = None,
          style_size: int | None = None, content_weight: float | None = None,
          style_weight: float | None = None, tv_weight: float | None = None,
          schedule: str | None = None, seed: int = 0, device="cpu", bf16: bool = True,
          style_name: str = "style", fp16: bool = False, callback=None) -> dict:
    """Adapt the meta-learned initialisation to the painting ``style`` ((1, 3, H, W) in [0, 1])
    with ``steps`` steps of johnson's training (crops of ``content``, a folder, or the bundled
    photos) and write a one-style weight file for ``-m metastyle`` to ``out`` (atomically, at
    the end: nothing is written when a step fails or the run is stopped). Progress events
    (``kind='train'``) go to ``callback``; returns {out, sha256, steps, seconds, losses}."""
    d = ADAPT_DEFAULTS
    o = SimpleNamespace(**{k: (v if v is not None else d[k]) for k, v in dict(
        steps=steps, size=size, batch=batch, lr=lr, style_size=style_size,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        schedule=schedule).items()})
    for name in ("steps", "batch", "style_size"):
        if int(getattr(o, name)) < 1:
            raise BrushworkError(f"--{name.replace('_', '-')} must be at least 1")
    if o.schedule not in SCHEDULES:
        raise BrushworkError(f"--schedule: unknown schedule {o.schedule!r} (choose from "
                             f"{', '.join(SCHEDULES)})")
    if o.size < 16:
        raise BrushworkError("--size must be at least 16 pixels")
    if not o.lr > 0:
        raise BrushworkError("--lr must be positive")
    for name in ("content_weight", "style_weight", "tv_weight"):
        if not getattr(o, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not (isinstance(style, torch.Tensor) and style.dim() == 4 and style.shape[:2] == (1, 3)):
        raise BrushworkError("the style must be a (1, 3, H, W) image tensor")
    out = check_adapt_output(out)
    dev = pick_device(device)
    use_bf16 = bf16 and has_bf16(dev)
    net, init_meta, init_path = load_init(init, dev)
    photos = content_photos(content, max(o.size, min(512, 2 * o.size)))
    vgg = VGG19(last_layer="relu4_3", device=dev, autocast=use_bf16)
    targets = PerceptualTargets(vgg, [resize_long_side(style, o.style_size)])
    loss_fn = johnson_loss(vgg, targets, o)
    opt = inner_optimizer(list(net.parameters()), o.lr)
    clock, log, bad = Clock(), {}, 0
    net.train()
    for step in range(o.steps):
        if o.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = o.lr * 0.5 * (1 + math.cos(math.pi * step / o.steps))
        x = training.sample_batch(photos, o.size, o.batch,
                                  training.step_generator(seed, step)).to(dev)
        _, log, taken = inner_step(net, opt, loss_fn, x)
        bad = 0 if taken else bad + 1
        if bad > 10:
            raise BrushworkError(f"adapt: the loss is not finite for {bad} steps in a row "
                                 f"(step {step + 1}); use a lower --lr")
        emit(callback, training.train_event(METHOD, step + 1, o.steps, log, clock()))
    net.eval()
    meta = {"method": METHOD, "config": json.dumps(net.config()),
            "style_names": json.dumps([style_name]), "steps": str(o.steps),
            "crop": str(o.size), "batch": str(o.batch), "lr": str(o.lr),
            "schedule": o.schedule,
            "init_sha256": sha256_file(init_path), "init_steps": init_meta.get("steps", ""),
            "seed": str(seed)}
    sha = save_weights(prefixed_state("net", net), out, fp16=fp16, metadata=meta)
    emit(callback, training.train_event(METHOD, o.steps, o.steps, log, clock(),
                                        message=f"wrote {out}", kind="done"))
    return {"out": str(out), "sha256": sha, "steps": o.steps, "seconds": clock(), "losses": log}

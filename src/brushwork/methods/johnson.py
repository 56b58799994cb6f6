"""Johnson et al. 2016, "Perceptual Losses for Real-Time Style Transfer", with instance norm.

A feed-forward transformer network (conv9x9, two stride-2 convs, five residual blocks, two
nearest-upsample convs, conv9x9; Ulyanov's instance norm instead of batch norm) trained per
style with VGG perceptual losses: content MSE at relu2_2, Gram style loss at relu1_2, relu2_2,
relu3_3, relu4_3, total variation. ``width`` scales every channel count (1.0 = 32/64/128; the
small variant 0.5 = 16/32/64 trains in well under an hour on a 2-core CPU).

The network's norms are :class:`~brushwork.blocks.ConditionalInstanceNorm2d` with N = 1, so the
same class serves ``cin`` (N styles) unchanged. Output: sigmoid, RGB in [0, 1].

    brushwork train johnson --style PAINTING --content DIR --out F.safetensors
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from .. import training
from ._feedforward import has_bf16
from ..blocks import ConditionalInstanceNorm2d, one_hot_styles
from ..color import combine_luminance, luminance
from ..errors import BrushworkError, ControlError
from ..image import load_image, resize_long_side
from ..losses import content_loss, gram, gram_loss, tv_loss, weighted_sum
from ..protocol import (PRESERVE_COLOR, STRENGTH, Clock, Progress, emit, resolve_controls)
from ..shipped import load_weights, resolve_weights
from ..vgg import VGG19

CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
SHIPPED_FILE = "johnson_starry_night.safetensors"
TRAIN_HINT = "brushwork train johnson --style PAINTING --content DIR --out F.safetensors"


# ------------------------------------------------------------------------------------- network
def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class _Conv(nn.Module):
    """Reflect-pad conv (optionally 2x nearest upsampling first) + CIN + optional ReLU."""

    def __init__(self, c_in, c_out, k, n_styles, stride=1, up=False, norm=True, relu=True):
        super().__init__()
        self.up, self.relu, self.pad = up, relu, k // 2
        self.conv = nn.Conv2d(c_in, c_out, k, stride)
        self.norm = ConditionalInstanceNorm2d(c_out, n_styles) if norm else None

    def forward(self, x, style):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv(F.pad(x, [self.pad] * 4, mode="reflect"))
        if self.norm is not None:
            x = self.norm(x, style)
        return F.relu(x) if self.relu else x


class _Res(nn.Module):
    def __init__(self, c, n_styles):
        super().__init__()
        self.a = _Conv(c, c, 3, n_styles)
        self.b = _Conv(c, c, 3, n_styles, relu=False)

    def forward(self, x, style):
        return x + self.b(self.a(x, style), style)


class TransformerNet(nn.Module):
    """Johnson's image transformation network; ``n_styles`` > 1 makes it Dumoulin's CIN net.

    ``forward(x, style)``: x (B, 3, H, W) in [0, 1] (any H, W: padded to a multiple of 4
    internally), style (B, N) mixing weights (None = style 0). Returns (B, 3, H, W) in [0, 1].
    """

    def __init__(self, width: float = 1.0, n_styles: int = 1, n_res: int = 5):
        super().__init__()
        c1, c2, c3 = _ch(32, width), _ch(64, width), _ch(128, width)
        self.width, self.n_styles, self.n_res = width, n_styles, n_res
        self.layers = nn.ModuleList(
            [_Conv(3, c1, 9, n_styles), _Conv(c1, c2, 3, n_styles, stride=2),
             _Conv(c2, c3, 3, n_styles, stride=2)]
            + [_Res(c3, n_styles) for _ in range(n_res)]
            + [_Conv(c3, c2, 3, n_styles, up=True), _Conv(c2, c1, 3, n_styles, up=True),
               _Conv(c1, 3, 9, n_styles, norm=False, relu=False)])

    def config(self) -> dict:
        return {"width": self.width, "n_styles": self.n_styles, "n_res": self.n_res}

    def forward(self, x, style=None):
        h, w = x.shape[-2:]
        if style is None:
            style = one_hot_styles([0] * x.shape[0], self.n_styles).to(x.device)
        ph, pw = (-h) % 4, (-w) % 4
        y = F.pad(x * 2 - 1, (0, pw, 0, ph), mode="reflect") if ph or pw else x * 2 - 1
        for layer in self.layers:
            y = layer(y, style)
        return torch.sigmoid(y[..., :h, :w].float())


def run_net(net: TransformerNet, content: torch.Tensor, style: torch.Tensor,
            bf16: bool = True) -> torch.Tensor:
    """Inference: channels-last, bf16 autocast on CPU/CUDA, float32 result in [0, 1]."""
    x = content.to(next(net.parameters()).device)
    with torch.no_grad(), training.autocast(x.device, bf16):
        return net(x.contiguous(memory_format=torch.channels_last), style.to(x.device)).float()


def finish(method: str, out: torch.Tensor, content: torch.Tensor, c: dict) -> torch.Tensor:
    """Shared post-processing for feed-forward nets: colour preservation, strength blend."""
    if c.get("preserve_color") == "luminance":
        out = combine_luminance(luminance(out), content)
    elif c.get("preserve_color") == "histogram":
        raise ControlError(f"method {method!r}: preserve_color=histogram needs a style image; "
                           f"use luminance")
    s = c.get("strength", 1.0)
    return (s * out + (1 - s) * content).clamp(0, 1)


def load_net(weights, default_file: str, hint: str, device="cpu",
             methods=("johnson", "cin")) -> tuple[TransformerNet, dict]:
    """Build a TransformerNet from a weight file's metadata and load its tensors."""
    path = resolve_weights(weights, default_file, hint)
    state, meta = load_weights(path)
    if meta.get("method") not in methods:
        raise BrushworkError(f"{path}: weight file is for method {meta.get('method')!r}, not "
                             f"{' or '.join(methods)}")
    try:
        cfg = json.loads(meta["config"])
        net = TransformerNet(float(cfg["width"]), int(cfg["n_styles"]), int(cfg["n_res"]))
    except (KeyError, ValueError):
        raise BrushworkError(f"{path}: not a johnson/cin weight file (no network config)") from None
    training.load_prefixed(net, "net", state, source=str(path))
    net.to(device=device, memory_format=torch.channels_last).eval().requires_grad_(False)
    return net, meta


class Johnson:
    name = "johnson"
    summary = "Johnson et al. 2016: one trained feed-forward net per style (instance norm)"
    needs_style = False
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"johnson: unknown option(s) {', '.join(sorted(options))}")
        self.device = training.pick_device(device)
        self.net, meta = load_net(weights, SHIPPED_FILE, TRAIN_HINT, self.device, ("johnson",))
        self.bf16 = bf16 and has_bf16(self.device)

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c = resolve_controls(self.name, self.controls, controls)
        clock = Clock()
        style = one_hot_styles([0], self.net.n_styles)
        out = finish(self.name, run_net(self.net, content, style, self.bf16).cpu(), content, c)
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out


# ------------------------------------------------------------------------------------ training
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
        with training.autocast(device, args.bf16):
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
            training.save_checkpoint(ckpt, models={"net": net}, optimizers={"opt": opt},
                                     step=done, config=vars(args))
        if args.sample_every and (done % args.sample_every == 0 or done == args.steps):
            training.save_grid([x[:4], out.detach()[:4]],
                               Path(ckpt).with_name(Path(ckpt).stem + f"_sample_{done:06d}.png"))
    net.eval()
    meta = {"method": method, "config": json.dumps(net.config()),
            "style_names": json.dumps(style_names), "steps": str(args.steps),
            "crop": str(args.size), **(extra_meta or {})}
    sha = training.save_weights(training.prefixed_state("net", net), args.out,
                                fp16=getattr(args, "fp16", False), metadata=meta)
    emit(callback, training.train_event(method, args.steps, args.steps, log, clock(),
                                        message=f"wrote {args.out}", kind="done"))
    return {"out": str(args.out), "sha256": sha, "steps": args.steps, "losses": log,
            "seconds": clock()}


def run(args, callback=None) -> dict:
    check_arguments(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = training.pick_device(args.device)
    vgg = VGG19(last_layer="relu4_3", device=device, autocast=args.bf16)
    targets = PerceptualTargets(vgg, load_style_images([args.style], args.style_size))
    net = TransformerNet(args.width, 1, args.n_res).to(device)
    return train_loop("johnson", args, net, targets, vgg, list(net.parameters()), [0],
                      [Path(args.style).stem], callback)

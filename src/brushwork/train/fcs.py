"""`brushwork train fcs`: the flexible convolutional solver (Puy & Perez).

Each step takes a batch of (photo, painting) pairs, starts from the photos and runs the
``--blocks`` unrolled blocks of :class:`brushwork.methods.fcs.Solver` (each block: the
gradient of the Gatys loss through VGG19, then the learned update), keeping the graph through
the gradients, and minimises the Gatys loss (``--content-weight`` x relu4_2 MSE +
``--style-weight`` x the mean of the relu1_1..relu5_1 Gram MSEs) of the output
(``--block-loss last``) or the sum of the losses after every block (``sum``). The loss is
divided by its value at the photos (per batch, detached), so its scale does not depend on the
weights or the crop. The blocks start as plain normalised gradient descent (zero convolutional
update, step 0.05).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.vgg import VGG19
from ..errors import BrushworkError
from ..methods.fcs import STYLE_LAYERS, Objective, Solver
from . import common as training
from .loops import fixed_styles, pair_batches, train_loop

LAYER_WEIGHTS = [1.0 / len(STYLE_LAYERS)] * len(STYLE_LAYERS)


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=4, steps=2000, lr=1e-3)
    parser.add_argument("--blocks", type=int, default=5, help="unrolled solver blocks")
    parser.add_argument("--width", type=int, default=32,
                        help="channels of each block's convolutions")
    parser.add_argument("--style-weight", type=float, default=1e3,
                        help="weight of the Gram (style) loss, as gatys's style_weight")
    parser.add_argument("--content-weight", type=float, default=1.0,
                        help="weight of the relu4_2 content loss, as gatys's content_weight")
    parser.add_argument("--block-loss", choices=("last", "sum"), default="last",
                        help="train on the loss of the output (last) or the sum of the losses "
                             "after every block (sum)")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def losses(enc, solver, contents, styles, cw, sw, block_loss="last"):
    """(total, parts, output) of the solver's training loss on a batch of pairs: the Gatys
    loss after the last block (or summed over the blocks), relative to the loss at the
    photos; parts: ``start`` and ``end`` (absolute losses before and after), ``ratio``
    (end / start) and ``total``."""
    objective = Objective(enc, contents, [styles], [1.0], None, LAYER_WEIGHTS, cw, sw)
    seen = []

    def on_block(k, x, log):
        if block_loss == "sum" or k == len(solver.blocks) - 1:
            seen.append(objective(x)[0])

    x, logs = solver.run(contents, objective, train=True, on_block=on_block)
    start = logs[0]["total"]
    total = sum(seen) / max(start, 1e-12)
    end = float(seen[-1].detach())
    parts = {"start": start, "end": end, "ratio": end / max(start, 1e-12),
             "total": float(total.detach())}
    return total, parts, x


def stylize_batch(enc, solver, contents, styles, cw, sw) -> torch.Tensor:
    """Each photo solved against its painting (sample grids)."""
    objective = Objective(enc, contents, [styles], [1.0], None, LAYER_WEIGHTS, cw, sw)
    x, _ = solver.run(contents, objective)
    return x.detach().clamp(0, 1)


def _meta(args_like: dict, step: int) -> dict:
    keys = ("size", "batch", "lr", "blocks", "width", "content_weight", "style_weight",
            "block_loss")
    names = {"size": "crop"}
    meta = {"method": "fcs", "encoder": "vgg", "steps": str(step),
            "style_layer_weights": ",".join(f"{w:g}" for w in LAYER_WEIGHTS)}
    meta.update({names.get(k, k): str(args_like.get(k)) for k in keys})
    return meta


def _check(args) -> None:
    for name in ("content_weight", "style_weight"):
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not (args.content_weight or args.style_weight):
        raise BrushworkError("--content-weight and --style-weight are both 0: nothing to train")
    if args.blocks < 1 or args.width < 1:
        raise BrushworkError("--blocks and --width must be at least 1")


def run(args, callback=None) -> Path:
    """Train a flexible convolutional solver; returns the path of the weight file written."""
    device, bf16 = training.start_run(args)
    _check(args)
    contents, styles = training.load_training_data(args)
    enc = VGG19(device=device, autocast=bf16, last_layer="relu5_1", channels_last=True)
    solver = Solver(args.blocks, args.width).to(device)
    opt = torch.optim.Adam(solver.parameters(), lr=args.lr)
    fixed_s = fixed_styles(styles, args).to(device)

    def loss(batch):
        total, parts, _ = losses(enc, solver, *batch, args.content_weight, args.style_weight,
                                 args.block_loss)
        return total, parts

    def sample(x):
        return [x, fixed_s, stylize_batch(enc, solver, x, fixed_s, args.content_weight,
                                          args.style_weight)]

    train_loop("fcs", args, contents, {"solver": solver}, {"solver": opt}, device, callback,
               loss, sample, lambda step: _meta(vars(args), step),
               batches=pair_batches(contents, styles, args))
    return Path(args.out)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the solver of a training checkpoint as a weight file; returns its sha256."""
    probe = training.load_checkpoint_config(checkpoint)
    solver = Solver(int(probe.get("blocks", 5)), int(probe.get("width", 32)))
    return training.export_checkpoint(checkpoint, out, {"solver": solver},
                                      lambda step: _meta(probe, step), fp16=fp16,
                                      extra_meta=extra_meta)

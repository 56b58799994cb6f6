"""`brushwork train cin`: one network, N styles by conditional instance norm (Dumoulin et al. 2017)."""
from __future__ import annotations

import json
import random
from pathlib import Path
import torch
from ..core.blocks import ConditionalInstanceNorm2d
from ..errors import BrushworkError
from ..core.vgg import VGG19
from ..methods.johnson import TransformerNet, load_net
from . import johnson
from ..methods.cin import (SHIPPED_FILE, TRAIN_HINT)
from ..core.device import has_bf16, pick_device


def add_arguments(p) -> None:
    johnson.add_arguments(p, multi=True)
    p.add_argument("--add-style", metavar="BASE", default=None,
                   help="add the (single) --style to the trained cin model BASE by training "
                        "only its own gamma/beta (defaults then: --steps 300 --lr 1e-2)")
    p.add_argument("--name", default=None, help="name of the added style (default: file stem)")
    p.set_defaults(steps=None, lr=None)


def run(args, callback=None) -> dict:
    """Train a CIN net on all ``--style`` images (one random style per sample), or with
    ``--add-style BASE`` extend BASE by one style."""
    adding = args.add_style is not None
    if args.steps is None:
        args.steps = 300 if adding else 2000
    if args.lr is None:
        args.lr = 1e-2 if adding else 1e-3
    johnson.check_arguments(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = pick_device(args.device)
    args.bf16 = args.bf16 and has_bf16(device)  # bf16 autocast only where it is fast
    vgg = VGG19(last_layer="relu4_3", device=device, autocast=args.bf16)
    if adding:
        return run_add_style(args, vgg, device, callback)
    targets = johnson.PerceptualTargets(vgg, johnson.load_style_images(args.style, args.style_size))
    net = TransformerNet(args.width, len(args.style), args.n_res).to(device)
    names = [Path(s).stem for s in args.style]
    return johnson.train_loop("cin", args, net, targets, vgg, list(net.parameters()),
                              list(range(len(names))), names, callback)


def grow_styles(net: TransformerNet, init_from: list[int] | None = None) -> int:
    """Append one style row to every CIN table (initialised to the mean of ``init_from`` rows,
    default all); returns the new style's index."""
    for m in net.modules():
        if isinstance(m, ConditionalInstanceNorm2d):
            rows = init_from if init_from is not None else list(range(m.gamma.shape[0]))
            with torch.no_grad():
                m.gamma = torch.nn.Parameter(torch.cat([m.gamma, m.gamma[rows].mean(0, True)]))
                m.beta = torch.nn.Parameter(torch.cat([m.beta, m.beta[rows].mean(0, True)]))
    net.n_styles += 1
    return net.n_styles - 1


def only_style_parameters(net: TransformerNet, index: int) -> list[torch.nn.Parameter]:
    """Freeze everything except row ``index`` of the CIN tables; returns the tables to optimise.

    The tables are whole Parameters, so a gradient hook zeroes every other row (Adam then never
    moves them: zero gradients keep its moments at zero)."""
    net.requires_grad_(False)
    params = []
    for m in net.modules():
        if isinstance(m, ConditionalInstanceNorm2d):
            for p in (m.gamma, m.beta):
                p.requires_grad_(True)
                keep = torch.zeros(p.shape[0], 1, device=p.device)
                keep[index] = 1
                p.register_hook(lambda g, keep=keep: g * keep)
                params.append(p)
    return params


def run_add_style(args, vgg, device, callback=None) -> dict:
    """Add the one ``--style`` to the model ``--add-style`` by training only its gamma/beta."""
    if len(args.style) != 1:
        raise BrushworkError("--add-style takes exactly one --style (the new one)")
    net, meta, _ = load_net(args.add_style, SHIPPED_FILE, TRAIN_HINT, device)
    names = json.loads(meta.get("style_names", "[]")) or [f"style{i}" for i in range(net.n_styles)]
    new = grow_styles(net)
    names.append(args.name or Path(args.style[0]).stem)
    params = only_style_parameters(net, new)
    targets = johnson.PerceptualTargets(vgg, johnson.load_style_images(args.style, args.style_size))
    # Gram targets are indexed by style id: pad the table so row ``new`` is the new style.
    targets.grams = {k: torch.cat([g.new_zeros((new,) + g.shape[1:]), g])
                     for k, g in targets.grams.items()}
    return johnson.train_loop("cin", args, net, targets, vgg, params, [new], names, callback,
                              extra_meta={"base_weights": Path(args.add_style).name,
                                          "added_style": names[-1]})

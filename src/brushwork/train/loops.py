"""The training loops and set-ups that several trainers share.

* :func:`train_loop`: the loop of the decoder trainers (wct, linear, sanet, distill, adain,
  avatar, totalst, efanet, fcs): resume, steps, checkpoints, sample grids, progress events,
  the final safetensors file; :func:`pair_batches` and :func:`fixed_styles` for the paired ones.
* :func:`paired_sampler`: (content, style) batch pairs that resume at the checkpoint's step.
* :func:`recon_setup`, :func:`parse_levels`: the start of the reconstruction trainers.
* :func:`load_distilled`: a `brushwork train distill` file (``--encoder-weights``).
* :func:`init_decoder`: ``--init-decoder``, a decoder started from a wct weight file.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.blocks import LEVEL_LAYERS, SmallEncoder
from ..core.losses import mean_std_distance
from ..core.protocol import Clock, emit
from ..core.vgg import VGG19
from ..core.weights import load_prefixed, load_weights, prefixed_state, save_weights
from ..errors import BrushworkError
from ..methods import feedforward as ff
from . import common as training


def parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        raise BrushworkError(f"--levels {text!r}: give numbers 1..5 separated by commas") from None
    if not levels or any(l < 1 or l > 5 for l in levels):
        raise BrushworkError(f"--levels {text!r}: give numbers 1..5 separated by commas")
    return levels


def recon_setup(args):
    """The common start of the reconstruction trainers (wct, distill): ``training.start_run``,
    then (levels, device, bf16 flag, training images (contents and styles together), VGG19 up
    to the deepest level)."""
    device, bf16 = training.start_run(args)
    levels = parse_levels(args.levels)
    contents, styles = training.load_training_data(args)
    vgg = VGG19(device=device, autocast=bf16, last_layer=LEVEL_LAYERS[max(levels)])
    return levels, device, bf16, contents + styles, vgg


def paired_sampler(contents, styles, args, *, start: int | None = None, streams=(0, 1)):
    """(content batch, style batch) pairs from step ``start`` (None: the checkpoint's step on
    ``--resume``, else 0); ``streams``: the sampler streams of the two (a trainer that also
    samples other batches takes others)."""
    if start is None:
        start = training.load_checkpoint_step(training.checkpoint_path(args)) \
            if args.resume else 0
    return zip(training.batches(contents, args.size, args.batch, args.seed, start_step=start,
                                stream=streams[0]),
               training.batches(styles, args.size, args.batch, args.seed, start_step=start,
                                stream=streams[1]))


STYLE_LOSS_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def add_stylization_arguments(parser, what: str) -> None:
    """The options of the stylisation loss that reconstruction-trained decoders can add."""
    parser.add_argument("--style-weight", type=float, default=0.0,
                        help=f"weight of the stylisation loss's mean/std term: each step also "
                             f"decodes {what} of (photo, painting) pairs and compares the "
                             f"output's relu1_1..relu4_1 statistics with the painting's; 0 = "
                             f"reconstruction only (the paper)")
    parser.add_argument("--content-weight", type=float, default=1.0,
                        help="weight of the stylisation loss's content term (relu4_1 of the "
                             "output vs the target features); used with --style-weight")
    parser.add_argument("--reconstruction-weight", type=float, default=1.0,
                        help="weight of the reconstruction loss")


def check_stylization_arguments(args) -> None:
    for name in ("style_weight", "content_weight", "reconstruction_weight"):
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not (args.reconstruction_weight or args.style_weight):
        raise BrushworkError("--reconstruction-weight and --style-weight are both 0: "
                             "nothing to train")


def stylization_loss(enc, out, target, style_feats, bf16, cw, sw):
    """(total, parts) of the stylisation loss of decoded images ``out`` for relu4_1 ``target``
    features: ``cw`` x MSE of the output's relu4_1 features against the target + ``sw`` x the
    mean/std distance (:func:`~brushwork.core.losses.mean_std_distance`) of its
    relu1_1..relu4_1 features to ``style_feats`` (the AdaIN decoder's losses)."""
    of = ff.encode(enc, out, list(STYLE_LOSS_LAYERS), bf16)
    lc = F.mse_loss(of["relu4_1"], target)
    ls = mean_std_distance(of, style_feats, STYLE_LOSS_LAYERS)
    return cw * lc + sw * ls, {"content": float(lc.detach()), "style": float(ls.detach())}


def merge_parts(total, *parts: dict) -> dict:
    """One loss record from several terms' parts (their own totals dropped)."""
    out = {k: v for p in parts for k, v in p.items() if k != "total"}
    out["total"] = float(total.detach())
    return out


def conv_layers(module: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of ``module`` in forward (module) order."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def copy_decoder_convs(convs: list[nn.Conv2d], path, prefixes) -> int:
    """Copy into ``convs`` (a decoder's convolutions in forward order) the convolutions of the
    decoder in weight file ``path`` stored under the first of ``prefixes`` the file holds
    (``prefix.<index>.weight``), aligned from the output end, wherever the shapes match;
    returns how many were copied."""
    state, _ = load_weights(path)
    prefix = next((p + "." for p in prefixes if any(k.startswith(p + ".") for k in state)), None)
    layers = {}
    for k, v in state.items():
        if prefix and k.startswith(prefix):
            idx, _, name = k[len(prefix):].partition(".")
            if idx.isdigit():
                layers.setdefault(int(idx), {})[name] = v
    src = [layers[i] for i in sorted(layers) if layers[i].get("weight") is not None
           and layers[i]["weight"].dim() == 4 and layers[i].get("bias") is not None]
    if not src:
        raise BrushworkError(f"{path}: no decoder tensors to start from")
    copied = 0
    for s, d in zip(reversed(src), reversed(convs)):
        if s["weight"].shape == d.weight.shape:
            with torch.no_grad():
                d.weight.copy_(s["weight"])
                d.bias.copy_(s["bias"])
            copied += 1
    return copied


def load_distilled(path) -> tuple[SmallEncoder, dict, dict]:
    """(student encoder, file tensors, metadata) of a `brushwork train distill` file, the
    ``--encoder-weights`` of the adain and wct trainers; one-line errors for a missing or
    foreign file."""
    if not Path(path).is_file():
        raise BrushworkError(f"--encoder-weights {path}: file not found")
    state, meta = load_weights(path)
    if meta.get("method") != "distill":
        raise BrushworkError(f"--encoder-weights {path}: not a distilled encoder file (method "
                             f"{meta.get('method')!r}); make one with `brushwork train distill`")
    enc = SmallEncoder(int(meta.get("encoder_level", 4)),
                       ff.meta_float(meta, "encoder_width", 0.25, path))
    load_prefixed(enc, "encoder", state, f"--encoder-weights {path}")
    return enc, state, meta


def add_init_decoder_argument(parser, which: str) -> None:
    parser.add_argument("--init-decoder", metavar="FILE", default=None,
                        help=f"start the decoder from the {which} reconstruction decoder of a wct "
                             f"weight file (from `brushwork train wct`, VGG19 encoder, same "
                             f"--width) instead of from random weights; ignored with --resume "
                             f"(the checkpoint's decoder wins)")


def init_decoder(dec, path, level: int, width: float, *, flag: str = "--init-decoder",
                 adain: bool = False) -> str:
    """Load the level-``level`` decoder (``decoder{level}.*``) of a wct weight file into
    ``dec``, a VGG19 decoder of ``width``; with ``adain``, an adain file of that level
    (``decoder.*``) is taken too. Returns the prefix loaded; a one-line BrushworkError (naming
    ``flag``) when the file cannot provide it."""
    path = Path(path)
    if not path.is_file():
        raise BrushworkError(f"{flag} {path}: file not found")
    state, meta = load_weights(path)
    if meta.get("encoder", "vgg") != "vgg":
        raise BrushworkError(f"{flag} {path}: a small-encoder file; give a VGG19 one "
                             f"(from `brushwork train wct`)")
    method = meta.get("method")
    if adain and method == "adain":
        file_level = int(ff.meta_float(meta, "level", 4, path))
        if file_level != level:
            raise BrushworkError(f"{flag} {path}: an adain file of level {file_level}, not "
                                 f"{level}")
        prefix = "decoder"
    elif method != "wct":
        raise BrushworkError(f"{flag} {path}: not a wct{' or adain' if adain else ''} weight "
                             f"file (method {method!r}); make one with `brushwork train wct`")
    else:
        levels = ff.meta_levels(meta, path)
        if level not in levels:
            raise BrushworkError(f"{flag} {path}: no level-{level} ({LEVEL_LAYERS[level]}) "
                                 f"decoder (the file has levels {levels}); train one with "
                                 f"`brushwork train wct --levels {level}`")
        prefix = f"decoder{level}"
    file_width = ff.meta_float(meta, "width", 1.0, path)
    if not math.isclose(file_width, width):
        raise BrushworkError(f"{flag} {path}: decoder width {file_width:g} differs from "
                             f"--width {width:g}")
    load_prefixed(dec, prefix, state, f"{flag} {path}")
    return prefix


def recon_image(enc, dec, x, level, bf16):
    layer = LEVEL_LAYERS[level]
    return ff.decode(dec, ff.encode(enc, x, layer, bf16)[layer], bf16).clamp(0, 1)


def _to(batch, device):
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch if batch is None else batch.to(device)


def pair_batches(contents, styles, args, streams=(0, 1)):
    """``batches`` for :func:`train_loop`: (content, style) pairs from a step on."""
    return lambda step: paired_sampler(contents, styles, args, start=step, streams=streams)


def fixed_styles(styles, args) -> torch.Tensor:
    """The 4 paintings of every sample grid (stream 10 of step 0; the photos are stream 9)."""
    return training.sample_batch(styles, args.size, 4, training.step_generator(args.seed, 0, 10))


def train_loop(name, args, images, models, optimizers, device, callback, loss_fn, sample_fn,
               meta, extra_state=None, *, batches=None, config=None):
    """The loop the decoder trainers share: resume from the checkpoint (``--resume``), one
    optimiser step per batch (``loss_fn(batch) -> (total, parts)``), then
    :func:`~brushwork.train.common.after_step` (divergence check, event, checkpoint, log) and,
    when due, a sample grid (``sample_fn(fixed)`` -> its rows, models in eval mode, no grad;
    ``fixed``: 4 crops of ``images`` drawn once); at the end the models' safetensors file.

    ``batches(step)``: an iterator of the batches from ``step`` on (default: crops of
    ``images``), so a resumed run sees exactly the batches it would have seen; tuples are moved
    to ``device`` element by element. ``meta``: a dict (the loop adds steps, crop, batch, lr)
    or ``meta(step) -> dict``. ``config``: entries stored in the checkpoint beside the
    arguments."""
    ckpt = training.checkpoint_path(args)
    config = {**{k: v for k, v in vars(args).items() if k != "func"}, **(config or {})}
    step = 0
    if args.resume:
        step = training.load_checkpoint(ckpt, models=models, optimizers=optimizers,
                                        lr=args.lr)["step"]
    if batches is None:
        def batches(start):
            return training.batches(images, args.size, args.batch, args.seed, start_step=start)
    it = batches(step)
    fixed = training.sample_batch(images, args.size, 4, training.step_generator(args.seed, 0, 9))
    clock, t0 = Clock(), step
    losses = {}
    while step < args.steps:
        batch = _to(next(it), device)
        for m in models.values():
            m.train()
        total, losses = loss_fn(batch)
        for o in optimizers.values():
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in optimizers.values():
            o.step()
        step += 1
        if training.after_step(name, args, step, t0, total, losses, clock, callback, ckpt,
                               models=models, optimizers=optimizers, config=config):
            for m in models.values():
                m.eval()
            with torch.no_grad():
                rows = sample_fn(fixed.to(device))
            training.save_grid(rows, ckpt.with_name(f"{ckpt.stem}_sample_{step:06d}.png"))
    state = dict(extra_state or {})
    for k, m in models.items():
        state.update(prefixed_state(k, m.eval()))
    if callable(meta):
        meta = meta(step)
    else:
        meta = {**meta, "steps": str(step), "crop": str(args.size), "batch": str(args.batch),
                "lr": str(args.lr)}
    save_weights(state, args.out, fp16=getattr(args, "fp16", False), metadata=meta)
    emit(callback, training.train_event(name, step, args.steps, losses, clock(),
                                        f"wrote {args.out}", kind="done"))

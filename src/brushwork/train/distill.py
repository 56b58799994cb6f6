"""Collaborative distillation (Wang et al. 2020): a small encoder/decoder pair distilled from VGG19.

Not a stylisation method of its own: ``brushwork train distill`` writes a weight file holding a
thin VGG-shaped student encoder (``encoder.*``, ``width`` x VGG's channels) and reconstruction
decoders for its relu{L}_1 levels (``decoder{L}.*``). That file is what ``wct`` uses with
``encoder="small"``; ``brushwork train adain --encoder-weights FILE`` trains an AdaIN decoder on
top of the student encoder (for ``adain`` with ``encoder="small"``).

Losses per level L: pixel reconstruction + relative feature reconstruction in the student's own
space (the collaborative part: encoder and decoder are trained together), plus the embedding
loss: a learned 1x1 linear map from the student's relu{L}_1 to VGG19's must reproduce the
teacher's features (relative MSE). ``--init vgg`` (default) starts the student as a pruned VGG19
(:func:`prune_from_vgg`): no dead units, a third of the embedding error in two thirds the steps.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from ..core.blocks import LEVEL_LAYERS, SmallEncoder, decoder
from ..core.device import autocast
from ..core.losses import relative_mse
from ..core.vgg import CAFFE_MEAN_BGR, LAYER_CHANNELS, VGG19, load_vgg19_state
from ..methods import feedforward as ff
from . import common as training
from .loops import recon_setup, train_loop


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=20000, lr=1e-4)
    parser.add_argument("--levels", default="1,2,3,4", help="student levels (decoders) to train")
    parser.add_argument("--encoder-width", type=float, default=0.25,
                        help="student channels relative to VGG19's")
    parser.add_argument("--width", type=float, default=0.25,
                        help="decoder channels relative to VGG19's")
    parser.add_argument("--embed-weight", type=float, default=1.0)
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--init", choices=["vgg", "random"], default="vgg",
                        help="student start: VGG19's own filters, the most active ones kept per "
                             "layer (a pruned teacher; default), or random weights")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


@torch.no_grad()
def prune_from_vgg(student: SmallEncoder, x: torch.Tensor, embeds=None,
                   target_rms: float = 20.0) -> None:
    """Start the student as a pruned VGG19: in each layer keep the filters with the largest mean
    activation on the batch ``x`` (RGB [0, 1]) and, in the next layer, the matching input
    channels. The first layer is rewritten for the student's input (RGB in [-1, 1] instead of
    Caffe's BGR 0-255 minus mean); all layers are then scaled (ReLU nets are positively
    homogeneous) so the deepest features have RMS ``target_rms``. ``embeds`` (level -> 1x1
    conv), if given, start as the map putting each kept channel back in its teacher slot.
    The ranking runs in float32 (the training teacher may run under bf16 autocast)."""
    state = load_vgg19_state()
    teacher = VGG19(last_layer=student.names[-1]).to(x.device)
    acts = teacher(x, student.names)
    kept_in, kept = None, {}
    for name, conv in zip(student.names, student.convs):
        w = state[name.replace("relu", "conv") + ".weight"].to(x.device)
        b = state[name.replace("relu", "conv") + ".bias"].to(x.device)
        keep = acts[name].mean((0, 2, 3)).topk(conv.out_channels).indices.sort().values
        w, b = w[keep], b[keep]
        if kept_in is None:  # v_bgr[c] = 127.5 u_rgb[2 - c] + (127.5 - mean_bgr[c])
            shift = 127.5 - torch.tensor(CAFFE_MEAN_BGR, device=x.device)
            b = b + (w.sum((2, 3)) * shift).sum(1)
            w = w.flip(1) * 127.5
        else:
            w = w[:, kept_in]
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        kept_in = kept[name] = keep
    rms = student(x, student.names[-1])[student.names[-1]].pow(2).mean().sqrt().item()
    scale = target_rms / max(rms, 1e-6)
    student.convs[0].weight.mul_(scale)
    for conv in student.convs:
        conv.bias.mul_(scale)
    if embeds is not None:  # teacher features are compared at unit RMS (distill_losses)
        feats = student(x, [LEVEL_LAYERS[int(level)] for level in embeds])
        for level, emb in embeds.items():
            layer, idx = LEVEL_LAYERS[int(level)], kept[LEVEL_LAYERS[int(level)]]
            ratio = (acts[layer][:, idx].pow(2).mean().sqrt()
                     / acts[layer].pow(2).mean().sqrt().clamp_min(1e-4)
                     / feats[layer].pow(2).mean().sqrt().clamp_min(1e-4))
            emb.weight.zero_()
            emb.bias.zero_()
            emb.weight[idx, torch.arange(len(idx)), 0, 0] = ratio.item()


def distill_losses(teacher, student, decoders, embeds, x, bf16, device, embed_w, feat_w):
    layers = [LEVEL_LAYERS[l] for l in decoders]
    with torch.no_grad():
        tf = teacher(x, layers)
    with autocast(device, bf16):
        sf = {k: v.float() for k, v in student(x, layers).items()}
    total, parts = 0.0, {}
    for level, dec in decoders.items():
        layer = LEVEL_LAYERS[level]
        # relative MSE against the teacher scaled to unit RMS: the 1x1 map needs O(1) weights
        # (Caffe-scale VGG features are in the hundreds; Adam would take ages to get there)
        t = tf[layer] / tf[layer].pow(2).mean().sqrt().clamp_min(1e-4)
        emb = F.mse_loss(embeds[str(level)](sf[layer]), t)
        with autocast(device, bf16):
            y = dec(sf[layer]).float()
        pix = F.mse_loss(y, x)
        with autocast(device, bf16):
            fy = student(y, layer)[layer].float()
        feat = relative_mse(fy, sf[layer].detach())
        total = total + pix + feat_w * feat + embed_w * emb
        parts.update({f"pix{level}": float(pix.detach()), f"emb{level}": float(emb.detach())})
    parts["total"] = float(total.detach())
    return total, parts


def run(args, callback=None) -> Path:
    levels, device, bf16, images, teacher = recon_setup(args)
    student = SmallEncoder(max(levels), args.encoder_width).to(device)
    decoders = {l: decoder(l, args.width, student.channels[LEVEL_LAYERS[l]]).to(device)
                for l in levels}
    embeds = nn.ModuleDict({str(l): nn.Conv2d(student.channels[LEVEL_LAYERS[l]],
                                              LAYER_CHANNELS[LEVEL_LAYERS[l]], 1)
                            for l in levels}).to(device)
    models = {"encoder": student, "embed": embeds,
              **{f"decoder{l}": d for l, d in decoders.items()}}
    if args.init == "vgg" and not args.resume:
        x = training.sample_batch(images, args.size, 16, training.step_generator(args.seed, 0, 11))
        prune_from_vgg(student, x.to(device), embeds)
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=args.lr)
    meta = {"method": "distill", "init": args.init, "levels": ",".join(map(str, levels)),
            "width": str(args.width), "encoder": "small", "encoder_level": str(max(levels)),
            "encoder_width": str(args.encoder_width)}

    def sample(x):
        rows = [x]
        for l, dec in decoders.items():
            f = ff.encode(student, x, LEVEL_LAYERS[l], bf16)[LEVEL_LAYERS[l]]
            rows.append(ff.decode(dec, f, bf16).clamp(0, 1))
        return rows

    train_loop("distill", args, images, models, {"all": opt}, device, callback,
               lambda x: distill_losses(teacher, student, decoders, embeds, x, bf16, device,
                                        args.embed_weight, args.feature_weight),
               sample, meta)
    return Path(args.out)

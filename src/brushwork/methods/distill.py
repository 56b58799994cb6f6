"""Collaborative distillation (Wang et al. 2020): a small encoder/decoder pair distilled from VGG19.

Not a stylisation method of its own: ``brushwork train distill`` writes a weight file holding a
thin VGG-shaped student encoder (``encoder.*``, ``width`` x VGG's channels) and reconstruction
decoders for its relu{L}_1 levels (``decoder{L}.*``). That file is what ``wct`` uses with
``encoder="small"``; ``brushwork train adain --encoder-weights FILE`` trains an AdaIN decoder on
top of the student encoder (for ``adain`` with ``encoder="small"``).

Losses per level L: pixel reconstruction + relative feature reconstruction in the student's own
space (the collaborative part: encoder and decoder are trained together), plus the embedding
loss: a learned 1x1 linear map from the student's relu{L}_1 to VGG19's must reproduce the
teacher's features (relative MSE).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from .. import training
from ..blocks import LEVEL_LAYERS, SmallEncoder, decoder
from ..vgg import LAYER_CHANNELS
from . import _feedforward as ff
from .wct import recon_setup, train_loop


def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=20000, lr=1e-4)
    parser.add_argument("--levels", default="1,2,3,4", help="student levels (decoders) to train")
    parser.add_argument("--encoder-width", type=float, default=0.25,
                        help="student channels relative to VGG19's")
    parser.add_argument("--width", type=float, default=0.25,
                        help="decoder channels relative to VGG19's")
    parser.add_argument("--embed-weight", type=float, default=1.0)
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def distill_losses(teacher, student, decoders, embeds, x, bf16, device, embed_w, feat_w):
    layers = [LEVEL_LAYERS[l] for l in decoders]
    with torch.no_grad():
        tf = teacher(x, layers)
    with training.autocast(device, bf16):
        sf = {k: v.float() for k, v in student(x, layers).items()}
    total, parts = 0.0, {}
    for level, dec in decoders.items():
        layer = LEVEL_LAYERS[level]
        # relative MSE against the teacher scaled to unit RMS: the 1x1 map needs O(1) weights
        # (Caffe-scale VGG features are in the hundreds; Adam would take ages to get there)
        t = tf[layer] / tf[layer].pow(2).mean().sqrt().clamp_min(1e-4)
        emb = F.mse_loss(embeds[str(level)](sf[layer]), t)
        with training.autocast(device, bf16):
            y = dec(sf[layer]).float()
        pix = F.mse_loss(y, x)
        with training.autocast(device, bf16):
            fy = student(y, layer)[layer].float()
        feat = F.mse_loss(fy, sf[layer].detach()) / sf[layer].detach().pow(2).mean().clamp_min(1e-8)
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
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=args.lr)
    meta = {"method": "distill", "levels": ",".join(map(str, levels)), "width": str(args.width),
            "encoder": "small", "encoder_level": str(max(levels)),
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

"""WCT: universal style transfer via feature transforms (Li et al. 2017).

Coarse to fine, at relu5_1, relu4_1, ..., relu1_1: encode the current image, whiten the content
features and colour them with the style's covariance and mean (eigendecomposition in float64),
blend with the content features by ``strength``, decode with that level's decoder. The input
gets a reflected 16 px margin first (cropped at the end), so the encoder's zero padding leaves no
frame. Decoders are trained for reconstruction (pixel + feature loss), as in the paper; with
``--style-weight`` (ours) also on WCT-transformed features under a VGG19 mean/std loss.

Weight files: ``decoder{L}.*`` tensors for each level L in the ``levels`` metadata. With
``encoder="small"`` (default file ``wct_small.safetensors``) the file also holds the distilled
encoder (``encoder.*``): from ``brushwork train wct --encoder-weights DISTILLED`` or a
``brushwork train distill`` file used as is (its reconstruction decoders).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import shipped, training
from ..blocks import LEVEL_LAYERS, apply_affine, decoder, feature_stats, mean_std, wct_matrix
from ..errors import BrushworkError
from ..protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Clock, Control, Progress,
                        emit, normalize_style_weights, resolve_controls)
from ..vgg import VGG19
from . import _feedforward as ff

DEFAULT_FILE = "wct_vgg.safetensors"
DEFAULT_SMALL_FILE = "wct_small.safetensors"
TRAIN_HINT = "brushwork train wct --content DIR --styles DIR --out FILE"
SMALL_HINT = ("brushwork train distill --content DIR --styles DIR --out DISTILLED, then brushwork "
              "train wct --encoder-weights DISTILLED --content DIR --styles DIR --out FILE")

LEVELS = Control("levels", "str_list", None,
                 "WCT levels to apply, coarse to fine (e.g. 5,4,3,2,1; default: all in the file)")


def wct_target(cf: torch.Tensor, sf: torch.Tensor, mask: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """WCT of ``cf`` to ``sf``; with a mask only the masked content positions are transformed
    (with their own statistics), the rest is left as is."""
    s_mean, s_cov = feature_stats(sf[0].flatten(1))
    flat = cf[0].flatten(1)
    if mask is None:
        c_mean, c_cov = feature_stats(flat)
        return apply_affine(flat, wct_matrix(c_cov, s_cov, eps), c_mean, s_mean).view_as(cf)
    m = F.interpolate(mask, size=cf.shape[-2:], mode="nearest")[0, 0].flatten() > 0.5
    out = cf.clone()
    if int(m.sum()) < 2:
        return out
    c_mean, c_cov = feature_stats(flat[:, m])
    out[0].view(cf.shape[1], -1)[:, m] = apply_affine(flat[:, m], wct_matrix(c_cov, s_cov, eps),
                                                      c_mean, s_mean)
    return out


class WCT:
    name = "wct"
    summary = ("WCT (Li et al. 2017): whitening-colouring coarse to fine, relu5_1..relu1_1, a "
               "decoder per level (shipped: levels 4..1); --encoder small: the distilled encoder")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, LEVELS)}
    # Video (temporal.TemporalStylizer, --consistency flow): wct re-invents its texture from
    # small content changes, so the default 0.4 blend averages two textures and loses a quarter
    # of the style; carrying 95 % of the warped previous result keeps one texture moving with
    # the scene, and Lanczos warping keeps it sharp over many frames (docs/video.md).
    video_defaults = {"blend": 0.95, "resample": "lanczos"}

    def __init__(self, device="cpu", weights=None, encoder: str = "vgg", bf16: bool | None = None):
        if encoder not in ("vgg", "small"):
            raise BrushworkError(f"wct: unknown encoder {encoder!r} (choose vgg or small)")
        default, hint = (DEFAULT_FILE, TRAIN_HINT) if encoder == "vgg" else (DEFAULT_SMALL_FILE,
                                                                            SMALL_HINT)
        self.device, self.bf16, state, meta, path = ff.open_weights(
            ("wct", "distill"), weights, default, hint, device, bf16)
        self.levels = ff.meta_levels(meta, path)
        small = meta.get("encoder") == "small"
        self.encoder = ff.make_encoder(meta, state, self.device, self.bf16,
                                       LEVEL_LAYERS[max(self.levels)], path)
        width = ff.meta_float(meta, "width", 1.0, path)
        self.decoders = {}
        for level in self.levels:
            in_ch = self.encoder.channels[LEVEL_LAYERS[level]] if small else None
            self.decoders[level] = ff.load_frozen(decoder(level, width, in_ch), f"decoder{level}",
                                                  state, path, self.device)

    @torch.inference_mode()
    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c = resolve_controls(self.name, self.controls, controls)
        weights = normalize_style_weights(len(styles), style_weights)
        levels = self.levels
        if c["levels"]:
            try:
                levels = [int(x) for x in c["levels"]]
            except ValueError:
                raise BrushworkError(f"wct: levels must be numbers 1..5, got {c['levels']}") from None
            missing = [l for l in levels if l not in self.decoders]
            if missing:
                raise BrushworkError(f"wct: no decoder for level(s) {missing} in the weight file "
                                     f"(it has {self.levels})")
        else:
            levels = sorted(levels, reverse=True)
        clock = Clock()
        content, styles, masks, content_rgb = ff.prepare(content, styles, c, self.device)
        hw = tuple(content.shape[-2:])
        mult = 2 ** (max(levels) - 1)
        b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)  # reflected margin: no dark frame at the edges
        x = ff.with_border(content, b, mult)
        pm = None if masks is None else [ff.with_border(m, b, mult) for m in masks]
        for i, level in enumerate(levels):
            layer = LEVEL_LAYERS[level]
            stride = 2 ** (level - 1)
            cf = ff.encode_big(self.encoder, x, layer, self.bf16, stride)
            targets = [wct_target(cf, ff.encode(self.encoder, s, layer, self.bf16)[layer],
                                  None if pm is None else pm[j])
                       for j, s in enumerate(styles)]
            t = ff.combine(cf, targets, weights, pm, c["strength"])
            x = ff.decode_big(self.decoders[level], t, self.bf16, stride)
            emit(callback, Progress(self.name, "step", i + 1, len(levels), elapsed=clock()))
        out = ff.finish(x[..., b:b + hw[0], b:b + hw[1]], hw, content_rgb)
        emit(callback, Progress(self.name, "done", len(levels), len(levels), size=hw,
                                elapsed=clock()))
        return out


# ------------------------------------------------------------------------------------- training
def add_arguments(parser) -> None:
    training.add_common_arguments(parser, size=256, batch=8, steps=20000, lr=1e-4)
    parser.add_argument("--levels", default="1,2,3,4,5", help="decoder levels to train")
    parser.add_argument("--width", type=float, default=1.0, help="decoder channel multiplier")
    parser.add_argument("--feature-weight", type=float, default=1.0,
                        help="weight of the (relative) feature reconstruction loss")
    parser.add_argument("--encoder-weights", default=None, metavar="DISTILL",
                        help="train decoders for the distilled small encoder of this file (from "
                             "`brushwork train distill`; its decoders of the same levels and "
                             "width are the starting point) instead of for VGG19")
    parser.add_argument("--style-weight", type=float, default=0.0,
                        help="0 (the paper): reconstruction only. > 0: the decoders also decode "
                             "WCT-transformed features (each crop stylised with another crop of "
                             "the batch) under a feature loss to the transformed target plus "
                             "this weight x a relative VGG19 mean/std loss to the style")
    parser.add_argument("--fp16", action="store_true", help="store the final weights as fp16")


def parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        raise BrushworkError(f"--levels {text!r}: give numbers 1..5 separated by commas") from None
    if not levels or any(l < 1 or l > 5 for l in levels):
        raise BrushworkError(f"--levels {text!r}: give numbers 1..5 separated by commas")
    return levels


def recon_losses(enc, decoders: dict, x, bf16, device, feature_weight, feats=None):
    """Sum over levels of pixel MSE + feature_weight * relative feature MSE; (total, parts)."""
    layers = [LEVEL_LAYERS[l] for l in decoders]
    if feats is None:
        with torch.no_grad():
            feats = ff.encode(enc, x, layers, bf16)
    total, parts = 0.0, {}
    for level, dec in decoders.items():
        layer = LEVEL_LAYERS[level]
        with training.autocast(device, bf16):
            y = dec(feats[layer]).float()
        pix = F.mse_loss(y, x)
        fy = ff.encode(enc, y, layer, bf16)[layer]
        feat = F.mse_loss(fy, feats[layer]) / feats[layer].pow(2).mean().clamp_min(1e-8)
        total = total + pix + feature_weight * feat
        parts[f"pix{level}"] = float(pix.detach())
        parts[f"feat{level}"] = float(feat.detach())
    parts["total"] = float(total.detach())
    return total, parts


def batch_wct(cf: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
    """``wct_target`` of each item of a batch with the matching item of ``sf``."""
    return torch.cat([wct_target(cf[i:i + 1], sf[i:i + 1]) for i in range(len(cf))])


def stylise_losses(enc, vgg, decoders: dict, x, bf16, device, style_weight, feature_weight,
                   feats):
    """Decoders on WCT-transformed features: each crop of ``x`` stylised with the batch's
    reversed order as styles; relative feature MSE of the re-encoded output to the target, plus
    ``style_weight`` x relative mean/std MSE of VGG19 relu1_1..relu{L}_1 to the style.
    ``feats``: ``x``'s encoder features at every level of ``decoders`` (as recon_losses')."""
    total, parts = 0.0, {}
    deepest = max(decoders)
    with torch.no_grad():  # once for all levels
        vs = vgg(x.flip(0), [LEVEL_LAYERS[l] for l in range(1, deepest + 1)])
    for level, dec in decoders.items():
        layer, vgg_layers = LEVEL_LAYERS[level], [LEVEL_LAYERS[l] for l in range(1, level + 1)]
        with torch.no_grad():  # the styles are the crops reversed: their features too
            t = batch_wct(feats[layer], feats[layer].flip(0))
        with training.autocast(device, bf16):
            y = dec(t).float()
        yf = ff.encode(enc, y, layer, bf16)[layer]
        feat = F.mse_loss(yf, t) / t.pow(2).mean().clamp_min(1e-8)
        vy, st = vgg(y, vgg_layers), 0.0
        for name in vgg_layers:
            (ym, ys), (sm, ss) = mean_std(vy[name]), mean_std(vs[name])
            energy = vs[name].pow(2).mean().clamp_min(1e-8)
            st = st + (F.mse_loss(ym, sm) + F.mse_loss(ys, ss)) / energy
        total = total + feature_weight * feat + style_weight * st
        parts[f"sfeat{level}"] = float(feat.detach())
        parts[f"style{level}"] = float(st.detach())
    return total, parts


def recon_setup(args):
    """The common start of the reconstruction trainers (wct, distill): ``training.start_run``,
    then (levels, device, bf16 flag, training images (contents and styles together), VGG19 up
    to the deepest level)."""
    device, bf16 = training.start_run(args)
    levels = parse_levels(args.levels)
    contents, styles = training.load_training_data(args)
    vgg = VGG19(device=device, autocast=bf16, last_layer=LEVEL_LAYERS[max(levels)])
    return levels, device, bf16, contents + styles, vgg


def run(args, callback=None) -> Path:
    """Train decoders for the relu{L}_1 levels of VGG19 (or of a distilled small encoder):
    reconstruction, plus decoding WCT-transformed features with ``--style-weight``; returns the
    weight file."""
    if args.style_weight < 0:
        raise BrushworkError("--style-weight must be >= 0")
    small = None
    if args.encoder_weights:  # checked before any data is loaded
        small = ff.load_distilled(args.encoder_weights)
        if max(parse_levels(args.levels)) > small[0].level:
            raise BrushworkError(f"--encoder-weights {args.encoder_weights}: the encoder stops "
                                 f"at relu{small[0].level}_1; --levels may not go above "
                                 f"{small[0].level}")
    levels, device, bf16, images, vgg = recon_setup(args)
    meta = {"method": "wct", "levels": ",".join(map(str, levels)), "width": str(args.width),
            "encoder": "vgg", "style_weight": str(args.style_weight)}
    enc, extra = vgg, {}
    if small is not None:
        enc, dstate, dmeta = small
        enc.to(device).eval().requires_grad_(False)
        extra = training.prefixed_state("encoder", enc)
        meta.update(encoder="small", encoder_level=str(enc.level), encoder_width=str(enc.width))
    decoders = {}
    for l in levels:
        in_ch = enc.channels[LEVEL_LAYERS[l]] if small is not None else None
        decoders[l] = decoder(l, args.width, in_ch)
        if small is not None and any(k.startswith(f"decoder{l}.") for k in dstate) \
                and math.isclose(float(dmeta.get("width", -1)), args.width):
            training.load_prefixed(decoders[l], f"decoder{l}", dstate, args.encoder_weights)
        decoders[l].to(device)
    models = {f"decoder{l}": d for l, d in decoders.items()}
    params = [p for d in decoders.values() for p in d.parameters()]
    opt = torch.optim.Adam(params, lr=args.lr)

    def losses(x):
        with torch.no_grad():
            feats = ff.encode(enc, x, [LEVEL_LAYERS[l] for l in levels], bf16)
        total, parts = recon_losses(enc, decoders, x, bf16, device, args.feature_weight, feats)
        if args.style_weight > 0:
            t2, p2 = stylise_losses(enc, vgg, decoders, x, bf16, device, args.style_weight,
                                    args.feature_weight, feats)
            total = total + t2
            parts = {**parts, **p2, "total": float(total.detach())}
        return total, parts

    def sample(x):
        rows = [x] + [_recon(enc, decoders[l], x, l, bf16) for l in levels]
        if args.style_weight > 0:  # each crop stylised at the deepest level with the next one
            layer = LEVEL_LAYERS[max(levels)]
            cf = ff.encode(enc, x, layer, bf16)[layer]
            t = batch_wct(cf, cf.flip(0))
            rows.append(ff.decode(decoders[max(levels)], t, bf16).clamp(0, 1))
        return rows

    train_loop("wct", args, images, models, {"decoders": opt}, device, callback, losses, sample,
               meta, extra_state=extra)
    return Path(args.out)


# ----------------------------------------------- --init-decoder (linear and sanet trainers)
def add_init_decoder_argument(parser, which: str) -> None:
    parser.add_argument("--init-decoder", metavar="FILE", default=None,
                        help=f"start the decoder from the {which} reconstruction decoder of a wct "
                             f"weight file (from `brushwork train wct`, VGG19 encoder, same "
                             f"--width) instead of from random weights; ignored with --resume "
                             f"(the checkpoint's decoder wins)")


def init_decoder(dec, path, level: int, width: float) -> None:
    """Load the level-``level`` decoder (``decoder{level}.*``) of a wct weight file into
    ``dec``, a VGG19 decoder of ``width``; a one-line BrushworkError when the file cannot
    provide it."""
    path = Path(path)
    if not path.is_file():
        raise BrushworkError(f"--init-decoder {path}: file not found")
    state, meta = shipped.load_weights(path)
    if meta.get("encoder", "vgg") != "vgg":
        raise BrushworkError(f"--init-decoder {path}: a small-encoder file; give a VGG19 one "
                             f"(from `brushwork train wct`)")
    if meta.get("method") != "wct":
        raise BrushworkError(f"--init-decoder {path}: not a wct weight file (method "
                             f"{meta.get('method')!r}); make one with `brushwork train wct`")
    levels = ff.meta_levels(meta, path)
    if level not in levels:
        raise BrushworkError(f"--init-decoder {path}: no level-{level} ({LEVEL_LAYERS[level]}) "
                             f"decoder (the file has levels {levels}); train one with "
                             f"`brushwork train wct --levels {level}`")
    file_width = ff.meta_float(meta, "width", 1.0, path)
    if not math.isclose(file_width, width):
        raise BrushworkError(f"--init-decoder {path}: decoder width {file_width:g} differs from "
                             f"--width {width:g}")
    training.load_prefixed(dec, f"decoder{level}", state, f"--init-decoder {path}")


def _recon(enc, dec, x, level, bf16):
    layer = LEVEL_LAYERS[level]
    return ff.decode(dec, ff.encode(enc, x, layer, bf16)[layer], bf16).clamp(0, 1)


def train_loop(name, args, images, models, optimizers, device, callback, loss_fn, sample_fn,
               meta, extra_state=None):
    """A plain reconstruction-style loop over batches of ``images`` (shared by wct, distill,
    styleswap): checkpoints, sample grids, events, final safetensors."""
    ckpt = training.checkpoint_path(args)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    step = 0
    if args.resume:
        step = training.load_checkpoint(ckpt, models=models, optimizers=optimizers,
                                        lr=args.lr)["step"]
    it = training.batches(images, args.size, args.batch, args.seed, start_step=step)
    fixed = training.sample_batch(images, args.size, 4, training.step_generator(args.seed, 0, 9))
    clock, t0 = Clock(), step
    losses = {}
    while step < args.steps:
        x = next(it).to(device)
        for m in models.values():
            m.train()
        total, losses = loss_fn(x)
        for o in optimizers.values():
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in optimizers.values():
            o.step()
        step += 1
        if not torch.isfinite(total):
            raise BrushworkError(f"training diverged at step {step} (loss is not finite); lower --lr")
        emit(callback, training.train_event(name, step, args.steps, losses, clock(),
                                            f"{(step - t0) / max(clock(), 1e-9):.2f} it/s"))
        if step % args.checkpoint_every == 0 or step == args.steps:
            training.save_checkpoint(ckpt, models=models, optimizers=optimizers, step=step,
                                     config=config)
            training.log_line(ckpt.with_suffix(".log.jsonl"),
                              {"step": step, "time": round(clock(), 1), **losses})
        if args.sample_every and (step % args.sample_every == 0 or step == args.steps):
            for m in models.values():
                m.eval()
            with torch.no_grad():
                rows = sample_fn(fixed.to(device))
            training.save_grid(rows, ckpt.with_name(f"{ckpt.stem}_sample_{step:06d}.png"))
    state = dict(extra_state or {})
    for k, m in models.items():
        state.update(training.prefixed_state(k, m.eval()))
    meta = {**meta, "steps": str(step), "crop": str(args.size), "batch": str(args.batch),
            "lr": str(args.lr)}
    training.save_weights(state, args.out, fp16=getattr(args, "fp16", False), metadata=meta)
    emit(callback, training.train_event(name, step, args.steps, losses, clock(),
                                        f"wrote {args.out}", kind="done"))

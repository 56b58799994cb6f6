"""`brushwork train styleaware`: one encoder-decoder per artist with the style-aware content
loss (Sanakoyeu et al. 2018), all artists in one run and one checkpoint.

Steps ``0 .. --warmup - 1`` train one shared encoder-decoder as an auto-encoder (L1); at step
``--warmup`` every artist's pair starts from it, and from then on step k trains artist
``(k - warmup) mod N``: one discriminator update (the artist's paintings real; the photos and
the stylisations fake) and one encoder-decoder update (adversarial + style-aware content +
transformed-image losses, :mod:`brushwork.methods.styleaware`). ``--steps`` counts every step,
the warm-up included. Batches are seeded by (seed, step), so a resumed run sees the batches
it would have seen; training runs in float32.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.device import pick_device
from ..core.losses import weighted_sum
from ..core.protocol import Clock, emit
from ..core.weights import save_weights
from ..errors import BrushworkError
from ..eval.classifier import artist_folders
from ..methods.styleaware import (POOL, Discriminator, StyleNet, d_loss, g_loss,
                                  style_aware_loss, transformed_image_loss)
from . import common as training

NAME = "styleaware"


def add_arguments(p) -> None:
    training.add_artist_arguments(p)
    p.add_argument("--width", type=int, default=16, help="encoder width (channels of its first conv)")
    p.add_argument("--n-down", type=int, default=3, help="stride-2 convs of the encoder")
    p.add_argument("--n-res", type=int, default=4, help="residual blocks of the decoder")
    p.add_argument("--d-width", type=int, default=16, help="discriminator width")
    p.add_argument("--d-layers", type=int, default=4, help="discriminator stride-2 convs")
    p.add_argument("--size", type=int, default=128, help="crop size in pixels")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--load-size", type=int, default=None,
                   help="photo short side before cropping (default 2*size, at most 512)")
    p.add_argument("--style-load-size", type=int, default=256,
                   help="painting short side before cropping (the sets' native scale)")
    p.add_argument("--steps", type=int, default=8000, help="all steps, the warm-up included")
    p.add_argument("--warmup", type=int, default=300,
                   help="shared auto-encoder steps before the per-artist training")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--adv-weight", type=float, default=1.0, help="adversarial loss weight")
    p.add_argument("--content-weight", type=float, default=100.0,
                   help="style-aware content loss weight (latent MSE in the encoder's space)")
    p.add_argument("--transform-weight", type=float, default=100.0,
                   help="transformed-image loss weight (MSE of average-pooled images)")
    p.add_argument("--pool", type=int, default=POOL,
                   help="averaging window of the transformed-image loss (pixels)")
    training.add_run_arguments(p, every=200)
    p.add_argument("--fp16", action="store_true", help="store the exported weights as fp16")


NET_KEYS = ("width", "n_down", "n_res", "d_width", "d_layers")


def check_arguments(args) -> None:
    for name in ("size", "batch", "steps", "width", "n_down", "d_width", "pool"):
        if getattr(args, name) < 1:
            raise BrushworkError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.n_res < 0:
        raise BrushworkError("--warmup and --n-res must be >= 0")
    if args.d_layers < 2:
        raise BrushworkError("--d-layers must be at least 2")
    if args.size % (2 ** args.n_down) or args.size < 2 ** (args.n_down + 1):
        raise BrushworkError(f"--size must be a multiple of {2 ** args.n_down} "
                             f"(2**n_down), at least {2 ** (args.n_down + 1)}")
    if args.size < args.pool:
        raise BrushworkError("--size must be at least --pool")
    if not args.lr > 0:
        raise BrushworkError("--lr must be positive")
    for name in ("adv_weight", "content_weight", "transform_weight"):
        if not getattr(args, name) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be >= 0")
    if not (args.adv_weight or args.content_weight or args.transform_weight):
        raise BrushworkError("nothing to train: every loss weight is 0")
    training.check_out_and_threads(args)


def pick_artists(args) -> list[str]:
    """The artists of the run: ``--artists`` (each a folder of ``--styles``) or every folder
    with at least ``--min-images`` paintings."""
    root = Path(args.styles)
    if not root.is_dir():
        raise BrushworkError(f"--styles {args.styles}: not a folder")
    if args.artists:
        names = [a.strip() for a in args.artists.split(",") if a.strip()]
        missing = [a for a in names if not (root / a).is_dir()]
        if missing:
            raise BrushworkError(f"--artists: no folder {', '.join(missing)} in {args.styles}")
        if len(set(names)) != len(names):
            raise BrushworkError("--artists: an artist is named twice")
        return names
    names = list(artist_folders(root, args.min_images))
    if not names:
        raise BrushworkError(f"{args.styles}: no artist folder with at least "
                             f"{args.min_images} paintings")
    return names


def build(cfg: dict, artists: list[str]):
    """(base, {artist: generator}, {artist: discriminator}) for a run's network sizes."""
    net = dict(width=cfg["width"], n_down=cfg["n_down"], n_res=cfg["n_res"])
    base = StyleNet(**net)
    gens = {a: StyleNet(**net) for a in artists}
    discs = {a: Discriminator(cfg["d_width"], cfg["d_layers"]) for a in artists}
    return base, gens, discs


def run(args, callback=None) -> dict:
    check_arguments(args)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    artists = pick_artists(args)
    cfg = {k: getattr(args, k) for k in NET_KEYS}
    base, gens, discs = build(cfg, artists)
    models = {"base": base, **{f"g.{a}": g for a, g in gens.items()},
              **{f"d.{a}": d for a, d in discs.items()}}
    for m in models.values():
        m.to(device).train()
    betas = (0.5, 0.999)
    opts = {k: torch.optim.Adam(m.parameters(), lr=args.lr, betas=betas)
            for k, m in models.items()}
    ckpt = training.checkpoint_path(args)
    start = 0
    if args.resume:
        saved = training.load_checkpoint_config(ckpt)
        if saved.get("artists") and saved["artists"] != artists:
            raise BrushworkError(f"{ckpt}: trained on artists {saved['artists']}, this run "
                                 f"has {artists}")
        start = training.load_checkpoint(ckpt, models=models, optimizers=opts,
                                         lr=args.lr)["step"]
    exclude = training.read_exclude(args.exclude)
    load = args.load_size or max(args.size, min(512, 2 * args.size))
    photos = training.load_folder(args.content, load, exclude=exclude)
    paintings = {a: training.load_folder(Path(args.styles) / a,
                                         max(args.size, args.style_load_size), exclude=exclude)
                 for a in artists}
    config = {**{k: v for k, v in vars(args).items() if k not in ("func",)},
              "artists": artists}
    n, warmup, log = len(artists), args.warmup, {}
    clock = Clock()
    for step in range(start, args.steps):
        g = training.step_generator(args.seed, step)
        x = training.sample_batch(photos, args.size, args.batch, g).to(device)
        if step < warmup:
            out = base(x)
            loss, log = weighted_sum({"recon": (1.0, F.l1_loss(out, x))})
            opts["base"].zero_grad(set_to_none=True)
            loss.backward()
            opts["base"].step()
            artist = None
        else:
            if step == warmup and warmup > 0:  # every artist starts from the auto-encoder
                for a in artists:
                    gens[a].load_state_dict(base.state_dict())
            artist = artists[(step - warmup) % n]
            G, D = gens[artist], discs[artist]
            gp = training.step_generator(args.seed, step, stream=1)
            real = training.sample_batch(paintings[artist], args.size, args.batch, gp).to(device)
            with torch.no_grad():
                fake = G(x)
            loss_d = d_loss(D(real), [D(x), D(fake)])
            opts[f"d.{artist}"].zero_grad(set_to_none=True)
            loss_d.backward()
            opts[f"d.{artist}"].step()
            loss, log, _ = generator_loss(G, D, x, args.adv_weight, args.content_weight,
                                          args.transform_weight, args.pool)
            log["d"] = float(loss_d.detach())
            opts[f"g.{artist}"].zero_grad(set_to_none=True)
            D.requires_grad_(False)
            loss.backward()
            D.requires_grad_(True)
            opts[f"g.{artist}"].step()
        done = step + 1
        if not torch.isfinite(loss):
            raise BrushworkError(f"training diverged at step {done} (loss is not finite); "
                                 f"lower --lr")
        emit(callback, training.train_event(NAME, done, args.steps, log, clock(),
                                            message="warmup" if artist is None else artist))
        if done % args.checkpoint_every == 0 or done == args.steps:
            training.checkpoint_and_log(ckpt, models=models, optimizers=opts, step=done,
                                        config=config, seconds=clock(),
                                        losses={**log, "artist": artist or "warmup"})
        if args.sample_every and (done % args.sample_every == 0 or done == args.steps):
            save_samples(base if done <= warmup else None, gens, x[:1],
                         Path(ckpt).with_name(Path(ckpt).stem + f"_sample_{done:06d}.png"))
    sha = write_weights(gens, base, artists, cfg, args.steps, args.size, args.out,
                        fp16=args.fp16, use_base=args.steps <= warmup)
    emit(callback, training.train_event(NAME, args.steps, args.steps, log, clock(),
                                        message=f"wrote {args.out}", kind="done"))
    return {"out": str(args.out), "sha256": sha, "steps": args.steps, "losses": log,
            "artists": artists, "seconds": clock()}


def generator_loss(G: StyleNet, D: Discriminator, x: torch.Tensor, adv_weight: float,
                   content_weight: float, transform_weight: float, pool: int = POOL):
    """The encoder-decoder's objective on photos ``x``: adversarial (D must call the
    stylisation a painting) + style-aware content (latent of the stylisation vs latent of the
    photo) + transformed-image loss. Returns (total, {term: value}, stylisation)."""
    z_x = G.encoder(x)
    out = G.decoder(z_x)
    terms = {"adv": (adv_weight, g_loss(D(out))),
             "content": (content_weight, style_aware_loss(z_x, G.encoder(out))),
             "transform": (transform_weight, transformed_image_loss(x, out, pool))}
    total, log = weighted_sum(terms)
    return total, log, out


@torch.no_grad()
def save_samples(base, gens: dict, x: torch.Tensor, path) -> None:
    """One row: the photo crop, then every artist's stylisation (the auto-encoder's during
    the warm-up)."""
    nets = [base] if base is not None else list(gens.values())
    was = [m.training for m in nets]
    for m in nets:
        m.eval()
    row = torch.cat([x] + [m(x) for m in nets])
    for m, t in zip(nets, was):
        m.train(t)
    training.save_grid([row], path, max_cols=row.shape[0])


def write_weights(gens: dict, base, artists, cfg, steps: int, crop: int, out, *,
                  fp16: bool, use_base: bool = False, extra_meta=None) -> str:
    """Every artist's encoder-decoder under its name as the tensor prefix (``use_base``: the
    shared auto-encoder for all, a run stopped in its warm-up)."""
    tensors = {}
    for a in artists:
        net = base if use_base else gens[a]
        tensors.update({f"{a}.{k}": v.clone() for k, v in net.state_dict().items()})
    net_cfg = {k: cfg[k] for k in ("width", "n_down", "n_res")}
    meta = {"method": NAME, "artists": json.dumps(list(artists)), "config": json.dumps(net_cfg),
            "steps": str(steps), "crop": str(crop), **(extra_meta or {})}
    return save_weights(tensors, out, fp16=fp16, metadata=meta)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the encoder-decoders of a training checkpoint as a weight file (what ``run``
    writes at its end); returns its sha256. Ships a model from a run stopped early."""
    cfg = training.load_checkpoint_config(checkpoint)
    try:
        artists = list(cfg["artists"])
        net_cfg = {k: int(cfg[k]) for k in NET_KEYS}
    except (KeyError, TypeError, ValueError):
        raise BrushworkError(f"{checkpoint}: not a styleaware checkpoint") from None
    base, gens, _ = build(net_cfg, artists)
    info = training.load_checkpoint(checkpoint, models={"base": base,
                                                        **{f"g.{a}": g for a, g in gens.items()}})
    step = info["step"]
    return write_weights(gens, base, artists, net_cfg, step, int(cfg.get("size", 0)), out,
                         fp16=fp16, use_base=step <= int(cfg.get("warmup", 0)),
                         extra_meta=extra_meta)

"""`brushwork train asma`: the multi-artist GAN (ASMA-GAN)."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path
import torch
from torch import nn
import torch.nn.functional as F
from ..core.blocks import (hinge_d_loss, hinge_g_loss, one_hot_styles)
from ..eval.classifier import ArtistClassifier, artist_folders, statistics_of
from ..errors import BrushworkError
from ..core.losses import mean_std_distance, relative_mse, weighted_sum
from ..core.stats import gram, log_standardize, mean_std
from ..core.protocol import Clock, emit
from ..core.vgg import LAYER_CHANNELS, VGG19
from ..methods.asma import DECODER_NORMS, PADDINGS, PRESETS, SHIPPED_FILE, TRAIN_HINT, Generator, build, transform_loss
from . import common as training
from ..core.device import autocast, has_bf16, pick_device
from ..core.weights import load_weights, save_weights, prefixed_state, load_prefixed, resolve_weights


STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
TEXTURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")
CONTENT_LAYER = "relu4_1"


class Paintings:
    """All paintings of all artists (uint8, short side ``load_size``), sampled uniformly."""

    def __init__(self, root, load_size: int, min_images: int):
        self.artists, self.images, self.labels = [], [], []
        for label, artist in enumerate(artist_folders(root, min_images)):
            imgs = training.load_folder(Path(root) / artist, load_size)
            self.artists.append(artist)
            self.images += imgs
            self.labels += [label] * len(imgs)

    def sample(self, size: int, batch: int, g: torch.Generator, balanced: bool = False):
        """``batch`` random crops and their artist labels. Each painting equally likely, or
        with ``balanced`` (ours) each artist equally likely, then each of their paintings."""
        if balanced:
            by_artist = [[i for i, a in enumerate(self.labels) if a == k]
                         for k in range(len(self.artists))]
            picks = torch.randint(len(self.artists), (batch,), generator=g).tolist()
            idx = [by_artist[k][int(torch.randint(len(by_artist[k]), (), generator=g))]
                   for k in picks]
        else:
            idx = torch.randint(len(self.images), (batch,), generator=g).tolist()
        crops = torch.cat([training.sample_batch([self.images[i]], size, 1, g) for i in idx])
        return crops, torch.tensor([self.labels[i] for i in idx])


@torch.no_grad()
def artist_statistics(vgg: VGG19, paintings: Paintings, device,
                      typical: bool = False) -> dict[str, torch.Tensor]:
    """Per artist, the channel means and stds at STYLE_LAYERS of their paintings (whole images
    at the loaded scale): {"mean:<layer>" | "std:<layer>": (N, C)}. The average over the
    artist's paintings, or with ``typical`` (ours) the statistics of the one painting that
    most clearly belongs to its artist (:func:`typical_paintings`): an average of many
    paintings' statistics is a washed-out palette that matches no painting."""
    # preallocated: many small tensors kept between the large VGG activations fragment the
    # heap (RSS grew by ~20 MB a painting when they were appended to lists)
    count = len(paintings.images)
    per = {f"{kind}:{name}": torch.zeros(count, LAYER_CHANNELS[name], device=device)
           for name in STYLE_LAYERS for kind in ("mean", "std")}
    for i, img in enumerate(paintings.images):
        feats = vgg(img[None].float().div(255).to(device), list(STYLE_LAYERS))
        for name in STYLE_LAYERS:
            m, sd = mean_std(feats[name].float(), weighted=True)
            per[f"mean:{name}"][i] = m[0]
            per[f"std:{name}"][i] = sd[0]
    labels = torch.tensor(paintings.labels, device=device)
    n = len(paintings.artists)
    if typical:
        idx = typical_paintings(per, labels, n)
        out = {k: v[idx] for k, v in per.items()}
    else:
        out = {k: torch.stack([v[labels == a].mean(0) for a in range(n)]) for k, v in per.items()}
    # the spread of every statistic over all paintings, for style_term's standardised space
    for k, v in per.items():
        logs = torch.log1p(v.clamp_min(0))
        out[f"mu|{k}"], out[f"sd|{k}"] = logs.mean(0), logs.std(0).clamp_min(1e-3)
    return out


def typical_paintings(per: dict[str, torch.Tensor], labels: torch.Tensor, n: int) -> torch.Tensor:
    """Per artist, the index of the painting with the largest nearest-centroid margin in
    standardised log statistics: (distance to the nearest other artist's centroid) minus
    (distance to its own artist's centroid)."""
    z = torch.log1p(torch.cat([per[k] for k in sorted(per)], 1).clamp_min(0))
    z = (z - z.mean(0)) / z.std(0).clamp_min(1e-6)
    centroids = torch.stack([z[labels == a].mean(0) for a in range(n)])
    d = torch.cdist(z, centroids)                                    # (P, N)
    own = d.gather(1, labels[:, None]).squeeze(1)
    other = d.masked_fill(F.one_hot(labels, n).bool(), float("inf")).min(1).values
    margin = other - own
    return torch.stack([margin.masked_fill(labels != a, -float("inf")).argmax()
                        for a in range(n)])


def grid_cells(f: torch.Tensor, grid: int) -> list[torch.Tensor]:
    """``f`` (B, C, H, W) cut into ``grid`` x ``grid`` cells (the last row/column takes the
    remainder); ``grid=1``: ``[f]``."""
    h, w = f.shape[-2:]
    ys = [round(i * h / grid) for i in range(grid + 1)]
    xs = [round(j * w / grid) for j in range(grid + 1)]
    return [f[..., ys[i]:ys[i + 1], xs[j]:xs[j + 1]] for i in range(grid) for j in range(grid)]


def standardised(stat: torch.Tensor, targets: dict, key: str) -> torch.Tensor:
    """A channel statistic in the painting set's standardised log space:
    ``(log1p(stat) - mu) / sd`` with the moments over all paintings (artist_statistics)."""
    return log_standardize(stat, targets[f"mu|{key}"], targets[f"sd|{key}"])


def style_term(vgg: VGG19, out, real, ids, targets, feats=None, grid: int = 1,
               space: str = "raw"):
    """Mean/std MSE at STYLE_LAYERS between G's output (in [-1, 1]) and either the artists'
    average statistics (``targets`` from artist_statistics) or the paintings ``real``.
    ``feats``: the output's VGG features at STYLE_LAYERS when already computed. ``grid`` > 1
    (ours): the output's statistics are taken per cell of a grid x grid split and every cell
    must match (averaged), so one high-contrast blob cannot supply the whole image's std.
    ``space="standardised"`` (ours; needs ``targets``): the MSE is taken on
    :func:`standardised` statistics, so every channel counts by how much it varies between
    paintings rather than by its raw magnitude (raw MSE is ruled by a few large channels)."""
    if space not in ("raw", "standardised"):
        raise BrushworkError(f"unknown style space {space!r}: raw or standardised")
    if space == "standardised" and targets is None:
        raise BrushworkError("the standardised style space needs artist or typical targets")
    fo = feats if feats is not None else vgg((out.float() + 1) / 2, list(STYLE_LAYERS))
    if targets is None:
        with torch.no_grad():
            fr = vgg(real.to(out.device), list(STYLE_LAYERS))
        tr = {name: mean_std(fr[name], weighted=True) for name in STYLE_LAYERS}
    else:
        tr = {name: (targets[f"mean:{name}"][ids], targets[f"std:{name}"][ids])
              for name in STYLE_LAYERS}

    def space_of(stats: dict) -> dict:
        if space == "raw":
            return stats
        return {name: (standardised(m, targets, f"mean:{name}"),
                       standardised(s, targets, f"std:{name}")) for name, (m, s) in stats.items()}

    tr = space_of(tr)
    cells = {name: grid_cells(fo[name], grid) for name in STYLE_LAYERS}
    st = 0.0
    for i in range(grid * grid):  # every cell must match (averaged over the cells)
        cell = space_of({name: mean_std(cells[name][i], weighted=True) for name in STYLE_LAYERS})
        st = st + mean_std_distance(cell, tr, STYLE_LAYERS) / (grid * grid)
    return st


def texture_term(vgg: VGG19, out_feats: dict, real) -> torch.Tensor:
    """Ours: the Gram matrices (Gatys et al.'s texture statistics) of G's output at
    TEXTURE_LAYERS against those of the batch's paintings of the same artists, each layer as a
    relative MSE (scale-free, so every layer counts alike). Mean/std statistics fix the palette
    and the channel energies; the Gram matrices carry which features occur together: the
    strokes, edges and patterns of a painting."""
    with torch.no_grad():
        fr = vgg(real.to(out_feats[TEXTURE_LAYERS[0]].device), list(TEXTURE_LAYERS))
    return sum(relative_mse(gram(out_feats[name].float()), gram(fr[name].float()))
               for name in TEXTURE_LAYERS) / len(TEXTURE_LAYERS)


def add_arguments(p) -> None:
    p.add_argument("--styles", required=True, help="folder of artist sub-folders of paintings")
    p.add_argument("--content", required=True, help="folder of content photos (recursive)")
    p.add_argument("--out", required=True, help="output weight file (.safetensors)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="paper = the paper's sizes; cpu = ours for a 2-core CPU; tiny = tests")
    p.add_argument("--chn", type=int, default=None, help="generator width (preset)")
    p.add_argument("--n-plain", type=int, default=None, help="plain ResBlocks (preset)")
    p.add_argument("--d-chn", type=int, default=None, help="discriminator width (preset)")
    p.add_argument("--decoder-norm", default=None, choices=DECODER_NORMS,
                   help="decoder norm: in (paper), cin or film (ours: conditional on the artist; "
                        "film without normalisation) (preset: cpu film)")
    p.add_argument("--table-lr-mult", type=float, default=None,
                   help="ours: learning-rate multiplier of the artist tables (CIN gamma/beta) "
                        "(preset: cpu 10, paper 1)")
    p.add_argument("--asm-up", default=None, choices=("nearest", "bilinear"),
                   help="ASM x8 upsampling of the coarse stream: nearest (paper) or bilinear "
                        "(ours: no 8 px staircase) (preset)")
    p.add_argument("--size", type=int, default=None, help="crop size (preset)")
    p.add_argument("--batch", type=int, default=None, help="batch (preset)")
    p.add_argument("--load-size", type=int, default=None, help="photo short side before cropping")
    p.add_argument("--style-load-size", type=int, default=256,
                   help="painting short side before cropping (native scale of the sets)")
    p.add_argument("--min-images", type=int, default=20, help="skip artists with fewer paintings")
    p.add_argument("--steps", type=int, default=2000, help="generator steps")
    p.add_argument("--d-steps", type=int, default=None,
                   help="discriminator steps per G step (preset: paper 3, cpu 1)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--feature-weight", type=float, default=50.0, help="style-aware content loss")
    p.add_argument("--transform-weight", type=float, default=50.0)
    p.add_argument("--style-weight", type=float, default=None,
                   help="ours: VGG mean/std loss to the artist's paintings (preset)")
    p.add_argument("--content-weight", type=float, default=None,
                   help="ours: VGG relu4_1 MSE between the photo and its stylisation "
                        f"(preset: cpu {PRESETS['cpu']['content_weight']:g}, "
                        f"paper {PRESETS['paper']['content_weight']:g})")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="ours: keep an exponential moving average of the generator's weights "
                        "(decay per step, 0 = off) and ship it instead of the last step's "
                        "weights (preset: cpu 0.999, paper 0)")
    p.add_argument("--style-grid", type=int, default=None, metavar="G",
                   help="ours: match the style statistics in each cell of a G x G grid "
                        f"(preset: cpu {PRESETS['cpu']['style_grid']}, "
                        f"paper {PRESETS['paper']['style_grid']})")
    p.add_argument("--padding", default=None, choices=PADDINGS,
                   help="generator convolution padding: zeros (paper) or reflect (ours: no "
                        "fixed-position artefacts along the borders) (preset)")
    p.add_argument("--style-target", default=None, choices=("artist", "typical", "painting"),
                   help="ours: style statistics to match: those of the artist's most typical "
                        "painting (typical), the artist's average over all their paintings "
                        "(artist) or the batch's painting of that artist (preset: cpu typical)")
    p.add_argument("--style-space", default=None, choices=("raw", "standardised"),
                   help="ours: compare the style statistics raw (a few large VGG channels rule "
                        "the loss) or standardised (log, z-scored over all paintings: every "
                        "channel by how much it varies between paintings) (preset: raw); "
                        "standardised needs --style-target artist or typical")
    p.add_argument("--texture-weight", type=float, default=0.0,
                   help="ours: weight of a Gram-matrix texture loss (relu1_1..relu3_1, relative "
                        "MSE) to the batch's painting of each output's artist (0 = off)")
    p.add_argument("--warmup", type=int, default=None,
                   help="ours: auto-encoder steps before the GAN (preset)")
    p.add_argument("--classifier", default=None, metavar="FILE",
                   help="ours: an artist classifier on VGG relu1_1..relu4_1 statistics "
                        "(`brushwork train classifier --layers relu1_1,relu2_1,relu3_1,relu4_1`; "
                        "use a different split/seed from the one that judges style accuracy) "
                        "whose cross-entropy on G(x, y) pulls each output toward what tells "
                        "artist y apart from the others")
    p.add_argument("--classifier-weight", type=float, default=0.0,
                   help="ours: weight of the --classifier term (0 = off)")
    p.add_argument("--classifier-scale", default="1,1", metavar="LO,HI",
                   help="ours: the --classifier term sees G's output resized by a random factor "
                        "in [LO, HI] each step (default 1,1: as generated), so that what it "
                        "learns must hold at the scales the classifier judges whole images at")
    p.add_argument("--balance-artists", action="store_true",
                   help="ours: draw each batch's artists uniformly (then one of their paintings) "
                        "instead of each painting equally often, so artists with few paintings "
                        "are trained and discriminated as often as the others")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="ours: start the generator (and its average) from an asma weight file "
                        "(a path or a shipped file name) with the same network and artists; "
                        "the discriminator starts fresh")
    training.add_run_arguments(p, every=100)
    p.add_argument("--fp16", action="store_true", help="store the exported weights as fp16")


def resolve_arguments(args) -> dict:
    """Preset values overlaid with the flags that were given."""
    if args.preset not in PRESETS:
        raise BrushworkError(f"unknown asma preset {args.preset!r}")
    cfg = dict(PRESETS[args.preset])
    for k in ("chn", "n_plain", "d_chn", "size", "batch", "warmup", "style_weight",
              "content_weight", "ema", "style_grid", "padding",
              "style_target", "style_space", "d_steps", "decoder_norm", "table_lr_mult",
              "asm_up"):
        v = getattr(args, k, None)
        if v is not None:
            cfg[k] = v
    if cfg["size"] < 32 or cfg["size"] % 16:
        raise BrushworkError("--size must be a multiple of 16, at least 32")
    if cfg["batch"] < 1 or args.steps < 1 or cfg["d_steps"] < 0 or not args.lr > 0:
        raise BrushworkError("--batch and --steps must be >= 1, --d-steps >= 0, --lr > 0")
    if cfg["style_space"] == "standardised" and cfg["style_target"] == "painting":
        raise BrushworkError("--style-space standardised needs --style-target artist or typical")
    if getattr(args, "texture_weight", 0.0) < 0:
        raise BrushworkError("--texture-weight must be >= 0")
    if args.classifier_weight < 0 or (args.classifier_weight > 0) != bool(args.classifier):
        raise BrushworkError("--classifier and --classifier-weight > 0 go together")
    cfg["classifier_scale"] = parse_scale_range(args.classifier_scale)
    training.check_out_and_threads(args)
    return cfg


def run(args, callback=None) -> dict:
    cfg = resolve_arguments(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = pick_device(args.device)
    args.bf16 = args.bf16 and has_bf16(device)  # bf16 autocast only where it is fast
    size, batch = cfg["size"], cfg["batch"]
    load = args.load_size or max(size, min(512, 2 * size))
    # the cheap checks of --classifier and --init come before minutes of image loading
    artists = list(artist_folders(args.styles, args.min_images))
    clf, clf_index = guidance_classifier(args.classifier, artists, device)
    n = len(artists)
    G, D = build(args.preset, n, chn=cfg["chn"], n_plain=cfg["n_plain"], d_chn=cfg["d_chn"],
                 decoder_norm=cfg["decoder_norm"], asm_up=cfg["asm_up"], padding=cfg["padding"])
    if args.init:
        init_generator(G, args.init, artists)
    G.to(device)
    D.to(device)
    photos = training.load_folder(args.content, load)
    paintings = Paintings(args.styles, max(size, args.style_load_size), args.min_images)
    # ours: the artist tables (CIN gamma/beta) may learn faster than the convolutions; each
    # row only gets a gradient when its artist is in the batch
    tables = [p for n, p in G.named_parameters() if n.endswith((".gamma", ".beta"))]
    others = [p for n, p in G.named_parameters() if not n.endswith((".gamma", ".beta"))]
    opt_g = torch.optim.Adam([{"params": others},
                              {"params": tables, "lr": args.lr * cfg["table_lr_mult"]}],
                             lr=args.lr, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.9, 0.999))
    texture_weight = getattr(args, "texture_weight", 0.0)
    vgg = VGG19(last_layer="relu4_1", device=device, autocast=args.bf16) \
        if cfg["style_weight"] > 0 or cfg["content_weight"] > 0 or clf is not None or \
        texture_weight > 0 else None
    ckpt = training.checkpoint_path(args)
    models, opts = {"generator": G, "discriminator": D}, {"g": opt_g, "d": opt_d}
    # ours: the weights oscillate with the adversarial game (style accuracy moves by +-10
    # points between checkpoints); an average over the last ~1/(1-decay) steps is steadier
    G_ema = None
    if cfg["ema"] > 0:
        G_ema = models["generator_ema"] = copy.deepcopy(G).requires_grad_(False)
    info = training.load_checkpoint(ckpt, models=models, optimizers=opts,
                                    optional=("generator_ema",)) if args.resume else {}
    if G_ema is not None and args.resume and "generator_ema" not in info["models"]:
        G_ema.load_state_dict(G.state_dict())  # resuming a run that had no average yet
    start = info.get("step", 0)
    targets = None
    if cfg["style_weight"] > 0 and cfg["style_target"] in ("artist", "typical"):
        saved = info.get("extra", {}).get("artist_stats")  # a resumed run reuses its targets
        if saved and cfg["style_space"] == "standardised" and \
                not any(k.startswith("mu|") for k in saved):
            saved = None  # saved before the standardised space: recompute, with the moments
        targets = {k: v.to(device) for k, v in saved.items()} if saved else \
            artist_statistics(vgg, paintings, device, typical=cfg["style_target"] == "typical")
    extra = {"artists": list(paintings.artists)}
    if targets is not None:
        extra["artist_stats"] = {k: v.cpu() for k, v in targets.items()}
    warmup, total = cfg["warmup"], cfg["warmup"] + args.steps
    balanced = bool(getattr(args, "balance_artists", False))
    clock, log = Clock(), {}
    G.train()
    D.train()
    for step in range(start, total):
        g = training.step_generator(args.seed, step)
        x = training.sample_batch(photos, size, batch, g).to(device) * 2 - 1
        if step < warmup:  # ours: auto-encoder warm-up (identity reconstruction)
            y = one_hot_styles(torch.randint(n, (batch,), generator=g), n).to(device)
            with autocast(device, args.bf16):
                out = G(x, y)
            loss, log = weighted_sum({"recon": (1.0, F.l1_loss(out.float(), x))})
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
        else:
            log = {}
            for k in range(cfg["d_steps"]):
                gd = training.step_generator(args.seed, step, stream=k + 1)
                xd = training.sample_batch(photos, size, batch, gd).to(device) * 2 - 1
                real, ids = paintings.sample(size, batch, gd, balanced)
                yd = one_hot_styles(ids, n).to(device)
                with torch.no_grad(), autocast(device, args.bf16):
                    fake = G(xd, yd).float()
                # D runs in float32: spectral norm's backward under bf16 autocast gives NaNs.
                d_real = D(real.to(device) * 2 - 1, yd)
                d_neg = D(xd, yd) + D(fake, yd)  # photos and stylisations are both negatives
                d_loss = hinge_d_loss(d_real, d_neg)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                log["d_hinge"] = float(d_loss.detach())
            real, ids = paintings.sample(size, batch, g, balanced)
            y = one_hot_styles(ids, n).to(device)
            with autocast(device, args.bf16):
                out = G(x, y)
                e_out, e_x = G.encode(out)[1], G.encode(x)[1]
            adv = hinge_g_loss(D(out.float(), y))
            terms = {"adv": (args.adv_weight, adv),
                     "feature": (args.feature_weight, F.l1_loss(e_out.float(), e_x.float())),
                     "transform": (args.transform_weight, transform_loss(x, out.float()))}
            if vgg is not None:
                fo = vgg((out.float() + 1) / 2, list(STYLE_LAYERS))
            if cfg["style_weight"] > 0:  # ours: dense VGG statistics signal toward the artist
                terms["style"] = (cfg["style_weight"],
                                  style_term(vgg, out, real, ids.to(device), targets, fo,
                                             cfg["style_grid"], cfg["style_space"]))
            if texture_weight > 0:  # ours: the paintings' texture (Gram matrices)
                terms["texture"] = (texture_weight, texture_term(vgg, fo, real))
            if clf is not None:  # ours: the guidance classifier's cross-entropy on the artist
                lo, hi = cfg["classifier_scale"]
                scale = lo + (hi - lo) * float(torch.rand((), generator=g))
                fc = fo if scale == 1.0 else vgg(F.interpolate(
                    (out.float() + 1) / 2, scale_factor=scale, mode="bilinear",
                    align_corners=False, antialias=scale < 1), list(clf.layers))
                logits = clf(statistics_of(fc, clf.layers))
                terms["classifier"] = (args.classifier_weight,
                                       F.cross_entropy(logits, clf_index[ids].to(device)))
            if cfg["content_weight"] > 0:  # ours: VGG content loss (G's own encoder can drift)
                with torch.no_grad():
                    fx = vgg((x + 1) / 2, [CONTENT_LAYER])[CONTENT_LAYER]
                terms["content"] = (cfg["content_weight"],
                                    F.mse_loss(fo[CONTENT_LAYER].float(), fx.float()))
            loss, g_log = weighted_sum(terms)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            log = {**g_log, **log}
        if G_ema is not None:  # during the warm-up it simply follows G
            update_ema(G_ema, G, cfg["ema"] if step >= warmup else 0.0)
        done = step + 1
        emit(callback, training.train_event("asma", done, total, log, clock(),
                                            message="warmup" if step < warmup else ""))
        if done % args.checkpoint_every == 0 or done == total:
            training.save_checkpoint(ckpt, models=models, optimizers=opts, step=done,
                                     config={**vars(args), **cfg},
                                     extra=extra)
            training.log_line(Path(ckpt).with_suffix(".log.jsonl"),
                              {"step": done, "time": round(clock(), 1), **log})
        if args.sample_every and (done % args.sample_every == 0 or done == total):
            if G_ema is not None:
                with torch.no_grad(), autocast(device, args.bf16):
                    out = G_ema(x, y)
            training.save_grid([(x[:4] + 1) / 2, (out.detach().float()[:4] + 1) / 2],
                               Path(ckpt).with_name(Path(ckpt).stem + f"_sample_{done:06d}.png"))
    final = (G_ema if G_ema is not None else G).eval()
    meta = {"method": "asma", "config": json.dumps(G.config()),
            "artists": json.dumps(paintings.artists), "steps": str(total), "crop": str(size),
            "preset": args.preset, "ema": str(cfg["ema"])}
    sha = save_weights(prefixed_state("generator", final), args.out,
                                fp16=args.fp16, metadata=meta)
    emit(callback, training.train_event("asma", total, total, log, clock(),
                                        message=f"wrote {args.out}", kind="done"))
    return {"out": str(args.out), "sha256": sha, "steps": total, "losses": log,
            "artists": paintings.artists, "seconds": clock()}


def guidance_classifier(path, artists: list[str], device):
    """(classifier, index) for ``--classifier``: the frozen classifier and, per training
    artist, its class index; (None, None) without a path. Its layers must be among
    STYLE_LAYERS (the training step's VGG features are reused) and it must know every artist."""
    if not path:
        return None, None
    clf = ArtistClassifier.load(path)
    extra = [n for n in clf.layers if n not in STYLE_LAYERS]
    if extra:
        raise BrushworkError(f"{path}: classifier uses {', '.join(extra)}; asma's VGG stops at "
                             f"relu4_1 (train it with --layers relu1_1,relu2_1,relu3_1,relu4_1)")
    missing = [a for a in artists if a not in clf.classes]
    if missing:
        raise BrushworkError(f"{path}: classifier does not know {', '.join(missing)}")
    clf.to(device).eval().requires_grad_(False)
    return clf, torch.tensor([clf.classes.index(a) for a in artists])


def parse_scale_range(text: str) -> tuple[float, float]:
    """'1,1.6' -> (1.0, 1.6); one number means a fixed factor."""
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not 0.25 <= vals[0] <= vals[1] <= 4.0:
        raise BrushworkError(f"--classifier-scale: give LO,HI with 0.25 <= LO <= HI <= 4, "
                             f"got {text!r}")
    return vals[0], vals[1]


def init_generator(G: Generator, weights, artists: list[str]) -> None:
    """Load an asma weight file into ``G`` (``--init``): same network config and artists."""
    path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
    state, meta = load_weights(path)
    try:
        cfg, names = json.loads(meta["config"]), json.loads(meta["artists"])
    except (KeyError, ValueError):
        raise BrushworkError(f"{path}: not an asma weight file") from None
    if names != list(artists):
        raise BrushworkError(f"{path}: trained on artists {names}, this run has {artists}")
    if {**cfg, "n_styles": len(artists)} != G.config():
        raise BrushworkError(f"{path}: network {cfg} differs from this run's {G.config()}")
    load_prefixed(G, "generator", state, source=str(path))


def update_ema(avg: nn.Module, model: nn.Module, decay: float) -> None:
    """``avg <- decay * avg + (1 - decay) * model`` for parameters; buffers are copied."""
    with torch.no_grad():
        for a, p in zip(avg.parameters(), model.parameters()):
            a.lerp_(p, 1.0 - decay)
        for a, b in zip(avg.buffers(), model.buffers()):
            a.copy_(b)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the generator of a training checkpoint as a weight file (what ``run`` writes at
    its end); returns its sha256. Ships a model from a run stopped before its last step."""
    probe = training.load_checkpoint(checkpoint, models={})  # its config and artist names
    cfg = probe["config"]
    artists = probe["extra"].get("artists") or \
        list(artist_folders(cfg["styles"], int(cfg.get("min_images", 20))))
    G = Generator.from_config({**cfg, "n_styles": len(artists)})
    which = "generator_ema" if "generator_ema" in probe["models"] else "generator"
    step = training.load_checkpoint(checkpoint, models={which: G})["step"]
    meta = {"method": "asma", "config": json.dumps(G.config()), "artists": json.dumps(artists),
            "steps": str(step), "crop": str(cfg.get("size")), "preset": str(cfg.get("preset")),
            "ema": str(cfg.get("ema", 0.0)) if which == "generator_ema" else "0.0",
            **(extra_meta or {})}
    return save_weights(prefixed_state("generator", G.eval()), out, fp16=fp16,
                                 metadata=meta)

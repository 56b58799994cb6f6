"""`brushwork train ctb`: per-artist content-transformation-block models (Kotovenko et al. 2019).

The artists' models share one checkpoint. The first ``--warmup`` steps train artist 0's encoder
and decoder as an auto-encoder (L1 reconstruction); they are then copied into every artist's
model. After that the artists take one step each in turn (round robin; ``--steps`` steps per
artist), and each model alternates the paper's two steps:

* step "ed" (E, D; T left out): out = D(E(x)); hinge loss of the style discriminator D_s
  (paintings of the artist positive, ``out`` and the photo negative) and
  ``--adv-weight`` x D_s's generator loss + ``--fixpoint-weight`` x ||E(out) - E(x)||^2 +
  ``--transform-weight`` x the transformed-image loss + ``--style-weight`` x the VGG mean/std
  loss to the batch's painting (ours);
* step "t" (T, D; E frozen): a content class c is drawn; photo x and painting y of class c;
  t = T(E(x)), out = D(t); hinge loss of the content discriminator D_c (E(y) positive, t
  negative, both given c) and of D_s, and ``--content-adv-weight`` x D_c's generator loss +
  the "ed" terms with the fixpoint around t: ||E(out) - t||^2.

Content classes: k-means (``--classes``) over the channel means of VGG19 relu4_1 features of
thumbnails (short side ``--class-size``) of the photos and paintings together
(:func:`content_classes`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from ..core.blocks import hinge_d_loss, hinge_g_loss
from ..core.device import has_bf16, pick_device
from ..core.losses import mean_std_distance, weighted_sum
from ..core.protocol import Clock, emit
from ..core.regions import kmeans
from ..core.vgg import LAYER_CHANNELS, VGG19
from ..core.weights import prefixed_state, save_weights
from ..errors import BrushworkError
from ..eval.classifier import artist_folders
from ..methods.ctb import (Generator, fixpoint_loss, latent_channels, transform_loss,
                           weight_metadata)
from . import common as training

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CLASS_LAYER = "relu4_1"

PRESETS = {
    # chn, n_down, n_res: generator; d_chn: discriminators; size: crop; batch; warmup: shared
    # auto-encoder steps; style_weight/style_layers: ours, the VGG mean/std term
    "paper": dict(chn=32, n_down=4, n_res=9, d_chn=64, size=768, batch=1, warmup=0,
                  fixpoint_weight=100.0, transform_weight=100.0,
                  style_weight=0.0, style_layers="relu1_1,relu2_1,relu3_1,relu4_1"),
    "cpu": dict(chn=16, n_down=3, n_res=4, d_chn=16, size=128, batch=1, warmup=200,
                fixpoint_weight=10.0, transform_weight=100.0,
                style_weight=1e-3, style_layers="relu1_1,relu2_1,relu3_1"),
    "tiny": dict(chn=4, n_down=2, n_res=1, d_chn=4, size=32, batch=1, warmup=0,
                 fixpoint_weight=100.0, transform_weight=100.0,
                 style_weight=0.0, style_layers="relu1_1,relu2_1"),
}


# ------------------------------------------------------------------------------ discriminators
class StyleDiscriminator(nn.Module):
    """D_s: four spectral-normalised 4x4 stride-2 convolutions (LeakyReLU 0.2) and a 3x3 conv
    to one logit per patch. Images in [0, 1]."""

    def __init__(self, chn: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        widths = [3, chn, 2 * chn, 4 * chn, 8 * chn]
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, sn(nn.Conv2d(widths[-1], 1, 3, 1, 1)))

    def forward(self, x):
        return [self.body(x * 2 - 1).flatten(1)]


class ContentDiscriminator(nn.Module):
    """D_c on a latent, conditioned on the content class: two spectral-normalised convolutions
    (3x3, then 3x3 stride 2), global average pooling -> phi; logit = linear(phi) +
    <embed[c], phi> (projection)."""

    def __init__(self, c_latent: int, n_classes: int, chn: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.body = nn.Sequential(sn(nn.Conv2d(c_latent, 2 * chn, 3, 1, 1)), nn.LeakyReLU(0.2),
                                  sn(nn.Conv2d(2 * chn, 2 * chn, 3, 2, 1)), nn.LeakyReLU(0.2))
        self.linear = sn(nn.Linear(2 * chn, 1))
        self.embed = nn.Embedding(n_classes, 2 * chn)
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, z, cls):
        phi = self.body(z).mean((2, 3))
        return [self.linear(phi).squeeze(1) + (self.embed(cls) * phi).sum(1)]


# ------------------------------------------------------------------------------- content classes
@torch.no_grad()
def class_features(vgg: VGG19, images: list[torch.Tensor], size: int) -> torch.Tensor:
    """(N, C) channel means of relu4_1 of each uint8 image scaled to short side ``size``,
    divided by their norm."""
    rows = []
    for img in images:
        x = img[None].float() / 255
        s = size / min(x.shape[-2:])
        x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                          antialias=s < 1)
        f = vgg(x.to(vgg.device), [CLASS_LAYER])[CLASS_LAYER].float().mean((2, 3))[0]
        rows.append(f / f.norm().clamp_min(1e-8))
    return torch.stack(rows).cpu()


def content_classes(features: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Content class of every row of ``features`` (N, D): seeded k-means labels (long, N)."""
    if k < 1:
        raise BrushworkError("--classes must be at least 1")
    if k == 1:
        return torch.zeros(features.shape[0], dtype=torch.long)
    return kmeans(features, min(k, features.shape[0]), seed=seed)[1].long().cpu()


# ------------------------------------------------------------------------------------ arguments
def add_arguments(p) -> None:
    training.add_artist_arguments(p)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="paper = the paper's sizes; cpu = ours for a 2-core CPU; tiny = tests")
    p.add_argument("--chn", type=int, default=None, help="generator width (preset)")
    p.add_argument("--n-down", type=int, default=None, help="stride-2 downsamplings (preset)")
    p.add_argument("--n-res", type=int, default=None,
                   help="residual blocks of the content transformation block (preset)")
    p.add_argument("--d-chn", type=int, default=None, help="discriminator width (preset)")
    p.add_argument("--size", type=int, default=None, help="crop size (preset)")
    p.add_argument("--batch", type=int, default=None, help="batch (preset)")
    p.add_argument("--load-size", type=int, default=None,
                   help="photo short side before cropping (default 2 x size, at most 512)")
    p.add_argument("--style-load-size", type=int, default=256,
                   help="painting short side before cropping")
    p.add_argument("--steps", type=int, default=1000, help="training steps per artist")
    p.add_argument("--warmup", type=int, default=None,
                   help="ours: shared auto-encoder steps before the artists' training (preset)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--adv-weight", type=float, default=1.0, help="style discriminator term")
    p.add_argument("--content-adv-weight", type=float, default=1.0,
                   help="content discriminator term (step t)")
    p.add_argument("--fixpoint-weight", type=float, default=None,
                   help="fixpoint loss (preset: paper 100, cpu 10)")
    p.add_argument("--transform-weight", type=float, default=None,
                   help="transformed-image loss, 10 x 10 average pools (preset: 100)")
    p.add_argument("--style-weight", type=float, default=None,
                   help="ours: VGG mean/std loss to the batch's painting (preset)")
    p.add_argument("--style-layers", default=None,
                   help="ours: VGG19 layers of the --style-weight term, comma-separated (preset)")
    p.add_argument("--classes", type=int, default=4,
                   help="content classes (k-means clusters of VGG relu4_1 means)")
    p.add_argument("--class-size", type=int, default=64,
                   help="thumbnail short side for the content classes")
    training.add_run_arguments(p, every=200)
    p.add_argument("--fp16", action="store_true", help="store the exported weights as fp16")


def resolve_arguments(args) -> dict:
    cfg = dict(PRESETS[args.preset])
    for k in ("chn", "n_down", "n_res", "d_chn", "size", "batch", "warmup", "style_weight",
              "style_layers", "fixpoint_weight", "transform_weight"):
        v = getattr(args, k, None)
        if v is not None:
            cfg[k] = v
    m = 2 ** cfg["n_down"]
    if cfg["size"] < 2 * m or cfg["size"] % m:
        raise BrushworkError(f"--size must be a multiple of {m}, at least {2 * m}")
    if cfg["batch"] < 1 or args.steps < 1 or cfg["warmup"] < 0 or not args.lr > 0:
        raise BrushworkError("--batch and --steps must be >= 1, --warmup >= 0, --lr > 0")
    for name in ("adv_weight", "content_adv_weight", "fixpoint_weight", "transform_weight"):
        if not (cfg[name] if name in cfg else getattr(args, name)) >= 0:
            raise BrushworkError(f"--{name.replace('_', '-')} must be zero or positive")
    if not cfg["style_weight"] >= 0:
        raise BrushworkError("--style-weight must be zero or positive")
    layers = [x.strip() for x in str(cfg["style_layers"]).split(",") if x.strip()]
    if not layers or any(x not in LAYER_CHANNELS for x in layers):
        raise BrushworkError(f"--style-layers {cfg['style_layers']!r}: give VGG19 layer names "
                             f"such as relu1_1,relu2_1")
    cfg["style_layers"] = ",".join(layers)
    if args.classes < 1 or args.class_size < 16:
        raise BrushworkError("--classes must be >= 1 and --class-size >= 16")
    training.check_out_and_threads(args)
    return cfg


def pick_artists(args) -> list[str]:
    if args.artists:
        names = [a.strip() for a in str(args.artists).split(",") if a.strip()]
        root = Path(args.styles)
        missing = [a for a in names if not (root / a).is_dir()]
        if missing:
            raise BrushworkError(f"--artists: no folder {', '.join(missing)} in {root}")
        if len(set(names)) != len(names) or not names:
            raise BrushworkError("--artists: give distinct artist folder names")
        return names
    return list(artist_folders(args.styles, args.min_images))


# ------------------------------------------------------------------------------------- training
class Models:
    """Every artist's generator, style and content discriminators and their optimizers."""

    def __init__(self, artists, cfg, n_classes, lr):
        self.artists = list(artists)
        self.g = {a: Generator(cfg["chn"], cfg["n_down"], cfg["n_res"]) for a in artists}
        c_lat = latent_channels(cfg["chn"], cfg["n_down"])
        self.ds = {a: StyleDiscriminator(cfg["d_chn"]) for a in artists}
        self.dc = {a: ContentDiscriminator(c_lat, n_classes, cfg["d_chn"]) for a in artists}
        betas = (0.5, 0.999)
        self.opt = {}
        for a in artists:
            self.opt[f"{a}/g"] = torch.optim.Adam(self.g[a].parameters(), lr=lr, betas=betas)
            self.opt[f"{a}/ds"] = torch.optim.Adam(self.ds[a].parameters(), lr=lr, betas=betas)
            self.opt[f"{a}/dc"] = torch.optim.Adam(self.dc[a].parameters(), lr=lr, betas=betas)

    def modules(self) -> dict[str, nn.Module]:
        out = {}
        for a in self.artists:
            out.update({f"{a}/g": self.g[a], f"{a}/ds": self.ds[a], f"{a}/dc": self.dc[a]})
        return out

    def to(self, device):
        for m in self.modules().values():
            m.to(device)
        return self


def _step(opt, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def schedule(step: int, warmup: int, n: int) -> tuple[str, int]:
    """(phase, artist index) of global step ``step``: ("warmup", 0) for the first ``warmup``
    steps, then the artists in turn, each alternating "ed" and "t"."""
    if step < warmup:
        return "warmup", 0
    k = step - warmup
    return ("ed" if (k // n) % 2 == 0 else "t"), k % n


class Data:
    """Photos, each artist's paintings and everyone's content classes."""

    def __init__(self, photos, paintings, photo_cls, painting_cls, n_classes):
        self.photos, self.paintings = photos, paintings
        self.photo_cls, self.painting_cls, self.n_classes = photo_cls, painting_cls, n_classes
        # per artist, the classes that have both photos and paintings of the artist
        have = set(photo_cls.tolist())
        self.shared = {a: sorted(have & set(painting_cls[a].tolist())) for a in paintings}

    def photo_batch(self, size, batch, g, cls=None):
        imgs = self.photos if cls is None else \
            [p for p, c in zip(self.photos, self.photo_cls.tolist()) if c == cls]
        return training.sample_batch(imgs, size, batch, g)

    def painting_batch(self, artist, size, batch, g, cls=None):
        imgs = self.paintings[artist] if cls is None else \
            [p for p, c in zip(self.paintings[artist], self.painting_cls[artist].tolist())
             if c == cls]
        return training.sample_batch(imgs, size, batch, g)

    def draw_class(self, artist, g) -> int | None:
        shared = self.shared[artist]
        if not shared:
            return None
        return shared[int(torch.randint(len(shared), (1,), generator=g))]


def load_data(args, artists, cfg, device, vgg, saved=None) -> Data:
    exclude = training.read_exclude(args.exclude)
    load = args.load_size or max(cfg["size"], min(512, 2 * cfg["size"]))
    photos = training.load_folder(args.content, load, exclude=exclude)
    paintings = {a: training.load_folder(Path(args.styles) / a,
                                         max(cfg["size"], args.style_load_size),
                                         exclude=exclude) for a in artists}
    if saved is not None:  # a resumed run keeps its classes
        photo_cls = saved["photo"]
        painting_cls = {a: saved[f"painting:{a}"] for a in artists}
        if len(photo_cls) != len(photos) or any(len(painting_cls[a]) != len(paintings[a])
                                                for a in artists):
            raise BrushworkError("--resume: the image folders changed since the checkpoint")
        return Data(photos, paintings, photo_cls, painting_cls, args.classes)
    feats = [class_features(vgg, photos, args.class_size)]
    feats += [class_features(vgg, paintings[a], args.class_size) for a in artists]
    labels = content_classes(torch.cat(feats), args.classes, args.seed)
    counts = [len(photos)] + [len(paintings[a]) for a in artists]
    parts = list(torch.split(labels, counts))
    return Data(photos, paintings, parts[0], dict(zip(artists, parts[1:])), args.classes)


def style_term(vgg, out, real, layers=STYLE_LAYERS):
    """Mean/std distance at VGG19 ``layers`` between the stylisation and the painting."""
    fo = vgg(out, list(layers))
    with torch.no_grad():
        fr = vgg(real, list(layers))
    return mean_std_distance(fo, fr, layers)


def train_step(models: Models, data: Data, phase: str, artist: str, args, cfg, g, device,
               vgg=None) -> dict[str, float]:
    """One step of one artist's model (``phase``: warmup, ed or t); returns its losses."""
    G, Ds, Dc = models.g[artist], models.ds[artist], models.dc[artist]
    size, batch = cfg["size"], cfg["batch"]
    if phase == "warmup":
        x = data.photo_batch(size, batch, g).to(device)
        loss, log = weighted_sum({"recon": (1.0, F.l1_loss(G.decode(G.encode(x)), x))})
        _step(models.opt[f"{artist}/g"], loss)
        return log
    cls = data.draw_class(artist, g) if phase == "t" else None
    if phase == "t" and cls is None:
        phase = "ed"  # no class with both photos and paintings of this artist
    x = data.photo_batch(size, batch, g, cls).to(device)
    y = data.painting_batch(artist, size, batch, g, cls).to(device)
    log = {}
    if phase == "ed":
        z = G.encode(x)
        target = z
        out = G.decode(z)
    else:
        with torch.no_grad():
            z = G.encode(x)
        target = G.transformed(z)
        out = G.decode(target)
        c = torch.full((batch,), cls, dtype=torch.long, device=device)
        with torch.no_grad():
            zy = G.encode(y)
        dc_loss = hinge_d_loss(Dc(zy, c), Dc(target.detach(), c))
        _step(models.opt[f"{artist}/dc"], dc_loss)
        log["dc_hinge"] = float(dc_loss.detach())
    ds_loss = hinge_d_loss(Ds(y), Ds(out.detach()) + Ds(x))
    _step(models.opt[f"{artist}/ds"], ds_loss)
    log["ds_hinge"] = float(ds_loss.detach())
    terms = {"adv": (args.adv_weight, hinge_g_loss(Ds(out))),
             "transform": (cfg["transform_weight"], transform_loss(x, out))}
    if phase == "ed":
        terms["fixpoint"] = (cfg["fixpoint_weight"], fixpoint_loss(z, G.encode(out)))
    else:  # E frozen: its weights get no gradient, the image through it does
        E = G.encoder
        E.requires_grad_(False)
        try:
            terms["fixpoint"] = (cfg["fixpoint_weight"], fixpoint_loss(target, G.encode(out)))
        finally:
            E.requires_grad_(True)
        terms["content_adv"] = (args.content_adv_weight, hinge_g_loss(Dc(target, c)))
    if cfg["style_weight"] > 0 and vgg is not None:
        terms["style"] = (cfg["style_weight"], style_term(vgg, out, y, cfg["style_layers"].split(",")))
    loss, g_log = weighted_sum(terms)
    if not torch.isfinite(loss):
        raise BrushworkError("training diverged (loss is not finite); lower --lr")
    _step(models.opt[f"{artist}/g"], loss)
    if phase == "t":  # the encoder's gradients (none are taken) must not linger
        for p in G.encoder.parameters():
            p.grad = None
    return {**g_log, **log}


def _copy_warm_start(models: Models) -> None:
    """The warmed-up encoder and decoder of artist 0 into every other artist's model."""
    src = models.g[models.artists[0]]
    for a in models.artists[1:]:
        models.g[a].encoder.load_state_dict(src.encoder.state_dict())
        models.g[a].decoder.load_state_dict(src.decoder.state_dict())


def run(args, callback=None) -> dict:
    cfg = resolve_arguments(args)
    artists = pick_artists(args)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    ckpt = training.checkpoint_path(args)
    saved_extra = {}
    if args.resume:
        blob_cfg = training.load_checkpoint_config(ckpt)
        if blob_cfg.get("artists_list") and blob_cfg["artists_list"] != artists:
            raise BrushworkError(f"--resume: the checkpoint trains {blob_cfg['artists_list']}, "
                                 f"this run {artists}")
        saved_extra = torch.load(ckpt, map_location="cpu", weights_only=True).get("extra", {})
    bf16 = args.bf16 and has_bf16(device)
    classes = saved_extra.get("classes")
    data = load_data(args, artists, cfg, device,
                     None if classes else VGG19(last_layer=CLASS_LAYER, device=device,
                                                autocast=bf16), classes)
    layers = cfg["style_layers"].split(",")
    vgg = VGG19(last_layer=max(layers, key=list(LAYER_CHANNELS).index), device=device,
                autocast=bf16) if cfg["style_weight"] > 0 else None
    models = Models(artists, cfg, args.classes, args.lr).to(device)
    info = training.load_checkpoint(ckpt, models=models.modules(), optimizers=models.opt,
                                    lr=args.lr) if args.resume else {}
    start = info.get("step", 0)
    n, warmup = len(artists), cfg["warmup"]
    total = warmup + args.steps * n
    extra = {"artists": artists,
             "classes": {"photo": data.photo_cls,
                         **{f"painting:{a}": data.painting_cls[a] for a in artists}}}
    config = {**{k: v for k, v in vars(args).items() if k != "func"}, **cfg,
              "artists_list": artists}
    fixed = training.sample_batch(data.photos, cfg["size"], 2,
                                  training.step_generator(args.seed, 0, 9)).to(device)
    clock, log = Clock(), {}
    for step in range(start, total):
        phase, i = schedule(step, warmup, n)
        g = training.step_generator(args.seed, step)
        for m in models.modules().values():
            m.train()
        log = train_step(models, data, phase, artists[i], args, cfg, g, device, vgg)
        if warmup and step == warmup - 1:
            _copy_warm_start(models)
        done = step + 1
        emit(callback, training.train_event("ctb", done, total, log, clock(),
                                            message=f"{phase} {artists[i]}"))
        if done % args.checkpoint_every == 0 or done == total:
            training.save_checkpoint(ckpt, models=models.modules(), optimizers=models.opt,
                                     step=done, config=config, extra=extra)
            training.log_line(Path(ckpt).with_suffix(".log.jsonl"),
                              {"step": done, "time": round(clock(), 1), "phase": phase,
                               "artist": artists[i], **log})
        if args.sample_every and (done % args.sample_every == 0 or done == total):
            rows = [fixed]
            with torch.no_grad():
                for a in artists:
                    models.g[a].eval()
                    rows.append(models.g[a](fixed))
            training.save_grid(rows, Path(ckpt).with_name(Path(ckpt).stem +
                                                          f"_sample_{done:06d}.png"))
    sha = write_weights(models.g, artists, cfg, total, args.out, fp16=args.fp16)
    emit(callback, training.train_event("ctb", total, total, log, clock(),
                                        message=f"wrote {args.out}", kind="done"))
    return {"out": str(args.out), "sha256": sha, "steps": total, "losses": log,
            "artists": artists, "seconds": clock()}


def write_weights(gens: dict[str, Generator], artists, cfg: dict, step: int, out, *,
                  fp16: bool, extra_meta: dict | None = None) -> str:
    state = {}
    for a in artists:
        state.update(prefixed_state(a, gens[a].eval()))
    net_cfg = {k: int(cfg[k]) for k in ("chn", "n_down", "n_res")}
    meta = weight_metadata(artists, net_cfg, steps=step, crop=cfg.get("size"),
                           preset=cfg.get("preset", ""), **(extra_meta or {}))
    return save_weights(state, out, fp16=fp16, metadata=meta)


def export(checkpoint, out, *, fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the generators of a training checkpoint as a ctb weight file (what ``run`` writes
    at its end); returns its sha256. Ships a model from a run stopped before its last step."""
    cfg = training.load_checkpoint_config(checkpoint)
    artists = cfg.get("artists_list")
    if not artists:
        raise BrushworkError(f"{checkpoint}: not a ctb training checkpoint")
    gens = {a: Generator(int(cfg["chn"]), int(cfg["n_down"]), int(cfg["n_res"]))
            for a in artists}
    info = training.load_checkpoint(checkpoint, models={f"{a}/g": gens[a] for a in artists})
    return write_weights(gens, artists, cfg, info["step"], out, fp16=fp16,
                         extra_meta=extra_meta)

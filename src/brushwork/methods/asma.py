"""ASMA-GAN (Chen et al., ACM MM 2020), "Anisotropic Stroke Control for Multiple Artists Style
Transfer": one generator paints a photo in the manner of any of N artists, chosen by a label.

Generator (``paper`` preset: chn=32, 7 plain + 1 conditional ResBlock, ~11.9M parameters):
encoder1 (3 -> chn -> 2chn, 1/2 resolution: ``f``), encoder2 (three stride-2 convs to 8chn at
1/16: the latent ``z``), a ResBlock trunk ending in a conditional ResBlock (CIN on the artist),
the anisotropic stroke module (ASM) fusing the trunk output with ``f``, and a decoder; tanh
output in [-1, 1] (the method returns [0, 1]). Discriminator: one spectral-normalised conv stack
with projection heads at 1/4, 1/16 and 1/64. Losses: hinge GAN (photos are negatives too),
style-aware content loss L1(E(G(x)), E(x)) on the generator's own encoder, transform loss
MSE(T(x), T(G(x))) with T = AvgPool2d(10, 1, 4); 3 D steps per G step; Adam 2e-4 (0.9, 0.999).

Our additions (not in the paper):

* **Stroke control.** The ASM's update gate z decides, per channel, how much of the fused fine
  stream (h^, built from the 1/2-resolution encoder features) replaces the coarse stylised
  stream (x_t, the 1/16 trunk upsampled x8). Large z = fine, small strokes; small z = the
  coarse stream's large strokes. The ``stroke`` control reshapes the learned gate as
  z ** stroke: stroke = 1 is the model as trained, stroke = 2 pushes every gate toward
  the coarse stream (larger strokes), 0.5 toward fine detail (smaller strokes). With
  ``stroke_mask`` (white = apply ``stroke``, black = as trained, grey = in between, in the
  exponent) the exponent becomes a per-pixel map, so stroke size varies by region.
* **Training within CPU means** (preset ``cpu``; each also a flag): ``--warmup N`` first trains
  the generator as an auto-encoder (L1 reconstruction) for N steps; ``--style-weight W`` adds a
  VGG mean/std loss (relu1_1..relu4_1) between G(x, y) and the statistics of artist y's most
  typical painting (``--style-target typical``, the cpu preset since session 6; the average of
  all their paintings, ``artist``, is a washed-out palette that matches none of them) or the
  batch's painting of y (``painting``), a dense signal long before the discriminator is
  informative; ``--decoder-norm film`` conditions the decoder on the
  artist with a per-artist scale/shift and no normalisation (the paper's IN erases the artist
  statistics the trunk sets; conditional IN shows IN "droplet" blobs); ``--table-lr-mult``
  speeds up the artist tables; ``--asm-up bilinear`` removes the 8 px staircase of the nearest
  x8 upsampling; ``--d-steps 1``; ``--content-weight`` a VGG relu4_1 content term (G's own
  encoder features drift with G); ``--style-grid 2`` matches the statistics per cell of a 2x2
  split and ``--padding reflect`` hides the borders (together they remove a fixed-position blob
  artefact); ``--ema`` ships a moving average of the generator's weights.
  docs/multistyle.md gives the runs that motivated each.

    brushwork train asma --styles DIR_OF_ARTIST_FOLDERS --content DIR --out F.safetensors
    brushwork stylize photo.jpg -m asma --artist claude_monet --stroke 2 --stroke-mask sky.png
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from .. import training
from ._feedforward import has_bf16
from ..blocks import (AnisotropicStrokeModule, ConditionalAffine, ConditionalInstanceNorm2d,
                      ConditionalResBlock, ProjectionDiscriminator, hinge_d_loss, hinge_g_loss,
                      one_hot_styles)
from ..classifier import ArtistClassifier, artist_folders, statistics_of
from ..errors import BrushworkError, ControlError
from ..image import load_mask
from ..losses import mean_std, weighted_sum
from ..protocol import Clock, Control, Progress, emit, resolve_controls
from ..vgg import LAYER_CHANNELS, VGG19
from ..shipped import load_weights, resolve_weights
from .cin import mix_vector, parse_style_id

SHIPPED_FILE = "asma_artists.safetensors"
TRAIN_HINT = "brushwork train asma --styles DIR --content DIR --out F.safetensors"

PRESETS = {
    # name: generator chn, plain ResBlocks, discriminator chn, crop, batch, extras
    "paper": dict(chn=32, n_plain=7, d_chn=32, size=256, batch=8, warmup=0, style_weight=0.0,
                  content_weight=0.0, ema=0.0, style_target="painting", style_grid=1, d_steps=3,
                  style_space="raw", decoder_norm="in", table_lr_mult=1.0, asm_up="nearest",
                  padding="zeros"),
    # cpu: session 6: each artist's most typical painting as the target, whole-image
    # statistics (style accuracy 58.8 % at 3000 steps vs 38.8 % with the average target and a
    # 2 x 2 grid); the shipped file is this preset to step 8000, then --style-weight 2e-3 to
    # 12000 (92.5 %; docs/multistyle.md, session 7)
    "cpu": dict(chn=16, n_plain=3, d_chn=16, size=128, batch=4, warmup=200, style_weight=1e-3,
                content_weight=1e-4, ema=0.999, style_target="typical", style_grid=1, d_steps=1,
                style_space="raw", decoder_norm="film", table_lr_mult=10.0, asm_up="bilinear",
                padding="reflect"),
    "tiny": dict(chn=4, n_plain=1, d_chn=4, size=32, batch=2, warmup=0, style_weight=0.0,
                 content_weight=0.0, ema=0.0, style_target="painting", style_grid=1, d_steps=3,
                 style_space="raw", decoder_norm="in", table_lr_mult=1.0, asm_up="nearest",
                 padding="zeros"),
}

ARTIST = Control("artist", "str", "0",
                 "artist of a multi-artist model: a name (prefix) or index, or a blend "
                 "'monet:0.5,van_gogh:0.5' of their label codes")
STROKE = Control("stroke", "float", 1.0,
                 "stroke size relative to the trained model: >1 larger strokes, <1 smaller "
                 "(reshapes the ASM update gate); with stroke_mask only where the mask is white",
                 low=0.25, high=4.0)
STROKE_MASK = Control("stroke_mask", "images", None,
                      "one mask image: white = apply --stroke there, black = as trained")


# ------------------------------------------------------------------------------------- network
def _conv_in_lrelu(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.InstanceNorm2d(c_out, affine=True), nn.LeakyReLU(0.01))


DECODER_NORMS = ("in", "cin", "film")
PADDINGS = ("zeros", "reflect")


class _Up(nn.Module):
    """Nearest x2, conv3x3, norm, LeakyReLU. ``norm``: "in" = instance norm (the paper);
    ours: "cin" = conditional instance norm on the artist (the decoder can set each artist's
    channel statistics, which a plain IN normalises away after the conditional trunk);
    "film" = the conditional scale/shift without normalisation (no IN "droplet" blobs)."""

    def __init__(self, c_in, c_out, n_styles: int, norm: str = "in"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=norm == "film")
        self.norm = {"in": lambda: nn.InstanceNorm2d(c_out, affine=True),
                     "cin": lambda: ConditionalInstanceNorm2d(c_out, n_styles),
                     "film": lambda: ConditionalAffine(c_out, n_styles)}[norm]()

    def forward(self, x, style):
        x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.norm(x) if isinstance(self.norm, nn.InstanceNorm2d) else self.norm(x, style)
        return F.leaky_relu(x, 0.01)


class _PlainRes(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), nn.InstanceNorm2d(c, affine=True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.body(x)


class Generator(nn.Module):
    """``forward(x, style, stroke=None)``: x (B, 3, H, W) in [-1, 1] with H, W multiples of 16,
    style (B, N) one-hot or mixing rows; returns (B, 3, H, W) in [-1, 1]."""

    def __init__(self, n_styles: int, chn: int = 32, n_plain: int = 7, decoder_norm: str = "in",
                 asm_up: str = "nearest", padding: str = "zeros"):
        super().__init__()
        self.n_styles, self.chn, self.n_plain = n_styles, chn, n_plain
        if decoder_norm not in DECODER_NORMS:
            raise BrushworkError(f"unknown asma decoder norm {decoder_norm!r}")
        if padding not in PADDINGS:
            raise BrushworkError(f"unknown asma padding {padding!r}")
        self.decoder_norm, self.asm_up, self.padding = decoder_norm, asm_up, padding
        k, dn = n_styles, decoder_norm
        self.encoder1 = nn.Sequential(_conv_in_lrelu(3, chn), _conv_in_lrelu(chn, 2 * chn, 2))
        self.encoder2 = nn.Sequential(_conv_in_lrelu(2 * chn, 4 * chn, 2),
                                      _conv_in_lrelu(4 * chn, 8 * chn, 2),
                                      _conv_in_lrelu(8 * chn, 8 * chn, 2))
        self.trunk = nn.Sequential(*[_PlainRes(8 * chn) for _ in range(n_plain)])
        self.cond = ConditionalResBlock(8 * chn, n_styles)
        self.asm = AnisotropicStrokeModule(8 * chn, 2 * chn, n_styles, up=8, mode=asm_up)
        self.decoder1 = nn.ModuleList([_Up(8 * chn, 8 * chn, k, dn), _Up(8 * chn, 4 * chn, k, dn),
                                       _Up(4 * chn, 2 * chn, k, dn)])
        self.decoder2 = _Up(4 * chn, chn, k, dn)
        self.to_rgb = nn.Conv2d(chn, 3, 3, 1, 1)
        if padding == "reflect":  # ours: zero borders tell the net where it is in the image
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
                    m.padding_mode = "reflect"

    def config(self) -> dict:
        return {"n_styles": self.n_styles, "chn": self.chn, "n_plain": self.n_plain,
                "decoder_norm": self.decoder_norm, "asm_up": self.asm_up,
                "padding": self.padding}

    @classmethod
    def from_config(cls, cfg: dict) -> "Generator":
        return cls(int(cfg["n_styles"]), int(cfg["chn"]), int(cfg["n_plain"]),
                   str(cfg.get("decoder_norm") or ("cin" if cfg.get("cond_decoder") else "in")),
                   str(cfg.get("asm_up", "nearest")), str(cfg.get("padding", "zeros")))

    def encode(self, x):
        """The generator's own encoder E (used by the style-aware content loss)."""
        f = self.encoder1(x)
        return f, self.encoder2(f)

    def forward(self, x, style, stroke=None, return_gates: bool = False):
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise BrushworkError(f"asma generator needs sides that are multiples of 16, got "
                                 f"{tuple(x.shape[-2:])}")
        f, z = self.encode(x)
        s = self.cond(self.trunk(z), style)
        label = 2 * style - 1  # +1 at the target artist, -1 elsewhere (soft for blends)
        h, r, gate = self.asm(s, f, label, stroke)
        d = s
        for up in self.decoder1:
            d = up(d, style)
        out = torch.tanh(self.to_rgb(self.decoder2(torch.cat([d, h], 1), style)))
        return (out, r, gate) if return_gates else out


def transform_loss(x, y):
    """MSE between AvgPool2d(10, stride 1, pad 4) of the photo and of its stylisation."""
    t = nn.functional.avg_pool2d
    return F.mse_loss(t(x, 10, 1, 4), t(y, 10, 1, 4))


def build(preset: str, n_styles: int, **overrides) -> tuple[Generator, ProjectionDiscriminator]:
    if preset not in PRESETS:
        raise BrushworkError(f"unknown asma preset {preset!r} (choose {', '.join(PRESETS)})")
    cfg = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return (Generator(n_styles, cfg["chn"], cfg["n_plain"], cfg["decoder_norm"],
                      cfg["asm_up"], cfg["padding"]),
            ProjectionDiscriminator(n_styles, cfg["d_chn"]))


# ------------------------------------------------------------------------------------ inference
def pad16(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class Asma:
    name = "asma"
    summary = "ASMA-GAN (Chen et al. 2020): multi-artist generator, --artist, stroke control"
    needs_style = False
    controls = {c.name: c for c in (ARTIST, STROKE, STROKE_MASK)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"asma: unknown option(s) {', '.join(sorted(options))}")
        self.device = training.pick_device(device)
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        state, meta = load_weights(path)
        try:
            cfg = json.loads(meta["config"])
            self.artists = json.loads(meta["artists"])
            self.net = Generator.from_config(cfg)
        except (KeyError, ValueError):
            raise BrushworkError(f"{path}: not an asma weight file") from None
        training.load_prefixed(self.net, "generator", state, source=str(path))
        self.net.to(self.device).eval().requires_grad_(False)
        self.bf16 = bf16 and has_bf16(self.device)

    def labels(self) -> list[str]:
        return list(self.artists)

    def render_all(self, content, controls=None) -> list[torch.Tensor]:
        return [self.stylize(content, controls={**(controls or {}), "artist": str(i)})
                for i in range(len(self.artists))]

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c = resolve_controls(self.name, self.controls, controls)
        clock = Clock()
        style = mix_vector(parse_style_id(c["artist"], self.artists, "artist"),
                           len(self.artists))
        stroke = c["stroke"]
        if c["stroke_mask"]:
            if len(c["stroke_mask"]) != 1:
                raise ControlError("asma: give one stroke_mask")
            m = load_mask(c["stroke_mask"][0], tuple(content.shape[-2:]))
            # exponent map: 1 (as trained) where black, ``stroke`` where white (log-linear mix)
            stroke = torch.exp(m * torch.log(torch.tensor(float(stroke))))
        elif stroke == 1.0:
            stroke = None
        x, (h, w) = pad16(content.to(self.device) * 2 - 1)
        if torch.is_tensor(stroke):
            stroke, _ = pad16(stroke.to(self.device))
            stroke = stroke.clamp_min(1e-3)
        with torch.no_grad(), training.autocast(self.device, self.bf16):
            y = self.net(x, style.to(self.device), stroke)
        out = ((y.float()[..., :h, :w] + 1) / 2).clamp(0, 1).cpu()
        emit(callback, Progress(self.name, "done", 1, 1, size=(h, w), elapsed=clock()))
        return out


# ------------------------------------------------------------------------------------ training
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
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

    def sample(self, size: int, batch: int, g: torch.Generator):
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
            m, sd = mean_std(feats[name].float())
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
    return (torch.log1p(stat.clamp_min(0)) - targets[f"mu|{key}"]) / targets[f"sd|{key}"]


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
    st = 0.0
    for name in STYLE_LAYERS:
        if targets is None:
            mr, sr = mean_std(fr[name])
        else:
            mr, sr = targets[f"mean:{name}"][ids], targets[f"std:{name}"][ids]
        cells = grid_cells(fo[name], grid)
        for cell in cells:
            mo, so = mean_std(cell)
            if space == "standardised":
                mo, mr = (standardised(t, targets, f"mean:{name}") for t in (mo, mr))
                so, sr = (standardised(t, targets, f"std:{name}") for t in (so, sr))
            st = st + (F.mse_loss(mo, mr) + F.mse_loss(so, sr)) / len(cells)
    return st


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
                   help="ours: VGG relu4_1 MSE between the photo and its stylisation (preset: 0)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="ours: keep an exponential moving average of the generator's weights "
                        "(decay per step, 0 = off) and ship it instead of the last step's "
                        "weights (preset: cpu 0.999, paper 0)")
    p.add_argument("--style-grid", type=int, default=None, metavar="G",
                   help="ours: match the style statistics in each cell of a G x G grid "
                        "(preset: cpu 2, paper 1)")
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
    if args.classifier_weight < 0 or (args.classifier_weight > 0) != bool(args.classifier):
        raise BrushworkError("--classifier and --classifier-weight > 0 go together")
    cfg["classifier_scale"] = parse_scale_range(args.classifier_scale)
    training.check_out_and_threads(args)
    return cfg


def run(args, callback=None) -> dict:
    cfg = resolve_arguments(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = training.pick_device(args.device)
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
    vgg = VGG19(last_layer="relu4_1", device=device, autocast=args.bf16) \
        if cfg["style_weight"] > 0 or cfg["content_weight"] > 0 or clf is not None else None
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
    clock, log = Clock(), {}
    G.train()
    D.train()
    for step in range(start, total):
        g = training.step_generator(args.seed, step)
        x = training.sample_batch(photos, size, batch, g).to(device) * 2 - 1
        if step < warmup:  # ours: auto-encoder warm-up (identity reconstruction)
            y = one_hot_styles(torch.randint(n, (batch,), generator=g), n).to(device)
            with training.autocast(device, args.bf16):
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
                real, ids = paintings.sample(size, batch, gd)
                yd = one_hot_styles(ids, n).to(device)
                with torch.no_grad(), training.autocast(device, args.bf16):
                    fake = G(xd, yd).float()
                # D runs in float32: spectral norm's backward under bf16 autocast gives NaNs.
                d_real = D(real.to(device) * 2 - 1, yd)
                d_neg = D(xd, yd) + D(fake, yd)  # photos and stylisations are both negatives
                d_loss = hinge_d_loss(d_real, d_neg)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                log["d_hinge"] = float(d_loss.detach())
            real, ids = paintings.sample(size, batch, g)
            y = one_hot_styles(ids, n).to(device)
            with training.autocast(device, args.bf16):
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
                with torch.no_grad(), training.autocast(device, args.bf16):
                    out = G_ema(x, y)
            training.save_grid([(x[:4] + 1) / 2, (out.detach().float()[:4] + 1) / 2],
                               Path(ckpt).with_name(Path(ckpt).stem + f"_sample_{done:06d}.png"))
    final = (G_ema if G_ema is not None else G).eval()
    meta = {"method": "asma", "config": json.dumps(G.config()),
            "artists": json.dumps(paintings.artists), "steps": str(total), "crop": str(size),
            "preset": args.preset, "ema": str(cfg["ema"])}
    sha = training.save_weights(training.prefixed_state("generator", final), args.out,
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
    training.load_prefixed(G, "generator", state, source=str(path))


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
    return training.save_weights(training.prefixed_state("generator", G.eval()), out, fp16=fp16,
                                 metadata=meta)

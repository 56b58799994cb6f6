"""Kotovenko, Sanakoyeu, Ma, Lang & Ommer (CVPR 2019), "A Content Transformation Block For Image
Style Transfer": a per-artist encoder E, a content transformation block T working in E's latent
space, and a decoder D; the stylisation is D(T(E(x))).

The paper's objective, trained in two alternating steps per model:

* **E and D** (T left out): a style discriminator D_s tells the artist's paintings from
  D(E(x)) (and from the photos); the fixpoint loss ||E(D(E(x))) - E(x)||^2 (the stylised image
  encoded again lands on the same latent: the stylisation is done by the decoder); a
  transformed-image loss between the photo and its stylisation (MSE of both after a 10 x 10
  average pooling, which keeps the layout but not the texture).
* **T and D** (E frozen): a content discriminator D_c on the latent, conditioned on a content
  class c, tells E(painting of class c) from T(E(photo of class c)), so T learns how the
  artist alters content of that kind; plus D_s on D(T(E(x))), the fixpoint loss around T's
  output ||E(D(T(E(x)))) - T(E(x))||^2 and the transformed-image loss.

T is a stack of residual blocks; their last normalisation starts at zero scale, so T starts as
the identity and the plain encoder-decoder is where training begins. The ``transform`` control
scales T's whole residual: ``D(E(x) + s * (T(E(x)) - E(x)))``; 0 is the plain encoder-decoder
D(E(x)), 1 the model as trained, values above 1 exaggerate the content transformation.

Simplifications (brushwork's ``cpu`` preset, the shipped file; each also a trainer flag):

* **Sizes.** Width 16, 3 stride-2 downsamplings (latent: 64 channels at 1/8), 4 residual
  blocks in T, 128 px crops, batch 1 (the paper: width 32, 4 downsamplings, 9 residual blocks,
  768 px crops). Output by a sigmoid in [0, 1].
* **Discriminators.** D_s: four spectral-normalised stride-2 4x4 convolutions and a 3x3 patch
  head (hinge loss; the photos are negatives too); D_c: two spectral-normalised convolutions on
  the latent, global average pooling and a projection head on the content class (hinge loss).
  The paper uses multi-scale discriminators with the standard GAN loss.
* **Content classes.** The paper takes object/scene classes from pretrained detectors and
  scene classifiers. brushwork clusters the photos and the paintings together by k-means
  (``brushwork.core.regions.kmeans``, seeded) over the channel means of frozen VGG19 relu4_1
  features of thumbnails, ``--classes`` clusters (default 4): a photo and a painting in the
  same cluster show similar content.
* **Shared warm-up and round robin.** All artists' models start from one encoder-decoder
  trained as an auto-encoder (L1 reconstruction, ``--warmup`` steps); the artists are then
  trained one step each in turn, into one checkpoint; each model alternates the two steps.
* **Loss weights.** Adversarial terms 1; fixpoint 10 and transformed-image 100 (the ``paper``
  preset: 100 and 100, the weights of the style-aware content loss paper this objective
  extends).
* **A dense style signal** (``--style-weight 1e-3``): a VGG19 mean/std loss
  (relu1_1..relu3_1) between the stylisation and the batch's painting, a signal long before
  the discriminators are informative in a few hundred steps per artist.
* **No local feature normalisation** (the paper's LFN layer for high resolutions): instance
  normalisation throughout.

One weight file holds one model per artist (tensor prefix = the artist's name), metadata
``method=ctb``, ``artists`` (JSON list), ``config`` (JSON network sizes).

    brushwork train ctb --styles DIR_OF_ARTIST_FOLDERS --content DIR --out F.safetensors
    brushwork stylize photo.jpg -m ctb --artist claude_monet --transform 0.5
"""
from __future__ import annotations

import json

import torch
from torch import nn
import torch.nn.functional as F

from ..core.device import autocast, has_bf16, pick_device
from ..core.protocol import Capabilities, Clock, Control, Progress, begin, emit
from ..core.weights import load_artist_weights, load_prefixed, resolve_weights
from ..errors import BrushworkError, ControlError
from .asma import ARTIST
from .cin import parse_style_id

SHIPPED_FILE = "ctb_artists.safetensors"
TRAIN_HINT = "brushwork train ctb --styles DIR --content DIR --out F.safetensors"

TRANSFORM = Control("transform", "float", 1.0,
                    "amount of the content transformation block: 0 = the plain encoder-decoder, "
                    "1 = as trained, >1 exaggerated", low=0.0, high=2.0)


# ------------------------------------------------------------------------------------- network
def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, padding_mode="reflect")


class ResBlock(nn.Module):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))); the last norm's scale starts at 0 (identity)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c, 3), nn.InstanceNorm2d(c, affine=True),
                                  nn.ReLU(inplace=True), _conv(c, c, 3),
                                  nn.InstanceNorm2d(c, affine=True))
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x):
        return x + self.body(x)


def latent_channels(chn: int, n_down: int) -> int:
    return chn * min(2 ** n_down, 4)


class Generator(nn.Module):
    """E (conv7x7, ``n_down`` stride-2 convs; channels double up to 4 x ``chn``), T (``n_res``
    residual blocks on the latent), D (``n_down`` x [nearest x2, conv3x3, IN, ReLU], conv7x7,
    sigmoid). Images in [0, 1], sides multiples of 2 ** n_down."""

    def __init__(self, chn: int = 32, n_down: int = 3, n_res: int = 4):
        super().__init__()
        if chn < 1 or n_down < 1 or n_res < 0:
            raise BrushworkError(f"ctb network: chn >= 1, n_down >= 1, n_res >= 0 "
                                 f"(got {chn}, {n_down}, {n_res})")
        self.chn, self.n_down, self.n_res = chn, n_down, n_res
        widths = [chn * min(2 ** i, 4) for i in range(n_down + 1)]
        enc = [_conv(3, chn, 7), nn.InstanceNorm2d(chn, affine=True), nn.ReLU(inplace=True)]
        for a, b in zip(widths, widths[1:]):
            enc += [_conv(a, b, 3, 2), nn.InstanceNorm2d(b, affine=True), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*enc)
        self.transform = nn.Sequential(*[ResBlock(widths[-1]) for _ in range(n_res)])
        dec = []
        for a, b in zip(widths[::-1], widths[::-1][1:]):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(a, b, 3),
                    nn.InstanceNorm2d(b, affine=True), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*dec, _conv(chn, 3, 7))

    @property
    def multiple(self) -> int:
        return 2 ** self.n_down

    def config(self) -> dict:
        return {"chn": self.chn, "n_down": self.n_down, "n_res": self.n_res}

    @classmethod
    def from_config(cls, cfg: dict) -> "Generator":
        return cls(int(cfg["chn"]), int(cfg["n_down"]), int(cfg["n_res"]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E: RGB [0, 1] -> latent."""
        return self.encoder(x * 2 - 1)

    def transformed(self, z: torch.Tensor, amount: float = 1.0) -> torch.Tensor:
        """``z + amount * (T(z) - z)``: T's residual scaled (0 = ``z`` unchanged)."""
        if amount == 0.0 or self.n_res == 0:
            return z
        t = self.transform(z)
        return t if amount == 1.0 else z + amount * (t - z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D: latent -> RGB [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor, amount: float = 1.0) -> torch.Tensor:
        m = self.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise BrushworkError(f"ctb network needs sides that are multiples of {m}, got "
                                 f"{tuple(x.shape[-2:])}")
        return self.decode(self.transformed(self.encode(x), amount))


def transform_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The transformed-image loss: MSE between the 10 x 10 average pools (stride 1) of the photo
    and of its stylisation (both in [0, 1])."""
    return F.mse_loss(F.avg_pool2d(x, 10, 1, 4), F.avg_pool2d(y, 10, 1, 4))


def fixpoint_loss(z: torch.Tensor, z_again: torch.Tensor) -> torch.Tensor:
    """The fixpoint loss: mean squared distance between a latent and the latent of its
    decoded image encoded again."""
    return F.mse_loss(z_again, z)


def pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad H, W (reflect, or replicate where too small) up to multiples of ``multiple`` and at
    least 2 x ``multiple``; returns the padded image and the original size."""
    h, w = x.shape[-2:]
    ph = max((-h) % multiple, 2 * multiple - h)
    pw = max((-w) % multiple, 2 * multiple - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def weight_metadata(artists: list[str], cfg: dict, **extra) -> dict[str, str]:
    return {"method": "ctb", "artists": json.dumps(list(artists)), "config": json.dumps(cfg),
            **{k: str(v) for k, v in extra.items()}}


def load_models(path) -> tuple[list[str], dict[str, Generator], dict[str, str]]:
    """(artists, {artist: Generator}, metadata) of a ctb weight file; a BrushworkError for a
    file of another method or one without the tensors its metadata names."""
    state, meta, artists, cfg = load_artist_weights(path, "ctb", TRAIN_HINT)
    nets = {}
    for a in artists:
        net = Generator.from_config(cfg)
        load_prefixed(net, a, state, source=str(path))
        nets[a] = net
    return artists, nets, meta


# ------------------------------------------------------------------------------------ inference
class CTB:
    name = "ctb"
    summary = ("content transformation block (Kotovenko et al. 2019): per-artist models, "
               "--artist, --transform")
    capabilities = Capabilities(styles="labels")
    controls = {c.name: c for c in (ARTIST, TRANSFORM)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"ctb: unknown option(s) {', '.join(sorted(options))}")
        self.device = pick_device(device)
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        self.artists, self.nets, self.meta = load_models(path)
        for net in self.nets.values():
            net.to(self.device).eval().requires_grad_(False)
        self.weight_files = [path]
        self.bf16 = bf16 and has_bf16(self.device)

    def labels(self) -> list[str]:
        return list(self.artists)

    def render_all(self, content, controls=None) -> list[torch.Tensor]:
        return [self.stylize(content, controls={**(controls or {}), "artist": str(i)})
                for i in range(len(self.artists))]

    def run_artist(self, artist: str, content: torch.Tensor, amount: float = 1.0) -> torch.Tensor:
        """One artist's model on an RGB [0, 1] (1, 3, H, W) image: [0, 1] float32, same size."""
        if artist not in self.nets:
            raise ControlError(f"ctb: unknown artist {artist!r} (this model has "
                               f"{', '.join(self.artists)})")
        net = self.nets[artist]
        x, (h, w) = pad_to(content.to(self.device).float(), net.multiple)
        with torch.no_grad(), autocast(self.device, self.bf16):
            y = net(x, amount)
        return y.float()[..., :h, :w].clamp(0, 1).cpu()

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        """``artist``: a name (prefix) or index; a blend 'a:0.7,b:0.3' mixes the artists'
        outputs with those weights (each artist is a separate model)."""
        c, _ = begin(self, styles, style_weights, controls)
        clock = Clock()
        pairs = parse_style_id(c["artist"], self.artists, "artist")
        out = None
        for i, wgt in pairs:
            y = self.run_artist(self.artists[i], content, c["transform"])
            out = y * wgt if out is None else out + y * wgt
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out.clamp(0, 1)

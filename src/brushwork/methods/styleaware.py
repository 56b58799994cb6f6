"""Style-aware content loss (Sanakoyeu, Kotovenko, Lang, Ommer; ECCV 2018), "A Style-Aware
Content Loss for Real-time HD Style Transfer": one encoder-decoder per artist, trained against
that artist's paintings, with no pre-trained network anywhere.

Per artist: an encoder E (photo -> latent) and a decoder D (latent -> painting), trained with

* an adversarial term: a discriminator tells the artist's paintings (real) from the
  stylisations D(E(x)) *and from the photos x* (both fake), so the pair learns what
  separates the artist's paintings from photographs;
* the style-aware content loss ``||E(x) - E(D(E(x)))||^2 / d`` (d = the latent's size): the
  stylisation must encode to the photo's latent in the encoder's own space, which the
  adversarial term shapes toward what matters for this artist (:func:`style_aware_loss`);
* the transformed-image loss ``||T(x) - T(D(E(x)))||^2 / (C H W)`` with T a large average
  pooling (a 10 x 10 mean, stride 1): the stylisation keeps the photo's coarse layout and
  colours but is free in the detail T averages away (:func:`transformed_image_loss`);
* ``L = w_adv L_adv + w_content L_content + w_transform L_transform`` (trainer flags;
  defaults 1, 100, 100).

Ours, for the sizes a 2-core CPU trains (``brushwork train styleaware``; every value a flag):

* **Small nets.** Encoder: conv3x3 (width w) then ``n_down`` stride-2 convs (w, 2w, 4w, ...),
  instance norm + ReLU; decoder: ``n_res`` residual blocks on the latent, ``n_down`` nearest
  x2 upsamplings + conv3x3 + IN + ReLU, conv7x7 to RGB, sigmoid. The paper: width 32, four
  downsamplings to 256 channels, nine residual blocks, 768 px crops, 300k steps per artist;
  the shipped file: width 16, three downsamplings, four residual blocks, 128 px crops, batch 1.
* **Discriminator.** A few stride-2 conv3x3 + LeakyReLU layers with a patch logit (1x1 conv)
  after the last two (two scales), binary cross-entropy; the paper's has seven layers and
  more taps. Updated once per generator step (the paper's schedule switches between the two
  on the discriminator's accuracy).
* **Shared warm-up.** The first ``--warmup`` steps train one encoder-decoder as an
  auto-encoder (L1 reconstruction); every artist's pair starts from it. The artists are then
  trained round-robin (step k trains artist k mod N), so a run stopped early leaves all
  artists equally far along.

At inference ``--artist`` picks the artist's pair (a name, a prefix or an index, as asma);
a blend ``'claude_monet:0.5,vincent_van_gogh:0.5'`` averages the artists' stylisations with
those weights. ``preserve_color=luminance`` keeps the photo's colours; ``strength`` blends
with the photo.

    brushwork train styleaware --styles DIR_OF_ARTIST_FOLDERS --content DIR --out F.safetensors
    brushwork stylize photo.jpg -m styleaware --artist claude_monet
"""
from __future__ import annotations


import torch
from torch import nn
import torch.nn.functional as F

from ..core.device import pick_device
from ..core.protocol import PRESERVE_COLOR, STRENGTH, Capabilities, Clock, Progress, begin, emit
from ..core.weights import load_artist_weights, load_prefixed, resolve_weights
from ..errors import BrushworkError
from . import johnson
from .asma import ARTIST
from .cin import parse_style_id

SHIPPED_FILE = "styleaware_artists.safetensors"
TRAIN_HINT = "brushwork train styleaware --styles DIR --content DIR --out F.safetensors"
POOL = 10  # the transformed-image loss' averaging window (pixels)


# ------------------------------------------------------------------------------------- network
def _conv_norm_relu(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, padding_mode="reflect"),
                         nn.InstanceNorm2d(c_out, affine=True), nn.ReLU())


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, padding_mode="reflect"), nn.InstanceNorm2d(c, affine=True),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 1, 1, padding_mode="reflect"), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.body(x)


def _widths(width: int, n_down: int) -> list[int]:
    """Channels after the first conv and after each stride-2 conv: w, w, 2w, 4w, ..."""
    return [width] + [width * 2 ** max(0, i - 1) for i in range(1, n_down + 1)]


class Encoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> latent (B, width * 2**(n_down-1), H / 2**n_down, ...)."""

    def __init__(self, width: int = 16, n_down: int = 3):
        super().__init__()
        ws = _widths(width, n_down)
        layers = [_conv_norm_relu(3, ws[0])]
        layers += [_conv_norm_relu(ws[i], ws[i + 1], 2) for i in range(n_down)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x * 2 - 1)


class Decoder(nn.Module):
    """latent -> (B, 3, H, W) in [0, 1] (sigmoid)."""

    def __init__(self, width: int = 16, n_down: int = 3, n_res: int = 4):
        super().__init__()
        ws = _widths(width, n_down)
        self.res = nn.Sequential(*[_Res(ws[-1]) for _ in range(n_res)])
        ups = []
        for i in range(n_down, 0, -1):
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_norm_relu(ws[i], ws[i - 1])]
        self.up = nn.Sequential(*ups)
        self.to_rgb = nn.Conv2d(ws[0], 3, 7, 1, 3, padding_mode="reflect")

    def forward(self, z):
        return torch.sigmoid(self.to_rgb(self.up(self.res(z))))


class StyleNet(nn.Module):
    """One artist's encoder-decoder: ``forward(x) = decoder(encoder(x))``; sides must be
    multiples of ``2**n_down`` (:meth:`stylize_any` pads)."""

    def __init__(self, width: int = 16, n_down: int = 3, n_res: int = 4):
        super().__init__()
        if width < 1 or n_down < 1 or n_res < 0:
            raise BrushworkError(f"styleaware: bad network size width={width} n_down={n_down} "
                                 f"n_res={n_res}")
        self.width, self.n_down, self.n_res = width, n_down, n_res
        self.encoder = Encoder(width, n_down)
        self.decoder = Decoder(width, n_down, n_res)

    def config(self) -> dict:
        return {"width": self.width, "n_down": self.n_down, "n_res": self.n_res}

    @classmethod
    def from_config(cls, cfg: dict) -> "StyleNet":
        return cls(int(cfg["width"]), int(cfg["n_down"]), int(cfg["n_res"]))

    @property
    def align(self) -> int:
        return 2 ** self.n_down

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def stylize_any(self, x: torch.Tensor) -> torch.Tensor:
        """Any H, W: reflect-padded up to multiples of ``align`` (and at least 2 * align),
        cropped back."""
        h, w = x.shape[-2:]
        a = self.align
        ph, pw = max((-h) % a, 2 * a - h), max((-w) % a, 2 * a - w)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        return self(x)[..., :h, :w]


class Discriminator(nn.Module):
    """``n_layers`` stride-2 conv3x3 + LeakyReLU(0.2) (widths d, 2d, 4d, ... capped at 8d);
    a 1x1 patch logit after each of the last two: ``forward(x)`` -> [logits (B, 1, h, w)]."""

    def __init__(self, width: int = 16, n_layers: int = 4):
        super().__init__()
        if n_layers < 2:
            raise BrushworkError("styleaware: the discriminator needs at least 2 layers")
        ws = [3] + [width * min(8, 2 ** i) for i in range(n_layers)]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ws[i], ws[i + 1], 3, 2, 1), nn.LeakyReLU(0.2))
            for i in range(n_layers))
        self.heads = nn.ModuleList(nn.Conv2d(ws[i + 1], 1, 1) for i in (n_layers - 2,
                                                                         n_layers - 1))

    def forward(self, x):
        h, feats = x * 2 - 1, []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return [head(f) for head, f in zip(self.heads, feats[-2:])]


# ---------------------------------------------------------------------------------------- losses
def style_aware_loss(z_photo: torch.Tensor, z_out: torch.Tensor) -> torch.Tensor:
    """``||E(x) - E(D(E(x)))||^2 / d`` per image, averaged over the batch (d = C*H*W of the
    latent): the mean squared difference of the two latents."""
    return F.mse_loss(z_out, z_photo)


def transform(x: torch.Tensor, pool: int = POOL) -> torch.Tensor:
    """T: a ``pool`` x ``pool`` average pooling, stride 1 (no padding)."""
    return F.avg_pool2d(x, pool, 1)


def transformed_image_loss(x: torch.Tensor, y: torch.Tensor, pool: int = POOL) -> torch.Tensor:
    """``||T(x) - T(y)||^2 / (C H W)`` (the mean over T's output), averaged over the batch."""
    return F.mse_loss(transform(y, pool), transform(x, pool))


def d_loss(real_logits, fake_logits) -> torch.Tensor:
    """Binary cross-entropy of the discriminator, summed over its taps: real -> 1, fake -> 0
    (``fake_logits``: a list of tap lists, e.g. the photos' and the stylisations')."""
    loss = sum(F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) for r in real_logits)
    for taps in fake_logits:
        loss = loss + sum(F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
                          for f in taps)
    return loss


def g_loss(fake_logits) -> torch.Tensor:
    """The non-saturating generator loss: BCE of D(stylisation) against 1, summed over taps."""
    return sum(F.binary_cross_entropy_with_logits(f, torch.ones_like(f)) for f in fake_logits)


# ------------------------------------------------------------------------------------ inference
def read_file(path) -> tuple[dict, list[str], dict, dict]:
    """A styleaware weight file -> (tensors, artists, network config, metadata)."""
    state, meta, artists, cfg = load_artist_weights(path, "styleaware")
    return state, artists, cfg, meta


class StyleAware:
    name = "styleaware"
    summary = "Sanakoyeu et al. 2018: style-aware content loss, one encoder-decoder per artist"
    capabilities = Capabilities(styles="labels")
    controls = {c.name: c for c in (ARTIST, STRENGTH, PRESERVE_COLOR)}

    def __init__(self, device="cpu", weights=None, **options):
        if options:
            raise BrushworkError(f"styleaware: unknown option(s) {', '.join(sorted(options))}")
        self.device = pick_device(device)
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        state, self.artists, cfg, _ = read_file(path)
        self.nets = nn.ModuleList()
        for artist in self.artists:
            net = StyleNet.from_config(cfg)
            load_prefixed(net, artist, state, source=str(path))
            self.nets.append(net)
        self.nets.to(self.device).eval().requires_grad_(False)
        self.weight_files = [path]

    def labels(self) -> list[str]:
        return list(self.artists)

    def render_all(self, content, controls=None) -> list[torch.Tensor]:
        return [self.stylize(content, controls={**(controls or {}), "artist": str(i)})
                for i in range(len(self.artists))]

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c, _ = begin(self, styles, style_weights, controls)
        clock = Clock()
        pairs = parse_style_id(c["artist"], self.artists, "artist")
        x = content.to(self.device).float()
        out = 0.0
        with torch.no_grad():
            for i, w in pairs:
                if w > 0:
                    out = out + w * self.nets[i].stylize_any(x)
        out = johnson.finish(self.name, out.float().clamp(0, 1).cpu(), content.float().cpu(), c)
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out

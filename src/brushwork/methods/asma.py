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
  coarse stream's large strokes. Reshaping the gate alone (z ** stroke) moves the detail
  little, so ``stroke`` = s does two things: the generator paints the photo at 1/s of its size
  with the gate reshaped as z ** s, and the painting is resized back to the photo's size.
  s = 1 is the model as trained, s = 2 strokes twice as large (and less of the photo's fine
  detail), 0.5 strokes half as large (at 4x the pixels). With ``stroke_mask`` (white = the
  stroke-s painting, black = as trained, grey = a mix of the two) stroke size varies by region.
* **Training within CPU means** (preset ``cpu``; each also a flag): ``--warmup N`` first trains
  the generator as an auto-encoder (L1 reconstruction) for N steps; ``--style-weight W`` adds a
  VGG mean/std loss (relu1_1..relu4_1) between G(x, y) and the statistics of artist y's most
  typical painting (``--style-target typical``, the cpu preset's choice; the average of
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

import json

import torch
from torch import nn
import torch.nn.functional as F


from ..core.blocks import (AnisotropicStrokeModule, ConditionalAffine, ConditionalInstanceNorm2d,
                      ConditionalResBlock, ProjectionDiscriminator, stroke_gate)
from ..core import tiling
from ..core.device import autocast, has_bf16, pick_device
from ..core.weights import load_prefixed, load_weights, resolve_weights
from ..errors import BrushworkError, ControlError
from ..core.image import load_mask, resize
from ..core.protocol import Capabilities, Clock, Control, Progress, begin, emit
from . import johnson
from .cin import mix_vector, parse_style_id

SHIPPED_FILE = "asma_artists.safetensors"
TRAIN_HINT = "brushwork train asma --styles DIR --content DIR --out F.safetensors"

PRESETS = {
    # name: generator chn, plain ResBlocks, discriminator chn, crop, batch, extras
    "paper": dict(chn=32, n_plain=7, d_chn=32, size=256, batch=8, warmup=0, style_weight=0.0,
                  content_weight=0.0, ema=0.0, style_target="painting", style_grid=1, d_steps=3,
                  style_space="raw", decoder_norm="in", table_lr_mult=1.0, asm_up="nearest",
                  padding="zeros"),
    # cpu: sized for a 2-core CPU; each artist's most typical painting as the statistics
    # target, whole-image statistics (the shipped file: this preset to step 8000, then
    # --style-weight 2e-3 to step 12000; MANIFEST.json)
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
                 "(the photo painted at 1/stroke of its size, the ASM update gate reshaped); "
                 "with stroke_mask only where the mask is white",
                 low=0.25, high=4.0)
STROKE_MASK = Control("stroke_mask", "images", None,
                      "one mask image: white = the --stroke painting there, black = as trained, "
                      "grey = a mix")


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
    """Pad H, W up to multiples of 16, and to at least 32 (the generator downsamples 16x and
    its deepest layers need two positions); returns the padded image and the original size."""
    h, w = x.shape[-2:]
    ph, pw = max((-h) % 16, 32 - h), max((-w) % 16, 32 - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class Asma:
    name = "asma"
    summary = "ASMA-GAN (Chen et al. 2020): multi-artist generator, --artist, stroke control"
    capabilities = Capabilities(styles="labels")
    controls = {c.name: c for c in (ARTIST, STROKE, STROKE_MASK)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"asma: unknown option(s) {', '.join(sorted(options))}")
        self.device = pick_device(device)
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        state, meta = load_weights(path)
        try:
            cfg = json.loads(meta["config"])
            self.artists = json.loads(meta["artists"])
            self.net = Generator.from_config(cfg)
        except (KeyError, ValueError):
            raise BrushworkError(f"{path}: not an asma weight file") from None
        load_prefixed(self.net, "generator", state, source=str(path))
        self.weight_files = [path]
        self.net.to(self.device).eval().requires_grad_(False)
        self.bf16 = bf16 and has_bf16(self.device)

    def labels(self) -> list[str]:
        return list(self.artists)

    def _run(self, x: torch.Tensor, style: torch.Tensor, stroke) -> torch.Tensor:
        """The generator on an RGB [0, 1] image of any size (padded to 16 px multiples),
        [0, 1] float32 result of the same size."""
        x, (h, w) = pad16(x.to(self.device) * 2 - 1)
        with torch.no_grad(), autocast(self.device, self.bf16):
            y = self.net(x, style.to(self.device), stroke)
        return ((y.float()[..., :h, :w] + 1) / 2).clamp(0, 1)

    def render_all(self, content, controls=None) -> list[torch.Tensor]:
        return [self.stylize(content, controls={**(controls or {}), "artist": str(i)})
                for i in range(len(self.artists))]

    supports_tiling = True  # stylize() takes ``tile`` and ``max_memory``

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None, tile=None, max_memory=None) -> torch.Tensor:
        """``tile``/``max_memory``: large images tile by tile with the thumbnail's instance-norm
        statistics and stroke-module gates frozen (:func:`run_tiled`)."""
        c, _ = begin(self, styles, style_weights, controls)
        clock = Clock()
        style = mix_vector(parse_style_id(c["artist"], self.artists, "artist"),
                           len(self.artists))
        stroke, mask = float(c["stroke"]), None
        if c["stroke_mask"]:
            if len(c["stroke_mask"]) != 1:
                raise ControlError("asma: give one stroke_mask")
            mask = load_mask(c["stroke_mask"][0], tuple(content.shape[-2:]))
        if stroke == 1.0:
            out = self._paint(content, style, None, tile, max_memory, callback, clock)
        else:
            out = self._paint_at(content, style, stroke, tile, max_memory, callback, clock)
            if mask is not None:  # white: the stroke-sized painting; black: as trained
                plain = self._paint(content, style, None, tile, max_memory, callback, clock)
                out = mask * out + (1 - mask) * plain
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out

    def _paint_at(self, content, style, stroke: float, tile, max_memory, callback, clock):
        """The painting with strokes ``stroke`` times the trained size: the generator paints
        the photo at 1/stroke of its size (at least 16 px a side) with the ASM gate reshaped
        as z ** stroke, and the result is resized back."""
        h, w = content.shape[-2:]
        small = resize(content, (max(16, round(h / stroke)), max(16, round(w / stroke))))
        return resize(self._paint(small, style, stroke, tile, max_memory, callback, clock),
                      (h, w))

    def _paint(self, content, style, stroke, tile, max_memory, callback, clock):
        """The generator on ``content`` ([0, 1], any size; tile by tile where ``tile`` or
        ``max_memory`` ask for it), the ASM gate exponent ``stroke`` (None = as trained)."""
        planned = johnson.plan_net(self.name, self.net, content, style, self.bf16, tile,
                                   max_memory, align=16, margin=TILE_MARGIN, feather=TILE_FEATHER,
                                   call=lambda x: self._run(x, style, None))
        if planned is not None:
            return run_tiled(self, content, style, stroke, planned,
                             johnson._tile_events(self.name, callback, clock))
        return self._run(content, style, stroke).cpu()


# ------------------------------------------------------------------------------ large images
# As johnson's tiles (thumbnail instance normalisation), plus the anisotropic stroke module's
# global gates r, z (from max/mean pools over the whole map) and its instance norm, taken from
# the thumbnail. The trunk works at 1/16: tiles align to 16 and overlap more.
TILE_MARGIN = 96
TILE_FEATHER = 96


def frozen_asm_forward(asm: AnisotropicStrokeModule, frozen: tiling.FrozenNorms):
    """:meth:`AnisotropicStrokeModule.forward` with the gates and the fused stream's instance
    norm recorded on the thumbnail (record mode) or taken from it (apply mode)."""
    def forward(s, f, label, stroke=None):
        b, _, h, w = s.shape
        a = label.to(s.dtype)[:, :, None, None].expand(b, label.shape[1], h, w)
        x_t = asm.conv_x(F.interpolate(torch.cat([s, a], 1), scale_factor=asm.up,
                                       mode=asm.mode))
        x_t = x_t[..., :f.shape[-2], :f.shape[-1]]
        if frozen.mode == "record":
            both = torch.cat([x_t, f], 1)
            q = torch.cat([both.amax((2, 3)), both.mean((2, 3))], 1)
            frozen.extra["asm_gates"] = (torch.sigmoid(asm.w_r(q))[:, :, None, None],
                                         torch.sigmoid(asm.w_z(q))[:, :, None, None])
        r, z = frozen.extra["asm_gates"]
        h_hat = torch.tanh(tiling.norm_with(frozen, ("asm", id(asm)),
                                            asm.fuse(torch.cat([r.to(x_t.dtype) * x_t, f], 1))))
        z = stroke_gate(z.to(x_t.dtype), stroke, x_t.shape[-2:])
        return z * h_hat + (1 - z) * x_t, r, z
    return forward


def run_tiled(model: "Asma", content: torch.Tensor, style: torch.Tensor, stroke, planned,
              on_tile=None) -> torch.Tensor:
    """The generator over ``content`` tile by tile (tiles of 16 px multiples) with the
    thumbnail's norm statistics and stroke gates; ``stroke``: None (as trained) or the gate
    exponent. Returns (1, 3, H, W) in [0, 1] on the CPU."""
    side, margin, feather = planned
    h, w = content.shape[-2:]
    grid = tiling.tile_grid(-(-h // 16) * 16, -(-w // 16) * 16, side, margin=margin,
                            feather=feather, align=16)
    net = model.net
    frozen = tiling.FrozenNorms(net, {net.asm: lambda fz: frozen_asm_forward(net.asm, fz)})
    content = content.to(model.device)

    def fn(x, t):
        return model._run(x, style, stroke)

    if on_tile is not None:
        on_tile(0, len(grid), f"{len(grid)} tiles of {side} px")
    out = tiling.stylize_in_tiles(fn, content, grid, frozen, on_tile=on_tile)
    return out.clamp_(0, 1).cpu()

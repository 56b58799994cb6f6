"""AdaIN: arbitrary style transfer in real time (Huang & Belongie 2017).

Encode content and style with VGG19 up to relu4_1, give the content features the style's
channel-wise mean and standard deviation (adaptive instance normalisation), decode with a
learned decoder mirroring the encoder.

Training (``brushwork train adain``): the decoder only; content loss between the decoded image's
relu4_1 features and the AdaIN target, style loss on the mean/std of relu1_1..relu4_1 features
(style weight 10 as in the paper).

Controls: strength (target/content feature interpolation), several styles with weights (feature
interpolation of the AdaIN targets), colour preservation, masks (a style per region, content
statistics taken per region), style scale. ``encoder="small"`` selects a distilled encoder
(a weight file trained with ``brushwork train adain --encoder-weights DISTILLED``).
"""
from __future__ import annotations


import torch.nn.functional as F


from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.stats import adain
from ..errors import BrushworkError
from ..core.protocol import MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Capabilities
from . import feedforward as ff

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]


def style_layers(level: int) -> list[str]:
    return STYLE_LAYERS[:level]
DEFAULT_FILE = "adain_vgg.safetensors"
DEFAULT_SMALL_FILE = "adain_small.safetensors"
TRAIN_HINT = "brushwork train adain --content DIR --styles DIR --out FILE"


class AdaIN(ff.FeedForward):
    name = "adain"
    summary = ("AdaIN (Huang & Belongie 2017): one forward pass, any style; channel statistics at "
               "relu4_1 or relu3_1 (the shipped model: relu3_1); --encoder small: the distilled "
               "encoder, ~7x faster")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE)}
    capabilities = Capabilities(options=("weights", "encoder"))
    border = True

    def __init__(self, device="cpu", weights=None, encoder: str = "vgg", bf16: bool | None = None):
        if encoder not in ("vgg", "small"):
            raise BrushworkError(f"adain: unknown encoder {encoder!r} (choose vgg or small)")
        default = DEFAULT_FILE if encoder == "vgg" else DEFAULT_SMALL_FILE
        hint = TRAIN_HINT if encoder == "vgg" else TRAIN_HINT + " --encoder-weights DISTILLED"
        self.device, self.bf16, state, meta, path = ff.open_weights("adain", weights, default,
                                                                    hint, device, bf16)
        self.meta = meta
        level = int(ff.meta_float(meta, "level", 4, path))
        if level not in (3, 4):
            raise BrushworkError(f"{path}: adain level must be 3 or 4, got {level}")
        self.layer = LEVEL_LAYERS[level]
        self.encoder = ff.make_encoder(meta, state, self.device, self.bf16, self.layer, path)
        self.weight_files = [path, getattr(self.encoder, "weights_file", None)]
        in_ch = self.encoder.channels[self.layer] if meta.get("encoder") == "small" else None
        width = ff.meta_float(meta, "width", 1.0, path)
        self.decoder = ff.load_frozen(decoder(level, width, in_ch), "decoder", state, path,
                                      self.device)

    def passes(self, c):
        return [ff.Pass((self.layer,), self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        cf, sf = cf[self.layer], sf[self.layer]
        if mask is None:
            return adain(cf, sf)
        # the region's own content statistics, as in the paper's spatial control
        m = F.interpolate(mask, size=cf.shape[-2:], mode="bilinear", align_corners=False)
        return adain(cf, sf, content_mask=m)

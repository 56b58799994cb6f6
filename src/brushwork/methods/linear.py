"""Linear style transfer (LST, Li et al. 2019): a learned transformation matrix.

Two small CNNs turn the covariance of the (centred, compressed to 32 channels) content and style
features into 32x32 matrices; their product T is applied to the compressed content features,
which are un-compressed, given the style's mean and decoded. ``relu3_1`` (default, the paper's
choice for video: stable, fewer artefacts) or ``relu4_1`` (stronger stylisation) variants.

Training (``brushwork train linear --layer relu3_1``): transform and decoder together; content
loss at relu4_1 against the content image, style loss on the mean/std of relu1_1..relu4_1 (the
paper uses Gram matrices; mean/std is used here so the style weight matches ``adain``'s), plus
a pixel reconstruction term when content = style (keeps the decoder an inverse of the encoder).
"""
from __future__ import annotations




from ..core.blocks import LAYER_LEVELS, LinearTransform, decoder
from ..core.device import autocast
from ..errors import BrushworkError
from ..core.protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE)
from ..core.vgg import LAYER_CHANNELS, VGG19
from . import feedforward as ff

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
DEFAULT_FILE = "linear_relu3_1.safetensors"
TRAIN_HINT = "brushwork train linear --content DIR --styles DIR --out FILE"


class Linear(ff.FeedForward):
    name = "linear"
    summary = "Linear transform (Li et al. 2019): learned 32x32 matrix at relu3_1; video-stable"
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE)}

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            "linear", weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        self.layer = meta.get("layer", "relu3_1")
        if self.layer not in ("relu3_1", "relu4_1"):
            raise BrushworkError(f"{path}: bad 'layer' metadata {self.layer!r}")
        width = ff.meta_float(meta, "width", 1.0, path)
        dim = int(ff.meta_float(meta, "dim", 32, path))
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer=self.layer,
                             channels_last=True)
        self.weight_files = [path, self.encoder.weights_file]
        self.transform_net = ff.load_frozen(LinearTransform(LAYER_CHANNELS[self.layer], dim, width),
                                        "transform", state, path, self.device)
        self.decoder = ff.load_frozen(decoder(LAYER_LEVELS[self.layer], width), "decoder", state,
                                      path, self.device)

    def passes(self, c):
        return [ff.Pass((self.layer,), self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        with autocast(self.device, self.bf16):
            return self.transform_net(cf[self.layer], sf[self.layer]).float()

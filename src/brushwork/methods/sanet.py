"""SANet: arbitrary style transfer with style-attentional networks (Park & Lee 2019).

Attention from each (mean/variance-normalised) content position to all style positions picks
style features locally, at relu4_1 and relu5_1; the two results are merged and decoded by a
relu4_1 decoder.

Training (``brushwork train sanet``): transform and decoder together with the paper's losses:
content (normalised relu4_1, relu5_1 features), style (mean/std at relu1_1..relu5_1) and the
identity losses (content stylised by itself must give the content back, in pixels and in
features; same for the style), weights 1 / 3 / 50 / 1.
"""
from __future__ import annotations




from ..core.device import autocast
from ..errors import BrushworkError
from ..core.blocks import SATransform, decoder
from ..core.protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE)
from ..core.vgg import VGG19
from . import feedforward as ff

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
DEFAULT_FILE = "sanet_vgg.safetensors"
TRAIN_HINT = "brushwork train sanet --content DIR --styles DIR --out FILE"


class SANet(ff.FeedForward):
    name = "sanet"
    summary = ("SANet (Park & Lee 2019): style attention at relu4_1 + relu5_1, local patterns "
               "(strength default: the weight file's, 0.9 for the shipped file)")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE)}

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            "sanet", weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        width = ff.meta_float(meta, "width", 1.0, path)
        # a weight file may carry the strength it is meant to be used at (metadata
        # "default_strength"): the shipped 3000-step file goes past the content at 1.0 and
        # ships with 0.9; an explicit strength (1.0 included) always wins
        strength = ff.meta_float(meta, "default_strength", 1.0, path)
        if not 0.0 <= strength <= 1.0:
            raise BrushworkError(f"{path}: default_strength {strength} is not in [0, 1]")
        self.control_defaults = {"strength": strength}
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer="relu5_1",
                             channels_last=True)
        self.weight_files = [path, self.encoder.weights_file]
        self.transform_net = ff.load_frozen(SATransform(512), "transform", state, path, self.device)
        self.decoder = ff.load_frozen(decoder(4, width), "decoder", state, path, self.device)

    def passes(self, c):
        return [ff.Pass(("relu4_1", "relu5_1"), self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        with autocast(self.device, self.bf16):
            return self.transform_net(cf["relu4_1"], sf["relu4_1"], cf["relu5_1"],
                                      sf["relu5_1"]).float()

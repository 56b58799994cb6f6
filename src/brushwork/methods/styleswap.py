"""Style swap (Chen & Schmidt 2016; the patch swap Avatar-Net builds on).

Every 3x3 patch of the content's relu3_1 features is replaced by the most similar style patch
(normalised cross-correlation), overlaps are averaged, and the result is decoded by a relu3_1
decoder trained for reconstruction. The weight file is a ``wct`` file that has a level-3
decoder (``brushwork train wct --levels 3``) or a ``styleswap`` file with ``decoder3.*``.
"""
from __future__ import annotations


from ..core.blocks import decoder, style_swap
from ..errors import BrushworkError
from ..core.protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Control)
from ..core.vgg import VGG19
from . import feedforward as ff

DEFAULT_FILE = "wct_vgg.safetensors"
TRAIN_HINT = "brushwork train wct --levels 3 --content DIR --styles DIR --out FILE"
PATCH = Control("patch_size", "int", 3, "style swap patch size (odd, in relu3_1 positions)",
                low=1, high=9)
STYLE_STRIDE = Control("patch_stride", "int", 1,
                       "stride of the style patch grid (2 = 4x fewer patches, faster)",
                       low=1, high=4)


class StyleSwap(ff.FeedForward):
    name = "styleswap"
    summary = "Style swap (Chen & Schmidt 2016): nearest style patch per content patch at relu3_1"
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, PATCH,
                                     STYLE_STRIDE)}

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights(
            ("styleswap", "wct"), weights, DEFAULT_FILE, TRAIN_HINT, device, bf16)
        if 3 not in ff.meta_levels(meta, path):
            raise BrushworkError(f"{path}: has no relu3_1 (level 3) decoder for style swap")
        if meta.get("encoder", "vgg") != "vgg":
            raise BrushworkError(f"{path}: style swap needs a VGG19 decoder, not a small-encoder one")
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer="relu3_1",
                             channels_last=True)
        self.weight_files = [path, self.encoder.weights_file]
        self.decoder = ff.load_frozen(decoder(3, ff.meta_float(meta, "width", 1.0, path)),
                                      "decoder3", state, path, self.device)

    def passes(self, c):
        if c["patch_size"] % 2 == 0:
            raise BrushworkError(f"styleswap: patch_size must be odd, got {c['patch_size']}")
        return [ff.Pass(("relu3_1",), self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        return style_swap(cf["relu3_1"], sf["relu3_1"], c["patch_size"], c["patch_stride"])

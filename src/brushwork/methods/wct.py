"""WCT: universal style transfer via feature transforms (Li et al. 2017).

Coarse to fine, at relu5_1, relu4_1, ..., relu1_1: encode the current image, whiten the content
features and colour them with the style's covariance and mean (eigendecomposition in float64),
blend with the content features by ``strength``, decode with that level's decoder. The input
gets a reflected 16 px margin first (cropped at the end), so the encoder's zero padding leaves no
frame. Decoders are trained for reconstruction (pixel + feature loss), as in the paper; with
``--style-weight`` (ours) also on WCT-transformed features under a VGG19 mean/std loss.

Weight files: ``decoder{L}.*`` tensors for each level L in the ``levels`` metadata. With
``encoder="small"`` (default file ``wct_small.safetensors``) the file also holds the distilled
encoder (``encoder.*``): from ``brushwork train wct --encoder-weights DISTILLED`` or a
``brushwork train distill`` file used as is (its reconstruction decoders).
"""
from __future__ import annotations

from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.stats import wct
from ..errors import BrushworkError
from ..core.protocol import MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Capabilities, Control
from . import feedforward as ff

DEFAULT_FILE = "wct_vgg.safetensors"
DEFAULT_SMALL_FILE = "wct_small.safetensors"
TRAIN_HINT = "brushwork train wct --content DIR --styles DIR --out FILE"
SMALL_HINT = ("brushwork train distill --content DIR --styles DIR --out DISTILLED, then brushwork "
              "train wct --encoder-weights DISTILLED --content DIR --styles DIR --out FILE")

LEVELS = Control("levels", "str_list", None,
                 "WCT levels to apply, coarse to fine (e.g. 5,4,3,2,1; default: all in the file)")


class WCT(ff.FeedForward):
    name = "wct"
    summary = ("WCT (Li et al. 2017): whitening-colouring coarse to fine, relu5_1..relu1_1, a "
               "decoder per level (shipped: levels 4..1); --encoder small: the distilled encoder")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, LEVELS)}
    # Video (temporal.TemporalStylizer, --consistency flow): wct re-invents its texture from
    # small content changes, so the default 0.4 blend averages two textures and loses a quarter
    # of the style; carrying 95 % of the warped previous result keeps one texture moving with
    # the scene, and Lanczos warping keeps it sharp over many frames (docs/video.md).
    capabilities = Capabilities(options=("weights", "encoder"),
                                video_defaults={"blend": 0.95, "resample": "lanczos"})
    border = True  # reflected margin: no dark frame at the edges

    def __init__(self, device="cpu", weights=None, encoder: str = "vgg", bf16: bool | None = None):
        if encoder not in ("vgg", "small"):
            raise BrushworkError(f"wct: unknown encoder {encoder!r} (choose vgg or small)")
        default, hint = (DEFAULT_FILE, TRAIN_HINT) if encoder == "vgg" else (DEFAULT_SMALL_FILE,
                                                                            SMALL_HINT)
        self.device, self.bf16, state, meta, path = ff.open_weights(
            ("wct", "distill"), weights, default, hint, device, bf16)
        self.levels = ff.meta_levels(meta, path)
        small = meta.get("encoder") == "small"
        self.encoder = ff.make_encoder(meta, state, self.device, self.bf16,
                                       LEVEL_LAYERS[max(self.levels)], path)
        self.weight_files = [path, getattr(self.encoder, "weights_file", None)]
        width = ff.meta_float(meta, "width", 1.0, path)
        self.decoders = {}
        for level in self.levels:
            in_ch = self.encoder.channels[LEVEL_LAYERS[level]] if small else None
            self.decoders[level] = ff.load_frozen(decoder(level, width, in_ch), f"decoder{level}",
                                                  state, path, self.device)

    def passes(self, c):
        if not c["levels"]:
            levels = sorted(self.levels, reverse=True)
        else:
            try:
                levels = [int(x) for x in c["levels"]]
            except ValueError:
                raise BrushworkError(f"wct: levels must be numbers 1..5, got {c['levels']}") from None
            missing = [l for l in levels if l not in self.decoders]
            if missing:
                raise BrushworkError(f"wct: no decoder for level(s) {missing} in the weight file "
                                     f"(it has {self.levels})")
        return [ff.Pass((LEVEL_LAYERS[l],), self.decoders[l]) for l in levels]

    def transform(self, cf, sf, mask, c, state):
        (layer,) = cf
        return wct(cf[layer], sf[layer], mask)

"""MetaStyle (Zhang, Zhu & Zhu, AAAI 2019): johnson's network adapted to a painting in minutes.

A style-neutral initialisation of johnson's image transformation network is meta-learned over
many paintings (`brushwork train metastyle`, a bilevel problem: a few training steps on one
painting inside, the adapted network's loss on other photos outside); `brushwork adapt
PAINTING -o FILE` starts from it and takes a short run of johnson's training on the new
painting. The adapted file is a one-style johnson network (same architecture, same run time),
which this method runs: ``-m metastyle --weights FILE``. There is no default file: each
painting gets its own adapted weights.
"""
from __future__ import annotations

from ..core.device import has_bf16, pick_device
from ..core.protocol import Capabilities
from ..core.weights import load_weights, resolve_weights
from ..errors import BrushworkError
from .johnson import Johnson, load_net

ADAPT_HINT = "brushwork adapt PAINTING.jpg -o my_style.safetensors"
INIT_METHOD = "metastyle-init"


class MetaStyle(Johnson):
    name = "metastyle"
    summary = ("Zhang et al. 2019 (MetaStyle): johnson's net adapted to a painting in a few "
               "steps from a meta-learned start (`brushwork adapt`)")
    capabilities = Capabilities(styles="builtin")
    controls = Johnson.controls

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"metastyle: unknown option(s) {', '.join(sorted(options))}")
        if weights is None:
            raise BrushworkError(f"metastyle needs the weights of an adapted network: make "
                                 f"them with `{ADAPT_HINT}` and pass --weights "
                                 f"my_style.safetensors")
        self.device = pick_device(device)
        path = resolve_weights(weights, "", ADAPT_HINT)
        method = load_weights(path)[1].get("method")
        if method == INIT_METHOD:
            raise BrushworkError(f"{path}: the MetaStyle initialisation, not an adapted network; "
                                 f"adapt it to a painting with `{ADAPT_HINT}`")
        if method != "metastyle":
            raise BrushworkError(f"{path}: weight file is for method {method!r}, not metastyle; "
                                 f"make one with `{ADAPT_HINT}`")
        self.net, _, path = load_net(path, "", ADAPT_HINT, self.device, ("metastyle",))
        self.weight_files = [path]
        self.bf16 = bf16 and has_bf16(self.device)

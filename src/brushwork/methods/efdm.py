"""EFDM: exact feature distribution matching (Zhang et al. 2022).

AdaIN's network and pipeline with AdaIN's mean/std replaced by exact histogram matching: each
channel of the content features takes the style's sorted values at the content values' ranks
(:func:`brushwork.core.stats.exact_histogram_match`), so every statistic of each channel's
distribution, not only the first two, is the style's. The paper uses this training-free on an
AdaIN decoder; brushwork runs it on the shipped adain weights (relu3_1) and takes the same
options (``weights``, ``encoder``) and controls (strength, several styles, colour preservation,
style scale, masks). With a mask, only the region's content positions are ranked and matched
(the analogue of AdaIN's region statistics); the skeleton then blends the regions.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..core.stats import exact_histogram_match
from .adain import AdaIN


class EFDM(AdaIN):
    name = "efdm"
    summary = ("EFDM (Zhang et al. 2022): AdaIN with exact feature histograms matched by sorting "
               "instead of mean/std; the adain weights (--encoder small too), one forward pass")
    controls = AdaIN.controls
    capabilities = AdaIN.capabilities

    def transform(self, cf, sf, mask, c, state):
        cf, sf = cf[self.layer], sf[self.layer]
        if mask is not None:
            mask = F.interpolate(mask, size=cf.shape[-2:], mode="bilinear", align_corners=False)
        return exact_histogram_match(cf, sf, mask)

"""MST: multimodal style transfer via graph cuts (Zhang et al. 2019, ICCV).

At the coarsest pass (relu4_1 by default) the style's features are clustered into K sub-styles
(k-means, k-means++ start, fixed seed); every content position gets a sub-style label ``l`` by
minimising, over the 4-neighbour grid of feature positions,

    E(l) = sum_p D_p(l_p) + lambda * sum_{(p, q) neighbours} [l_p != l_q],
    D_p(k) = 1 - <f_p, mu_k> / (|f_p| |mu_k|)

(data term: the cosine distance of the content feature ``f_p`` to the cluster centre ``mu_k``;
smoothness: the Potts model with weight ``lambda`` = ``smoothness``), by alpha-expansion on
max-flow (PyMaxflow). The content positions of each label are then whitened with their own
statistics and coloured with their style cluster's mean and covariance (:func:`stats.wct` with
a mask), then decoded by one of two renderers.

Two renderers (control ``decoder``):

* ``skip`` (what ``auto``, the default, picks unless ``levels`` are given or the encoder is the
  small one): one pass, as in the paper, which renders once at relu4_1 with a decoder trained for
  it: the relu4_1 decoder of avatar (:mod:`brushwork.methods.avatar`, shipped
  ``avatar_vgg.safetensors``), whose AdaIN skip connections give the decoder's features the
  style's statistics at relu3_1, relu2_1 and relu1_1.
* ``cascade``: WCT's coarse-to-fine pipeline; after the relu4_1 pass the finer passes
  (relu3_1..relu1_1 by default, control ``levels``) follow: the first pass's labelling of the
  content and of the style, upsampled (nearest) to each finer map, again gets per-label
  whitening-colouring. (Plain WCT there would bring back the colours of sub-styles the graph
  cut did not match.)

A label that wins fewer than 2 content positions is given up (its positions move to their
next-best label): whitening needs at least two positions. With ``clusters=1`` and
``decoder=cascade`` the result is WCT's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.regions import kmeans
from ..core.protocol import (MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Capabilities,
                             Control)
from ..core.stats import wct
from ..errors import ControlError
from . import avatar
from . import feedforward as ff
from .wct import LEVELS, WCT

MAX_CLUSTERS = 64

CLUSTERS = Control("clusters", "int", 3,
                   "number of sub-styles the style's features are clustered into (mst)",
                   low=1, high=MAX_CLUSTERS)
SMOOTHNESS = Control("smoothness", "float", 0.05,
                     "Potts weight of the sub-style labelling: 0 = each position takes its "
                     "nearest sub-style, larger = larger regions per sub-style (mst)", low=0.0)
DECODER = Control("decoder", "str", "auto",
                  "how mst renders: skip = one pass at relu4_1 through avatar's decoder (AdaIN "
                  "skip connections to the style at relu3_1/2_1/1_1); cascade = WCT's passes "
                  "relu4_1..relu1_1, per sub-style whitening-colouring at each; auto = skip, "
                  "or cascade when levels are given or the encoder is the small one (mst)",
                  choices=("auto", "skip", "cascade"))


def cosine_cost(feat: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The data term D (H, W, K): 1 - cosine similarity of each position of ``feat``
    (1, C, H, W) to each centre (K, C); a zero feature vector costs 1 for every label."""
    f = feat[0].flatten(1).double()
    f = f / f.norm(dim=0, keepdim=True).clamp_min(1e-12)
    m = centres.double()
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (1 - m @ f).T.reshape(feat.shape[-2], feat.shape[-1], -1)


def graph_cut(cost: torch.Tensor, smoothness: float) -> torch.Tensor:
    """Labels (H, W) minimising sum_p cost[p, l_p] + smoothness * (number of 4-neighbour pairs
    with different labels): alpha-expansion on max-flow (PyMaxflow's ``aexpansion_grid``,
    started from the per-position argmin)."""
    k = cost.shape[-1]
    if k == 1:
        return torch.zeros(cost.shape[:2], dtype=torch.long, device=cost.device)
    import maxflow.fastmin  # PyMaxflow: loaded by the one method that uses it

    unary = np.ascontiguousarray(cost.detach().cpu().double().numpy())
    potts = float(smoothness) * (1.0 - np.eye(k))
    labels = maxflow.fastmin.aexpansion_grid(unary, potts)
    return torch.from_numpy(labels.astype(np.int64)).to(cost.device)


def drop_small_labels(labels: torch.Tensor, cost: torch.Tensor, region: torch.Tensor,
                      min_count: int = 2) -> torch.Tensor:
    """Labels where no label holds fewer than ``min_count`` positions of ``region`` (H, W
    bool): the positions of the smallest such label move to their cheapest remaining label,
    until none is left (or one label remains)."""
    labels = labels.clone()
    alive = torch.ones(cost.shape[-1], dtype=torch.bool, device=cost.device)
    while int(alive.sum()) > 1:
        counts = torch.bincount(labels[region], minlength=cost.shape[-1])
        small = alive & (counts < min_count)
        if not bool(small.any()):
            break
        worst = int(torch.where(small, counts, counts.max() + 1).argmin())
        alive[worst] = False
        masked = cost.masked_fill(~alive, float("inf"))
        moved = labels == worst
        labels[moved] = masked[moved].argmin(-1)
    return labels


def mode_labels(content_feat: torch.Tensor, style_feat: torch.Tensor, clusters: int,
                smoothness: float, region: torch.Tensor | None = None):
    """(content labels (H, W), style labels (N,)) for the (1, C, H, W) content and style
    features: k-means of the style positions, then the graph cut of the content positions."""
    s = style_feat[0].flatten(1)
    if clusters > s.shape[1]:
        raise ControlError(f"mst: clusters {clusters} is more than the style's "
                           f"{s.shape[1]} feature positions (use fewer clusters or a larger "
                           f"style scale)")
    centres, s_labels = kmeans(s.T, clusters)
    cost = cosine_cost(content_feat, centres)
    labels = graph_cut(cost, smoothness)
    if region is None:
        region = torch.ones_like(labels, dtype=torch.bool)
    return drop_small_labels(labels, cost, region), s_labels


def mode_wct(content_feat: torch.Tensor, style_feat: torch.Tensor, labels: torch.Tensor,
             style_labels: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-mode whitening-colouring: the content positions of label k (inside ``region``) are
    whitened with their own statistics and coloured with the mean and covariance of the style
    positions of label k; positions outside ``region`` are returned unchanged."""
    c = content_feat.shape[1]
    s = style_feat[0].flatten(1)
    out = content_feat
    for k in range(int(style_labels.max()) + 1):
        sel = labels == k
        if region is not None:
            sel = sel & region
        sk = s[:, style_labels == k]
        if sk.shape[1] == 0:
            continue
        # the positions of other labels are untouched, so each call sees the originals of its own
        out = wct(out, sk.reshape(1, c, 1, -1), sel[None, None].to(content_feat.dtype))
    return out


class MST(WCT):
    name = "mst"
    summary = ("MST (Zhang et al. 2019): the style's relu4_1 features k-means-clustered into "
               "sub-styles, matched to content regions by a graph cut (Potts, alpha-expansion), "
               "WCT per sub-style; one skip-connected decoder pass or WCT's cascade")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, LEVELS,
                                    CLUSTERS, SMOOTHNESS, DECODER)}

    capabilities = Capabilities(options=("weights", "encoder", "skip_weights"),
                                video_defaults=WCT.capabilities.video_defaults)

    def __init__(self, device="cpu", weights=None, encoder: str = "vgg", bf16: bool | None = None,
                 skip_weights=None):
        """``weights``: the wct file (its decoders: decoder=cascade); ``skip_weights``: the
        avatar file whose decoder renders decoder=skip (default: the shipped one)."""
        super().__init__(device, weights, encoder, bf16)
        self.skip_decoder = None
        if encoder == "vgg":  # the avatar decoder reads VGG19 features
            _, _, state, meta, path = ff.open_weights("avatar", skip_weights,
                                                      avatar.DEFAULT_FILE, avatar.TRAIN_HINT,
                                                      self.device, self.bf16)
            dec = avatar.AvatarDecoder(ff.meta_float(meta, "width", 1.0, path))
            self.skip_decoder = ff.load_frozen(dec, "decoder", state, path, self.device)
            self.weight_files.append(path)

    def renderer(self, c) -> str:
        """"skip" or "cascade": the ``decoder`` control with "auto" resolved."""
        if c["decoder"] != "auto":
            return c["decoder"]
        return "cascade" if c["levels"] or self.skip_decoder is None else "skip"

    def passes(self, c):
        if self.renderer(c) == "cascade":
            return super().passes(c)
        if c["levels"]:
            raise ControlError("mst: levels applies to decoder=cascade; decoder=skip renders "
                               "once, at relu4_1")
        if self.skip_decoder is None:
            raise ControlError("mst: decoder=skip needs the VGG19 encoder (avatar's decoder); "
                               "use decoder=cascade with the small encoder")
        return [ff.Pass(avatar.LAYERS, self.skip_decoder, native=avatar.SKIP_LAYERS)]

    def pass_decoder(self, p, cf, sfs, masks, weights, c):
        if p.decoder is self.skip_decoder:
            return avatar.FusedDecoder(p.decoder, cf, sfs, weights, masks, c["strength"])
        return p.decoder

    def transform(self, cf, sf, mask, c, state):
        layer = avatar.LAYER if len(cf) > 1 else next(iter(cf))
        feat, style = cf[layer], sf[layer]
        region = None
        if mask is not None:
            region = F.interpolate(mask, size=feat.shape[-2:], mode="nearest")[0, 0] > 0.5
        if "labels" not in state:  # the first (coarsest) pass finds the modes
            labels, s_labels = mode_labels(feat, style, c["clusters"], c["smoothness"], region)
            state["labels"] = (labels, s_labels.reshape(style.shape[-2:]))
        # finer passes reuse the first pass's labelling, upsampled (nearest)
        labels, s_labels = (_upsample_labels(m, hw) for m, hw in
                            zip(state["labels"], (feat.shape[-2:], style.shape[-2:])))
        return mode_wct(feat, style, labels, s_labels.flatten(), region)


def _upsample_labels(labels: torch.Tensor, hw) -> torch.Tensor:
    """An (h, w) label map at size ``hw`` (nearest)."""
    up = F.interpolate(labels[None, None].double(), size=tuple(hw), mode="nearest")
    return up[0, 0].long()

"""Two-stage peer-regularised feature recombination (Svoboda, Anoosheh, Osendorfer & Masci,
CVPR 2020).

An encoder maps an image to a latent map ``z = [z_C | z_S]`` whose channels are split into a
*content part* ``z_C`` (what is where) and a *style part* ``z_S`` (how it looks). The
two-stage peer-regularisation layer (PeRFeaT, :class:`PeerRecombination`) recombines a content
image's latent with a style image's, treating every latent position as a node of a graph:

1. *first stage*: every style-image position finds its ``k`` nearest neighbours among the
   content image's positions (euclidean distance between content parts) and its content part
   is replaced by their graph-attention-weighted combination: the style image's content is
   re-expressed in terms of the content image's;
2. *second stage*: every content-image position finds its ``k`` nearest neighbours among the
   style image's positions, compared on the content parts that stage 1 produced, and takes the
   graph-attention-weighted combination of those positions' *style* parts.

The output latent is ``[z_C of the content, recombined z_S]``; a decoder turns it into the
image. The attention weights over the ``k`` neighbours ``j`` of a node ``i`` are those of a
graph attention layer, ``softmax_j(LeakyReLU(a_q . W z_i + a_p . W z_j) + beta cos(z_i, z_j))``
on the content parts (the cosine term, with a learned ``beta``, lets a fresh layer already
prefer the closest neighbours). The neighbour search is vectorised (squared distances by
matrix products, ``topk``) and runs in chunks of query positions whose distance block stays
under :data:`CHUNK_ELEMENTS` numbers, so a 1024 px image needs no more memory than a small one.

Training (``brushwork train tpfr``): the paper's losses, all in the latent space or on pixels:
metric learning (the output's content part near the content image's; the spatially pooled,
normalised style part of the output near the style image's and at least a margin away from the
content image's and the other paintings'), cycle consistency (the output re-stylised with the
content image as style gives the content back), reconstruction (decoder(encoder(x)) = x for
photos and paintings) and an adversarial term (paintings real, outputs fake).

What the CPU budget changed (against the paper):

* the encoder is VGG19 (frozen, up to relu3_1 or relu4_1: the ``level`` metadata) followed by
  a learned 1x1 projection into ``content_dim + style_dim`` channels, not an encoder trained
  from scratch; the projection starts as the identity (when the sizes match) and the decoder
  (the mirror of VGG19 at that level) from a trained reconstruction decoder, so the untrained
  layer already gives a style-swap-like result;
* one peer-regularisation layer at one latent level; a single-head attention;
* a small discriminator (four strided convolutions, spectral norm, hinge loss) on the whole
  output instead of the paper's;
* ``k`` small (default 5), crops of 128-256 px, batches of 2-4;
* the trainer offers an optional VGG19 mean/std style term (``--style-weight``, 0 = the
  paper's losses only) so that a short run stylises.

Controls: strength (the recombined latent mixed with the content's own latent: 0 gives the
content's reconstruction), ``neighbours`` (``k``), several styles with weights (each style's
recombined latent is computed on its own and the latents are blended by the weights: the
content part is the same in all of them, so this blends the recombined style parts), masks
(a style per region), colour preservation, style scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.blocks import LEVEL_LAYERS, decoder
from ..core.image import to_tensor
from ..core.protocol import MASKS, PRESERVE_COLOR, STRENGTH, STYLE_SCALE, Control
from ..core.vgg import VGG19
from ..errors import BrushworkError
from . import feedforward as ff

DEFAULT_FILE = "tpfr_vgg.safetensors"
TRAIN_HINT = "brushwork train tpfr --content DIR --styles DIR --out FILE"
NEIGHBOURS = Control("neighbours", "int", 5,
                     "k of the peer-regularisation layer's k-nearest-neighbour graph: how many "
                     "style positions each content position recombines", low=1, high=64)
# Largest (query chunk x peers) distance block of the neighbour search, in numbers.
CHUNK_ELEMENTS = 1 << 23


# ------------------------------------------------------------------------------ the encoder
class Projection(nn.Module):
    """The learned 1x1 projection of encoder features into ``[content | style]`` channels;
    the identity at the start when ``channels == content_dim + style_dim``."""

    def __init__(self, channels: int, content_dim: int, style_dim: int):
        super().__init__()
        self.content_dim, self.style_dim = content_dim, style_dim
        self.conv = nn.Conv2d(channels, content_dim + style_dim, 1, bias=False)
        if channels == content_dim + style_dim:
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.conv(f)


class LatentEncoder(nn.Module):
    """Frozen base encoder (VGG19 or the small encoder) then the projection: ``forward(x,
    layers)`` returns ``{layer: latent}`` for the one ``layer`` it was built for."""

    def __init__(self, base: nn.Module, proj: Projection, layer: str):
        super().__init__()
        self.base, self.proj, self.layer = base, proj, layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, VGG19):
            return self.base(x, [self.layer])[self.layer]
        return self.base(x, [self.layer])[self.layer].float()

    def forward(self, x: torch.Tensor, layers=None) -> dict[str, torch.Tensor]:
        return {self.layer: self.proj(self.features(x).float())}


def split(z: torch.Tensor, content_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(content part, style part) of a (B, C, H, W) latent."""
    return z[:, :content_dim], z[:, content_dim:]


# ------------------------------------------------------------------------ neighbour search
def knn(queries: torch.Tensor, peers: torch.Tensor, k: int,
        chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distances, indices), each (B, N, k): the ``k`` nearest of the (B, M, d)
    ``peers`` to each of the (B, N, d) ``queries``, nearest first. The (rows x M) distance
    blocks are computed ``chunk_elements // M`` query rows at a time."""
    if k < 1:
        raise BrushworkError(f"neighbours must be at least 1, got {k}")
    m = peers.shape[1]
    k = min(k, m)
    rows = max(1, chunk_elements // max(1, m))
    p2 = peers.pow(2).sum(-1)[:, None, :]
    dists, idxs = [], []
    for start in range(0, queries.shape[1], rows):
        dist, idx = _block_knn(queries[:, start:start + rows], peers, p2, k)
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(dists, 1), torch.cat(idxs, 1)


def _block_knn(q, peers, p2, k):
    """:func:`knn` of one chunk of queries: the (B, rows, M) squared distances, then topk."""
    d = (q.pow(2).sum(-1)[..., None] + p2 - 2 * q @ peers.transpose(1, 2)).clamp_min(0)
    return d.topk(k, dim=-1, largest=False, sorted=True)


def gather_rows(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, k, d): ``values`` (B, M, d) at the (B, N, k) indices."""
    b, n, k = idx.shape
    flat = idx.reshape(b, n * k, 1).expand(-1, -1, values.shape[-1])
    return values.gather(1, flat).view(b, n, k, values.shape[-1])


class GraphAttention(nn.Module):
    """Attention weights of a node over its k neighbours (a graph attention layer on the
    content parts): ``softmax_j(LeakyReLU(a_q . W z_i + a_p . W z_j) + beta cos(z_i, z_j))``.
    ``a_q``, ``a_p`` start at zero (a fresh layer weighs by cosine similarity alone)."""

    def __init__(self, dim: int, att_dim: int = 32):
        super().__init__()
        self.w = nn.Linear(dim, att_dim, bias=False)
        self.a_query = nn.Parameter(torch.zeros(att_dim))
        self.a_peer = nn.Parameter(torch.zeros(att_dim))
        self.log_beta = nn.Parameter(torch.tensor(1.6))

    def peer_terms(self, peers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the scores need of the (B, M, d) peers, computed once per layer call: their
        attention terms ``a_p . W z_j`` (B, M, 1) and unit vectors (B, M, d)."""
        return (self.w(peers) @ self.a_peer)[..., None], F.normalize(peers, dim=-1)

    def forward(self, queries, peer_terms, idx) -> torch.Tensor:
        """(B, N, k) weights for (B, N, d) queries over their peers at indices ``idx``
        (``peer_terms``: :meth:`peer_terms` of all the peers)."""
        sp_all, pn_all = peer_terms
        sq = self.w(queries) @ self.a_query                        # (B, N)
        sp = gather_rows(sp_all, idx)[..., 0]                      # (B, N, k)
        cos = (gather_rows(pn_all, idx) @ F.normalize(queries, dim=-1)[..., None])[..., 0]
        e = F.leaky_relu(sq[..., None] + sp, 0.2) + self.log_beta.exp() * cos
        return e.softmax(-1)


class PeerRecombination(nn.Module):
    """The two-stage peer-regularisation layer (see the module docstring). ``forward(zc, zs,
    k)`` takes the content image's and the style image's latents (B, C, H, W) and (B or 1, C,
    h, w) and returns ``[content part of zc, recombined style part]``."""

    def __init__(self, content_dim: int, style_dim: int, att_dim: int = 32):
        super().__init__()
        self.content_dim, self.style_dim = content_dim, style_dim
        self.stage1 = GraphAttention(content_dim, att_dim)
        self.stage2 = GraphAttention(content_dim, att_dim)

    def attend(self, att, queries, peers, values, k, chunk_elements):
        """``values`` (B, M, dv) combined over the k nearest peers of each query: (B, N, dv)."""
        out = []
        rows = max(1, chunk_elements // max(peers.shape[1], k * values.shape[-1]))
        _, idx_all = knn(queries, peers, k, chunk_elements)
        terms = att.peer_terms(peers)
        for start in range(0, queries.shape[1], rows):
            q, idx = queries[:, start:start + rows], idx_all[:, start:start + rows]
            w = att(q, terms, idx)
            out.append((w[..., None] * gather_rows(values, idx)).sum(2))
        return torch.cat(out, 1)

    def forward(self, zc: torch.Tensor, zs: torch.Tensor, k: int = 5,
                chunk_elements: int = CHUNK_ELEMENTS, return_parts: bool = False):
        if zs.shape[0] != zc.shape[0]:
            zs = zs.expand(zc.shape[0], -1, -1, -1)
        b, _, h, w = zc.shape
        cc, _ = split(zc, self.content_dim)
        sc, ss = split(zs, self.content_dim)
        flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731  (B, C, H, W) -> (B, HW, C)
        cc_f, sc_f, ss_f = flat(cc), flat(sc), flat(ss)
        # stage 1: the style image's content parts re-expressed by the content image's
        sc1 = self.attend(self.stage1, sc_f, cc_f, cc_f, k, chunk_elements)
        # stage 2: each content position recombines the style parts of its peers
        rs = self.attend(self.stage2, cc_f, sc1, ss_f, k, chunk_elements)
        rs = rs.transpose(1, 2).reshape(b, self.style_dim, h, w)
        out = torch.cat([cc, rs], 1)
        return (out, sc1) if return_parts else out


# ------------------------------------------------------------------------------ the method
class TPFR(ff.FeedForward):
    name = "tpfr"
    summary = ("Two-stage peer-regularised feature recombination (Svoboda et al. 2020): latent "
               "split into content and style parts; each content position recombines the style "
               "parts of its k nearest style positions by graph attention; one forward pass")
    controls = {c.name: c for c in (STRENGTH, PRESERVE_COLOR, MASKS, STYLE_SCALE, NEIGHBOURS)}
    border = True

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights("tpfr", weights,
                                                                    DEFAULT_FILE, TRAIN_HINT,
                                                                    device, bf16)
        self.meta = meta
        level = int(ff.meta_float(meta, "level", 3, path))
        if level not in (3, 4):
            raise BrushworkError(f"{path}: tpfr level must be 3 or 4, got {level}")
        self.layer = LEVEL_LAYERS[level]
        base = ff.make_encoder(meta, state, self.device, self.bf16, self.layer, path)
        channels = base.channels[self.layer] if meta.get("encoder") == "small" else \
            {3: 256, 4: 512}[level]
        dc = int(ff.meta_float(meta, "content_dim", channels // 2, path))
        ds = int(ff.meta_float(meta, "style_dim", channels - channels // 2, path))
        att = int(ff.meta_float(meta, "att_dim", 32, path))
        if dc < 1 or ds < 1 or att < 1:
            raise BrushworkError(f"{path}: bad 'content_dim', 'style_dim' or 'att_dim' metadata")
        proj = ff.load_frozen(Projection(channels, dc, ds), "projection", state, path,
                              self.device)
        self.encoder = LatentEncoder(base, proj, self.layer).eval()
        self.weight_files = [path, getattr(base, "weights_file", None)]
        self.peer = ff.load_frozen(PeerRecombination(dc, ds, att), "peer", state, path,
                                   self.device)
        width = ff.meta_float(meta, "width", 1.0, path)
        self.decoder = ff.load_frozen(decoder(level, width, dc + ds), "decoder", state, path,
                                      self.device)
        self.chunk_elements = CHUNK_ELEMENTS

    def passes(self, c):
        return [ff.Pass((self.layer,), self.decoder)]

    def transform(self, cf, sf, mask, c, state):
        return self.peer(cf[self.layer].float(), sf[self.layer].float(), int(c["neighbours"]),
                         self.chunk_elements)

    @torch.inference_mode()
    def reconstruct(self, content) -> torch.Tensor:
        """The content through encoder, projection and decoder with its own latent (what
        ``strength=0`` gives), in [0, 1], cropped like :meth:`stylize`."""
        x = to_tensor(content).to(self.device)
        hw = tuple(x.shape[-2:])
        b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)
        mult = {"relu3_1": 4, "relu4_1": 8}[self.layer]
        z = ff.encode(self.encoder, ff.with_border(x, b, mult), [self.layer], self.bf16)
        out = ff.decode(self.decoder, z[self.layer], self.bf16)
        return ff.finish(out[..., b:b + hw[0], b:b + hw[1]], hw, None)

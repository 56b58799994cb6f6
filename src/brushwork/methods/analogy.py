"""Deep image analogy (Liao, Yao, Yuan, Hua & Kang 2017, "Visual Attribute Transfer through
Deep Image Analogy").

The content A and the style B' get two latent partners: A' (A's structure, B''s appearance) and
B (B''s structure, A's appearance). At the coarsest level A' = A and B = B'. From relu5_1
down to relu1_1, coarse to fine (images under 64 px start at the deepest level whose maps are
at least 4 positions across), two nearest-neighbour fields are found by PatchMatch on per-position
unit-normalised VGG19 features with the symmetric patch distance of the paper:
phi_ab (A -> B') compares (A, A') with (B, B'), phi_ba (B' -> A) compares (B, B') with (A, A').
Each level starts from the coarser level's fields upsampled x2 (random fields at the coarsest level, searched over the whole map) and
refines them by PatchMatch (propagation from the four neighbours, random search within the
level's radius), every position of the field updated at once.

Below each level the latent features are rebuilt: the style features warped by phi_ab are
"deconvolved" (a few L-BFGS steps, started from the style features at the level below
warped by the upsampled field, on a feature R' at the level below so that the VGG layers
between the two levels map it to the warped feature) and blended with the content's own
features, A'_{L-1} = A_{L-1} * W + R' * (1 - W), W = alpha_L * M, M = sigmoid(300 (|A|^2 - 0.05))
on the min-max normalised squared feature magnitude; B is rebuilt the same way from A warped
by phi_ba. The result is the style image's pixels gathered by the relu1_1 field (full
resolution) with overlapping 5x5 patches averaged. 5x5 patch distances use every other row
and column of the patch (9 positions), and the relu2_1 / relu1_1 matching runs on the 64 / 32
principal axes of the (A, A') and (B, B') features (little variance is lost there). The paper's last refinement (a WLS-filtered
colour transfer) is not done.

Paper settings: patch sizes 3, 3, 3, 5, 5 and PatchMatch radii (whole map), 6, 6, 4, 4 for
relu5_1 .. relu1_1; alphas 0.8, 0.7, 0.6, 0.1 for relu4_1 .. relu1_1 (scaled by ``alpha``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.stats import mean_cov
from ..core.protocol import Capabilities, Clock, Control, Progress, begin, emit
from ..core.vgg import LAYER_INDEX, LAYER_PLAN, VGG19
from ..errors import ControlError

LEVELS = ("relu5_1", "relu4_1", "relu3_1", "relu2_1", "relu1_1")
PATCH_SIZES = (3, 3, 3, 5, 5)
RADII = (None, 6, 6, 4, 4)           # None: the whole map
ALPHAS = (0.8, 0.7, 0.6, 0.1)        # blend weights for relu4_1 .. relu1_1
KAPPA, TAU = 300.0, 0.05             # the magnitude mask's sigmoid
VOTE_PATCH = 5
PM_DIMS = (1024, 1024, 512, 64, 32)  # PatchMatch works on this many principal axes
MIN_TOP_SIDE = 4                  # the coarsest level used needs maps at least this big

ALPHA = Control("alpha", "float", 1.0,
                "analogy: how much content structure the latent features keep "
                "(scales the paper's blend weights; 0 = all from the style)", low=0.0, high=1.0)
ITERATIONS = Control("iterations", "int", 5, "PatchMatch iterations per level", low=1, high=50)
DECONV_STEPS = Control("deconv_steps", "int", 3,
                       "L-BFGS steps of each feature deconvolution (0 = warped features only)",
                       low=0, high=500)


# ------------------------------------------------------------------------------ PatchMatch
def unit(feat: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> the same with each position's channel vector scaled to unit length."""
    return feat / feat.norm(dim=1, keepdim=True).clamp_min(1e-8)


class _Field:
    """Patch distances between a source map and a target map, both (C, H, W), for a field of
    target coordinates (2, H_src, W_src) (row, column)."""

    def __init__(self, src: torch.Tensor, tgt: torch.Tensor, patch: int):
        self.r = r = patch // 2
        self.hs, self.ws = src.shape[-2:]
        self.ht, self.wt = tgt.shape[-2:]
        # channels-last, zero-padded by r: out-of-map patch parts cost nothing on the source side
        # and only |src|^2 when the target part lies outside.
        self.src = F.pad(src, (r, r, r, r)).permute(1, 2, 0).contiguous()
        sp = F.pad(tgt, (r, r, r, r))
        self.tgt = sp.permute(1, 2, 0).reshape(-1, tgt.shape[0]).contiguous()
        self.tgt_n = (sp ** 2).sum(0).reshape(-1)
        self.src_n = (self.src ** 2).sum(-1)
        self.valid = F.pad(torch.ones(self.hs, self.ws, dtype=src.dtype, device=src.device),
                           (r, r, r, r))
        self.wp = self.wt + 2 * r
        # patches wider than 3 are compared on every other row and column (9 of 25 positions
        # for 5x5): the same footprint at a third of the cost
        step = 1 if patch <= 3 else 2
        self.offsets = [(dy, dx) for dy in range(-r, r + 1, step) for dx in range(-r, r + 1, step)]

    def clamp(self, f: torch.Tensor) -> torch.Tensor:
        return torch.stack((f[0].clamp(0, self.ht - 1), f[1].clamp(0, self.wt - 1)))

    def distance(self, f: torch.Tensor) -> torch.Tensor:
        """(H_src, W_src) summed squared patch distances of field ``f`` (assumed in range)."""
        r, hs, ws = self.r, self.hs, self.ws
        base = (f[0] + r) * self.wp + (f[1] + r)
        d = torch.zeros(hs, ws, dtype=self.src.dtype, device=self.src.device)
        for dy, dx in self.offsets:
            idx = (base + dy * self.wp + dx).reshape(-1)
            a = self.src[r + dy:r + dy + hs, r + dx:r + dx + ws]
            b = self.tgt.index_select(0, idx).view(hs, ws, -1)
            v = self.valid[r + dy:r + dy + hs, r + dx:r + dx + ws]
            d += (self.src_n[r + dy:r + dy + hs, r + dx:r + dx + ws]
                  + v * self.tgt_n[idx].view(hs, ws) - 2 * (a * b).sum(-1))
        return d


def project(src: torch.Tensor, tgt: torch.Tensor, dims: int):
    """Both (C, H, W) maps on the ``dims`` principal axes of their joint features (squared
    distances change only by the discarded variance); unchanged when C <= dims."""
    ch = src.shape[0]
    if ch <= dims:
        return src, tgt
    joint = torch.cat((src.reshape(ch, 1, -1), tgt.reshape(ch, 1, -1)), 2).unsqueeze(0)
    _, cov = mean_cov(joint)
    axes = torch.linalg.eigh(cov[0].double())[1][:, -dims:].to(src.dtype)
    return tuple(torch.einsum("cd,chw->dhw", axes, t).contiguous() for t in (src, tgt))


def random_field(src_hw, tgt_hw, gen: torch.Generator, device="cpu") -> torch.Tensor:
    h, w = src_hw
    ys = torch.randint(0, tgt_hw[0], (h, w), generator=gen).to(device)
    xs = torch.randint(0, tgt_hw[1], (h, w), generator=gen).to(device)
    return torch.stack((ys, xs))


def _shift(f: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Candidate field from the neighbour at (-dy, -dx): its target moved by (dy, dx)."""
    g = torch.roll(f, shifts=(dy, dx), dims=(1, 2))
    return g + torch.tensor([dy, dx], device=f.device).view(2, 1, 1)


def patchmatch(src: torch.Tensor, tgt: torch.Tensor, field: torch.Tensor | None, *, patch: int,
               iterations: int, radius: int | None, gen: torch.Generator, jumps: bool = False):
    """Refine a nearest-neighbour field from ``src`` (C, H, W) to ``tgt`` (C, H', W').

    ``field`` is (2, H, W) long target coordinates (None: random). Each iteration proposes, for
    every position at once, the four neighbours' matches shifted by one position (with
    ``jumps`` also from neighbours 2^k away, halving over the iterations, which spreads good
    matches across a random field quickly) and random targets around the current match at
    radii ``radius``, ``radius / 2``, ... 1 (``None``: the whole target map); a candidate
    replaces the match where its patch distance is lower. Returns (field, distances)."""
    m = _Field(src, tgt, patch)
    hs, ws = src.shape[-2:]
    if field is None:
        field = random_field((hs, ws), (m.ht, m.wt), gen, src.device)
    field = m.clamp(field)
    best = m.distance(field)
    rad = max(m.ht, m.wt) if radius is None else radius
    max_jump = 1 << max(0, int(math.log2(max(hs, ws, 1))) - 1)

    def consider(cand):
        nonlocal field, best
        cand = m.clamp(cand)
        d = m.distance(cand)
        better = d < best
        best = torch.where(better, d, best)
        field = torch.where(better.unsqueeze(0), cand, field)

    for it in range(iterations):
        steps = [1]
        if jumps:
            j = max_jump >> it
            if j > 1:
                steps.insert(0, j)
        for s in steps:
            for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s)):
                if (dy and hs > s) or (dx and ws > s):
                    consider(_shift(field, dy, dx))
        w = float(rad)
        while w >= 1:
            wi = int(w)
            off = torch.randint(-wi, wi + 1, (2, hs, ws), generator=gen).to(src.device)
            consider(field + off)
            w /= 2
    return field, best


def upsample_field(field: torch.Tensor, src_hw, tgt_hw) -> torch.Tensor:
    """A field at one level -> the level below (twice the resolution): each position takes its
    parent's match doubled plus its own offset inside the 2x2 block, clamped to the target."""
    h, w = src_hw
    ys = torch.arange(h, device=field.device)
    xs = torch.arange(w, device=field.device)
    py = (ys // 2).clamp(max=field.shape[1] - 1)
    px = (xs // 2).clamp(max=field.shape[2] - 1)
    parent = field[:, py][:, :, px]
    out = torch.stack((parent[0] * 2 + (ys % 2).view(-1, 1), parent[1] * 2 + (xs % 2).view(1, -1)))
    return torch.stack((out[0].clamp(0, tgt_hw[0] - 1), out[1].clamp(0, tgt_hw[1] - 1)))


def warp(feat: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Gather (1, C, H', W') at the (2, H, W) field -> (1, C, H, W)."""
    c, _, wt = feat.shape[1:]
    idx = (field[0] * wt + field[1]).reshape(-1)
    return feat.reshape(c, -1).index_select(1, idx).view(1, c, *field.shape[1:])


def vote(image: torch.Tensor, field: torch.Tensor, patch: int) -> torch.Tensor:
    """Average, over the ``patch`` x ``patch`` patches covering each position, the pixel that
    the patch's match puts there: (1, C, H', W') image, (2, H, W) field -> (1, C, H, W)."""
    r = patch // 2
    c, ht, wt = image.shape[1:]
    h, w = field.shape[1:]
    fp = F.pad(field.unsqueeze(0).float(), (r, r, r, r), mode="replicate")[0].long()
    flat = image.reshape(c, -1)
    acc = torch.zeros(c, h, w, dtype=image.dtype, device=image.device)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            # the patch centred at p - d covers p at offset d
            f = fp[:, r - dy:r - dy + h, r - dx:r - dx + w]
            y = (f[0] + dy).clamp(0, ht - 1)
            x = (f[1] + dx).clamp(0, wt - 1)
            acc += flat.index_select(1, (y * wt + x).reshape(-1)).view(c, h, w)
    return (acc / patch ** 2).unsqueeze(0)


# ------------------------------------------------------------------------------ the method
def magnitude_mask(feat: torch.Tensor) -> torch.Tensor:
    """The paper's M: sigmoid(kappa (|F|^2 - tau)) on the min-max normalised squared magnitude."""
    n = (feat ** 2).sum(1, keepdim=True)
    n = (n - n.min()) / (n.max() - n.min()).clamp_min(1e-12)
    return torch.sigmoid(KAPPA * (n - TAU))


class Analogy:
    name = "analogy"
    summary = ("Deep image analogy (Liao et al. 2017): bidirectional PatchMatch on VGG19 "
               "features, coarse to fine; the style's pixels in the content's layout")
    controls = {c.name: c for c in (ALPHA, ITERATIONS, DECONV_STEPS)}
    capabilities = Capabilities(styles="images", options=(), iterative=True)

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.vgg = VGG19(device=self.device, last_layer="relu5_1")
        self.weight_files = [self.vgg.weights_file]

    def _between(self, x: torch.Tensor, lo: str, hi: str) -> torch.Tensor:
        """The VGG19 layers after ``lo`` up to and including ``hi`` applied to ``x``."""
        for name, kind, _, _ in LAYER_PLAN[LAYER_INDEX[lo] + 1:LAYER_INDEX[hi] + 1]:
            if kind == "conv":
                x = self.vgg.convs[name](x)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2, 2)
        return x

    def _deconvolve(self, init, target, lo, hi, steps):
        """A feature at ``lo`` that the layers up to ``hi`` map close to ``target``."""
        if steps == 0:
            return init
        x = init.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, history_size=10)

        def closure():
            opt.zero_grad()
            loss = (self._between(x, lo, hi) - target).pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return x.detach().clamp_min(0)

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c, _ = begin(self, styles, style_weights, controls)
        if len(styles) != 1:
            raise ControlError(f"method 'analogy' takes exactly one style image, got {len(styles)}")
        clock = Clock()
        gen = torch.Generator(device="cpu").manual_seed(0 if seed is None else int(seed))
        a_img = content.to(self.device, torch.float32)
        b_img = styles[0].to(self.device, torch.float32)
        with torch.no_grad():
            fa = self.vgg(a_img, list(LEVELS))
            fb = self.vgg(b_img, list(LEVELS))
        # Start at the deepest level whose maps hold a few patches (all five from 64 px up).
        first = next((i for i, lv in enumerate(LEVELS)
                      if min(*fa[lv].shape[-2:], *fb[lv].shape[-2:]) >= MIN_TOP_SIDE),
                     len(LEVELS) - 1)
        a, bp = fa[LEVELS[first]], fb[LEVELS[first]]
        ap, b = a.clone(), bp.clone()
        phi_ab = phi_ba = None
        n = len(LEVELS)
        hw = (content.shape[-2], content.shape[-1])
        for i in range(first, n):
            level = LEVELS[i]
            emit(callback, Progress(self.name, "scale", i, n, i, n, hw, elapsed=clock(),
                                    message=level))
            a, bp = fa[level], fb[level]
            if i > first:
                prev = LEVELS[i - 1]
                phi_ab_prev, phi_ba_prev = phi_ab, phi_ba
                phi_ab = upsample_field(phi_ab, a.shape[-2:], bp.shape[-2:])
                phi_ba = upsample_field(phi_ba, bp.shape[-2:], a.shape[-2:])
                alpha = ALPHAS[i - 1] * c["alpha"]
                r_ap = self._deconvolve(warp(bp, phi_ab), warp(fb[prev], phi_ab_prev),
                                        level, prev, c["deconv_steps"])
                r_b = self._deconvolve(warp(a, phi_ba), warp(fa[prev], phi_ba_prev),
                                       level, prev, c["deconv_steps"])
                wa = alpha * magnitude_mask(a)
                wb = alpha * magnitude_mask(bp)
                ap = a * wa + r_ap * (1 - wa)
                b = bp * wb + r_b * (1 - wb)
            with torch.no_grad():
                src_ab, src_ba = project(torch.cat((unit(a), unit(ap)), 1)[0],
                                         torch.cat((unit(b), unit(bp)), 1)[0], PM_DIMS[i])
                p = PATCH_SIZES[i]
                rad = None if i == first else RADII[i]
                phi_ab, _ = patchmatch(src_ab, src_ba, phi_ab, patch=p, radius=rad,
                                       iterations=c["iterations"], gen=gen, jumps=i == first)
                phi_ba, _ = patchmatch(src_ba, src_ab, phi_ba, patch=p, radius=rad,
                                       iterations=c["iterations"], gen=gen, jumps=i == first)
            emit(callback, Progress(self.name, "step", i + 1, n, i, n, hw, elapsed=clock(),
                                    message=level))
        # relu1_1 has the image's resolution: its field is the pixel-level correspondence.
        out = vote(b_img, phi_ab, VOTE_PATCH).clamp(0, 1)
        emit(callback, Progress(self.name, "done", n, n, n - 1, n, hw, elapsed=clock()))
        return out

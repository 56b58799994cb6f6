"""A flexible convolutional solver for fast style transfer (Puy & Perez).

The network is gradient descent on the Gatys et al. loss, unrolled into ``K`` blocks. Block
``k`` takes the current image ``x_k`` (``x_0`` is the content image), computes the gradient
``g_k`` of the style-transfer loss at ``x_k`` through the fixed VGG19 (the styles' Gram
matrices and the content's relu4_2 features are the targets, given at run time), and a small
learned convnet turns ``(x_k, g_k)`` into the update::

    x_{k+1} = x_k - U_k(x_k, g^_k)
    U_k(x, g^) = step_k * g^ + conv_out(relu(conv_mid(relu(conv_in([x - 0.5, g^])))))

where ``g^_k = g_k / max(rms(g_0), ..., rms(g_k))`` (per image): the gradient divided by the
largest root mean square of the blocks' gradients so far. The learned part sees gradients of
one scale whatever the loss weights and the image size (at most unit RMS, so no step runs
off), and they shrink as the loss falls, as in gradient descent. Each block has its own
weights (``conv_in`` 6 -> width, ``conv_mid`` width -> width, ``conv_out`` width -> 3, 3x3
with reflection padding) and its own step ``step_k``; ``conv_out`` starts at zero, so an
untrained solver is plain normalised gradient descent with step ``step_k``. This block layout
and the normalisation are brushwork's choices.

Because the loss (and so its gradient) is computed at run time, its parts can be changed after
training without retraining: ``style_layer_weights``, ``style_weight`` / ``content_weight``
(their ratio: the gradients are normalised), masks (a style per region) and several styles with
weights (the Gram targets mixed by weight). ``iterations`` runs more or fewer blocks than
trained; blocks past the trained count repeat the last block. The weight file's metadata
gives the weights the solver was trained with, which are the defaults here.

Training (``brushwork train fcs``): the style-transfer loss of the output (``--block-loss
last``) or the sum of the losses after every block (``sum``), on (photo, painting) pairs,
backpropagated through the unrolled blocks (second derivatives through VGG19).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core import losses as L, stats as S
from ..core.protocol import (MASKS, PRESERVE_COLOR, STYLE_SCALE, Capabilities, Clock, Control,
                             Progress, begin, emit)
from ..core.vgg import VGG19
from ..errors import BrushworkError, ControlError
from . import feedforward as ff
from .gatys import CONTROLS as GATYS_CONTROLS, STYLE_LAYERS, _mixed_style_loss, _style_loss

DEFAULT_FILE = "fcs_vgg.safetensors"
TRAIN_HINT = "brushwork train fcs --content DIR --styles DIR --out FILE"
CONTENT_LAYER = "relu4_2"
LAYERS = sorted(set(STYLE_LAYERS) | {CONTENT_LAYER})  # relu1_1 .. relu5_1 in VGG order
STEP0 = 0.05  # the initial step of every block (pixels in [0, 1], per unit-RMS gradient)

# ``iterations`` is shared with analogy and etnet (same kind, default and range); fcs takes its
# default from its weight file (the trained number of blocks)
ITERATIONS = Control("iterations", "int", 5,
                     "fcs: unrolled solver blocks to run (default: the weight file's trained "
                     "count; more = more refined, past it the last block repeats); etnet: "
                     "refinement passes per level; analogy: PatchMatch iterations per level",
                     low=1, high=50)
CONTROLS = {c.name: c for c in (
    GATYS_CONTROLS["style_weight"], GATYS_CONTROLS["content_weight"],
    GATYS_CONTROLS["style_layer_weights"], ITERATIONS, MASKS, PRESERVE_COLOR, STYLE_SCALE)}


# ------------------------------------------------------------------------------ the objective
class Objective:
    """The Gatys et al. loss of a batch of images against fixed targets: ``content_weight`` x
    MSE of relu4_2 features + ``style_weight`` x sum over relu1_1..relu5_1 of ``layer
    weight`` x Gram MSE (:class:`~brushwork.core.losses.GramLoss`). ``styles``: a list of
    style batches (each of the content's batch size or 1); without ``masks`` the Gram targets
    are their ``weights``-mix, with ``masks`` (one (1, 1, H, W) map per style) each style has
    its own term whose output statistics are taken over its mask. The value is summed over the
    batch, so each image's gradient is its own loss's."""

    def __init__(self, enc, content, styles, weights, masks, layer_weights, content_weight,
                 style_weight):
        if len(layer_weights) != len(STYLE_LAYERS):
            raise ControlError(f"{len(layer_weights)} style layer weights for "
                               f"{len(STYLE_LAYERS)} style layers ({', '.join(STYLE_LAYERS)})")
        if not (content_weight or style_weight):
            raise ControlError("content_weight and style_weight are both 0: nothing to solve")
        self.enc, self.n = enc, content.shape[0]
        self.weights = {"content": float(content_weight), "style": float(style_weight)}
        self.terms = []  # (term, layer, weight, module)
        # the content target through the same (unfused, autograd) path as the solver's
        # gradients, so the content loss at the content image is exactly 0
        with torch.enable_grad():
            cf = {k: v.detach() for k, v in
                  enc(content.detach().requires_grad_(True), [CONTENT_LAYER],
                      fp32=False).items()}
        with torch.no_grad():
            sfs = [enc(s, STYLE_LAYERS) for s in styles]
        self.terms.append(("content", CONTENT_LAYER, 1.0, L.ContentLoss(cf[CONTENT_LAYER])))
        for layer, lw in zip(STYLE_LAYERS, layer_weights):
            if not lw:
                continue
            feats = [sf[layer] for sf in sfs]
            if masks is None:  # one Gram target: the styles' weighted mix, as gatys'
                self.terms.append(("style", layer, float(lw),
                                   _mixed_style_loss("gram", feats, weights)))
                continue
            for f, m in zip(feats, masks):
                if float(m.sum()) > 0:  # a white mask: that style at full weight there
                    self.terms.append(("style", layer, float(lw), _style_loss("gram", f, m)))
        self.layers = sorted({layer for _, layer, _, _ in self.terms}, key=LAYERS.index)

    def __call__(self, x):
        """(loss summed over the batch, {term: float, 'total': float})."""
        feats = self.enc(x, self.layers, fp32=False)
        sums = {}
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.enc.autocast):
            for term, layer, w, mod in self.terms:
                if self.weights[term]:
                    v = w * mod(feats[layer]).float()
                    sums[term] = v if term not in sums else sums[term] + v
        parts = {k: (self.weights[k], v * self.n) for k, v in sums.items()}
        if not parts:  # content_weight 0 and every style layer weight 0: a zero loss
            parts = {"style": (1.0, x.sum() * 0.0)}
        return L.weighted_sum(parts)

    def gradient(self, x, create_graph: bool = False):
        """(d loss / d x, losses at x). ``create_graph``: keep the graph (training)."""
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            loss, log = self(x)
            g, = torch.autograd.grad(loss, x, create_graph=create_graph)
        return g, log


# ------------------------------------------------------------------------------- the solver
def gradient_scale(g: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """The per-image root mean square of ``g`` (:func:`stats.rms`, detached; (N, 1, 1, 1),
    at least 1e-6), or ``previous`` where that is larger: the running maximum of the blocks'
    gradient scales, which each block's gradient is divided by."""
    r = S.rms(g.detach())
    return r if previous is None else torch.maximum(r, previous)


class Block(nn.Module):
    """One unrolled step's learned update ``U(x, g^) = step * g^ + conv_out(relu(conv_mid(
    relu(conv_in([x - 0.5, g^])))))``."""

    def __init__(self, width: int):
        super().__init__()
        self.conv_in = nn.Conv2d(6, width, 3, padding=1, padding_mode="reflect")
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1, padding_mode="reflect")
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1, padding_mode="reflect")
        self.step = nn.Parameter(torch.tensor(STEP0))
        with torch.no_grad():  # start as plain normalised gradient descent
            self.conv_out.weight.zero_()
            self.conv_out.bias.zero_()

    def forward(self, x, g):
        h = F.relu(self.conv_in(torch.cat([x - 0.5, g], 1)))
        h = F.relu(self.conv_mid(h))
        return self.step * g + self.conv_out(h)


class Solver(nn.Module):
    """``blocks`` :class:`Block` s of ``width`` channels."""

    def __init__(self, blocks: int, width: int):
        super().__init__()
        if blocks < 1 or width < 1:
            raise BrushworkError(f"fcs: blocks and width must be at least 1, got {blocks}, "
                                 f"{width}")
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))

    def block(self, k: int) -> Block:
        """Block ``k``; past the last one, the last one."""
        return self.blocks[min(k, len(self.blocks) - 1)]

    def run(self, x, objective: Objective, n: int | None = None, *, train: bool = False,
            on_block=None):
        """Run ``n`` blocks (default: all) from ``x``; returns (image, [losses at each block's
        input]), the losses dicts of floats. ``train``: keep the graph through the gradients
        and updates (to backpropagate into the blocks). ``on_block(k, x, log)`` is called
        after block ``k`` with its output and the losses at its input."""
        n = len(self.blocks) if n is None else n
        logs, scale = [], None
        for k in range(n):
            g, log = objective.gradient(x, create_graph=train)
            logs.append(log)
            scale = gradient_scale(g, scale)
            with torch.set_grad_enabled(train):
                x = x - self.block(k)(x, g / scale)
            if on_block is not None:
                on_block(k, x, log)
        return x, logs


# ------------------------------------------------------------------------------- the method
class FCS:
    name = "fcs"
    summary = ("flexible convolutional solver (Puy & Perez): Gatys gradient descent unrolled "
               "into a few learned blocks; layer weights, masks and styles change at run time")
    controls = CONTROLS
    capabilities = Capabilities(options=("weights",), iterative=True)

    def __init__(self, device="cpu", weights=None, bf16: bool | None = None):
        self.device, self.bf16, state, meta, path = ff.open_weights("fcs", weights, DEFAULT_FILE,
                                                                    TRAIN_HINT, device, bf16)
        self.meta = meta
        try:
            blocks, width = int(meta["blocks"]), int(meta["width"])
        except (KeyError, ValueError):
            raise BrushworkError(f"{path}: fcs weight file lacks valid 'blocks'/'width' "
                                 f"metadata") from None
        defaults = {"iterations": str(blocks),
                    "style_weight": meta.get("style_weight"),
                    "content_weight": meta.get("content_weight"),
                    "style_layer_weights": meta.get("style_layer_weights")}
        try:
            self.control_defaults = {k: self.controls[k].parse(v) for k, v in defaults.items()
                                     if v not in (None, "None")}
        except BrushworkError as e:
            raise BrushworkError(f"{path}: bad metadata ({e})") from None
        self.solver = ff.load_frozen(Solver(blocks, width), "solver", state, path, self.device)
        self.encoder = VGG19(device=self.device, autocast=self.bf16, last_layer="relu5_1",
                             channels_last=True)
        self.weight_files = [path, self.encoder.weights_file]

    def _controls(self, controls) -> dict:
        """The user's controls over the weight file's defaults (``None`` = not set)."""
        if controls is None:
            return dict(self.control_defaults)
        if isinstance(controls, Mapping):
            given = {k: v for k, v in controls.items() if v is not None}
            return {**self.control_defaults, **given}
        return controls  # begin refuses it with a one-line error

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None) -> torch.Tensor:
        c, weights = begin(self, styles, style_weights, self._controls(controls))
        clock = Clock()
        layer_weights = c["style_layer_weights"] or [1.0 / len(STYLE_LAYERS)] * len(STYLE_LAYERS)
        content, styles, masks, content_rgb = ff.prepare(content, styles, c, self.device)
        hw = tuple(content.shape[-2:])
        objective = Objective(self.encoder, content, styles, weights, masks, layer_weights,
                              c["content_weight"], c["style_weight"])
        n = c["iterations"]

        def on_block(k, x, log):
            emit(callback, Progress(self.name, "step", k + 1, n, size=hw, losses=log,
                                    elapsed=clock(),
                                    image=None if callback is None
                                    else x.detach().clamp(0, 1).cpu().clone()))

        x, _ = self.solver.run(content.clone(), objective, n, on_block=on_block)
        out = ff.finish(x.detach(), hw, content_rgb)
        emit(callback, Progress(self.name, "done", n, n, size=hw, elapsed=clock()))
        return out

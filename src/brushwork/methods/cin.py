"""Dumoulin, Shlens & Kudlur 2017, "A Learned Representation for Artistic Style": N styles in
one network through conditional instance norm (CIN).

The network is :class:`~brushwork.methods.johnson.TransformerNet` with ``n_styles`` = N: every
norm layer holds an (N, C) table of gamma and beta, and a style is a row. Blends mix the rows:
``--style-id 3:0.5,7:0.5`` uses gamma = 0.5 gamma_3 + 0.5 gamma_7 (and beta likewise) in every
layer. With ``--mask`` (one per style of the blend) the styles are instead painted per region:
the net runs once per style and the results are composited by the normalised masks.

A new style is added to a trained model by training only its own gamma/beta rows (all other
weights frozen; MetaStyle-like fast adaptation): minutes on a CPU.

    brushwork train cin --style A.jpg --style B.jpg ... --content DIR --out F.safetensors
    brushwork train cin --add-style F.safetensors --style NEW.jpg --content DIR --out G.safetensors
"""
from __future__ import annotations

import json

import torch


from ..core.device import has_bf16, pick_device
from ..errors import BrushworkError, ControlError
from ..core.image import load_mask
from ..core.protocol import (Capabilities, begin, MASKS, PRESERVE_COLOR, STRENGTH, Clock, Control, Progress, emit)
from . import johnson

SHIPPED_FILE = "cin_classic.safetensors"
TRAIN_HINT = "brushwork train cin --style A.jpg --style B.jpg ... --content DIR --out F.safetensors"

STYLE_ID = Control("style_id", "str", "0",
                   "built-in style: an index or name (see `brushwork sheet`), or a blend "
                   "'3:0.5,7:0.5' of indices/names with weights")


def _name_matches(key: str, names: list[str]) -> list[int]:
    """Indices of the names ``key`` picks (case-insensitive): an exact name, else a prefix of
    the name, else a prefix of one of its ``_``-separated words ("monet" -> "claude_monet",
    "van_gogh" -> "vincent_van_gogh")."""
    k = key.lower()
    low = [nm.lower() for nm in names]

    def later_words(nm):  # "vincent_van_gogh" -> "van_gogh", "gogh"
        words = nm.split("_")
        return ("_".join(words[i:]) for i in range(1, len(words)))

    for test in (lambda nm: nm == k, lambda nm: nm.startswith(k),
                 lambda nm: any(w.startswith(k) for w in later_words(nm))):
        matches = [j for j, nm in enumerate(low) if test(nm)]
        if matches:
            return matches
    return []


def parse_style_id(spec, names: list[str], what: str = "style_id") -> list[tuple[int, float]]:
    """'3' / 'starry_night' / 'monet' / '3:0.5,7:0.5' -> [(index, weight), ...] with weights
    summing to 1. Names match exactly, by prefix, or by the prefix of a later word."""
    n = len(names)
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ControlError(f"{what}: empty")
    out = []
    for p in parts:
        key, _, w = p.partition(":")
        key = key.strip()
        if key.lstrip("-").isdigit():
            i = int(key)
        else:
            matches = _name_matches(key, names)
            if len(matches) != 1:
                raise ControlError(f"{what}: {key!r} matches {len(matches)} of the styles "
                                   f"({', '.join(f'{j}={nm}' for j, nm in enumerate(names))})")
            i = matches[0]
        if not 0 <= i < n:
            raise ControlError(f"{what}: {i} is out of range (this model has styles 0..{n - 1})")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ControlError(f"{what}: cannot read weight {w!r} in {p!r}") from None
        if not weight >= 0 or weight == float("inf"):
            raise ControlError(f"{what}: weight {w!r} must be finite and non-negative")
        out.append((i, weight))
    total = sum(w for _, w in out)
    if total <= 0:
        raise ControlError(f"{what}: the weights must not all be zero")
    return [(i, w / total) for i, w in out]


def mix_vector(pairs: list[tuple[int, float]], n_styles: int) -> torch.Tensor:
    """[(index, weight)] -> (1, N) mixing row for the CIN tables."""
    v = torch.zeros(1, n_styles)
    for i, w in pairs:
        v[0, i] += w
    return v


class CIN:
    name = "cin"
    summary = "Dumoulin et al. 2017: N built-in styles in one net (conditional instance norm), blends"
    capabilities = Capabilities(styles="labels")
    controls = {c.name: c for c in (STYLE_ID, STRENGTH, PRESERVE_COLOR, MASKS)}

    def __init__(self, device="cpu", weights=None, bf16: bool = True, **options):
        if options:
            raise BrushworkError(f"cin: unknown option(s) {', '.join(sorted(options))}")
        self.device = pick_device(device)
        self.net, meta, path = johnson.load_net(weights, SHIPPED_FILE, TRAIN_HINT, self.device)
        self.weight_files = [path]
        try:
            self.style_names = json.loads(meta.get("style_names", "[]"))
        except ValueError:
            self.style_names = []
        if len(self.style_names) != self.net.n_styles:
            self.style_names = [f"style{i}" for i in range(self.net.n_styles)]
        self.bf16 = bf16 and has_bf16(self.device)

    def labels(self) -> list[str]:
        return [f"{i}: {n}" for i, n in enumerate(self.style_names)]

    def render_all(self, content, controls=None) -> list[torch.Tensor]:
        """Every built-in style on one image (for `brushwork sheet`)."""
        out = []
        for i in range(self.net.n_styles):
            out.append(self.stylize(content, controls={**(controls or {}), "style_id": str(i)}))
        return out

    supports_tiling = True  # stylize() takes ``tile`` and ``max_memory``

    def stylize(self, content, styles=None, *, style_weights=None, controls=None, seed=None,
                callback=None, tile=None, max_memory=None) -> torch.Tensor:
        """``tile``/``max_memory``: large images tile by tile with thumbnail conditional
        instance norms (:func:`brushwork.methods.johnson.run_tiled`)."""
        c, _ = begin(self, styles, style_weights, controls)
        clock = Clock()
        pairs = parse_style_id(c["style_id"], self.style_names)
        n = self.net.n_styles
        masks = None
        if c["masks"]:
            if len(c["masks"]) != len(pairs):
                raise ControlError(f"cin: {len(c['masks'])} mask(s) for {len(pairs)} style(s) in "
                                   f"style_id (give one mask per style)")
            size = tuple(content.shape[-2:])
            masks = torch.cat([load_mask(m, size) for m in c["masks"]])
            masks = masks / masks.sum(0, keepdim=True).clamp_min(1e-6)
        planned = johnson.plan_net(self.name, self.net, content, mix_vector(pairs, n), self.bf16,
                                   tile, max_memory, n_runs=len(pairs) if masks is not None else 1)
        if planned is not None:
            runs = ([(mix_vector(pairs, n), None)] if masks is None else
                    [(mix_vector([(i, 1.0)], n), masks[k:k + 1]) for k, (i, _) in
                     enumerate(pairs)])
            out = johnson.run_tiled(self.net, content, runs, self.bf16, planned,
                                    johnson._tile_events(self.name, callback, clock))
            out = johnson.finish_tiled(self.name, out, content, c)
            emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                    elapsed=clock()))
            return out
        if masks is not None:
            outs = [johnson.run_net(self.net, content, mix_vector([(i, 1.0)], n), self.bf16).cpu()
                    for i, _ in pairs]
            out = sum(m[None] * o for m, o in zip(masks, outs))
        else:
            out = johnson.run_net(self.net, content, mix_vector(pairs, n), self.bf16).cpu()
        out = johnson.finish(self.name, out, content, c)
        emit(callback, Progress(self.name, "done", 1, 1, size=tuple(content.shape[-2:]),
                                elapsed=clock()))
        return out

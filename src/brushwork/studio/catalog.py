"""What the studio offers: the methods with their controls (as the CLI has them) and the
bundled style images.

Each control is described by its name, kind, default, range, choices and help, plus the widget
the page draws for it: ``slider`` (a number with both bounds), ``number`` (a number without),
``toggle`` (bool), ``select`` (choices), ``text`` (strings and lists), ``mask`` (the ``masks``
control: the page's mask brush) or ``image`` (another image-valued control: a file).
"""
from __future__ import annotations

import io
import threading
from typing import Any

from ..cli.common import control_flag, visible_controls
from ..methods import METHODS

# the control that picks the built-in style(s) of a label method
LABEL_CONTROLS = ("style_id", "artist")
# constructor options the page offers (``weights`` is a server path: not offered)
OPTION_CHOICES = {"encoder": ("vgg", "small")}
DEFAULT_SIZE = 512  # the output long side when a request gives none (as the CLI)


def widget(c) -> str:
    if c.kind == "images":
        return "mask" if c.name == "masks" else "image"
    if c.kind == "bool":
        return "toggle"
    if c.choices:
        return "select"
    if c.kind in ("float", "int"):
        return "slider" if c.low is not None and c.high is not None else "number"
    return "text"


def describe_control(c) -> dict[str, Any]:
    default = c.default
    if isinstance(default, tuple):
        default = list(default)
    return {"name": c.name, "kind": c.kind, "type": widget(c), "default": default,
            "low": c.low, "high": c.high,
            "choices": list(c.choices) if c.choices is not None else None,
            "help": c.help, "flag": control_flag(c.name)}


def label_control(cls) -> str | None:
    if cls.capabilities.styles != "labels":
        return None
    return next((n for n in LABEL_CONTROLS if n in cls.controls), None)


class Catalog:
    """The methods' descriptions (label methods' labels need an instance: made once, on first
    use) and the bundled styles (generated once, kept as PNG bytes)."""

    def __init__(self, get_stylizer):
        self._get = get_stylizer
        self._lock = threading.Lock()
        self._methods = None
        self._styles: dict[str, bytes] = {}

    def methods(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._methods is None:
                self._methods = [self._describe(name, cls) for name, cls in METHODS.items()]
            return self._methods

    def _describe(self, name, cls) -> dict[str, Any]:
        caps = cls.capabilities
        d = {"name": name, "summary": cls.summary,
             "capabilities": {"styles": caps.styles, "options": list(caps.options),
                              "iterative": caps.iterative,
                              "temporal_hooks": caps.temporal_hooks},
             "controls": [describe_control(c) for c in visible_controls(cls).values()],
             "options": {k: {"choices": list(v), "default": v[0]}
                         for k, v in OPTION_CHOICES.items() if k in caps.options},
             "labels": None, "label_control": label_control(cls),
             "masks": "masks" in cls.controls}
        if caps.styles == "labels":
            try:
                d["labels"] = list(self._get(name).labels())
            except Exception as e:  # a missing or broken weight file: listed without labels
                d["labels"] = []
                d["error"] = f"{type(e).__name__}: {e}"
        return d

    def method(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.methods() if m["name"] == name), None)

    # ------------------------------------------------------------------ bundled styles
    STYLES = {
        "swirls": "brushwork's generated night-sky painting: strokes along a field of swirls",
        "swirls-ember": "the swirl painting with other vortices",
        "gravel": "scikit-image's gravel texture, tinted",
        "hubble": "the Hubble deep field (scikit-image)",
    }

    def style_names(self) -> list[dict[str, str]]:
        return [{"name": n, "title": t, "url": f"/api/styles/{n}"} for n, t in self.STYLES.items()]

    def style_png(self, name: str) -> bytes | None:
        if name not in self.STYLES:
            return None
        with self._lock:
            if name not in self._styles:
                buf = io.BytesIO()
                _make_style(name).save(buf, format="PNG")
                self._styles[name] = buf.getvalue()
            return self._styles[name]


def _make_style(name: str):
    import numpy as np
    from PIL import Image
    from skimage import data

    from ..cli.demo import swirl_painting

    if name == "swirls":
        return swirl_painting(384, seed=0)
    if name == "swirls-ember":
        return swirl_painting(384, seed=5)
    if name == "gravel":
        g = np.asarray(Image.fromarray(data.gravel()).resize((384, 384), Image.BICUBIC),
                       dtype=np.float32) / 255.0
        rgb = np.stack([0.35 + 0.65 * g, 0.2 + 0.6 * g ** 1.4, 0.1 + 0.4 * g ** 2], -1)
        return Image.fromarray((rgb.clip(0, 1) * 255).astype(np.uint8), "RGB")
    im = Image.fromarray(data.hubble_deep_field())
    return im.resize((384, round(384 * im.height / im.width)), Image.BICUBIC)

"""The Python API: ``brushwork.stylize(content, style_or_styles, method="gatys", **controls)``."""
from __future__ import annotations

from typing import Callable

from PIL import Image

from .image import resize_long_side, to_pil, to_tensor
from .methods import get_method
from .protocol import Progress

_instances: dict[tuple[str, str], object] = {}


def get_stylizer(method: str = "gatys", device: str = "cpu", **options):
    """A method instance (created once per method/device/options and reused: weights load once)."""
    key = (method, device, tuple(sorted(options.items())))
    if key not in _instances:
        _instances[key] = get_method(method)(device=device, **options)
    return _instances[key]


def stylize(content, style_or_styles=None, method: str = "gatys", *,
            style_weights=None, size: int | None = 512, seed: int | None = 0,
            callback: Callable[[Progress], None] | None = None, device: str = "cpu",
            max_pixels: int | None = None, method_options: dict | None = None,
            **controls) -> Image.Image:
    """Stylise ``content`` with one or several styles and return a PIL image.

    ``content`` and each style may be a path, a PIL image, a numpy array or a tensor.
    ``size`` is the output's long side (None keeps the content's size). ``controls`` are the
    method's controls (see ``brushwork methods``); one it does not support raises ControlError.
    """
    if style_or_styles is None:
        styles = []
    elif isinstance(style_or_styles, (list, tuple)):
        styles = list(style_or_styles)
    else:
        styles = [style_or_styles]
    stylizer = get_stylizer(method, device, **(method_options or {}))
    c = resize_long_side(to_tensor(content, max_pixels=max_pixels), size)
    s = [to_tensor(x, max_pixels=max_pixels) for x in styles]
    out = stylizer.stylize(c, s, style_weights=style_weights, controls=controls, seed=seed,
                           callback=callback)
    return to_pil(out)

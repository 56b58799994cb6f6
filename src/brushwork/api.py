"""The Python API: ``brushwork.stylize(content, style_or_styles, method="gatys", **controls)``.

Every request, from the CLI, the API or the studio, goes through :func:`stylize_tensors`: the one
place that checks the method, its options, the device, the size, the seed, the images and the
controls before any work starts.
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from .core import validate
from .core.device import pick_device
from .core.image import resize_long_side, to_pil, to_tensor
from .core.protocol import Progress
from .errors import ControlError
from .methods import get_method

_instances: dict[tuple, object] = {}


def get_stylizer(method: str = "gatys", device: str = "cpu", **options):
    """A method instance (created once per method/device/options and reused: weights load
    once). Unknown methods, options and devices raise BrushworkError."""
    return _stylizer(method, device, options)


def _stylizer(method, device, options):
    cls = get_method(method)
    options = validate.check_options(cls, options)  # a mapping, before anything unpacks it
    dev = pick_device(device)
    key = (method, str(dev), tuple(sorted((k, str(v)) for k, v in options.items())))
    if key not in _instances:
        _instances[key] = cls(device=dev, **options)
    return _instances[key]


def stylize_tensors(content: torch.Tensor, styles: list[torch.Tensor], method: str = "gatys", *,
                    style_weights=None, size: int | None = None, seed: int | None = 0,
                    device: str = "cpu", method_options: dict | None = None,
                    controls: dict | None = None,
                    callback: Callable[[Progress], None] | None = None,
                    tile: int | str | None = None,
                    max_memory: int | str | None = None) -> torch.Tensor:
    """Checked stylisation of (1, 3, H, W) tensors: ``size`` is the output's long side (None or
    0 keeps the content's size). Returns a (1, 3, H, W) tensor in [0, 1].

    ``tile``: None (the method tiles only when the whole image does not fit ``max_memory``),
    "auto" (tiles of the memory planner's size) or a tile side in pixels; ``max_memory``: the
    memory budget in bytes or as "4G"/"512M" (None: a share of the available memory). A method
    that cannot tile refuses a ``tile`` with ControlError; a budget no tile fits is a
    ResourceError."""
    size = validate.check_size(size)
    seed = validate.check_seed(seed)
    tile = validate.check_tile(tile)
    max_memory = validate.check_max_memory(max_memory)
    validate.check_image_tensor(content, "the content image")
    if not isinstance(styles, (list, tuple)):
        raise ControlError(f"styles must be a list of image tensors, got {type(styles).__name__}")
    for i, s in enumerate(styles):
        validate.check_image_size(validate.check_image_tensor(s, f"style image {i + 1}"),
                                  f"style image {i + 1}")
    stylizer = _stylizer(method, device, method_options)
    tiles = {}
    if getattr(type(stylizer), "supports_tiling", False):
        tiles = {"tile": tile, "max_memory": max_memory}
    elif tile is not None or max_memory is not None:
        flag = "tile" if tile is not None else "max_memory"
        raise ControlError(f"method {method!r} cannot work tile by tile (it takes no {flag}); "
                           f"use a smaller size")
    content = validate.check_image_size(resize_long_side(content, size), "the content image")
    h, w = content.shape[-2:]
    with validate.memory_guard(lambda: f"stylising {w}x{h} pixels with {method}"):
        return stylizer.stylize(content, styles, style_weights=style_weights, controls=controls,
                                seed=seed, callback=callback, **tiles)


def stylize(content, style_or_styles=None, method: str = "gatys", *,
            style_weights=None, size: int | None = 512, seed: int | None = 0,
            callback: Callable[[Progress], None] | None = None, device: str = "cpu",
            max_pixels: int | None = None, method_options: dict | None = None,
            tile: int | str | None = None, max_memory: int | str | None = None,
            **controls) -> Image.Image:
    """Stylise ``content`` with one or several styles and return a PIL image.

    ``content`` and each style may be a path, a PIL image, a numpy array (uint8 0..255,
    uint16 0..65535, or float 0..1) or a tensor. ``size`` is the output's long side (None or 0
    keeps the content's size). ``controls`` are the method's controls (see
    ``brushwork methods``); one it does not support raises ControlError. Methods with built-in
    styles (johnson, cin, asma) take no style images.
    ``tile`` and ``max_memory``: as for :func:`stylize_tensors` (large images tile by tile).
    """
    if style_or_styles is None:
        styles = []
    elif isinstance(style_or_styles, (list, tuple)):
        styles = list(style_or_styles)
    else:
        styles = [style_or_styles]
    max_pixels = validate.check_max_pixels(max_pixels)
    c = to_tensor(content, max_pixels=max_pixels)
    s = [to_tensor(x, max_pixels=max_pixels) for x in styles]
    out = stylize_tensors(c, s, method, style_weights=style_weights, size=size, seed=seed,
                          device=device, method_options=method_options, controls=controls,
                          callback=callback, tile=tile, max_memory=max_memory)
    return to_pil(out)

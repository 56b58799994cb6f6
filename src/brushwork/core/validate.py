"""Validation in one place: the checks the CLI, the Python API and the studio share.

Every check raises a :class:`~brushwork.errors.BrushworkError` subclass with a one-line
message; the ``*_arg`` variants are argparse types (they raise ``argparse.ArgumentTypeError``,
which the CLI prints as one ``brushwork: error:`` line).
"""
from __future__ import annotations

import argparse
import math
import numbers
from typing import Any, Mapping

import torch

from ..errors import BrushworkError, ControlError, ImageError

MIN_SIDE = 16      # smallest image side (pixels) any method works on
MAX_SIDE = 16384   # largest output long side (pixels)
MAX_SEED = 2 ** 63 - 1


def _integer(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ControlError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def check_size(value, what: str = "size") -> int | None:
    """An output long side: None or 0 = keep the input's size; else MIN_SIDE..MAX_SIDE."""
    if value is None:
        return None
    v = _integer(value, what)
    if v == 0:
        return None
    if v < 0:
        raise ControlError(f"{what} must be positive (0 keeps the input's size), got {v}")
    if v < MIN_SIDE:
        raise ControlError(f"{what} {v} is below the minimum of {MIN_SIDE} pixels")
    if v > MAX_SIDE:
        raise ControlError(f"{what} {v} is above the maximum of {MAX_SIDE} pixels")
    return v


def check_image_size(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Refuse images with a side below MIN_SIDE (the networks' poolings need room)."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{what} is {w}x{h} pixels; every side must be at least {MIN_SIDE} "
                         f"(use a larger image or --size)")
    return x


def check_seed(value) -> int | None:
    if value is None:
        return None
    v = _integer(value, "seed")
    if not 0 <= v <= MAX_SEED:
        raise ControlError(f"seed must be in 0..2**63-1, got {v}")
    return v


def check_max_pixels(value) -> int | None:
    """The decompression-bomb guard: None (the default) or a finite positive pixel count."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ControlError(f"max_pixels must be a number, got {value!r}")
    if not math.isfinite(value) or value < 1:
        raise ControlError(f"max_pixels must be a finite number >= 1, got {value!r}")
    return int(value)


def check_options(method_cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Constructor options of a method: a mapping whose keys the method declares in
    ``capabilities.options``."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ControlError(f"method options must be a mapping, got {type(options).__name__}")
    allowed = method_cls.capabilities.options
    bad = [k for k in options if k not in allowed]
    if bad:
        have = ", ".join(allowed) or "none"
        flags = ", ".join("--" + str(k).replace("_", "-") for k in bad)
        raise ControlError(f"method {method_cls.name!r} does not take {flags} (its options: "
                           f"{have})")
    return dict(options)


def _arg(check):
    def parse(text: str):
        try:
            return check(int(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        except BrushworkError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = check.__name__.replace("check_", "")
    return parse


size_arg = _arg(check_size)
seed_arg = _arg(check_seed)


def max_pixels_arg(text: str) -> int:
    try:
        return check_max_pixels(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    except BrushworkError as e:
        raise argparse.ArgumentTypeError(str(e)) from None

"""Validation in one place: the checks the CLI, the Python API and the studio share.

Every check raises a :class:`~brushwork.errors.BrushworkError` subclass with a one-line
message; the ``*_arg`` variants are argparse types (they raise ``argparse.ArgumentTypeError``,
which the CLI prints as one ``brushwork: error:`` line).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ..errors import BrushworkError, ControlError, ImageError, ResourceError

if TYPE_CHECKING:  # torch loads on first use: the argparse types need none of it
    import torch

MIN_SIDE = 16      # smallest image side (pixels) any method works on
MAX_SIDE = 16384   # largest output long side (pixels)
MAX_SEED = 2 ** 63 - 1


def _integer(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ControlError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def check_size(value, what: str = "size", *, keep: bool = True) -> int | None:
    """An output long side: None or 0 = keep the input's size; else MIN_SIDE..MAX_SIDE.
    ``keep=False``: a size is required (0 and None are refused)."""
    if value is None and keep:
        return None
    if value is None:
        raise ControlError(f"{what} is required ({MIN_SIDE}..{MAX_SIDE} pixels)")
    v = _integer(value, what)
    if v == 0 and keep:
        return None
    if v <= 0:
        keeps = " (0 keeps the input's size)" if keep else ""
        raise ControlError(f"{what} must be positive{keeps}, got {v}")
    if v < MIN_SIDE:
        raise ControlError(f"{what} {v} is below the minimum of {MIN_SIDE} pixels")
    if v > MAX_SIDE:
        raise ControlError(f"{what} {v} is above the maximum of {MAX_SIDE} pixels")
    return v


def check_image_tensor(x, what: str = "image") -> torch.Tensor:
    """An image tensor as every method takes it: (1, 3, H, W) (or (N, 3, H, W)) floats, with
    pixels (H, W > 0). Checked before any resizing, so an empty image fails here."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise ImageError(f"{what} must be an image tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ImageError(f"{what} must be a (1, 3, H, W) tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        h, w = x.shape[-2:]
        raise ImageError(f"{what} is empty ({w}x{h} pixels)")
    if not x.is_floating_point():
        raise ImageError(f"{what} must be a float tensor in [0, 1], got {x.dtype}")
    return x


def check_image_size(x: torch.Tensor, what: str = "image",
                     hint: str = "use a larger image or --size") -> torch.Tensor:
    """Refuse images with a side below MIN_SIDE (the networks' poolings need room)."""
    check_frame_size(tuple(x.shape[-2:]), what, hint)
    return x


def check_frame_size(hw: tuple[int, int], what: str = "image",
                     hint: str = "use a larger image or --size") -> tuple[int, int]:
    """:func:`check_image_size` for an (H, W) pair (frames not decoded yet)."""
    h, w = hw
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{what} is {w}x{h} pixels; every side must be at least {MIN_SIDE} "
                         f"({hint})")
    return hw


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


def check_number(value, what: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False):
    """A finite number (a whole one if ``integer``) within [low, high] (``low_open``: > low)."""
    if integer:
        v = _integer(value, what)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ControlError(f"{what} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise ControlError(f"{what} must be a finite number, got {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ControlError(f"{what} must be {'>' if low_open else '>='} {low:g}, got {v:g}")
    if high is not None and v > high:
        raise ControlError(f"{what} must be <= {high:g}, got {v:g}")
    return v


def check_names(value, what: str) -> list[str]:
    """A non-empty list of names: a comma-separated string or a sequence of strings."""
    if isinstance(value, str):
        names = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value if v.strip()]
    else:
        raise ControlError(f"{what} must be a comma-separated list of names, got {value!r}")
    if not names:
        raise ControlError(f"{what} needs at least one name, got {value!r}")
    return names


# ------------------------------------------------------------------------ output paths
def check_output_parent(path, what: str = "output", *, error: type = BrushworkError) -> Path:
    """The folder ``path`` would be written in exists, is a folder and is writable (the path
    itself may be a new file or folder). Raises ``error`` (a BrushworkError subclass)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise error(f"{path}: {what} directory {parent} does not exist")
    if not parent.is_dir():
        raise error(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{path}: {what} directory {parent} is not writable")
    return path


def check_output_file(path, what: str = "output", *, error: type = BrushworkError) -> Path:
    """A file path that can be written: :func:`check_output_parent`, and the path is not a
    folder."""
    path = check_output_parent(path, what, error=error)
    if path.is_dir():
        raise error(f"{path}: is a directory")
    return path


def same_file(a, b) -> bool:
    """Whether two paths name the same file or folder (however they are spelled)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_not_input(path, inputs=(), *, error: type = BrushworkError) -> Path:
    """Refuse an output path that is one of the ``inputs`` (paths; other values are ignored):
    writing a result over its own input is never what the user meant."""
    path = Path(path)
    for src in inputs:
        if isinstance(src, (str, os.PathLike)) and same_file(src, path):
            raise error(f"{path}: the output would overwrite the input {src}; choose "
                        f"another output path")
    return path


# ----------------------------------------------------------------------------- memory
def _out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        k in text for k in ("out of memory", "not enough memory", "allocate memory",
                            "memory allocation", "can't allocate"))


@contextlib.contextmanager
def memory_guard(describe: Callable[[], str]) -> Iterator[None]:
    """Turn MemoryError and out-of-memory RuntimeErrors (CPU or CUDA) inside the block into a
    one-line ResourceError; ``describe()`` names the work (e.g. "stylising 512x384 pixels
    with adain")."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        raise ResourceError(f"out of memory {describe()}; use a smaller size") from None


# --------------------------------------------------------------------- argparse types
def _arg(check, convert=int, kind="a whole number"):
    def parse(text: str):
        try:
            return check(convert(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        except BrushworkError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = check.__name__.replace("check_", "")
    return parse


def int_arg(low: int | None = None, high: int | None = None, what: str = "value"):
    """An argparse type: a whole number in [low, high]."""
    def check_int(v):
        return check_number(v, what, low=low, high=high, integer=True)
    return _arg(check_int)


def float_arg(low: float | None = None, high: float | None = None, *, low_open: bool = False,
              what: str = "value"):
    """An argparse type: a finite number in [low, high] (``low_open``: above low)."""
    def check_float(v):
        return check_number(v, what, low=low, high=high, low_open=low_open)
    return _arg(check_float, float, "a number")


def _check_strict_size(v):
    return check_size(v, keep=False)


def _check_names(text):
    return check_names(text, "the list")


size_arg = _arg(check_size)                 # 0 keeps the input's size
output_size_arg = _arg(_check_strict_size)  # a size is required: MIN_SIDE..MAX_SIDE
seed_arg = _arg(check_seed)
positive_int_arg = int_arg(1)
non_negative_float_arg = float_arg(0.0)
unit_float_arg = float_arg(0.0, 1.0)
names_arg = _arg(_check_names, str, "a list of names")
max_pixels_arg = _arg(check_max_pixels, float, "a number")


def check_bit_depth(value) -> int:
    """Bits per channel of a written image: 8 or 16."""
    v = _integer(value, "bit depth")
    if v not in (8, 16):
        raise ControlError(f"bit depth must be 8 or 16, got {v}")
    return v


bit_depth_arg = _arg(check_bit_depth)  # --bit-depth: 8 or 16


# ------------------------------------------------------------------ tiles and memory
def check_tile(value) -> int | str | None:
    """A tile request: None (tile only when needed), "auto" (the planner's size) or a tile
    side in pixels (tiling.MIN_TILE..MAX_SIDE)."""
    from .tiling import MIN_TILE
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = int(text)
        except ValueError:
            raise ControlError(f"tile must be 'auto' or a tile side in pixels, got "
                               f"{value!r}") from None
    v = _integer(value, "tile")
    if not MIN_TILE <= v <= MAX_SIDE:
        raise ControlError(f"tile must be 'auto' or {MIN_TILE}..{MAX_SIDE} pixels, got {v}")
    return v


def check_max_memory(value) -> int | None:
    """A memory budget: None (the default share of the available memory), a byte count or a
    size such as "4G", "512M" (tiling.parse_memory)."""
    from .tiling import parse_memory
    return None if value is None else parse_memory(value)


tile_arg = _arg(check_tile, str, "'auto' or a number of pixels")
memory_arg = _arg(check_max_memory, str, "a size such as 4G or 512M")

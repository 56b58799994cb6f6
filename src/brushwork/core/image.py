"""Image I/O: robust loading to float tensors, resizing, atomic saving.

Tensors are ``(1, 3, H, W)`` float32 RGB in [0, 1] unless said otherwise.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ControlError, ImageError
from . import validate
from .files import atomic_write

# Guard against decompression bombs: images with more pixels are refused unless overridden
# (``max_pixels=`` argument, ``--max-pixels`` flag or ``BRUSHWORK_MAX_PIXELS``).
DEFAULT_MAX_PIXELS = 80_000_000
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what folders of images are searched for


def list_images(root) -> list[Path]:
    """All jpg/jpeg/png files under ``root`` (recursive, sorted); raises if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a directory of training images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{root}: no .jpg or .png images found (searched recursively)")
    return files


def max_pixels_default() -> int:
    env = os.environ.get("BRUSHWORK_MAX_PIXELS")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ImageError(f"BRUSHWORK_MAX_PIXELS must be a number, got {env!r}") from None
    return DEFAULT_MAX_PIXELS


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own guard below, before any decoding
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot open image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(f"{path}: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the pixel guard of "
                         f"{max_pixels / 1e6:.1f} MP (raise it with --max-pixels or "
                         f"BRUSHWORK_MAX_PIXELS if you trust this file)")
    return im


def pil_to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 float32 RGB in [0, 1], EXIF orientation applied."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 or im.mode.startswith("I;16") else 255.0
        a = np.clip(a / top, 0, 1)
        return np.repeat(a[..., None], 3, axis=2).astype(np.float32)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return np.repeat(a[..., None], 3, axis=2).astype(np.float32)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite on white so transparent areas do not turn black.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    im = im.convert("RGB")  # handles L, P, CMYK, YCbCr, 1, ...
    return np.asarray(im, dtype=np.float32) / 255.0


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (N, C, H, W) tensor to (h, w): antialiased bicubic when shrinking."""
    h, w = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    y = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)
    return y.clamp(0, 1)


def long_side_size(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    h, w = hw
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_long_side(x: torch.Tensor, long_side: int | None) -> torch.Tensor:
    if long_side is None:
        return x
    return resize(x, long_side_size(tuple(x.shape[-2:]), long_side))


FLOAT_TOLERANCE = 0.01  # float images may overshoot [0, 1] by this much (resampling ringing)


def _scale_by_dtype(t: torch.Tensor, what: str) -> torch.Tensor:
    """Pixel values of any dtype -> float32 in [0, 1]: uint8 / 255, uint16 / 65535, other
    integers only when they fit 0..255 (then / 255), floats only within [0, 1] (small
    tolerance, then clamped), bool as 0/1. Anything else is an ImageError, never clipped."""
    dt = t.dtype
    if dt == torch.bool:
        return t.float()
    if dt.is_complex:
        raise ImageError(f"{what}: complex values are not an image")
    if dt == torch.uint8:
        return t.float().div_(255.0)
    if dt == torch.uint16:
        return t.to(torch.int32).float().div_(65535.0)
    if not dt.is_floating_point:  # int8/16/32/64, uint32/64
        t64 = t.to(torch.int64)
        lo, hi = int(t64.min()), int(t64.max())
        if lo < 0 or hi > 255:
            raise ImageError(f"{what}: {str(dt).replace('torch.', '')} values {lo}..{hi} are "
                             f"not 0..255; give uint8 (0..255), uint16 (0..65535) or floats in "
                             f"[0, 1]")
        return t64.float().div_(255.0)
    t = t.float()
    if not torch.isfinite(t).all():
        raise ImageError(f"{what} contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
        hint = " (values 0..255? divide them by 255)" if hi > 1 + FLOAT_TOLERANCE else ""
        raise ImageError(f"{what}: float values must be in [0, 1], got {lo:.4g}..{hi:.4g}{hint}")
    return t.clamp_(0, 1)


def _to_rgb(t: torch.Tensor, what: str, shape) -> torch.Tensor:
    """(N, C, H, W) with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -> (N, 3, H, W);
    alpha is composited on white, as for image files."""
    c = t.shape[1]
    if c not in (1, 2, 3, 4):
        raise ImageError(f"{what}: expected 1 (grey), 3 (RGB) or 4 (RGBA) channels, got shape "
                         f"{tuple(shape)}")
    if c in (2, 4):
        alpha = t[:, c - 1:]
        t = t[:, : c - 1] * alpha + (1.0 - alpha)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t


def _check_not_empty(h: int, w: int, what: str, n: int = 1) -> None:
    if h == 0 or w == 0 or n == 0:
        raise ImageError(f"{what} is empty ({w}x{h} pixels)")


def to_tensor(image, *, max_pixels: int | None = None) -> torch.Tensor:
    """Path / PIL image / numpy array / tensor -> (1, 3, H, W) float32 in [0, 1].

    Arrays are (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; tensors (H, W), (C, H, W) or
    (N, C, H, W). Values are converted by dtype: uint8 0..255, uint16 0..65535, other integers
    0..255, floats 0..1; values outside those ranges, NaN and empty images are ImageErrors."""
    max_pixels = max_pixels_default() if max_pixels is None else max_pixels
    if isinstance(image, torch.Tensor):
        what = "image tensor"
        t = image.detach()
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4:
            raise ImageError(f"expected an image tensor (3, H, W) or (1, 3, H, W), got "
                             f"{tuple(image.shape)}")
        _check_not_empty(t.shape[-2], t.shape[-1], what, t.shape[0])
        if t.shape[1] not in (1, 2, 3, 4):
            raise ImageError(f"expected an image tensor (3, H, W) or (1, 3, H, W), got "
                             f"{tuple(image.shape)}")
        t = _to_rgb(_scale_by_dtype(t, what), what, image.shape)
        return t.contiguous()
    if isinstance(image, np.ndarray):
        what = "image array"
        a = image
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
            raise ImageError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {image.shape}")
        _check_not_empty(a.shape[0], a.shape[1], what)
        if a.dtype.byteorder not in ("=", "|"):
            a = a.astype(a.dtype.newbyteorder("="))
        try:
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).unsqueeze(0)
        except TypeError:
            raise ImageError(f"{what}: cannot use dtype {image.dtype} as an image (give uint8, "
                             f"uint16 or float values)") from None
        return _to_rgb(_scale_by_dtype(t, what), what, image.shape).contiguous()
    if isinstance(image, Image.Image):
        w, h = image.size
        _check_not_empty(h, w, "PIL image")
        if w * h > max_pixels:
            raise ImageError(f"image of {w}x{h} exceeds the pixel guard "
                             f"of {max_pixels / 1e6:.1f} MP")
        # a lazily opened file is decoded here: truncated or corrupt data fails now
        return _decode(image, getattr(image, "filename", "") or "PIL image")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels=max_pixels)
    raise ImageError(f"cannot use {type(image).__name__} as an image (give a path, PIL image, "
                     f"numpy array or tensor)")


def load_image(path, size: int | None = None, *, max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file as (1, 3, H, W) float32 RGB in [0, 1]; optionally resize its long side."""
    max_pixels = max_pixels_default() if max_pixels is None else max_pixels
    path = Path(path)
    im = _open_checked(path, max_pixels)
    try:
        t = _decode(im, path)
    finally:
        im.close()
    return resize_long_side(t, size)


def _decode(im: Image.Image, name) -> torch.Tensor:
    """Decode a PIL image to (1, 3, H, W) float32 RGB; corrupt or truncated data -> ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
        a = pil_to_rgb_array(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    return torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0).contiguous()


def load_mask(path_or_image, size: tuple[int, int], *, max_pixels: int | None = None,
              allow_resize: bool = False) -> torch.Tensor:
    """A mask image as (1, 1, H, W) float in [0, 1] (luminance); must match ``size`` in aspect."""
    t = to_tensor(path_or_image, max_pixels=max_pixels)
    m = (0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3])
    mh, mw = m.shape[-2:]
    h, w = size
    if (mh, mw) != (h, w):
        if not allow_resize and abs(mh / mw - h / w) > 0.02:
            name = path_or_image if isinstance(path_or_image, (str, os.PathLike)) else "mask"
            raise ImageError(f"{name}: mask is {mw}x{mh} but the content is {w}x{h} "
                             f"(aspect ratios differ)")
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return m.clamp(0, 1)


def load_masks(masks, n_styles: int, size: tuple[int, int], device) -> list[torch.Tensor] | None:
    """The ``masks`` control: one mask per style, each (1, 1, H, W) on ``device``; None if unset."""
    if masks is None:
        return None
    if len(masks) != n_styles:
        raise ControlError(f"{len(masks)} mask(s) given for {n_styles} style(s)")
    return [load_mask(m, size).to(device) for m in masks]


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> PIL RGB image."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ImageError(f"expected a single image, got a batch of {x.shape[0]}")
        x = x[0]
    if not torch.isfinite(x).all():
        raise ImageError("result contains NaN or infinite values; not saving it")
    a = (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round()
    return Image.fromarray(a.astype(np.uint8), "RGB")


def check_output_path(path, *, inputs=()) -> Path:
    """Fail early (before any work) if ``path`` cannot be written, has no known format, or is
    one of the ``inputs`` (overwriting an input with its own result is refused)."""
    path = validate.check_not_input(path, inputs, error=ImageError)
    ext = path.suffix.lower()
    if ext not in SAVE_FORMATS:
        raise ImageError(f"{path}: unknown output format {ext or '(no extension)'!r} "
                         f"(use one of {', '.join(sorted(SAVE_FORMATS))})")
    return validate.check_output_file(path, error=ImageError)


def save_image(x, path, *, quality: int = 95) -> Path:
    """Save a tensor or PIL image atomically: written to a temp file, synced, then renamed into
    place; on any failure (a full disk, say) nothing is left at ``path``."""
    path = check_output_path(path)
    im = x if isinstance(x, Image.Image) else to_pil(x)
    fmt = SAVE_FORMATS[path.suffix.lower()]
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        with atomic_write(path) as f:
            im.convert("RGB").save(f, format=fmt, **kwargs)
    except OSError as e:
        raise ImageError(f"{path}: cannot write image ({e})") from None
    return path

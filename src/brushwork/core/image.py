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


def to_tensor(image, *, max_pixels: int | None = None) -> torch.Tensor:
    """Path / PIL image / numpy HxWx3 / tensor -> (1, 3, H, W) float32 in [0, 1]."""
    max_pixels = max_pixels_default() if max_pixels is None else max_pixels
    if isinstance(image, torch.Tensor):
        t = image.detach().float()
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[1] not in (1, 3):
            raise ImageError(f"expected an image tensor (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
        if not torch.isfinite(t).all():
            raise ImageError("image tensor contains NaN or infinite values")
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        return t.clamp(0, 1).contiguous()
    if isinstance(image, np.ndarray):
        a = image.astype(np.float32)
        if a.dtype != np.float32 or image.dtype == np.uint8:
            a = a / 255.0 if image.dtype == np.uint8 else a
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ImageError(f"expected an HxWx3 array, got shape {image.shape}")
        return to_tensor(torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1),
                         max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageError(f"image of {image.size[0]}x{image.size[1]} exceeds the pixel guard "
                             f"of {max_pixels / 1e6:.1f} MP")
        a = pil_to_rgb_array(image)
        return torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0).contiguous()
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
        a = pil_to_rgb_array(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
    finally:
        im.close()
    t = torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0).contiguous()
    return resize_long_side(t, size)


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
    path = Path(path)
    for src in inputs:
        if isinstance(src, (str, Path)) and _same_file(Path(src), path):
            raise ImageError(f"{path}: the output would overwrite the input {src}; choose "
                             f"another output path")
    ext = path.suffix.lower()
    if ext not in SAVE_FORMATS:
        raise ImageError(f"{path}: unknown output format {ext or '(no extension)'!r} "
                         f"(use one of {', '.join(sorted(SAVE_FORMATS))})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise ImageError(f"{path}: output directory {parent} does not exist")
    if not parent.is_dir():
        raise ImageError(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImageError(f"{path}: output directory {parent} is not writable")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


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

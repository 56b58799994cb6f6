"""Image I/O: robust loading to float tensors, resizing, atomic saving.

Tensors are ``(1, 3, H, W)`` float32 RGB in [0, 1] unless said otherwise.

What a print needs kept: :func:`load_image_info` returns the image with an :class:`ImageInfo`
(alpha channel, ICC profile, EXIF, bit depth) and :func:`save_image` writes them back: RGBA
out for RGBA/LA in, 16-bit PNG/TIFF (``bit_depth=16``), the ICC profile and the EXIF (with the
orientation already applied to the pixels and its tag reset to 1).
"""
from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
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
    """Read an image file as (1, 3, H, W) float32 RGB in [0, 1]; optionally resize its long side.

    EXIF orientation is applied; 16-bit PNG/TIFF decode at full precision; an alpha channel is
    composited on white (:func:`load_image_info` keeps it instead)."""
    d = _read_file(path, max_pixels)
    t = _to_nchw(d.rgb)
    if d.alpha is not None:
        a = _to_nchw(d.alpha)
        t = (t * a + (1.0 - a)).clamp_(0, 1)
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
    return Image.fromarray(_quantise(_rgb_chw(x), 8, None), "RGB")


# ------------------------------------------------------------- reading with what a print keeps
@dataclass
class ImageInfo:
    """What an image file carries besides its colours, for :func:`save_image` to write back.

    ``alpha``: (1, 1, H, W) float in [0, 1] at the upright size, or None (no alpha channel).
    ``icc_profile``: the embedded RGB ICC profile's bytes, or None (grey and CMYK profiles are
    dropped: the pixels are RGB by then). ``exif``: the EXIF block (``Exif\\0\\0`` + TIFF
    structure) with the Orientation tag reset to 1 (the pixels are upright), or None.
    ``bit_depth``: 8 or 16 bits per channel in the file. ``mode``: the file's channels as a
    PIL mode name ("RGB", "RGBA", "LA", "L", "I;16", ...)."""
    alpha: torch.Tensor | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    bit_depth: int = 8
    mode: str = "RGB"

    @property
    def transparent(self) -> bool:
        """Whether some pixel is not fully opaque."""
        return self.alpha is not None and bool((self.alpha < 1).any())


@dataclass
class _Decoded:
    rgb: np.ndarray            # H x W x 3 uint8 (0..255) or float32 in [0, 1], upright
    alpha: np.ndarray | None   # H x W, the same kinds, upright
    icc_profile: bytes | None
    exif: bytes | None
    bit_depth: int
    mode: str


def load_image_info(path, *, max_pixels: int | None = None) -> tuple[torch.Tensor, ImageInfo]:
    """Read an image file as a (1, 3, H, W) float32 tensor and its :class:`ImageInfo`.

    The same checks as :func:`load_image` (missing, corrupt, truncated, too many pixels) and the
    same decoding (EXIF orientation applied, 16-bit at full precision). Where the image has an
    alpha channel, the tensor's transparent pixels are filled from the opaque ones
    (:func:`fill_transparent`): that fill is what a method sees there, so only the opaque
    pixels drive colour and style statistics. A fully transparent image is an ImageError."""
    d = _read_file(path, max_pixels)
    rgb = _to_nchw(d.rgb)
    alpha = None
    if d.alpha is not None:
        alpha = _to_nchw(d.alpha)
        if not bool((alpha > 0).any()):
            raise ImageError(f"{path}: the image is fully transparent (no opaque pixel to "
                             f"stylise or take a style from)")
        rgb = fill_transparent(rgb, alpha)
    return rgb, ImageInfo(alpha=alpha, icc_profile=d.icc_profile, exif=d.exif,
                          bit_depth=d.bit_depth, mode=d.mode)


def _to_nchw(a: np.ndarray) -> torch.Tensor:
    """H x W (x C) array (uint8: 0..255, or float in [0, 1]) -> (1, C, H, W) float32 tensor,
    one channel at a time (no whole-image float temporaries: a 100-megapixel photo)."""
    if a.ndim == 2:
        a = a[..., None]
    h, w, n = a.shape
    out = torch.empty(1, n, h, w)
    for c in range(n):
        plane = torch.from_numpy(np.array(a[..., c]))  # a writable contiguous copy
        if a.dtype == np.uint8:
            out[0, c] = plane
            out[0, c].div_(255.0)
        else:
            out[0, c] = plane
    return out


def _read_file(path, max_pixels: int | None) -> _Decoded:
    """Open (with the file checks), decode and orient an image file."""
    max_pixels = max_pixels_default() if max_pixels is None else max_pixels
    path = Path(path)
    im = _open_checked(path, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                colour, alpha, depth, mode = _pixels(im, path, max_pixels)
            except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as e:
                raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
            orientation, exif = _exif_of(im)
            icc = _rgb_profile(im.info.get("icc_profile"))
    finally:
        im.close()
    colour, alpha = _orient(colour, orientation), _orient(alpha, orientation)
    return _Decoded(np.ascontiguousarray(colour), None if alpha is None else
                    np.ascontiguousarray(alpha), icc, exif, depth, mode)


def _tile_rawmode(tile) -> str:
    args = tile.args if hasattr(tile, "args") else tile[3]
    return args if isinstance(args, str) else (args[0] if args else "")


def _with_rawmode(tile, rawmode: str):
    args = tile.args if hasattr(tile, "args") else tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


_NATIVE = "L" if sys.byteorder == "little" else "B"
_SWAP = {"B": "L", "L": "B", "N": "B" if _NATIVE == "L" else "L"}
_WIDE_COLOUR = ("RGB", "RGBA", "RGBX")  # 16-bit colour rawmodes PIL narrows to 8 bits


def _pixels(im: Image.Image, path: Path, max_pixels: int):
    """(colour, alpha, bit depth, mode) of an opened image, not yet oriented: colour H x W x 3,
    alpha H x W or None; uint8 for 8-bit images, float32 in [0, 1] otherwise.

    PIL decodes 16-bit colour (48/64-bit PNG and TIFF) to 8 bits per channel: its unpackers keep
    the high byte of each sample. The file is decoded a second time with the byte order of the
    rawmode swapped, which yields the low bytes; together they are the full 16-bit samples.
    16-bit grey + alpha PNG (rawmode LA;16B) is decoded as 8-bit RGBA, whose four bytes are the
    two samples' high and low bytes."""
    tiles = list(im.tile)
    raws = {_tile_rawmode(t) for t in tiles}
    raw = raws.pop() if len(raws) == 1 else ""
    base, sep, order = raw.partition(";16")
    if sep and base == "LA" and order == "B" and im.mode == "RGBA":
        im.tile = [_with_rawmode(t, "RGBA") for t in tiles]
        im.load()
        b = np.asarray(im).astype(np.uint16)
        grey = (b[..., 0] << 8 | b[..., 1]).astype(np.float32) / 65535.0
        alpha = (b[..., 2] << 8 | b[..., 3]).astype(np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=2), alpha, 16, "LA"
    if sep and base in _WIDE_COLOUR and order in _SWAP and im.mode in ("RGB", "RGBA"):
        im.load()
        hi = np.asarray(im).astype(np.uint16)
        low = _open_checked(path, max_pixels)
        try:
            low.tile = [_with_rawmode(t, raw[:-1] + _SWAP[order]) for t in low.tile]
            low.load()
            lo = np.asarray(low).astype(np.uint16)
        finally:
            low.close()
        if lo.shape != hi.shape:
            raise ValueError("the two decodes of the 16-bit samples differ in size")
        v = hi << 8 | lo
        alpha = v[..., 3].astype(np.float32) / 65535.0 if im.mode == "RGBA" else None
        key = im.info.get("transparency")  # a PNG's 16-bit colour key (tRNS)
        if alpha is None and isinstance(key, tuple) and len(key) == 3:
            alpha = (v != np.array(key, np.uint16)).any(axis=2).astype(np.float32)
        rgb = v[..., :3].astype(np.float32) / 65535.0
        return rgb, alpha, 16, "RGBA" if im.mode == "RGBA" else "RGB"
    im.load()
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        key = im.info.get("transparency")  # a PNG's grey colour key (tRNS)
        alpha = (a != key).astype(np.float32) if isinstance(key, int) else None
        wide = mode.startswith("I;16") or a.max() > 255
        a = np.clip(a / (65535.0 if wide else 255.0), 0, 1).astype(np.float32)
        return np.repeat(a[..., None], 3, axis=2), alpha, 16 if wide else 8, mode
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)
        return np.repeat(a[..., None], 3, axis=2), None, 16, mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3], 8, mode
    return np.asarray(im if mode == "RGB" else im.convert("RGB")), None, 8, mode


def _orient(a: np.ndarray | None, orientation: int) -> np.ndarray | None:
    """Apply an EXIF orientation (1..8) to an H x W (x C) array, as ImageOps.exif_transpose
    does to an image."""
    if a is None or orientation == 1:
        return a
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return np.rot90(a.swapaxes(0, 1), 2)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# TIFF tags that describe a TIFF file's own layout: they are not carried as EXIF (a TIFF
# input's getexif() lists them with the real metadata), nor ICC, XMP and Photoshop blobs.
_LAYOUT_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284,
    288, 289, 290, 291, 292, 293, 297, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332,
    338, 339, 340, 341, 347, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532, 700,
    34377, 34675, 37724})
ORIENTATION = 0x0112
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005


def _exif_of(im: Image.Image) -> tuple[int, bytes | None]:
    """The orientation (1..8) and the EXIF block to carry (Orientation reset to 1). A damaged
    EXIF block is dropped: it never stops an image from loading."""
    try:
        exif = im.getexif()
        orientation = exif.get(ORIENTATION, 1)
        orientation = int(orientation) if isinstance(orientation, int) else 1
        orientation = orientation if 1 <= orientation <= 8 else 1
    except Exception:  # noqa: BLE001 - unreadable metadata: none
        return 1, None
    try:
        for tag in [t for t in exif if t in _LAYOUT_TAGS]:
            del exif[tag]
        if ORIENTATION in exif:
            exif[ORIENTATION] = 1
        if len(exif) == 0:
            return orientation, None
        return orientation, exif.tobytes()
    except Exception:  # noqa: BLE001
        return orientation, None


def _rgb_profile(icc) -> bytes | None:
    """An ICC profile whose data colour space is RGB (the header's bytes 16..20), else None."""
    if isinstance(icc, (bytes, bytearray)) and len(icc) >= 128 and icc[16:20] == b"RGB ":
        return bytes(icc)
    return None


# ------------------------------------------------------------------------- transparent fill
def fill_transparent(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Fill the transparent pixels of ``rgb`` (N, 3, H, W) from the opaque ones, by alpha
    (N, 1, H, W) in [0, 1], with push-pull: colour x alpha and alpha are summed over 2x2
    blocks level by level down to one pixel (each level's colour the alpha-weighted mean of
    the pixels it covers, its weight capped at 1), then, from the coarsest level up, each
    pixel keeps its own colour by its weight and takes the rest from the bilinearly enlarged
    coarser level. Transparent pixels so take the colours of the nearest opaque ones, blended
    smoothly (no new edges, no colour outside the opaque pixels' range); partly transparent
    pixels mix their colour with the fill by their alpha; opaque pixels are returned unchanged.
    The fill is what a method sees there. A fully transparent image is an ImageError."""
    if alpha.shape[-2:] != rgb.shape[-2:] or alpha.shape[1] != 1:
        raise ImageError(f"alpha of shape {tuple(alpha.shape)} does not fit an image of shape "
                         f"{tuple(rgb.shape)}")
    a = alpha.to(device=rgb.device, dtype=rgb.dtype).clamp(0, 1)
    if not bool((a > 0).flatten(1).any(1).all()):
        raise ImageError("the image is fully transparent (no opaque pixel to fill from)")
    levels = [(rgb, a)]
    c, w = rgb, a
    while c.shape[-2] > 1 or c.shape[-1] > 1:
        pad = (0, c.shape[-1] % 2, 0, c.shape[-2] % 2)
        sw = F.avg_pool2d(F.pad(w, pad), 2) * 4
        sc = F.avg_pool2d(F.pad(c * w, pad), 2) * 4
        c = torch.where(sw > 0, sc / sw.clamp_min(1e-12), torch.zeros_like(sc))
        w = sw.clamp(max=1.0)
        levels.append((c, w))
    f = levels[-1][0]
    for c, w in reversed(levels[:-1]):
        up = F.interpolate(f, size=c.shape[-2:], mode="bilinear", align_corners=False)
        f = c * w + up * (1 - w)
    return torch.where(a >= 1, rgb, f.clamp(0, 1))


# ---------------------------------------------------------------------------------- saving
ALPHA_FORMATS = ("PNG", "TIFF", "WEBP")  # formats that keep an alpha channel
WIDE_FORMATS = ("PNG", "TIFF")           # formats written with 16 bits per channel
_ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
_JPEG_EXIF_MAX = 65533


def check_output_path(path, *, inputs=(), info: ImageInfo | None = None, bit_depth: int = 8,
                      alpha=None) -> Path:
    """Fail early (before any work) if ``path`` cannot be written, has no known format, or is
    one of the ``inputs`` (overwriting an input with its own result is refused); with ``info``
    (or ``alpha``) and ``bit_depth``, also if its format cannot keep the transparency (JPEG,
    BMP) or 16 bits per channel (anything but PNG and TIFF)."""
    path = validate.check_not_input(path, inputs, error=ImageError)
    ext = path.suffix.lower()
    if ext not in SAVE_FORMATS:
        raise ImageError(f"{path}: unknown output format {ext or '(no extension)'!r} "
                         f"(use one of {', '.join(sorted(SAVE_FORMATS))})")
    _check_keeps(path, SAVE_FORMATS[ext], validate.check_bit_depth(bit_depth),
                 _alpha_of(info, alpha))
    return validate.check_output_file(path, error=ImageError)


def _alpha_of(info: ImageInfo | None, alpha) -> torch.Tensor | None:
    a = alpha if alpha is not None else (info.alpha if info is not None else None)
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise ImageError(f"alpha must be a tensor, got {type(a).__name__}")
    a = a.detach()
    while a.dim() < 4:
        a = a.unsqueeze(0)
    if a.dim() != 4 or a.shape[:2] != (1, 1):
        raise ImageError(f"alpha must be a (1, 1, H, W) tensor, got shape {tuple(a.shape)}")
    return _scale_by_dtype(a.cpu(), "alpha")


def _check_keeps(path: Path, fmt: str, bit_depth: int, alpha: torch.Tensor | None) -> None:
    if bit_depth == 16 and fmt not in WIDE_FORMATS:
        raise ImageError(f"{path}: {fmt} cannot hold 16 bits per channel; save as .png or .tif "
                         f"for --bit-depth 16")
    if alpha is not None and fmt not in ALPHA_FORMATS and bool((alpha < 1).any()):
        raise ImageError(f"{path}: {fmt} has no alpha channel and the image has transparent "
                         f"pixels; save as .png, .tif or .webp to keep them")


def save_image(x, path, *, quality: int = 95, info: ImageInfo | None = None,
               bit_depth: int = 8, alpha=None) -> Path:
    """Save a tensor or PIL image atomically: written to a temp file, synced, then renamed into
    place; on any failure (a full disk, an interruption) nothing is left at ``path``.

    ``info`` (from :func:`load_image_info`) carries the alpha channel, the ICC profile and the
    EXIF to the output; ``alpha`` ((1, 1, H, W) in [0, 1]) overrides ``info.alpha``. An alpha of
    another size is resized to the image's with :func:`resize`. RGBA is written to PNG, TIFF
    and WebP; JPEG and BMP refuse transparent pixels (a fully opaque alpha is simply left
    out). ``bit_depth=16`` writes 16-bit PNG or TIFF (other formats refuse it). BMP keeps no
    ICC profile or EXIF."""
    bit_depth = validate.check_bit_depth(bit_depth)
    a = _alpha_of(info, alpha)
    path = check_output_path(path, bit_depth=bit_depth, alpha=a)
    fmt = SAVE_FORMATS[path.suffix.lower()]
    if info is None and a is None and bit_depth == 8:
        im = x if isinstance(x, Image.Image) else to_pil(x)
        kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
        _write(path, lambda f: im.convert("RGB").save(f, format=fmt, **kwargs))
        return path
    rgb = _rgb_chw(x)
    h, w = rgb.shape[-2:]
    if a is not None:
        a = resize(a.float(), (h, w)) if tuple(a.shape[-2:]) != (h, w) else a.float()
        if fmt not in ALPHA_FORMATS:
            a = None  # fully opaque (checked above): nothing to keep
    icc = info.icc_profile if info is not None else None
    exif = _exif_for_output(info.exif if info is not None else None, w, h)
    px = _quantise(rgb, bit_depth, None if a is None else a[0, 0])
    if bit_depth == 16 and fmt == "PNG":
        _write(path, lambda f: _write_png16(f, px, icc, exif))
    elif bit_depth == 16:
        _write(path, lambda f: _write_tiff16(f, px, icc, exif))
    else:
        im = Image.fromarray(px, "RGBA" if px.shape[2] == 4 else "RGB")
        kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
        if icc is not None and fmt in _ICC_FORMATS:
            kwargs["icc_profile"] = icc
        if exif is not None and fmt in _ICC_FORMATS:
            if fmt == "JPEG" and len(exif) > _JPEG_EXIF_MAX:
                raise ImageError(f"{path}: the EXIF block ({len(exif)} bytes) is larger than "
                                 f"JPEG allows (64 KB); save as .png or .tif to keep it")
            kwargs["exif"] = exif
        _write(path, lambda f: im.save(f, format=fmt, **kwargs))
    return path


def _write(path: Path, write) -> None:
    """Run ``write(file)`` on an atomic temp file for ``path``."""
    try:
        with atomic_write(path) as f:
            write(f)
    except OSError as e:
        raise ImageError(f"{path}: cannot write image ({e})") from None


def _rgb_chw(x) -> torch.Tensor:
    """A tensor (as :func:`to_pil` takes) or PIL image -> (3, H, W) tensor in [0, 1] (values
    outside are clamped when quantised), without a copy where it can."""
    if isinstance(x, Image.Image):
        return torch.from_numpy(np.asarray(x.convert("RGB"), dtype=np.float64) / 255.0) \
            .permute(2, 0, 1)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ImageError(f"expected a single image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ImageError(f"expected a (1, 3, H, W) image tensor, got shape {tuple(x.shape)}")
    return x.detach().cpu()


QUANTISE_ROWS = 256  # rows per strip when an image is quantised for saving


def _quantise(rgb: torch.Tensor, bit_depth: int, alpha: torch.Tensor | None) -> np.ndarray:
    """(3, H, W) colour and (H, W) alpha in [0, 1] -> H x W x 3 (or 4) uint8/uint16 samples,
    round(v * 255) or round(v * 65535) in float64, a strip of rows at a time (the memory of a
    strip, not of a float64 copy of the image); NaN or infinite values -> ImageError."""
    top = 65535.0 if bit_depth == 16 else 255.0
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    h, w = rgb.shape[-2:]
    planes = [rgb] if alpha is None else [rgb, alpha[None]]
    px = np.empty((h, w, 3 + (alpha is not None)), dtype)
    for y in range(0, h, QUANTISE_ROWS):
        k = 0
        for t in planes:
            s = t[:, y:y + QUANTISE_ROWS].double()
            if not torch.isfinite(s).all():
                raise ImageError("result contains NaN or infinite values; not saving it")
            n = s.shape[0]
            px[y:y + QUANTISE_ROWS, :, k:k + n] = \
                s.clamp_(0, 1).mul_(top).round_().permute(1, 2, 0).numpy().astype(dtype)
            k += n
    return px


def _exif_for_output(exif: bytes | None, w: int, h: int) -> bytes | None:
    """The EXIF block with its pixel dimensions (when it has them) set to the output's."""
    if not exif:
        return None
    try:
        ex = Image.Exif()
        ex.load(exif)
        sub = ex.get_ifd(_EXIF_IFD)
        if 0xA002 in sub or 0xA003 in sub:
            sub[0xA002], sub[0xA003] = w, h
            return ex.tobytes()
    except Exception:  # noqa: BLE001 - left as it came
        pass
    return exif


def _exif_body(exif: bytes) -> bytes:
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif


def _png_chunk(f, kind: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + kind + data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def _write_png16(f, px: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """A 16-bit RGB or RGBA PNG (H x W x 3|4 uint16): IHDR, iCCP, eXIf, IDAT (each row with
    filter 1, Sub, on the big-endian bytes), IEND."""
    h, w, n = px.shape
    f.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6 if n == 4 else 2, 0, 0, 0))
    if icc is not None:
        _png_chunk(f, b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif is not None:
        _png_chunk(f, b"eXIf", _exif_body(exif))
    bpp = 2 * n
    z = zlib.compressobj(6)
    pending = b""
    rows_per_block = max(1, (1 << 20) // (w * bpp + 1))
    for y0 in range(0, h, rows_per_block):
        raw = np.ascontiguousarray(px[y0:y0 + rows_per_block].astype(">u2")).view(np.uint8)
        raw = raw.reshape(raw.shape[0], w * bpp)
        sub = raw.copy()
        sub[:, bpp:] -= raw[:, :-bpp]  # uint8 arithmetic wraps, as PNG's filters do
        block = np.empty((raw.shape[0], 1 + w * bpp), np.uint8)
        block[:, 0] = 1
        block[:, 1:] = sub
        pending += z.compress(block.tobytes())
        if len(pending) >= 1 << 20:
            _png_chunk(f, b"IDAT", pending)
            pending = b""
    pending += z.flush()
    _png_chunk(f, b"IDAT", pending)
    _png_chunk(f, b"IEND", b"")


def _write_tiff16(f, px: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """A baseline little-endian TIFF, uncompressed, one strip, 16 bits per sample (RGB, or RGBA
    with unassociated alpha); the EXIF's IFD0 tags go in the image's IFD, its Exif and GPS
    directories as sub-IFDs, the ICC profile in tag 34675."""
    from PIL import TiffImagePlugin

    h, w, n = px.shape
    ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=b"II\x2a\x00\x08\x00\x00\x00")
    if exif is not None:
        ex = Image.Exif()
        ex.load(exif)
        for tag, value in ex.items():
            if tag in _LAYOUT_TAGS:
                continue
            if tag in (_EXIF_IFD, _GPS_IFD):
                value = dict(ex.get_ifd(tag))
                if tag == _EXIF_IFD and _INTEROP_IFD in value:
                    value[_INTEROP_IFD] = dict(ex.get_ifd(_INTEROP_IFD))
            ifd[tag] = value
    data = np.ascontiguousarray(px.astype("<u2")).tobytes()
    layout = {256: w, 257: h, 258: (16,) * n, 259: 1, 262: 2, 273: 0, 274: 1, 277: n,
              278: h, 279: len(data), 284: 1, 339: (1,) * n}
    if n == 4:
        layout[338] = 2  # unassociated alpha
    for tag, value in layout.items():
        ifd[tag] = value
    for tag, value in ((282, 72.0), (283, 72.0), (296, 2)):
        if tag not in ifd:
            ifd[tag] = value
    if icc is not None:
        ifd[34675] = icc
    # the strip offset 0 becomes the first byte after the directory and its (word-padded) data
    f.write(b"II\x2a\x00\x08\x00\x00\x00" + ifd.tobytes(8))
    f.write(data)

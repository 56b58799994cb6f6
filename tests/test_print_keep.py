"""What a print needs kept: alpha, 16 bits per channel, EXIF and ICC profiles.

Images are generated here (16-200 px); the 16-bit inputs are written by OpenCV (a dependency)
or by a minimal PNG encoder below, so reading is checked against encoders other than ours.
"""
from __future__ import annotations

import argparse
import errno
import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from brushwork.api import stylize_tensors
from brushwork.core import files, validate
from brushwork.core.image import (ImageInfo, check_output_path, fill_transparent, load_image,
                                  load_image_info, save_image)
from brushwork.errors import ImageError

ARTIST, MAKE, ORIENTATION = 0x013B, 0x010F, 0x0112


# ----------------------------------------------------------------------------- helpers
def photo(h, w, seed=0):
    """A smooth colour image with some texture, H x W x 3 uint8."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    rgb = np.stack([0.5 + 0.4 * np.sin(7 * x + 3 * y), 0.5 + 0.4 * np.cos(5 * y),
                    0.3 + 0.5 * x * y], axis=2) + rng.normal(0, 0.03, (h, w, 3))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def disc_alpha(h, w):
    """A disc of opaque pixels, a soft rim of partly transparent ones, transparent outside."""
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot(y - h / 2, x - w / 2) / (min(h, w) / 2)
    return (np.clip((0.9 - r) / 0.2, 0, 1) * 255).round().astype(np.uint8)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_block(orientation=None):
    ex = Image.Exif()
    ex[ARTIST] = "A. Painter"
    ex[MAKE] = "Brushwork Test Camera"
    if orientation is not None:
        ex[ORIENTATION] = orientation
    return ex


def png16(path, px: np.ndarray, colour_type: int, trns: bytes | None = None):
    """A minimal 16-bit PNG (H x W x C uint16; colour type 0 grey, 2 RGB, 4 grey + alpha),
    rows with filter 0, an optional tRNS chunk."""
    h, w = px.shape[:2]
    rows = px.reshape(h, w, -1).astype(">u2").view(np.uint8).reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    extra = chunk(b"tRNS", trns) if trns is not None else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + head + extra + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def small_adain(content, style):
    return stylize_tensors(content, [style], "adain", method_options={"encoder": "small"})


@pytest.fixture
def style_png(tmp_path):
    p = tmp_path / "style.png"
    Image.fromarray(photo(48, 48, seed=5)[:, ::-1].copy()).save(p)
    return p


# ------------------------------------------------------------------------------- alpha
def test_rgba_in_rgba_out_same_alpha(tmp_path, style_png):
    rgb, alpha = photo(40, 56), disc_alpha(40, 56)
    src = tmp_path / "in.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src)
    content, info = load_image_info(src)
    assert content.shape == (1, 3, 40, 56) and info.mode == "RGBA" and info.bit_depth == 8
    assert info.alpha.shape == (1, 1, 40, 56) and info.transparent
    style, _ = load_image_info(style_png)
    out = small_adain(content, style)
    path = save_image(out, tmp_path / "out.png", info=info)
    back = Image.open(path)
    assert back.mode == "RGBA" and back.size == (56, 40)
    assert np.array_equal(np.asarray(back)[..., 3], alpha)
    # the stylised colours are written, not the input's
    assert not np.array_equal(np.asarray(back)[..., :3], rgb)


@pytest.mark.parametrize("ext", [".tif", ".webp"])
def test_rgba_other_formats_keep_alpha(tmp_path, ext):
    alpha = disc_alpha(32, 24)
    info = ImageInfo(alpha=torch.from_numpy(alpha / 255.0).float()[None, None], mode="RGBA")
    path = save_image(torch.rand(1, 3, 32, 24), tmp_path / f"o{ext}", info=info)
    back = Image.open(path)
    assert back.mode == "RGBA"
    assert np.array_equal(np.asarray(back)[..., 3], alpha)


def test_la_in_rgba_out(tmp_path, style_png):
    grey, alpha = photo(36, 30)[..., 0], disc_alpha(36, 30)
    src = tmp_path / "in.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(src)
    content, info = load_image_info(src)
    assert info.mode == "LA" and content.shape == (1, 3, 36, 30)
    opaque = torch.from_numpy(alpha == 255)
    for c in range(3):  # the grey is repeated on the three channels where opaque
        assert torch.equal(content[0, c][opaque], torch.from_numpy(grey / 255.0).float()[opaque])
    out = small_adain(content, load_image_info(style_png)[0])
    back = Image.open(save_image(out, tmp_path / "out.png", info=info))
    assert back.mode == "RGBA"
    assert np.array_equal(np.asarray(back)[..., 3], alpha)


def test_alpha_is_resized_with_the_output(tmp_path):
    alpha = disc_alpha(40, 60)
    Image.fromarray(np.dstack([photo(40, 60), alpha]), "RGBA").save(tmp_path / "in.png")
    content, info = load_image_info(tmp_path / "in.png")
    small = torch.nn.functional.interpolate(content, size=(20, 30), mode="bilinear")
    back = np.asarray(Image.open(save_image(small, tmp_path / "o.png", info=info)))
    assert back.shape == (20, 30, 4)
    assert back[10, 15, 3] == 255 and back[0, 0, 3] == 0  # centre opaque, corner transparent


def test_palette_transparency_gives_alpha(tmp_path):
    im = Image.fromarray(photo(24, 24)).convert("P")
    im.save(tmp_path / "p.png", transparency=int(np.asarray(im)[0, 0]))
    _, info = load_image_info(tmp_path / "p.png")
    assert info.alpha is not None and info.alpha[0, 0, 0, 0] == 0


def test_load_image_still_composites_on_white(tmp_path):
    a = np.zeros((16, 16, 4), np.uint8)
    a[..., 0] = 200
    a[:8, :, 3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "half.png")
    t = load_image(tmp_path / "half.png")
    assert torch.allclose(t[0, :, 12, 3], torch.ones(3))            # transparent -> white
    assert torch.allclose(t[0, :, 2, 3], torch.tensor([200 / 255, 0, 0]))
    filled, _ = load_image_info(tmp_path / "half.png")
    assert torch.allclose(filled[0, :, 12, 3], torch.tensor([200 / 255, 0, 0]), atol=1e-6)


# ---------------------------------------------------------------------- fill_transparent
@pytest.mark.parametrize("hw", [(40, 56), (17, 33), (1, 21), (64, 16)])
def test_fill_keeps_opaque_and_stays_in_range(hw):
    h, w = hw
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(1, 3, h, w, generator=g)
    alpha = (torch.rand(1, 1, h, w, generator=g) > 0.7).float()
    alpha[..., 0, 0] = 1.0
    out = fill_transparent(rgb, alpha)
    assert torch.isfinite(out).all()
    opaque = alpha.expand(-1, 3, -1, -1) >= 1
    assert torch.equal(out[opaque], rgb[opaque])
    for c in range(3):
        vals = rgb[0, c][alpha[0, 0] >= 1]
        holes = out[0, c][alpha[0, 0] < 1]
        assert holes.min() >= vals.min() - 1e-6 and holes.max() <= vals.max() + 1e-6


def test_fill_takes_nearby_colours_without_edges():
    h, w = 32, 96
    rgb = torch.zeros(1, 3, h, w)
    alpha = torch.zeros(1, 1, h, w)
    rgb[:, 0, :, :16], alpha[..., :16] = 1.0, 1.0    # red block on the left
    rgb[:, 2, :, -16:], alpha[..., -16:] = 1.0, 1.0  # blue block on the right
    rgb[..., 16:-16] = 0.37                           # garbage under the transparent middle
    out = fill_transparent(rgb, alpha)
    red, blue = out[0, 0, h // 2], out[0, 2, h // 2]
    assert red[17] > 0.8 and blue[17] < 0.2            # next to red: red
    assert blue[-18] > 0.8 and red[-18] < 0.2          # next to blue: blue
    assert (red[16:-16].diff() <= 1e-6).all()          # red fades out monotonically
    assert red[16:-16].diff().abs().max() < 0.1        # ... in small steps: no edge
    assert not torch.isclose(out[0, 1, h // 2, 48], torch.tensor(0.37))  # the garbage is gone


def test_fill_partly_transparent_mixes_by_alpha():
    rgb = torch.zeros(1, 3, 16, 16)
    alpha = torch.ones(1, 1, 16, 16)
    rgb[..., 8, 8] = 1.0
    alpha[..., 8, 8] = 0.25
    out = fill_transparent(rgb, alpha)
    assert 0.2 < out[0, 0, 8, 8] < 0.3  # a quarter of its own white, the rest black around it


def test_fully_transparent_is_an_error(tmp_path):
    with pytest.raises(ImageError, match="fully transparent"):
        fill_transparent(torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    with pytest.raises(ImageError, match="fully transparent"):
        load_image_info(tmp_path / "clear.png")


# -------------------------------------------------------------------------------- 16 bit
def gradient16(h, w):
    """H x W x 3 uint16 with 1000 distinct levels along x (steps of 65 in 16 bits, far finer
    than 8 bits' 257)."""
    levels = (np.arange(w) * 1000 // w) * 65 + 7
    g = np.broadcast_to(levels[None, :], (h, w))
    return np.stack([g, g[::-1] if h > 1 else g, np.full((h, w), 40000)], axis=2) \
        .astype(np.uint16)


def test_16bit_png_round_trip(tmp_path):
    px = gradient16(8, 1000)
    src = tmp_path / "in16.png"
    cv2.imwrite(str(src), px[..., ::-1])  # OpenCV writes BGR
    t, info = load_image_info(src)
    assert info.bit_depth == 16 and info.alpha is None
    want = torch.from_numpy(px / 65535.0).permute(2, 0, 1)[None].float()
    assert (t - want).abs().max() <= 0.5 / 65535
    assert len(torch.unique(t[0, 0, 0])) == 1000
    out = save_image(t, tmp_path / "out16.png", info=info, bit_depth=16)
    again, info2 = load_image_info(out)
    assert info2.bit_depth == 16
    assert (again - t).abs().max() <= 1 / 65535
    assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1], px)
    # load_image decodes the same 16 bits
    assert torch.equal(load_image(out), again)


def test_16bit_tiff_written_and_read_by_pil(tmp_path):
    px = gradient16(20, 200)
    t = torch.from_numpy(px / 65535.0).permute(2, 0, 1)[None].float()
    out = save_image(t, tmp_path / "o16.tif", bit_depth=16)
    im = Image.open(out)
    assert im.format == "TIFF" and im.mode == "RGB" and im.size == (200, 20)
    assert im.tag_v2[258] == (16, 16, 16)
    assert np.array_equal(np.asarray(im), (px >> 8).astype(np.uint8))  # PIL keeps 8 bits
    assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1], px)
    back, info = load_image_info(out)
    assert info.bit_depth == 16 and (back - t).abs().max() <= 0.5 / 65535


def test_16bit_inputs_from_other_writers(tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 65536, (18, 22, 4), dtype=np.uint16)
    rgba[..., 3] = np.maximum(rgba[..., 3], 1)
    for name, params in (("lzw.tif", []), ("raw.tif", [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
                         ("rgba.png", [])):
        cv2.imwrite(str(tmp_path / name), rgba[..., [2, 1, 0, 3]], params)
        _, info = load_image_info(tmp_path / name)
        assert info.bit_depth == 16 and info.mode == "RGBA"
        got = np.round(info.alpha[0, 0].numpy().astype(np.float64) * 65535)
        assert np.array_equal(got, rgba[..., 3]), name
    grey, alpha = rng.integers(0, 65536, (2, 16, 20), dtype=np.uint16)
    alpha[0, 0] = 65535
    png16(tmp_path / "la16.png", np.stack([grey, alpha], axis=2), 4)
    t, info = load_image_info(tmp_path / "la16.png")
    assert info.mode == "LA" and info.bit_depth == 16
    assert np.array_equal(np.round(info.alpha[0, 0].numpy().astype(np.float64) * 65535), alpha)
    opaque = alpha == 65535
    assert np.allclose(t[0, 1].numpy()[opaque] * 65535, grey[opaque], atol=0.01)
    back = save_image(t, tmp_path / "la_out.png", info=info, bit_depth=16)
    assert np.array_equal(cv2.imread(str(back), cv2.IMREAD_UNCHANGED)[..., 3], alpha)


@pytest.mark.parametrize("colour_type", [0, 2])
def test_16bit_colour_key_gives_alpha(tmp_path, colour_type):
    px = gradient16(16, 40)[..., :3 if colour_type == 2 else 1]
    key = px[0, 0]
    png16(tmp_path / "key.png", px, colour_type, trns=key.astype(">u2").tobytes())
    _, info = load_image_info(tmp_path / "key.png")
    want = (px != key).any(axis=2)
    assert info.alpha is not None and np.array_equal(info.alpha[0, 0].numpy() > 0, want)


def test_16bit_rgba_png_alpha_kept_exactly(tmp_path):
    alpha8 = disc_alpha(24, 32)
    Image.fromarray(np.dstack([photo(24, 32), alpha8]), "RGBA").save(tmp_path / "in.png")
    t, info = load_image_info(tmp_path / "in.png")
    out = save_image(t, tmp_path / "o.png", info=info, bit_depth=16)
    a16 = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., 3]
    assert a16.dtype == np.uint16 and np.array_equal(a16, alpha8.astype(np.uint16) * 257)


def test_grey_16bit_and_truncated_16bit(tmp_path):
    g = (np.arange(16 * 40).reshape(16, 40) * 97 % 65536).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g.png")
    t, info = load_image_info(tmp_path / "g.png")
    assert info.bit_depth == 16 and info.mode.startswith("I;16")
    assert torch.allclose(t[0, 0], torch.from_numpy(g / 65535.0).float())
    cv2.imwrite(str(tmp_path / "c.png"), gradient16(30, 100))
    data = (tmp_path / "c.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image_info(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="pixel guard"):
        load_image_info(tmp_path / "c.png", max_pixels=100)


# ------------------------------------------------------------------------ EXIF and ICC
def test_exif_orientation_applied_and_reset(tmp_path):
    rgb = photo(10, 20)
    src = tmp_path / "rot.png"
    Image.fromarray(rgb).save(src, exif=exif_block(orientation=6).tobytes())
    t, info = load_image_info(src)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    assert t.shape == (1, 3, 20, 10)
    assert np.array_equal((t[0].permute(1, 2, 0).numpy() * 255).round(), upright)
    ex = Image.Exif()
    ex.load(info.exif)
    assert ex[ORIENTATION] == 1 and ex[ARTIST] == "A. Painter"
    for ext in (".png", ".jpg", ".tif", ".webp"):
        out = Image.open(save_image(t, tmp_path / f"o{ext}", info=info))
        got = out.getexif()
        assert out.size == (10, 20), ext
        assert got[ORIENTATION] == 1 and got[ARTIST] == "A. Painter", ext
        assert got[MAKE] == "Brushwork Test Camera", ext
    for ext in (".png", ".tif"):
        got = Image.open(save_image(t, tmp_path / f"o16{ext}", info=info, bit_depth=16)).getexif()
        assert got[ORIENTATION] == 1 and got[ARTIST] == "A. Painter", ext
        assert got[MAKE] == "Brushwork Test Camera", ext


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_as_pil_does_it(tmp_path, orientation):
    rgb, alpha = photo(12, 18), disc_alpha(12, 18)
    src = tmp_path / "o.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(
        src, exif=exif_block(orientation).tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    _, info = load_image_info(src)
    assert np.array_equal((info.alpha[0, 0].numpy() * 255).round(), upright[..., 3])
    t = load_image(src)  # composited on white, upright
    want = upright[..., :3] / 255.0 * (upright[..., 3:] / 255.0) + (1 - upright[..., 3:] / 255.0)
    assert np.abs(t[0].permute(1, 2, 0).numpy() - want).max() < 1e-5


def test_exif_of_a_tiff_input_leaves_its_layout_behind(tmp_path):
    src = tmp_path / "in.tif"
    Image.fromarray(photo(16, 24)).save(src, exif=exif_block().tobytes())
    _, info = load_image_info(src)
    ex = Image.Exif()
    ex.load(info.exif)
    assert ex[ARTIST] == "A. Painter"
    assert not {256, 257, 258, 273, 279} & set(ex)  # size, strips: the input's own layout


@pytest.mark.parametrize("ext,depth", [(".png", 8), (".jpg", 8), (".tif", 8), (".webp", 8),
                                       (".png", 16), (".tif", 16)])
def test_icc_profile_carried(tmp_path, ext, depth):
    icc = srgb_profile()
    src = tmp_path / "in.png"
    Image.fromarray(photo(20, 30)).save(src, icc_profile=icc)
    t, info = load_image_info(src)
    assert info.icc_profile == icc
    out = save_image(t, tmp_path / f"o{ext}", info=info, bit_depth=depth)
    assert Image.open(out).info.get("icc_profile") == icc
    assert load_image_info(out)[1].icc_profile == icc


def test_grey_profile_is_not_put_on_rgb(tmp_path):
    grey_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(photo(16, 16)).convert("L").save(tmp_path / "g.png")
    data = bytearray(grey_icc)
    data[16:20] = b"GRAY"
    im = Image.open(tmp_path / "g.png")
    im.save(tmp_path / "g2.png", icc_profile=bytes(data))
    assert load_image_info(tmp_path / "g2.png")[1].icc_profile is None


# --------------------------------------------------------------------- refusals, atomicity
def test_jpeg_refuses_alpha_and_16bit_and_writes_nothing(tmp_path):
    alpha = torch.from_numpy(disc_alpha(20, 20) / 255.0).float()[None, None]
    info = ImageInfo(alpha=alpha, mode="RGBA")
    t = torch.rand(1, 3, 20, 20)
    with pytest.raises(ImageError, match=r"transparent.*\.png"):
        save_image(t, tmp_path / "o.jpg", info=info)
    with pytest.raises(ImageError, match=r"16 bits.*\.png"):
        save_image(t, tmp_path / "o.jpg", bit_depth=16)
    with pytest.raises(ImageError, match="16 bits"):
        save_image(t, tmp_path / "o.webp", bit_depth=16)
    with pytest.raises(ImageError, match="transparent"):
        save_image(t, tmp_path / "o.bmp", info=info)
    with pytest.raises(ImageError, match="transparent"):  # the early check the CLI makes
        check_output_path(tmp_path / "o.jpg", info=info)
    assert os.listdir(tmp_path) == []
    # an alpha that is opaque everywhere loses nothing in JPEG: written as RGB
    opaque = ImageInfo(alpha=torch.ones(1, 1, 20, 20), mode="RGBA")
    assert Image.open(save_image(t, tmp_path / "o.jpg", info=opaque)).mode == "RGB"


def test_bad_bit_depth():
    with pytest.raises(Exception, match="8 or 16"):
        save_image(torch.rand(1, 3, 16, 16), "o.png", bit_depth=12)
    assert validate.bit_depth_arg("16") == 16 and validate.bit_depth_arg("8") == 8
    for bad in ("12", "x", "16.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            validate.bit_depth_arg(bad)


class _Interrupted(BaseException):
    pass


@pytest.mark.parametrize("ext,depth,exc", [(".png", 16, _Interrupted), (".tif", 16, OSError),
                                           (".png", 8, _Interrupted), (".webp", 8, OSError)])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, ext, depth, exc):
    """A write stopped part-way (killed, or the disk full) leaves no file, keeps the previous."""
    target = tmp_path / f"o{ext}"
    target.write_bytes(b"previous result")
    real_open = open

    class Stopping(io.FileIO):
        written = 0

        def write(self, b):  # the first 200 bytes land, then the write stops
            if self.written + len(b) > 200:
                super().write(bytes(b[: 200 - self.written]))
                if exc is OSError:
                    raise OSError(errno.ENOSPC, "No space left on device")
                raise exc()
            self.written += len(b)
            return super().write(b)

    def stopping_open(path, mode="r", *a, **k):
        return Stopping(path, "wb") if "w" in mode else real_open(path, mode, *a, **k)

    monkeypatch.setattr(files, "open", stopping_open, raising=False)
    alpha = torch.from_numpy(disc_alpha(64, 64) / 255.0).float()[None, None]
    info = ImageInfo(alpha=alpha, icc_profile=srgb_profile(), exif=exif_block().tobytes())
    with pytest.raises(ImageError if exc is OSError else exc):
        save_image(torch.rand(1, 3, 64, 64), target, info=info, bit_depth=depth)
    assert os.listdir(tmp_path) == [target.name]
    assert target.read_bytes() == b"previous result"

import os

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.errors import ImageError
from brushwork.core.image import (check_output_path, load_image, load_mask, resize_long_side,
                             save_image, to_pil, to_tensor)


def _check(t, h, w):
    assert t.shape == (1, 3, h, w) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"])
def test_modes_load_as_rgb(tmp_path, mode):
    rgb = Image.fromarray((np.random.default_rng(0).random((10, 14, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        im = Image.fromarray((np.arange(140).reshape(10, 14) * 400).astype(np.uint16))
        path = tmp_path / "x.png"
    else:
        im = rgb.convert(mode)
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(path)
    t = load_image(path)
    _check(t, 10, 14)
    if mode == "I;16":  # 16-bit scaled to the full range, not clipped at 255
        assert t.max().item() == pytest.approx(139 * 400 / 65535, rel=1e-3)


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (20, 10), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape[-2:] == (20, 10)


def test_resize_long_side():
    t = torch.rand(1, 3, 100, 50)
    assert resize_long_side(t, 40).shape[-2:] == (40, 20)


def test_bad_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError):
        load_image(tmp_path / "cut.png")


def test_pixel_guard_and_override(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="pixel guard"):
        load_image(tmp_path / "big.png", max_pixels=5000)
    assert load_image(tmp_path / "big.png", max_pixels=20000).shape[-1] == 100


def test_to_tensor_inputs_and_nan():
    a = (np.random.default_rng(1).random((6, 8, 3)) * 255).astype(np.uint8)
    t1 = to_tensor(a)
    t2 = to_tensor(Image.fromarray(a))
    assert torch.allclose(t1, t2)
    with pytest.raises(ImageError, match="NaN"):
        to_tensor(torch.full((3, 4, 4), float("nan")))


def test_save_round_trip_and_atomic(tmp_path):
    t = torch.rand(1, 3, 12, 9)
    p = save_image(t, tmp_path / "o.png")
    back = load_image(p)
    assert (back - t).abs().max() <= 0.5 / 255 + 1e-6
    assert sorted(os.listdir(tmp_path)) == ["o.png"]  # no temp file left
    save_image(t, tmp_path / "o.jpg")
    assert load_image(tmp_path / "o.jpg").shape == (1, 3, 12, 9)


def test_save_refuses_nan_and_leaves_nothing(tmp_path):
    with pytest.raises(ImageError):
        save_image(torch.full((1, 3, 4, 4), float("nan")), tmp_path / "n.png")
    assert os.listdir(tmp_path) == []


def test_check_output_path(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "o.png")
    with pytest.raises(ImageError, match="unknown output format"):
        check_output_path(tmp_path / "o.xyz")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ImageError):
        check_output_path(tmp_path / "f" / "o.png")


def test_mask_size_checked(tmp_path):
    Image.new("L", (20, 10), 255).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png", (20, 40)).shape == (1, 1, 20, 40)
    with pytest.raises(ImageError, match="aspect"):
        load_mask(tmp_path / "m.png", (40, 20))


def test_to_pil_shape():
    assert to_pil(torch.rand(1, 3, 5, 7)).size == (7, 5)

import numpy as np
import pytest
import torch
from PIL import Image

# tiny images gain nothing from threads, and one thread is steady on a busy machine
torch.set_num_threads(1)


def _img(arr):
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).unsqueeze(0).float() / 255


@pytest.fixture(scope="session")
def content_img():
    """A 40x56 crop-resize of scikit-image's 'chelsea' photo, as a tensor."""
    from skimage import data
    im = Image.fromarray(data.chelsea()).resize((56, 40), Image.BICUBIC)
    return _img(np.asarray(im))


@pytest.fixture(scope="session")
def style_img():
    """scikit-image's 'brick' texture coloured red/orange, 48x48."""
    from skimage import data
    b = np.asarray(Image.fromarray(data.brick()).resize((48, 48), Image.BICUBIC)).astype(float)
    y, x = np.mgrid[0:48, 0:48]
    rgb = np.stack([b, b * 0.5 + x * 1.5, b * 0.2 + (47 - y) * 1.2], -1)  # full-rank colours
    return _img(rgb.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def style_img2():
    """A blue/yellow stripe pattern, 48x48 (very different from the brick)."""
    y, x = np.mgrid[0:48, 0:48]
    s = (np.sin((x + y) / 3.0) > 0)[..., None]
    rgb = np.where(s, [250, 220, 40], [20, 40, 160]) + (np.stack([x, y, x + y], -1) * 0.6)
    rgb = rgb.clip(0, 255).astype(np.uint8)
    return _img(rgb)


@pytest.fixture(scope="session")
def gatys():
    from brushwork.methods.gatys import Gatys
    return Gatys()


def save_png(t, path):
    a = (t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).save(path)
    return path


def make_photo(path, seed, size=(40, 32)):
    """A small seeded 'photo' (gradients plus noise) saved at ``path``; returns the path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    a = np.stack([x * 5 + seed * 20, y * 6, (x + y) * 3], -1) + rng.integers(0, 40, (*x.shape, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return path


def photo_folder(root, n, name="photos"):
    """A folder of ``n`` photos p0.png ... and a 48 px style image beside it: (folder, style)."""
    d = root / name
    d.mkdir()
    for i in range(n):
        make_photo(d / f"p{i}.png", i)
    return d, make_photo(root / "style.png", 9, (48, 48))

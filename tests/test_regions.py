"""Semantic maps and auto-regions (core/regions.py) for gatys and the feed-forward methods:
per-region statistics pull each content region to its own style region; bad maps are refused
with one line."""
import numpy as np
import pytest
import torch
from PIL import Image

import brushwork
from brushwork.cli import main
from brushwork.core import regions as R, stats as S
from brushwork.core.vgg import VGG19
from brushwork.errors import ControlError, ImageError

H = 48
FAST = {"steps": 20, "tol": 0, "precision": "fp32", "style_weight": 1e6,
        "content_layers": "relu3_1", "style_layers": "relu1_1,relu2_1,relu3_1"}
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _tex(a, hw, tint):
    im = Image.fromarray(a).convert("RGB").resize(hw[::-1], Image.BICUBIC)
    t = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255
    return t * torch.tensor(tint).view(1, 3, 1, 1)


def _halves(h):
    """Style: left half red brick (A), right half blue grass (B)."""
    from skimage import data
    a = _tex(data.brick(), (h, h // 2), (1.0, 0.4, 0.2))
    b = _tex(data.grass(), (h, h // 2), (0.2, 0.5, 1.0))
    return a, b, torch.cat([a, b], -1)


@pytest.fixture(scope="module")
def halves():
    return _halves(H)


def _map(left, right, h=H, w=H):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2], a[:, w // 2:] = left, right
    return a


def _save(a, path):
    Image.fromarray(a).save(path)
    return str(path)


@pytest.fixture(scope="module")
def content():
    from skimage import data
    return _tex(data.chelsea(), (H, H), (1.0, 1.0, 1.0))


def _region_distances(img, a, b):
    """(left half to B - left half to A, right half to A - right half to B): per-region Gram
    distances (relative, relu2_1 + relu3_1); both negative = each half closer to its own."""
    vgg = VGG19(last_layer="relu3_1")
    layers = ["relu2_1", "relu3_1"]

    def d(x, ref):
        fx, fr = vgg(x, layers), vgg(ref, layers)
        return sum(float((S.gram(fx[k]) - S.gram(fr[k])).pow(2).mean()
                         / S.gram(fr[k]).pow(2).mean()) for k in layers)
    left, right = img[..., : H // 2], img[..., H // 2:]
    return d(left, b) - d(left, a), d(right, a) - d(right, b)


def test_maps_pull_each_content_region_to_its_own_style_region(gatys, content, halves):
    a, b, style = halves
    # content left <-> style right (B), content right <-> style left (A)
    cmap, smap = _map(GREEN, RED), _map(RED, GREEN)
    out = gatys.stylize(content, [style], controls={**FAST, "content_map": cmap,
                                                    "style_map": smap})
    assert out.shape == content.shape
    with_maps = _region_distances(out, a, b)
    assert with_maps[0] < 0 and with_maps[1] < 0, with_maps
    plain = _region_distances(gatys.stylize(content, [style], controls=FAST), a, b)
    assert not (plain[0] < 0 and plain[1] < 0), plain


def test_a_colour_on_one_side_only_is_refused_naming_it(content, halves):
    style = halves[2]
    with pytest.raises(ControlError, match="#0000ff"):
        brushwork.stylize(content, style, size=0, steps=1, content_map=_map(RED, BLUE),
                          style_map=_map(RED, GREEN))


def test_a_tiny_one_sided_colour_is_ignored():
    cmap = _map(RED, GREEN)
    cmap[0, 0] = BLUE  # anti-aliasing speck, < 0.5 % of the map
    regions = R.map_regions(R.load_map(cmap, (H, H), "content map"),
                            R.load_map(_map(RED, GREEN), (H, H), "style map"))
    assert sorted(n for n, _, _ in regions) == ["#00ff00", "#ff0000"]
    assert float(regions[0][1].sum() + regions[1][1].sum()) == H * H - 1


def test_wrong_aspect_map_is_refused_and_a_close_one_resized(content, halves):
    with pytest.raises(ImageError, match="aspect"):
        brushwork.stylize(content, halves[2], size=0, steps=1, content_map=_map(RED, GREEN, H, 60),
                          style_map=_map(RED, GREEN))
    m = R.load_map(_map(RED, GREEN, 24, 24), (H, H), "content map")
    assert m.shape == (1, 3, H, H) and set(m.unique().tolist()) == {0, 255}


def test_maps_need_each_other_and_one_style(gatys, content, halves):
    with pytest.raises(ControlError, match="style_map"):
        gatys.stylize(content, [halves[2]], controls={"steps": 1, "content_map": _map(RED, GREEN)})
    with pytest.raises(ControlError, match="one style"):
        gatys.stylize(content, [halves[2], halves[0]],
                      controls={"steps": 1, "content_map": _map(RED, GREEN),
                                "style_map": _map(RED, GREEN)})


def test_cli_maps_work_and_a_bad_map_exits_2_with_one_line(tmp_path, capsys, content, halves):
    c = _save((content[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), tmp_path / "c.png")
    s = _save((halves[2][0].permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8),
              tmp_path / "s.png")
    m1 = _save(_map(GREEN, RED), tmp_path / "m1.png")
    m2 = _save(_map(RED, GREEN), tmp_path / "m2.png")
    out = tmp_path / "o.png"
    base = ["stylize", c, "-s", s, "-m", "gatys", "--size", "0", "-q", "--steps", "2",
            "--mrf-weight", "1", "--map-weight", "5"]
    assert main(base + ["--content-map", m1, "--style-map", m2, "-o", str(out)]) == 0
    assert Image.open(out).size == (H, H)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out2 = tmp_path / "o2.png"
    capsys.readouterr()
    assert main(base + ["--content-map", str(bad), "--style-map", m2, "-o", str(out2)]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("brushwork: error:") and not out2.exists()


def test_auto_regions_find_the_two_halves_on_both_sides():
    a, b, style = _halves(96)  # relu4_1 sees ~100 px: smaller images have too few positions
    content = torch.cat([0.8 * a, 0.8 * b], -1)
    cl, sl = R.auto_regions(content, style, 2, seed=0)
    for lab in (cl, sl):
        w = lab.shape[-1]
        truth = torch.zeros_like(lab)
        truth[:, w // 2:] = 1
        agree = max(float((lab == truth).float().mean()), float((lab == 1 - truth).float().mean()))
        assert agree > 0.9, lab
    assert torch.equal(cl[:, 0], sl[:, 0])  # the left halves correspond
    cm, sm = R.region_maps(cl, sl, (96, 96), (96, 96))
    assert cm.size == sm.size == (96, 96) and len(cm.getcolors()) == 2


def test_auto_regions_runs_in_gatys_and_is_refused_with_maps(gatys, content, halves):
    out = gatys.stylize(content, [halves[2]], controls={"steps": 1, "auto_regions": 2,
                                                        "precision": "fp32"})
    assert out.shape == content.shape
    with pytest.raises(ControlError, match="auto_regions"):
        gatys.stylize(content, [halves[2]], controls={"steps": 1, "auto_regions": 2,
                                                      "content_map": _map(RED, GREEN),
                                                      "style_map": _map(RED, GREEN)})
    with pytest.raises(ControlError, match="johnson"):  # built-in styles: no style image
        brushwork.stylize(content, None, "johnson", size=0, auto_regions=2)


def test_region_style_keeps_only_the_regions_pixels():
    style = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 20, 30)
    mask[..., 5:9, 10:25] = 1
    mask[..., 5:7, 10:12] = 0  # a hole: filled from the nearest region pixel
    out = R.region_style(style, mask)
    assert out.shape[-2:] == (32, 120)  # the 4x15 box, brought up to the 32 px minimum
    inside = {tuple(v) for v in style[0, :, 5:9, 10:25].permute(1, 2, 0).reshape(-1, 3)
              .mul(1e4).round().tolist()}
    got = {tuple(v) for v in out[0].permute(1, 2, 0).reshape(-1, 3).mul(1e4).round().tolist()}
    assert got <= inside  # every pixel is one of the region's
    with pytest.raises(ControlError, match="no pixel"):
        R.region_style(style, torch.zeros(1, 1, 20, 30))


@pytest.mark.parametrize("method", ["adain", "wct", "avatar"])
def test_auto_regions_in_feed_forward_methods_style_each_half_from_its_own(method):
    """A grey photo of the style's two textures, side by side: with auto_regions each half
    takes the colours of its own style half. adain's whole-style statistics colour both
    halves alike, so its regions are much closer; wct's and avatar's whole-style results
    already follow the textures, and their regions stay as close."""
    a, b, style = _halves(96)
    grey = style.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    content = 0.5 * grey / grey.mean() * 0.8
    st = brushwork.get_stylizer(method)
    plain = st.stylize(content, [style], controls={})
    regions = st.stylize(content, [style], controls={"auto_regions": 2}, seed=0)
    assert regions.shape == plain.shape == content.shape

    def mean_rgb_error(img):  # each half's mean colour against its own style half's
        return float((img[..., :48].mean((2, 3)) - a.mean((2, 3))).abs().sum()
                     + (img[..., 48:].mean((2, 3)) - b.mean((2, 3))).abs().sum())
    assert mean_rgb_error(regions) < (0.6 if method == "adain" else 1.1) * mean_rgb_error(plain)
    with pytest.raises(ControlError, match="exactly one style"):
        st.stylize(content, [style, style], controls={"auto_regions": 2})
    with pytest.raises(ControlError, match="masks"):
        st.stylize(content, [style], controls={"auto_regions": 2,
                                               "masks": [torch.ones(1, 3, 96, 96)]})

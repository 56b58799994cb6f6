import pytest
import torch

from brushwork.cli import main
from brushwork.core.image import save_image
from brushwork.core.vgg import VGG19
from brushwork.errors import ControlError
from brushwork.methods.analogy import (Analogy, patchmatch, random_field, unit,
                                       upsample_field, _Field)


@pytest.fixture(scope="module")
def method():
    return Analogy()


def _feat(c=8, h=24, w=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(1, c, h, w, generator=g)
    return unit(f)[0]


def test_patchmatch_finds_a_shift():
    a = _feat()
    b = torch.roll(a, shifts=(2, 3), dims=(1, 2))
    field, _ = patchmatch(a, b, None, patch=3, iterations=6, radius=None,
                          gen=torch.Generator().manual_seed(1), jumps=True)
    h, w = a.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ok = (field[0] == ys + 2) & (field[1] == xs + 3)
    interior = ok[1:h - 4, 1:w - 5]
    assert interior.float().mean() > 0.95


def test_patchmatch_lowers_the_distance():
    a, b = _feat(seed=0), _feat(seed=1)
    gen = torch.Generator().manual_seed(0)
    init = random_field(a.shape[1:], b.shape[1:], gen)
    before = _Field(a, b, 3).distance(init).mean()
    _, after = patchmatch(a, b, init.clone(), patch=3, iterations=3, radius=None, gen=gen)
    assert after.mean() < 0.8 * before


def test_upsampled_field_keeps_a_translation():
    h, w = 6, 7
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coarse = torch.stack((ys + 1, xs + 2))
    fine = upsample_field(coarse, (2 * h, 2 * w), (40, 40))
    fy, fx = torch.meshgrid(torch.arange(2 * h), torch.arange(2 * w), indexing="ij")
    assert torch.equal(fine[0], fy + 2) and torch.equal(fine[1], fx + 4)


def _images():
    g = torch.Generator().manual_seed(3)
    y = torch.linspace(0, 1, 40).view(1, 1, 40, 1)
    x = torch.linspace(0, 1, 48).view(1, 1, 1, 48)
    ones = torch.ones(1, 1, 40, 48)
    content = torch.cat([(y + x) / 2, (y * 4).frac() * ones, (1 - x) * ones], 1)
    style = torch.rand(1, 3, 44, 40, generator=g) * 0.5 + torch.tensor([0.5, 0.2, 0.1]).view(1, 3, 1, 1)
    return content, style


def test_shape_range_and_determinism(method):
    content, style = _images()
    ctl = {"iterations": 2, "deconv_steps": 1}
    a = method.stylize(content, [style], controls=ctl, seed=4)
    b = method.stylize(content, [style], controls=ctl, seed=4)
    assert a.shape == content.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    # the output is made of the style's pixels: its colours lie in the style's range
    assert a[0, 0].mean() > 0.5 and a[0, 0].mean() > a[0, 2].mean()


def test_alpha_keeps_content_structure(method):
    content, style = _images()
    vgg = VGG19(last_layer="relu4_1")
    target = vgg(content, "relu4_1")["relu4_1"]

    def dist(alpha):
        out = method.stylize(content, [style], controls={"alpha": alpha, "iterations": 3,
                                                         "deconv_steps": 2}, seed=0)
        return (vgg(out, "relu4_1")["relu4_1"] - target).pow(2).mean()

    assert dist(1.0) < dist(0.0)


def test_two_styles_refused(method):
    content, style = _images()
    with pytest.raises(ControlError, match="one style"):
        method.stylize(content, [style, style])


def test_cli_refuses_zero_iterations(tmp_path, capsys):
    content, style = _images()
    c, s = save_image(content, tmp_path / "c.png"), save_image(style, tmp_path / "s.png")
    out = tmp_path / "o.png"
    code = main(["stylize", str(c), "-s", str(s), "-m", "analogy", "--iterations", "0",
                 "-o", str(out), "--size", "0", "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and not out.exists()
    assert len(err) == 1 and err[0].startswith("brushwork: error:") and "iterations" in err[0]

"""EFDM: the exact histogram match statistic, the feed-forward method, gatys's efdm style loss."""
import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.core import losses as L
from brushwork.core.stats import exact_histogram_match, sorted_values
from brushwork.core.vgg import VGG19
from brushwork.errors import BrushworkError
from brushwork.methods.adain import AdaIN
from brushwork.methods.efdm import EFDM
from brushwork.methods.gatys import _style_loss


# ----------------------------------------------------------------------------- the statistic
def test_equal_sizes_take_the_styles_values_at_the_contents_ranks():
    g = torch.Generator().manual_seed(0)
    content, style = torch.randn(1, 3, 4, 5, generator=g), torch.rand(1, 3, 5, 4, generator=g)
    out = exact_histogram_match(content, style)
    assert out.shape == content.shape
    assert torch.equal(sorted_values(out), sorted_values(style))
    assert torch.equal(out.flatten(2).argsort(-1), content.flatten(2).argsort(-1))


def test_known_values_and_resampled_style():
    content = torch.tensor([3.0, 1.0, 2.0]).view(1, 1, 1, 3)
    style = torch.tensor([20.0, 10.0, 30.0]).view(1, 1, 1, 3)
    assert exact_histogram_match(content, style).flatten().tolist() == [30.0, 10.0, 20.0]
    # 4 content values, 2 style values: quantiles (i + 0.5) / 4 of the sorted style [0, 1]
    content = torch.tensor([4.0, 1.0, 3.0, 2.0]).view(1, 1, 2, 2)
    style = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert exact_histogram_match(content, style).flatten().tolist() == [1.0, 0.0, 0.75, 0.25]


def test_masked_variant_matches_only_the_region():
    content = torch.tensor([[4.0, 1.0, 3.0, 2.0], [9.0, 8.0, 7.0, 6.0]]).view(1, 1, 2, 4)
    style = torch.tensor([10.0, 40.0, 30.0, 20.0]).view(1, 1, 1, 4)
    mask = torch.tensor([[1.0] * 4, [0.0] * 4]).view(1, 1, 2, 4)
    out = exact_histogram_match(content, style, mask)
    assert out[0, 0, 0].tolist() == [40.0, 10.0, 30.0, 20.0]
    assert torch.equal(out[0, 0, 1], content[0, 0, 1])
    assert torch.equal(exact_histogram_match(content, style, torch.zeros_like(mask)), content)


def test_gradient_is_the_identity_and_bad_shapes_are_refused():
    content = torch.randn(1, 2, 3, 3, requires_grad=True)
    out = exact_histogram_match(content, torch.rand(1, 2, 3, 3))
    w = torch.randn(1, 2, 3, 3)
    (out * w).sum().backward()
    assert torch.allclose(content.grad, w)
    with pytest.raises(BrushworkError):
        exact_histogram_match(torch.rand(1, 2, 3, 3), torch.rand(1, 3, 3, 3))


# ----------------------------------------------------------------------------- the method
def _pil(arr, size):
    return Image.fromarray(arr).resize(size, Image.BICUBIC)


def _tensor(im):
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def pair():
    from skimage import data
    return _tensor(_pil(data.chelsea(), (64, 48))), _tensor(_pil(data.coffee(), (64, 48)))


@pytest.fixture(scope="module")
def nets():
    return EFDM(), AdaIN()


def test_shape_range_determinism_and_strength_zero(pair, nets):
    content, style = pair
    efdm, adain = nets
    out = efdm.stylize(content, [style])
    assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, efdm.stylize(content, [style]))
    assert (out - adain.stylize(content, [style])).abs().mean() > 1e-3
    zero = {"strength": 0.0}
    assert torch.equal(efdm.stylize(content, [style], controls=zero),
                       adain.stylize(content, [style], controls=zero))


def test_closer_to_the_style_distribution_than_adain(pair, nets):
    # coffee stylised with chelsea: EFDM ~12% closer at relu3_1 (chelsea with coffee: a tie
    # at relu3_1, EFDM ~5% closer at relu2_1)
    style, content = pair
    efdm, adain = nets
    vgg = VGG19(last_layer="relu3_1")
    dist = L.HistogramLoss(vgg(style, "relu3_1")["relu3_1"])  # sorted-values distance
    d_efdm = float(dist(vgg(efdm.stylize(content, [style]), "relu3_1")["relu3_1"]))
    d_adain = float(dist(vgg(adain.stylize(content, [style]), "relu3_1")["relu3_1"]))
    assert d_efdm < 0.95 * d_adain


def test_full_mask_equals_no_mask_and_two_regions_run(pair, nets):
    content, style = pair
    efdm = nets[0]
    full = torch.ones(1, 1, 48, 64)
    assert torch.allclose(efdm.stylize(content, [style], controls={"masks": [full]}),
                          efdm.stylize(content, [style]), atol=1e-5)
    left = torch.zeros(1, 1, 48, 64)
    left[..., :32] = 1
    out = efdm.stylize(content, [style, content], controls={"masks": [left, 1 - left]})
    assert out.shape == content.shape


# ----------------------------------------------------------------------------- gatys's loss
def test_efdm_style_loss_is_zero_at_its_target_and_its_gradient_checks():
    g = torch.Generator().manual_seed(1)
    f = torch.rand(1, 3, 5, 6, generator=g)
    mod = _style_loss("efdm", f)
    assert float(mod(f)) == 0.0 and float(mod(f.flip(-1) * 2)) > 0
    x = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = sorted_values(torch.rand(1, 2, 3, 4, generator=g, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda v: L.histogram_loss(v, target), (x,))


@pytest.mark.parametrize("extra", [{}, {"blend": "loss-mix"}, {"masks": "halves"}])
def test_gatys_efdm_lowers_the_distribution_distance(gatys, content_img, style_img, extra):
    vgg = VGG19(last_layer="relu3_1")
    controls = {"steps": 8, "tol": 0, "precision": "fp32", "style_loss": "efdm",
                "style_layers": "relu1_1,relu3_1", **extra}
    styles = [style_img, style_img] if extra else [style_img]  # the per-style paths
    if extra.get("masks"):
        left = torch.zeros(1, 1, *content_img.shape[-2:])
        left[..., : content_img.shape[-1] // 2] = 1
        controls["masks"] = [left, 1 - left]
    out = gatys.stylize(content_img, styles, controls=controls)
    dist = L.HistogramLoss(vgg(style_img, "relu3_1")["relu3_1"])
    f = lambda x: float(dist(vgg(x, "relu3_1")["relu3_1"]))  # noqa: E731
    assert out.shape == content_img.shape
    assert f(out) < f(content_img)

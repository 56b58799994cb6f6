"""Known values instead of "the output changed": loss gradients (gradcheck), losses that must be
exactly zero, a hand-computed Gram matrix, and controls whose result is known in advance with
the shipped weights (strength 0 = the decoder's reconstruction, colour preservation keeps the
content's chroma, an all-white mask = that style alone, seeds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.autograd import gradcheck

import brushwork
from brushwork.core import losses as L
from brushwork.core import stats as S
from brushwork.core.color import preserve_color_inputs, rgb_to_yiq
from brushwork.core.vgg import LAYER_STRIDE
from brushwork.methods import METHODS
from brushwork.methods import feedforward as ff


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.uint8).copy()).permute(2, 0, 1)[None] \
        .float() / 255


@pytest.fixture(scope="module")
def content():
    """A 48x64 crop of scikit-image's chelsea (the cat), downscaled 5x first."""
    from skimage import data
    im = Image.fromarray(data.chelsea()).resize((90, 60), Image.BICUBIC)
    return _tensor(np.asarray(im)[6:54, 13:77])


@pytest.fixture(scope="module")
def coffee():
    from skimage import data
    return _tensor(np.asarray(Image.fromarray(data.coffee()).resize((48, 48), Image.BICUBIC)))


@pytest.fixture(scope="module")
def stripes():
    """A second, very different style: blue/yellow diagonal stripes, 48x48."""
    y, x = np.mgrid[0:48, 0:48]
    s = (np.sin((x + y) / 3.0) > 0)[..., None]
    rgb = np.where(s, [250, 220, 40], [20, 40, 160]) + np.stack([x, y, x + y], -1) * 0.6
    return _tensor(rgb.clip(0, 255))


def _feat(seed, shape=(1, 3, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------------------ gradients
def test_gradcheck_gaussian_w2_loss():
    mod = L.GaussianW2Loss(_feat(0))
    x = (_feat(1) * 0.7 + 0.3).requires_grad_(True)  # a different mean and covariance
    assert float(mod(x.detach())) > 1e-3  # away from the clamp at 0
    assert gradcheck(lambda f: L.gaussian_w2_loss(f, mod.mean, mod.cov_sqrt), (x,))


def test_gradcheck_histogram_loss():
    # distinct values 0.1 apart: the finite differences (1e-6) never change a rank
    g = torch.Generator().manual_seed(2)
    x = (torch.randperm(90, generator=g).double() / 10).reshape(1, 3, 5, 6).requires_grad_(True)
    mod = L.HistogramLoss(_feat(3))
    assert float(mod(x.detach())) > 1e-3
    assert gradcheck(lambda f: L.histogram_loss(f, mod.sorted), (x,))


def test_gradcheck_mrf_loss():
    style = _feat(4)
    mod = L.MRFLoss(style)
    # a small perturbation of the style itself: every patch's nearest neighbour stays its own
    x = (style + 0.02 * _feat(5)).requires_grad_(True)
    assert float(mod(x.detach())) > 0
    assert gradcheck(lambda f: L.mrf_loss(f, mod.patches, mod.size), (x,))


def test_gradcheck_tv_loss():
    assert gradcheck(L.tv_loss, (_feat(6).requires_grad_(True),))


# ----------------------------------------------------------------------------- known values
def test_tv_of_a_constant_image_is_zero_and_of_a_checkerboard_is_known():
    assert float(L.tv_loss(torch.full((1, 3, 7, 9), 0.37))) == 0.0
    board = (torch.arange(4)[:, None] + torch.arange(5)[None]) % 2  # neighbours differ by 1
    assert float(L.tv_loss(board.double()[None, None])) == pytest.approx(2.0)


def test_each_style_loss_of_a_feature_against_its_own_target_is_zero():
    f = _feat(7, (1, 4, 6, 7)).float() * 3 + 1
    other = _feat(8, (1, 4, 6, 7)).float()
    gram, ms = L.GramLoss(f), L.MeanStdLoss(f)
    w2, hist, mrf = L.GaussianW2Loss(f), L.HistogramLoss(f), L.MRFLoss(f)
    assert float(gram(f)) == pytest.approx(0.0, abs=1e-10)
    assert float(ms(f)) == pytest.approx(0.0, abs=1e-10)
    assert float(hist(f)) == pytest.approx(0.0, abs=1e-10)
    assert float(mrf(f)) == pytest.approx(0.0, abs=1e-10)
    # W2 goes through eigenvalues: zero up to their rounding, relative to the covariance's size
    scale = float(S.mean_cov(f)[1].diagonal(dim1=-2, dim2=-1).sum()) / f.shape[1]
    assert float(w2(f)) <= 1e-6 * scale
    for mod in (gram, ms, w2, hist, mrf):  # and none of them is zero for another feature
        assert float(mod(other)) > 1e-3


def test_gram_of_a_hand_computed_tensor():
    # channels [1, 2, 3, 4] and [0, 1, 0, -1] on a 2x2 map: F F^T = [[30, -2], [-2, 2]],
    # divided by C * H * W = 8
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, -1.0]]]])
    expect = torch.tensor([[[30.0, -2.0], [-2.0, 2.0]]]) / 8
    torch.testing.assert_close(S.gram(f), expect)
    torch.testing.assert_close(L.gram_loss(f, expect), torch.tensor(0.0))
    assert float(L.gram_loss(f, 2 * expect)) == pytest.approx(float((expect ** 2).mean()))


# ------------------------------------------------------------------------- method controls
@pytest.fixture(scope="module")
def models():
    """The shipped feed-forward models, fp32 (deterministic), built once."""
    return {name: METHODS[name](bf16=False) for name in ("adain", "wct", "linear", "sanet",
                                                         "styleswap")}


def _parts(name, m):
    """(encoder layers of the pass, the decoder) of a one-pass stylisation."""
    if name == "wct":
        return ("relu2_1",), m.decoders[2]
    if name == "sanet":
        return ("relu4_1", "relu5_1"), m.decoder
    if name == "styleswap":
        return ("relu3_1",), m.decoder
    return (m.layer,), m.decoder


@torch.no_grad()
def reconstruction(m, content, layers, dec):
    """decode(encode(content)) as FeedForward.stylize frames it: reflected border (methods with
    ``border``), padding to the deepest layer's stride, crop back, clamp."""
    h, w = content.shape[-2:]
    b = min(ff.BORDER, h - 1, w - 1) if m.border else 0
    x = ff.with_border(content, b, max(LAYER_STRIDE[l] for l in layers))
    f = ff.encode(m.encoder, x, layers[0], m.bf16)[layers[0]]
    return ff.decode(dec, f, m.bf16)[..., b:b + h, b:b + w].clamp(0, 1)


@pytest.mark.parametrize("name", ["adain", "wct", "linear", "sanet", "styleswap"])
def test_strength_zero_is_the_decoders_reconstruction(models, content, coffee, stripes, name):
    m = models[name]
    controls = {"strength": 0.0, **({"levels": ["2"]} if name == "wct" else {})}
    a = m.stylize(content, [coffee], controls=controls)
    b = m.stylize(content, [stripes], controls=controls)
    expect = reconstruction(m, content, *_parts(name, m))
    assert a.shape == content.shape
    torch.testing.assert_close(a, expect, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # the style does not matter at 0
    full = m.stylize(content, [coffee], controls={**controls, "strength": 1.0})
    assert (full - a).abs().mean() > 0.01  # ... and does at 1


def _unclipped_chroma(out, content):
    """YIQ I and Q of ``out`` and ``content`` on the pixels where no channel of ``out`` is at
    the [0, 1] clamp (there the content's chroma cannot be reproduced)."""
    keep = ((out > 1.5 / 255) & (out < 1 - 1.5 / 255)).all(1)
    assert keep.float().mean() > 0.3, "too few unclipped pixels to compare"
    iq_out, iq_c = rgb_to_yiq(out)[:, 1:], rgb_to_yiq(content)[:, 1:]
    return iq_out.permute(1, 0, 2, 3)[:, keep], iq_c.permute(1, 0, 2, 3)[:, keep]


@pytest.mark.parametrize("name, styles, controls", [
    ("adain", True, {}), ("wct", True, {}), ("gatys", True, {"steps": 3}),
    ("johnson", False, {}), ("cin", False, {"style_id": "1"})])
def test_luminance_preservation_keeps_the_contents_chroma(content, coffee, name, styles,
                                                          controls):
    img = brushwork.stylize(content, coffee if styles else None, method=name, size=None, seed=0,
                            preserve_color="luminance", **controls)
    out = _tensor(np.asarray(img))
    assert out.shape == content.shape
    got, expect = _unclipped_chroma(out, content)
    torch.testing.assert_close(got, expect, atol=2 / 255, rtol=0)  # 8-bit rounding
    plain = _tensor(np.asarray(brushwork.stylize(content, coffee if styles else None,
                                                 method=name, size=None, seed=0, **controls)))
    got, expect = _unclipped_chroma(plain, content)
    assert (got - expect).abs().max() > 10 / 255  # without the control the chroma does change


def test_histogram_preservation_gives_the_style_the_contents_colour_statistics(content, coffee):
    _, (matched,), rgb = preserve_color_inputs(content, [coffee], "histogram")
    assert rgb is None and matched.shape == coffee.shape

    def mean_cov(x):
        f = x[0].reshape(3, -1).double()
        mu = f.mean(1, keepdim=True)
        return mu, (f - mu) @ (f - mu).T / f.shape[1]

    clipped = ((matched <= 0) | (matched >= 1)).float().mean()
    assert clipped < 0.01  # the clamp to [0, 1] barely acts for these two images
    (mu_m, cov_m), (mu_c, cov_c), (mu_s, _) = mean_cov(matched), mean_cov(content), \
        mean_cov(coffee)
    torch.testing.assert_close(mu_m, mu_c, atol=2e-3, rtol=0)
    torch.testing.assert_close(cov_m, cov_c, atol=5e-4, rtol=0)
    assert (mu_s - mu_c).abs().max() > 0.05  # the style's own colours were different
    # the same function on its own gives the same recoloured style
    torch.testing.assert_close(S.match_color(coffee, content), matched)


def test_histogram_preservation_stylises_with_the_matched_style(models, content, coffee):
    m = models["adain"]
    out = m.stylize(content, [coffee], controls={"preserve_color": "histogram"})
    direct = m.stylize(content, [S.match_color(coffee, content)])
    torch.testing.assert_close(out, direct, atol=1e-5, rtol=0)
    assert (out - m.stylize(content, [coffee])).abs().mean() > 0.005


def _white_black(content):
    h, w = content.shape[-2:]
    return [torch.ones(1, 1, h, w), torch.zeros(1, 1, h, w)]


def test_adain_all_white_mask_is_that_style_alone(models, content, coffee, stripes):
    m = models["adain"]
    alone = m.stylize(content, [coffee, stripes], style_weights=[1, 0])
    torch.testing.assert_close(alone, m.stylize(content, [coffee]), atol=1e-5, rtol=0)
    masked = m.stylize(content, [coffee, stripes], controls={"masks": _white_black(content)})
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=0)
    swapped = m.stylize(content, [stripes, coffee], controls={"masks": _white_black(content)})
    assert (swapped - alone).abs().mean() > 0.02


def test_gatys_all_white_mask_is_that_style_alone(gatys, content, coffee, stripes):
    """docs/optimisation.md: each style paints where its mask is white, "the mask's luminance
    is the style's weight per pixel". White everywhere for the first style and black for the
    second must then be the first style alone, whatever the (default, equal) style weights."""
    c = {"steps": 3, "precision": "fp32"}
    alone = gatys.stylize(content, [coffee], controls=c, seed=0)
    masked = gatys.stylize(content, [coffee, stripes],
                           controls={**c, "masks": _white_black(content)}, seed=0)
    torch.testing.assert_close(masked, alone, atol=1e-4, rtol=0)


def test_gatys_all_white_mask_with_weights_one_zero_is_that_style_alone(gatys, content, coffee,
                                                                         stripes):
    c = {"steps": 3, "precision": "fp32"}
    alone = gatys.stylize(content, [coffee], controls=c, seed=0)
    masked = gatys.stylize(content, [coffee, stripes], style_weights=[1, 0],
                           controls={**c, "masks": _white_black(content)}, seed=0)
    torch.testing.assert_close(masked, alone, atol=1e-4, rtol=0)
    swapped = gatys.stylize(content, [stripes, coffee], style_weights=[1, 0],
                            controls={**c, "masks": _white_black(content)}, seed=0)
    assert (swapped - alone).abs().mean() > 0.005


def test_gatys_is_seeded(gatys, content, coffee):
    c = {"steps": 3, "init": "noise", "precision": "fp32"}
    a = gatys.stylize(content, [coffee], controls=c, seed=0)
    b = gatys.stylize(content, [coffee], controls=c, seed=0)
    other = gatys.stylize(content, [coffee], controls=c, seed=1)
    assert torch.equal(a, b)
    assert (a - other).abs().mean() > 0.01


def test_asma_is_deterministic(content):
    m = METHODS["asma"](bf16=False)
    a = m.stylize(content, controls={"artist": "1"}, seed=0)
    b = m.stylize(content, controls={"artist": "1"}, seed=0)
    assert a.shape == content.shape and torch.equal(a, b)
    assert (a - m.stylize(content, controls={"artist": "0"}, seed=0)).abs().mean() > 0.005

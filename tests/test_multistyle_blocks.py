"""Multi-style blocks: CIN mixing, ASM gates, projection discriminator, hinge losses."""
import pytest
import torch
import torch.nn.functional as F

from brushwork.errors import ControlError
from brushwork.core.blocks import (AnisotropicStrokeModule, ConditionalInstanceNorm2d,
                              ProjectionDiscriminator, hinge_d_loss, hinge_g_loss, one_hot_styles)


def _cin(n=3, c=5):
    torch.manual_seed(0)
    m = ConditionalInstanceNorm2d(c, n)
    with torch.no_grad():
        m.gamma.copy_(torch.randn(n, c))
        m.beta.copy_(torch.randn(n, c))
    return m


def test_cin_one_hot_selects_that_styles_parameters():
    m = _cin()
    x = torch.randn(2, 5, 8, 8)
    out = m(x, one_hot_styles([1, 2], 3))
    ref = F.instance_norm(x)
    assert torch.allclose(out[0], ref[0] * m.gamma[1][:, None, None] + m.beta[1][:, None, None],
                          atol=1e-5)
    assert torch.allclose(out[1], ref[1] * m.gamma[2][:, None, None] + m.beta[2][:, None, None],
                          atol=1e-5)


def test_cin_mixed_weights_interpolate_gamma_and_beta():
    m = _cin()
    x = torch.randn(1, 5, 8, 8)
    mix = torch.tensor([[0.25, 0.0, 0.75]])
    g = 0.25 * m.gamma[0] + 0.75 * m.gamma[2]
    b = 0.25 * m.beta[0] + 0.75 * m.beta[2]
    expected = F.instance_norm(x) * g[:, None, None] + b[:, None, None]
    assert torch.allclose(m(x, mix), expected, atol=1e-5)
    # IN output is affine in (gamma, beta), so the mixed output is the mix of one-hot outputs
    a, c = m(x, one_hot_styles([0], 3)), m(x, one_hot_styles([2], 3))
    assert torch.allclose(m(x, mix), 0.25 * a + 0.75 * c, atol=1e-5)


def test_asm_gate_shapes_and_ranges():
    torch.manual_seed(0)
    asm = AnisotropicStrokeModule(c_s=16, c_f=8, n_styles=3, up=8)
    s, f = torch.randn(2, 16, 2, 3), torch.randn(2, 8, 16, 24)
    label = 2 * one_hot_styles([0, 2], 3) - 1
    out, r, z = asm(s, f, label)
    assert out.shape == (2, 8, 16, 24)
    assert r.shape == z.shape == (2, 8, 1, 1)
    for gate in (r, z):
        assert (gate > 0).all() and (gate < 1).all()


def test_asm_stroke_exponent_moves_gate_as_documented():
    torch.manual_seed(0)
    asm = AnisotropicStrokeModule(c_s=16, c_f=8, n_styles=3)
    s, f = torch.randn(1, 16, 2, 2), torch.randn(1, 8, 16, 16)
    label = 2 * one_hot_styles([1], 3) - 1
    _, _, z1 = asm(s, f, label)
    _, _, z_big = asm(s, f, label, stroke=2.0)     # larger strokes: less fine stream
    _, _, z_small = asm(s, f, label, stroke=0.5)   # smaller strokes: more fine stream
    assert (z_big < z1).all() and (z_small > z1).all()
    # a per-pixel exponent map: 1 on the left half (as trained), 2 on the right
    m = torch.ones(1, 1, 16, 16)
    m[..., 8:] = 2.0
    _, _, zmap = asm(s, f, label, stroke=m)
    assert zmap.shape == (1, 8, 16, 16)
    assert torch.allclose(zmap[..., :8], z1.expand(1, 8, 16, 8), atol=1e-6)
    assert (zmap[..., 8:] < z1).all()


def test_projection_discriminator_output_per_scale():
    torch.manual_seed(0)
    d = ProjectionDiscriminator(n_styles=4, chn=4, head=8)
    x = torch.randn(3, 3, 64, 64)
    logits = d(x, one_hot_styles([0, 1, 3], 4))
    assert len(logits) == 3
    assert all(l.shape == (3,) for l in logits)
    # the projection term makes the logit depend on the label
    other = d(x, one_hot_styles([1, 1, 1], 4))
    assert not torch.allclose(logits[0][0], other[0][0])
    # spectral norm on every conv and linear
    names = [n for n, _ in d.named_parameters()]
    assert sum(n.endswith("weight_orig") for n in names) == 3 * 4


def test_hinge_losses_on_known_values():
    real = [torch.tensor([2.0, 0.5]), torch.tensor([-1.0])]
    fake = [torch.tensor([-2.0, 0.0]), torch.tensor([1.0])]
    # real: mean(relu(1-2), relu(1-0.5)) = 0.25; mean(relu(1+1)) = 2
    # fake: mean(relu(1-2), relu(1+0)) = 0.5; mean(relu(1+1)) = 2
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor(4.75))
    # G: -mean(fake) per scale: 1.0 + (-1.0)
    assert torch.isclose(hinge_g_loss(fake), torch.tensor(0.0))
    assert torch.isclose(hinge_g_loss([torch.tensor([0.5, 1.5])]), torch.tensor(-1.0))


def test_conditional_affine_selects_and_mixes_rows():
    from brushwork.core.blocks import ConditionalAffine
    m = ConditionalAffine(3, 2)
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(m(x, torch.eye(2)), x)            # identity start
    with torch.no_grad():
        m.gamma[1] = 2.0
        m.beta[1] = 1.0
    y = m(x, torch.tensor([[0.0, 1.0], [0.5, 0.5]]))
    assert torch.allclose(y[0], 2 * x[0] + 1)            # one-hot row: that style
    assert torch.allclose(y[1], 1.5 * x[1] + 0.5)        # mixed row: mixed parameters


def test_style_names_match_by_word_prefix():
    from brushwork.methods.cin import parse_style_id
    names = ["berthe_morisot", "claude_monet", "vincent_van_gogh", "ukiyo_e", "starry_night"]
    assert parse_style_id("monet", names) == [(1, 1.0)]
    assert parse_style_id("Van_Gogh", names) == [(2, 1.0)]
    assert parse_style_id("gogh", names) == [(2, 1.0)]
    assert parse_style_id("starry", names) == [(4, 1.0)]          # prefix of the whole name
    assert parse_style_id("ukiyo_e:1,monet:3", names) == [(3, 0.25), (1, 0.75)]
    with pytest.raises(ControlError, match="matches 0"):
        parse_style_id("rembrandt", names)
    with pytest.raises(ControlError, match="matches 2"):
        parse_style_id("m", ["monet", "morisot"])

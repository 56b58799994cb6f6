"""Feature transforms on known inputs: AdaIN, WCT, style swap, blending, decoders."""
import pytest
import torch

from brushwork.core import blocks, stats
from brushwork.errors import BrushworkError
from brushwork.methods import feedforward as ff


def _feats(c=16, h=12, w=10, seed=0, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g) * scale + shift


def test_adain_output_has_style_mean_and_std():
    content = _feats(seed=0)
    style = _feats(h=9, w=11, seed=1, scale=3.0, shift=2.0) * torch.linspace(0.5, 2, 16).view(1, -1, 1, 1)
    out = stats.adain(content, style)
    om, os_ = stats.mean_std(out)
    sm, ss = stats.mean_std(style)
    assert torch.allclose(om, sm, atol=1e-4)
    assert torch.allclose(os_, ss, atol=1e-3)


def test_wct_output_has_style_covariance_and_mean():
    content = _feats(c=8, h=10, w=12, seed=2)
    mix = torch.randn(8, 8, generator=torch.Generator().manual_seed(3))
    style = torch.einsum("ij,njhw->nihw", mix, _feats(c=8, h=9, w=9, seed=4)) + 1.5
    out = stats.wct(content, style)
    o = out[0].flatten(1).double()
    s = style[0].flatten(1).double()
    assert torch.allclose(torch.cov(o), torch.cov(s), atol=1e-3)
    assert torch.allclose(o.mean(1), s.mean(1), atol=1e-4)


def test_strength_zero_returns_content_features():
    content, style = _feats(seed=7), _feats(seed=8, scale=2)
    t = stats.adain(content, style)
    assert torch.allclose(ff.combine(content, [t], [1.0], None, 0.0), content)
    assert torch.allclose(ff.combine(content, [t], [1.0], None, 1.0), t)


def test_weighted_blend_interpolates_targets():
    content = _feats(seed=9)
    a, b = stats.adain(content, _feats(seed=10, scale=3)), stats.adain(content, _feats(seed=11))
    out = ff.combine(content, [a, b], [0.25, 0.75], None, 1.0)
    assert torch.allclose(out, 0.25 * a + 0.75 * b, atol=1e-6)


def test_masks_select_style_per_region():
    content = _feats(h=8, w=8, seed=12)
    a, b = torch.zeros_like(content), torch.ones_like(content)
    left = torch.zeros(1, 1, 8, 8)
    left[..., :4] = 1
    out = ff.combine(content, [a, b], [0.5, 0.5], [left, 1 - left], 1.0)
    assert torch.allclose(out[..., :3], a[..., :3]) and torch.allclose(out[..., 5:], b[..., 5:])


def test_style_swap_copies_style_patches():
    style = _feats(c=4, h=6, w=6, seed=13)
    out = blocks.style_swap(style, style, patch=3)
    assert torch.allclose(out, style, atol=1e-5)  # every patch finds itself
    other = blocks.style_swap(_feats(c=4, h=7, w=5, seed=14), style)
    assert other.shape == (1, 4, 7, 5)


def test_decoder_shapes_mirror_vgg():
    for level, ch in [(1, 64), (3, 256), (4, 512), (5, 512)]:
        dec = blocks.decoder(level, width=1 / 32)
        out = dec(torch.randn(1, ch, 4, 4))
        assert out.shape == (1, 3, 4 * 2 ** (level - 1), 4 * 2 ** (level - 1))
        assert blocks.decoder_level(dec) == level
    with pytest.raises(BrushworkError):
        blocks.decoder(6)


def test_attention_and_linear_blocks_shapes():
    c4, s4 = _feats(c=8, h=6, w=6, seed=15), _feats(c=8, h=5, w=7, seed=16)
    c5, s5 = c4[..., ::2, ::2], s4[..., ::2, ::2]
    assert blocks.SATransform(8)(c4, s4, c5, s5).shape == c4.shape
    assert blocks.LinearTransform(8, dim=4)(c4, s4).shape == c4.shape
    enc = blocks.SmallEncoder(4, width=1 / 16)
    feats = enc(torch.rand(1, 3, 32, 32), ["relu1_1", "relu4_1"])
    assert feats["relu4_1"].shape == (1, 32, 4, 4)


def test_tiled_decode_matches_whole(monkeypatch):
    torch.manual_seed(0)
    dec = blocks.decoder(3, width=1 / 32)
    feat = torch.randn(1, 256, 20, 28)
    whole = ff.decode(dec, feat, False)
    monkeypatch.setattr(ff, "TILE_PIXELS", 32 * 32)
    monkeypatch.setattr(ff, "TILE", 32)
    monkeypatch.setattr(ff, "OVERLAP", 32)  # 8 features >= the decoder's receptive radius
    tiled = ff.decode_big(dec, feat, False, 4)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_tiled_encode_close_to_whole(monkeypatch):
    from brushwork.core.vgg import VGG19

    enc = VGG19(last_layer="relu3_1")
    x = torch.rand(1, 3, 96, 128)
    whole = ff.encode(enc, x, "relu3_1", False)["relu3_1"]
    monkeypatch.setattr(ff, "TILE_PIXELS", 48 * 48)
    monkeypatch.setattr(ff, "TILE", 48)
    monkeypatch.setattr(ff, "OVERLAP", 32)
    tiled = ff.encode_big(enc, x, "relu3_1", False, 4)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.05 * whole.abs().mean()


@torch.no_grad()
def test_linear_transform_output_scale_follows_the_style_at_init():
    # VGG features are on the Caffe 0-255 scale: an untrained transform must not blow them up
    # (the matrix branches see RMS-normalised features; the scale comes back as a ratio)
    from brushwork.core.blocks import LinearTransform
    torch.manual_seed(0)
    lt = LinearTransform(16, dim=4)
    c = torch.rand(2, 16, 12, 12) * 300
    s = torch.rand(2, 16, 10, 10) * 30
    out = lt(c, s)
    centred = out - out.mean((2, 3), keepdim=True)
    style_rms = (s - s.mean((2, 3), keepdim=True)).pow(2).mean().sqrt()
    ratio = float(centred.pow(2).mean().sqrt() / style_rms)
    assert torch.isfinite(out).all() and 1e-3 < ratio < 1e3
    # scaling content and style together scales the output (up to the 1x1 conv biases)
    big = lt(c * 10, s * 10)
    small = lt(c, s)
    assert torch.allclose(big - lt.unzip.bias[None, :, None, None],
                          10 * (small - lt.unzip.bias[None, :, None, None]), rtol=0.05, atol=1.0)

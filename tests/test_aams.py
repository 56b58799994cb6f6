"""aams: the self-attention module, the multi-stroke fusion, the method on tiny seeded networks,
its trainer, its CLI and its shipped weights.

Tiny networks (decoder width 1/64: 8 channels; 4 query/key channels) behind the real VGG19 on
images of 40-64 px; fp32 throughout (bf16 off), so every number is deterministic.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import brushwork.api
from brushwork.cli import main
from brushwork.core import blocks
from brushwork.core.image import resize, to_tensor
from brushwork.core.stats import WCT_EPS, feature_stats, sym_power
from brushwork.core.weights import prefixed_state, save_weights
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import METHODS
from brushwork.methods import aams as A
from brushwork.methods import feedforward as ff
from brushwork.train import TRAINERS
from brushwork.train import aams as T
from brushwork.train import common as training

from _arbitrary_util import assert_cli_refused, image, lively, noise_png

W = 1 / 64


@pytest.fixture(autouse=True)
def fp32(monkeypatch):
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    monkeypatch.setattr(brushwork.api, "_instances", {})


def _tiny_file(path, seed=0):
    """Seeded tiny attention module and decoder; the decoder's first conv scaled down and its
    last bias raised so the output sits mid-range instead of saturating."""
    torch.manual_seed(seed)
    dec, att = lively(blocks.decoder(4, W)), A.SelfAttention(512, 4)
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    convs[0].weight.data *= 0.03
    convs[-1].bias.data += 0.4
    state = {**prefixed_state("attention", att), **prefixed_state("decoder", dec)}
    save_weights(state, path, metadata={"method": "aams", "width": str(W), "inner": "4",
                                        "level": "4"})
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_file(tmp_path_factory.mktemp("aams") / "tiny.safetensors")


@pytest.fixture(scope="module")
def model(tiny):
    return A.AAMS(weights=tiny, bf16=False)


def _skimage(name, size):
    from skimage import data
    return to_tensor(Image.fromarray(getattr(data, name)()).convert("RGB").resize(size,
                                                                                 Image.BICUBIC))


# ------------------------------------------------------------------------- the attention module
def test_attention_known_values():
    """Zero query/key weights: every position attends uniformly (alpha = 1/N); identity values:
    the context is the mean feature; zero gate weights and bias: A = 0.5 everywhere, so the
    output is the mean of the features and their spatial mean."""
    att = A.SelfAttention(8, 2)
    with torch.no_grad():
        for conv in (att.query, att.key, att.gate):
            conv.weight.zero_()
            conv.bias.zero_()
    f = torch.rand(1, 8, 3, 5, generator=torch.Generator().manual_seed(0))
    alpha = att.weights(f)
    assert alpha.shape == (1, 15, 15)
    assert torch.allclose(alpha, torch.full_like(alpha, 1 / 15))
    out, a = att(f)
    assert a.shape == (1, 1, 3, 5) and torch.allclose(a, torch.full_like(a, 0.5))
    assert torch.allclose(out, 0.5 * f + 0.5 * f.mean((2, 3), keepdim=True), atol=1e-6)


def test_attention_rows_normalised_and_large_maps():
    torch.manual_seed(0)
    att = A.SelfAttention(16, 4)
    f = torch.rand(2, 16, 6, 7)
    alpha = att.weights(f)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, 42), atol=1e-6)
    assert (alpha > 0).all()
    a = att.attention_map(f)
    assert a.shape == (2, 1, 6, 7) and ((a > 0) & (a < 1)).all()
    big = torch.rand(1, 16, 80, 70)  # 5600 positions: attended on a resized copy
    assert big.shape[-2] * big.shape[-1] > A.MAX_ATTENTION_POSITIONS
    assert att.attention_map(big).shape == (1, 1, 80, 70)


# --------------------------------------------------------------------------------- the fusion
def test_stroke_scales_and_weights_known_values():
    assert A.stroke_scales(1) == [1.0]
    assert np.allclose(A.stroke_scales(3), [0.5, 2 ** -0.5, 1.0])
    att = torch.full((1, 1, 8, 12), 0.1)
    att[..., :6] = 0.9  # salient left half
    w1 = A.stroke_weights(att, 1)
    assert w1.shape == (1, 1, 8, 12) and torch.equal(w1, torch.ones_like(w1))
    w = A.stroke_weights(att, 2, sigma=0)
    assert torch.equal(w[0, 0, :, :6], torch.ones(8, 6))  # salient: the finest stroke
    assert torch.equal(w[1, 0, :, 6:], torch.ones(8, 6))  # the rest: the coarsest
    ws = A.stroke_weights(att, 2)  # blurred: smooth across the border, still summing to 1
    assert torch.allclose(ws.sum(0), torch.ones(1, 8, 12))
    assert 0.5 < float(ws[0, 0, 4, 5]) < 1 and 0 < float(ws[0, 0, 4, 6]) < 0.5
    assert float(ws[0, 0, 4, 0]) > 0.99
    # two distinct levels spread over three strokes: finest and coarsest, none in the middle
    w3 = A.stroke_weights(att, 3, sigma=0)
    assert torch.equal(w3[0, 0, :, :6], torch.ones(8, 6)) and float(w3[1].sum()) == 0
    # a flat map: one level
    flat = A.stroke_weights(torch.full((1, 1, 4, 4), 0.3), 3, sigma=0)
    assert torch.allclose(flat.sum(0), torch.ones(1, 4, 4))


# ------------------------------------------------------------------------------- the method
def test_registered_with_its_controls(model):
    assert METHODS["aams"] is A.AAMS
    assert set(model.controls) == {"strength", "preserve_color", "masks", "style_scale",
                                   "strokes", "auto_regions"}
    assert model.controls["strokes"].default == 3
    with pytest.raises(ControlError, match="patch_size"):
        model.stylize(image(40, 48, 0), [image(40, 40, 1)], controls={"patch_size": 3})
    for bad in (0, A.MAX_STROKES + 1, "two"):
        with pytest.raises(ControlError, match="strokes"):
            model.stylize(image(40, 48, 0), [image(40, 40, 1)], controls={"strokes": bad})


PINNED = [0.1075, 0.0603, 0.0967, 0.0958, 0.2071, 0.2605, 0.2516, 0.2508, 0.0317, 0.1284,
          0.0987, 0.0871]
PINNED_MEAN = 0.209729


def test_tiny_network_pinned(model):
    out = model.stylize(image(48, 56, 0), [image(64, 64, 1)])
    assert out.shape == (1, 3, 48, 56)
    got = out[0, :, 20, 20:24].flatten()
    assert torch.allclose(got, torch.tensor(PINNED), atol=1e-4), got
    assert abs(float(out.mean()) - PINNED_MEAN) < 1e-5, float(out.mean())
    again = model.stylize(image(48, 56, 0), [image(64, 64, 1)])
    assert torch.equal(out, again)


def _reference(model, content, style, strokes_features):
    """encode with the reflected border -> target features -> decode -> crop, by hand."""
    h, w = content.shape[-2:]
    b = min(ff.BORDER, h - 1, w - 1)
    x = ff.with_border(content, b, 8)
    f = model.encoder(x, ["relu4_1"])["relu4_1"]
    t = strokes_features(f)
    y = ff.decode(model.decoder, t, False)
    return y[..., b:b + h, b:b + w].clamp(0, 1)


def test_strength_zero_is_the_reconstruction(model):
    c, s = image(48, 56, 0), image(64, 64, 1)
    out = model.stylize(c, [s], controls={"strength": 0})
    assert torch.allclose(out, _reference(model, c, s, lambda f: f), atol=1e-5)


def test_one_stroke_is_whitened_single_scale_style_swap(model):
    """strokes 1: whiten content and style (their own mean and covariance), swap 3x3 patches,
    whiten the result again, colour it with the style's statistics, decode."""
    c, s = image(48, 56, 0), image(64, 64, 1)
    sw = resize(s, ff.style_size(s.shape[-2:], c.shape[-2:], 1.0))
    sf = model.encoder(sw, ["relu4_1"])["relu4_1"]

    def white(f):
        flat = f[0].flatten(1).double()
        m, cov = feature_stats(flat)
        return (sym_power(cov, -0.5, WCT_EPS) @ (flat - m)).float().view_as(f)

    def swapped(f):
        t = blocks.style_swap(white(f), white(sf), 3, A.SWAP_STRIDE)
        t = white(t)[0].flatten(1).double()  # the swap's averaged patches, whitened again
        m, cov = feature_stats(sf[0].flatten(1))
        return (sym_power(cov, 0.5, WCT_EPS) @ t + m).float().view_as(f)

    out = model.stylize(c, [s], controls={"strokes": 1})
    assert torch.allclose(out, _reference(model, c, s, swapped), atol=1e-4)
    assert not torch.allclose(out, model.stylize(c, [s], controls={"strokes": 3}), atol=1e-3)


def test_style_features_at_every_stroke_scale(model):
    s = image(64, 96, 1)
    p = model.passes({})[0]
    feats = model.style_features(s, p, {"strokes": 3})
    assert [tuple(feats[A.stroke_key(k)].shape[-2:]) for k in range(3)] == [(4, 6), (5, 8),
                                                                            (8, 12)]
    assert feats["relu4_1"] is feats[A.stroke_key(2)]


def test_several_styles_and_masks(model):
    from _arbitrary_util import check_weights_and_masks
    check_weights_and_masks(model, image(48, 56, 0), image(64, 64, 1), image(64, 64, 5))


# -------------------------------------------------------------------------- shipped weights
def _band_energy(img):
    """Share of the Laplacian-pyramid energy of the luminance in the two coarsest of 4 bands."""
    y = img.mean(1, keepdim=True)
    energies = []
    for _ in range(4):
        down = F.avg_pool2d(y, 2)
        up = F.interpolate(down, size=y.shape[-2:], mode="bilinear", align_corners=False)
        energies.append(float((y - up).pow(2).mean()) * y.numel())
        y = down
    return sum(energies[2:]) / sum(energies)


def test_shipped_weights_run_and_the_stroke_size_shows():
    m = A.AAMS(bf16=False)
    assert m.meta["method"] == "aams" and m.meta["level"] == "4"
    c, s = _skimage("astronaut", (64, 64)), _skimage("coffee", (64, 48))
    out = m.stylize(c, [s])
    assert out.shape == (1, 3, 64, 64) and 0.05 < float(out.std()) and out.min() >= 0
    assert not torch.allclose(out, m.stylize(c, [s], controls={"strength": 0}), atol=0.02)
    c2 = _skimage("chelsea", (160, 128))
    fine = m.stylize(c2, [s], controls={"style_scale": 0.5})
    coarse = m.stylize(c2, [s], controls={"style_scale": 2.0})
    assert _band_energy(coarse) > _band_energy(fine) + 0.03, (_band_energy(coarse),
                                                              _band_energy(fine))


# ---------------------------------------------------------------------------------- trainer
def _train_args(tmp_path, steps, resume=False, extra=()):
    for sub, names in (("c", ("astronaut", "chelsea")), ("s", ("coffee", "rocket"))):
        d = tmp_path / sub
        d.mkdir(exist_ok=True)
        for n in names:
            Image.fromarray(getattr(__import__("skimage.data").data, n)()).convert(
                "RGB").resize((48, 40)).save(d / f"{n}.png")
    p = argparse.ArgumentParser()
    T.add_arguments(p)
    argv = ["--content", str(tmp_path / "c"), "--styles", str(tmp_path / "s"),
            "--out", str(tmp_path / "out.safetensors"), "--size", "32", "--batch", "2",
            "--steps", str(steps), "--width", str(W), "--inner", "4", "--checkpoint-every", "1",
            "--sample-every", "0", "--no-bf16", "--device", "cpu", "--lr", "1e-3"]
    return p.parse_args(argv + (["--resume"] if resume else []) + list(extra))


def test_trainer_lowers_the_loss():
    torch.manual_seed(0)
    from brushwork.core.vgg import VGG19
    vgg = VGG19(last_layer="relu4_1")
    att, dec = A.SelfAttention(512, 4), blocks.decoder(4, 1 / 16)
    opt = torch.optim.Adam(list(att.parameters()) + list(dec.parameters()), 3e-3)
    x = torch.cat([image(32, 32, 0), image(32, 32, 1)])
    seen = []
    for _ in range(3):
        total, parts, y, a = T.losses(vgg, att, dec, x, False, torch.device("cpu"), 1.0, 0.1)
        seen.append(parts["total"])
        assert set(parts) == {"pixel", "perceptual", "sparsity", "total"}
        assert y.shape == x.shape and a.shape == (2, 1, 4, 4)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[2] < seen[0], seen


def test_trainer_checkpoint_resume_round_trip(tmp_path):
    assert TRAINERS["aams"] is T
    whole = tmp_path / "whole"
    whole.mkdir()
    T.run(_train_args(whole, 3))
    split = tmp_path / "split"
    split.mkdir()
    T.run(_train_args(split, 2))
    T.run(_train_args(split, 3, resume=True))
    assert training.load_checkpoint_step(training.checkpoint_path(_train_args(split, 3))) == 3
    from brushwork.core.weights import load_weights
    a, meta = load_weights(whole / "out.safetensors")
    b, _ = load_weights(split / "out.safetensors")
    assert meta["method"] == "aams" and meta["steps"] == "3" and meta["inner"] == "4"
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # the file runs as a method; export of the checkpoint gives the same tensors
    A.AAMS(weights=str(whole / "out.safetensors"), bf16=False).stylize(image(40, 40, 0),
                                                                       [image(40, 40, 1)])
    T.export(training.checkpoint_path(_train_args(whole, 3)), tmp_path / "x.safetensors",
             fp16=False)
    c, _ = load_weights(tmp_path / "x.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_stylization_loss_fine_tunes_a_shipped_style_file(tmp_path):
    """--style-weight with --init: the decoder learns from multi-stroke targets of (photo,
    painting) pairs; the attention module, which gets no gradient from them, stays as it was."""
    torch.manual_seed(0)
    from brushwork.core.vgg import VGG19
    from brushwork.core.weights import load_weights
    vgg = VGG19(last_layer="relu4_1")
    att, dec = A.SelfAttention(512, 4), blocks.decoder(4, 1 / 16)
    opt = torch.optim.Adam(dec.parameters(), 3e-3)
    c, s = torch.cat([image(40, 40, 0), image(40, 40, 1)]), torch.cat([image(40, 40, 2),
                                                                        image(40, 40, 3)])
    seen = []
    for _ in range(3):
        total, parts = T.stylize_losses(vgg, att, dec, c, s, False, torch.device("cpu"), 2,
                                        1.0, 10.0)
        assert set(parts) == {"content", "style"}
        seen.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[2] < seen[0], seen
    base = tmp_path / "base"
    base.mkdir()
    T.run(_train_args(base, 1))
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    T.run(_train_args(tuned, 2, extra=["--init", str(base / "out.safetensors"),
                                       "--style-weight", "10", "--reconstruction-weight", "0",
                                       "--strokes", "2"]))
    a, _ = load_weights(base / "out.safetensors")
    b, meta = load_weights(tuned / "out.safetensors")
    assert meta["style_weight"] == "10.0"
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("attention."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    for bad, needle in ((["--style-weight", "0", "--reconstruction-weight", "0"],
                         "nothing to train"), (["--strokes", "9", "--style-weight", "1"],
                                               "--strokes")):
        with pytest.raises(BrushworkError, match=needle):
            T.run(_train_args(tmp_path / "base", 1, extra=bad))


# ----------------------------------------------------------------------------------- the CLI
def test_cli_end_to_end_and_bad_strokes(tmp_path, tiny, capsys):
    c, s = noise_png(tmp_path / "c.png", (56, 48), 1), noise_png(tmp_path / "s.png", (40, 40), 2)
    out = tmp_path / "o.png"
    args = ["stylize", c, "-s", s, "-m", "aams", "--weights", tiny, "--size", "0", "-q"]
    assert main(args + ["--strokes", "2", "--style-scale", "0.8", "-o", str(out)]) == 0
    assert Image.open(out).size == (56, 48)
    for bad in (["--strokes", "0"], ["--strokes", "1000"], ["--strokes", "two"]):
        assert_cli_refused(args + bad, tmp_path / "bad.png", capsys)

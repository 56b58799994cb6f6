"""EFANet: the feature exchange block, the whitening loss, the method, the trainer, the CLI."""

import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core import blocks
from brushwork.core.stats import adain, channel_mean, sym_power
from brushwork.core.weights import load_weights, prefixed_state, resolve_weights, save_weights
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import feedforward as ff
from brushwork.methods.efanet import EFANet, ExchangeBlock, code_covariance, whitening_loss
from brushwork.train import efanet as trainer

from _arbitrary_util import (check_shipped_on_a_photo, check_resume_and_export, cli_pair, trainer_args,
                             assert_cli_refused, assert_pinned_tiny, check_weights_and_masks,
                             image, lively, save_tiny, training_folders)

ENC_W = 1 / 16  # small encoder and decoder: 4/8/16/32 channels at relu1_1..relu4_1


def _randomise(block, seed=0, gain=0.3):
    """Seeded random weights everywhere, the alignment layer included (a fresh block's is 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * gain / max(1, p.shape[-1]) ** 0.5)
    return block


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded efanet weight file: small encoder (width 1/16), a tiny exchange block (code of
    4 channels, embeddings of 8) and a 1/16-width decoder."""
    path = tmp_path_factory.mktemp("efanet") / "efanet_tiny.safetensors"
    torch.manual_seed(0)
    enc = lively(blocks.SmallEncoder(4, ENC_W))
    block = _randomise(ExchangeBlock(enc.channels["relu4_1"], 4, 8))
    dec = lively(blocks.decoder(4, ENC_W, enc.channels["relu4_1"]))
    convs = [m for m in dec if isinstance(m, torch.nn.Conv2d)]
    convs[0].weight.data *= 1000  # the small random encoder's features are weak
    convs[-1].weight.data *= 0.2  # outputs around mid-grey, few saturated
    convs[-1].bias.data += 0.5
    state = {**prefixed_state("encoder", enc), **prefixed_state("exchange", block),
             **prefixed_state("decoder", dec)}
    save_weights(state, path, metadata={"method": "efanet", "level": "4", "width": str(ENC_W),
                                        "dim": "4", "hidden": "8", "encoder": "small",
                                        "encoder_level": "4", "encoder_width": str(ENC_W)})
    return path


@pytest.fixture(scope="module")
def model(tiny):
    return EFANet(weights=str(tiny), bf16=False)


def _feat(c=8, h=10, w=12, seed=0, b=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, w, generator=g) * 3 + torch.arange(c).view(1, c, 1, 1)).relu()


# ------------------------------------------------------------------------ the exchange block
def test_a_fresh_block_is_adain_and_gives_a_content_with_itself_back():
    torch.manual_seed(0)
    block = ExchangeBlock(8, 4, 16)
    c, s = _feat(seed=1), _feat(h=7, w=9, seed=2)
    torch.testing.assert_close(block(c, s), adain(c, s), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block(c, c), c, atol=1e-3, rtol=1e-3)


def test_exchange_zero_is_adain_and_the_target_keeps_the_styles_means():
    block = _randomise(ExchangeBlock(8, 4, 16), seed=3)
    c, s = _feat(seed=1), _feat(h=7, w=9, seed=2)
    out, code = block(c, s, return_code=True)
    assert out.shape == c.shape and code.shape == (1, 4, 10, 12)
    assert not torch.allclose(out, adain(c, s), atol=1e-3)  # the exchange acts
    torch.testing.assert_close(block(c, s, exchange=0.0), adain(c, s), atol=1e-5, rtol=1e-5)
    # U has no bias and the code has zero mean: the target's channel means are the style's
    torch.testing.assert_close(channel_mean(out), channel_mean(s), atol=1e-4, rtol=1e-4)


def test_the_common_feature_is_exchangeable_and_the_matrix_has_the_codes_size():
    block = _randomise(ExchangeBlock(8, 4, 16), seed=4)
    zc, zs = block.code(_feat(seed=5)), block.code(_feat(seed=6))
    e_c, e_s = block.embedding(zc), block.embedding(zs)
    assert e_c.shape == (1, 16)
    torch.testing.assert_close(block.common_feature(e_c, e_s), block.common_feature(e_s, e_c))
    assert not torch.allclose(e_c, e_s)
    assert block.matrix(e_s, block.common_feature(e_c, e_s)).shape == (1, 4, 4)
    # the common feature depends on the pair: another content, another alignment
    e_c2 = block.embedding(block.code(_feat(seed=7)))
    assert not torch.allclose(block.common_feature(e_c2, e_s), block.common_feature(e_c, e_s))


def test_a_batch_of_contents_takes_one_style():
    block = _randomise(ExchangeBlock(8, 4, 16), seed=8)
    c, s = _feat(seed=1, b=2), _feat(h=7, w=9, seed=2)
    out = block(c, s)
    assert out.shape == c.shape
    torch.testing.assert_close(out[1:], block(c[1:], s), atol=1e-5, rtol=1e-5)


def test_whitening_loss_known_values():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 16, 16, generator=g) @ torch.randn(16, 16, generator=g)  # correlated
    assert float(whitening_loss(z)) > 0.1
    flat = z.flatten(2) - z.flatten(2).mean(-1, keepdim=True)
    w = sym_power(code_covariance(z)[0].double(), -0.5).float()
    white = (w @ flat[0]).view(1, 4, 16, 16) + 5.0  # a mean does not count
    assert float(whitening_loss(white)) < 1e-8
    # covariance 4 I: (4 - 1)^2 on the 4 diagonal entries of 16
    assert float(whitening_loss(2 * white)) == pytest.approx(9 / 4, rel=1e-4)


# ----------------------------------------------------------------------------- the method
def test_pinned_tiny_output(model):
    assert_pinned_tiny(model, PINNED_TINY, PINNED_TINY_MEAN)


PINNED_TINY = [0.33151, 0.34841, 0.36403, 0.31452, 0.44261, 0.40495, 0.47605, 0.46453, 0.48724,
               0.51839, 0.4544, 0.50062]
PINNED_TINY_MEAN = 0.429267


def _reconstruction(model, content):
    hw = tuple(content.shape[-2:])
    b = min(ff.BORDER, hw[0] - 1, hw[1] - 1)
    x = ff.with_border(content, b, 8)
    f = ff.encode(model.encoder, x, [model.layer], False)[model.layer]
    out = ff.decode(model.decoder, f, False)
    return ff.finish(out[..., b:b + hw[0], b:b + hw[1]], hw, None)


def test_strength_zero_is_the_reconstruction_and_exchange_changes_the_output(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    zero = model.stylize(content, [style], controls={"strength": 0.0})
    torch.testing.assert_close(zero, _reconstruction(model, content), atol=1e-6, rtol=0)
    full = model.stylize(content, [style])
    base = model.stylize(content, [style], controls={"exchange": 0.0})
    assert not torch.allclose(zero, full, atol=1e-3)
    assert not torch.allclose(base, full, atol=1e-3)


def test_two_styles_by_weights_and_by_masks(model):
    content = image(40, 48, 0)
    s1, s2 = image(32, 40, 1), image(40, 32, 5)
    check_weights_and_masks(model, content, s1, s2, full_mask=True)


def test_tile_by_tile_runs(model):
    content, style = image(64, 80, 0), image(32, 40, 1)
    out = model.stylize(content, [style], tile=32)
    assert out.shape == content.shape
    assert float((out - model.stylize(content, [style])).abs().mean()) < 0.1


def test_unknown_and_bad_controls_are_refused(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"patch_size": 3})
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"exchange": -1.0})


def test_weight_file_for_another_method_is_refused(tmp_path):
    path = tmp_path / "adain.safetensors"
    save_tiny(path, "adain", {"decoder": blocks.decoder(4, 1 / 32)}, {"width": str(1 / 32)})
    with pytest.raises(BrushworkError, match="not 'efanet'"):
        EFANet(weights=str(path))


def test_bad_level_metadata_is_refused(tmp_path):
    path = tmp_path / "lvl.safetensors"
    save_weights(prefixed_state("exchange", ExchangeBlock(128, 4, 8)), path,
                 metadata={"method": "efanet", "level": "2"})
    with pytest.raises(BrushworkError, match="level must be 3 or 4"):
        EFANet(weights=str(path))


def test_shipped_weights_run_on_a_photo():
    check_shipped_on_a_photo(lambda: EFANet(bf16=False), "efanet_vgg.safetensors")


# ----------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return training_folders(tmp_path_factory.mktemp("efanet_data"))


def _args(folders, out, **kw):
    return trainer_args(trainer, ["--content", str(folders / "content"), "--styles", str(folders / "styles"),
            "--out", str(out), "--size", "32", "--batch", "1", "--steps", "2",
            "--checkpoint-every", "1", "--sample-every", "0", "--no-bf16",
            "--init", "none", "--width", str(ENC_W), "--dim", "4", "--hidden", "8"], **kw)


@pytest.fixture(scope="module")
def vgg():
    from brushwork.core.vgg import VGG19
    return VGG19(last_layer="relu4_1")


def test_three_steps_lower_the_loss(vgg):
    torch.manual_seed(0)
    block = ExchangeBlock(512, 8, 16)
    dec = blocks.decoder(4)
    assert trainer.init_from(dec, resolve_weights(None, "wct_vgg.safetensors", ""), 4, 1.0) \
        == "wct_vgg.safetensors (decoder4)"
    c = torch.cat([image(32, 32, 0), image(32, 32, 5)])
    s = torch.cat([image(32, 32, 1), image(32, 32, 2)])
    opt = torch.optim.Adam(list(block.parameters()) + list(dec.parameters()), lr=1e-4)
    seen = []
    for _ in range(3):
        total, parts, out = trainer.losses(vgg, block, dec, c, s, 4, False, torch.device("cpu"),
                                           1.0, 5.0, 10.0)
        assert set(parts) == {"content", "style", "whitening", "total"}
        assert total.item() == pytest.approx(parts["content"] + 5 * parts["style"]
                                             + 10 * parts["whitening"], rel=1e-5)
        assert out.shape == c.shape
        seen.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[2] < seen[1] < seen[0]
    assert block.align.weight.abs().sum() > 0  # the exchange started to learn


def test_init_takes_only_a_decoder_of_the_same_level():
    dec = blocks.decoder(3)
    assert trainer.init_from(dec, resolve_weights(None, "adain_vgg.safetensors", ""), 3, 1.0) \
        == "adain_vgg.safetensors (decoder)"
    with pytest.raises(BrushworkError, match="level"):
        trainer.init_from(blocks.decoder(4), resolve_weights(None, "adain_vgg.safetensors", ""),
                          4, 1.0)
    with pytest.raises(BrushworkError, match="width"):
        trainer.init_from(blocks.decoder(4, 0.5),
                          resolve_weights(None, "wct_vgg.safetensors", ""), 4, 0.5)


def test_training_resumes_where_it_stopped_and_exports(folders, tmp_path):
    a, meta, exported = check_resume_and_export(trainer, lambda out, **kw: _args(folders, out, **kw),
                                                tmp_path)
    assert meta["method"] == "efanet" and meta["level"] == "4"
    assert {k.split(".")[0] for k in a} == {"exchange", "decoder"}
    assert load_weights(exported)[1]["dim"] == "4"
    m = EFANet(weights=str(exported), bf16=False)
    out = m.stylize(image(32, 32, 0), [image(32, 32, 1)])
    assert out.shape == (1, 3, 32, 32)
    half = tmp_path / "half.safetensors"  # the shipped form: fp16 tensors
    trainer.export(tmp_path / "part.ckpt", half)
    assert half.stat().st_size < 0.6 * exported.stat().st_size
    out16 = EFANet(weights=str(half), bf16=False).stylize(image(32, 32, 0), [image(32, 32, 1)])
    assert float((out16 - out).abs().max()) < 1e-2


def test_a_relu3_1_model_trains_and_runs(folders, tmp_path):
    path = trainer.run(_args(folders, tmp_path / "l3.safetensors", steps=1, level=3))
    meta = load_weights(path)[1]
    assert meta["level"] == "3" and meta["init"] == "none"
    m = EFANet(weights=str(path), bf16=False)
    assert m.layer == "relu3_1" and m.exchange.expand.out_channels == 256
    assert m.stylize(image(32, 40, 0), [image(32, 32, 1)]).shape == (1, 3, 32, 40)


@pytest.mark.parametrize("kw,needle", [
    (dict(style_weight=-1), "--style-weight"),
    (dict(content_weight=0, style_weight=0), "nothing to train"),
    (dict(dim=0), "--dim")])
def test_bad_training_options_are_refused(folders, tmp_path, kw, needle):
    out = tmp_path / "x.safetensors"
    with pytest.raises(BrushworkError, match=needle):
        trainer.run(_args(folders, out, **kw))
    assert not out.exists()


# ----------------------------------------------------------------------------- the CLI
def test_cli_end_to_end_and_bad_input(tiny, tmp_path, capsys):
    c, s = cli_pair(tmp_path)
    base = ["stylize", str(c), "-s", str(s), "-m", "efanet", "--size", "0", "-q"]
    out = tmp_path / "out.png"
    assert main(base + ["--weights", str(tiny), "-o", str(out), "--strength", "0.8",
                        "--exchange", "0.5"]) == 0
    assert Image.open(out).size == (48, 40)
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(4, 1 / 32)}, {"width": str(1 / 32)})
    assert_cli_refused(base + ["--weights", str(other)], tmp_path / "a.png", capsys)
    assert_cli_refused(base + ["--weights", str(tiny), "--patch-size", "3"], tmp_path / "b.png",
                       capsys)
    assert_cli_refused(base + ["--weights", str(tiny), "--exchange", "5"], tmp_path / "d.png",
                       capsys)

"""Avatar-Net: the style decorator, the decoder's skip connections, the method, the trainer, the CLI."""

import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core import blocks
from brushwork.errors import BrushworkError, ControlError
from brushwork.core.weights import prefixed_state, resolve_weights, save_weights
from brushwork.methods.avatar import (Avatar, AvatarDecoder, decorate,
                                      skip_channels)
from brushwork.train import avatar as trainer
from brushwork.train.loops import conv_layers

from _arbitrary_util import (check_shipped_on_a_photo, check_resume_and_export, cli_pair, trainer_args,
                             assert_pinned_tiny, assert_strength_zero_is_reconstruction,
                             check_weights_and_masks, image, lively, save_tiny, training_folders)

ENC_W = 1 / 16  # small encoder and decoder: 4/8/16/32 channels at relu1_1..relu4_1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded avatar weight file: small encoder (width 1/16) and a decoder of the same width
    (its last two convs scaled up so the skip-normalised features reach the output)."""
    path = tmp_path_factory.mktemp("avatar") / "avatar_tiny.safetensors"
    torch.manual_seed(0)
    enc = lively(blocks.SmallEncoder(4, ENC_W))
    dec = lively(AvatarDecoder(ENC_W, enc.channels["relu4_1"]))
    for conv in [m for m in dec if isinstance(m, torch.nn.Conv2d)][-2:]:
        conv.weight.data *= 10
    state = {**prefixed_state("encoder", enc), **prefixed_state("decoder", dec)}
    save_weights(state, path, metadata={"method": "avatar", "width": str(ENC_W),
                                        "encoder": "small", "encoder_level": "4",
                                        "encoder_width": str(ENC_W)})
    return path


@pytest.fixture(scope="module")
def model(tiny):
    return Avatar(weights=str(tiny), bf16=False)


# ----------------------------------------------------------------------------- the decorator
def _feat(c=8, h=10, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, c, h, w, generator=g) * 3 + torch.arange(c).view(1, c, 1, 1)).relu()


@pytest.mark.parametrize("patch", [1, 3])
def test_decorating_with_the_content_itself_gives_the_content_back(patch):
    f = _feat()
    out = decorate(f, f, patch)
    assert out.shape == f.shape
    torch.testing.assert_close(out, f, atol=1e-4, rtol=1e-4)


def test_decorating_with_shuffled_positions_gives_the_content_back():
    # same statistics, positions permuted: every whitened position finds its own twin
    f = _feat(seed=1)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(2))
    style = f.flatten(2)[..., perm].view(1, 8, 8, 15)
    torch.testing.assert_close(decorate(f, style, 1), f, atol=1e-4, rtol=1e-4)


def test_decorated_features_take_the_style_values():
    # patch 1: every output position is a style position (whitened, coloured back: exactly it)
    f, s = _feat(seed=3), _feat(h=9, w=7, seed=4)
    out = decorate(f, s, 1)[0].flatten(1).T
    dist = torch.cdist(out.double(), s[0].flatten(1).T.double())
    assert float(dist.min(1).values.max()) < 1e-3
    assert not torch.allclose(out, f[0].flatten(1).T)


# ----------------------------------------------------------------------------- the decoder
def test_decoder_has_the_plain_decoders_tensors_and_skip_channels():
    dec = AvatarDecoder()
    assert list(dec.state_dict()) == list(blocks.decoder(4).state_dict())
    assert skip_channels(dec) == {"relu3_1": 256, "relu2_1": 128, "relu1_1": 64}
    x = torch.rand(1, 512, 3, 4)
    seen = []
    out = dec(x, lambda layer, d: seen.append((layer, d.shape[1])) or d * 2)
    assert seen == [("relu3_1", 256), ("relu2_1", 128), ("relu1_1", 64)]
    plain = blocks.decoder(4)
    plain.load_state_dict(dec.state_dict())
    torch.testing.assert_close(dec(x), plain(x))
    assert not torch.allclose(out, plain(x))


# ----------------------------------------------------------------------------- the method
def test_pinned_tiny_output(model):
    assert_pinned_tiny(model, PINNED_TINY, PINNED_TINY_MEAN)


PINNED_TINY = [0.05647, 0.0922, 0.08601, 0.07889, 0.27508, 0.30307, 0.2883, 0.29278, 0.10365,
               0.12731, 0.15933, 0.13571]
PINNED_TINY_MEAN = 0.170211


def test_strength_zero_is_the_contents_reconstruction(model):
    assert_strength_zero_is_reconstruction(model)


def test_two_styles_by_weights_and_by_masks(model):
    content = image(40, 48, 0)
    s1, s2 = image(32, 40, 1), image(40, 32, 5)
    check_weights_and_masks(model, content, s1, s2, full_mask=True)


def test_unknown_controls_and_bad_patch_sizes_are_refused(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"levels": [1]})
    for bad in (0, 2, 10):
        with pytest.raises(ControlError):
            model.stylize(content, [style], controls={"patch_size": bad})
    with pytest.raises(ControlError, match="larger than the style"):  # style: 4x5 positions
        model.stylize(content, [style], controls={"patch_size": 7, "style_scale": 0.05})
    with pytest.raises(ControlError):
        model.stylize(content, [style], tile=64)


def test_weight_file_for_another_method_is_refused(tmp_path):
    path = tmp_path / "adain.safetensors"
    save_tiny(path, "adain", {"decoder": blocks.decoder(4, 1 / 32)}, {"width": str(1 / 32)})
    with pytest.raises(BrushworkError, match="not 'avatar'"):
        Avatar(weights=str(path))


def test_decoder_narrower_than_the_vgg_encoder_is_refused(tmp_path):
    path = tmp_path / "narrow.safetensors"
    save_tiny(path, "avatar", {"decoder": AvatarDecoder(1 / 32, 512)}, {"width": str(1 / 32)})
    with pytest.raises(BrushworkError, match="skip connection"):
        Avatar(weights=str(path))


def test_shipped_weights_run_on_a_photo(tmp_path):
    _, content, err = check_shipped_on_a_photo(lambda: Avatar(bf16=False), "avatar_vgg.safetensors",
                                               reconstruct=True)
    # training helped: the starting decoder (wct's, with the skip connections) is further off
    start = Avatar(weights=str(_start_file(tmp_path)), bf16=False)
    assert float((start.reconstruct(content) - content).abs().mean()) > 1.2 * err


def _start_file(tmp_path):
    dec = AvatarDecoder()
    trainer.init_from(dec, resolve_weights(None, trainer.DEFAULT_INIT, ""))
    path = tmp_path / "start.safetensors"
    save_weights(prefixed_state("decoder", dec), path, metadata={"method": "avatar"})
    return path


# ----------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return training_folders(tmp_path_factory.mktemp("avatar_data"))


def _args(folders, out, **kw):
    return trainer_args(trainer, ["--content", str(folders / "content"), "--styles", str(folders / "styles"),
            "--out", str(out), "--size", "32", "--batch", "1", "--steps", "2",
            "--checkpoint-every", "1", "--sample-every", "0", "--no-bf16"], **kw)


def test_two_steps_lower_the_loss():
    from brushwork.core.vgg import VGG19
    torch.manual_seed(0)
    enc = VGG19(last_layer="relu4_1")
    dec = AvatarDecoder()
    assert trainer.init_from(dec, resolve_weights(None, trainer.DEFAULT_INIT, "")) == 9
    x = image(32, 32, 3)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-4)
    seen = []
    for _ in range(3):
        total, parts, _ = trainer.losses(enc, dec, x, False, torch.device("cpu"), 1.0, 1000.0, 0)
        seen.append(parts["total"])
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[2] < seen[1] < seen[0]


def test_adain_file_fills_the_last_five_convolutions():
    dec = AvatarDecoder()
    before = [c.weight.clone() for c in conv_layers(dec)]
    assert trainer.init_from(dec, resolve_weights(None, "adain_vgg.safetensors", "")) == 5
    after = [c.weight for c in conv_layers(dec)]
    assert all(torch.equal(a, b) for a, b in zip(before[:4], after[:4]))
    assert not any(torch.equal(a, b) for a, b in zip(before[4:], after[4:]))


def test_training_resumes_where_it_stopped_and_exports(folders, tmp_path):
    _, meta, exported = check_resume_and_export(trainer, lambda out, **kw: _args(folders, out, **kw),
                                                tmp_path)
    assert meta["method"] == "avatar" and meta["init"].startswith("wct_vgg.safetensors (9 of 9")
    m = Avatar(weights=str(exported), bf16=False)
    assert m.stylize(image(32, 32, 0), [image(32, 32, 1)]).shape == (1, 3, 32, 32)


# ----------------------------------------------------------------------------- the CLI
def test_cli_end_to_end_and_bad_patch_sizes(tiny, tmp_path, capsys):
    c, s = cli_pair(tmp_path)
    base = ["stylize", str(c), "-s", str(s), "-m", "avatar", "--weights", str(tiny),
            "--size", "0", "-q"]
    out = tmp_path / "out.png"
    assert main(base + ["-o", str(out), "--patch-size", "1", "--strength", "0.8"]) == 0
    assert Image.open(out).size == (48, 40)
    capsys.readouterr()
    for bad in ("0", "4", "7"):
        out = tmp_path / f"bad{bad}.png"
        extra = ["--style-scale", "0.05"] if bad == "7" else []
        code = main(base + ["-o", str(out), "--patch-size", bad] + extra)
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2 and not out.exists(), err
        assert len(lines) == 1 and lines[0].startswith("brushwork: error:"), err
        assert "patch" in lines[0]


def test_stylization_loss_trains_toward_the_style(folders, tmp_path):
    """--style-weight: each step also decodes decorated (photo, painting) pairs; the loss has
    the content and style terms, falls over steps, and a resumed run matches a whole one."""
    from brushwork.core.vgg import VGG19
    torch.manual_seed(0)
    enc = VGG19(last_layer="relu4_1")
    dec = AvatarDecoder()
    trainer.init_from(dec, resolve_weights(None, trainer.DEFAULT_INIT, ""))
    c, s = torch.cat([image(32, 32, 0), image(32, 32, 5)]), torch.cat([image(32, 32, 1),
                                                                        image(32, 32, 2)])
    opt = torch.optim.Adam(dec.parameters(), lr=1e-4)
    seen = []
    for _ in range(3):
        total, parts = trainer.stylize_losses(enc, dec, c, s, False, torch.device("cpu"),
                                              1.0, 10.0, 1)
        assert set(parts) == {"content", "style"}
        assert total.item() == pytest.approx(parts["content"] + 10 * parts["style"], rel=1e-5)
        seen.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[2] < seen[0]
    kw = dict(style_weight=10, reconstruction_weight=0, patch_size=1)
    full = trainer.run(_args(folders, tmp_path / "full.safetensors", steps=2, **kw))
    trainer.run(_args(folders, tmp_path / "part.safetensors", steps=1, **kw))
    part = trainer.run(_args(folders, tmp_path / "part.safetensors", steps=2, resume=True, **kw))
    from brushwork.core.weights import load_weights
    a, meta = load_weights(full)
    b, _ = load_weights(part)
    assert meta["style_weight"] == "10.0" and meta["reconstruction_weight"] == "0.0"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kw,needle", [
    (dict(style_weight=0, reconstruction_weight=0), "nothing to train"),
    (dict(style_weight=-1), "--style-weight"),
    (dict(style_weight=1, patch_size=2), "--patch-size")])
def test_bad_stylization_options_are_refused(folders, tmp_path, kw, needle):
    out = tmp_path / "x.safetensors"
    with pytest.raises(BrushworkError, match=needle):
        trainer.run(_args(folders, out, **kw))
    assert not out.exists()

"""Total style transfer: the intra/inter-scale transforms, the skip decoder, the method, the
trainer, the CLI."""

import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core import blocks
from brushwork.core.stats import feature_stats
from brushwork.core.weights import load_weights, prefixed_state, resolve_weights, save_weights
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import feedforward as ff
from brushwork.methods import totalst as T
from brushwork.methods.totalst import TotalDecoder, TotalST
from brushwork.train import totalst as trainer

from _arbitrary_util import (check_shipped_on_a_photo, check_resume_and_export, cli_pair, trainer_args,
                             assert_cli_refused, assert_pinned_tiny,
                             assert_strength_zero_is_reconstruction, check_weights_and_masks,
                             image, lively, save_tiny, training_folders)

W = 1 / 16  # decoder: 16/8/8/4 channels


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded totalst weight file: a 1/16-width decoder (random merge convolutions, so the
    skip features reach the output) for the VGG19 encoder."""
    path = tmp_path_factory.mktemp("totalst") / "totalst_tiny.safetensors"
    torch.manual_seed(0)
    dec = lively(TotalDecoder(W))
    dec.body[-1].weight.data *= 0.2  # outputs around mid-grey, not saturated
    dec.body[-1].bias.data += 0.5
    save_weights(prefixed_state("decoder", dec), path,
                 metadata={"method": "totalst", "width": str(W), "encoder": "vgg"})
    return path


@pytest.fixture(scope="module")
def model(tiny):
    return TotalST(weights=str(tiny), bf16=False)


# ----------------------------------------------------------------------------- the transforms
def _feats(seed, s=32):
    """Synthetic relu1_1/2_1/3_1 maps (full-rank joint covariance at the relu3_1 size)."""
    g = torch.Generator().manual_seed(seed)
    return {"relu1_1": (torch.randn(1, 64, 4 * s, 4 * s, generator=g) + 1).relu(),
            "relu2_1": (torch.randn(1, 128, 2 * s, 2 * s, generator=g) * 2 + 1).relu(),
            "relu3_1": (torch.randn(1, 256, s, s, generator=g) * 3).relu()}


@pytest.mark.parametrize("scope", ["inter", "intra", "both"])
def test_transform_of_content_with_itself_gives_the_features_back(scope):
    f = _feats(0)
    out = T.total_transform(f, f, scope)
    assert set(out) == set(T.LAYERS)
    for layer in T.LAYERS:
        assert out[layer].shape == f[layer].shape
        torch.testing.assert_close(out[layer], f[layer], atol=1e-4, rtol=1e-4)


def test_joint_transform_has_the_styles_joint_mean_and_covariance():
    cf, sf = _feats(0), _feats(1, s=24)
    xs = T.joint_features(sf)
    assert xs.shape == (1, 448, 24, 24)
    t, xc = T.joint_transform(cf, sf)
    assert t.shape == xc.shape == (1, 448, 32, 32)
    (mt, ct), (ms, cs) = feature_stats(t[0].flatten(1)), feature_stats(xs[0].flatten(1))
    torch.testing.assert_close(mt, ms, atol=1e-4, rtol=0)
    torch.testing.assert_close(ct, cs, atol=1e-4 * float(cs.abs().max()), rtol=0)
    # cross-scale blocks (relu1_1 x relu3_1) moved to the style's too
    (_, cc) = feature_stats(xc[0].flatten(1))
    assert float((cc[:64, 192:] - cs[:64, 192:]).abs().max()) > 10 * float(
        (ct[:64, 192:] - cs[:64, 192:]).abs().max())
    # split back per layer: relu3_1 is the joint map's block; the finer layers, re-averaged to
    # the joint size, follow it closely (the change is resized back bilinearly)
    out = T.inter_scale(cf, sf)
    blocks_ = T.split_joint(t, cf)
    torch.testing.assert_close(out["relu3_1"], blocks_["relu3_1"], atol=1e-4, rtol=1e-4)
    again = T.joint_features(out)
    err = float((again - t).abs().mean()) / float((t - xc).abs().mean())
    assert err < 0.2


def test_intra_scale_gives_each_layer_the_styles_statistics():
    cf, sf = _feats(0, s=24), _feats(1, s=20)  # more positions than channels everywhere
    out = T.intra_scale(cf, sf)
    for layer in T.LAYERS:
        (m, c), (ms, cs) = (feature_stats(x[0].flatten(1)) for x in (out[layer], sf[layer]))
        torch.testing.assert_close(m, ms, atol=1e-4, rtol=0)
        torch.testing.assert_close(c, cs, atol=1e-4 * float(cs.abs().max()), rtol=0)


def test_unknown_scope_is_refused():
    f = _feats(0, s=4)
    with pytest.raises(ControlError, match="scale_stats"):
        T.total_transform(f, f, "across")


# ----------------------------------------------------------------------------- the decoder
def test_fresh_decoder_is_the_plain_relu3_1_decoder():
    dec = TotalDecoder()
    assert dec.skip_channels() == {"relu2_1": 128, "relu1_1": 64}
    plain = blocks.decoder(3)
    plain.load_state_dict(dec.body.state_dict())
    x = torch.rand(1, 256, 3, 4) * 100
    skips = {"relu2_1": torch.rand(1, 128, 6, 8) * 100, "relu1_1": torch.rand(1, 64, 12, 16) * 100}
    torch.testing.assert_close(dec(x, skips), plain(x))
    lively(dec)  # merge convolutions that read the skips
    assert not torch.allclose(dec(x, skips), dec(x, {k: 0 * v for k, v in skips.items()}))


def test_adain_file_fills_every_convolution():
    dec = TotalDecoder()
    assert trainer.init_from(dec, resolve_weights(None, "adain_vgg.safetensors", "")) == 5
    state, _ = load_weights(resolve_weights(None, "adain_vgg.safetensors", ""))
    plain = blocks.decoder(3)
    plain.load_state_dict({k[8:]: v.float() for k, v in state.items()
                           if k.startswith("decoder.")})
    x = torch.rand(1, 256, 3, 4) * 100
    skips = {"relu2_1": torch.rand(1, 128, 6, 8), "relu1_1": torch.rand(1, 64, 12, 16)}
    torch.testing.assert_close(dec(x, skips), plain(x))


def test_tiled_decoding_matches_whole(model, monkeypatch):
    torch.manual_seed(3)
    feats = {"relu3_1": torch.rand(1, 256, 20, 24) * 50, "relu2_1": torch.rand(1, 128, 40, 48) * 50,
             "relu1_1": torch.rand(1, 64, 80, 96) * 50}
    whole = T.decode_total(model.decoder, feats, False)
    monkeypatch.setattr(ff, "TILE_PIXELS", 32 * 32)
    monkeypatch.setattr(ff, "TILE", 32)
    monkeypatch.setattr(ff, "OVERLAP", 32)
    tiled = T.decode_total(model.decoder, feats, False)
    assert tiled.shape == whole.shape == (1, 3, 80, 96)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the method
def test_pinned_tiny_output(model):
    assert_pinned_tiny(model, PINNED_TINY, PINNED_TINY_MEAN)


PINNED_TINY = [0.62295, 0.59526, 0.5607, 0.58786, 0.53998, 0.50944, 0.53563, 0.55251, 0.56333,
               0.57038, 0.57218, 0.58947]
PINNED_TINY_MEAN = 0.580747


def test_strength_zero_is_the_contents_reconstruction(model):
    assert_strength_zero_is_reconstruction(model)


def test_scale_stats_choose_the_transform(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    outs = {s: model.stylize(content, [style], controls={"scale_stats": s}) for s in T.SCOPES}
    torch.testing.assert_close(outs["both"], model.stylize(content, [style]))
    assert not torch.allclose(outs["intra"], outs["inter"], atol=1e-3)
    assert not torch.allclose(outs["intra"], outs["both"], atol=1e-3)
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"scale_stats": "all"})
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"patch_size": 3})
    with pytest.raises(ControlError):
        model.stylize(content, [style], tile=64)


def test_two_styles_by_weights_and_by_masks(model):
    content = image(40, 48, 0)
    s1, s2 = image(32, 40, 1), image(40, 32, 5)
    check_weights_and_masks(model, content, s1, s2, full_mask=True)


def test_weight_file_for_another_method_is_refused(tmp_path):
    path = tmp_path / "adain.safetensors"
    save_tiny(path, "adain", {"decoder": blocks.decoder(3, W)}, {"width": str(W), "level": "3"})
    with pytest.raises(BrushworkError, match="not 'totalst'"):
        TotalST(weights=str(path))


def test_shipped_weights_run_on_a_photo():
    check_shipped_on_a_photo(lambda: TotalST(bf16=False), T.DEFAULT_FILE, 0.2, reconstruct=True)


# ----------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return training_folders(tmp_path_factory.mktemp("totalst_data"))


def _args(folders, out, **kw):
    return trainer_args(trainer, ["--content", str(folders / "content"), "--styles", str(folders / "styles"),
            "--out", str(out), "--size", "32", "--batch", "2", "--steps", "2", "--width",
            str(W), "--init", "none", "--checkpoint-every", "1", "--sample-every", "0",
            "--no-bf16"], **kw)


def test_loss_falls_over_three_steps():
    from brushwork.core.vgg import VGG19
    torch.manual_seed(0)
    enc = VGG19(last_layer="relu4_1")
    dec = TotalDecoder()
    trainer.init_from(dec, resolve_weights(None, trainer.DEFAULT_INIT, ""))
    c = torch.cat([image(32, 32, 0), image(32, 32, 5)])
    s = torch.cat([image(32, 32, 1), image(32, 32, 2)])
    opt = torch.optim.Adam(dec.parameters(), lr=5e-5)
    seen = []
    for _ in range(3):
        total, parts, out = trainer.losses(enc, dec, c, s, False, torch.device("cpu"),
                                           1.0, 2.0, 3.0)
        assert set(parts) == {"content", "intra", "inter", "total"}
        assert out.shape == c.shape
        assert parts["total"] == pytest.approx(parts["content"] + 2 * parts["intra"]
                                               + 3 * parts["inter"], rel=1e-5)
        seen.append(parts["total"])
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[2] < seen[1] < seen[0]


def test_training_resumes_where_it_stopped_and_exports(folders, tmp_path):
    a, meta, exported = check_resume_and_export(trainer, lambda out, **kw: _args(folders, out, **kw),
                                                tmp_path)
    assert meta["method"] == "totalst" and meta["init"] == "none"
    assert meta["width"] == str(W) and meta["crop"] == "32"
    assert any(k.startswith("decoder.merge.") for k in a)
    m = TotalST(weights=str(exported), bf16=False)
    assert m.stylize(image(32, 32, 0), [image(32, 32, 1)]).shape == (1, 3, 32, 32)


def test_bad_training_options_are_refused(folders, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(BrushworkError, match="nothing to train"):
        trainer.run(_args(folders, out, content_weight=0, intra_weight=0, inter_weight=0))
    with pytest.raises(BrushworkError, match="--inter-weight"):
        trainer.run(_args(folders, out, inter_weight=-1))
    assert not out.exists()


# ----------------------------------------------------------------------------- the CLI
def test_cli_end_to_end_and_bad_input(tiny, tmp_path, capsys):
    c, s = cli_pair(tmp_path)
    base = ["stylize", str(c), "-s", str(s), "-m", "totalst", "--weights", str(tiny),
            "--size", "0", "-q"]
    out = tmp_path / "out.png"
    assert main(base + ["-o", str(out), "--scale-stats", "inter", "--strength", "0.8"]) == 0
    assert Image.open(out).size == (48, 40)
    assert_cli_refused(base + ["--scale-stats", "across"], tmp_path / "bad.png", capsys)
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(3, W)}, {"width": str(W), "level": "3"})
    argv = [a if a != str(tiny) else str(other) for a in base]
    assert_cli_refused(argv, tmp_path / "bad2.png", capsys)

"""The style-aware content loss method (Sanakoyeu et al. 2018): its losses, the per-artist
encoder-decoders, the method, the trainer, the CLI (tiny seeded nets of 4 channels, 32-48 px
images; no ../shared)."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core import blocks
from brushwork.core.weights import load_weights, resolve_weights, save_weights
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import styleaware as M
from brushwork.methods.styleaware import Discriminator, StyleAware, StyleNet
from brushwork.train import styleaware as trainer

from _arbitrary_util import assert_cli_refused, image, lively, save_tiny

ARTISTS = ["a_one", "b_two"]


def _tiny_file(path, seed=0, artists=ARTISTS):
    torch.manual_seed(seed)
    state = {}
    for a in artists:
        net = lively(StyleNet(4, 2, 1))
        state.update({f"{a}.{k}": v for k, v in net.state_dict().items()})
    meta = {"method": "styleaware", "artists": '["' + '", "'.join(artists) + '"]',
            "config": '{"width": 4, "n_down": 2, "n_res": 1}', "steps": "0", "crop": "32"}
    save_weights(state, path, metadata=meta)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_file(tmp_path_factory.mktemp("styleaware") / "sa_tiny.safetensors")


@pytest.fixture(scope="module")
def model(tiny):
    return StyleAware(weights=str(tiny))


# ----------------------------------------------------------------------------- the losses
def test_style_aware_loss_is_zero_when_the_decoder_reproduces_the_photo():
    torch.manual_seed(0)
    enc = M.Encoder(4, 2)
    x = image(32, 32, 0)
    out = x.clone()  # D(E(x)) == x exactly
    with torch.no_grad():
        assert float(M.style_aware_loss(enc(x), enc(out))) == 0.0
        moved = float(M.style_aware_loss(enc(x), enc(image(32, 32, 3))))
    assert moved > 1e-4
    z = torch.randn(2, 8, 4, 4)
    assert float(M.style_aware_loss(z, z.clone())) == 0.0
    # known value: ||a - b||^2 / d with d = C*H*W, averaged over the batch
    a, b = torch.zeros(2, 8, 4, 4), torch.full((2, 8, 4, 4), 3.0)
    b[1] = 1.0
    assert float(M.style_aware_loss(a, b)) == pytest.approx((9 + 1) / 2)


def test_transformed_image_loss_of_an_image_with_itself_is_zero_and_matches_a_hand_sum():
    x = image(24, 20, 0)
    assert float(M.transformed_image_loss(x, x.clone())) == 0.0
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 2, 12, 13, generator=g), torch.rand(1, 2, 12, 13, generator=g)
    an, bn = a.numpy()[0], b.numpy()[0]
    pool, sq = 10, []
    for c in range(2):
        for i in range(12 - pool + 1):
            for j in range(13 - pool + 1):
                ta = an[c, i:i + pool, j:j + pool].mean()
                tb = bn[c, i:i + pool, j:j + pool].mean()
                sq.append((ta - tb) ** 2)
    assert float(M.transformed_image_loss(a, b)) == pytest.approx(float(np.mean(sq)), rel=1e-5)
    # T keeps only the coarse image: a zero-mean fine pattern is (almost) free
    fine = torch.zeros(1, 3, 40, 40)
    fine[..., ::2, :] = 0.1
    fine[..., 1::2, :] = -0.1
    assert float(M.transformed_image_loss(x[..., :20, :20].repeat(1, 1, 2, 2),
                                          x[..., :20, :20].repeat(1, 1, 2, 2) + fine)) < 1e-4


def test_discriminator_and_gan_losses():
    torch.manual_seed(0)
    d = Discriminator(4, 3)
    taps = d(image(32, 32, 0))
    assert [t.shape for t in taps] == [(1, 1, 8, 8), (1, 1, 4, 4)]
    zero = [torch.zeros(1, 1, 2, 2)]
    # BCE at logit 0 is log 2 per tap: real + two fake sets
    assert float(M.d_loss(zero, [zero, zero])) == pytest.approx(3 * np.log(2), rel=1e-6)
    assert float(M.g_loss([torch.full((1, 1, 2, 2), 20.0)])) < 1e-6


# ----------------------------------------------------------------------------- the network
def test_network_shapes_and_padding():
    torch.manual_seed(0)
    net = StyleNet(4, 2, 1)
    assert net.encoder(image(32, 32, 0)).shape == (1, 8, 8, 8)
    with torch.no_grad():
        out = net.stylize_any(image(37, 42, 0))  # odd sides: padded, cropped back
    assert out.shape == (1, 3, 37, 42) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert net.stylize_any(image(3, 5, 0)).shape == (1, 3, 3, 5)
    with pytest.raises(BrushworkError):
        StyleNet(0, 2, 1)


def test_pinned_tiny_output_and_determinism(model):
    content = image(40, 48, 0)
    out = model.stylize(content, controls={"artist": "b_two"}, seed=0)
    assert out.shape == content.shape
    torch.testing.assert_close(model.stylize(content, controls={"artist": "b_two"}), out)
    got = out[0, :, 20, 20:24].flatten()
    expected = torch.tensor(PINNED)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert abs(float(out.mean()) - PINNED_MEAN) < 1e-4


PINNED = [0.35129, 0.40227, 0.23503, 0.08979, 0.52147, 0.59230, 0.57053, 0.25741, 0.29748,
          0.29363, 0.18444, 0.09584]
PINNED_MEAN = 0.35383


def test_artist_selection_blends_and_refusals(model, tiny, tmp_path):
    content = image(40, 48, 0)
    assert model.labels() == ARTISTS and model.capabilities.styles == "labels"
    a = model.stylize(content, controls={"artist": "a_one"})
    b = model.stylize(content, controls={"artist": "b"})  # a prefix
    assert not torch.allclose(a, b, atol=1e-3)
    torch.testing.assert_close(model.stylize(content, controls={"artist": "0"}), a)
    mix = model.stylize(content, controls={"artist": "a_one:0.25,b_two:0.75"})
    torch.testing.assert_close(mix, 0.25 * a + 0.75 * b, atol=1e-5, rtol=0)
    assert len(model.render_all(content)) == 2
    with pytest.raises(ControlError):
        model.stylize(content, controls={"artist": "nobody"})
    with pytest.raises(ControlError):
        model.stylize(content, controls={"artist": "5"})
    with pytest.raises(BrushworkError):
        model.stylize(content, [image(32, 32, 1)])  # takes no style image
    with pytest.raises(BrushworkError):
        model.stylize(content, controls={"style_scale": 1.0})  # not a styleaware control
    with pytest.raises(ControlError):
        model.stylize(content, controls={"preserve_color": "histogram"})
    # colour preservation keeps the photo's chroma; strength 0 gives the photo back
    lum = model.stylize(content, controls={"artist": "a_one", "preserve_color": "luminance"})
    assert not torch.allclose(lum, a, atol=1e-3)
    torch.testing.assert_close(model.stylize(content, controls={"strength": 0.0}), content,
                               atol=1e-6, rtol=0)


def test_foreign_and_broken_weight_files_are_refused(tiny, tmp_path):
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(3, 1 / 16)},
              {"width": "0.0625", "level": "3"})
    with pytest.raises(BrushworkError, match="not a styleaware weight file"):
        StyleAware(weights=str(other))
    state, meta = load_weights(tiny)
    save_weights(state, tmp_path / "noartists.safetensors",
                 metadata={k: v for k, v in meta.items() if k != "artists"})
    with pytest.raises(BrushworkError, match="not a styleaware weight file"):
        StyleAware(weights=str(tmp_path / "noartists.safetensors"))
    wrong = dict(meta, config='{"width": 8, "n_down": 2, "n_res": 1}')
    save_weights(state, tmp_path / "wide.safetensors", metadata=wrong)
    with pytest.raises(BrushworkError, match="do not match"):
        StyleAware(weights=str(tmp_path / "wide.safetensors"))
    with pytest.raises(BrushworkError):
        StyleAware(weights=str(tiny), bf16=False)  # an option the method does not take


def test_missing_shipped_file_names_the_trainer():
    try:
        resolve_weights(None, M.SHIPPED_FILE, M.TRAIN_HINT)
    except BrushworkError as e:
        assert "brushwork train styleaware" in str(e)
    else:
        pytest.skip("a shipped styleaware_artists.safetensors exists")


def test_shipped_weights_run_on_a_photo():
    try:
        resolve_weights(None, M.SHIPPED_FILE, M.TRAIN_HINT)
    except BrushworkError:
        pytest.skip("no shipped styleaware_artists.safetensors")
    from skimage import data
    m = StyleAware()
    assert m.labels() == ["berthe_morisot", "claude_monet", "pablo_picasso", "paul_cezanne",
                          "paul_gauguin", "ukiyo_e", "vincent_van_gogh", "wassily_kandinsky"]
    arr = np.asarray(Image.fromarray(data.chelsea()).resize((64, 48), Image.BICUBIC))
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
    outs = m.render_all(x)
    assert all(o.shape == x.shape and float(o.std()) > 0.02 for o in outs)
    assert not torch.allclose(outs[1], outs[6], atol=1e-2)


# ----------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("styleaware_data")
    for k, (sub, n) in enumerate((("content", 3), ("styles/a_one", 2), ("styles/b_two", 2),
                                  ("styles/c", 1))):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            seed = 10 * k + i
            a = np.random.default_rng(seed).integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(a).resize((48, 40), Image.BILINEAR).save(root / sub / f"{i}.png")
    return root


def _argv(folders, out, **kw):
    argv = ["--content", str(folders / "content"), "--styles", str(folders / "styles"),
            "--out", str(out), "--artists", "a_one,b_two", "--size", "32", "--batch", "1",
            "--steps", "3", "--warmup", "1", "--width", "4", "--n-down", "2", "--n-res", "1",
            "--d-width", "4", "--d-layers", "3", "--checkpoint-every", "1",
            "--sample-every", "0"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)] if v is not True else [f"--{k}"]
    return argv


def _args(folders, out, **kw):
    p = argparse.ArgumentParser()
    trainer.add_arguments(p)
    return p.parse_args(_argv(folders, out, **kw))


def test_generator_loss_falls_over_a_few_steps():
    torch.manual_seed(0)
    G, D = StyleNet(4, 2, 1), Discriminator(4, 3)
    x = torch.cat([image(32, 32, 0), image(32, 32, 5)])
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    seen = []
    for _ in range(6):
        total, parts, out = trainer.generator_loss(G, D, x, 1.0, 100.0, 100.0)
        assert set(parts) == {"adv", "content", "transform", "total"}
        assert out.shape == x.shape
        seen.append(parts["total"])
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[-1] < 0.8 * seen[0]


def test_training_resumes_where_it_stopped_and_exports(folders, tmp_path):
    events = []
    full = trainer.run(_args(folders, tmp_path / "full.safetensors"), callback=events.append)
    assert full["artists"] == ARTISTS and full["steps"] == 3
    msgs = [e.message for e in events if e.kind == "train"]
    assert msgs == ["warmup", "a_one", "b_two"]
    trainer.run(_args(folders, tmp_path / "part.safetensors", steps=1))
    resumed = trainer.run(_args(folders, tmp_path / "part.safetensors", resume=True))
    a, meta = load_weights(full["out"])
    b, _ = load_weights(resumed["out"])
    assert meta["method"] == "styleaware" and meta["steps"] == "3" and meta["crop"] == "32"
    assert set(a) == set(b) and any(k.startswith("b_two.decoder.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    # one artist's pair trained past the warm-up differs from the other's
    k = next(k for k in a if k.startswith("a_one.decoder.to_rgb.weight"))
    assert not torch.allclose(a[k], a[k.replace("a_one", "b_two")])
    assert (tmp_path / "part.log.jsonl").read_text().count("\n") == 3
    exported = tmp_path / "exported.safetensors"
    trainer.export(tmp_path / "part.ckpt", exported, fp16=False)
    e, emeta = load_weights(exported)
    assert emeta["method"] == "styleaware" and emeta["steps"] == "3"
    for k in a:
        torch.testing.assert_close(a[k], e[k], atol=1e-6, rtol=0)
    m = StyleAware(weights=str(exported))
    assert m.labels() == ARTISTS
    assert m.stylize(image(32, 32, 0), controls={"artist": "b_two"}).shape == (1, 3, 32, 32)
    half = tmp_path / "half.safetensors"
    trainer.export(tmp_path / "part.ckpt", half, fp16=True)
    h, _ = load_weights(half)
    torch.testing.assert_close(h[k], a[k], atol=2e-3, rtol=1e-2)


def test_warmup_only_run_ships_the_auto_encoder_for_every_artist(folders, tmp_path):
    r = trainer.run(_args(folders, tmp_path / "w.safetensors", steps=2, warmup=2))
    a, _ = load_weights(r["out"])
    for k in a:
        if k.startswith("a_one."):
            torch.testing.assert_close(a[k], a["b_two." + k[len("a_one."):]])


def test_exclude_and_default_artists(folders, tmp_path):
    ex = tmp_path / "ex.txt"
    ex.write_text("# held out\n0.png\n1.png\n2.png\n")
    with pytest.raises(BrushworkError, match="excluded"):
        trainer.run(_args(folders, tmp_path / "x.safetensors", exclude=ex))
    args = _args(folders, tmp_path / "x.safetensors")
    args.artists, args.min_images = None, 2
    assert trainer.pick_artists(args) == ARTISTS  # c has one painting


def test_bad_training_options_are_refused(folders, tmp_path):
    out = tmp_path / "x.safetensors"
    for kw, match in ((dict(artists="a_one,nobody"), "no folder nobody"),
                      (dict(size=30), "--size"), (dict(d_layers=1), "--d-layers"),
                      (dict(adv_weight=0, content_weight=0, transform_weight=0), "nothing"),
                      (dict(content_weight=-1), "--content-weight")):
        with pytest.raises(BrushworkError, match=match):
            trainer.run(_args(folders, out, **kw))
    trainer.run(_args(folders, out, steps=1))
    with pytest.raises(BrushworkError, match="artists"):  # resume with other artists
        trainer.run(_args(folders, tmp_path / "x.safetensors", artists="b_two,a_one",
                          resume=True))
    with pytest.raises(BrushworkError, match="not a styleaware checkpoint"):
        other = tmp_path / "other.ckpt"
        from brushwork.train.common import save_checkpoint
        save_checkpoint(other, models={}, optimizers={}, step=1, config={"x": 1})
        trainer.export(other, tmp_path / "y.safetensors")


# ----------------------------------------------------------------------------- the CLI
def _write(path, t):
    Image.fromarray((t[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)


def test_cli_end_to_end_and_bad_input(folders, tiny, tmp_path, capsys):
    w = tmp_path / "cli.safetensors"
    assert main(["train", "styleaware", *_argv(folders, w, steps=2), "--fp16"]) == 0
    assert load_weights(w)[1]["method"] == "styleaware"
    c = tmp_path / "c.png"
    _write(c, image(40, 48, 0))
    base = ["stylize", str(c), "-m", "styleaware", "--weights", str(w), "--size", "0", "-q"]
    out = tmp_path / "out.png"
    assert main(base + ["-o", str(out), "--artist", "b_two"]) == 0
    assert Image.open(out).size == (48, 40)
    assert_cli_refused(base + ["--artist", "nobody"], tmp_path / "bad.png", capsys)
    assert_cli_refused(base + ["--stroke", "2"], tmp_path / "bad2.png", capsys)
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(3, 1 / 16)}, {"width": "0.0625",
                                                                      "level": "3"})
    argv = [a if a != str(w) else str(other) for a in base]
    assert_cli_refused(argv, tmp_path / "bad3.png", capsys)
    # the trainer refuses a missing artist with one line and writes nothing
    capsys.readouterr()
    bad = tmp_path / "bad.safetensors"
    assert main(["train", "styleaware", *_argv(folders, bad, artists="nobody")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("brushwork: error:"), err
    assert not bad.exists() and not bad.with_suffix(".ckpt").exists()

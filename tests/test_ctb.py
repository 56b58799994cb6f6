"""The content transformation block (Kotovenko et al. 2019): the network, its losses, the
per-artist method, the content classes, the trainer and the CLI (tiny seeded 4-channel models,
32-48 px images; no ../shared)."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core.weights import load_weights, prefixed_state, save_weights, shipped_path
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import ctb as M
from brushwork.methods.ctb import CTB, Generator
from brushwork.train import ctb as trainer

from _arbitrary_util import image, lively

ARTISTS = ["berthe_morisot", "claude_monet"]


def _tiny(seed=0, chn=4, n_down=2, n_res=1) -> Generator:
    """A seeded tiny generator whose convolutions are random and whose T is not the identity."""
    torch.manual_seed(seed)
    g = lively(Generator(chn, n_down, n_res))
    for m in g.transform.modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    return g.eval()


def _save(path, gens: dict, **meta):
    state = {}
    for a, g in gens.items():
        state.update(prefixed_state(a, g))
    cfg = next(iter(gens.values())).config()
    save_weights(state, path, metadata=M.weight_metadata(list(gens), cfg, **meta))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctb")
    other = d / "other.safetensors"
    save_weights(prefixed_state("solver", torch.nn.Conv2d(3, 3, 1)), other,
                 metadata={"method": "fcs"})
    return {"tiny": _save(d / "ctb_tiny.safetensors",
                          {ARTISTS[0]: _tiny(0), ARTISTS[1]: _tiny(1)}),
            "other": other}


@pytest.fixture(scope="module")
def model(files):
    return CTB(weights=str(files["tiny"]), bf16=False)


# ------------------------------------------------------------------------------ known values
def test_transform_zero_is_the_plain_encoder_decoder():
    g = _tiny(0)
    x = image(32, 32, 0)
    with torch.no_grad():
        plain = g.decode(g.encode(x))
        torch.testing.assert_close(g(x, 0.0), plain, atol=0, rtol=0)
        full = g(x, 1.0)
        assert not torch.allclose(full, plain, atol=1e-3)
        torch.testing.assert_close(full, g.decode(g.transform(g.encode(x))))
        # the residual is scaled linearly in the latent
        z = g.encode(x)
        torch.testing.assert_close(g.transformed(z, 0.5), 0.5 * (z + g.transform(z)))


def test_fresh_transformation_block_is_the_identity():
    g = Generator(4, 2, 2)
    z = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(g.transformed(z), z, atol=0, rtol=0)


def test_fixpoint_and_transformed_image_losses():
    z = torch.randn(2, 16, 4, 4)
    assert float(M.fixpoint_loss(z, z.clone())) == 0.0
    assert float(M.fixpoint_loss(z, z + 0.5)) == pytest.approx(0.25)
    x = image(32, 32, 0)
    assert float(M.transform_loss(x, x)) == 0.0
    # a shift by a constant survives the average pooling away from the zero-padded borders
    assert float(M.transform_loss(x, x + 0.1)) > 0.001


def test_content_classes_are_deterministic_and_split_clear_clusters():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 8, generator=g) * 0.05 + 3.0
    b = torch.randn(10, 8, generator=g) * 0.05 - 3.0
    feats = torch.cat([a, b])
    one = trainer.content_classes(feats, 2, seed=0)
    torch.testing.assert_close(one, trainer.content_classes(feats, 2, seed=0))
    assert set(one[:10].tolist()) == {int(one[0])} and set(one[10:].tolist()) == {int(one[10])}
    assert int(one[0]) != int(one[10])
    assert trainer.content_classes(feats, 1).tolist() == [0] * 20
    with pytest.raises(BrushworkError):
        trainer.content_classes(feats, 0)


def test_class_features_are_unit_rows():
    from brushwork.core.vgg import VGG19
    vgg = VGG19(last_layer="relu4_1")
    imgs = [(image(40, 48, s)[0] * 255).to(torch.uint8) for s in range(2)]
    f = trainer.class_features(vgg, imgs, 32)
    assert f.shape == (2, 512)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))


def test_schedule_round_robin_alternates_the_two_steps():
    got = [trainer.schedule(s, 2, 3) for s in range(10)]
    assert got[:2] == [("warmup", 0)] * 2
    assert got[2:5] == [("ed", 0), ("ed", 1), ("ed", 2)]
    assert got[5:8] == [("t", 0), ("t", 1), ("t", 2)]
    assert got[8:10] == [("ed", 0), ("ed", 1)]


# ------------------------------------------------------------------------------------ method
def test_pinned_output_slice(model):
    content = image(40, 48, 0)
    out = model.stylize(content, controls={"artist": "claude_monet"})
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    got = out[0, :, 20, 20:24].flatten()
    expected = torch.tensor(PINNED)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert abs(float(out.mean()) - PINNED_MEAN) < 1e-4


PINNED = [0.3492, 0.4318, 0.5182, 0.5432, 0.2576, 0.4863, 0.3168, 0.5178, 0.3739, 0.5383,
          0.6691, 0.7040]
PINNED_MEAN = 0.460556


def test_seeded_determinism_and_odd_sizes(model):
    content = image(37, 45, 3)
    a = model.stylize(content, controls={"artist": "0"}, seed=0)
    b = model.stylize(content, controls={"artist": "0"}, seed=1)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert a.shape == content.shape
    tiny = model.stylize(image(5, 7, 0))  # padded up to the network's minimum
    assert tiny.shape == (1, 3, 5, 7)


def test_artist_selection(model):
    content = image(40, 48, 0)
    a = model.stylize(content, controls={"artist": "berthe_morisot"})
    b = model.stylize(content, controls={"artist": "monet"})  # prefix of a later word
    assert not torch.allclose(a, b, atol=1e-3)
    torch.testing.assert_close(model.stylize(content, controls={"artist": "1"}), b)
    torch.testing.assert_close(model.stylize(content), a)  # default: artist 0
    mix = model.stylize(content, controls={"artist": "0:0.25,1:0.75"})
    torch.testing.assert_close(mix, 0.25 * a + 0.75 * b, atol=1e-6, rtol=0)
    assert model.labels() == ARTISTS
    assert [r.shape for r in model.render_all(content)] == [content.shape] * 2
    for bad in ("picasso", "7", "-1"):
        with pytest.raises(ControlError):
            model.stylize(content, controls={"artist": bad})


def test_transform_control(model):
    content = image(40, 48, 0)
    net = model.nets["claude_monet"]
    with torch.no_grad():
        plain = net.decode(net.encode(content))
    out = model.stylize(content, controls={"artist": "1", "transform": 0})
    torch.testing.assert_close(out, plain.clamp(0, 1), atol=1e-6, rtol=0)
    assert not torch.allclose(model.stylize(content, controls={"artist": "1"}), out, atol=1e-3)
    for bad in ({"transform": 3}, {"transform": -0.5}, {"strength": 0.5}, {"masks": None}):
        with pytest.raises(ControlError):
            model.stylize(content, controls=bad)
    with pytest.raises(ControlError):
        model.stylize(content, [image(32, 32, 1)])  # takes no style images


def test_foreign_and_broken_weight_files(files, tmp_path):
    with pytest.raises(BrushworkError, match="not a ctb weight file"):
        CTB(weights=str(files["other"]))
    bad = tmp_path / "bad.safetensors"
    save_weights(prefixed_state("someone", _tiny()), bad,
                 metadata=M.weight_metadata(["nobody"], _tiny().config()))
    with pytest.raises(BrushworkError, match="nobody"):
        CTB(weights=str(bad))
    with pytest.raises(BrushworkError, match="option"):
        CTB(weights=str(files["tiny"]), tile=4)


# ------------------------------------------------------------------------------------ trainer
def _folders(root):
    rng = np.random.default_rng(0)
    for sub, n in (("content", 3), ("styles/berthe_morisot", 2), ("styles/claude_monet", 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            base = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(base).resize((48, 40), Image.BILINEAR).save(root / sub / f"{i}.png")
    (root / "styles" / "claude_monet" / "notes.txt").write_text("not an image")
    return root


def _args(root, out, **kw):
    p = argparse.ArgumentParser()
    trainer.add_arguments(p)
    argv = ["--styles", str(root / "styles"), "--content", str(root / "content"),
            "--out", str(out), "--preset", "tiny", "--classes", "2", "--class-size", "32",
            "--min-images", "2", "--no-bf16", "--sample-every", "0"]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return p.parse_args(argv)


def test_warmup_reconstruction_loss_falls(tmp_path):
    root = _folders(tmp_path)
    args = _args(root, tmp_path / "o.safetensors")
    cfg = trainer.resolve_arguments(args)
    torch.manual_seed(0)
    models = trainer.Models(ARTISTS, cfg, 2, 2e-3)
    photo = (image(32, 32, 0)[0] * 255).to(torch.uint8)
    data = trainer.Data([photo], {a: [photo] for a in ARTISTS}, torch.tensor([0]),
                        {a: torch.tensor([0]) for a in ARTISTS}, 2)
    losses = [trainer.train_step(models, data, "warmup", ARTISTS[0], args, cfg,
                                 torch.Generator().manual_seed(0), "cpu")["recon"]
              for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0]
    # the two steps of the artists' training run and report their terms
    log = trainer.train_step(models, data, "ed", ARTISTS[1], args, cfg,
                             torch.Generator().manual_seed(1), "cpu")
    assert {"adv", "fixpoint", "transform", "ds_hinge"} <= set(log)
    before = [p.clone() for p in models.g[ARTISTS[1]].encoder.parameters()]
    log = trainer.train_step(models, data, "t", ARTISTS[1], args, cfg,
                             torch.Generator().manual_seed(2), "cpu")
    assert {"content_adv", "dc_hinge", "fixpoint"} <= set(log)
    after = list(models.g[ARTISTS[1]].encoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # E frozen in step t


def test_resume_round_trip_and_export(tmp_path):
    root = _folders(tmp_path)
    whole = _args(root, tmp_path / "whole.safetensors", steps=2, artists="claude_monet",
                  style_weight=1e-3)
    res = trainer.run(whole)
    assert res["steps"] == 2 and res["artists"] == ["claude_monet"]
    half = _args(root, tmp_path / "half.safetensors", steps=1, artists="claude_monet",
                 style_weight=1e-3)
    trainer.run(half)
    resumed = _args(root, tmp_path / "half.safetensors", steps=2, artists="claude_monet",
                    style_weight=1e-3, resume=True)
    trainer.run(resumed)
    a, meta = load_weights(tmp_path / "whole.safetensors")
    b, _ = load_weights(tmp_path / "half.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    assert meta["method"] == "ctb" and meta["steps"] == "2"
    # export of the checkpoint == the weight file the run wrote
    sha = trainer.export(tmp_path / "whole.ckpt", tmp_path / "exported.safetensors", fp16=False)
    c, cmeta = load_weights(tmp_path / "exported.safetensors", sha256=sha)
    for k in a:
        torch.testing.assert_close(a[k], c[k], atol=0, rtol=0)
    assert cmeta["artists"] == meta["artists"]
    m = CTB(weights=str(tmp_path / "exported.safetensors"), bf16=False)
    assert m.labels() == ["claude_monet"]
    with pytest.raises(BrushworkError, match="trains"):
        trainer.run(_args(root, tmp_path / "half.safetensors", steps=3, resume=True))


def test_trainer_refuses_bad_arguments(tmp_path):
    root = _folders(tmp_path)
    out = tmp_path / "o.safetensors"
    for kw in ({"size": 30}, {"steps": 0}, {"artists": "nobody"}, {"classes": 0},
               {"style_layers": "relu9_9"}, {"fixpoint_weight": -1}):
        with pytest.raises(BrushworkError):
            trainer.run(_args(root, out, **kw))
    assert not out.exists()


# ------------------------------------------------------------------------------------------ CLI
def test_cli_train_then_stylize(tmp_path, capsys):
    root = _folders(tmp_path)
    w = tmp_path / "c.safetensors"
    assert main(["train", "ctb", "--styles", str(root / "styles"), "--content",
                 str(root / "content"), "--out", str(w), "--preset", "tiny", "--steps", "1",
                 "--classes", "2", "--class-size", "32", "--min-images", "2",
                 "--sample-every", "1", "--no-bf16", "-q"]) == 0
    assert w.is_file() and list(tmp_path.glob("c_sample_*.png"))
    photo = root / "content" / "0.png"
    dest = tmp_path / "out.png"
    assert main(["stylize", str(photo), "-m", "ctb", "--weights", str(w), "--artist", "monet",
                 "--transform", "0.5", "--size", "0", "-o", str(dest)]) == 0
    assert Image.open(dest).size == (48, 40)
    for bad in (["--artist", "picasso"], ["--transform", "5"], ["--stroke", "2"],
                ["-s", str(photo)]):
        gone = tmp_path / "bad.png"
        capsys.readouterr()
        assert main(["stylize", str(photo), "-m", "ctb", "--weights", str(w), *bad,
                     "-o", str(gone)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("brushwork: error:"), err
        assert not gone.exists()
    other = tmp_path / "fcs.safetensors"
    save_weights(prefixed_state("solver", torch.nn.Conv2d(3, 3, 1)), other,
                 metadata={"method": "fcs"})
    assert main(["stylize", str(photo), "-m", "ctb", "--weights", str(other),
                 "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
    assert main(["train", "ctb", "--styles", str(root / "styles"), "--content",
                 str(root / "content"), "--out", str(tmp_path / "nodir" / "c.safetensors"),
                 "--preset", "tiny", "-q"]) == 2


# ------------------------------------------------------------------------------ shipped file
@pytest.mark.skipif(shipped_path(M.SHIPPED_FILE) is None, reason="ctb_artists not shipped")
def test_shipped_weights():
    m = CTB(bf16=False)
    assert len(m.labels()) == 8 and "claude_monet" in m.labels()
    content = image(64, 80, 0)
    out = m.stylize(content, controls={"artist": "claude_monet"})
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert float(out.std()) > 0.01

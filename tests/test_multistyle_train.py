"""Trainers end to end on tiny generated images: johnson, cin (+ add-style), asma,
classifier; resuming; new-style fine-tuning touches only that style's parameters."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.errors import BrushworkError
from brushwork.methods import asma, cin, johnson
from brushwork.eval import classifier
from brushwork.train import common as training
from brushwork.core import weights as weights_io
from brushwork.train import asma as train_asma, cin as train_cin, classifier as train_classifier, johnson as train_johnson


def _img(path, seed, size=48, kind="noise"):
    rng = np.random.default_rng(seed)
    if kind == "stripes":
        a = np.zeros((size, size, 3), np.uint8)
        a[:, ::4] = rng.integers(0, 255, 3)
        a[::6, :] = rng.integers(0, 255, 3)
    else:
        a = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
        a = np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))
    Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "content").mkdir()
    for i in range(3):
        _img(root / "content" / f"c{i}.png", i)
    styles = root / "artists"
    for a, kind in (("alpha", "stripes"), ("beta", "noise")):
        (styles / a).mkdir(parents=True)
        for i in range(4):
            _img(styles / a / f"{a}{i}.png", 100 + i + (50 if a == "beta" else 0), kind=kind)
    return root


def _parse(module_add, argv):
    p = argparse.ArgumentParser()
    module_add(p)
    return p.parse_args([str(a) for a in argv])


TINY_FF = ["--width", "0.125", "--n-res", "1", "--size", "32", "--batch", "2", "--style-size",
           "48", "--checkpoint-every", "1", "--sample-every", "2", "--no-bf16"]


def test_johnson_trains_resumes_and_stylizes(data, tmp_path):
    out = tmp_path / "j.safetensors"
    argv = ["--style", data / "artists/alpha/alpha0.png", "--content", data / "content",
            "--out", out, "--steps", 2] + TINY_FF
    r = train_johnson.run(_parse(train_johnson.add_arguments, argv))
    assert out.exists() and r["steps"] == 2 and np.isfinite(r["losses"]["total"])
    events = []
    args = _parse(train_johnson.add_arguments, argv[:-len(TINY_FF)] + TINY_FF)
    args.steps, args.resume = 3, True
    train_johnson.run(args, events.append)
    steps = [e.step for e in events if e.kind == "train"]
    assert steps == [3]  # resumed after step 2
    # one log line per checkpoint, as every trainer writes (the last: the resumed step 3)
    import json
    log = [json.loads(l) for l in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log][-1] == 3 and "total" in log[-1] and "time" in log[-1]
    m = johnson.Johnson(weights=out)
    y = m.stylize(torch.rand(1, 3, 30, 45), [])
    assert y.shape == (1, 3, 30, 45) and 0 <= y.min() and y.max() <= 1


def test_missing_weights_name_the_training_command(tmp_path, monkeypatch):
    from brushwork.core import weights as shipped
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)  # an install without shipped files
    for cls, hint in ((johnson.Johnson, "brushwork train johnson"),
                      (cin.CIN, "brushwork train cin"), (asma.Asma, "brushwork train asma")):
        with pytest.raises(BrushworkError, match=hint):
            cls()
    with pytest.raises(BrushworkError, match="not found"):
        cin.CIN(weights=tmp_path / "nope.safetensors")


def _train_cin(data, out, steps=2):
    argv = ["--style", data / "artists/alpha/alpha0.png", "--style", data / "artists/beta/beta0.png",
            "--content", data / "content", "--out", out, "--steps", steps] + TINY_FF
    return train_cin.run(_parse(train_cin.add_arguments, argv))


def test_cin_trains_blends_and_masks(data, tmp_path):
    out = tmp_path / "cin.safetensors"
    _train_cin(data, out)
    m = cin.CIN(weights=out)
    assert m.net.n_styles == 2 and m.style_names == ["alpha0", "beta0"]
    x = torch.rand(1, 3, 32, 32)
    a = m.stylize(x, [], controls={"style_id": "0"})
    b = m.stylize(x, [], controls={"style_id": "beta0"})
    mix = m.stylize(x, [], controls={"style_id": "0:0.5,1:0.5"})
    assert not torch.allclose(a, b)
    assert mix.shape == a.shape and 0 <= mix.min() and mix.max() <= 1
    left = torch.zeros(1, 1, 32, 32)
    left[..., :16] = 1
    regions = m.stylize(x, [], controls={"style_id": "0,1", "masks": [left, 1 - left]})
    assert torch.allclose(regions[..., :16], a[..., :16], atol=1e-5)
    assert torch.allclose(regions[..., 16:], b[..., 16:], atol=1e-5)
    with pytest.raises(BrushworkError, match="out of range"):
        m.stylize(x, [], controls={"style_id": "5"})
    with pytest.raises(BrushworkError):
        m.stylize(x, [], controls={"style_id": "0:abc"})


def test_cin_add_style_changes_only_that_styles_parameters(data, tmp_path):
    base = tmp_path / "base.safetensors"
    _train_cin(data, base)
    grown = tmp_path / "grown.safetensors"
    argv = ["--add-style", base, "--style", data / "artists/beta/beta2.png", "--name", "new",
            "--content", data / "content", "--out", grown, "--steps", 2] + TINY_FF
    train_cin.run(_parse(train_cin.add_arguments, argv))
    before = cin.CIN(weights=base).net.state_dict()
    after_model = cin.CIN(weights=grown)
    after = after_model.net.state_dict()
    assert after_model.style_names == ["alpha0", "beta0", "new"]
    changed_new_rows = 0
    for k, v in after.items():
        if k.endswith((".gamma", ".beta")):
            assert v.shape[0] == 3
            assert torch.equal(v[:2], before[k])  # old styles untouched
            changed_new_rows += int(not torch.allclose(v[2], before[k].mean(0)))
        else:
            assert torch.equal(v, before[k]), k   # shared weights frozen
    assert changed_new_rows > 0


def test_asma_trains_resumes_and_infers(data, tmp_path):
    out = tmp_path / "asma.safetensors"
    argv = ["--styles", data / "artists", "--content", data / "content", "--out", out,
            "--preset", "tiny", "--min-images", 2, "--steps", 2, "--style-load-size", 48,
            "--checkpoint-every", 1, "--sample-every", 2, "--no-bf16", "--warmup", 1,
            "--style-weight", 1.0]
    events = []
    r = train_asma.run(_parse(train_asma.add_arguments, argv), events.append)
    assert r["artists"] == ["alpha", "beta"] and r["steps"] == 3
    assert [e.message for e in events if e.kind == "train"][0] == "warmup"
    last = [e for e in events if e.kind == "train"][-1].losses
    assert {"adv", "feature", "transform", "style", "d_hinge"} <= set(last)
    assert "content" not in last   # off unless asked for
    args = _parse(train_asma.add_arguments, argv)
    args.steps, args.resume = 3, True
    events = []
    train_asma.run(args, events.append)
    assert [e.step for e in events if e.kind == "train"] == [4]
    m = asma.Asma(weights=out)
    x = torch.rand(1, 3, 40, 50)
    y = m.stylize(x, controls={"artist": "beta"})
    assert y.shape == (1, 3, 40, 50) and 0 <= y.min() and y.max() <= 1
    mask = torch.zeros(1, 1, 40, 50)
    mask[..., 25:] = 1
    y2 = m.stylize(x, controls={"artist": "beta", "stroke": 3.0, "stroke_mask": [mask]})
    assert y2.shape == y.shape
    with pytest.raises(BrushworkError):
        m.stylize(x, controls={"artist": "gamma"})


def test_asma_generator_output_range_and_paper_size():
    g, d = asma.build("tiny", 3)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    y = g(x, torch.eye(3)[[0, 2]])
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    paper_g, _ = asma.build("paper", 11)
    n = sum(p.numel() for p in paper_g.parameters())
    assert 11.0e6 < n < 12.5e6  # the paper's ~11.9M


def test_classifier_learns_tiny_synthetic_classes(data, tmp_path):
    out = tmp_path / "clf.safetensors"
    p = argparse.ArgumentParser()
    train_classifier.add_arguments(p)
    args = p.parse_args(["--styles", str(data / "artists"), "--out", str(out), "--min-images", "2",
                         "--holdout", "0.25", "--size", "32", "--epochs", "300", "--hidden", "16"])
    r = train_classifier.run(args)
    assert r["classes"] == ["alpha", "beta"] and r["accuracy"]["overall"] == 1.0
    clf = classifier.ArtistClassifier.load(out)
    stripes = training.load_folder(data / "artists/alpha", 48)[0][None].float() / 255
    assert clf.predict(stripes) == ["alpha"]


def test_asma_artist_statistics_are_per_artist_averages(data):
    from brushwork.core.vgg import VGG19
    from brushwork.core.stats import mean_std
    paintings = train_asma.Paintings(data / "artists", 48, 2)
    vgg = VGG19(last_layer="relu4_1", autocast=False)
    t = train_asma.artist_statistics(vgg, paintings, torch.device("cpu"))
    beta = [img for img, lab in zip(paintings.images, paintings.labels) if lab == 1]
    for name in train_asma.STYLE_LAYERS:
        stats = [mean_std(vgg(img[None].float() / 255, [name])[name], weighted=True)
                 for img in beta]
        want_mean = torch.stack([m[0] for m, _ in stats]).mean(0)
        want_std = torch.stack([s[0] for _, s in stats]).mean(0)
        assert torch.allclose(t[f"mean:{name}"][1], want_mean, rtol=1e-4, atol=1e-3)
        assert torch.allclose(t[f"std:{name}"][1], want_std, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(t["mean:relu1_1"][0], t["mean:relu1_1"][1])
    # the style term is zero when the output has exactly an artist's statistics target
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = {k: v.clone() for k, v in t.items()}
    feats = vgg((x + 1) / 2, list(train_asma.STYLE_LAYERS))
    for name in train_asma.STYLE_LAYERS:
        m, s = mean_std(feats[name], weighted=True)
        fake[f"mean:{name}"][:2], fake[f"std:{name}"][:2] = m, s
    ids = torch.tensor([0, 1])
    assert float(train_asma.style_term(vgg, x, None, ids, fake)) < 1e-6
    assert float(train_asma.style_term(vgg, x, None, ids.flip(0), fake)) > 1e-3


def test_asma_cpu_preset_trains_with_artist_targets(data, tmp_path):
    out = tmp_path / "asma_cpu.safetensors"
    argv = ["--styles", data / "artists", "--content", data / "content", "--out", out,
            "--preset", "cpu", "--chn", 4, "--n-plain", 1, "--d-chn", 4, "--size", 32,
            "--batch", 2, "--min-images", 2, "--steps", 2, "--warmup", 1,
            "--style-load-size", 48, "--no-bf16", "--content-weight", 1e-3]
    args = _parse(train_asma.add_arguments, argv)
    assert train_asma.resolve_arguments(args)["style_target"] == "typical"
    assert train_asma.resolve_arguments(args)["style_grid"] == 1
    assert train_asma.resolve_arguments(args)["d_steps"] == 1
    r = train_asma.run(args)
    assert r["steps"] == 3 and np.isfinite(r["losses"]["style"])
    assert np.isfinite(r["losses"]["content"]) and r["losses"]["content"] > 0
    # the cpu preset's generator: conditional decoder norms and bilinear ASM upsampling
    m = asma.Asma(weights=out)
    assert m.net.decoder_norm == "film" and m.net.asm_up == "bilinear"
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(m.stylize(x, controls={"artist": "alpha"}),
                              m.stylize(x, controls={"artist": "beta"}))
    # exporting the checkpoint gives the same generator as the run's own weight file
    again = tmp_path / "exported.safetensors"
    train_asma.export(out.with_suffix(".ckpt"), again, fp16=False)
    a, b = weights_io.load_weights(out)[0], weights_io.load_weights(again)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert asma.Asma(weights=again).artists == ["alpha", "beta"]
    # the cpu preset ships the moving average of the generator, not its last step
    ckpt = out.with_suffix(".ckpt")
    assert set(training.load_checkpoint(ckpt, models={})["models"]) == {
        "generator", "discriminator", "generator_ema"}
    raw = asma.Generator.from_config({**training.load_checkpoint_config(ckpt), "n_styles": 2})
    training.load_checkpoint(ckpt, models={"generator": raw})
    raw_state = weights_io.prefixed_state("generator", raw)
    assert any(not torch.equal(raw_state[k].float(), a[k].float()) for k in a)


def test_asma_update_ema_is_a_moving_average():
    avg, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(avg.weight)
    torch.nn.init.ones_(model.weight)
    train_asma.update_ema(avg, model, 0.9)
    assert torch.allclose(avg.weight, torch.full((2, 2), 0.1))
    train_asma.update_ema(avg, model, 0.0)
    assert torch.equal(avg.weight, model.weight)


def _tiny_cpu_run(data, out):
    """A one-step tiny run of the cpu preset that checkpoints every step."""
    return ["--styles", data / "artists", "--content", data / "content", "--out", out,
            "--preset", "cpu", "--chn", 4, "--n-plain", 1, "--d-chn", 4, "--size", 32,
            "--batch", 2, "--min-images", 2, "--steps", 1, "--warmup", 0,
            "--style-load-size", 48, "--no-bf16", "--checkpoint-every", 1]


def test_asma_resume_reuses_the_artist_targets(data, tmp_path, monkeypatch):
    out = tmp_path / "asma_cpu.safetensors"
    argv = _tiny_cpu_run(data, out)
    train_asma.run(_parse(train_asma.add_arguments, argv))
    def fail(*a, **k):
        raise AssertionError("artist statistics recomputed on resume")
    monkeypatch.setattr(train_asma, "artist_statistics", fail)
    args = _parse(train_asma.add_arguments, argv)
    args.steps, args.resume = 2, True
    events = []
    train_asma.run(args, events.append)
    assert [e.step for e in events if e.kind == "train"] == [2]


def test_asma_resume_adds_the_average_to_a_run_without_one(data, tmp_path):
    out = tmp_path / "asma_cpu.safetensors"
    argv = _tiny_cpu_run(data, out) + ["--ema", 0]
    train_asma.run(_parse(train_asma.add_arguments, argv))
    ckpt = out.with_suffix(".ckpt")
    assert "generator_ema" not in training.load_checkpoint(ckpt, models={})["models"]
    args = _parse(train_asma.add_arguments, argv[:-2])      # the preset's EMA from here on
    args.steps, args.resume = 2, True
    train_asma.run(args)
    assert "generator_ema" in training.load_checkpoint(ckpt, models={})["models"]


def test_shipped_johnson_files_by_bare_name():
    from brushwork.methods import johnson as j
    x = torch.rand(1, 3, 48, 64)
    default = j.Johnson(bf16=False).stylize(x, [])
    solo = j.Johnson(weights="johnson_starry_night_solo.safetensors", bf16=False).stylize(x, [])
    assert solo.shape == default.shape == (1, 3, 48, 64)
    assert 0 <= solo.min() and solo.max() <= 1
    assert (solo - default).abs().mean() > 1e-3   # a different network (the standalone run)
    with pytest.raises(BrushworkError, match="not found"):
        j.Johnson(weights="no_such_file.safetensors")


def test_asma_style_grid_cells_and_reflect_padding():
    f = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).view(2, 3, 7, 9)
    cells = train_asma.grid_cells(f, 2)
    assert len(cells) == 4 and sum(c.shape[-2] * c.shape[-1] for c in cells) == 7 * 9
    top = torch.cat([cells[0], cells[1]], -1)
    assert torch.equal(torch.cat([top, torch.cat([cells[2], cells[3]], -1)], -2), f)
    assert torch.equal(train_asma.grid_cells(f, 1)[0], f)
    # an image whose left half is dark and right half bright: its whole-image statistics can
    # match a target that no cell matches, which the grid loss sees
    from brushwork.core.vgg import VGG19
    from brushwork.core.stats import mean_std
    vgg = VGG19(last_layer="relu4_1", autocast=False)
    x = torch.full((1, 3, 64, 64), -0.8)
    x[..., 32:] = 0.8
    feats = vgg((x + 1) / 2, list(train_asma.STYLE_LAYERS))
    t = {}
    for name in train_asma.STYLE_LAYERS:
        m, s = mean_std(feats[name], weighted=True)
        t[f"mean:{name}"], t[f"std:{name}"] = m, s
    ids = torch.tensor([0])
    assert float(train_asma.style_term(vgg, x, None, ids, t)) < 1e-6
    assert float(train_asma.style_term(vgg, x, None, ids, t, grid=2)) > 1.0
    # reflect padding: same parameters, a different function near the borders
    g0 = asma.Generator(2, chn=4, n_plain=1)
    g1 = asma.Generator(2, chn=4, n_plain=1, padding="reflect")
    g1.load_state_dict(g0.state_dict())
    assert asma.Generator.from_config(g1.config()).padding == "reflect"
    old_file_config = {k: v for k, v in g0.config().items() if k != "padding"}
    assert asma.Generator.from_config(old_file_config).padding == "zeros"
    label = torch.eye(2)[:1]
    z = torch.rand(1, 3, 32, 32) * 2 - 1
    assert not torch.allclose(g0(z, label), g1(z, label))
    with pytest.raises(BrushworkError, match="padding"):
        asma.Generator(2, chn=4, n_plain=1, padding="circular")


def test_shipped_asma_file_paints_each_artist_differently():
    m = asma.Asma(bf16=False)   # the shipped file, sha256 checked against MANIFEST.json
    assert len(m.artists) == 8 and "claude_monet" in m.artists
    assert m.net.padding == "reflect" and m.net.decoder_norm == "film"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 48, 64, generator=g)
    outs = [m.stylize(x, controls={"artist": a}) for a in ("claude_monet", "ukiyo_e")]
    for y in outs:
        assert y.shape == (1, 3, 48, 64) and 0 <= y.min() and y.max() <= 1
    assert (outs[0] - outs[1]).abs().mean() > 1e-3
    assert (m.stylize(x, controls={"artist": "claude_monet", "stroke": 4.0}) - outs[0]).abs().max() > 1e-3


def test_shipped_asma_stroke_moves_the_detail_to_coarser_levels():
    from skimage import data as skdata
    from brushwork.core.image import resize, to_tensor
    from brushwork.eval.texture_judge import stroke_scale
    m = asma.Asma(bf16=False)
    x = resize(to_tensor(skdata.astronaut()), (192, 192))
    levels = {s: stroke_scale(m.stylize(x, controls={"artist": "claude_monet", "stroke": s}),
                              levels=5)["mean_level"] for s in (0.5, 1.0, 2.0)}
    # larger strokes: the Laplacian-pyramid energy sits at coarser levels, by a clear margin
    assert levels[0.5] + 0.1 < levels[1.0] < levels[2.0] - 0.2, levels
    # the stroke mask: white everywhere is the stroke painting, black everywhere as trained
    ones = torch.ones(1, 1, 192, 192)
    big = m.stylize(x, controls={"artist": "claude_monet", "stroke": 2.0})
    torch.testing.assert_close(m.stylize(x, controls={"artist": "claude_monet", "stroke": 2.0,
                                                      "stroke_mask": [ones]}), big)
    torch.testing.assert_close(m.stylize(x, controls={"artist": "claude_monet", "stroke": 2.0,
                                                      "stroke_mask": [0 * ones]}),
                               m.stylize(x, controls={"artist": "claude_monet"}))


def _guide_classifier(data, out, layers="relu1_1,relu2_1,relu3_1,relu4_1"):
    return train_classifier.run(_parse(train_classifier.add_arguments, [
        "--styles", data / "artists", "--out", out, "--min-images", 2, "--holdout", 0.25,
        "--size", 32, "--epochs", 200, "--hidden", 16, "--layers", layers]))


def test_classifier_layers_option_round_trips(data, tmp_path):
    out = tmp_path / "clf4.safetensors"
    r = _guide_classifier(data, out, "relu2_1,relu1_1")      # any order: kept in network order
    assert r["accuracy"]["overall"] == 1.0
    clf = classifier.ArtistClassifier.load(out)
    assert clf.layers == ("relu1_1", "relu2_1")
    assert clf.feat_mean.shape == (2 * (64 + 128),)
    stripes = training.load_folder(data / "artists/alpha", 48)[0][None].float() / 255
    assert clf.predict(stripes) == ["alpha"]
    # statistics_of matches the no-grad path and carries gradients
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg = clf.vgg()
    s = classifier.statistics_of(vgg(x, list(clf.layers)), clf.layers)
    assert torch.allclose(s, classifier.vgg_statistics(vgg, x.detach(), None, clf.layers),
                          atol=1e-5)
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(BrushworkError, match="--layers"):
        train_classifier.parse_layers("relu4_2")


def test_asma_classifier_term_and_init(data, tmp_path):
    clf = tmp_path / "guide.safetensors"
    _guide_classifier(data, clf)
    out = tmp_path / "asma_clf.safetensors"
    base = ["--styles", data / "artists", "--content", data / "content", "--preset", "cpu",
            "--chn", 4, "--n-plain", 1, "--d-chn", 4, "--size", 32, "--batch", 2,
            "--min-images", 2, "--style-load-size", 48, "--no-bf16", "--warmup", 0]
    r = train_asma.run(_parse(train_asma.add_arguments, base + [
        "--out", out, "--steps", 2, "--classifier", clf, "--classifier-weight", 1.0]))
    assert np.isfinite(r["losses"]["classifier"]) and r["losses"]["classifier"] > 0
    scaled = train_asma.run(_parse(train_asma.add_arguments, base + [
        "--out", tmp_path / "scaled.safetensors", "--steps", 1, "--classifier", clf,
        "--classifier-weight", 1.0, "--classifier-scale", "1.5,2"]))
    assert np.isfinite(scaled["losses"]["classifier"])
    assert train_asma.parse_scale_range("1.2") == (1.2, 1.2)
    for bad in ("2,1", "0.1,1", "a,b"):
        with pytest.raises(BrushworkError, match="classifier-scale"):
            train_asma.parse_scale_range(bad)
    # --init starts the generator from a weight file: with lr ~0 the result is that file
    again = tmp_path / "asma_init.safetensors"
    train_asma.run(_parse(train_asma.add_arguments, base + [
        "--out", again, "--steps", 1, "--init", out, "--lr", 1e-12, "--ema", 0]))
    a, b = weights_io.load_weights(out)[0], weights_io.load_weights(again)[0]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # mismatches are one-line errors
    with pytest.raises(BrushworkError, match="go together"):
        train_asma.run(_parse(train_asma.add_arguments, base + ["--out", again, "--steps", 1,
                                                     "--classifier", clf]))
    g = asma.Generator(3, 4, 1, "film", "bilinear", "reflect")
    with pytest.raises(BrushworkError, match="artists"):
        train_asma.init_generator(g, out, ["alpha", "beta", "gamma"])
    wide = asma.Generator(2, 8, 1, "film", "bilinear", "reflect")
    with pytest.raises(BrushworkError, match="network"):
        train_asma.init_generator(wide, out, ["alpha", "beta"])
    deep = tmp_path / "deep.safetensors"
    _guide_classifier(data, deep, "relu1_1,relu5_1")
    with pytest.raises(BrushworkError, match="relu5_1"):
        train_asma.guidance_classifier(deep, ["alpha", "beta"], torch.device("cpu"))
    with pytest.raises(BrushworkError, match="does not know"):
        train_asma.guidance_classifier(clf, ["alpha", "gamma"], torch.device("cpu"))


def test_asma_typical_painting_targets(data, tmp_path):
    # two artists, three paintings each; painting 2 of artist 0 sits nearest its own centroid
    # and farthest from the other one, painting 4 likewise for artist 1
    x = torch.tensor([[1.0, 1.1], [1.2, 0.9], [0.6, 0.6], [3.0, 3.2], [3.6, 3.6], [2.9, 2.7]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    per = {"mean:relu1_1": x, "std:relu1_1": x}
    idx = train_asma.typical_paintings(per, labels, 2)
    assert idx.tolist() == [2, 4]
    assert all(labels[i] == a for a, i in enumerate(idx.tolist()))
    r = train_asma.run(_parse(train_asma.add_arguments, [
        "--styles", data / "artists", "--content", data / "content", "--preset", "cpu",
        "--chn", 4, "--n-plain", 1, "--d-chn", 4, "--size", 32, "--batch", 2, "--min-images", 2,
        "--style-load-size", 48, "--no-bf16", "--warmup", 0, "--steps", 1,
        "--style-target", "typical", "--out", tmp_path / "typ.safetensors"]))
    assert np.isfinite(r["losses"]["style"])


def test_asma_standardised_style_space(data, tmp_path):
    from brushwork.core.vgg import VGG19
    from brushwork.core.stats import mean_std
    paintings = train_asma.Paintings(data / "artists", 48, 2)
    vgg = VGG19(last_layer="relu4_1", autocast=False)
    t = train_asma.artist_statistics(vgg, paintings, torch.device("cpu"))
    # the moments are those of the log statistics over all eight paintings
    logs = torch.stack([torch.log1p(mean_std(vgg(img[None].float() / 255, ["relu2_1"])
                                             ["relu2_1"], weighted=True)[0][0].clamp_min(0))
                        for img in paintings.images])
    assert torch.allclose(t["mu|mean:relu2_1"], logs.mean(0), atol=1e-4)
    assert torch.allclose(t["sd|mean:relu2_1"], logs.std(0).clamp_min(1e-3), atol=1e-4)
    # a statistic at the mean of the paintings is 0 in the standardised space, one sd above is 1
    mu, sd = t["mu|std:relu3_1"], t["sd|std:relu3_1"]
    assert torch.allclose(train_asma.standardised(torch.expm1(mu), t, "std:relu3_1"),
                          torch.zeros_like(mu), atol=1e-4)
    assert torch.allclose(train_asma.standardised(torch.expm1(mu + sd), t, "std:relu3_1"),
                          torch.ones_like(mu), atol=1e-3)
    # zero on the exact target, positive on the other artist's, in both spaces
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = {k: v.clone() for k, v in t.items()}
    feats = vgg((x + 1) / 2, list(train_asma.STYLE_LAYERS))
    for name in train_asma.STYLE_LAYERS:
        fake[f"mean:{name}"][:2], fake[f"std:{name}"][:2] = mean_std(feats[name], weighted=True)
    ids = torch.tensor([0, 1])
    assert float(train_asma.style_term(vgg, x, None, ids, fake, space="standardised")) < 1e-6
    raw = float(train_asma.style_term(vgg, x, None, ids.flip(0), fake))
    std = float(train_asma.style_term(vgg, x, None, ids.flip(0), fake, space="standardised"))
    assert std > 1e-3 and abs(std - raw) > 1e-3
    with pytest.raises(BrushworkError, match="style space"):
        train_asma.style_term(vgg, x, None, ids, fake, space="whitened")
    with pytest.raises(BrushworkError, match="needs artist or typical"):
        train_asma.style_term(vgg, x, torch.rand(2, 3, 32, 32), ids, None, space="standardised")
    argv = ["--styles", data / "artists", "--content", data / "content", "--preset", "cpu",
            "--chn", 4, "--n-plain", 1, "--d-chn", 4, "--size", 32, "--batch", 2,
            "--min-images", 2, "--style-load-size", 48, "--no-bf16", "--warmup", 0,
            "--steps", 1, "--style-space", "standardised", "--style-weight", 1,
            "--out", tmp_path / "z.safetensors"]
    with pytest.raises(BrushworkError, match="--style-target artist or typical"):
        train_asma.resolve_arguments(_parse(train_asma.add_arguments, argv + ["--style-target", "painting"]))
    r = train_asma.run(_parse(train_asma.add_arguments, argv))
    assert np.isfinite(r["losses"]["style"]) and r["losses"]["style"] > 0


def test_asma_resume_recomputes_targets_saved_without_moments(data, tmp_path, monkeypatch):
    # a checkpoint from before the standardised space holds the targets but not their moments
    out = tmp_path / "asma_cpu.safetensors"
    argv = _tiny_cpu_run(data, out)
    train_asma.run(_parse(train_asma.add_arguments, argv))
    ckpt = out.with_suffix(".ckpt")
    blob = torch.load(ckpt, weights_only=False)
    blob["extra"]["artist_stats"] = {k: v for k, v in blob["extra"]["artist_stats"].items()
                                     if "|" not in k}
    torch.save(blob, ckpt)
    calls, real = [], train_asma.artist_statistics
    monkeypatch.setattr(train_asma, "artist_statistics",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    args = _parse(train_asma.add_arguments, argv + ["--style-space", "standardised"])
    args.steps, args.resume = 2, True
    r = train_asma.run(args)
    assert calls == [1] and np.isfinite(r["losses"]["style"])
    saved = torch.load(ckpt, weights_only=False)["extra"]["artist_stats"]
    assert any(k.startswith("mu|") for k in saved)

"""Shared training pieces and `brushwork train ...` end to end on tiny generated images."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.train import common as training
from brushwork.core import weights as weights_io
from brushwork.errors import BrushworkError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "content" / "sub").mkdir(parents=True)
    (root / "styles").mkdir()
    for i in range(3):
        a = (rng.random((36 + 8 * i, 44, 3)) * 255).astype("uint8")
        Image.fromarray(a).save(root / "content" / ("sub" if i else "") / f"c{i}.png")
        b = (rng.random((24, 30, 3)) * 255).astype("uint8")  # smaller than the crop: upscaled
        Image.fromarray(b).save(root / "styles" / f"s{i}.jpg")
    (root / "styles" / "notes.txt").write_text("not an image")
    return root


def test_list_and_load_folder(folders):
    files = training.list_images(folders / "content")
    assert len(files) == 3  # recursive
    imgs = training.load_folder(folders / "styles", 32)
    assert len(imgs) == 3 and all(min(t.shape[-2:]) == 32 and t.dtype == torch.uint8 for t in imgs)
    with pytest.raises(BrushworkError, match="no .jpg or .png"):
        training.load_folder(_empty(folders), 32)
    with pytest.raises(BrushworkError, match="not a directory"):
        training.list_images(folders / "missing")


def _empty(root):
    d = root / "empty"
    d.mkdir(exist_ok=True)
    return d


def test_sampler_is_seeded_and_resumable(folders):
    imgs = training.load_folder(folders / "content", 40)
    a = training.batches(imgs, 32, 2, seed=3)
    first = [next(a) for _ in range(3)]
    again = training.batches(imgs, 32, 2, seed=3, start_step=2)
    assert torch.equal(first[2], next(again))
    assert first[0].shape == (2, 3, 32, 32) and 0 <= first[0].min() and first[0].max() <= 1
    other = next(training.batches(imgs, 32, 2, seed=4))
    assert not torch.equal(first[0], other)
    big = training.sample_batch(imgs, 64, 1, torch.Generator().manual_seed(0))  # upscales
    assert big.shape == (1, 3, 64, 64)


def test_checkpoint_round_trip(tmp_path):
    net = torch.nn.Conv2d(3, 4, 3)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    path = training.save_checkpoint(tmp_path / "x.ckpt", models={"net": net},
                                    optimizers={"net": opt}, step=7, config={"lr": 1e-3})
    net2 = torch.nn.Conv2d(3, 4, 3)
    opt2 = torch.optim.Adam(net2.parameters(), 1e-3)
    info = training.load_checkpoint(path, models={"net": net2}, optimizers={"net": opt2})
    assert info["step"] == 7 and info["config"]["lr"] == 1e-3
    assert torch.equal(net.weight, net2.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(BrushworkError, match="does not match"):
        training.load_checkpoint(path, models={"net": torch.nn.Conv2d(3, 5, 3)})
    # a model the file lacks is an error unless named optional; the names held come back
    extra = torch.nn.Conv2d(3, 4, 3)
    before = extra.weight.detach().clone()
    with pytest.raises(BrushworkError, match="no model 'avg'"):
        training.load_checkpoint(path, models={"net": net2, "avg": extra})
    info = training.load_checkpoint(path, models={"net": net2, "avg": extra}, optional=("avg",))
    assert info["models"] == ["net"] and torch.equal(extra.weight, before)
    with pytest.raises(BrushworkError, match="no checkpoint"):
        training.load_checkpoint(tmp_path / "none.ckpt", models={})
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(BrushworkError, match="not a readable"):
        training.load_checkpoint(tmp_path / "junk.ckpt", models={})


def test_trainers_table():
    from brushwork.train import TRAINERS as table
    for name in ("adain", "wct", "linear", "sanet", "distill"):
        assert hasattr(table[name], "run") and hasattr(table[name], "add_arguments")


def _train(folders, tmp_path, name, steps, *extra):
    from brushwork.cli import main

    out = tmp_path / f"{name}.safetensors"
    argv = ["train", name, "--content", str(folders / "content"),
            "--styles", str(folders / "styles"), "--size", "32", "--batch", "2",
            "--steps", str(steps), "--width", "0.03125", "--checkpoint-every", "2",
            "--sample-every", "2", "--device", "cpu", "--out", str(out), "-q", *extra]
    assert main(argv) == 0
    return out


def test_train_adain_end_to_end_and_resume(folders, tmp_path):
    from brushwork.methods.adain import AdaIN

    out = _train(folders, tmp_path, "adain", 2)
    ckpt = out.with_suffix(".ckpt")
    assert out.is_file() and ckpt.is_file()
    assert (tmp_path / "adain_sample_000002.png").is_file()
    assert training.load_checkpoint_step(ckpt) == 2
    first = weights_io.load_weights(out)[0]
    out = _train(folders, tmp_path, "adain", 3, "--resume", "--identity-weight", "5")
    assert training.load_checkpoint_step(ckpt) == 3
    log = [json.loads(l) for l in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3]
    second = weights_io.load_weights(out)[0]
    assert any(not torch.equal(first[k], second[k]) for k in first)
    model = AdaIN(weights=out, bf16=False)
    res = model.stylize(torch.rand(1, 3, 40, 40), [torch.rand(1, 3, 32, 32)])
    assert res.shape == (1, 3, 40, 40)


def test_resume_is_deterministic(folders, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = weights_io.load_weights(_train(folders, tmp_path / "a", "adain", 3, "--seed", "1"))[0]
    _train(folders, tmp_path / "b", "adain", 2, "--seed", "1")
    b = weights_io.load_weights(_train(folders, tmp_path / "b", "adain", 3, "--seed", "1",
                              "--resume"))[0]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.parametrize("name,extra", [("wct", ["--levels", "1,2"]),
                                        ("linear", ["--dim", "4"]),
                                        ("distill", ["--levels", "1,2", "--encoder-width", "0.0625"])])
def test_other_trainers_run(folders, tmp_path, name, extra):
    out = _train(folders, tmp_path, name, 1, *extra)
    meta_method = {"wct": "wct", "linear": "linear", "distill": "distill"}[name]
    from brushwork.core.weights import load_weights

    _, meta = load_weights(out)
    assert meta["method"] == meta_method and meta["steps"] == "1"


@pytest.mark.parametrize("loss_net", ["vgg", "encoder"])
def test_adain_on_a_distilled_encoder_trains_and_stylises(folders, tmp_path, loss_net):
    from brushwork.methods.adain import AdaIN
    from brushwork.core.weights import load_weights

    small = _train(folders, tmp_path, "distill", 1, "--levels", "1,2,3", "--encoder-width",
                   "0.0625")
    out = _train(folders, tmp_path, "adain", 2, "--level", "3", "--encoder-weights", str(small),
                 "--style-loss-net", loss_net)
    state, meta = load_weights(out)
    assert meta["encoder"] == "small" and meta.get("style_loss_net", "encoder") == loss_net
    assert any(k.startswith("encoder.") for k in state)  # the file carries its encoder
    model = AdaIN(weights=out, encoder="small", bf16=False)
    content = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = model.stylize(content, [style])
    assert y.shape == content.shape and 0 <= y.min() and y.max() <= 1
    assert torch.equal(y, model.stylize(content, [style]))
    # a stopped run ships through export: encoder from the run's --encoder-weights, same output
    from brushwork.train.adain import export
    again = tmp_path / "exported.safetensors"
    export(out.with_suffix(".ckpt"), again, fp16=False)
    assert load_weights(again)[1]["style_loss_net"] == loss_net
    assert torch.equal(AdaIN(weights=again, encoder="small", bf16=False).stylize(content, [style]), y)


def test_wct_decoders_for_a_distilled_encoder_with_a_style_term(folders, tmp_path, capsys):
    from brushwork.cli import main
    from brushwork.methods.wct import WCT
    from brushwork.core.weights import load_weights

    small = _train(folders, tmp_path, "distill", 1, "--levels", "1,2", "--encoder-width", "0.0625")
    out = _train(folders, tmp_path, "wct", 2, "--levels", "1,2", "--encoder-weights", str(small),
                 "--style-weight", "0.5")
    state, meta = load_weights(out)
    assert meta["encoder"] == "small" and meta["style_weight"] == "0.5" and meta["levels"] == "1,2"
    small_state, _ = load_weights(small)
    enc_keys = [k for k in small_state if k.startswith("encoder.")]
    assert enc_keys and all(torch.equal(state[k], small_state[k]) for k in enc_keys)  # frozen
    log = [json.loads(l) for l in (tmp_path / "wct.log.jsonl").read_text().splitlines()]
    assert {"style1", "style2", "sfeat2", "pix1"} <= set(log[-1])
    model = WCT(weights=out, encoder="small", bf16=False)
    y = model.stylize(torch.rand(1, 3, 36, 40), [torch.rand(1, 3, 32, 32)])
    assert y.shape == (1, 3, 36, 40) and 0 <= y.min() and y.max() <= 1
    # a file that is not a distilled encoder, or levels deeper than its encoder: one line, no output
    capsys.readouterr()
    base = ["train", "wct", "--content", str(folders / "content"), "--styles",
            str(folders / "styles"), "--steps", "1", "-q"]
    bad = tmp_path / "bad.safetensors"
    assert main(base + ["--encoder-weights", str(out), "--out", str(bad)]) == 2
    assert "not a distilled encoder file" in capsys.readouterr().err
    assert main(base + ["--encoder-weights", str(small), "--levels", "3", "--out", str(bad)]) == 2
    assert "--levels may not go above 2" in capsys.readouterr().err
    assert not bad.exists()


def test_bad_training_arguments(folders, tmp_path):
    from brushwork.cli import main

    base = ["train", "adain", "--content", str(folders / "content"), "--styles",
            str(folders / "styles"), "-q"]
    assert main(base + ["--out", str(tmp_path / "x.pt")]) == 2
    assert main(base + ["--out", str(tmp_path / "x.safetensors"), "--steps", "0"]) == 2
    assert main(base + ["--out", str(tmp_path / "nodir" / "x.safetensors")]) == 2
    assert main(base + ["--out", str(tmp_path / "r.safetensors"), "--resume"]) == 2


# ------------------------------------------------------ --init-decoder (linear, sanet trainers)
W = 1 / 32  # the width _train passes


@pytest.fixture(scope="module")
def wct_file(tmp_path_factory):
    """A tiny wct weight file with decoders for levels 3 and 4."""
    from brushwork.core import blocks

    from _arbitrary_util import save_tiny

    path = tmp_path_factory.mktemp("wct") / "wct.safetensors"
    save_tiny(path, "wct", {f"decoder{l}": blocks.decoder(l, W) for l in (3, 4)},
              {"levels": "3,4", "width": str(W), "encoder": "vgg"})
    return path


def _file_decoder(path, level):
    prefix = f"decoder{level}."
    return {k[len(prefix):]: v for k, v in weights_io.load_weights(path)[0].items()
            if k.startswith(prefix)}


def _capture_initial_decoder(monkeypatch, run_loop):
    """Patch the trainers' loop to record the decoder's weights at the start of training."""
    from brushwork.train import linear, loops, sanet

    seen, real = {}, loops.train_loop

    def loop(name, args, images, models, *rest, **kw):
        seen.update({k: v.detach().clone() for k, v in models["decoder"].state_dict().items()})
        if run_loop:
            real(name, args, images, models, *rest, **kw)

    for trainer in (linear, sanet):
        monkeypatch.setattr(trainer, "train_loop", loop)
    return seen


@pytest.mark.parametrize("name,level,extra", [("linear", 3, ["--dim", "4"]),
                                              ("linear", 4, ["--dim", "4", "--layer", "relu4_1"]),
                                              ("sanet", 4, [])])
def test_init_decoder_starts_from_the_wct_decoder(folders, tmp_path, wct_file, monkeypatch,
                                                   name, level, extra):
    seen = _capture_initial_decoder(monkeypatch, run_loop=False)
    _train(folders, tmp_path, name, 1, *extra, "--init-decoder", str(wct_file))
    want = _file_decoder(wct_file, level)
    assert seen.keys() == want.keys()
    assert all(torch.equal(seen[k], want[k]) for k in want)


def test_init_decoder_trains_and_is_ignored_on_resume(folders, tmp_path, wct_file):
    out = _train(folders, tmp_path, "linear", 1, "--dim", "4", "--init-decoder", str(wct_file))
    assert training.load_checkpoint_step(out.with_suffix(".ckpt")) == 1
    # on --resume the checkpoint wins: the file is not even read
    _train(folders, tmp_path, "linear", 2, "--dim", "4", "--resume",
           "--init-decoder", str(tmp_path / "missing.safetensors"))
    assert training.load_checkpoint_step(out.with_suffix(".ckpt")) == 2


def test_init_decoder_errors(folders, tmp_path, wct_file, capsys):
    from brushwork.core import blocks
    from brushwork.cli import main
    from brushwork.train.loops import init_decoder

    from _arbitrary_util import save_tiny

    no_level = tmp_path / "wct12.safetensors"
    save_tiny(no_level, "wct", {f"decoder{l}": blocks.decoder(l, W) for l in (1, 2)},
              {"levels": "1,2", "width": str(W), "encoder": "vgg"})
    with pytest.raises(BrushworkError, match="no level-3 .relu3_1. decoder"):
        init_decoder(blocks.decoder(3, W), no_level, 3, W)
    with pytest.raises(BrushworkError, match="width 0.03125 differs from --width 0.0625"):
        init_decoder(blocks.decoder(3, 2 * W), wct_file, 3, 2 * W)
    small = tmp_path / "distill.safetensors"
    enc = blocks.SmallEncoder(3, 1 / 16)
    save_tiny(small, "distill",
              {"encoder": enc, "decoder3": blocks.decoder(3, W, enc.channels["relu3_1"])},
              {"levels": "3", "width": str(W), "encoder": "small", "encoder_level": "3",
               "encoder_width": str(1 / 16)})
    with pytest.raises(BrushworkError, match="small-encoder file"):
        init_decoder(blocks.decoder(3, W), small, 3, W)
    adain = tmp_path / "adain.safetensors"
    save_tiny(adain, "adain", {"decoder": blocks.decoder(4, W)}, {"level": "4", "width": str(W)})
    with pytest.raises(BrushworkError, match="not a wct weight file"):
        init_decoder(blocks.decoder(4, W), adain, 4, W)
    with pytest.raises(BrushworkError, match="file not found"):
        init_decoder(blocks.decoder(4, W), tmp_path / "nope.safetensors", 4, W)
    # through the CLI: one line, exit code 2, no output
    capsys.readouterr()
    out = tmp_path / "sanet.safetensors"
    argv = ["train", "sanet", "--content", str(folders / "content"), "--styles",
            str(folders / "styles"), "--size", "32", "--batch", "2", "--steps", "1", "--width",
            str(W), "--device", "cpu", "--out", str(out), "-q", "--init-decoder", str(no_level)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no level-4 (relu4_1) decoder" in err
    assert not out.exists()
